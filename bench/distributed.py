"""Distributed indexing on Ray: what it costs against a local run, and the per-shard figures behind the projection.

    python -m bench distributed --count 2000 --models tiny-random,offline --out bench/results

For each model, on the same generated photos (bench indexing's):
- **local**: `Indexer.run` into a new library (embedding only);
- **ray compute**: `Indexer` with a `RayRunner` on a Ray instance started on this machine, writing shards
  (`--shards`), so the cluster's work is timed apart from the merge;
- **merge**: `import_parquet` of those shards into a new library (what the head node does with each shard);
- **shard**: bytes per image in a shard file (vector, metadata, thumbnail).
Then the merge rate at scale: synthetic shards of `--merge-rows` rows of 512-d vectors without thumbnails, merged
into a library (the head node's limit: one SQLite writer).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.api import load_bench_encoder
from bench.indexing import machine, make_photos, photo_stats
from bench.record import recorded_command
from vlsearch.indexer import Indexer
from vlsearch.library import Library


def run_model(spec: str, files: list[Path], work: Path, args) -> dict:
    from vlsearch.indexer.distributed import ModelSpecs, RayOptions, RayRunner, connect

    encoder = load_bench_encoder(spec, "cpu")
    row: dict = {"model": spec, "images": len(files), "batch_size": args.batch_size}

    lib = Library.open(work / f"local-{spec}")
    started = time.perf_counter()
    report = Indexer(lib, encoder, batch_size=args.batch_size).run([files[0].parent])
    row["local_seconds"] = round(time.perf_counter() - started, 1)
    row["local_images_per_s"] = round(report.embedded / row["local_seconds"], 1)
    lib.close()

    started = time.perf_counter()
    ray, _, cluster = connect("local", args.ray_cpus)
    row["ray_start_seconds"] = round(time.perf_counter() - started, 1)
    row["cluster"] = cluster
    lib = Library.open(work / f"ray-{spec}")
    shards = work / f"shards-{spec}"
    specs = ModelSpecs(encoder=encoder.name, weights=None, model_dir=None, device="cpu")
    options = RayOptions(address="local", shard_size=args.shard_size, batch_size=args.batch_size, shards_dir=shards)
    try:
        started = time.perf_counter()
        report = Indexer(lib, encoder, runner=RayRunner(specs, options)).run([files[0].parent])
        row["ray_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        ray.shutdown()
    row["ray_images_per_s"] = round(report.embedded / row["ray_seconds"], 1)
    row["ray_to_local"] = round(row["ray_images_per_s"] / row["local_images_per_s"], 2)
    row["shards"] = report.shards
    shard_files = sorted(shards.glob("shard-*.parquet"))
    row["shard_bytes_per_image"] = round(sum(f.stat().st_size for f in shard_files) / max(1, report.embedded))
    row["merge_rows_per_s"] = merge_rate(lib, shard_files)
    lib.close()
    print(json.dumps(row), flush=True)
    return row


def merge_rate(lib: Library, shard_files: list[Path]) -> float:
    from vlsearch.library.parquet_io import import_parquet

    started = time.perf_counter()
    with lib.writer("bench"):
        report = import_parquet(lib, shard_files)
    return round(report.read / (time.perf_counter() - started), 1)


def synthetic_merge(work: Path, rows: int, dim: int, shard_rows: int) -> dict:
    """Merge shards of `rows` synthetic images (512-d vectors, metadata, no thumbnails) into a new library."""
    from vlsearch.library.parquet_io import format_metadata, parquet_schema

    rng = np.random.default_rng(0)
    schema = parquet_schema(dim).with_metadata(format_metadata("bench-synthetic", dim))
    folder = work / "synthetic"
    folder.mkdir()
    for start in range(0, rows, shard_rows):
        n = min(shard_rows, rows - start)
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        columns = {
            "path": pa.array([f"/photos/{i // 1000:05d}/{i:09d}.jpg" for i in range(start, start + n)]),
            "sha256": pa.array([f"{i:064x}" for i in range(start, start + n)]),
            "size": pa.array(rng.integers(1e5, 5e6, n), pa.int64()),
            "mtime": pa.array(np.full(n, 1.7e9)),
            "width": pa.array(np.full(n, 4000, np.int32)), "height": pa.array(np.full(n, 3000, np.int32)),
            "status": pa.array(["ok"] * n),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            "caption": pa.array([f"a photo number {i}" for i in range(start, start + n)]),
        }
        table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema},
                         schema=schema)
        pq.write_table(table, folder / f"shard-{start // shard_rows:05d}.parquet")
    files = sorted(folder.glob("*.parquet"))
    lib = Library.open(work / "synthetic-lib")
    started = time.perf_counter()
    rate = merge_rate(lib, files)
    seconds = time.perf_counter() - started
    bytes_per_row = sum(f.stat().st_size for f in files) / rows
    db_bytes = (work / "synthetic-lib" / "library.db").stat().st_size
    lib.close()
    return {"rows": rows, "dim": dim, "shard_rows": shard_rows, "seconds": round(seconds, 1),
            "rows_per_s": rate, "shard_bytes_per_row": round(bytes_per_row),
            "sqlite_bytes_per_row": round(db_bytes / rows)}


def write_report(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(result, indent=2) + "\n")
    m, p, s = result["machine"], result["photos"], result["synthetic_merge"]
    lines = [
        "# Distributed indexing on Ray: cost against a local run, and per-shard figures",
        "",
        f"Command: `{result['command']}` (raw numbers: `distributed.json`). Measured {result['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['gpu'] or 'no GPU'}; Ray {result['ray']} started on this "
        "machine (one node).",
        "",
        f"Photos: {p['files']} JPEGs, mean {p['megapixels_mean']} MP, {p['bytes_total'] / 1e9:.2f} GB.",
        "",
        "- **local**: `Indexer.run` (embedding only); **ray**: `Indexer` with a `RayRunner` computing shards "
        "(`--shards`), Ray start not included; **merge**: importing those shards into a new library.",
        "",
        "| model | local img/s | ray img/s | ray / local | Ray start s | shards | shard bytes/image | merge rows/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(f"| {r['model']} | {r['local_images_per_s']} | {r['ray_images_per_s']} | {r['ray_to_local']} | "
                     f"{r['ray_start_seconds']} | {r['shards']} | {r['shard_bytes_per_image']} | "
                     f"{r['merge_rows_per_s']} |")
    lines += [
        "",
        f"Merge at scale: {s['rows']:,} synthetic rows ({s['dim']}-d vectors, metadata and a caption, no thumbnails) "
        f"in shards of {s['shard_rows']:,}: **{s['rows_per_s']:,.0f} rows/s** into one SQLite library "
        f"({s['seconds']} s; {s['shard_bytes_per_row']} bytes a row in Parquet, {s['sqlite_bytes_per_row']} in "
        "SQLite).",
    ]
    (out / "distributed.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2000, help="photos to index (default 2000)")
    p.add_argument("--models", default="tiny-random,offline", help="models Ray actors can load by name")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--merge-rows", type=int, default=200_000, help="synthetic rows for the merge rate")
    p.add_argument("--photos", type=Path, help="folder for the generated photos (default: a cache in the temp dir)")
    p.add_argument("--out", type=Path, help="folder for distributed.json and distributed.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import ray

    args = parse_args(argv)
    folder = args.photos or Path(tempfile.gettempdir()) / f"vlsearch-bench-photos-{args.count}"
    make_photos(folder, args.count)
    files = sorted(folder.glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="vlsearch-bench-distributed-") as tmp:
        work = Path(tmp)
        runs = [run_model(spec, files, work, args) for spec in args.models.split(",") if spec]
        merge = synthetic_merge(work, args.merge_rows, 512, 10_000)
    command = recorded_command("distributed", argv)
    result = {"command": command,
              "date": time.strftime("%Y-%m-%d"), "machine": machine(), "ray": ray.__version__,
              "photos": photo_stats(folder), "runs": runs, "synthetic_merge": merge}
    print(json.dumps(merge), flush=True)
    if args.out:
        write_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
