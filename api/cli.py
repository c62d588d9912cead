"""The `vlsearch` command: index folders, search them by text or image, and look after the library."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from vlsearch.api.settings import PLATFORM_LIBRARY, PLATFORM_MODEL_DIR, default_library, default_model_dir

app = typer.Typer(
    help="Self-hosted multimodal image search: index photo folders, then find images by words or by other images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Library schema maintenance.", no_args_is_help=True)
models_app = typer.Typer(help="The models vlsearch embeds, captions and answers with; fetching their weights.",
                         no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

LibraryOpt = Annotated[
    Path,
    typer.Option("--library", "-l", help="Library folder.", default_factory=default_library,
                 show_default=f"$VLSEARCH_LIBRARY, else {PLATFORM_LIBRARY}"),
]
ModelDirOpt = Annotated[
    Path,
    typer.Option("--model-dir", help="Where model weights are cached and looked for; copy it to air-gapped machines.",
                 default_factory=default_model_dir, show_default=f"$VLSEARCH_MODEL_DIR, else {PLATFORM_MODEL_DIR}"),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model preset or ARCH/PRETRAINED (see `vlsearch models list`). "
                 "Default: the library's model, or `auto` for a new library."),
]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help="A local open_clip checkpoint file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
CaptionModelOpt = Annotated[
    str | None,
    typer.Option("--caption-model", help="blip-base, blip-large, offline, tiny-random, a BLIP checkpoint folder, or "
                 "auto. Default: the model of the library's captions, else auto (blip-base if its weights are here "
                 "or fetchable, else offline)."),
]
VqaModelOpt = Annotated[
    str, typer.Option("--vqa-model", help="blip-vqa-base, offline (questions about text only), a checkpoint folder, "
                      "or auto (blip-vqa-base if its weights are here or fetchable, else offline).")
]
ItmModelOpt = Annotated[
    str, typer.Option("--itm-model", help="blip-itm-base, a checkpoint folder, or auto (blip-itm-base if its "
                      "weights are here or fetchable).")
]
BeamsOpt = Annotated[int, typer.Option("--beams", min=1, help="Beam search width for captions (1: greedy, fastest).")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=1, help="Longest caption, in tokens.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help='Text every caption starts with, e.g. "a photo of".')
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )
    for noisy in ("alembic", "faiss", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("root").setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def open_library(path: Path, create: bool = False, faiss_gpu: bool = False):
    from vlsearch.library import Library, LibraryError

    try:
        return Library.open(path, create=create, faiss_gpu=faiss_gpu)
    except LibraryError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot open the library {path}: {exc.strerror or exc}") from None


def load_model(spec: str, weights: Path | None, model_dir: Path, device: str = "auto"):
    from vlsearch.encoders import WeightsUnavailable, load_encoder

    with err.status(f"loading model {spec}…"):
        try:
            return load_encoder(spec, weights=weights, model_dir=model_dir, device=device)
        except (WeightsUnavailable, ValueError) as exc:
            raise fail(str(exc)) from None


def load_text_model(spec: str, task: str, model_dir: Path, device: str = "auto", settings=None):
    """A captioning (caption), VQA (answer) or image-text matching (match) model, or a clear error."""
    from vlsearch.captioner import load_image_text_model
    from vlsearch.captioner.ocr import OcrUnavailable
    from vlsearch.encoders import WeightsUnavailable

    with err.status(f"loading {task} model {spec}…"):
        try:
            return load_image_text_model(spec, task, model_dir=model_dir, device=device, settings=settings)
        except (WeightsUnavailable, ValueError, OcrUnavailable) as exc:
            raise fail(str(exc)) from None


def library_caption_model(lib, chosen: str | None, model_dir: Path, device: str = "auto", settings=None):
    """(model, stand_in): the caption model to use on `lib`: the one asked for (an error if it cannot load), else
    the one the library's captions come from, else `auto`. A recorded model that cannot be loaded here (its weights
    or folder are elsewhere) is a warning, not a dead end: `auto` stands in (stand_in is True) for images with no
    caption at all, and its captions are kept apart by name."""
    if chosen:
        return load_text_model(chosen, "caption", model_dir, device, settings), False
    recorded = lib.caption_model()
    if recorded and recorded != "auto":
        from vlsearch.captioner import load_image_text_model
        from vlsearch.captioner.ocr import OcrUnavailable
        from vlsearch.encoders import WeightsUnavailable

        try:
            with err.status(f"loading caption model {recorded}…"):
                return load_image_text_model(recorded, "caption", model_dir=model_dir, device=device,
                                             settings=settings), False
        except (WeightsUnavailable, ValueError, OcrUnavailable) as exc:
            err.print(f"[yellow]warning:[/] this library's captions come from {escape(recorded)}, which cannot be "
                      f"loaded here: {escape(str(exc))}\n`auto` captions only the images that have no caption; pass "
                      "--caption-model to choose a model, or --no-captions.", highlight=False)
            return load_text_model("auto", "caption", model_dir, device, settings), True
    return load_text_model("auto", "caption", model_dir, device, settings), False


def load_ocr(required: bool):
    """The OCR engine; when it is not installed, an error if OCR was the point, else a warning and None."""
    from vlsearch.captioner.ocr import OcrUnavailable, ocr_reader

    try:
        return ocr_reader()
    except OcrUnavailable as exc:
        if required:
            raise fail(str(exc)) from None
        err.print(f"[yellow]warning:[/] skipping OCR: {escape(str(exc))}", highlight=False)
        return None


def generation(beams: int, max_length: int, batch_size: int = 8):
    from vlsearch.captioner import GenerationSettings

    return GenerationSettings(max_new_tokens=max_length, num_beams=beams, batch_size=batch_size)


class SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.speed
        if task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="cyan")


class RichProgress:
    """The indexer's progress hook, drawn by rich."""

    def __init__(self, progress: Progress, description: str = "indexing") -> None:
        self.progress = progress
        self.description = description
        self.task = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task(self.description, total=total)

    def advance(self, n: int, errors: int = 0) -> None:
        self.progress.advance(self.task, n)


@app.command()
def index(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Folders (walked recursively) and image files.", show_default=False)] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Decoding processes (0: decode in this process).",
                     show_default="min(4, cores); cores-1 with a GPU"),
    ] = None,
    device: DeviceOpt = "auto",
    max_pixels: Annotated[int, typer.Option(help="Larger images are skipped as possible decompression bombs.")] = (
        128_000_000
    ),
    prune: Annotated[bool, typer.Option(help="Forget files that vanished from the folders indexed.")] = True,
    captions: Annotated[bool, typer.Option(help="Caption each image (stored, and searchable by keyword).")] = True,
    ocr: Annotated[bool, typer.Option(help="Read the text in each image (searchable by keyword).")] = True,
    caption_model: CaptionModelOpt = None,
    beams: BeamsOpt = 3,
    max_length: MaxLengthOpt = 30,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="auto|local|ADDRESS", rich_help_panel="Distributed (Ray)",
        help="Spread decoding, embedding, captioning and OCR over a Ray cluster: `auto` joins the running cluster "
        "(RAY_ADDRESS, or one started here by `ray start`) or else starts Ray on this machine, `local` starts it on "
        "this machine, ADDRESS joins that cluster (ray://HEAD:10001 or HEAD:6379). Every node must see the files at "
        "the same paths. Results come back in shards of --shard-size files, each merged into the library when "
        "complete: a stopped run keeps its merged shards and the same command resumes.")] = None,
    lists: Annotated[list[Path] | None, typer.Option(
        "--list", metavar="FILE", rich_help_panel="Distributed (Ray)",
        help="A Parquet or CSV file listing image files or http(s) URLs to index (its `path` or `url` column, else "
        "its first column); repeatable; needs --ray.")] = None,
    shard_size: Annotated[int, typer.Option(
        min=1, rich_help_panel="Distributed (Ray)", help="Files per shard: the unit that is resumed.")] = 10_000,
    shards: Annotated[Path | None, typer.Option(
        "--shards", metavar="DIR", rich_help_panel="Distributed (Ray)",
        help="Write the shards as Parquet files into DIR and keep them there instead of merging them: "
        "`vlsearch import DIR` merges them later (here or on another machine).")] = None,
    actors: Annotated[int | None, typer.Option(
        min=1, rich_help_panel="Distributed (Ray)", help="Model actors per stage.",
        show_default="one per GPU in the cluster, else 1")] = None,
    ray_cpus: Annotated[int | None, typer.Option(
        min=1, rich_help_panel="Distributed (Ray)", help="CPUs of a Ray instance started on this machine.",
        show_default="all")] = None,
) -> None:
    """Index images: embed new and changed files, then caption them and read their text.

    New and changed files are embedded, unchanged ones skipped, moved ones keep their vectors. Then images
    without a caption or OCR text get them (on a CPU this takes longer than embedding: --no-captions skips it,
    and `vlsearch caption` does it later).

    With --ray the work runs on a Ray cluster, e.g. `vlsearch index --ray auto /mnt/photos` or
    `vlsearch index --ray ray://head:10001 --list urls.csv`."""
    from vlsearch.indexer import Indexer

    paths = paths or []
    lists = lists or []
    if not paths and not lists:
        raise fail("name the folders or files to index (or, with --ray, a --list FILE)")
    if lists and ray is None:
        raise fail("--list needs --ray (on one machine: --ray local)")
    if shards is not None and ray is None:
        raise fail("--shards needs --ray")
    for p in [*paths, *lists]:
        if not p.exists():
            raise fail(f"{p}: no such file or folder")
    lib = open_library(library, create=True)
    spec = model or lib.default_model() or "auto"
    encoder = load_model(spec, weights, model_dir, device)
    captioner, stand_in = (library_caption_model(lib, caption_model, model_dir, device, generation(beams, max_length))
                           if captions else (None, False))
    reader = load_ocr(required=False) if ocr else None
    if ray is not None:
        from vlsearch.indexer.distributed import ModelSpecs, RayOptions

        specs = ModelSpecs(
            encoder=spec if weights else encoder.name, weights=str(weights) if weights else None,
            model_dir=str(model_dir) if model_dir else None, device=device,
            caption=captioner.name if captioner is not None else None,
            generation=generation(beams, max_length), ocr=reader is not None)
        options = RayOptions(address=ray, cpus=ray_cpus, shard_size=shard_size, batch_size=batch_size,
                             actors=actors, shards_dir=shards, max_pixels=max_pixels)
        del captioner, reader  # the workers load their own
        index_on_ray(lib, encoder, specs, options, paths, lists, prune)
        return
    with writer_lock(lib, "`vlsearch index`"), Progress(*progress_columns(), console=err, transient=False) as progress:
        try:
            report = Indexer(lib, encoder, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                             prune=prune, progress=RichProgress(progress)).run(paths)
        except KeyboardInterrupt:
            raise fail("interrupted; what was indexed so far is kept, run the same command again to finish",
                       code=130) from None
        except Exception as exc:
            from vlsearch.library import LibraryError

            if isinstance(exc, LibraryError | FileNotFoundError | ValueError):
                raise fail(str(exc)) from None
            raise
    console.print(
        f"{report.seen} files: [green]{report.embedded} embedded[/], {report.reused} reused, {report.moved} moved, "
        f"{report.unchanged} unchanged, [red]{report.errors} errors[/], {report.removed} removed "
        f"in {report.seconds:.1f}s with {escape(encoder.name)} → {escape(str(lib.root))}"
    )
    print_failures(report.failures)
    if captioner is not None or reader is not None:
        with writer_lock(lib, "`vlsearch index`"):
            describe_library(lib, captioner, reader, paths, None, workers, max_pixels, fill_gaps=stand_in)


def index_on_ray(lib, encoder, specs, options, paths: list[Path], lists: list[Path], prune: bool) -> None:
    from vlsearch.indexer.distributed import DistributedError, RayIndexer
    from vlsearch.library import LibraryError

    with writer_lock(lib, "`vlsearch index --ray`"), Progress(*progress_columns(), console=err) as progress:
        try:
            report = RayIndexer(lib, encoder, specs, options, progress=RichProgress(progress),
                                prune=prune).run(paths, lists)
        except KeyboardInterrupt:
            raise fail("interrupted; merged shards are kept, run the same command again to finish", code=130) from None
        except (DistributedError, LibraryError, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from None
    where = f"{options.shards_dir}" if options.shards_dir else str(lib.root)
    console.print(
        f"{report.seen} files: [green]{report.embedded} embedded[/], {report.captioned} captioned, {report.read} "
        f"read by OCR, {report.unchanged} unchanged, [red]{report.errors} errors[/], {report.removed} removed in "
        f"{report.shards} shards in {report.seconds:.1f}s with {escape(encoder.name)} on Ray "
        f"({escape(report.cluster or 'not started: nothing to do')}) → {escape(where)}"
    )
    if report.merged_leftovers:
        console.print(f"merged {report.merged_leftovers} shards left by an earlier run first")
    if options.shards_dir:
        console.print(f"{len(report.shard_files)} shard files written; merge them with "
                      f"`vlsearch import {escape(str(options.shards_dir))}`")
    print_failures(report.failures)


@contextmanager
def writer_lock(lib, who: str):
    """One indexing run per library at a time, whichever process (or server job) runs it."""
    from vlsearch.library import LibraryBusy

    try:
        with lib.writer(who):
            yield
    except LibraryBusy as exc:
        raise fail(str(exc)) from None


def progress_columns():
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())


def print_failures(failures: list[tuple[str, str]]) -> None:
    for path, reason in failures[:20]:
        console.print(f"  [red]✗[/] {escape(path)}: {escape(reason)}", highlight=False)
    if len(failures) > 20:
        console.print(f"  … and {len(failures) - 20} more (see `vlsearch status`)")


def describe_library(lib, captioner, reader, paths, prompt: str | None, workers: int | None, max_pixels: int,
                     batch_size: int = 8, fill_gaps: bool = False) -> None:
    """The caption/OCR stage over a library, with a progress bar and a summary line."""
    from vlsearch.indexer.describe import Describer

    what = " and ".join(w for w, on in (("captioning", captioner), ("reading text", reader)) if on)
    with Progress(*progress_columns(), console=err, transient=False) as progress:
        try:
            report = Describer(lib, captioner, reader, prompt=prompt, batch_size=batch_size, workers=workers,
                               max_pixels=max_pixels, progress=RichProgress(progress, what),
                               fill_gaps=fill_gaps).run(paths)
        except KeyboardInterrupt:
            raise fail("interrupted; captions and text written so far are kept, run `vlsearch caption` to finish",
                       code=130) from None
    model = f" with {escape(captioner.name)}" if captioner is not None else ""
    console.print(
        f"{report.captioned} captioned{model}, {report.read} read by OCR, {report.reused} copied from identical "
        f"files, {report.skipped} changed since indexing, [red]{report.errors} errors[/] in {report.seconds:.1f}s"
    )
    print_failures(report.failures)


def parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} {value!r}: use a date like 2024-05-31 or 2024-05-31T18:00") from None


def engine_for(lib, model: str | None, weights: Path | None, model_dir: Path, max_stale_s: float = 0.0):
    from vlsearch.encoders import canonical_name
    from vlsearch.library import LibraryError
    from vlsearch.search import SearchEngine

    spec = model or lib.default_model()
    if spec is None:
        raise fail(f"library {lib.root} is empty; run `vlsearch index FOLDER --library {lib.root}` first")
    if weights is not None and not weights.is_file():
        raise fail(f"--weights {weights}: no such file; point it at an open_clip checkpoint")
    name = canonical_name(spec, weights)
    if name is not None:  # a wrong model is reported before any weights are loaded or downloaded
        try:
            lib.require_model(name)
        except LibraryError as exc:
            raise fail(str(exc)) from None
    encoder = load_model(spec, weights, model_dir)
    try:
        return SearchEngine(lib, encoder, max_stale_s)
    except LibraryError as exc:
        raise fail(str(exc)) from None


def print_hits(hits, as_json: bool) -> None:
    if as_json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    if not hits:
        console.print("no matches")
        return
    table = Table(box=None, header_style="bold")
    for column in ("#", "score", "id"):
        table.add_column(column, justify="right")
    table.add_column("path", overflow="fold")  # the whole path, wrapped, never cut short
    table.add_column("size")
    table.add_column("taken")
    reranked = any(h.match_score is not None for h in hits)
    if reranked:
        table.add_column("match", justify="right")
    for rank, h in enumerate(hits, 1):
        size = f"{h.width}×{h.height}" if h.width else ""
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else ""
        match = [f"{h.match_score:.3f}" if h.match_score is not None else ""] if reranked else []
        table.add_row(str(rank), f"{h.score:.3f}", str(h.id), Text(h.path), size, taken, *match)
        if h.caption:  # under its path, so the path keeps the width
            table.add_row("", "", "", Text(h.caption, style="dim"), "", "", *([""] if reranked else []))
    console.print(table)


@app.command()
def search(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    text: Annotated[str | None, typer.Argument(help="What to look for, in words.")] = None,
    image: Annotated[Path | None, typer.Option("--image", "-i", help="Look for images like this one.")] = None,
    negatives: Annotated[
        list[str] | None, typer.Option("--not", help="Push results away from this (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many results.")] = 20,
    min_score: Annotated[float | None, typer.Option(
        help="Drop results whose CLIP similarity is below this (in hybrid mode: from the vector ranking only; "
        "word matches stay).")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only files under this folder.")] = None,
    after: Annotated[str | None, typer.Option(help="Taken on or after this date (YYYY-MM-DD).")] = None,
    before: Annotated[str | None, typer.Option(help="Taken before this date.")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera make or model contains this.")] = None,
    sort: Annotated[str, typer.Option(help="score, or date (newest first among the top k).")] = "score",
    text_weight: Annotated[float, typer.Option(help="Weight of the text in a combined query.")] = 1.0,
    image_weight: Annotated[float, typer.Option(help="Weight of the image in a combined query.")] = 1.0,
    not_weight: Annotated[float, typer.Option(help="Weight of each --not term.")] = 0.5,
    mode: Annotated[str, typer.Option(help="vector (CLIP similarity), keyword (words in file names, captions and "
                                            'OCR text; "quoted phrases" match exactly) or hybrid (both, fused).')]
    = "vector",
    rerank: Annotated[int, typer.Option(min=0, help="Rescore the top N with an image-text matching model "
                                        "(slower, more precise at the top).")] = 0,
    itm_model: ItmModelOpt = "auto",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find images by text, by an example image, or both; --not terms push results away."""
    from vlsearch.indexer import DecodeError, decode_image
    from vlsearch.search import Filters, SearchQuery

    if not text and image is None:
        raise fail("give words to search for, --image PATH, or both")
    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    try:
        query_image = decode_image(image) if image else None
        query = SearchQuery(
            text=text, image=query_image, negatives=tuple(negatives or ()), k=k, sort=sort, mode=mode, rerank=rerank,
            text_weight=text_weight, image_weight=image_weight, negative_weight=not_weight,
            filters=Filters(path_prefix=path, after=parse_date(after, "--after"),
                            before=parse_date(before, "--before"), camera=camera, min_score=min_score),
        )
        if rerank:
            engine.matcher = load_text_model(itm_model, "match", model_dir)
        hits = engine.search(query)
    except (DecodeError, ValueError) as exc:
        raise fail(str(exc)) from None
    print_hits(hits, as_json)


@app.command()
def similar(
    target: Annotated[str, typer.Argument(help="An image id from the library, or a path to any image file.")],
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    k: Annotated[int, typer.Option("--k", "-k", min=1)] = 20,
    path: Annotated[str | None, typer.Option("--path", help="Only files under this folder.")] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find images that look like an indexed image or an image file (reverse image search)."""
    from vlsearch.indexer import DecodeError
    from vlsearch.search import Filters

    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    ref: int | Path = int(target) if target.isdigit() and not Path(target).exists() else Path(target)
    if isinstance(ref, Path) and not ref.exists():
        raise fail(f"{target}: no such image id or file")
    try:
        hits = engine.similar(ref, k=k, filters=Filters(path_prefix=path))
    except (DecodeError, LookupError, ValueError) as exc:
        raise fail(str(exc)) from None
    print_hits(hits, as_json)


@app.command()
def caption(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files to describe (they need not be indexed). None: caption the library's "
                       "images that lack a caption or OCR text."),
    ] = None,
    prompt: PromptOpt = None,
    caption_model: CaptionModelOpt = None,
    ocr: Annotated[bool, typer.Option(help="Also read the text in each image.")] = True,
    beams: BeamsOpt = 3,
    max_length: MaxLengthOpt = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")] = 8,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes (library mode).")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Alt text for image files, or captions and OCR text for a library's images.

    With IMAGES: a caption for each file (it need not be indexed). Without: every image of the library that lacks a
    caption from the model, or OCR text, gets it (incremental and resumable: run it again after an interruption)."""
    from vlsearch.indexer import DEFAULT_MAX_PIXELS, DecodeError, decode_image

    settings = generation(beams, max_length, batch_size)
    if not images:
        lib = open_library(library)
        captioner, stand_in = library_caption_model(lib, caption_model, model_dir, device, settings)
        reader = load_ocr(required=False) if ocr else None
        with writer_lock(lib, "`vlsearch caption`"):
            describe_library(lib, captioner, reader, None, prompt, workers, DEFAULT_MAX_PIXELS, batch_size, stand_in)
        return
    captioner = load_text_model(caption_model or "auto", "caption", model_dir, device, settings)
    reader = load_ocr(required=False) if ocr else None
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
            decoded.append((path, decode_image(path)))
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
    results.sort(key=lambda r: order[r["path"]])
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            if "error" in r:
                err.print(f"[red]✗[/] {escape(r['path'])}: {escape(r['error'])}", highlight=False)
            else:
                console.print(f"[bold]{escape(r['path'])}[/]: {escape(r['caption'])}", highlight=False)
                if r.get("ocr_text"):
                    console.print(f"  text: {escape(' '.join(r['ocr_text'].split()))}", highlight=False)
        console.print(f"[dim]model: {escape(captioner.name)}[/]")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='A question: about one image with --image, else about the whole '
                                            'library ("which photos show a dog on a beach?").')],
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    image: Annotated[str | None, typer.Option("--image", "-i", help="An image file, or the id of an indexed "
                                              "image, to ask about.")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="At most this many images (collection questions).")]
    = 10,
    candidates: Annotated[int, typer.Option(min=1, help="How many CLIP search results are checked.")] = 30,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Keep images whose yes-probability (or match "
                                             "probability) is at least this.")] = 0.5,
    vqa_model: VqaModelOpt = "auto",
    itm_model: ItmModelOpt = "auto",
    path: Annotated[str | None, typer.Option("--path", help="Only files under this folder.")] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Ask a question about one image, or about the whole library.

    With --image: visual question answering on that image. Without: CLIP finds candidates, a VQA model (or an
    image-text matching model) checks each, and the images it says yes to are listed best first."""
    from vlsearch.captioner import ModelSuite, NotSupported
    from vlsearch.indexer import DecodeError, decode_image

    if not re.search(r"\w", question):
        raise fail(f"{question!r} is not a question: ask e.g. \"what does the sign say?\" with --image, or "
                   "\"which photos show a dog on a beach?\"")
    if image is not None:
        target = Path(image)
        if not target.exists() and image.isdigit():
            lib = open_library(library)
            with lib.session() as s:
                from vlsearch.library import ImageRecord

                row = s.get(ImageRecord, int(image))
            if row is None:
                raise fail(f"image {image} is not in the library {lib.root}")
            target = Path(row.path)
        elif not target.exists():
            raise fail(f"{image}: no such image file or id")
        answerer = load_text_model(vqa_model, "answer", model_dir, device)
        try:
            answer = answerer.answer([decode_image(target)], [question])[0]
        except (DecodeError, NotSupported, ValueError) as exc:
            raise fail(str(exc)) from None
        if as_json:
            print(json.dumps({"path": str(target), "question": question, "answer": answer, "model": answerer.name},
                             indent=2, ensure_ascii=False))
        else:
            console.print(f"{escape(answer)}\n[dim]{escape(str(target))} · model: {escape(answerer.name)}[/]",
                          highlight=False)
        return
    from vlsearch.search import Filters
    from vlsearch.search.ask import ask_collection

    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    answerer = load_text_model(vqa_model, "answer", model_dir, device)
    matcher = None
    if "answer" not in answerer.tasks or answerer.name == "offline":
        from vlsearch.encoders import WeightsUnavailable

        try:  # no VQA model: fall back to image-text matching when its weights are here
            from vlsearch.captioner import load_image_text_model

            matcher = load_image_text_model(itm_model, "match", model_dir=model_dir, device=device)
        except (WeightsUnavailable, ValueError) as exc:
            if itm_model != "auto":
                raise fail(str(exc)) from None
    try:
        result = ask_collection(engine, ModelSuite(answerer=answerer, matcher=matcher), question, k=k,
                                candidates=candidates, threshold=threshold, filters=Filters(path_prefix=path))
    except (NotSupported, ValueError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps({
            "question": result.question, "retrieval_query": result.retrieval_query, "check": result.check,
            "method": result.method, "model": result.model, "candidates": result.candidates,
            "results": [f.as_dict() for f in result.findings],
        }, indent=2, ensure_ascii=False))
        return
    how = f"asked {result.model} \"{result.check}\"" if result.method == "vqa" else \
        f"matched \"{result.check}\" with {result.model}"
    console.print(f"searched for \"{escape(result.retrieval_query)}\", {escape(how)} of {result.candidates} candidates",
                  highlight=False)
    if not result.findings:
        console.print("no image passed the check")
        return
    table = Table(box=None, header_style="bold")
    for column in ("#", "p(yes)" if result.method == "vqa" else "match", "id"):
        table.add_column(column, justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("answer")
    for rank, f in enumerate(result.findings, 1):
        table.add_row(str(rank), f"{f.score:.3f}", str(f.hit.id), Text(f.hit.path), Text(f.answer))
    console.print(table)


@app.command()
def status(library: LibraryOpt, as_json: JsonOpt = False) -> None:
    """Counts of images, errors and vectors per model, and the library's size on disk."""
    from sqlalchemy import select

    from vlsearch.library import ImageRecord

    lib = open_library(library)
    st = lib.stats()
    with lib.session() as s:
        errors = s.execute(
            select(ImageRecord.path, ImageRecord.error).where(ImageRecord.status == "error").limit(10)
        ).all()
    if as_json:
        print(json.dumps({
            "library": str(st.root), "images": st.images, "errors": st.errors, "disk_bytes": st.disk_bytes,
            "schema_revision": st.schema_revision,
            "models": [{"name": m.name, "dim": m.dim, "vectors": m.vectors} for m in st.models],
            "captions": st.captions, "ocr": st.ocr,
        }, indent=2))
        return
    console.print(f"library   {escape(str(st.root))}  (schema {st.schema_revision})")
    console.print(f"images    {st.images} indexed, {st.errors} could not be read")
    for m in st.models:
        console.print(f"model     {escape(m.name)}: {m.vectors} vectors of dimension {m.dim}")
    for name, count in st.captions.items():
        console.print(f"captions  {escape(name)}: {count} images")
    console.print(f"ocr       {st.ocr} images read")
    console.print(f"disk      {st.disk_bytes / 1e6:.1f} MB")
    for p, reason in errors:
        console.print(f"  [red]✗[/] {escape(p)}: {escape(reason or '')}", highlight=False)


@app.command()
def reindex(
    library: LibraryOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's index.")] = None,
    kind: Annotated[str, typer.Option(
        "--index", help="auto (exact below 100k vectors, IVF above; with --memory the index that fits), flat, ivf, "
        "ivfpq (compressed: 1M vectors in ~150 MB, rescored from SQLite) or hnsw. Approximate kinds are tuned at "
        "build to recall@10 >= 0.95.")] = "auto",
    memory: Annotated[str | None, typer.Option(
        "--memory", help="Memory budget of the index, e.g. 512MB, 4GB, 1.5GiB: auto then builds exact search, "
        "IVF-Flat or IVF-PQ with the largest codes that fit (trained on a sample, vectors added in chunks).")] = None,
    latency_ms: Annotated[float | None, typer.Option(
        "--latency-ms", help="Latency target of one query (ms, on this machine): the search setting is capped "
        "where the recall target would be slower, and the conflict reported.")] = None,
    opq: Annotated[bool, typer.Option("--opq", help="Rotate vectors with OPQ before IVF-PQ codes.")] = False,
    quantizer: Annotated[str, typer.Option(
        "--quantizer", help="Coarse quantizer of an IVF index: flat (exact; ~3 ms a query at 16,384 lists) or hnsw "
        "(a graph: faster adds, but on clustered vectors it picks the wrong lists and needs a much larger nprobe; "
        "see BENCHMARKS.md).")] = "flat",
) -> None:
    """Rebuild the FAISS index files from the vectors stored in SQLite."""
    from vlsearch.library import LibraryError
    from vlsearch.library.vectors import format_bytes, parse_size

    try:
        budget = parse_size(memory) if memory is not None else None
    except ValueError as exc:
        raise fail(f"--memory: {exc}") from None
    if latency_ms is not None and latency_ms <= 0:
        raise fail(f"--latency-ms must be more than 0, not {latency_ms}")
    lib = open_library(library)
    names = [model] if model else [m.name for m in lib.models()]
    for name in names:
        try:
            index = lib.rebuild_index(name, kind, memory_budget=budget, latency_target_ms=latency_ms, opq=opq,
                                      quantizer=quantizer)
        except (LibraryError, ValueError) as exc:
            raise fail(str(exc)) from None
        where = escape(str(lib.index_path(name)))
        info = index.build_info
        console.print(f"{escape(name)}: {index.ntotal} vectors, {index.kind} index ({info.get('factory', '')}) "
                      f"→ {where}")
        size = info.get("file_bytes") or info.get("estimated_bytes") or 0
        facts = [f"{format_bytes(size)}, {size / max(index.ntotal, 1):,.0f} bytes/vector"]
        if budget is not None:
            facts.append(f"budget {format_bytes(budget)}")
        if index.params:
            facts.append(", ".join(f"{k} {v}" for k, v in index.params.items()))
        if index.recall:
            facts.append(f"recall@10 {index.recall['stored']:.3f} (stored) / {index.recall['text_like']:.3f} "
                         "(text-like)")
        if "p50_ms" in info:
            facts.append(f"p50 {info['p50_ms']:.2f} ms")
        console.print("  " + "; ".join(facts))
        if info.get("conflict"):
            console.print(f"  [yellow]latency target not met at the recall target:[/] {escape(info['conflict'])}")


@db_app.command("upgrade")
def db_upgrade(library: LibraryOpt) -> None:
    """Apply pending schema migrations (opening a library does this too)."""
    from vlsearch.library import migrate

    lib = open_library(library)
    console.print(f"{escape(str(lib.root))}: schema at revision {migrate.current_revision(lib.engine)} (head)")


@models_app.command("list")
def models_list() -> None:
    """The model presets, with what each is for."""
    from vlsearch.encoders import PRESETS

    table = Table("name", "weights", "description", box=None, header_style="bold")
    for p in PRESETS.values():
        weights = f"{p.arch}/{p.pretrained}" if p.kind == "clip" else ("packaged" if p.kind == "offline" else "random")
        table.add_row(p.name, weights, p.description)
    console.print(table)
    console.print("`auto` (the default) uses ViT-B-32 where its weights are present or fetchable, else `offline`.")
    console.print("Any open_clip pair works too: --model ARCH/PRETRAINED, or --model ARCH --weights FILE.\n")
    from vlsearch.captioner import PRESETS as TEXT_PRESETS

    table = Table("caption / VQA / ITM model", "does", "weights", "description", box=None, header_style="bold")
    for p in TEXT_PRESETS.values():
        table.add_row(p.name, ", ".join(p.tasks), p.repo or ("packaged" if p.name == "offline" else "random"),
                      p.description)
    console.print(table)
    console.print("Or a local folder holding a transformers BLIP checkpoint: --caption-model DIR (likewise for "
                  "--vqa-model, --itm-model).")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A CLIP preset, ARCH/PRETRAINED, or a BLIP preset (blip-base, "
                                        "blip-large, blip-vqa-base, blip-itm-base).")],
    model_dir: ModelDirOpt,
) -> None:
    """Download a model's weights (on a connected machine); copy --model-dir to air-gapped ones."""
    from vlsearch.captioner import PRESETS as TEXT_PRESETS
    from vlsearch.captioner import pull as pull_text_model
    from vlsearch.encoders import WeightsUnavailable, pull

    try:
        path = pull_text_model(name, model_dir) if name in TEXT_PRESETS else pull(name, model_dir)
    except (WeightsUnavailable, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"{escape(name)}: weights at {escape(str(path))}")


@app.command()
def serve(
    library: Annotated[Path | None, typer.Option("--library", "-l", help="Library folder.",
                                                 show_default="the settings' library")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Where model weights are looked for.",
                                                   show_default="the settings' model_dir")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (0.0.0.0: every interface; set API keys "
                                             "first).", show_default="127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", show_default="8000")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file.",
                                                show_default="$VLSEARCH_CONFIG, else ~/.config/vlsearch/config.toml")]
    = None,
    model: ModelOpt = None,
    caption_model: CaptionModelOpt = None,
    vqa_model: Annotated[str | None, typer.Option("--vqa-model", help="VQA model for /vqa and /ask.",
                                                  show_default="auto")] = None,
    itm_model: Annotated[str | None, typer.Option("--itm-model", help="Matching model for rerank and /ask.",
                                                  show_default="auto")] = None,
    captions: Annotated[bool | None, typer.Option("--captions/--no-captions", help="Load a caption model.",
                                                  show_default="captions")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.", show_default="auto")] = None,
) -> None:
    """Serve the web page and the HTTP API (OpenAPI docs at /docs).

    Settings come from these options, then VLSEARCH_* environment variables, then the TOML file (see the README:
    API keys, index_roots for POST /index, upload limits, CORS). Reads are open; indexing and deleting need an
    API key."""
    import uvicorn

    from vlsearch.api.app import create_app
    from vlsearch.api.security import is_loopback
    from vlsearch.api.settings import SettingsError, load_settings, unknown_environment

    for name in unknown_environment():
        err.print(f"[yellow]warning:[/] {escape(name)} is not a vlsearch setting and is ignored (see `vlsearch serve "
                  "--help` and the README's settings table for the names).", highlight=False)
    try:
        settings = load_settings(config, library=library, model_dir=model_dir, host=host, port=port, model=model,
                                 caption_model=caption_model, vqa_model=vqa_model, itm_model=itm_model,
                                 captions=captions, device=device)
    except SettingsError as exc:
        raise fail(str(exc)) from None
    limit_malloc_arenas()
    service = build_service(settings)
    if not is_loopback(settings.host):
        if not settings.api_keys:
            err.print(f"[bold red]WARNING: serving on {escape(settings.host)} with no API key configured.[/] Anyone "
                      "who can reach this port can search and read every indexed image; indexing and deleting are "
                      "refused until VLSEARCH_API_KEYS is set. Set keys and VLSEARCH_AUTH_READS=true to close "
                      "reads too.", highlight=False)
        elif not settings.auth_reads:
            err.print(f"[yellow]warning:[/] serving on {escape(settings.host)}: reads need no key (set "
                      "VLSEARCH_AUTH_READS=true to require one).", highlight=False)
    url = f"http://{settings.host}:{settings.port}/"
    console.print(f"vlsearch serving {escape(str(service.library.root))} at {escape(url)}  (API docs: {escape(url)}"
                  "docs; Ctrl-C stops)", highlight=False)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=5)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
SERVER_MALLOC_ARENAS = 2


def limit_malloc_arenas(environ=os.environ, libc=None) -> bool:
    """Cap glibc's malloc at SERVER_MALLOC_ARENAS arenas for the server's threads, unless the operator set
    MALLOC_ARENA_MAX. glibc gives busy threads arenas of their own (up to 8 per core) and rarely returns their
    memory: in a 10-minute soak (32 clients, index jobs every few seconds) the server grew from 957 to 1,091 MB and
    kept growing; with 2 arenas it grew to 1,006 MB and levelled off, at the same throughput (RELIABILITY.md).
    Returns whether the cap was set (False off glibc, or when the environment decides)."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        if libc is None:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, SERVER_MALLOC_ARENAS))
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False


def build_service(settings):
    """Open the library and load every model once, timing each load (shown in /metrics)."""
    import time

    from vlsearch.api.service import Models, Service

    # FAISS searches on the GPU too (flat and IVF indexes, with faiss-gpu) unless the device is pinned to the CPU
    lib = open_library(settings.library, create=True, faiss_gpu=settings.device != "cpu")
    load_seconds: dict[tuple[str, str], float] = {}

    def timed(task: str, load):
        started = time.perf_counter()
        result = load()
        model = result[0] if isinstance(result, tuple) else result
        if model is not None:
            load_seconds[(task, getattr(model, "name", task))] = time.perf_counter() - started
        return result

    spec = settings.model or lib.default_model() or "auto"
    if lib.default_model():
        engine_for(lib, spec, None, settings.model_dir)  # a model the library has no vectors of: a clear error
    encoder = timed("embed", lambda: load_model(spec, None, settings.model_dir, settings.device))
    captioner, stand_in = (timed("caption", lambda: library_caption_model(lib, settings.caption_model,
                                                                          settings.model_dir, settings.device))
                           if settings.captions else (None, False))
    answerer = timed("answer", lambda: load_text_model(settings.vqa_model, "answer", settings.model_dir,
                                                       settings.device))
    matcher = timed("match", lambda: optional_matcher(settings.itm_model, settings.model_dir, settings.device))
    reader = timed("ocr", lambda: load_ocr(required=False)) if settings.ocr else None
    models = Models(encoder=encoder, captioner=captioner, answerer=answerer, matcher=matcher, ocr=reader,
                    caption_stand_in=stand_in, load_seconds=load_seconds)
    service = Service(lib, models, settings, index_workers=settings.index_workers)
    started = time.perf_counter()
    if service.engine() is not None:  # read (or rebuild) the FAISS index now, not during the first search
        lib.vector_index(encoder.name)
        service.metrics.model_load.labels("vectors", encoder.name).set(time.perf_counter() - started)
    return service


def optional_matcher(spec: str, model_dir: Path, device: str):
    """The image-text matching model; with `auto` and no weights here, none (rerank then answers 503)."""
    from vlsearch.captioner import load_image_text_model
    from vlsearch.encoders import WeightsUnavailable

    if spec != "auto":
        return load_text_model(spec, "match", model_dir, device)
    try:
        return load_image_text_model("auto", "match", model_dir=model_dir, device=device)
    except (WeightsUnavailable, ValueError):
        return None


@app.command("export")
def export_library(
    out: Annotated[Path, typer.Argument(help="Folder to write the part files to (created; must be empty).")],
    library: LibraryOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whose vectors go in the embedding column.",
                                              show_default="the library's model")] = None,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Include each image's thumbnail JPEG "
                                             "(~10 KB a row).")] = False,
    rows_per_file: Annotated[int, typer.Option("--rows-per-file", min=1, help="Rows per part file.")] = 100_000,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a folder that has files: its *.parquet "
                                            "files are deleted first, other files stay.")] = False,
) -> None:
    """Export the library to Parquet: one row per image, with its path, metadata, vector, caption and OCR text.

    OUT becomes a folder of part files (part-00000.parquet, ...) that DuckDB, Spark, pandas and vector databases
    read, for example in DuckDB:

        SELECT path, caption FROM read_parquet('out/*.parquet') WHERE caption ILIKE '%beach%';

    The embedding column holds L2-normalised float32 vectors; the schema metadata key "vlsearch" names the model
    and dimension. `vlsearch import` reads the folder back (into this library or another)."""
    from vlsearch.library import LibraryError
    from vlsearch.library.parquet_io import export_parquet

    lib = open_library(library)
    with Progress(*progress_columns(), console=err, transient=False) as progress:
        try:
            report = export_parquet(lib, out, model, thumbnails=thumbnails, rows_per_file=rows_per_file,
                                    overwrite=overwrite, progress=RichProgress(progress, "exporting"))
        except KeyboardInterrupt:
            raise fail(f"interrupted; the part files in {out} are complete but the export is not: run it again "
                       "with --overwrite", code=130) from None
        except (LibraryError, OSError) as exc:
            raise fail(str(exc)) from None
    console.print(
        f"{report.rows} images ({report.errors} unreadable), {report.vectors} vectors of {escape(report.model)}, "
        f"{report.captions} captions, {report.ocr} OCR texts, {report.thumbnails} thumbnails → "
        f"{escape(str(report.out))} ({len(report.files)} part file{'s' if len(report.files) != 1 else ''}) "
        f"in {report.seconds:.1f}s"
    )


@app.command("import")
def import_library(
    sources: Annotated[list[Path], typer.Argument(help="Parquet files, or folders of them (read in name order).")],
    library: LibraryOpt,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="The model that made the embeddings, for files without vlsearch metadata (written by "
        "other tools): a preset or ARCH/PRETRAINED, as `vlsearch search --model` takes it.")] = None,
) -> None:
    """Import Parquet files written by `vlsearch export`, by distributed indexing, or by other tools.

    Rows are matched by path: new paths are added, known ones updated (a different sha256 means the file changed:
    its old captions, OCR text and other models' vectors are dropped), rows that say nothing new are left alone,
    so importing the same files twice changes nothing. Only `path` is required; other columns are those of
    `vlsearch export`, for example a file with just path and embedding, written by pandas:

        vlsearch import vectors.parquet --model ViT-B-32

    Invalid rows (empty path, wrong vector length, NaN) are skipped and listed. A library that does not exist
    yet is created."""
    from vlsearch.library import LibraryError
    from vlsearch.library.parquet_io import import_parquet

    if model:
        from vlsearch.encoders import canonical_name

        model = canonical_name(model) or model  # as the library records it: ViT-B-32 -> ViT-B-32/laion2b_s34b_b79k
    lib = open_library(library, create=True)
    with writer_lock(lib, "`vlsearch import`"), Progress(*progress_columns(), console=err,
                                                           transient=False) as progress:
        try:
            report = import_parquet(lib, sources, model=model, progress=RichProgress(progress, "importing"))
        except KeyboardInterrupt:
            raise fail("interrupted; the rows imported so far are kept, run the same command again to finish",
                       code=130) from None
        except (LibraryError, OSError) as exc:
            raise fail(str(exc)) from None
    models = f" with {escape(', '.join(report.models))}" if report.models else ""
    console.print(
        f"{report.read} rows: [green]{report.added} added[/], {report.updated} updated, {report.unchanged} "
        f"unchanged, [red]{report.skipped} skipped[/] in {report.seconds:.1f}s{models} → {escape(str(lib.root))}"
    )
    print_failures(report.reasons)


if __name__ == "__main__":
    sys.exit(app())
