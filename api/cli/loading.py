"""The wiring's loaders (api/wiring.py) as the commands use them: a spinner while each model loads, its warnings
printed, and a library or model that cannot be set up as asked ending the command with what to change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.markup import escape

from vlsearch.api import wiring
from vlsearch.api.cli.output import err, fail

if TYPE_CHECKING:
    from vlsearch.captioner import GenerationSettings, ImageTextModel
    from vlsearch.captioner.ocr import OcrReader
    from vlsearch.encoders import Encoder
    from vlsearch.library import Library
    from vlsearch.search import SearchEngine

T = TypeVar("T")


class TerminalHooks(wiring.LoadHooks):
    def loading(self, task: str, spec: str) -> AbstractContextManager[Any]:
        return err.status(f"loading model {spec}…" if task == "embed" else f"loading {task} model {spec}…")

    def stand_in(self, recorded: str, error: Exception) -> None:
        from vlsearch.api.wording import explain

        err.print(f"[yellow]warning:[/] this library's captions come from {escape(recorded)}, which cannot be "
                  f"loaded here: {escape(explain(error))}\n`auto` captions only the images that have no caption; pass "
                  "--caption-model to choose a model, or --no-captions.", highlight=False)

    def ocr_skipped(self, error: Exception) -> None:
        from vlsearch.api.wording import explain

        err.print(f"[yellow]warning:[/] skipping OCR: {escape(explain(error))}", highlight=False)


HOOKS = TerminalHooks()


def is_setup_error(exc: BaseException) -> bool:
    """Whether `exc` says a library or model cannot be set up as asked (as opposed to a bug). The error types are
    imported only once something has gone wrong: importing them loads torch."""
    from vlsearch.captioner.ocr import OcrUnavailable
    from vlsearch.encoders import WeightsUnavailable
    from vlsearch.library import LibraryError

    return isinstance(exc, wiring.SetupError | LibraryError | WeightsUnavailable | OcrUnavailable | ValueError)


@contextmanager
def setting_up() -> Iterator[None]:
    """A library or model that cannot be set up as asked ends the command with what to change."""
    try:
        yield
    except Exception as exc:
        if not is_setup_error(exc):
            raise
        raise fail(exc) from None


def set_up(load: Callable[[], T]) -> T:
    with setting_up():
        return load()


def open_library(path: Path, create: bool = False) -> Library:
    return set_up(lambda: wiring.open_library(path, create=create))


def load_model(spec: str, weights: Path | None, model_dir: Path, device: str = "auto",
               precision: str = "auto") -> Encoder:
    return set_up(lambda: wiring.load_model(spec, weights, model_dir, device, HOOKS, precision=precision))


def load_text_model(spec: str, task: str, model_dir: Path, device: str = "auto",
                    settings: GenerationSettings | None = None, precision: str = "auto") -> ImageTextModel:
    return set_up(lambda: wiring.load_text_model(spec, task, model_dir, device, settings, HOOKS,
                                                 precision=precision))


def library_caption_model(lib: Library, chosen: str | None, model_dir: Path, device: str = "auto",
                          settings: GenerationSettings | None = None,
                          precision: str = "auto") -> tuple[ImageTextModel, bool]:
    return set_up(lambda: wiring.library_caption_model(lib, chosen, model_dir, device, settings, HOOKS,
                                                       precision=precision))


def optional_matcher(spec: str, model_dir: Path, device: str) -> ImageTextModel | None:
    return set_up(lambda: wiring.optional_matcher(spec, model_dir, device, HOOKS))


def load_ocr() -> OcrReader | None:
    return wiring.load_ocr(HOOKS)


def engine_for(lib: Library, model: str | None, weights: Path | None, model_dir: Path) -> SearchEngine:
    return set_up(lambda: wiring.engine_for(lib, model, weights, model_dir, hooks=HOOKS))


def generation(beams: int, max_length: int, batch_size: int = 8) -> GenerationSettings:
    """The caption options as the caption models take them."""
    from vlsearch.captioner import GenerationSettings

    return GenerationSettings(max_new_tokens=max_length, num_beams=beams, batch_size=batch_size)
