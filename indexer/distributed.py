"""Distributed indexing on Ray: decoding, embedding, captioning and OCR spread over a Ray cluster (Ray Data).

The machine that holds the library (the driver) plans the work exactly as `vlsearch index` does (new, changed
and failed files; an unchanged file is never sent), cuts it into shards, and streams the shards through a Ray Data
pipeline:

    plan shards ─▶ decode (CPU tasks: read, hash, decode, thumbnail, model preprocess)
                ─▶ embed (actors, one GPU each when the cluster has GPUs)
                ─▶ describe (actors: caption + OCR; optional)
                ─▶ driver: rows of a shard go into one Parquet file; a complete shard is renamed into place, then
                   merged into the library (library/parquet_io.py, the format of `vlsearch export`)

Resumable per shard: a shard file exists only once every row of it has come back, and a run that is stopped
keeps every merged shard; the next run merges complete shards a crash left behind, plans again (what was merged is
now unchanged) and does only the rest. With `shards_dir` the shards are written there and kept, not merged:
`vlsearch import DIR` merges them later, on this or another machine (a re-run skips files already in DIR's shards).

Sources: folders and files (every Ray node must see them at the same path: a shared filesystem), and lists of
files or http(s) URLs in a Parquet or CSV file (a `path` or `url` column, else the first column). URLs are
fetched by the workers; their rows keep the URL as their path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError, decode_bytes, read_image_file
from vlsearch.indexer.pipeline import Indexer, IndexReport, ProgressHook, WorkItem, draft_size
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.thumbs import THUMB_LONG_SIDE

log = logging.getLogger(__name__)

SHARD_DIR = "ray-shards"  # inside the library folder: shards waiting to be merged (and the plan of a run)
DEFAULT_SHARD_SIZE = 10_000
WINDOW_SHARDS = 32  # shards per Ray Data execution: bounds the driver's plan in the object store
URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT_S = 30
URL_MAX_BYTES = 256 * 1024 * 1024
THUMB_QUALITY = 85


class DistributedError(Exception):
    """What a user must change: no Ray, no cluster at that address, an unreadable list file."""


@dataclass
class ModelSpecs:
    """What each worker loads: names that load the same models the driver resolved (never `auto`, which could
    resolve differently on a node with other weights)."""

    encoder: str
    weights: str | None
    model_dir: str | None
    device: str  # "auto": each actor takes its GPU when it has one
    caption: str | None = None
    generation: Any = None  # captioner.GenerationSettings
    ocr: bool = False


@dataclass
class RayOptions:
    address: str = "auto"  # "auto": the running cluster (RAY_ADDRESS or a local one) else a new local instance;
    #                         "local": a new local instance; else a cluster address (ray://host:10001, host:6379)
    cpus: int | None = None  # a new local instance's CPUs (default: all)
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_size: int = 64
    actors: int | None = None  # embedding (and describing) actors; default: one per GPU, else 1
    shards_dir: Path | None = None  # write shards here and keep them, instead of merging into the library
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class RayReport(IndexReport):
    shards: int = 0  # shards this run processed
    merged_leftovers: int = 0  # complete shards a previous run left behind, merged first
    captioned: int = 0
    read: int = 0
    cluster: str = ""
    shard_files: list[str] = field(default_factory=list)


# -- Ray itself -----------------------------------------------------------------------------------------------------


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DistributedError(
            f"Ray is not installed ({exc}); install it with: pip install 'vlsearch[distributed]' "
            "(the same version on every node of the cluster)"
        ) from None
    return ray


CONNECT_TIMEOUT_S = 5.0  # to find out that nothing listens at a cluster address


def connect(address: str = "auto", cpus: int | None = None) -> tuple[Any, bool, str]:
    """(ray, started_here, description): join the cluster at `address`, or start a local Ray instance."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False, _describe_cluster(ray)
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        ray.init(num_cpus=cpus, **kwargs)
        return ray, True, _describe_cluster(ray)
    if address == "auto":
        try:
            ray.init(address="auto", **kwargs)  # RAY_ADDRESS, or a cluster started on this machine by `ray start`
        except (ConnectionError, RuntimeError, ValueError):
            ray.init(num_cpus=cpus, **kwargs)
        return ray, True, _describe_cluster(ray)
    how = ("Start it with `ray start --head` on the head node (and `ray start --address=HEAD:6379` on the others), or "
           "pass --ray local for a single-machine run.")
    problem = _unreachable(address)
    if problem:  # ray.init would retry for many minutes before saying so
        raise DistributedError(f"cannot join the Ray cluster at {address}: {problem}. {how}")
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the Ray cluster at {address}: {exc}. {how}") from None
    return ray, True, _describe_cluster(ray)


def _unreachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why nothing can answer at a cluster address (HOST:PORT, or ray://HOST:PORT for Ray Client), or None when
    something accepts a connection there."""
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return "not an address: give HOST:PORT (the head's GCS, 6379 by default) or ray://HOST:10001"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def _describe_cluster(ray) -> str:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"{nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"


# -- the stages (run on the workers) ---------------------------------------------------------------------------


def _fetch(path: str, confine_to: list[Path] | None) -> bytes:
    if path.startswith(URL_SCHEMES):
        request = urllib.request.Request(path, headers={"User-Agent": "vlsearch"})
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 (schemes checked)
            data = response.read(URL_MAX_BYTES + 1)
        if len(data) > URL_MAX_BYTES:
            raise DecodeError(f"more than {URL_MAX_BYTES // 2**20} MB: not fetched")
        return data
    return read_image_file(path, confine_to)


def _read_error(exc: Exception, path: str) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"cannot fetch: HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot fetch: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return f"cannot fetch: no answer in {URL_TIMEOUT_S} s"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc.strerror or exc}"
    return str(exc)


def decode_stage(table: pa.Table, preprocess, draft: int | None, max_pixels: int, keep_bytes: bool) -> pa.Table:
    """Read, hash, decode, thumbnail and preprocess each file of a batch. A file that fails becomes a row with
    status "error" and the reason; it never fails the batch."""
    import torch

    from vlsearch.images import limit_aspect

    torch.set_num_threads(1)
    out: dict[str, list] = {name: [] for name in _DECODED_COLUMNS}
    if keep_bytes:
        out["data"] = []
    for path, size, mtime, shard in zip(*(table.column(c).to_pylist() for c in ("path", "size", "mtime", "shard")),
                                        strict=True):
        row: dict[str, Any] = dict.fromkeys(out)
        row.update(path=path, size=size, mtime=mtime, shard=shard, status="error")
        try:
            data = _fetch(path, None)
        except (OSError, DecodeError, ValueError) as exc:
            row["error"] = _read_error(exc, path)
            _append(out, row)
            continue
        row["sha256"] = hashlib.sha256(data).hexdigest()
        if path.startswith(URL_SCHEMES):
            row["size"] = len(data)
        try:
            image, meta = decode_bytes(data, max_pixels, draft)
            thumb = image.copy()
            thumb.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE))
            buffer = io.BytesIO()
            thumb.save(buffer, format="JPEG", quality=THUMB_QUALITY, optimize=True)
            pixels = preprocess(limit_aspect(image))
        except DecodeError as exc:
            row["error"] = str(exc)
            _append(out, row)
            continue
        except Exception as exc:  # a decoder bug on one file must not end the run
            row["error"] = f"decoding failed: {type(exc).__name__}: {exc}"
            _append(out, row)
            continue
        row.update(
            status="ok", thumbnail=buffer.getvalue(), pixels=pixels.numpy().astype(np.float16).tobytes(),
            width=meta.width, height=meta.height, display_width=meta.display_width,
            display_height=meta.display_height, orientation=meta.orientation, format=meta.format,
            taken_at=meta.taken_at, camera_make=meta.camera_make, camera_model=meta.camera_model,
        )
        if keep_bytes:
            row["data"] = data
        _append(out, row)
    schema = DECODED if keep_bytes else DECODED.remove(DECODED.get_field_index("data"))
    return pa.table(out, schema=schema)


# What the decoders hand on (typed, so that batches with and without a given value concatenate).
DECODED = pa.schema([
    ("path", pa.string()), ("shard", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
    ("sha256", pa.string()), ("status", pa.string()), ("error", pa.string()), ("thumbnail", pa.binary()),
    ("pixels", pa.binary()), ("width", pa.int32()), ("height", pa.int32()), ("display_width", pa.int32()),
    ("display_height", pa.int32()), ("orientation", pa.int32()), ("format", pa.string()),
    ("taken_at", pa.timestamp("us")), ("camera_make", pa.string()), ("camera_model", pa.string()),
    ("data", pa.binary()),
])
_DECODED_COLUMNS = tuple(f.name for f in DECODED if f.name != "data")


def _append(out: dict[str, list], row: dict[str, Any]) -> None:
    for key, values in out.items():
        values.append(row.get(key))


class EmbedStage:
    """A Ray actor: one encoder, loaded once, embedding the preprocessed pixels of each batch."""

    def __init__(self, specs: ModelSpecs) -> None:
        from vlsearch.encoders import load_encoder

        self.encoder = load_encoder(specs.encoder, weights=Path(specs.weights) if specs.weights else None,
                                    model_dir=Path(specs.model_dir) if specs.model_dir else None,
                                    device=specs.device, allow_download=False)
        from PIL import Image

        self.shape = tuple(self.encoder.preprocess(Image.new("RGB", (64, 64))).shape)  # what the decoders send

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        dim = self.encoder.dim
        blobs = table.column("pixels").to_pylist()
        ok = [i for i, blob in enumerate(blobs) if blob is not None]
        vectors = np.zeros((len(blobs), dim), dtype=np.float32)
        if ok:
            pixels = np.stack([np.frombuffer(blobs[i], dtype=np.float16).reshape(self.shape) for i in ok])
            vectors[ok] = self.encoder.encode_image_tensors(torch.from_numpy(pixels.astype(np.float32)))
        valid = np.zeros(len(blobs), dtype=bool)
        valid[ok] = True
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim,
                                                      mask=pa.array(~valid))
        return table.drop_columns(["pixels"]).append_column("embedding", embedding)


class DescribeStage:
    """A Ray actor: the caption model and/or the OCR engine, describing the images that decoded."""

    def __init__(self, specs: ModelSpecs, max_pixels: int) -> None:
        self.captioner = None
        self.ocr = None
        self.max_pixels = max_pixels
        if specs.caption:
            from vlsearch.captioner import load_image_text_model

            self.captioner = load_image_text_model(
                specs.caption, "caption", model_dir=Path(specs.model_dir) if specs.model_dir else None,
                device=specs.device, settings=specs.generation, allow_download=False)
        if specs.ocr:
            from vlsearch.captioner.ocr import ocr_reader

            self.ocr = ocr_reader()

    def __call__(self, table: pa.Table) -> pa.Table:
        from vlsearch.captioner.ocr import OcrFailed
        from vlsearch.indexer.describe import MAX_SIDE

        n = table.num_rows
        captions: list[str | None] = [None] * n
        texts: list[str | None] = [None] * n
        images, slots = [], []
        for i, data in enumerate(table.column("data").to_pylist()):
            if data is None:
                continue
            try:
                image, _ = decode_bytes(data, self.max_pixels)
                image.thumbnail((MAX_SIDE, MAX_SIDE))
            except Exception as exc:  # decoded once already; a second failure leaves the row without text
                log.warning("cannot decode %s again for captions: %s", table.column("path")[i], exc)
                continue
            images.append(image)
            slots.append(i)
        if self.captioner is not None and images:
            for i, text in zip(slots, self.captioner.caption(images, None), strict=True):
                captions[i] = text
        if self.ocr is not None:
            for i, image in zip(slots, images, strict=True):
                try:
                    texts[i] = self.ocr.read(image)
                except OcrFailed as exc:  # left without OCR text: `vlsearch caption` tries again
                    log.warning("OCR failed on %s: %s", table.column("path")[i], exc)
        name = self.captioner.name if self.captioner is not None else None
        engine = self.ocr.engine if self.ocr is not None else None
        has_caption = [c is not None for c in captions]
        has_text = [t is not None for t in texts]
        return (table.drop_columns(["data"])
                .append_column("caption", pa.array(captions, pa.string()))
                .append_column("caption_model", pa.array([name if c else None for c in has_caption], pa.string()))
                .append_column("ocr_text", pa.array(texts, pa.string()))
                .append_column("ocr_engine", pa.array([engine if t else None for t in has_text], pa.string())))


# -- the driver ----------------------------------------------------------------------------------------------------


def read_source_list(path: Path) -> list[str]:
    """The files or URLs listed in a Parquet or CSV file: its `path` or `url` column, else its first column."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
            names = table.column_names
            column = next((c for c in ("path", "url") if c in names), names[0] if names else None)
            if column is None:
                raise DistributedError(f"{path}: no columns")
            values = table.column(column).to_pylist()
        else:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows:
                return []
            header = [h.strip().lower() for h in rows[0]]
            column = next((header.index(c) for c in ("path", "url") if c in header), None)
            if column is None:  # no header naming the column: the first column, first row included
                column, body = 0, rows
            else:
                body = rows[1:]
            values = [row[column] if len(row) > column else "" for row in body]
    except (OSError, pa.ArrowException, UnicodeDecodeError, csv.Error) as exc:
        raise DistributedError(f"cannot read the list {path}: {exc}") from None
    out = []
    for value in values:
        value = (value or "").strip() if isinstance(value, str) else ""
        if not value:
            continue
        out.append(value if value.startswith(URL_SCHEMES) else str(Path(value).expanduser().resolve()))
    return out


class RayIndexer:
    """`vlsearch index --ray`: plans on this machine, computes on the cluster, merges shard by shard."""

    def __init__(self, library: Library, encoder, specs: ModelSpecs, options: RayOptions,
                 progress: ProgressHook | None = None, prune: bool = True) -> None:
        self.library = library
        self.encoder = encoder  # loaded here too: its name and dim, and the preprocess shipped to the decoders
        self.specs = specs
        self.options = options
        self.progress = progress
        self.prune = prune
        self.model = encoder.name
        self.shard_dir = options.shards_dir or library.root / SHARD_DIR

    def run(self, paths: Iterable[Path | str] = (), lists: Iterable[Path] = ()) -> RayReport:
        started = time.perf_counter()
        report = RayReport()
        paths, lists = list(paths), list(lists)
        self.library.ensure_model(self.model, self.encoder.dim)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)  # an unfinished shard of a stopped run: its files are planned again
        index = self.library.vector_index(self.model)
        upserts: list[int] = []
        removed: list[int] = []
        done_elsewhere: set[str] = set()
        if self.options.shards_dir is None:
            report.merged_leftovers = self._merge_leftovers(upserts, removed)
        else:
            done_elsewhere = self._paths_in_shards()
        local = Indexer(self.library, self.encoder, prune=self.prune, workers=0)
        work, files, folders = self._plan(local, paths, lists, report, done_elsewhere)
        if self.progress:
            self.progress.start(len(work))
        try:
            if work:
                self._compute(work, report, upserts, removed)
        finally:
            if upserts or removed:
                self.library.apply_to_index(self.model, index, upserts, removed)
        if self.prune and folders and self.options.shards_dir is None:
            gone = local._prune(files, folders, report)
            if gone:
                self.library.apply_to_index(self.model, self.library.vector_index(self.model), [], gone)
        report.seconds = time.perf_counter() - started
        return report

    # planning

    def _plan(self, local: Indexer, paths: list[Path | str], lists: list[Path], report: RayReport,
              done_elsewhere: set[str]) -> tuple[list[WorkItem], dict[str, Path], list[Path]]:
        from vlsearch.indexer.discover import discover
        from vlsearch.library.store import VECTOR_DIR
        from vlsearch.library.thumbs import THUMB_DIR

        roots = [Path(p).expanduser().resolve() for p in paths]
        unusable: list[tuple[str, str]] = []
        excluded = [self.library.root / THUMB_DIR, self.library.root / VECTOR_DIR, self.shard_dir]
        files = {str(p): p for p in discover(roots, exclude=excluded, unusable=unusable)}
        report.seen = len(files) + len(unusable)
        report.errors += len(unusable)
        report.failures.extend(unusable)
        folders = [r for r in roots if r.is_dir()]
        local._remember_roots(folders)
        work = local._plan(files, roots, report) if files else []
        listed = [p for source in lists for p in read_source_list(source)]
        listed = [p for p in dict.fromkeys(listed) if p not in files]
        report.seen += len(listed)
        work += self._plan_listed(listed, report)
        if done_elsewhere:
            before = len(work)
            work = [w for w in work if w.path not in done_elsewhere]
            report.unchanged += before - len(work)
        return work, files, folders

    def _plan_listed(self, listed: list[str], report: RayReport) -> list[WorkItem]:
        """Listed files and URLs: a URL already indexed (status ok, with this model's vector) is unchanged; a file
        is compared by size and time when this machine sees it, else treated like a URL."""
        if not listed:
            return []
        from sqlalchemy import select

        known: dict[str, tuple[int, int, float, bool]] = {}
        has_vector = select(Embedding.image_id).where(Embedding.model == self.model)
        with self.library.session() as s:
            for start in range(0, len(listed), 30_000):
                chunk = listed[start : start + 30_000]
                rows = s.execute(
                    select(ImageRecord.path, ImageRecord.id, ImageRecord.size, ImageRecord.mtime,
                           (ImageRecord.status == "ok") & ImageRecord.id.in_(has_vector))
                    .where(ImageRecord.path.in_(chunk))
                )
                for path, image_id, size, mtime, done in rows:
                    known[path] = (image_id, size, mtime, bool(done))
        work = []
        for path in listed:
            size, mtime = 0, 0.0
            if not path.startswith(URL_SCHEMES):
                try:
                    st = os.stat(path)
                    size, mtime = st.st_size, st.st_mtime
                except OSError:
                    pass  # not visible here: the workers read it (or say why they cannot)
            row = known.get(path)
            if row is not None and row[3] and (not size or (row[1], row[2]) == (size, mtime)):
                report.unchanged += 1
                continue
            work.append(WorkItem(path, size, mtime, row[0] if row else None))
        return work

    # shards

    def _shard_files(self) -> list[Path]:
        return sorted(self.shard_dir.glob("shard-*.parquet"))

    def _paths_in_shards(self) -> set[str]:
        done: set[str] = set()
        for shard in self._shard_files():  # failed files are tried again, as a local run does
            table = pq.read_table(shard, columns=["path", "status"])
            done.update(table.filter(pc.equal(table.column("status"), "ok")).column("path").to_pylist())
        return done

    def _merge_leftovers(self, upserts: list[int], removed: list[int]) -> int:
        leftovers = self._shard_files()
        for shard in leftovers:
            log.warning("merging %s, left by a run that stopped before merging it", shard)
            self._merge(shard, upserts, removed)
        return len(leftovers)

    def _merge(self, shard: Path, upserts: list[int], removed: list[int]) -> Any:
        from vlsearch.library.parquet_io import import_parquet

        result = import_parquet(self.library, [shard], update_index=False)  # FAISS once, at the end of the run
        upserts += result.changes.get(self.model, ([], []))[0]
        removed += result.changes.get(self.model, ([], []))[1]
        if result.skipped:
            log.warning("%s: %d rows skipped: %s", shard, result.skipped, result.reasons[:5])
        shard.unlink()
        return result

    # computing

    def _compute(self, work: list[WorkItem], report: RayReport, upserts: list[int], removed: list[int]) -> None:
        ray, started_here, report.cluster = connect(self.options.address, self.options.cpus)
        log.info("Ray cluster: %s", report.cluster)
        try:
            size = max(1, self.options.shard_size)
            shards = [work[i : i + size] for i in range(0, len(work), size)]
            run_id = time.strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}"
            for start in range(0, len(shards), WINDOW_SHARDS):
                window = {f"{run_id}-{n:06d}": shard for n, shard in enumerate(shards[start : start + WINDOW_SHARDS],
                                                                                start)}
                try:
                    self._run_window(ray, window, report, upserts, removed)
                except ray.exceptions.RayError as exc:  # a model that cannot load on a node, a worker out of memory
                    cause = _cause(exc)
                    raise DistributedError(
                        f"the Ray job failed: {cause}. {report.shards} shards were finished and are kept; run the same "
                        "command again to resume.") from exc
        finally:
            if started_here:
                ray.shutdown()

    def _pipeline(self, ray, window: dict[str, list[WorkItem]]):
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on progress bars and execution plans
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver draws one bar for the whole run
        ctx.print_on_execution_start = False
        plan = [pa.table({
            "path": pa.array([w.path for w in items], pa.string()),
            "size": pa.array([w.size for w in items], pa.int64()),
            "mtime": pa.array([w.mtime for w in items], pa.float64()),
            "shard": pa.array([name] * len(items), pa.string()),
        }) for name, items in window.items()]
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.specs.device != "cpu" else 0  # --device cpu: leave them be
        cpus = int(resources.get("CPU", 1))
        describe = bool(self.specs.caption or self.specs.ocr)
        # One embedding (and one describing) actor per GPU; the two share it when both use it, or the second
        # stage would wait forever for GPUs the first holds. On a CPU-only cluster an actor per 8 CPUs, each leaving
        # room for the decoders (a 2-CPU instance runs one decoder beside an embedding and a describing actor).
        actors = self.options.actors or (max(1, gpus) if gpus else max(1, cpus // 8))
        actor_cpus = 1 if gpus or cpus >= 8 else 0.5
        actor_gpus = (0.5 if self.specs.caption else 1) if gpus else 0
        batch = self.options.batch_size

        def pool(size: int):
            return ray.data.ActorPoolStrategy(size=size)

        ds = ray.data.from_arrow(plan)
        ds = ds.map_batches(
            decode_stage, batch_size=batch, batch_format="pyarrow", num_cpus=1, zero_copy_batch=True,
            fn_kwargs={"preprocess": self.encoder.preprocess, "draft": draft_size(self.encoder),
                       "max_pixels": self.options.max_pixels, "keep_bytes": describe},
        )
        ds = ds.map_batches(EmbedStage, batch_size=batch, batch_format="pyarrow", compute=pool(actors),
                            num_cpus=actor_cpus, num_gpus=actor_gpus, fn_constructor_kwargs={"specs": self.specs})
        if describe:
            ds = ds.map_batches(DescribeStage, batch_size=min(batch, 16), batch_format="pyarrow", compute=pool(actors),
                                num_cpus=actor_cpus, num_gpus=actor_gpus if self.specs.caption else 0,
                                fn_constructor_kwargs={"specs": self.specs, "max_pixels": self.options.max_pixels})
        return ds

    def _run_window(self, ray, window: dict[str, list[WorkItem]], report: RayReport, upserts: list[int],
                    removed: list[int]) -> None:
        from vlsearch.library.parquet_io import parquet_schema

        schema = parquet_schema(self.encoder.dim).with_metadata(
            {b"vlsearch": json.dumps({"format_version": 1, "model": self.model, "dim": self.encoder.dim}).encode()})
        expected = {name: len(items) for name, items in window.items()}
        received = dict.fromkeys(window, 0)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for table in self._pipeline(ray, window).iter_batches(batch_format="pyarrow", batch_size=None):
                for name in set(table.column("shard").to_pylist()):
                    part = table.filter(pc.equal(table.column("shard"), name))
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(self._tmp(name), schema)
                    writers[name].write_table(_conform(part, schema))
                    received[name] += part.num_rows
                    errors = part.num_rows - pc.sum(pc.equal(part.column("status"), "ok")).as_py()
                    self._count(part, report)
                    if self.progress:
                        self.progress.advance(part.num_rows, errors)
                    if received[name] == expected[name]:
                        writers.pop(name).close()
                        final = self.shard_dir / f"shard-{name}.parquet"
                        os.replace(self._tmp(name), final)
                        report.shards += 1
                        if self.options.shards_dir is None:
                            self._merge(final, upserts, removed)
                        else:
                            report.shard_files.append(str(final))
        finally:
            for name, writer in writers.items():  # incomplete: dropped, their files are planned again next run
                writer.close()
                self._tmp(name).unlink(missing_ok=True)

    def _tmp(self, name: str) -> Path:
        return self.shard_dir / f"shard-{name}.parquet.tmp"

    def _count(self, part: pa.Table, report: RayReport) -> None:
        statuses = part.column("status").to_pylist()
        errors = part.column("error").to_pylist()
        for path, status, error in zip(part.column("path").to_pylist(), statuses, errors, strict=True):
            if status == "ok":
                report.embedded += 1
            else:
                report.errors += 1
                report.failures.append((path, error or "unknown error"))
        names = part.column_names
        if "caption" in names:
            report.captioned += part.num_rows - part.column("caption").null_count
        if "ocr_text" in names:
            report.read += part.num_rows - part.column("ocr_text").null_count


def _cause(exc: Exception) -> str:
    """The user-facing line of a Ray error: the worker's own exception ("ValueError: ..."), not Ray's wrapping."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Unavailable)\b.*: ", line)
            and not line.startswith(("ray.", "UserCodeException"))]
    return (ours or lines or [type(exc).__name__])[0]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows as the shard schema has them: missing columns null, extra ones (shard) dropped, types cast."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)

