"""The core's typed errors as an HTTP client meets them: what is wrong, and what the server's operator can change,
naming the server's settings (`vqa_model`, or `VLSEARCH_VQA_MODEL`), never a command-line flag: the person reading
an API error, or the page that shows it, has no flags to pass. The CLI's words are in wording.py."""

from __future__ import annotations

from functools import singledispatch

from vlsearch.api.wording import SUGGESTED
from vlsearch.captioner import ModelMissing, NotSupported
from vlsearch.captioner.ocr import OcrUnavailable
from vlsearch.library.errors import ModelMismatchError

SETTING = {"caption": "caption_model", "answer": "vqa_model", "match": "itm_model"}
OCR_INSTALL = "the server's operator has to install OCR (rapidocr-onnxruntime, as the README says) and restart"


def operator_hint(task: str) -> str:
    """How the operator loads a model for `task`: the setting, its environment variable and a preset."""
    setting = SETTING[task]
    return (f"the server's operator can load one: set {setting} = \"{SUGGESTED[task].split(' ')[0]}\" in its "
            f"settings (or VLSEARCH_{setting.upper()}) and restart it")


@singledispatch
def say(exc: BaseException) -> str:
    """What went wrong and who can change it, for an HTTP client: the error's own words by default (the core never
    names a flag)."""
    return str(exc)


@say.register
def _(exc: NotSupported) -> str:
    if exc.task == "ocr":
        return f"{exc}: {OCR_INSTALL}"
    return f"{exc}; {operator_hint(exc.task)}" if exc.task in SETTING else str(exc)


@say.register
def _(exc: ModelMissing) -> str:
    return f"{exc}; {operator_hint(exc.task)}"


@say.register
def _(exc: OcrUnavailable) -> str:
    return f"{OCR_INSTALL} ({exc.reason})"


@say.register
def _(exc: ModelMismatchError) -> str:
    if not exc.have:
        return "the library holds no vectors yet; index some images first (POST /api/v1/index)"
    return f"{exc}: the server's `model` setting has to name {exc.have[0]!r}"
