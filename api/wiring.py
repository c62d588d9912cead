"""One policy, for the CLI and the server alike, for opening a library and loading the models that serve it: which
model embeds (the library's own, else `auto`), which captions (the one asked for, else the one the library's
captions come from, else `auto`), what stands in when a recorded model cannot be loaded here, which models are
optional.

Nothing here prints. What goes wrong is raised: the core's typed errors as they come (the caller words them), and
SetupError for what this module itself finds. What a person should see while it works (a spinner per model load,
a warning when a model stands in or OCR is skipped) goes to the LoadHooks the caller passes. The core packages are
imported inside the functions: `vlsearch --help` must not wait for torch."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlsearch.api.service import Models, Service
    from vlsearch.api.settings import Settings
    from vlsearch.captioner import GenerationSettings, ImageTextModel
    from vlsearch.captioner.ocr import OcrReader
    from vlsearch.encoders import Encoder
    from vlsearch.library import Library
    from vlsearch.search import SearchEngine


class SetupError(Exception):
    """A library or model cannot be set up as asked; the message says what to change."""


class LoadHooks:
    """What the caller shows while models load. The default shows nothing (the server's tests, scripts)."""

    def loading(self, task: str, spec: str) -> AbstractContextManager[Any]:
        """Around one model load; `task` is embed, caption, answer or match."""
        return nullcontext()

    def stand_in(self, recorded: str, error: Exception) -> None:
        """The library's caption model `recorded` cannot be loaded here (`error` says why); `auto` stands in."""

    def ocr_skipped(self, error: Exception) -> None:
        """OCR is not installed (`error` says what to install); images are indexed without their text."""


QUIET = LoadHooks()


def open_library(path: Path, create: bool = False, faiss_gpu: bool = False) -> Library:
    from vlsearch.library import Library

    try:
        return Library.open(path, create=create, faiss_gpu=faiss_gpu)
    except OSError as exc:
        raise SetupError(f"cannot open the library {path}: {exc.strerror or exc}") from None


def load_model(spec: str, weights: Path | None, model_dir: Path, device: str = "auto",
               hooks: LoadHooks = QUIET, *, precision: str = "auto") -> Encoder:
    """The embedding model; WeightsUnavailable or ValueError when it cannot be loaded as asked."""
    from vlsearch.encoders import load_encoder

    with hooks.loading("embed", spec):
        return load_encoder(spec, weights=weights, model_dir=model_dir, device=device, precision=precision)


def load_text_model(spec: str, task: str, model_dir: Path, device: str = "auto",
                    settings: GenerationSettings | None = None, hooks: LoadHooks = QUIET, *,
                    precision: str = "auto") -> ImageTextModel:
    """A captioning (caption), VQA (answer) or image-text matching (match) model; WeightsUnavailable, ValueError or
    OcrUnavailable when it cannot be loaded as asked."""
    from vlsearch.captioner import load_image_text_model

    with hooks.loading(task, spec):
        return load_image_text_model(spec, task, model_dir=model_dir, device=device, settings=settings,
                                     precision=precision)


def library_caption_model(lib: Library, chosen: str | None, model_dir: Path, device: str = "auto",
                          settings: GenerationSettings | None = None, hooks: LoadHooks = QUIET, *,
                          precision: str = "auto") -> tuple[ImageTextModel, bool]:
    """(model, stand_in): the caption model to use on `lib`: the one asked for (an error if it cannot load), else
    the one the library's captions come from, else `auto`. A recorded model that cannot be loaded here (its weights
    or folder are elsewhere) is a warning, not a dead end: `auto` stands in (stand_in is True) for images with no
    caption at all, and its captions are kept apart by name."""
    if chosen:
        return load_text_model(chosen, "caption", model_dir, device, settings, hooks, precision=precision), False
    recorded = lib.caption_model()
    if recorded and recorded != "auto":
        from vlsearch.captioner.ocr import OcrUnavailable
        from vlsearch.encoders import WeightsUnavailable

        try:
            return load_text_model(recorded, "caption", model_dir, device, settings, hooks, precision=precision), False
        except (WeightsUnavailable, ValueError, OcrUnavailable) as exc:
            hooks.stand_in(recorded, exc)
            return load_text_model("auto", "caption", model_dir, device, settings, hooks, precision=precision), True
    return load_text_model("auto", "caption", model_dir, device, settings, hooks, precision=precision), False


def optional_matcher(spec: str, model_dir: Path, device: str, hooks: LoadHooks = QUIET, *,
                     precision: str = "auto") -> ImageTextModel | None:
    """The image-text matching model; with `auto` and no weights here, none (rerank then answers 503)."""
    from vlsearch.captioner import load_image_text_model
    from vlsearch.encoders import WeightsUnavailable

    if spec != "auto":
        return load_text_model(spec, "match", model_dir, device, hooks=hooks, precision=precision)
    try:
        return load_image_text_model("auto", "match", model_dir=model_dir, device=device, precision=precision)
    except (WeightsUnavailable, ValueError):
        return None


def load_ocr(hooks: LoadHooks = QUIET) -> OcrReader | None:
    """The OCR engine; when it is not installed, a warning and None: indexing goes on without the images' text."""
    from vlsearch.captioner.ocr import OcrUnavailable, ocr_reader

    try:
        return ocr_reader()
    except OcrUnavailable as exc:
        hooks.ocr_skipped(exc)
        return None


def check_model(lib: Library, spec: str, weights: Path | None) -> None:
    """Raise before any weights are loaded or downloaded when they could not search `lib`: a --weights file that
    is not there, a model the library has no vectors of (LibraryError)."""
    from vlsearch.encoders import canonical_name

    if weights is not None and not weights.is_file():
        raise SetupError(f"--weights {weights}: no such file; point it at an open_clip checkpoint")
    name = canonical_name(spec, weights)
    if name is not None:
        lib.require_model(name)


def engine_for(lib: Library, model: str | None, weights: Path | None, model_dir: Path, max_stale_s: float = 0.0,
               hooks: LoadHooks = QUIET) -> SearchEngine:
    """A search engine over `lib` with the model asked for, else the library's own."""
    from vlsearch.search import SearchEngine

    spec = model or lib.default_model()
    if spec is None:
        raise SetupError(f"library {lib.root} is empty; run `vlsearch index FOLDER --library {lib.root}` first")
    check_model(lib, spec, weights)
    return SearchEngine(lib, load_model(spec, weights, model_dir, hooks=hooks), max_stale_s)


def build_service(settings: Settings, hooks: LoadHooks = QUIET) -> Service:
    """Open the library and load every model once, timing each load (shown in /metrics)."""
    from vlsearch.api.service import Service

    # FAISS searches on the GPU too (flat and IVF indexes, with faiss-gpu) unless the device is pinned to the CPU
    lib = open_library(settings.library, create=True, faiss_gpu=settings.device != "cpu")
    models = load_models(lib, settings, hooks)
    service = Service(lib, models, settings, index_workers=settings.index_workers)
    started = time.perf_counter()
    if service.engine() is not None:  # read (or rebuild) the FAISS index now, not during the first search
        lib.vector_index(models.encoder.name)
        service.metrics.model_load.labels("vectors", models.encoder.name).set(time.perf_counter() - started)
    return service


def load_models(lib: Library, settings: Settings, hooks: LoadHooks = QUIET) -> Models:
    """Every model the server's settings ask for, each load timed."""
    from vlsearch.api.service import Models

    load_seconds: dict[tuple[str, str], float] = {}

    def timed(task: str, load: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = load()
        model = result[0] if isinstance(result, tuple) else result
        if model is not None:
            load_seconds[(task, getattr(model, "name", task))] = time.perf_counter() - started
        return result

    spec = settings.model or lib.default_model() or "auto"
    if lib.default_model():
        check_model(lib, spec, None)  # a model the library has no vectors of: a clear error, before loading it
    model_dir, device, precision = settings.model_dir, settings.device, settings.precision
    encoder = timed("embed", lambda: load_model(spec, None, model_dir, device, hooks, precision=precision))
    captioner, stand_in = (timed("caption", lambda: library_caption_model(lib, settings.caption_model, model_dir,
                                                                          device, hooks=hooks, precision=precision))
                           if settings.captions else (None, False))
    answerer = timed("answer", lambda: load_text_model(settings.vqa_model, "answer", model_dir, device, hooks=hooks,
                                                       precision=precision))
    matcher = timed("match", lambda: optional_matcher(settings.itm_model, model_dir, device, hooks,
                                                      precision=precision))
    reader = timed("ocr", lambda: load_ocr(hooks)) if settings.ocr else None
    return Models(encoder=encoder, captioner=captioner, answerer=answerer, matcher=matcher, ocr=reader,
                  caption_stand_in=stand_in, load_seconds=load_seconds)
