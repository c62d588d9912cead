"""Tagging a library from its stored vectors: images/s of `vlsearch tags` at 1M images with the default vocabulary.

Why: tags come from vectors the library already holds, so tagging a million photos should take minutes on a CPU,
not the hours re-embedding them would. This measures `indexer.tagging.Tagger.run` end to end: read the labels'
vectors, then per chunk of 4,096 images read their vectors from SQLite, score them against every label (a matrix
product and a softmax), keep each image's tags and write them.

The library: --images images with the synthetic 512-d vectors of bench/query.py (`make_data`: the CLIP-like mixture)
written by `filled_library` and cached in --cache. The vocabulary: the shipped default one (its 1,159 labels), whose
label vectors are `make_data`'s text-like query vectors (they model CLIP's modality gap), so scores and tag counts
are those of CLIP-like vectors, not of a real model. Each run replaces the vocabulary first, so every image is
scored again.

    python -m bench tags --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from bench.query import filled_library, machine, make_data
from bench.record import recorded_command
from vlsearch.encoders import Encoder

MODEL, DIM, GAPS = "synthetic-512", 512, 4


class LabelVectors(Encoder):
    """Answers the vocabulary's prompts with text-like synthetic vectors, one per prompt in the order asked."""

    name, dim, device = MODEL, DIM, "cpu"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @property
    def preprocess(self):
        raise NotImplementedError("the tagging benchmark embeds no image")

    def encode_image_tensors(self, batch):
        raise NotImplementedError("the tagging benchmark embeds no image")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > len(self.vectors):
            raise ValueError(f"{len(texts)} labels, only {len(self.vectors)} synthetic label vectors")
        return self.vectors[: len(texts)]


def tag_once(lib, encoder: Encoder, threshold: float) -> dict[str, Any]:
    """Replace the default vocabulary (dropping its tags) and tag every image; what the run did and took."""
    from vlsearch.indexer.tagging import Tagger
    from vlsearch.indexer.vocabulary import DEFAULT_FILE, DEFAULT_NAME, read_vocabulary, save_vocabulary

    labels = read_vocabulary(DEFAULT_FILE)
    save_vocabulary(lib, DEFAULT_NAME, labels, threshold, DEFAULT_NAME)
    started = time.perf_counter()
    report = Tagger(lib, encoder).run()
    seconds = time.perf_counter() - started
    return {"labels": len(labels), "threshold": threshold, "images": report.scored, "tags": report.tags,
            "seconds": round(seconds, 1), "images_per_s": round(report.scored / seconds, 1),
            "tags_per_image": round(report.tags / max(report.scored, 1), 2)}


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m, r = report["machine"], report["run"]
    lines = [
        "# Tagging from stored vectors", "",
        f"Command: `{report['command']}` (raw numbers: `tags.json`). Measured {report['date']}, total run "
        f"{report['total_seconds']:.0f} s.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used. Python "
        f"{m['python']}.", "",
        f"Setup: {report['images']:,} images with synthetic {DIM}-d vectors (see bench/tags.py), the default "
        f"vocabulary ({r['labels']:,} labels) with synthetic text-like label vectors, threshold {r['threshold']}; "
        f"library filled in {report['library_fill_s']:.0f} s (0 when cached).", "",
        "| images | labels | seconds | images/s | tags | tags/image |", "|---:|---:|---:|---:|---:|---:|",
        f"| {r['images']:,} | {r['labels']:,} | {r['seconds']:.1f} | {r['images_per_s']:,.0f} | {r['tags']:,} | "
        f"{r['tags_per_image']} |"]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench tags", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for tags.json and tags.md")
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-tags",
                   help="where the synthetic library is kept between runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from vlsearch.indexer.vocabulary import DEFAULT_FILE, read_vocabulary

    args = parse_args(argv)
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    labels = len(read_vocabulary(DEFAULT_FILE))
    data = make_data(args.images, labels, DIM, args.seed, GAPS)
    lib, fill_s = filled_library(args.cache, MODEL, DIM, data, args.seed)
    print(f"library filled in {fill_s:.0f} s", flush=True)
    run = tag_once(lib, LabelVectors(data["text"]), args.threshold)
    print(json.dumps(run), flush=True)
    lib.close()
    report = {"command": recorded_command("tags", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "images": args.images, "library_fill_s": round(fill_s, 1), "run": run,
              "total_seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tags.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(args.out / "tags.md", report)


if __name__ == "__main__":
    main()
