"""The SQLite writer alone: rows/s of `LibraryWriter.write`, the step every local index run ends each batch with.

Why: on a GPU the model embeds thousands of images a second, and the writer (one transaction per batch: the image
rows, their vectors, the model's generation) must keep up, at 5,000 rows/s. This times the writer with nothing else
running: each batch arrives decoded (metadata, a content hash of its own) and its vectors are precomputed (random
512-d, what ViT-B-32 gives), so the model costs nothing. New rows into a new library per batch size and setting,
the indexer's own code path. Two settings: thumbnails already written (a local run's decoding workers write them)
and thumbnails written by the writer (a ~10 KB JPEG each: a decoder that hands thumbnails over, as the CPU decoder
did before its workers wrote them).

    python -m bench writer --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.query import machine
from bench.record import recorded_command

DIM = 512
MODEL = "ViT-B-32-random"


def batches(rows: int, batch_size: int, thumbnail: bytes | None, seed: int):
    """Decoded batches of new files, each with its own hash (and a shared thumbnail's bytes, to write)."""
    from vlsearch.images import ImageMeta
    from vlsearch.indexer.items import Batch, Decoded, WorkItem

    meta = ImageMeta(4032, 3024, 4032, 3024, 1, "JPEG", None, None, None)
    for start in range(0, rows, batch_size):
        items = []
        for i in range(start, min(rows, start + batch_size)):
            sha = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
            items.append(Decoded(WorkItem(f"/bench/photos/{i:08d}.jpg", 3_000_000, 1.7e9, None), sha256=sha,
                                 meta=meta, thumbnail=thumbnail, pixels=torch.zeros(1)))
        yield Batch.collate(items)


def measure(root: Path, rows: int, batch_size: int, seed: int, thumbnail: bytes | None) -> dict[str, Any]:
    from vlsearch.encoders.base import ImageEmbeddings
    from vlsearch.indexer.report import Changes, IndexReport
    from vlsearch.indexer.write import LibraryWriter
    from vlsearch.library import Library

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((batch_size, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lib = Library.open(root / f"batch-{batch_size}-{'thumbs' if thumbnail else 'rows'}")
    lib.ensure_model(MODEL, DIM)
    writer = LibraryWriter(lib, MODEL, DIM, lambda pixels: ImageEmbeddings(vectors[: len(pixels)]))
    report, changes = IndexReport(), Changes()
    made = list(batches(rows, batch_size, thumbnail, seed))
    started = time.perf_counter()
    for batch in made:
        writer.write(batch, report, changes)
    seconds = time.perf_counter() - started
    lib.close()
    return {"batch_size": batch_size, "thumbnails": "writer" if thumbnail else "workers",
            "rows": report.embedded, "seconds": round(seconds, 2),
            "rows_per_s": round(report.embedded / seconds), "ms_per_batch": round(1000 * seconds / len(made), 2)}


def thumbnail_jpeg() -> bytes:
    """A 256 x 192 photo-like thumbnail, as the indexer writes them."""
    from vlsearch.images.samples import sample_photos

    out = io.BytesIO()
    sample_photos()["chelsea"].convert("RGB").resize((256, 192), Image.Resampling.BICUBIC).save(out, "JPEG", quality=80)
    return out.getvalue()


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    m = r["machine"]
    lines = [
        "# The SQLite writer alone", "",
        f"Command: `{r['command']}` (raw numbers: `writer.json`). Measured {r['date']}.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM. Python {m['python']}.", "",
        f"Setup: {r['rows']:,} new rows per batch size and setting into a new library, each with a {DIM}-d vector "
        "(precomputed: no model runs). Thumbnails: `workers`, already written (the local runner's decoding workers "
        f"write them); `writer`, a {r['thumbnail_bytes']:,}-byte JPEG each written by the writer (a decoder that "
        "hands thumbnails over). Target: 5,000 rows/s.", "",
        "| thumbnails | batch size | rows | seconds | rows/s | ms per batch |", "|---|---:|---:|---:|---:|---:|"]
    for row in r["runs"]:
        lines.append(f"| {row['thumbnails']} | {row['batch_size']} | {row['rows']:,} | {row['seconds']} | "
                     f"{row['rows_per_s']:,} | {row['ms_per_batch']} |")
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench writer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for writer.json and writer.md")
    p.add_argument("--rows", type=int, default=20_000, help="rows written per batch size")
    p.add_argument("--batch-sizes", default="32,64,128,256")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="vlsearch-bench-writer-") as tmp:
        for thumbnail in (None, thumbnail_jpeg()):
            for size in [int(s) for s in args.batch_sizes.split(",")]:
                runs.append(measure(Path(tmp), args.rows, size, args.seed, thumbnail))
                print(json.dumps(runs[-1]), flush=True)
    report = {"command": recorded_command("writer", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "rows": args.rows, "thumbnail_bytes": len(thumbnail_jpeg()), "runs": runs}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "writer.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(args.out / "writer.md", report)


if __name__ == "__main__":
    main()
