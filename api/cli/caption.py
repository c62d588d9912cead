"""`vlsearch caption`: alt text for image files, or the captions and OCR text a library's images lack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from vlsearch.api.cli.loading import generation, library_caption_model, load_ocr, load_text_model, open_library
from vlsearch.api.cli.options import (
    BatchSizeOpt,
    BeamsOpt,
    CaptionModelOpt,
    DeviceOpt,
    ImagesArg,
    JsonOpt,
    LibraryOpt,
    MaxLengthOpt,
    ModelDirOpt,
    PrecisionOpt,
    PromptOpt,
)
from vlsearch.api.cli.output import RichProgress, console, err, fail, print_described, progress_bar, writer_lock
from vlsearch.api.cli.remote import KeyOpt, ServerOpt, caption_on_server

if TYPE_CHECKING:
    from vlsearch.captioner import GenerationSettings, ImageTextModel
    from vlsearch.captioner.ocr import OcrReader


def caption(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    images: ImagesArg = None,
    prompt: PromptOpt = None,
    caption_model: CaptionModelOpt = None,
    ocr: Annotated[bool, typer.Option(help="Also read the text in each image.")] = True,
    beams: BeamsOpt = 3,
    max_length: MaxLengthOpt = 30,
    batch_size: BatchSizeOpt = 8,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes (library mode).")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Alt text for image files, or captions and OCR text for a library's images.

    With IMAGES: a caption for each file (it need not be indexed). Without: every image of the library that lacks a
    caption from the model, or OCR text, gets it (incremental and resumable: run it again after an interruption)."""
    if server:  # the server's caption model writes them; OCR and generation options are its own
        if not images:
            raise fail("with --server, name image files to caption (the server's library is captioned by its index "
                       "jobs)")
        results = caption_on_server(server, key, images, prompt)
        show_captions(results, as_json, next((r["model"] for r in results if "model" in r), "?"))
        return
    settings = generation(beams, max_length, batch_size)
    if not images:
        describe_library(library, caption_model, model_dir, device, settings, prompt, ocr, workers, precision)
        return
    captioner = load_text_model(caption_model or "auto", "caption", model_dir, device, settings, precision)
    reader = load_ocr() if ocr else None
    show_captions(caption_files(images, captioner, reader, prompt), as_json, captioner.name)


def show_captions(results: list[dict[str, Any]], as_json: bool, model: str) -> None:
    """The results as JSON or lines; exit status 1 when any file has no caption."""
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print_captions(results, model)
    if any("error" in r for r in results):
        raise typer.Exit(1)


def describe_library(library: Path, caption_model: str | None, model_dir: Path, device: str,
                     settings: GenerationSettings, prompt: str | None, ocr: bool, workers: int | None,
                     precision: str = "auto") -> None:
    """The caption/OCR stage over the library's images that lack their text, with a progress bar and a summary."""
    from vlsearch.indexer.describe import Describer

    lib = open_library(library)
    captioner, stand_in = library_caption_model(lib, caption_model, model_dir, device, settings, precision)
    reader = load_ocr() if ocr else None
    what = " and ".join(w for w, on in (("captioning", captioner), ("reading text", reader)) if on)
    with writer_lock(lib, "`vlsearch caption`"), progress_bar() as progress:
        try:
            report = Describer(lib, captioner, reader, prompt=prompt, batch_size=settings.batch_size, workers=workers,
                               progress=RichProgress(progress, what), fill_gaps=stand_in).run(None)
        except KeyboardInterrupt:
            raise fail("interrupted; captions and text written so far are kept, run `vlsearch caption` to finish",
                       code=130) from None
    print_described(report, captioner)


def caption_files(images: list[Path], captioner: ImageTextModel, reader: OcrReader | None,
                  prompt: str | None) -> list[dict[str, Any]]:
    """A caption (and OCR text) for each file, or why there is none, in the order the files were named."""
    from vlsearch.images import DecodeError, decode_file

    decoded, results = [], []
    for path in images:
        if path.is_dir():
            results.append({"path": str(path), "error": "is a folder: index it (`vlsearch index FOLDER`), which "
                            "captions its images, or name image files"})
            continue
        if not path.exists():
            results.append({"path": str(path), "error": "no such file"})
            continue
        try:
            decoded.append((path, decode_file(path)))
        except DecodeError as exc:
            results.append({"path": str(path), "error": str(exc).removeprefix(f"{path}: ")})
    with err.status(f"captioning {len(decoded)} images with {captioner.name}…"):
        texts = captioner.caption([im for _, im in decoded], prompt) if decoded else []
        for (path, image), text in zip(decoded, texts, strict=True):
            entry = {"path": str(path), "caption": text, "model": captioner.name}
            if reader is not None:
                entry["ocr_text"] = reader.read(image)
            results.append(entry)
    order = {str(p): i for i, p in enumerate(images)}
    return sorted(results, key=lambda r: order[r["path"]])


def print_captions(results: list[dict[str, Any]], model: str) -> None:
    for r in results:
        if "error" in r:
            err.print(f"[red]✗[/] {escape(r['path'])}: {escape(r['error'])}", highlight=False)
        else:
            console.print(f"[bold]{escape(r['path'])}[/]: {escape(r['caption'])}", highlight=False)
            if r.get("ocr_text"):
                console.print(f"  text: {escape(' '.join(r['ocr_text'].split()))}", highlight=False)
    console.print(f"[dim]model: {escape(model)}[/]")
