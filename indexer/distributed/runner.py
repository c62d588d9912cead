"""The Ray runner: the indexing stages spread over a Ray cluster with Ray Data, results merged shard by shard.

    planned work, in shards ─▶ decode (CPU tasks) ─▶ embed (actors) ─▶ describe (actors: captions, OCR; optional)
        ─▶ here: a shard's rows go into one Parquet file (the format of `export`), renamed into place once every row
           of it is back, then merged into the library (library/parquet_io)

Resumable per shard: a stopped run keeps every merged shard; the next run merges complete shards a crash left
behind before it plans (what was merged is then unchanged) and does only the rest. With `shards_dir` the shards are
written there and kept, not merged, for an import later, here or on another machine (a re-run skips files already
in them). Every Ray node must see the files at the same path (a shared filesystem); URLs are fetched by the
workers, and their rows keep the URL as their path.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlsearch.encoders import Encoder
from vlsearch.indexer.decoders import draft_size
from vlsearch.indexer.distributed.cluster import DistributedError, cause, connect
from vlsearch.indexer.distributed.stages import DescribeActor, EmbedActor, ModelSpecs, decode_batch
from vlsearch.indexer.items import WorkItem
from vlsearch.indexer.report import Changes, IndexReport, ProgressHook
from vlsearch.indexer.runner import Prepared
from vlsearch.indexer.stages import DecodeStage
from vlsearch.library import Library
from vlsearch.library.parquet_io import import_parquet, parquet_schema

log = logging.getLogger(__name__)

SHARD_DIR = "ray-shards"  # inside the library folder: shards waiting to be merged
DEFAULT_SHARD_SIZE = 10_000
WINDOW_SHARDS = 32  # shards per Ray Data execution: bounds the driver's plan in the object store


@dataclass
class RayOptions:
    address: str = "auto"  # see cluster.connect
    cpus: int | None = None  # a new local instance's CPUs (default: all)
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_size: int = 64
    actors: int | None = None  # embedding (and describing) actors; default: one per GPU, else 1
    shards_dir: Path | None = None  # write shards here and keep them, instead of merging into the library


@dataclass
class RayReport(IndexReport):
    shards: int = 0  # shards this run processed
    merged_leftovers: int = 0  # complete shards a previous run left behind, merged first
    captioned: int = 0
    read: int = 0
    cluster: str = ""
    shard_files: list[str] = field(default_factory=list)


class RayRunner:
    """Computes on the cluster what the driver (this machine, which holds the library) planned."""

    report_type = RayReport
    writes_companions = False  # shards carry the search vectors only (a companion-less model's run is unchanged)

    def __init__(self, specs: ModelSpecs, options: RayOptions) -> None:
        self.specs = specs
        self.options = options
        self.writes_library = options.shards_dir is None

    def shard_dir(self, library: Library) -> Path:
        return self.options.shards_dir or library.root / SHARD_DIR

    def prepare(self, library: Library, encoder: Encoder, report: RayReport, changes: Changes) -> Prepared:
        """Merge the complete shards a stopped run left (or, keeping shards, skip the files already in them)."""
        folder = self.shard_dir(library)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.tmp"):
            stale.unlink(missing_ok=True)  # an unfinished shard of a stopped run: its files are planned again
        if not self.writes_library:
            return Prepared(skip=frozenset(self._paths_in_shards(folder)), exclude=(folder,))
        for shard in self._shard_files(folder):
            log.warning("merging %s, left by a run that stopped before merging it", shard)
            self.merge_shard(library, encoder.name, shard, changes)
            report.merged_leftovers += 1
        return Prepared(exclude=(folder,))

    def run(self, library: Library, encoder: Encoder, work: list[WorkItem], *, max_pixels: int,
            confine_to: list[Path] | None, report: RayReport, changes: Changes,
            progress: ProgressHook | None) -> None:
        ray, started_here, report.cluster = connect(self.options.address, self.options.cpus)
        log.info("Ray cluster: %s", report.cluster)
        job = _Job(self, library, encoder, max_pixels, report, changes, progress)
        try:
            size = max(1, self.options.shard_size)
            shards = [work[i : i + size] for i in range(0, len(work), size)]
            run_id = time.strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}"
            for start in range(0, len(shards), WINDOW_SHARDS):
                window = {f"{run_id}-{n:06d}": shard
                          for n, shard in enumerate(shards[start : start + WINDOW_SHARDS], start)}
                try:
                    job.run_window(ray, window)
                except ray.exceptions.RayError as exc:  # a model that cannot load on a node, a worker out of memory
                    raise DistributedError(
                        f"the Ray job failed: {cause(exc)}. {report.shards} shards were finished and are kept; run "
                        "the same command again to resume.") from exc
        finally:
            if started_here:
                ray.shutdown()

    def _shard_files(self, folder: Path) -> list[Path]:
        return sorted(folder.glob("shard-*.parquet"))

    def _paths_in_shards(self, folder: Path) -> set[str]:
        done: set[str] = set()
        for shard in self._shard_files(folder):  # failed files are tried again, as a local run does
            table = pq.read_table(shard, columns=["path", "status"])
            done.update(table.filter(pc.equal(table.column("status"), "ok")).column("path").to_pylist())
        return done

    def merge_shard(self, library: Library, model: str, shard: Path, changes: Changes) -> None:
        """Merge a complete shard into the library and delete it; `model`'s vector changes go into `changes`."""
        result = import_parquet(library, [shard], update_index=False)  # FAISS once, at the end of the run
        upserts, removed = result.changes.get(model, ([], []))
        changes.upserts += upserts
        changes.removed += removed
        if result.skipped:
            log.warning("%s: %d rows skipped: %s", shard, result.skipped, result.reasons[:5])
        shard.unlink()


class _Job:
    """One run's windows through the cluster: the Ray Data pipeline, and the shard files its rows go into."""

    def __init__(self, runner: RayRunner, library: Library, encoder: Encoder, max_pixels: int, report: RayReport,
                 changes: Changes, progress: ProgressHook | None) -> None:
        self.runner, self.library, self.encoder = runner, library, encoder
        self.max_pixels, self.report, self.changes, self.progress = max_pixels, report, changes, progress
        self.folder = runner.shard_dir(library)
        self.schema = parquet_schema(encoder.dim, encoder.name)

    def pipeline(self, ray: Any, window: dict[str, list[WorkItem]]) -> Any:
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on progress bars and execution plans
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver draws one bar for the whole run
        ctx.print_on_execution_start = False
        specs, options = self.runner.specs, self.runner.options
        plan = [pa.table({
            "path": pa.array([w.path for w in items], pa.string()),
            "size": pa.array([w.size for w in items], pa.int64()),
            "mtime": pa.array([w.mtime for w in items], pa.float64()),
            "shard": pa.array([name] * len(items), pa.string()),
        }) for name, items in window.items()]
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if specs.device != "cpu" else 0  # a CPU run leaves the GPUs be
        cpus = int(resources.get("CPU", 1))
        describe = bool(specs.caption or specs.ocr)
        # One embedding (and one describing) actor per GPU; the two share it when both use it, or the second
        # stage would wait forever for GPUs the first holds. On a CPU-only cluster an actor per 8 CPUs, each leaving
        # room for the decoders (a 2-CPU instance runs one decoder beside an embedding and a describing actor).
        actors = options.actors or (max(1, gpus) if gpus else max(1, cpus // 8))
        actor_cpus = 1 if gpus or cpus >= 8 else 0.5
        actor_gpus = (0.5 if specs.caption else 1) if gpus else 0
        batch = options.batch_size
        decode = DecodeStage(self.encoder.preprocess, max_pixels=self.max_pixels, draft=draft_size(self.encoder),
                             keep_bytes=describe)
        ds = ray.data.from_arrow(plan).map_batches(
            decode_batch, batch_size=batch, batch_format="pyarrow", num_cpus=1, zero_copy_batch=True,
            fn_kwargs={"stage": decode})
        ds = ds.map_batches(EmbedActor, batch_size=batch, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
                            num_gpus=actor_gpus, fn_constructor_kwargs={"specs": specs})
        if describe:
            ds = ds.map_batches(DescribeActor, batch_size=min(batch, 16), batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
                                num_gpus=actor_gpus if specs.caption else 0,
                                fn_constructor_kwargs={"specs": specs, "max_pixels": self.max_pixels})
        return ds

    def run_window(self, ray: Any, window: dict[str, list[WorkItem]]) -> None:
        expected = {name: len(items) for name, items in window.items()}
        received = dict.fromkeys(window, 0)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for table in self.pipeline(ray, window).iter_batches(batch_format="pyarrow", batch_size=None):
                for name in set(table.column("shard").to_pylist()):
                    part = table.filter(pc.equal(table.column("shard"), name))
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(self._tmp(name), self.schema)
                    writers[name].write_table(_conform(part, self.schema))
                    received[name] += part.num_rows
                    self._count(part)
                    if received[name] == expected[name]:
                        writers.pop(name).close()
                        self._finish(name)
        finally:
            for name, writer in writers.items():  # incomplete: dropped, their files are planned again next run
                writer.close()
                self._tmp(name).unlink(missing_ok=True)

    def _finish(self, name: str) -> None:
        final = self.folder / f"shard-{name}.parquet"
        os.replace(self._tmp(name), final)
        self.report.shards += 1
        if self.runner.writes_library:
            self.runner.merge_shard(self.library, self.encoder.name, final, self.changes)
        else:
            self.report.shard_files.append(str(final))

    def _tmp(self, name: str) -> Path:
        return self.folder / f"shard-{name}.parquet.tmp"

    def _count(self, part: pa.Table) -> None:
        report = self.report
        errors = 0
        for path, status, error, over in zip(*(part.column(c).to_pylist()
                                               for c in ("path", "status", "error", "over_pixel_limit")),
                                             strict=True):
            if status == "ok":
                report.embedded += 1
            else:
                errors += 1
                report.over_pixel_limit += bool(over)
                report.failures.append((path, error or "unknown error"))
        report.errors += errors
        if "caption" in part.column_names:
            report.captioned += part.num_rows - part.column("caption").null_count
        if "ocr_text" in part.column_names:
            report.read += part.num_rows - part.column("ocr_text").null_count
        if self.progress:
            self.progress.advance(part.num_rows, errors)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows as the shard schema has them: missing columns null, extra ones (shard) dropped, types cast."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
