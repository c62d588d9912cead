"""End-to-end indexing throughput (images/s) over a folder of real JPEGs, per model and decoding workers.

Why: indexing speed is the first thing a user with a large photo library meets; this measures the whole
pipeline (read, hash, decode, thumbnail, preprocess in workers, embed, commit) rather than the model alone.
The photos are the scikit-image/scikit-learn samples, upscaled and cropped into distinct files of camera-like
sizes, so no two files share a hash.

    python -m bench.indexing --count 300 --models offline,tiny-random --workers 0,2 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from api.samples import sample_photos
from bench.index_choice import cpu_model
from encoders import load_encoder
from indexer import Indexer
from library import Library


def make_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    photos = [p.convert("RGB") for p in sample_photos().values()]
    for i in range(count):
        im = photos[i % len(photos)]
        w, h = im.size
        big = im.resize((w * 3, h * 3))
        big.crop((i % 37, i % 23, w * 3 - i % 19, h * 3 - i % 29)).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--models", default="offline,tiny-random")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="folder for indexing.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vlsearch-bench-"))
    try:
        make_photos(work / "photos", args.count)
        rows = []
        for spec in args.models.split(","):
            encoder = load_encoder(spec, device=args.device, model_dir=work / "models")
            for workers in (int(w) for w in args.workers.split(",")):
                lib = Library.open(work / f"lib-{spec}-{workers}")
                started = time.perf_counter()
                report = Indexer(lib, encoder, batch_size=args.batch_size, workers=workers).run([work / "photos"])
                seconds = time.perf_counter() - started
                row = {"model": encoder.name, "workers": workers, "batch_size": args.batch_size,
                       "images": report.embedded, "seconds": round(seconds, 2),
                       "images_per_s": round(report.embedded / seconds, 1), "device": encoder.device}
                rows.append(row)
                print(f"| {row['model']} | {workers} | {row['images']} | {row['seconds']} | {row['images_per_s']} |")
                lib.close()
        machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "indexing.json").write_text(json.dumps({"machine": machine, "runs": rows}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
