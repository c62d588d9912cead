"""The coarse quantizer of a large IVF index: flat (exact) against an HNSW graph, at the same lists.

Why: at 10M vectors the budgeted builder once used autofaiss's IVF16384_HNSW32 and the recall guard could not
reach recall@10 0.95 even at nprobe 1024 (97 ms a query). This isolates the quantizer: one set of k-means
centroids (trained as the library trains them: FAISS k-means, an HNSW graph finding each training point's centroid
from HNSW_TRAINING_FROM lists), IVF-Flat lists so that no PQ error mixes in, and three ways to use them:

    hnsw          an HNSW quantizer for adding (efSearch QUANTIZER_ADD_EF, as the library adds) and searching
                  (efSearch 2 x nprobe): what `vlsearch reindex --quantizer hnsw` builds
    exact-add     lists assigned exactly when adding, the HNSW quantizer when searching: is adding the only harm?
    flat          a flat quantizer for both (the default)

For each nprobe: recall@10 against exact search of image and text-like queries (bench/scale.py's queries), and the
p50 of one query on one thread (the FAISS search alone). Also: the share of vectors the HNSW quantizer puts in their
nearest list when adding, and each variant's adding time.

    python -m bench quantizer --size 1000000 --nlist 16384 --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.query import percentiles, recall_at_k, timed
from bench.record import recorded_command
from bench.scale import K, chunks_of, machine, queries_for, vector_file
from vlsearch.library.vectors import exact_search
from vlsearch.library.vectors.build import HNSW_TRAINING_FROM, QUANTIZER_ADD_EF
from vlsearch.library.vectors.plan import HNSW_QUANTIZER_M

VARIANTS = ("hnsw", "exact-add", "flat")


def train(vectors: np.ndarray, nlist: int, points: int, seed: int) -> np.ndarray:
    """k-means centroids for `nlist` lists from `points` sampled vectors, trained as VectorIndex.build_from_chunks
    trains them."""
    dim = vectors.shape[1]
    at = np.sort(np.random.default_rng(seed).choice(len(vectors), size=min(points, len(vectors)), replace=False))
    sample = np.asarray(vectors[at], dtype=np.float32)
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    if nlist >= HNSW_TRAINING_FROM:
        ivf.clustering_index = faiss.IndexHNSWFlat(dim, HNSW_QUANTIZER_M, faiss.METRIC_L2)
    index.train(sample)
    ivf.clustering_index = None
    return ivf.quantizer.reconstruct_n(0, nlist)


def hnsw_over(centroids: np.ndarray) -> faiss.IndexHNSWFlat:
    graph = faiss.IndexHNSWFlat(centroids.shape[1], HNSW_QUANTIZER_M, faiss.METRIC_INNER_PRODUCT)
    graph.add(centroids)
    return graph


def build(variant: str, centroids: np.ndarray, chunks: Any) -> tuple[faiss.IndexIVFFlat, list, float]:
    """(the IVF-Flat index, the quantizers it holds on to, seconds adding) for one variant."""
    nlist, dim = centroids.shape
    flat = faiss.IndexFlatIP(dim)
    flat.add(centroids)
    quantizer = flat if variant == "flat" else hnsw_over(centroids)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = QUANTIZER_ADD_EF
    started = time.perf_counter()
    for ids, block in chunks():
        if variant == "exact-add":
            lists = np.ascontiguousarray(flat.search(block, 1)[1][:, 0])
            index.add_core(len(block), faiss.swig_ptr(block), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        else:
            index.add_with_ids(block, ids)
    return index, [flat, quantizer], time.perf_counter() - started


def assignment_accuracy(centroids: np.ndarray, vectors: np.ndarray, count: int) -> float:
    """The share of `count` stored vectors that the HNSW quantizer (at the adding efSearch) puts in their nearest
    list."""
    sample = np.asarray(vectors[:count], dtype=np.float32)
    flat = faiss.IndexFlatIP(centroids.shape[1])
    flat.add(centroids)
    graph = hnsw_over(centroids)
    graph.hnsw.efSearch = QUANTIZER_ADD_EF
    return float((graph.search(sample, 1)[1] == flat.search(sample, 1)[1]).mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    path, _ = vector_file(args.cache, args.size, args.dim, args.seed, args.chunk)
    vectors = np.load(path, mmap_mode="r")
    chunks = chunks_of(vectors, args.chunk)
    data = queries_for(vectors, args.dim, args.seed, args.queries, args.gaps)
    truth = {kind: exact_search(data[kind], chunks, K)[1] for kind in ("image", "text")}
    started = time.perf_counter()
    centroids = train(vectors, args.nlist, args.train_points or 39 * args.nlist, args.seed)
    train_s = time.perf_counter() - started
    print(f"trained {args.nlist:,} lists in {train_s:.0f} s", flush=True)
    report: dict[str, Any] = {"train_s": round(train_s, 1), "add_s": {}, "rows": [],
                              "hnsw_add_assignment_accuracy": round(assignment_accuracy(centroids, vectors,
                                                                                        args.accuracy_sample), 4)}
    count = min(args.latency_queries, args.queries)
    for variant in VARIANTS:
        index, keep, add_s = build(variant, centroids, chunks)
        report["add_s"][variant] = round(add_s, 1)
        print(f"{variant}: added in {add_s:.0f} s", flush=True)
        for nprobe in args.nprobe_list:
            index.nprobe = min(nprobe, args.nlist)
            quantizer = faiss.downcast_index(index.quantizer)
            if isinstance(quantizer, faiss.IndexHNSW):
                quantizer.hnsw.efSearch = max(2 * nprobe, 16)  # as the library searches
            row: dict[str, Any] = {"variant": variant, "nprobe": nprobe}
            for kind in ("image", "text"):
                q = data[kind]
                found = index.search(q, K)[1]
                row[f"recall_{kind}"] = round(float(recall_at_k(found, truth[kind]).mean()), 4)
                row[f"p50_ms_{kind}"] = percentiles(timed(lambda i, q=q, ix=index: ix.search(q[i : i + 1], K), count,
                                                          args.repeats))["p50"]
            report["rows"].append(row)
            print(f"  nprobe {nprobe}: {row}", flush=True)
        del index, keep
    return report


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    r = report["result"]
    lines = [f"# Coarse quantizer: flat against HNSW ({report['date']})", "",
             f"Command: `{report['command']}` (raw numbers: `quantizer.json`). Measured {report['date']}, load average "
             f"{report['loadavg_start']} before, {report['loadavg_end']} after.", "",
             f"Machine: CPU `{report['machine']['cpu']}`, {report['machine']['cores']} cores, "
             f"{report['machine']['ram_gib']} GiB RAM, no GPU; faiss-cpu {report['machine']['faiss']}.", "",
             report["setup"], "",
             f"Training: {r['train_s']} s. Adding: " + ", ".join(f"{v} {s} s" for v, s in r["add_s"].items())
             + f". The HNSW quantizer put {r['hnsw_add_assignment_accuracy']:.1%} of stored vectors in their "
             f"nearest list when adding (efSearch {QUANTIZER_ADD_EF}).", "",
             "| nprobe | " + " | ".join(f"{v}: image / text recall@10, text p50 ms" for v in VARIANTS) + " |",
             "|---:|" + "---|" * len(VARIANTS)]
    by = {(row["variant"], row["nprobe"]): row for row in r["rows"]}
    for nprobe in sorted({row["nprobe"] for row in r["rows"]}):
        cells = []
        for v in VARIANTS:
            row = by[(v, nprobe)]
            cells.append(f"{row['recall_image']:.3f} / {row['recall_text']:.3f}, {row['p50_ms_text']:.1f}")
        lines.append(f"| {nprobe} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench quantizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1_000_000, help="stored vectors")
    p.add_argument("--nlist", type=int, default=16_384, help="IVF lists (the builder's most, reached at ~10M)")
    p.add_argument("--train-points", type=int, default=0, help="k-means sample (default 39 a list)")
    p.add_argument("--nprobe", default="16,32,64,128,256,512,1024", help="comma-separated")
    p.add_argument("--queries", type=int, default=200, help="image and text queries each, for recall")
    p.add_argument("--latency-queries", type=int, default=50, help="of those, timed one by one")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--accuracy-sample", type=int, default=50_000, help="stored vectors checked for their list")
    p.add_argument("--gaps", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100_000)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-scale",
                   help="where the synthetic vectors are kept between runs (shared with bench scale)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.nprobe_list = [int(x) for x in args.nprobe.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    loadavg_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    result = run(args)
    report = {"command": recorded_command("quantizer", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "setup": (f"{args.size:,} synthetic CLIP-like float16 vectors of dimension {args.dim} (bench/scale.py's "
                        f"mixture), {args.nlist:,} IVF-Flat lists, {args.queries} image and {args.queries} text "
                        f"queries, {min(args.latency_queries, args.queries)} of each timed one at a time on one "
                        f"thread (FAISS search alone), fastest of {args.repeats} passes."),
              "result": result, "total_seconds": round(time.perf_counter() - started),
              "loadavg_start": loadavg_start, "loadavg_end": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quantizer.json").write_text(json.dumps(report, indent=2) + "\n")
        write_markdown(args.out / "quantizer.md", report)
    print(f"total {report['total_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
