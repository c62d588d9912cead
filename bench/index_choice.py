"""Decide which FAISS ANN index vlsearch should switch to above ~100k vectors.

Why this exists
---------------
vlsearch keeps L2-normalised CLIP-like image embeddings (dim 512, float32,
inner-product metric) in a FAISS index wrapped in ``faiss.IndexIDMap2`` (the
FAISS ids are the image ids). Small libraries use exact ``IndexFlatIP``; large
ones need an approximate index. This script compares, against exact Flat
ground truth:

* ``IndexFlatIP`` (the exact baseline, to see where it becomes too slow),
* ``IndexIVFFlat`` (inner product, ``nlist = f * sqrt(n)``) with an nprobe sweep,
* ``IndexHNSWFlat`` (``METRIC_INNER_PRODUCT``, M=32) with an efSearch sweep,

and reports recall@10, single-query latency (p50/p99), batch throughput,
build/train time and serialized bytes per vector. For each ANN family it marks
the smallest search setting reaching recall@10 >= ``--target-recall``.

Data
----
Uniform random vectors have no structure and make every ANN index look bad, so
by default the script draws a seeded synthetic set that mimics real embeddings:
a Gaussian mixture of ``--clusters`` centres with log-normal cluster sizes,
within-cluster noise concentrated in a low-rank subspace (decaying spectrum)
plus a little isotropic noise, and a shared mean direction (CLIP embeddings are
anisotropic: random pairs have cosine ~0.4). Points are L2-normalised. Queries
are fresh draws from the same distribution and are not in the database. The
smaller sizes are prefixes of the largest database (i.i.d. draws, so each prefix
is itself a valid sample). Real embeddings can be used instead with ``--npy``.

Example::

    python -m bench index-choice --sizes 100000,300000 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.index_choice_report import write_markdown
from bench.record import recorded_command

K = 10


@dataclass
class Row:
    """One benchmarked configuration (one index, one search setting)."""

    n: int
    index: str
    build: str
    search: str
    recall_at_10: float
    single_p50_ms: float
    single_p99_ms: float
    single_mean_ms: float
    batch_ms_per_query: float
    batch_qps: float
    train_s: float
    add_s: float
    serialized_bytes: int
    bytes_per_vector: float
    params: dict[str, Any] = field(default_factory=dict)
    chosen: bool = False


# --------------------------------------------------------------------------- data


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_mixture(
    n_db: int,
    n_query: int,
    dim: int,
    *,
    seed: int,
    n_clusters: int,
    noise: float,
    iso_noise: float,
    rank: int,
    mean_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a seeded, CLIP-like Gaussian mixture; returns (database, queries)."""
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    weights /= weights.sum()
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = basis[:rank].astype(np.float32)  # rank x dim, orthonormal rows
    spectrum = np.arange(1, rank + 1, dtype=np.float32) ** -0.5
    spectrum /= np.sqrt(np.sum(spectrum**2))
    mean = rng.standard_normal(dim).astype(np.float32)
    mean *= mean_scale / np.linalg.norm(mean)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, dim), dtype=np.float32)
        for lo in range(0, n, 50_000):
            m = min(50_000, n - lo)
            label = rng.choice(n_clusters, size=m, p=weights)
            z = rng.standard_normal((m, rank), dtype=np.float32) * spectrum
            iso = rng.standard_normal((m, dim), dtype=np.float32)
            out[lo : lo + m] = centres[label] + noise * (z @ basis) + (iso_noise / math.sqrt(dim)) * iso + mean
        return _normalise(out)

    return draw(n_db), draw(n_query)


def load_npy(path: Path, n_db: int, n_query: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Load real embeddings; a random held-out subset becomes the queries."""
    x = np.load(path).astype(np.float32, copy=False)
    perm = np.random.default_rng(seed).permutation(len(x))
    if len(x) < n_query + 1:
        raise SystemExit(f"{path}: need more than {n_query} vectors, got {len(x)}")
    xq = _normalise(x[perm[:n_query]].copy())
    xb = _normalise(x[perm[n_query : n_query + n_db]].copy())
    return xb, xq


# ----------------------------------------------------------------------- measuring


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def time_batch(index: faiss.Index, xq: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Search all queries in one call; returns (best seconds over repeats, ids)."""
    index.search(xq[:16], K)  # warm-up
    times = []
    ids = np.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = index.search(xq, K)
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), ids


def time_single(index: faiss.Index, xq: np.ndarray, n: int, repeats: int) -> np.ndarray:
    """Latency in ms of ``n`` one-query search calls.

    Each query is timed ``repeats`` times (in separate passes) and its fastest
    time is kept: on a small shared machine, other processes otherwise add
    scheduler-quantum sized (4-8 ms) stalls. The percentiles therefore describe
    query-to-query variation on an otherwise idle machine.
    """
    for i in range(min(10, len(xq))):  # warm-up
        index.search(xq[i : i + 1], K)
    lat = np.empty((repeats, n))
    for r in range(repeats):
        for i in range(n):
            q = xq[i % len(xq)][None, :]
            t0 = time.perf_counter()
            index.search(q, K)
            lat[r, i] = time.perf_counter() - t0
    return np.min(lat, axis=0) * 1e3


def serialized_size(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


# ------------------------------------------------------------------------ indexes


@dataclass
class Built:
    name: str
    build: str
    index: faiss.Index  # IndexIDMap2 wrapper that is searched
    train_s: float
    add_s: float
    params: dict[str, Any]
    sweep_name: str = ""
    sweep: list[int] = field(default_factory=list)
    set_param: Callable[[int], None] | None = None


def build_flat(xb: np.ndarray, ids: np.ndarray) -> Built:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(xb.shape[1]))
    t0 = time.perf_counter()
    index.add_with_ids(xb, ids)
    return Built("Flat", "exact", index, 0.0, time.perf_counter() - t0, {})


def build_ivf(
    xb: np.ndarray,
    ids: np.ndarray,
    factor: float,
    train_per_list: int,
    nprobes: list[int],
) -> Built:
    n, dim = xb.shape
    nlist = round(factor * math.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, train_per_list * nlist)
    sample = np.random.default_rng(1).choice(n, size=n_train, replace=False)
    t0 = time.perf_counter()
    ivf.train(xb[np.sort(sample)])
    train_s = time.perf_counter() - t0
    index = faiss.IndexIDMap2(ivf)
    t0 = time.perf_counter()
    index.add_with_ids(xb, ids)
    add_s = time.perf_counter() - t0

    def set_nprobe(v: int) -> None:
        ivf.nprobe = v

    return Built(
        "IVFFlat",
        f"nlist={nlist} ({factor:g}*sqrt(n)), train on {n_train}",
        index,
        train_s,
        add_s,
        {"nlist": nlist, "nlist_factor": factor, "n_train": n_train},
        "nprobe",
        [p for p in nprobes if p <= nlist],
        set_nprobe,
    )


def build_hnsw(xb: np.ndarray, ids: np.ndarray, m: int, ef_construction: int, efs: list[int]) -> Built:
    hnsw = faiss.IndexHNSWFlat(xb.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = ef_construction
    index = faiss.IndexIDMap2(hnsw)
    t0 = time.perf_counter()
    index.add_with_ids(xb, ids)
    add_s = time.perf_counter() - t0

    def set_ef(v: int) -> None:
        hnsw.hnsw.efSearch = v

    return Built(
        "HNSWFlat",
        f"M={m}, efC={ef_construction}",
        index,
        0.0,
        add_s,
        {"M": m, "efConstruction": ef_construction},
        "efSearch",
        efs,
        set_ef,
    )


def evaluate(
    built: Built, xq: np.ndarray, truth: np.ndarray, n_single: int, repeats: int, target: float
) -> Iterator[Row]:
    """Yield one Row per search setting; flags the smallest one reaching ``target``."""
    n = built.index.ntotal
    size = serialized_size(built.index)
    settings: list[int | None] = list(built.sweep) if built.sweep else [None]
    chosen_done = False
    for value in settings:
        params = dict(built.params)
        search = "exact"
        if value is not None and built.set_param is not None:
            built.set_param(value)
            params[built.sweep_name] = value
            search = f"{built.sweep_name}={value}"
        batch_s, found = time_batch(built.index, xq, repeats)
        lat = time_single(built.index, xq, n_single, repeats)
        rec = recall_at_k(found, truth)
        chosen = value is not None and not chosen_done and rec >= target
        chosen_done = chosen_done or chosen
        yield Row(
            n=n,
            index=built.name,
            build=built.build,
            search=search,
            recall_at_10=rec,
            single_p50_ms=float(np.percentile(lat, 50)),
            single_p99_ms=float(np.percentile(lat, 99)),
            single_mean_ms=float(lat.mean()),
            batch_ms_per_query=batch_s * 1e3 / len(xq),
            batch_qps=len(xq) / batch_s,
            train_s=built.train_s,
            add_s=built.add_s,
            serialized_bytes=size,
            bytes_per_vector=size / n,
            params=params,
            chosen=chosen,
        )


# ------------------------------------------------------------------------- output


TABLE_HEAD = (
    "| n | index | build | search | recall@10 | p50 ms | p99 ms | batch ms/q "
    "| batch QPS | train s | add s | bytes/vec | pick |\n"
    "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|\n"
)


def markdown_row(r: Row) -> str:
    cells = [
        f"{r.n:,}",
        r.index,
        r.build,
        r.search,
        f"{r.recall_at_10:.3f}",
        f"{r.single_p50_ms:.3f}",
        f"{r.single_p99_ms:.3f}",
        f"{r.batch_ms_per_query:.4f}",
        f"{r.batch_qps:,.0f}",
        f"{r.train_s:.1f}",
        f"{r.add_s:.1f}",
        f"{r.bytes_per_vector:,.0f}",
        "**yes**" if r.chosen else "",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[Row]) -> str:
    return TABLE_HEAD + "\n".join(markdown_row(r) for r in rows)


def progress_line(r: Row) -> str:
    parts = [
        f"n={r.n} {r.index} [{r.build}] {r.search}:",
        f"recall@10={r.recall_at_10:.3f}",
        f"p50={r.single_p50_ms:.3f}ms p99={r.single_p99_ms:.3f}ms",
        f"batch={r.batch_ms_per_query:.4f}ms/q",
        f"build={r.train_s + r.add_s:.1f}s {r.bytes_per_vector:.0f}B/vec",
    ]
    return " ".join(parts) + (" <- pick" if r.chosen else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench index-choice", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int_list, default=[100_000, 300_000], help="database sizes")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000, help="queries used for recall and batch")
    p.add_argument("--latency-queries", type=int, default=200, help="one-query calls timed")
    p.add_argument("--repeats", type=int, default=3, help="timing passes; the fastest is kept")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--clusters", type=int, default=2000, help="mixture components")
    p.add_argument("--noise", type=float, default=0.7, help="low-rank within-cluster noise")
    p.add_argument("--iso-noise", type=float, default=0.3, help="isotropic noise norm")
    p.add_argument("--rank", type=int, default=64, help="rank of the within-cluster noise")
    p.add_argument("--mean-scale", type=float, default=1.0, help="shared mean direction norm")
    p.add_argument("--npy", type=Path, help="use real (N, dim) embeddings instead of synthetic")
    p.add_argument("--ivf-nlist-factors", type=float_list, default=[4.0, 8.0], help="nlist = f*sqrt(n)")
    p.add_argument("--ivf-train-per-list", type=int, default=64, help="k-means sample = this*nlist")
    p.add_argument("--nprobe", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-efc", type=int_list, default=[40, 80], help="efConstruction values")
    p.add_argument("--ef-search", type=int_list, default=[16, 32, 64, 96, 128, 192, 256])
    p.add_argument("--skip", default="", help="comma list of families to skip: flat,ivf,hnsw")
    p.add_argument("--out", type=Path, help="directory for index_choice.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    skip = set(args.skip.split(","))
    n_max = max(args.sizes)
    t_start = time.perf_counter()
    load_before = os.getloadavg()

    if args.npy is not None:
        xb_all, xq = load_npy(args.npy, n_max, args.queries, args.seed)
        args.sizes = [s for s in args.sizes if s <= len(xb_all)] or [len(xb_all)]
        data_desc = f"real embeddings from {args.npy}"
    else:
        xb_all, xq = make_mixture(
            n_max,
            args.queries,
            args.dim,
            seed=args.seed,
            n_clusters=args.clusters,
            noise=args.noise,
            iso_noise=args.iso_noise,
            rank=args.rank,
            mean_scale=args.mean_scale,
        )
        data_desc = "synthetic gaussian mixture"

    rows: list[Row] = []
    data_stats: dict[str, dict[str, float]] = {}
    for n in sorted(args.sizes):
        xb = xb_all[:n]
        ids = np.arange(1, n + 1, dtype=np.int64)  # image ids, deliberately != row numbers
        truth_index = faiss.IndexFlatIP(xb.shape[1])
        truth_index.add(xb)
        sims, pos = truth_index.search(xq, K)
        truth = ids[pos]
        del truth_index
        data_stats[str(n)] = {
            "mean_cos_nn1": float(sims[:, 0].mean()),
            "mean_cos_nn10": float(sims[:, K - 1].mean()),
            "mean_cos_random_pair": float(np.mean(np.sum(xq * xb[: len(xq)], axis=1))),
        }

        builders: list[Callable[[], Built]] = []
        if "flat" not in skip:
            builders.append(partial(build_flat, xb, ids))
        if "ivf" not in skip:
            builders += [
                partial(build_ivf, xb, ids, f, args.ivf_train_per_list, args.nprobe) for f in args.ivf_nlist_factors
            ]
        if "hnsw" not in skip:
            builders += [partial(build_hnsw, xb, ids, args.hnsw_m, efc, args.ef_search) for efc in args.hnsw_efc]
        for make in builders:
            built = make()
            for row in evaluate(built, xq, truth, args.latency_queries, args.repeats, args.target_recall):
                rows.append(row)
                print(progress_line(row), flush=True)
            del built

    total_s = time.perf_counter() - t_start
    table = markdown_table(rows)
    print()
    print(table)
    print(f"\ntotal {total_s:.0f}s")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {
            "faiss_version": faiss.__version__,
            "faiss_compile_options": faiss.get_compile_options(),
            "numpy_version": np.__version__,
            "python": platform.python_version(),
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "omp_threads": args.threads,
            "data": data_desc,
            "data_stats": data_stats,
            "total_seconds": round(total_s, 1),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        command = recorded_command("index-choice", argv)
        payload = {"command": command, "meta": meta, "rows": [asdict(r) for r in rows]}
        (args.out / "index_choice.json").write_text(json.dumps(payload, indent=2) + "\n")
        write_markdown(args.out / "index_choice.md", payload)


if __name__ == "__main__":
    main()
