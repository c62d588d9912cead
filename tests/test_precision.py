"""Reduced precision on the CPU (encoders/precision.py): bf16 where the CPU computes it in hardware, chosen by
detection, and faithful to fp32. The tiny models run bf16 wherever it is asked for (emulated where the CPU lacks
it), so these tests hold on any CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlsearch.encoders.precision as precision
from vlsearch.captioner import load_image_text_model
from vlsearch.encoders import load_encoder
from vlsearch.encoders.base import normalise
from vlsearch.encoders.errors import UnknownPrecision
from vlsearch.images.samples import sample_photos

TEXTS = ["a dog", "a photo of a red bicycle leaning on a wall at night in the rain", "coffee", "word " * 100,
         "two cats asleep on a sofa", ""]


@pytest.fixture(scope="module")
def pair():
    return (load_encoder("tiny-random", device="cpu", precision="fp32"),
            load_encoder("tiny-random", device="cpu", precision="bf16"))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_vectors_stay_within_the_fidelity_bound_of_fp32(pair):
    """The issue's bound, image and text towers: cosine >= 0.995 mean and >= 0.98 min to the fp32 vectors."""
    fp32, bf16 = pair
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    photos = list(sample_photos().values())
    for a, b in ((fp32.encode_images(photos), bf16.encode_images(photos)),
                 (fp32.encode_texts(TEXTS), bf16.encode_texts(TEXTS))):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        close = cosines(a, b)
        assert close.mean() >= 0.995 and close.min() >= 0.98, close
        assert not np.array_equal(a, b)  # it really ran in another format


def test_trimmed_text_encoding_in_bf16_matches_the_full_context_within_bf16_rounding(pair):
    """Trimming is exact in fp32 (test_encoders.py); in bf16 the shorter sums round differently, no more."""
    _, bf16 = pair
    tokens = bf16.tokenizer(TEXTS)
    with torch.inference_mode():
        full = normalise(bf16.model.encode_text(tokens))
    assert cosines(bf16.encode_texts(TEXTS), full).min() >= 0.999


def test_auto_picks_bf16_only_on_a_cpu_that_computes_it_and_fp16_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert load_encoder("tiny-random", device="cpu").precision == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert load_encoder("tiny-random", device="cpu").precision == "bf16"
    assert precision.resolve_precision("auto", "cuda:0") == "fp16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"  # --precision fp32 keeps the reference path


@pytest.mark.parametrize(("asked", "message"), [("fp16", "fp16 runs on a GPU only"), ("int4", "unknown precision")])
def test_a_precision_that_cannot_run_is_an_error_before_loading(asked, message):
    for load in (lambda: load_encoder("tiny-random", device="cpu", precision=asked),
                 lambda: load_image_text_model("tiny-random", "caption", device="cpu", precision=asked)):
        with pytest.raises(UnknownPrecision, match=message):
            load()


def test_blip_in_bf16_scores_like_fp32():
    """BLIP's weights and pixels in bf16: its yes/no confidence and matching scores stay close to fp32's, and its
    next-token distributions along fp32's caption too (the random tiny model's near-ties let greedy captions part
    after a dozen words, so the captions themselves are not compared)."""
    photos = list(sample_photos().values())[:4]
    questions = ["is there a cat?"] * len(photos)
    for task in ("answer", "match"):
        fp32 = load_image_text_model("tiny-random", task, device="cpu", precision="fp32")
        bf16 = load_image_text_model("tiny-random", task, device="cpu", precision="bf16")
        assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
        score = (lambda m: m.yes_probability(photos, questions)) if task == "answer" else (
            lambda m: m.match(photos, questions))
        np.testing.assert_allclose(score(bf16), score(fp32), atol=0.02)
    fp32 = load_image_text_model("tiny-random", "caption", device="cpu", precision="fp32")
    bf16 = load_image_text_model("tiny-random", "caption", device="cpu", precision="bf16")
    with torch.inference_mode():
        ids = fp32.model.generate(**fp32._inputs(photos, None), max_new_tokens=20, num_beams=1, do_sample=False)
        logits = [m.model(**m._inputs(photos, None), input_ids=ids).logits.float() for m in (fp32, bf16)]
    close = torch.nn.functional.cosine_similarity(*logits, dim=-1)
    assert close.mean() >= 0.995 and close.min() >= 0.98, close




def stored_vectors(root) -> np.ndarray:
    from vlsearch.library import Library

    lib = Library.open(root, create=False)
    try:
        ids, vectors = lib.load_vectors("tiny-random", list(range(1, 100)))
        return vectors[np.argsort(ids)]
    finally:
        lib.close()


def test_the_cli_takes_a_precision_and_says_what_to_change_when_it_cannot_run(tmp_path):
    """`vlsearch index --precision`: fp32 stores what the in-process fp32 encoder makes, bf16 something else within
    the fidelity bound; fp16 on the CPU ends before loading, naming the option and what would run."""
    from typer.testing import CliRunner

    from tests.photos import write_photos
    from vlsearch.api.cli import app
    from vlsearch.indexer import Indexer
    from vlsearch.library import Library

    write_photos(tmp_path / "photos", 3)
    runs = {}
    for asked in ("fp16", "fp32", "bf16"):
        result = CliRunner().invoke(app, [
            "index", str(tmp_path / "photos"), "--library", str(tmp_path / asked), "--model", "tiny-random",
            "--workers", "0", "--no-captions", "--no-ocr", "--device", "cpu", "--precision", asked])
        runs[asked] = result
    assert runs["fp16"].exit_code == 2 and "--precision fp16: fp16 runs on a GPU only" in runs["fp16"].output
    assert all(runs[p].exit_code == 0 and "3 embedded" in runs[p].output for p in ("fp32", "bf16"))
    reference = Library.open(tmp_path / "reference")
    Indexer(reference, load_encoder("tiny-random", device="cpu", precision="fp32"), workers=0).run(
        [tmp_path / "photos"])
    reference.close()
    fp32, bf16 = stored_vectors(tmp_path / "fp32"), stored_vectors(tmp_path / "bf16")
    np.testing.assert_array_equal(fp32, stored_vectors(tmp_path / "reference"))
    assert not np.array_equal(fp32, bf16) and cosines(fp32, bf16).min() >= 0.98
