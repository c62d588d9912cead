"""Large libraries on one CPU server: build and query 1M and 10M vectors with the budgeted index builder.

Why: `vlsearch reindex --memory 4GB` must build an index for a library whose vectors do not fit in RAM as float32
(10M x 512 x 4 bytes = 20 GB, on a 24 GB machine), answer in milliseconds, and still find a text query's top 10.
This measures what it builds (kind, codes, lists), how long the build takes (training on a sample, adding in
chunks, the recall guard), its bytes per vector on disk and in RAM, one query's p50/p99 latency, and recall@10
against exact search for image and text-like queries.

The data
--------
The CLIP-like Gaussian mixture of bench/query.py (bench/index_choice.py's make_mixture with bench/query.py's
MIXTURE: 2,000 clusters, low-rank noise, a shared mean direction), drawn chunk by chunk with a seed per chunk so
that 10M vectors are never in memory at once; the same mixture parameters as make_mixture for the same seed, but
not the same draws. The vectors are stored as float16 (as a library stores them) in a .npy file under --cache,
made once and reused. Image queries are fresh draws from the mixture; text queries are bench/query.py's
text_queries (placed in the "modality gap": best match cosine ~0.3).

Exact ground truth: brute force over the float16 file, a chunk at a time. The rescoring source: a library rescores
IVF-PQ candidates with their float16 vectors read from SQLite; here the memory-mapped float16 .npy file stands in
for SQLite (a page-cache read rather than a SQL query, so the rescoring cost here is a lower bound: bench/query.py
measures ~2.5 ms for SQLite at 1M vectors).

Timing: single queries on one thread (as VectorIndex.search runs one query), each the fastest of --repeats passes;
"index" is the FAISS search alone (for IVF-PQ: its candidates), "rescored" adds reading and rescoring their exact
vectors. RAM/vector: how much a fresh process's RSS grows while faiss reads the whole file, / n; "mapped" the same
with the file memory-mapped (the lists stay in the page cache, outside RSS until touched).

Variants (--index, --quantizer, --opq) write their own file, named by result_name: scale-opq.json for --opq.

    python -m bench scale --sizes 1000000 --memory 4GB --out bench/results
    nohup flock /tmp/vlsearch-bench.lock python -m bench scale --sizes 10000000 --memory 4GB --out bench/results &
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.index_choice import _normalise, cpu_model
from bench.query import MIXTURE, percentiles, recall_at_k, text_queries, timed
from bench.record import recorded_command
from vlsearch.library.vectors import VectorIndex, exact_search, format_bytes, parse_size

K = 10
QUERY_STREAM = 2**32 - 1  # the random stream queries are drawn from; chunks use 0, 1, 2, ...
log = logging.getLogger("bench.scale")


# ------------------------------------------------------------------------------------------------- the data


class Mixture:
    """bench/index_choice.py's CLIP-like mixture, drawn chunk by chunk: chunk c comes from its own seed, so any
    chunk can be drawn alone and a run is reproducible without holding the whole set."""

    def __init__(self, dim: int, seed: int, n_clusters: int, noise: float, iso_noise: float, rank: int,
                 mean_scale: float) -> None:
        rng = np.random.default_rng(seed)  # the same parameters make_mixture draws for this seed
        rank = min(rank, dim)  # a tiny dimension (the smoke test) caps the noise's rank
        self.dim, self.seed, self.noise, self.iso_noise = dim, seed, noise, iso_noise
        self.centres = _normalise(rng.standard_normal((n_clusters, dim), dtype=np.float32))
        weights = rng.lognormal(0.0, 1.0, n_clusters)
        self.weights = weights / weights.sum()
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.basis = basis[:rank].astype(np.float32)
        spectrum = np.arange(1, rank + 1, dtype=np.float32) ** -0.5
        self.spectrum = spectrum / np.sqrt(np.sum(spectrum**2))
        mean = rng.standard_normal(dim).astype(np.float32)
        self.mean = mean * (mean_scale / np.linalg.norm(mean))

    def draw(self, n: int, stream: int) -> np.ndarray:
        """n unit vectors from random stream `stream` (chunk number; queries use their own streams)."""
        rng = np.random.default_rng([self.seed, stream])
        label = rng.choice(len(self.centres), size=n, p=self.weights)
        z = rng.standard_normal((n, len(self.basis)), dtype=np.float32) * self.spectrum
        iso = rng.standard_normal((n, self.dim), dtype=np.float32)
        out = self.centres[label] + self.noise * (z @ self.basis) + (self.iso_noise / np.sqrt(self.dim)) * iso
        return _normalise(out + self.mean)


def vector_file(cache: Path, n: int, dim: int, seed: int, chunk: int) -> tuple[Path, float]:
    """The float16 vectors of the library, made once per (n, dim, seed) and kept under `cache`; (path, seconds
    spent making it now, 0 when cached)."""
    path = cache / f"mixture-n{n}-d{dim}-s{seed}.f16.npy"
    done = path.with_suffix(".complete")
    if done.exists():
        return path, 0.0
    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    mixture = Mixture(dim, seed, **MIXTURE)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for c, lo in enumerate(range(0, n, chunk)):
        out[lo : lo + chunk] = mixture.draw(min(chunk, n - lo), c)
        if c % 10 == 0:
            print(f"  generated {min(lo + chunk, n):,} / {n:,} vectors", flush=True)
    out.flush()
    del out
    done.touch()
    return path, time.perf_counter() - started


def chunks_of(vectors: np.ndarray, chunk: int):
    """A VectorChunks over the float16 rows: ids are row numbers + 1, as image ids start at 1."""

    def passes() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for lo in range(0, len(vectors), chunk):
            block = np.asarray(vectors[lo : lo + chunk], dtype=np.float32)
            yield np.arange(lo + 1, lo + 1 + len(block), dtype=np.int64), block

    return passes


def lookup_of(vectors: np.ndarray):
    """The rescoring source: ids -> their float16 rows, as float32 (a stand-in for the library's SQLite read)."""

    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[(ids >= 1) & (ids <= len(vectors))]
        return ids, np.asarray(vectors[ids - 1], dtype=np.float32)

    return lookup


def queries_for(vectors: np.ndarray, dim: int, seed: int, count: int, gaps: int) -> dict[str, np.ndarray]:
    mixture = Mixture(dim, seed, **MIXTURE)
    fresh = mixture.draw(2 * count, QUERY_STREAM)
    image_mean = np.asarray(vectors[: min(len(vectors), 100_000)], dtype=np.float32).mean(axis=0)
    texts, gap_of = text_queries(fresh[count:], image_mean, gaps, np.random.default_rng(seed + 1))
    return {"image": fresh[:count], "text": texts, "gap_of": gap_of}


# ------------------------------------------------------------------------------------------------- measuring


def rss_growth(path: Path, mmap: bool) -> int:
    """Bytes a fresh process's RSS grows by while faiss reads the index file (whole, or memory-mapped)."""
    flags = "faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY" if mmap else "0"
    code = ("import os, sys, faiss\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
            f"before = rss()\nindex = faiss.read_index(sys.argv[1], {flags})\nprint(rss() - before)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1])


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"n={n:,}", flush=True)
    path, generate_s = vector_file(args.cache, n, args.dim, args.seed, args.chunk)
    vectors = np.load(path, mmap_mode="r")
    chunks = chunks_of(vectors, args.chunk)
    data = queries_for(vectors, args.dim, args.seed, args.queries, args.gaps)
    started = time.perf_counter()
    truth = {kind: exact_search(data[kind], chunks, K) for kind in ("image", "text")}
    truth_s = time.perf_counter() - started
    print(f"  data {generate_s:.0f} s (0: cached), exact top {K} of {2 * args.queries} queries {truth_s:.0f} s",
          flush=True)

    lookup = lookup_of(vectors)
    started = time.perf_counter()
    index = VectorIndex.build_from_chunks(chunks, n, args.dim, args.index, rescore_from=lookup,
                                          memory_budget=args.memory_bytes, latency_target_ms=args.latency_ms,
                                          opq=args.opq, quantizer=args.quantizer)
    build_s = time.perf_counter() - started
    info = dict(index.build_info)
    print(f"  built {info['factory']} in {build_s:.0f} s (train {info['train_s']:.0f}, add {info['add_s']:.0f}); "
          f"{index.params}, guard recall {index.recall}", flush=True)
    index_path = args.cache / f"index-n{n}-d{args.dim}-s{args.seed}.faiss"
    started = time.perf_counter()
    index.save(index_path, index.meta("bench", 0))
    save_s = time.perf_counter() - started
    file_bytes = index_path.stat().st_size
    ram = rss_growth(index_path, mmap=False)
    mapped_ram = rss_growth(index_path, mmap=True) if index.kind in ("ivf", "ivfpq") else None
    del index
    index, _ = VectorIndex.load(index_path, args.dim, rescore_from=lookup, mmap=args.mmap)

    found = {kind: index.search(data[kind], K)[1] for kind in ("image", "text")}
    recall = {kind: round(float(recall_at_k(found[kind], truth[kind][1]).mean()), 4) for kind in found}
    per_gap = recall_at_k(found["text"], truth["text"][1])
    recall["text_worst_gap"] = round(min(float(per_gap[data["gap_of"] == g].mean()) for g in range(args.gaps)), 4)
    if index.kind == "ivfpq":  # the codes' own top 10, without exact rescoring
        raw = {kind: index.candidates(data[kind], K)[1][:, :K] for kind in ("image", "text")}
        recall["codes_only"] = {kind: round(float(recall_at_k(raw[kind], truth[kind][1]).mean()), 4) for kind in raw}

    latency: dict[str, Any] = {}
    count = min(args.latency_queries, args.queries)
    for kind in ("image", "text"):
        q = data[kind]
        latency[kind] = {
            "index": percentiles(timed(lambda i, q=q: index.candidates(q[i : i + 1], K), count, args.repeats)),
            "rescored": percentiles(timed(lambda i, q=q: index.search(q[i : i + 1], K), count, args.repeats)),
        }
    print(f"  recall {recall}; text p50 {latency['text']['rescored']['p50']} ms; file {format_bytes(file_bytes)}",
          flush=True)
    return {"n": n, "measured": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "dim": args.dim,
            "kind": index.kind, "factory": info["factory"], "params": index.params,
            "guard": index.recall, "build": info, "build_s": round(build_s, 1), "save_s": round(save_s, 1),
            "generate_s": round(generate_s, 1), "truth_s": round(truth_s, 1),
            "file_bytes": file_bytes, "bytes_per_vector": round(file_bytes / n, 1),
            "ram_bytes_per_vector": round(ram / n, 1),
            "mapped_ram_bytes_per_vector": None if mapped_ram is None else round(mapped_ram / n, 1),
            "estimate_error": round(file_bytes / info["estimated_bytes"] - 1, 4), "mmapped_for_queries": index.mmapped,
            "recall": recall, "latency_ms": latency}


# ------------------------------------------------------------------------------------------------- the report


def machine() -> dict[str, Any]:
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
            "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "numpy": np.__version__}


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    lines = [
        "# Scale: budgeted FAISS indexes at 1M and 10M vectors on one CPU server", "",
        f"Command: `{report['command']}` (raw numbers: `{path.stem}.json`). Measured {report['date']}, load average "
        f"{report['loadavg_start']} before, {report['loadavg_end']} after.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU. faiss-cpu {m['faiss']} "
        f"({m['faiss_threads']} OpenMP threads), numpy {m['numpy']}.", "",
        f"Setup: {report['setup']}", "",
        "| n | budget | built (factory) | search setting | build s (train / add / guard) | bytes/vector file "
        "(RAM, mapped) | recall@10 image / text (codes only) | p50 / p99 ms text, index | p50 / p99 ms text, "
        "rescored | p50 ms image, rescored |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["sizes"]:
        b, rec, lat = r["build"], r["recall"], r["latency_ms"]
        guard_s = b["seconds"] - b["train_s"] - b["add_s"]
        codes = rec.get("codes_only")
        codes_text = f" ({codes['image']:.3f} / {codes['text']:.3f})" if codes else ""
        mapped = f", {r['mapped_ram_bytes_per_vector']:,.0f}" if r["mapped_ram_bytes_per_vector"] is not None else ""
        budget = format_bytes(b["memory_budget"]) if b.get("memory_budget") else "none"
        setting = ", ".join(f"{k} {v}" for k, v in r["params"].items()) or "exact"
        lines.append(
            f"| {r['n']:,} | {budget} | {r['kind']} (`{r['factory']}`) | {setting} | {r['build_s']:,.0f} "
            f"({b['train_s']:,.0f} / {b['add_s']:,.0f} / {guard_s:,.0f}) | {r['bytes_per_vector']:,.0f} "
            f"({r['ram_bytes_per_vector']:,.0f}{mapped}) | {rec['image']:.3f} / {rec['text']:.3f}{codes_text} | "
            f"{lat['text']['index']['p50']:.2f} / {lat['text']['index']['p99']:.2f} | "
            f"{lat['text']['rescored']['p50']:.2f} / {lat['text']['rescored']['p99']:.2f} | "
            f"{lat['image']['rescored']['p50']:.2f} |")
    lines += ["", "Per size: the guard's own estimate (stored / text-like probes), the estimated against the real "
              "file size, and the time outside the build:", ""]
    for r in report["sizes"]:
        b = r["build"]
        lines.append(
            f"- {r['n']:,} (measured {r.get('measured')}): guard recall {r['guard'].get('stored')} / "
            f"{r['guard'].get('text_like')}, nlist "
            f"{b.get('nlist')}, {b.get('m')}-byte codes, {b.get('train_points', 0):,} training points, quantizer "
            f"{b.get('quantizer') or '-'}; estimated {format_bytes(b['estimated_bytes'])}, file "
            f"{format_bytes(r['file_bytes'])} ({100 * r['estimate_error']:+.2f} %); p50 at build "
            f"{b.get('p50_ms')} ms{'; ' + b['conflict'] if b.get('conflict') else ''}; worst text gap direction "
            f"{r['recall']['text_worst_gap']:.3f}; data made in {r['generate_s']:,.0f} s (0: cached), exact "
            f"search for the truth {r['truth_s']:,.0f} s, saving {r['save_s']:,.0f} s.")
    path.write_text("\n".join(lines) + "\n")


def result_name(args: argparse.Namespace) -> str:
    """scale, scale-opq, scale-ivfpq-hnsw-quantizer...: one result file per way of building, side by side in --out,
    because a run keeps the rows of the sizes it did not measure from the file it writes."""
    parts = [args.index] if args.index != "auto" else []
    parts += [f"{args.quantizer}-quantizer"] if args.quantizer != "flat" else []
    parts += ["opq"] if args.opq else []
    return "-".join(["scale", *parts])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for scale.json and scale.md (see result_name for variants)")
    p.add_argument("--sizes", default="1000000", help="library sizes (comma-separated)")
    p.add_argument("--memory", default="4GB", help="the memory budget of every index, as for vlsearch reindex")
    p.add_argument("--latency-ms", type=float, help="the latency target handed to the builder")
    p.add_argument("--index", default="auto", help="auto|flat|ivf|ivfpq|hnsw, as for vlsearch reindex")
    p.add_argument("--quantizer", default="flat", help="flat|hnsw: the IVF coarse quantizer, as for vlsearch reindex")
    p.add_argument("--opq", action="store_true", help="an OPQ rotation before the PQ codes")
    p.add_argument("--mmap", action="store_true", default=None, help="query the index memory-mapped")
    p.add_argument("--queries", type=int, default=200, help="image and text queries each, for recall")
    p.add_argument("--latency-queries", type=int, default=200, help="of those, timed one by one")
    p.add_argument("--repeats", type=int, default=2, help="timing passes; each query's fastest is kept")
    p.add_argument("--gaps", type=int, default=4, help="gap directions the text queries are spread over")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100_000, help="vectors generated, read and added at a time")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-scale",
                   help="where the float16 vectors and the indexes are kept (10M x 512: 10 GB)")
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    args.memory_bytes = parse_size(args.memory) if args.memory else None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    started = time.perf_counter()
    loadavg_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    sizes = [bench_size(n, args) for n in args.size_list]
    asked = "" if args.quantizer == "flat" else f" --quantizer {args.quantizer}"
    asked += " --opq" if args.opq else ""
    setup = (f"synthetic CLIP-like float16 vectors, dimension {args.dim}, built with "
             f"`VectorIndex.build_from_chunks` (what `vlsearch reindex --index {args.index} --memory {args.memory}"
             f"{asked}` runs) from {args.chunk:,}-vector chunks; {args.queries} image and {args.queries} text "
             f"queries for recall@{K} against exact search, {min(args.latency_queries, args.queries)} of each timed "
             f"one at a time on one thread, fastest of {args.repeats} passes; rescoring reads a memory-mapped "
             "float16 .npy file standing in for SQLite (see bench/scale.py).")
    out = args.out
    report = {"command": recorded_command("scale", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "setup": setup, "mixture": MIXTURE, "sizes": sizes, "total_seconds": round(time.perf_counter() - started),
              "loadavg_start": loadavg_start, "loadavg_end": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        previous = out / f"{result_name(args)}.json"
        if previous.exists():  # a 10M run after a 1M run keeps the 1M row, so the table has both
            old = json.loads(previous.read_text())
            kept = [{"measured": old.get("date"), **r} for r in old.get("sizes", []) if r["n"] not in args.size_list]
            report["sizes"] = sorted(kept + sizes, key=lambda r: r["n"])
            if kept:  # the commands that made the rows, in order
                report["command"] = f"{old['command']}; then {report['command']}"
        previous.write_text(json.dumps(report, indent=2) + "\n")
        write_markdown(previous.with_suffix(".md"), report)
    print(f"total {report['total_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
