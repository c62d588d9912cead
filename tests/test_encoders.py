import logging

import numpy as np
import pytest

import vlsearch.encoders.registry
from tests.photos import picture
from vlsearch.api.wording import explain
from vlsearch.encoders import WeightsUnavailable, load_encoder


def test_tiny_random_is_deterministic_and_normalised():
    a = load_encoder("tiny-random", device="cpu")
    b = load_encoder("tiny-random", device="cpu")
    va, vb = a.encode_images([picture(1), picture(2)]), b.encode_images([picture(1), picture(2)])
    np.testing.assert_allclose(va, vb, atol=1e-6)
    assert va.shape == (2, a.dim) and va.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a.encode_texts(["x", "a longer text"]), axis=1), 1.0, atol=1e-5)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="tiny-random"):
        load_encoder("no-such-model", device="cpu")


def test_missing_clip_weights_offline_raise_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(vlsearch.encoders.registry, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(WeightsUnavailable, match=f"ViT-B-32/laion2b_s34b_b79k.*Looked in: {tmp_path}") as missing:
        load_encoder("ViT-B-32", model_dir=tmp_path, device="cpu")
    assert "vlsearch models pull ViT-B-32/laion2b_s34b_b79k" in explain(missing.value)  # what the CLI says


def test_auto_falls_back_to_offline_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(vlsearch.encoders.registry, "hub_reachable", lambda timeout=3.0: False)
    with caplog.at_level(logging.WARNING, logger="vlsearch.encoders.registry"):
        encoder = load_encoder("auto", model_dir=tmp_path, device="cpu")
    assert encoder.name == "offline" and encoder.dim == 384
    assert "Falling back to the `offline` model" in caplog.text
    assert list(tmp_path.glob("offline-classes-*.npy")), "class-name vectors are cached in the model dir"


def test_long_thin_images_are_cut_to_their_central_part_before_preprocessing():
    from PIL import Image

    from vlsearch.images import limit_aspect

    strip = Image.new("RGB", (1000, 10), "white")
    strip.paste((255, 0, 0), (480, 0, 520, 10))  # a red mark in the middle must survive the crop
    cut = limit_aspect(strip)
    assert cut.size == (40, 10) and cut.getpixel((20, 5)) == (255, 0, 0)
    assert limit_aspect(Image.new("RGB", (3, 900))).size == (3, 12)
    square = Image.new("RGB", (300, 200))
    assert limit_aspect(square) is square


def test_text_encoding_trimmed_to_the_last_end_of_text_equals_the_full_context():
    import torch

    from vlsearch.encoders.base import normalise

    tiny_encoder = load_encoder("tiny-random", device="cpu", precision="fp32")  # exact in fp32; bf16: test_precision
    assert tiny_encoder._trimmable
    batches = [["a dog"], ["a dog", "a photo of a red bicycle leaning on a wall at night in the rain", ""],
               ["word " * 100, "a cat"]]  # the last one fills all 77 positions: nothing to trim
    for texts in batches:
        tokens = tiny_encoder.tokenizer(texts)
        with torch.inference_mode():
            full = normalise(tiny_encoder.model.encode_text(tokens))
            trimmed = normalise(tiny_encoder._encode_trimmed(tokens))
        np.testing.assert_allclose(trimmed, full, atol=1e-5)
        np.testing.assert_allclose(tiny_encoder.encode_texts(texts), full, atol=1e-5)
    # Trimming really happens for a short query: the transformer sees 4 positions (start, a, dog, end), not 77.
    seen = []
    hook = tiny_encoder.model.transformer.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    try:
        tiny_encoder.encode_texts(["a dog"])
    finally:
        hook.remove()
    assert seen == [4]
