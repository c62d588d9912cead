"""The core's typed errors: their own messages name no CLI flag (they are stored with rows, logged, and sent over
HTTP), the CLI's words for them (api/wording.py) say what to change, and each survives a trip between processes
(Ray workers raise them) with its facts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from vlsearch.api.http_wording import SETTING, say
from vlsearch.api.wording import explain
from vlsearch.captioner.errors import ModelMissing, NotSupported, WrongTask
from vlsearch.captioner.ocr import OcrUnavailable
from vlsearch.encoders.errors import (
    CheckpointUnusable,
    DeviceUnavailable,
    NeedsArchitecture,
    UnknownModel,
    UnknownPretrained,
    WeightsNotHere,
)
from vlsearch.images import ImageTooLarge
from vlsearch.indexer.distributed import ClusterUnreachable
from vlsearch.library.errors import LibraryBusy, ModelMismatchError, NotAFolder
from vlsearch.library.parquet_io.format import FolderNotEmpty, ModelConflict, ModelUnnamed

# (an error as the core raises it, what the CLI's words must say)
CASES = [
    (WeightsNotHere("ViT-B-32/laion2b_s34b_b79k", "/models", file_instead=True),
     "`vlsearch models pull ViT-B-32/laion2b_s34b_b79k --model-dir DIR`"),
    (WeightsNotHere("blip-base", "/models", repo="Salesforce/blip-image-captioning-base"), "--model-dir DIR"),
    (CheckpointUnusable("/w/model.pt", "no such file; point it at an open_clip checkpoint", file=True),
     "--weights /w/model.pt: no such file"),
    (UnknownModel("nope", "unknown model 'nope': ...", choices=("ViT-B-32", "offline"), file_instead=True),
     "or ARCH with --weights PATH"),
    (UnknownModel("nope", "unknown model 'nope' for captions: ...", task="caption", choices=("blip-base",)),
     "unknown model 'nope' for --caption-model"),
    (UnknownPretrained("ViT-B-32", "mine.pt", "openai"), "--model ViT-B-32 --weights PATH/TO/mine.pt"),
    (NeedsArchitecture("weird", "ViT-B-32"), "--weights needs an architecture: --model ARCH (e.g. ViT-B-32)"),
    (DeviceUnavailable("cuda", "the cuda device was asked for, but torch sees no CUDA GPU; use the cpu or auto"),
     "use --device cpu or auto"),
    (WrongTask("blip-base", "answer", "blip-base cannot answer questions; use one of: blip-vqa-base",
               choices=("blip-vqa-base",)), "for --vqa-model use one of: blip-vqa-base"),
    (WrongTask("/ckpt", "caption", "/ckpt is a BlipForImageTextRetrieval checkpoint, ...", fits="match"),
     "pass it as --itm-model"),
    (NotSupported("yes/no checks need a VQA model, and offline is not one", "answer"),
     "pass --vqa-model blip-vqa-base"),
    (NotSupported("answering 'x' needs OCR, which is not installed", "ocr"), "pip install --no-deps rapidocr"),
    (ModelMissing("a rerank needs an image-text matching model", "match"), "pass --itm-model blip-itm-base"),
    (OcrUnavailable("No module named 'rapidocr_onnxruntime'"), "or pass --no-ocr"),
    (ClusterUnreachable("127.0.0.1:1", "nothing answers at 127.0.0.1:1"), "ray start --head"),
    (NotAFolder(Path("/srv/lib.db")), "pass --library DIR"),
    (ModelMismatchError(Path("/srv/lib"), "ViT-B-32/openai", ["tiny-random"]), "Search with --model tiny-random"),
    (ModelMismatchError(Path("/srv/lib"), "tiny-random", []), "run `vlsearch index` first"),
    (FolderNotEmpty(Path("/tmp/out")), "pass --overwrite"),
    (ModelUnnamed(Path("/tmp/v.parquet")), "(--model NAME)"),
    (ModelConflict(Path("/tmp/v.parquet"), "tiny-random", "ViT-B-32"), "leave out --model"),
]


@pytest.mark.parametrize(("error", "remedy"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_the_core_names_no_flag_and_the_cli_says_what_to_change(error, remedy):
    assert "--" not in str(error)
    assert remedy in explain(error)


@pytest.mark.parametrize("error", [e for e, _ in CASES] + [ImageTooLarge(128_000_000, width=20000, height=20000),
                                                             LibraryBusy(Path("/srv/lib"), "`vlsearch index`")],
                         ids=lambda e: type(e).__name__)
def test_typed_errors_cross_process_boundaries_whole(error):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error) and explain(again) == explain(error)
    assert vars(again) == vars(error)


@pytest.mark.parametrize(("error", "remedy"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_an_http_client_is_told_what_to_change_without_a_flag(error, remedy):
    """The API (and the page showing its errors) names the server's settings, never a command-line flag."""
    words = say(error)
    assert "--" not in words and words.strip()
    if isinstance(error, (NotSupported, ModelMissing)) and error.task in SETTING:
        assert f"set {SETTING[error.task]} = " in words and f"VLSEARCH_{SETTING[error.task].upper()}" in words
