"""Query latency, recall and memory of every FAISS index kind, inside a real library, at 10k, 100k and 1M vectors.

Why: a user waits on one text or image query at a time. This measures that wait end to end through
search.SearchEngine (encode the query with the model, search FAISS, read the hits' rows from SQLite), beside the
index search alone and the encoder alone, so the reader sees where the time goes; and it measures recall@10 of
each approximate index against exact search, for text-to-image and image-to-image queries separately, with the
search settings the library's recall guard chose (library/vectors/guard.py), and at the defaults it starts from.

The library
-----------
n image rows and their vectors are written straight into a library's SQLite file (float16, as the indexer stores
them), like bench/api.py does, and cached per model, size, dimension and seed. Each index kind is built by
`VectorIndex.build` from those vectors (training, adding and the recall guard: the build time is all of it),
saved into the library with `Library.save_index`, and queried through `SearchEngine` like a served library.

The data
--------
Image vectors: the seeded CLIP-like Gaussian mixture of bench/index_choice.py (2,000 clusters with log-normal
sizes, low-rank within-cluster noise, a shared mean direction; random pairs have cosine ~0.39), L2-normalised,
dimension 512 (ViT-B/32's). Image queries are fresh draws from the same mixture.

Text queries model CLIP's modality gap: text vectors sit in their own cone, away from the image vectors, so a
text query's best image has cosine only ~0.3 and its top 10 lie within ~0.03 of each other. A text query is

    t = normalise(0.85 * g + 0.35 * c + 0.39 * e)

with g a "gap" direction shared by all text queries (a random unit vector orthogonal to the images' mean
direction), c a fresh draw from the image mixture (what the text describes: the weak component toward a cluster),
and e a random unit vector (the rest of the text). This gives top-1 / top-10 cosines ~0.33 / ~0.31, cosine ~0.13
with a random image, and ~0.77 between two text queries, close to what CLIP ViT-B/32 shows on real captions.
Because one gap direction can suit an index better or worse than another (HNSW above all), the queries use
--gaps different directions, in turn, and the report gives the mean recall and the worst direction's.

The encoder
-----------
Random-weight models give vectors unrelated to the synthetic library, and what FAISS does depends on where a
query lands (IVF list sizes, HNSW's walk). So the engine's encoder runs the real model on each query (a distinct
text, or a 1024x768 picture that it preprocesses), so its cost is real, and then answers with the next synthetic
query vector. The SQL lookups, filters and hydration are the engine's own.

Timing: every query is timed --repeats times in separate passes and its fastest time is kept (the machine is
shared, and a scheduler stall is not the query's cost); p50/p99 are over the queries. Flat at >= 500k vectors is
timed on at most 50 queries (each takes ~0.1 s). Memory: bytes/vector = the saved .faiss file / n; RAM/vector =
how much a fresh process's RSS grows while faiss reads that file, / n (it includes what the file does not hold,
such as the reverse id map IndexIDMap2 keeps for Flat and HNSW indexes).

    python -m bench query --sizes 10000,100000,1000000 --model tiny-random --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image

from bench.index_choice import cpu_model, make_mixture
from bench.query_report import write_markdown
from bench.record import recorded_command
from vlsearch.encoders.base import Encoder

K = 10
MIXTURE = {"n_clusters": 2000, "noise": 0.7, "iso_noise": 0.3, "rank": 64, "mean_scale": 1.0}  # as bench/api.py
GAP_WEIGHT, CONCEPT_WEIGHT, TEXT_NOISE_WEIGHT = 0.85, 0.35, 0.39
FLAT_SLOW_N = 500_000  # from here on, exact search is timed on at most FLAT_SLOW_QUERIES queries
FLAT_SLOW_QUERIES = 50
DEFAULT_PARAMS = {"ivf": {"nprobe": 32}, "ivfpq": {"nprobe": 32, "rescore_factor": 10}, "hnsw": {"ef_search": 64}}

log = logging.getLogger("bench.query")


# ------------------------------------------------------------------------------------------------- the data


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def text_queries(concepts: np.ndarray, image_mean: np.ndarray, gaps: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Text-like query vectors (see the module docstring) and the gap direction each one uses."""
    mean = unit(image_mean)
    directions = rng.standard_normal((gaps, len(mean))).astype(np.float32)
    directions -= (directions @ mean)[:, None] * mean  # outside the images' cone
    directions = unit(directions)
    which = np.arange(len(concepts)) % gaps
    noise = unit(rng.standard_normal(concepts.shape).astype(np.float32))
    return unit(GAP_WEIGHT * directions[which] + CONCEPT_WEIGHT * concepts + TEXT_NOISE_WEIGHT * noise), which


def make_data(n: int, queries: int, dim: int, seed: int, gaps: int) -> dict[str, np.ndarray]:
    vectors, fresh = make_mixture(n, 2 * queries, dim, seed=seed, **MIXTURE)
    vectors = vectors.astype(np.float16).astype(np.float32)  # what the library stores and indexes
    rng = np.random.default_rng(seed + 1)
    texts, gap_of = text_queries(fresh[queries:], vectors[: min(n, 100_000)].mean(axis=0), gaps, rng)
    return {"ids": np.arange(1, n + 1, dtype=np.int64), "vectors": vectors, "image": fresh[:queries],
            "text": texts, "gap_of": gap_of}


def cosine_stats(data: dict[str, np.ndarray], truth: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    rng = np.random.default_rng(0)
    xb, text = data["vectors"], data["text"]
    pairs = rng.integers(0, len(xb), size=(2000, 2))
    same_gap = text[data["gap_of"] == 0][:300]  # text queries of one model share its gap direction
    m = min(len(text), 300)
    stats = {f"{kind}_top{r}": float(truth[kind][0][:, r - 1].mean()) for kind in ("image", "text") for r in (1, 10)}
    stats["image_image_random"] = float(np.mean(np.sum(xb[pairs[:, 0]] * xb[pairs[:, 1]], axis=1)))
    stats["text_image_random"] = float(np.mean(text[:m] @ xb[rng.integers(0, len(xb), 500)].T))
    stats["text_text"] = float((same_gap @ same_gap.T)[np.triu_indices(len(same_gap), 1)].mean())
    return stats


# ------------------------------------------------------------------------------------------------- the library


def filled_library(cache: Path, model: str, dim: int, data: dict[str, np.ndarray], seed: int):
    """A library holding the data's image rows and vectors, built once per (model, n, dim, seed) and reused."""
    from sqlalchemy import insert

    from vlsearch.library import Library
    from vlsearch.library.embeddings import encode_vector
    from vlsearch.library.schema import Embedding, ImageRecord

    n = len(data["ids"])
    path = cache / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model)}-{n}-d{dim}-s{seed}"
    if (path / "complete").exists():
        return Library.open(path, create=False), 0.0
    if path.exists():
        import shutil

        shutil.rmtree(path)
    started = time.perf_counter()
    lib = Library.open(path)
    lib.ensure_model(model, dim)
    taken = datetime.datetime(2020, 1, 1)
    with lib.session() as s:
        for lo in range(0, n, 10_000):
            ids = range(lo + 1, min(lo + 10_000, n) + 1)
            s.execute(insert(ImageRecord.__table__), [
                {"id": i, "path": f"/synthetic/{i // 1000:04d}/{i:07d}.jpg", "sha256": f"{i:064x}",
                 "size": 2_000_000 + i, "mtime": 1.7e9 + i, "width": 4032, "height": 3024, "display_width": 4032,
                 "display_height": 3024, "orientation": 1, "format": "JPEG",
                 "taken_at": taken + datetime.timedelta(minutes=i), "status": "ok"} for i in ids])
            s.execute(insert(Embedding.__table__), [
                {"image_id": i, "model": model, "vector": encode_vector(data["vectors"][i - 1])} for i in ids])
        Library.bump_generation(s, model)
    (path / "complete").write_text(f"{n} images of {model} vectors, dimension {dim}, seed {seed}\n")
    return lib, time.perf_counter() - started


class SyntheticVectorEncoder(Encoder):
    """Runs the real model on each query, so its cost is real, then answers with `answer`, a synthetic vector."""

    def __init__(self, real: Encoder, name: str, dim: int) -> None:
        self.real = real
        self.name = name
        self.dim = dim
        self.device = real.device
        self.input_size = real.input_size
        self.answer = np.zeros(dim, dtype=np.float32)

    @property
    def preprocess(self):
        return self.real.preprocess

    def encode_image_tensors(self, batch):
        self.real.encode_image_tensors(batch)
        return np.repeat(self.answer[None], len(batch), axis=0)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.real.encode_texts(texts)
        return np.repeat(self.answer[None], len(texts), axis=0)


# ------------------------------------------------------------------------------------------------- measuring


def timed(call: Callable[[int], Any], count: int, repeats: int) -> np.ndarray:
    """ms of call(i) for i < count: each timed `repeats` times in separate passes, the fastest kept."""
    for i in range(min(3, count)):  # warm-up
        call(i)
    times = np.empty((repeats, count))
    for r in range(repeats):
        for i in range(count):
            started = time.perf_counter()
            call(i)
            times[r, i] = time.perf_counter() - started
    return times.min(axis=0) * 1e3


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "n": len(ms)}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query: the fraction of its exact top k among the ids found."""
    return np.array([len(set(f[f >= 0].tolist()) & set(t.tolist())) / truth.shape[1]
                     for f, t in zip(found, truth, strict=True)])


def ram_of(path: Path) -> int:
    """Bytes a fresh process's RSS grows by while faiss reads the index file (in this process, freed memory
    would be reused and hide it)."""
    code = ("import os, sys, faiss\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
            "before = rss()\nindex = faiss.read_index(sys.argv[1])\nprint(rss() - before)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1])


def measure_recall(index, data: dict[str, np.ndarray], truth: dict[str, tuple[np.ndarray, np.ndarray]],
                   gaps: int) -> dict[str, Any]:
    by_kind = {kind: recall_at_k(index.search(data[kind], K)[1], truth[kind][1]) for kind in ("image", "text")}
    per_gap = [float(by_kind["text"][data["gap_of"] == g].mean()) for g in range(gaps)]
    return {"image": round(float(by_kind["image"].mean()), 4), "text": round(float(by_kind["text"].mean()), 4),
            "text_by_gap": [round(r, 4) for r in per_gap], "text_worst_gap": round(min(per_gap), 4)}


def bench_kind(kind: str, lib, model: str, encoder: SyntheticVectorEncoder, data: dict[str, np.ndarray],
               truth: dict[str, tuple[np.ndarray, np.ndarray]], texts: list[str], photos: list[Image.Image],
               args: argparse.Namespace) -> dict[str, Any]:
    from vlsearch.library import VectorIndex
    from vlsearch.search import SearchEngine, SearchQuery

    n, dim = len(data["ids"]), data["vectors"].shape[1]
    started = time.perf_counter()
    index = VectorIndex.build(data["ids"], data["vectors"], dim, kind, rescore_from=lib.stored_vectors(model).lookup())
    build_s = time.perf_counter() - started
    lib.save_index(model, index, lib.require_model(model).generation)
    path = lib.index_path(model)
    row: dict[str, Any] = {"n": n, "kind": index.kind, "build_s": round(build_s, 1), "params": dict(index.params),
                           "guard": dict(index.recall), "bytes_per_vector": round(path.stat().st_size / n, 1)}
    if index.kind == "ivf" or index.kind == "ivfpq":
        row["nlist"] = int(faiss.extract_index_ivf(index.index).nlist)
    print(f"  {kind}: built in {build_s:.1f} s, {index.params}, guard {index.recall}", flush=True)

    row["ram_bytes_per_vector"] = round(ram_of(path) / n, 1)

    if index.kind == "flat":
        row["recall"] = {"image": 1.0, "text": 1.0, "text_worst_gap": 1.0, "exact": True}
    else:
        row["recall"] = measure_recall(index, data, truth, args.gaps)
        guarded = dict(index.params)
        defaults = {p: min(v, row.get("nlist", v)) if p == "nprobe" else v for p, v in DEFAULT_PARAMS[kind].items()}
        index.tune(defaults)
        row["default_params"] = defaults
        row["recall_at_defaults"] = measure_recall(index, data, truth, args.gaps)
        index.tune(guarded)
    print(f"  {kind}: recall {row['recall']}", flush=True)

    engine = SearchEngine(lib, encoder)
    count = args.latency_queries
    if index.kind == "flat" and n >= FLAT_SLOW_N:
        count = min(count, FLAT_SLOW_QUERIES)
    latency: dict[str, Any] = {}
    for query_kind in ("text", "image"):
        vectors = data[query_kind]
        latency[query_kind] = {"index": percentiles(timed(lambda i, v=vectors: index.search(v[i][None], K),
                                                          count, args.repeats))}
        if index.kind == "ivfpq":
            latency[query_kind]["faiss_candidates"] = percentiles(timed(
                lambda i, v=vectors: index.candidates(v[i][None], K), count, args.repeats))

        def search(i: int, query_kind: str = query_kind, vectors: np.ndarray = vectors) -> list:
            encoder.answer = vectors[i]
            query = (SearchQuery(text=texts[i], k=K) if query_kind == "text"
                     else SearchQuery(image=photos[i % len(photos)], k=K))
            return engine.search(query)

        latency[query_kind]["end_to_end"] = percentiles(timed(search, count, args.repeats))
        hits = [h.id for h in search(0)]
        expected = [int(i) for i in index.search(vectors[0][None], K)[1][0] if i >= 0]
        if hits != expected:
            raise RuntimeError(f"{kind}: the engine returned {hits}, the index {expected}")
    row["latency_ms"] = latency
    if index.kind == "flat":
        row["faiss_one_query_by_threads"] = threads_latency(index, data["text"], count, args.repeats)
    print(f"  {kind}: latency {latency}", flush=True)
    lib.indexes.forget(model)  # let the next kind's build have the memory
    return row


def threads_latency(index, vectors: np.ndarray, count: int, repeats: int) -> dict[str, dict[str, float]]:
    """FAISS alone, one query at a time, on one OpenMP thread and on all of them: the measurement behind
    VectorIndex searching a single query on one thread."""
    from vlsearch.library.vectors.index import omp_threads

    by_threads = {}
    for threads in sorted({1, faiss.omp_get_max_threads()}):
        with omp_threads(threads):
            by_threads[str(threads)] = percentiles(timed(lambda i: index.index.search(vectors[i][None], K), count,
                                                         repeats))
    return by_threads


def encoder_latency(encoder: Encoder, texts: list[str], photos: list[Image.Image], count: int,
                    repeats: int) -> dict[str, Any]:
    return {"model": encoder.name, "precision": getattr(encoder, "precision", "fp32"),
            "text": percentiles(timed(lambda i: encoder.encode_texts([texts[i]]), count, repeats)),
            "image": percentiles(timed(lambda i: encoder.encode_images([photos[i % len(photos)]]), count, repeats))}


# ------------------------------------------------------------------------------------------------- the report


def machine() -> dict[str, Any]:
    import torch

    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
            "faiss": faiss.__version__, "faiss_options": faiss.get_compile_options().strip(),
            "faiss_threads": faiss.omp_get_max_threads(), "numpy": np.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench query", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for query.json and query.md")
    p.add_argument("--sizes", default="10000,100000,1000000", help="library sizes (comma-separated)")
    p.add_argument("--model", default="tiny-random", help="the model that encodes the queries")
    p.add_argument("--queries", type=int, default=1000, help="queries of each kind for recall")
    p.add_argument("--latency-queries", type=int, default=200, help="queries of each kind timed one by one")
    p.add_argument("--repeats", type=int, default=2, help="timing passes; each query's fastest is kept")
    p.add_argument("--kinds", default="flat,ivf,hnsw,ivfpq")
    p.add_argument("--ivfpq-from", type=int, default=1_000_000, help="smallest size that gets an ivfpq index")
    p.add_argument("--gaps", type=int, default=4, help="gap directions the text queries are spread over")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", default="fp32,auto", help="what the --encoders compute in, a row each (auto is "
                   "bf16 on a CPU with AVX512_BF16 or AMX)")
    p.add_argument("--encoders", help="models whose encode time alone is also measured (comma-separated; '' for "
                   "none; default ViT-B-32-random, none with --quick)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-query",
                   help="where the synthetic libraries are kept between runs")
    p.add_argument("--quick", action="store_true", help="a small smoke run: 3k and 20k vectors, few queries")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.latency_queries, args.repeats = "3000,20000", 100, 20, 1
        args.ivfpq_from = 20_000
    if args.encoders is None:
        args.encoders = "" if args.quick else "ViT-B-32-random"
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from bench.api import load_bench_encoder, query_texts
    from tests.photos import picture
    from vlsearch.library.vectors.guard import GUARD_QUERIES

    started = time.perf_counter()
    loadavg_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    args.cache.mkdir(parents=True, exist_ok=True)
    real = load_bench_encoder(args.model, "cpu")
    encoder = SyntheticVectorEncoder(real, real.name, args.dim)
    stream = query_texts()
    texts = [next(stream) for _ in range(max(args.latency_queries, 3))]
    photos = [picture(seed, (1024, 768)) for seed in range(8)]
    encode = encoder_latency(real, texts, photos, args.latency_queries, args.repeats)
    sizes = []
    for n in args.size_list:
        print(f"n={n:,}", flush=True)
        size_started = time.perf_counter()
        data = make_data(n, args.queries, args.dim, args.seed, args.gaps)
        lib, fill_s = filled_library(args.cache, real.name, args.dim, data, args.seed)
        truth = {kind: faiss.knn(data[kind], data["vectors"], K, faiss.METRIC_INNER_PRODUCT)
                 for kind in ("image", "text")}
        truth = {kind: (scores, data["ids"][rows]) for kind, (scores, rows) in truth.items()}
        cosines = cosine_stats(data, truth)
        print(f"  library filled in {fill_s:.0f} s; cosines {cosines}", flush=True)
        kinds = [k for k in args.kinds.split(",") if k and (k != "ivfpq" or n >= args.ivfpq_from)]
        rows = [bench_kind(kind, lib, real.name, encoder, data, truth, texts, photos, args) for kind in kinds]
        lib.close()
        sizes.append({"n": n, "library_fill_s": round(fill_s, 1), "cosines": cosines, "kinds": rows,
                      "seconds": round(time.perf_counter() - size_started, 1)})
        del data, truth
        gc.collect()
    encoders = []
    for spec in filter(None, args.encoders.split(",")):
        for asked in args.precisions.split(","):
            other = load_bench_encoder(spec, "cpu", asked)
            if not any(e["model"] == other.name and e["precision"] == other.precision for e in encoders):
                encoders.append(encoder_latency(other, texts, photos, min(args.latency_queries, 100), args.repeats))
            del other
    total = time.perf_counter() - started
    setup = (f"{', '.join(f'{n:,}' for n in args.size_list)} images in a library (SQLite rows + float16 vectors, "
             f"dimension {args.dim}); each index kind built with `VectorIndex.build` as `vlsearch reindex --index "
             f"KIND` builds it, and queried through `SearchEngine`. IVF-PQ only from {args.ivfpq_from:,} vectors. "
             f"{args.queries:,} image and {args.queries:,} text queries for recall; {args.latency_queries} of each "
             f"timed one by one, fastest of {args.repeats} passes. Text queries spread over {args.gaps} gap "
             "directions. Data and query models: see bench/query.py's docstring (and the table below).")
    report = {"command": recorded_command("query", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "model": real.name, "dim": args.dim, "queries": args.queries, "latency_queries": args.latency_queries,
              "repeats": args.repeats, "gaps": args.gaps, "guard_queries": GUARD_QUERIES, "setup": setup,
              "mixture": MIXTURE, "text_model": {"gap": GAP_WEIGHT, "concept": CONCEPT_WEIGHT,
                                                 "noise": TEXT_NOISE_WEIGHT},
              "encode": encode, "encoders": encoders, "sizes": sizes, "total_seconds": round(total, 1),
              "loadavg_start": loadavg_start, "loadavg_end": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    print(f"total {total:.0f} s", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "query.json").write_text(json.dumps(report, indent=2) + "\n")
        write_markdown(args.out / "query.md", report)


if __name__ == "__main__":
    main()
