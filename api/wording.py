"""The core's typed errors in the words of the person who meets them: what is wrong (the error's own message) and
what to change here, naming the CLI's flags and commands. The core never names them: it raises errors that keep
what a remedy needs (the limit hit, the model wanted, the task) as data, and only this module says them.

The HTTP API words them for its clients, who have no flags to pass, in http_wording.py."""

from __future__ import annotations

from functools import singledispatch

from vlsearch.captioner import ModelMissing, NotSupported, WrongTask
from vlsearch.captioner.errors import TASK_VERBS
from vlsearch.captioner.ocr import OcrUnavailable
from vlsearch.encoders.errors import (
    CheckpointUnusable,
    DeviceUnavailable,
    NeedsArchitecture,
    UnknownModel,
    UnknownPrecision,
    UnknownPretrained,
    WeightsNotHere,
)
from vlsearch.indexer.distributed.cluster import ClusterUnreachable
from vlsearch.library.errors import ModelMismatchError, NotAFolder
from vlsearch.library.parquet_io.format import FolderNotEmpty, ModelConflict, ModelUnnamed

# The flag that loads a model for each task, and the preset to suggest.
MODEL_FLAG = {"caption": "--caption-model", "answer": "--vqa-model", "match": "--itm-model"}
SUGGESTED = {"caption": "blip-base (or offline)", "answer": "blip-vqa-base", "match": "blip-itm-base"}
OCR_INSTALL = (
    "OCR needs rapidocr-onnxruntime, installed without the GUI OpenCV it names: "
    "pip install opencv-python-headless onnxruntime pyclipper shapely pyyaml && "
    "pip install --no-deps rapidocr-onnxruntime==1.4.4 (make demo and make test do this); or pass --no-ocr"
)
RAY_START = ("Start it with `ray start --head` on the head node (and `ray start --address=HEAD:6379` on the others), "
             "or pass --ray local for a single-machine run.")


def load_hint(task: str) -> str:
    """How to load a model for `task`: "pass --vqa-model blip-vqa-base"."""
    return f"pass {MODEL_FLAG[task]} {SUGGESTED[task]}"


@singledispatch
def explain(exc: BaseException) -> str:
    """What went wrong and what to change, for a person at the CLI."""
    return str(exc)


@explain.register
def _(exc: WeightsNotHere) -> str:
    named = f"{exc.model} ({exc.repo})" if exc.repo else exc.model
    file = "; or pass --weights PATH to a checkpoint file" if exc.file_instead else ""
    return (f"The weights of {named} are not on this machine and the model hub cannot be reached. On a connected "
            f"machine run `vlsearch models pull {exc.model} --model-dir DIR`, then copy DIR here and pass --model-dir "
            f"DIR (or set VLSEARCH_MODEL_DIR){file}. Looked in: {exc.looked_in}.")


@explain.register
def _(exc: CheckpointUnusable) -> str:
    if exc.file:
        return f"--weights {exc}"
    return f"{exc} (`vlsearch models pull` fetches a preset's weights again)"


@explain.register
def _(exc: UnknownModel) -> str:
    presets = ", ".join(exc.choices)
    if exc.task is not None:
        return (f"unknown model {exc.spec!r} for {MODEL_FLAG[exc.task]}: use a preset ({presets}) or a folder holding "
                "a BLIP checkpoint")
    if exc.file_instead:
        return (f"unknown model {exc.spec!r}: use a preset ({presets}), ARCH/PRETRAINED from "
                "open_clip.list_pretrained(), or ARCH with --weights PATH")
    return str(exc)


@explain.register
def _(exc: UnknownPretrained) -> str:
    file = exc.pretrained.split("#")[0]
    return f"{exc}; if these are weights from a local file, pass --model {exc.arch} --weights PATH/TO/{file}"


@explain.register
def _(exc: NeedsArchitecture) -> str:
    return f"--weights needs an architecture: --model ARCH (e.g. {exc.default}); got {exc.arch!r}"


@explain.register
def _(exc: UnknownPrecision) -> str:
    return f"--precision {exc.precision}: {exc}"


@explain.register
def _(exc: DeviceUnavailable) -> str:
    if exc.device == "cuda":
        return "--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto"
    return str(exc)


@explain.register
def _(exc: WrongTask) -> str:
    if exc.fits is not None:
        return f"{exc}: pass it as {MODEL_FLAG[exc.fits]}"
    return f"{exc.spec} cannot {TASK_VERBS[exc.task]}; for {MODEL_FLAG[exc.task]} use one of: {', '.join(exc.choices)}"


@explain.register
def _(exc: NotSupported) -> str:
    if exc.task == "ocr":
        return f"{exc}: {OCR_INSTALL}"
    return f"{exc}: {load_hint(exc.task)} (see `vlsearch models list`)"


@explain.register
def _(exc: ModelMissing) -> str:
    return f"{exc}: {load_hint(exc.task)}"


@explain.register
def _(exc: OcrUnavailable) -> str:
    return f"{OCR_INSTALL} ({exc.reason})"


@explain.register
def _(exc: ClusterUnreachable) -> str:
    return f"{exc}. {RAY_START}"


@explain.register
def _(exc: NotAFolder) -> str:
    return f"{exc}: pass --library DIR"


@explain.register
def _(exc: ModelMismatchError) -> str:
    if not exc.have:
        return f"library {exc.root} holds no vectors yet; run `vlsearch index` first"
    return (f"{exc}. Search with --model {exc.have[0]}, or run `vlsearch index --model {exc.wanted}` to add vectors "
            "for it.")


@explain.register
def _(exc: FolderNotEmpty) -> str:
    return f"{exc.folder} is not empty; name a new folder, or pass --overwrite to replace the Parquet files in it"


@explain.register
def _(exc: ModelUnnamed) -> str:
    return f"{exc.path}: no vlsearch metadata says which model made its embeddings; name it (--model NAME)"


@explain.register
def _(exc: ModelConflict) -> str:
    return f"{exc}; leave out --model to import them as {exc.recorded!r}"
