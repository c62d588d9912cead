"""One entry point for every benchmark: `python -m bench WHICH [options]` (or `make bench` for all of them).

Each writes WHICH.json (raw numbers, machine, command) and WHICH.md (tables) into --out (bench/results by default);
BENCHMARKS.md reads them. `python -m bench WHICH --help` lists a benchmark's options.

    indexing      end-to-end indexing images/s against the bare model, per model, with vector fidelity
    captioning    captions/s of BLIP-base, batch sizes and beams swept, against bare generate
    query         text and image search latency and recall at 10k/100k/1M vectors per FAISS index kind
    api           HTTP requests/s and p50/p99 at 1/8/32 clients, micro-batching on and off
    soak          32 clients searching while index jobs add and deletes remove images: errors, torn reads, RSS
    index-choice  the FAISS study behind the Flat/IVF choice (recall, latency, memory)
    scale         budgeted IVF-PQ indexes at 1M and 10M vectors: build time, bytes/vector, latency, recall
    quantizer     a large IVF index's coarse quantizer, flat against HNSW: recall and latency per nprobe
    distributed   indexing on a local Ray instance against a local run; shard size and the merge rate into SQLite
    all           every one of them in turn, with their defaults
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = {"indexing": "bench.indexing", "captioning": "bench.captioning", "query": "bench.query",
           "api": "bench.api", "soak": "bench.soak", "index-choice": "bench.index_choice", "scale": "bench.scale",
           "quantizer": "bench.quantizer", "distributed": "bench.distributed"}
# index-choice, scale (hours at 10M) and quantizer run on their own
ALL = ("indexing", "captioning", "query", "api", "soak", "distributed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    which, rest = argv[0], argv[1:]
    if which == "all":
        out = rest[1] if len(rest) == 2 and rest[0] == "--out" else "bench/results" if not rest else None
        if out is None:
            print("`all` takes only --out DIR; run one benchmark to give it options", file=sys.stderr)
            return 2
        rest = ["--out", out]
        for name in ALL:
            started = time.perf_counter()
            print(f"== {name}", flush=True)
            importlib.import_module(BENCHES[name]).main(rest)
            print(f"== {name} took {time.perf_counter() - started:.0f} s", flush=True)
        return 0
    if which not in BENCHES:
        print(f"unknown benchmark {which!r}: choose one of {', '.join([*BENCHES, 'all'])}", file=sys.stderr)
        return 2
    if "--out" not in rest and not any(a in ("-h", "--help") for a in rest):
        rest = [*rest, "--out", "bench/results"]
    importlib.import_module(BENCHES[which]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
