"""The `vlsearch` command: index folders, search them by text or image, and look after the library."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from api.settings import PLATFORM_LIBRARY, PLATFORM_MODEL_DIR, default_library, default_model_dir

app = typer.Typer(
    help="Self-hosted multimodal image search: index photo folders, then find images by words or by other images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Library schema maintenance.", no_args_is_help=True)
models_app = typer.Typer(help="The models vlsearch can embed with, and fetching their weights.", no_args_is_help=True)
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
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def open_library(path: Path, create: bool = False):
    from library import Library, LibraryError

    try:
        return Library.open(path, create=create)
    except LibraryError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot open the library {path}: {exc.strerror or exc}") from None


def load_model(spec: str, weights: Path | None, model_dir: Path, device: str = "auto"):
    from encoders import WeightsUnavailable, load_encoder

    with err.status(f"loading model {spec}…"):
        try:
            return load_encoder(spec, weights=weights, model_dir=model_dir, device=device)
        except (WeightsUnavailable, ValueError) as exc:
            raise fail(str(exc)) from None


class SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.speed
        if task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="cyan")


class RichProgress:
    """The indexer's progress hook, drawn by rich."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("indexing", total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders (walked recursively) and image files.")],
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Decoding processes (0: decode in this process).", show_default="min(4, CPU cores)"),
    ] = None,
    device: DeviceOpt = "auto",
    max_pixels: Annotated[int, typer.Option(help="Larger images are skipped as possible decompression bombs.")] = (
        128_000_000
    ),
    prune: Annotated[bool, typer.Option(help="Forget files that vanished from the folders indexed.")] = True,
) -> None:
    """Index images: new and changed files are embedded, unchanged ones skipped, moved ones keep their vectors."""
    from indexer import Indexer

    for p in paths:
        if not p.exists():
            raise fail(f"{p}: no such file or folder")
    lib = open_library(library, create=True)
    spec = model or lib.default_model() or "auto"
    encoder = load_model(spec, weights, model_dir, device)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        try:
            report = Indexer(lib, encoder, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                             prune=prune, progress=RichProgress(progress)).run(paths)
        except KeyboardInterrupt:
            raise fail("interrupted; what was indexed so far is kept, run the same command again to finish",
                       code=130) from None
        except Exception as exc:
            from library import LibraryError

            if isinstance(exc, LibraryError | FileNotFoundError | ValueError):
                raise fail(str(exc)) from None
            raise
    console.print(
        f"{report.seen} files: [green]{report.embedded} embedded[/], {report.reused} reused, {report.moved} moved, "
        f"{report.unchanged} unchanged, [red]{report.errors} errors[/], {report.removed} removed "
        f"in {report.seconds:.1f}s with {encoder.name} → {lib.root}"
    )
    for path, reason in report.failures[:20]:
        console.print(f"  [red]✗[/] {path}: {reason}", highlight=False)
    if len(report.failures) > 20:
        console.print(f"  … and {len(report.failures) - 20} more (see `vlsearch status`)")


def parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} {value!r}: use a date like 2024-05-31 or 2024-05-31T18:00") from None


def engine_for(lib, model: str | None, weights: Path | None, model_dir: Path, max_stale_s: float = 0.0):
    from encoders import canonical_name
    from library import LibraryError
    from search import SearchEngine

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
    for rank, h in enumerate(hits, 1):
        size = f"{h.width}×{h.height}" if h.width else ""
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else ""
        table.add_row(str(rank), f"{h.score:.3f}", str(h.id), h.path, size, taken)
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
    min_score: Annotated[float | None, typer.Option(help="Drop results scoring below this.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only files under this folder.")] = None,
    after: Annotated[str | None, typer.Option(help="Taken on or after this date (YYYY-MM-DD).")] = None,
    before: Annotated[str | None, typer.Option(help="Taken before this date.")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera make or model contains this.")] = None,
    sort: Annotated[str, typer.Option(help="score, or date (newest first among the top k).")] = "score",
    text_weight: Annotated[float, typer.Option(help="Weight of the text in a combined query.")] = 1.0,
    image_weight: Annotated[float, typer.Option(help="Weight of the image in a combined query.")] = 1.0,
    not_weight: Annotated[float, typer.Option(help="Weight of each --not term.")] = 0.5,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find images by text, by an example image, or both; --not terms push results away."""
    from indexer import DecodeError, decode_image
    from search import Filters, SearchQuery

    if not text and image is None:
        raise fail("give words to search for, --image PATH, or both")
    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    try:
        query_image = decode_image(image) if image else None
        query = SearchQuery(
            text=text, image=query_image, negatives=tuple(negatives or ()), k=k, sort=sort,
            text_weight=text_weight, image_weight=image_weight, negative_weight=not_weight,
            filters=Filters(path_prefix=path, after=parse_date(after, "--after"),
                            before=parse_date(before, "--before"), camera=camera, min_score=min_score),
        )
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
    from indexer import DecodeError
    from search import Filters

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
def status(library: LibraryOpt, as_json: JsonOpt = False) -> None:
    """Counts of images, errors and vectors per model, and the library's size on disk."""
    from sqlalchemy import select

    from library import ImageRecord

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
        }, indent=2))
        return
    console.print(f"library   {st.root}  (schema {st.schema_revision})")
    console.print(f"images    {st.images} indexed, {st.errors} could not be read")
    for m in st.models:
        console.print(f"model     {m.name}: {m.vectors} vectors of dimension {m.dim}")
    console.print(f"disk      {st.disk_bytes / 1e6:.1f} MB")
    for p, reason in errors:
        console.print(f"  [red]✗[/] {p}: {reason}", highlight=False)


@app.command()
def reindex(
    library: LibraryOpt,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's index.")] = None,
    kind: Annotated[str, typer.Option("--index", help="auto, flat, ivf or hnsw.")] = "auto",
) -> None:
    """Rebuild the FAISS index files from the vectors stored in SQLite."""
    from library import LibraryError

    lib = open_library(library)
    names = [model] if model else [m.name for m in lib.models()]
    for name in names:
        try:
            index = lib.rebuild_index(name, kind)
        except (LibraryError, ValueError) as exc:
            raise fail(str(exc)) from None
        console.print(f"{name}: {index.ntotal} vectors, {index.kind} index → {lib.index_path(name)}")


@db_app.command("upgrade")
def db_upgrade(library: LibraryOpt) -> None:
    """Apply pending schema migrations (opening a library does this too)."""
    from library import migrate

    lib = open_library(library)
    console.print(f"{lib.root}: schema at revision {migrate.current_revision(lib.engine)} (head)")


@models_app.command("list")
def models_list() -> None:
    """The model presets, with what each is for."""
    from encoders import PRESETS

    table = Table("name", "weights", "description", box=None, header_style="bold")
    for p in PRESETS.values():
        weights = f"{p.arch}/{p.pretrained}" if p.kind == "clip" else ("packaged" if p.kind == "offline" else "random")
        table.add_row(p.name, weights, p.description)
    console.print(table)
    console.print("`auto` (the default) uses ViT-B-32 where its weights are present or fetchable, else `offline`.")
    console.print("Any open_clip pair works too: --model ARCH/PRETRAINED, or --model ARCH --weights FILE.")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A CLIP preset or ARCH/PRETRAINED.")],
    model_dir: ModelDirOpt,
) -> None:
    """Download a model's weights (on a connected machine); copy --model-dir to air-gapped ones."""
    from encoders import WeightsUnavailable, pull

    try:
        path = pull(name, model_dir)
    except (WeightsUnavailable, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"{name}: weights at {path}")


# While `vlsearch index` writes to the same library, the server refreshes its FAISS index at most this often.
SERVER_INDEX_LAG_S = 10.0


@app.command()
def serve(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the search page and the HTTP API."""
    import uvicorn

    from api.app import create_app

    lib = open_library(library)
    engine = engine_for(lib, None, None, model_dir, max_stale_s=SERVER_INDEX_LAG_S)
    console.print(f"vlsearch serving {lib.root} at http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(create_app(engine), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    sys.exit(app())
