import logging
from pathlib import Path

import pytest

from vlsearch.encoders import load_encoder
from vlsearch.library import Library


@pytest.fixture(scope="session")
def tiny_models():
    """The server's image-text models (caption, VQA, matching), tiny BLIPs with random weights, by Models field."""
    from vlsearch.captioner import load_image_text_model

    return {field: load_image_text_model("tiny-random", task, device="cpu")
            for field, task in (("captioner", "caption"), ("answerer", "answer"), ("matcher", "match"))}


@pytest.fixture(scope="session")
def tiny_encoder():
    """A tiny open_clip model with random weights: the real loading and inference code, small shapes."""
    return load_encoder("tiny-random", device="cpu")


@pytest.fixture
def library(tmp_path: Path):
    lib = Library.open(tmp_path / "library")
    yield lib
    lib.close()


@pytest.fixture(autouse=True)
def _quiet_libraries():
    for name in ("alembic", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)
