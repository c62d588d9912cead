"""`vlsearch index`: embed new and changed files, then caption them and read their text, here or on a Ray cluster,
with a progress bar per phase and a summary of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import Progress

from vlsearch.api.cli.loading import generation, library_caption_model, load_model, load_ocr, open_library
from vlsearch.api.cli.options import (
    ActorsOpt,
    BatchSizeOpt,
    BeamsOpt,
    CaptionModelOpt,
    CaptionsOpt,
    DeviceOpt,
    IndexOcrOpt,
    LibraryOpt,
    ListsOpt,
    MaxLengthOpt,
    MaxPixelsOpt,
    ModelDirOpt,
    ModelOpt,
    PathsArg,
    PrecisionOpt,
    PruneOpt,
    RayCpusOpt,
    RayOpt,
    ShardSizeOpt,
    ShardsOpt,
    WeightsOpt,
    WorkersOpt,
)
from vlsearch.api.cli.output import (
    RichProgress,
    console,
    fail,
    print_described,
    print_failures,
    print_tagged,
    progress_bar,
    writer_lock,
)
from vlsearch.api.cli.remote import KeyOpt, ServerOpt, index_on_server

if TYPE_CHECKING:
    from vlsearch.indexer import Indexer
    from vlsearch.indexer.distributed import RayReport


def index(
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    paths: PathsArg = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    max_pixels: MaxPixelsOpt = 128_000_000,
    prune: PruneOpt = True,
    captions: CaptionsOpt = True,
    ocr: IndexOcrOpt = True,
    caption_model: CaptionModelOpt = None,
    beams: BeamsOpt = 3,
    max_length: MaxLengthOpt = 30,
    ray: RayOpt = None,
    lists: ListsOpt = None,
    shard_size: ShardSizeOpt = 10_000,
    shards: ShardsOpt = None,
    actors: ActorsOpt = None,
    ray_cpus: RayCpusOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Index images: embed new and changed files, then caption them and read their text.

    New and changed files are embedded, unchanged ones skipped, moved ones keep their vectors. Then images
    without a caption or OCR text get them (on a CPU this takes longer than embedding: --no-captions skips it,
    and `vlsearch caption` does it later).

    With --ray the work runs on a Ray cluster, e.g. `vlsearch index --ray auto /mnt/photos` or
    `vlsearch index --ray ray://head:10001 --list urls.csv`.

    With --server, the server indexes PATHS on its own disk (under its index_roots), as an index job."""
    from vlsearch.indexer import Indexer

    paths, lists = paths or [], lists or []
    if server:
        if not paths or lists or ray:
            raise fail("with --server, name folders on the server (not --list or --ray)")
        job = index_on_server(server, key, paths, captions=captions, ocr=ocr, prune=prune)
        done = ", ".join(f"{n} {what}" for what, n in job.summary.items())
        console.print(f"server job {job.id}: {done or 'nothing to do'}; {job.errors} errors")
        print_failures([(path, reason) for path, reason in job.failures])
        return
    check_sources(paths, lists, ray, shards)
    lib = open_library(library, create=True)
    spec = model or lib.default_model() or "auto"
    encoder = load_model(spec, weights, model_dir, device, precision)
    settings = generation(beams, max_length)
    captioner, stand_in = (library_caption_model(lib, caption_model, model_dir, device, settings, precision)
                           if captions else (None, False))
    reader = load_ocr() if ocr else None
    if ray is None:
        run_here(Indexer(lib, encoder, batch_size=batch_size, workers=workers, max_pixels=max_pixels, prune=prune,
                         captioner=captioner, ocr=reader, fill_gaps=stand_in), paths)
        return
    from vlsearch.indexer.distributed import ModelSpecs, RayOptions, RayRunner

    specs = ModelSpecs(encoder=spec if weights else encoder.name, weights=str(weights) if weights else None,
                       model_dir=str(model_dir) if model_dir else None, device=device, precision=precision,
                       caption=captioner.name if captioner is not None else None, generation=settings,
                       ocr=reader is not None)
    del captioner, reader  # the workers load their own
    options = RayOptions(address=ray, cpus=ray_cpus, shard_size=shard_size, batch_size=batch_size, actors=actors,
                         shards_dir=shards)
    run_on_ray(Indexer(lib, encoder, runner=RayRunner(specs, options), max_pixels=max_pixels, prune=prune),
               paths, lists)


def check_sources(paths: list[Path], lists: list[Path], ray: str | None, shards: Path | None) -> None:
    if not paths and not lists:
        raise fail("name the folders or files to index (or, with --ray, a --list FILE)")
    if lists and ray is None:
        raise fail("--list needs --ray (on one machine: --ray local)")
    if shards is not None and ray is None:
        raise fail("--shards needs --ray")
    for p in [*paths, *lists]:
        if not p.exists():
            raise fail(f"{p}: no such file or folder")


@dataclass
class Phase:
    """A phase of an index run as the terminal shows it."""

    label: str  # on its progress bar
    summary: Callable[[Any], None]  # prints what the phase did, from its report
    interrupted: str  # what Ctrl-C during the phase leaves behind


TAGGING = Phase("tagging", print_tagged, "interrupted; the tags written so far are kept, run `vlsearch tags run` "
                "to finish")


class PhaseBars:
    """The index run's progress: a bar per phase, closed when the phase ends and followed by its summary."""

    def __init__(self, phases: dict[str, Phase]) -> None:
        self.phases = phases
        self.current = next(iter(phases))
        self.bar: Progress | None = None

    def phase(self, name: str) -> RichProgress:
        self.close()
        self.current = name
        self.bar = progress_bar()
        self.bar.start()
        return RichProgress(self.bar, self.phases[name].label)

    def finished(self, name: str, report: Any) -> None:
        self.close()
        self.phases[name].summary(report)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_index(indexer: Indexer, sources: tuple[list[Path], list[Path]], who: str, phases: dict[str, Phase],
              errors: tuple[type[Exception], ...]) -> None:
    """Run `indexer` over `sources` (paths, lists) holding the library's writer lock; `errors` end the command
    with what they say."""
    bars = PhaseBars(phases)
    indexer.progress = bars
    with writer_lock(indexer.library, who):
        try:
            with bars:
                indexer.run(*sources)
        except KeyboardInterrupt:
            raise fail(phases[bars.current].interrupted, code=130) from None
        except errors as exc:
            raise fail(exc) from None


def run_here(indexer: Indexer, paths: list[Path]) -> None:
    from vlsearch.library import LibraryError

    lib, name = indexer.library, indexer.encoder.name
    describing = " and ".join(w for w, on in (("captioning", indexer.captioner), ("reading text", indexer.ocr)) if on)
    phases = {
        "embedding": Phase("indexing", lambda report: print_indexed(report, name, lib.root),
                           "interrupted; what was indexed so far is kept, run the same command again to finish"),
        "describing": Phase(describing, lambda report: print_described(report, indexer.captioner),
                            "interrupted; captions and text written so far are kept, run `vlsearch caption` to "
                            "finish"),
        "tagging": TAGGING,
    }
    run_index(indexer, (paths, []), "`vlsearch index`", phases, (LibraryError, FileNotFoundError, ValueError))


def run_on_ray(indexer: Indexer, paths: list[Path], lists: list[Path]) -> None:
    from vlsearch.indexer.distributed import DistributedError
    from vlsearch.library import LibraryError

    phases = {"embedding": Phase("indexing", lambda report: print_ray_report(report, indexer),
                                 "interrupted; merged shards are kept, run the same command again to finish"),
              "tagging": TAGGING}
    run_index(indexer, (paths, lists), "`vlsearch index --ray`", phases,
              (DistributedError, LibraryError, FileNotFoundError, ValueError))


def print_indexed(report: Any, model: str, root: Path) -> None:
    console.print(
        f"{report.seen} files: [green]{report.embedded} embedded[/], {report.reused} reused, {report.moved} moved, "
        f"{report.unchanged} unchanged, [red]{report.errors} errors[/], {report.removed} removed "
        f"in {report.seconds:.1f}s with {escape(model)} → {escape(str(root))}"
    )
    print_failures(report.failures)
    print_pixel_limit(report)


def print_ray_report(report: RayReport, indexer: Indexer) -> None:
    shards_dir = indexer.runner.options.shards_dir
    where = str(shards_dir or indexer.library.root)
    console.print(
        f"{report.seen} files: [green]{report.embedded} embedded[/], {report.captioned} captioned, {report.read} "
        f"read by OCR, {report.unchanged} unchanged, [red]{report.errors} errors[/], {report.removed} removed in "
        f"{report.shards} shards in {report.seconds:.1f}s with {escape(indexer.encoder.name)} on Ray "
        f"({escape(report.cluster or 'not started: nothing to do')}) → {escape(where)}"
    )
    if report.merged_leftovers:
        console.print(f"merged {report.merged_leftovers} shards left by an earlier run first")
    if shards_dir:
        console.print(f"{len(report.shard_files)} shard files written; merge them with "
                      f"`vlsearch import {escape(str(shards_dir))}`")
    print_failures(report.failures)
    print_pixel_limit(report)


def print_pixel_limit(report: Any) -> None:
    if report.over_pixel_limit:
        many = report.over_pixel_limit != 1
        console.print(f"{report.over_pixel_limit} file{'s' if many else ''} {'are' if many else 'is'} over the pixel "
                      "limit: raise --max-pixels to index them")
