"""The fast decoding path (large JPEGs decoded at reduced scale) gives what a full-size decode gives: the same
model input, to within a small fraction of a grey level, and the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps
from sqlalchemy import select

from tests.photos import exif_bytes, picture, write_photo
from vlsearch.encoders.clip import ClipEncoder
from vlsearch.images import decode_bytes, limit_aspect
from vlsearch.indexer import Indexer
from vlsearch.indexer.decoders import draft_size
from vlsearch.library import ImageRecord, Library

SIZES = [(1600, 1200), (1200, 1600), (4000, 1000), (2048, 2048), (3000, 2000), (1100, 1100)]


@pytest.fixture(scope="module")
def encoder_224(tmp_path_factory):
    """The tiny test model with CLIP's real input size (224 px): the resize the fast path must match is real."""
    folder = tmp_path_factory.mktemp("configs")
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (folder / "vlsearch-tiny-224.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return ClipEncoder("tiny-224", "vlsearch-tiny-224", None, "cpu")


def textured_photo(path: Path, seed: int, size: tuple[int, int], orientation: int | None = None) -> Path:
    """Shapes with sensor-like grain, so fine detail is there for a careless downscale to lose."""
    grain = np.random.default_rng(seed).normal(0, 25, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(picture(seed, size), dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.2))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90, exif=exif_bytes(orientation=orientation) if orientation else b"")
    return path


def reference_input(encoder, path: Path) -> torch.Tensor:
    """The model's own preprocess on the full-size, upright picture."""
    with Image.open(path) as im:
        return encoder.preprocess(limit_aspect(ImageOps.exif_transpose(im).convert("RGB")))


def test_reduced_decoding_keeps_the_model_input_and_vectors_of_a_full_decode(tmp_path, encoder_224):
    photos = tmp_path / "photos"
    paths = [textured_photo(photos / f"big_{i}.jpg", i, size) for i, size in enumerate(SIZES)]
    paths.append(textured_photo(photos / "turned.jpg", 40, (1600, 1200), orientation=6))
    draft = draft_size(encoder_224)
    reduced = 0
    for path in paths:
        image, meta = decode_bytes(path.read_bytes(), draft=draft)
        with Image.open(path) as full:  # the metadata gives the file's full size, not the draft's
            assert (meta.width, meta.height) == full.size
            assert (meta.display_width, meta.display_height) == ImageOps.exif_transpose(full).size
        assert min(image.size) >= draft
        reduced += image.size != (meta.display_width, meta.display_height)
        # What the model sees is the reference to within 0.01 (normalised units, about a third of a grey level)
        # on average: the fast path gives about 0.004 here, while decoding down to half the draft size fails.
        fast = encoder_224.preprocess(limit_aspect(image))
        assert (fast - reference_input(encoder_224, path)).abs().mean() < 0.01
    assert reduced >= 5  # the fast path really was taken

    lib = Library.open(tmp_path / "lib")
    Indexer(lib, encoder_224, workers=0).run([photos])
    with lib.session() as s:
        ids = dict(s.execute(select(ImageRecord.path, ImageRecord.id)).all())
    got, vectors = lib.load_vectors(encoder_224.name, [ids[str(p)] for p in paths])
    stored = dict(zip(got.tolist(), vectors, strict=True))
    expected = encoder_224.encode_image_tensors(torch.stack([reference_input(encoder_224, p) for p in paths]))
    cos = np.sum(expected * np.stack([stored[ids[str(p)]] for p in paths]), axis=1)
    assert cos.mean() >= 0.995 and cos.min() >= 0.98, cos
    lib.close()


def test_small_and_non_jpeg_images_decode_in_full(tmp_path):
    small = write_photo(tmp_path / "small.jpg", seed=1, size=(900, 700))
    png = write_photo(tmp_path / "big.png", seed=2, size=(2400, 1800))
    for path in (small, png):
        image, meta = decode_bytes(path.read_bytes(), draft=512)
        assert image.size == (meta.width, meta.height)
