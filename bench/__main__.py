"""One entry point for every benchmark: `python -m bench WHICH [options]` (or `make bench` for all of them).

Each writes WHICH.json (raw numbers, machine, command) and WHICH.md (tables) into --out (bench/results by default);
BENCHMARKS.md reads them. `python -m bench WHICH --help` lists a benchmark's options. Each module's
`parse_args(argv)` is both what its main runs on and what `check_command` replays a recorded command through, so a
result file whose command no longer parses is found by the tests, not by whoever tries to regenerate it.

    indexing      end-to-end indexing images/s against the bare model, per model, with vector fidelity
    captioning    captions/s of BLIP-base, batch sizes and beams swept, against bare generate
    query         text and image search latency and recall at 10k/100k/1M vectors per FAISS index kind
    products      grouped product search with conditions at 100k products x 3 images; catalogue import rows/s
    tags          tagging 1M images from their stored vectors with the default vocabulary: images/s
    duplicates    duplicate groups over 1M images: images/s, probe depth; the thresholds on copies of real photos
    writer        the SQLite writer alone: rows/s of new images (rows, vectors, thumbnails) per batch size
    ask           "ask" without a VQA/ITM model on the sample photos: precision and recall of its similarity cut
    api           HTTP requests/s and p50/p99 at 1/8/32 clients, micro-batching on and off
    soak          32 clients searching while index jobs add and deletes remove images: errors, torn reads, RSS
    index-choice  the FAISS study behind the Flat/IVF choice (recall, latency, memory)
    scale         budgeted IVF-PQ indexes at 1M and 10M vectors: build time, bytes/vector, latency, recall
    quantizer     a large IVF index's coarse quantizer, flat against HNSW: recall and latency per nprobe
    distributed   indexing on a local Ray instance against a local run; shard size and the merge rate into SQLite
    precision     CLIP on the CPU in fp32, bf16 autocast, bf16 weights and int8: speed and fidelity of each
    peer          indexing side by side with clip-retrieval 2.45.0 (its own venv) on the same photos, same run
    gpu-serve     for a GPU machine: tests with CUDA visible, fp16 text encoders, exact GPU search, api, captioning
    all           every one of them in turn, with their defaults
"""

from __future__ import annotations

import contextlib
import importlib
import io
import shlex
import sys
import time
from argparse import Namespace
from pathlib import Path

from bench.record import PREFIX

BENCHES = {"indexing": "bench.indexing", "captioning": "bench.captioning", "query": "bench.query",
           "api": "bench.api", "soak": "bench.soak", "index-choice": "bench.index_choice", "scale": "bench.scale",
           "quantizer": "bench.quantizer", "distributed": "bench.distributed", "gpu-serve": "bench.gpu_serve",
           "peer": "bench.peer", "precision": "bench.precision",
           "products": "bench.products", "tags": "bench.tags", "duplicates": "bench.duplicates",
           "writer": "bench.writer", "ask": "bench.ask"}
# index-choice, scale (hours at 10M), quantizer, peer (installs clip-retrieval) and gpu-serve (a GPU machine's) run on
# their own
GPU_ONLY = ("gpu-serve",)  # published only from a GPU machine
ALL = ("indexing", "captioning", "query", "products", "tags", "duplicates", "writer", "ask", "api", "soak",
       "distributed", "precision")
RESULTS = Path("bench/results")


def check_command(command: str) -> None:
    """Raise ValueError saying what is wrong unless `command` is one this code would write into bench/results.

    A published figure is only reproducible if its recorded command still runs: hand-edited notes, an older entry
    point or an option since renamed all fail here. scale keeps an earlier run's rows as "CMD1; then CMD2"."""
    for part in command.split("; then "):
        try:
            words = shlex.split(part)
        except ValueError as exc:
            raise ValueError(f"{part!r}: {exc}") from None
        if tuple(words[:3]) != PREFIX or len(words) < 4:
            raise ValueError(f"{part!r} does not start with `python -m bench WHICH`")
        which = words[3]
        if which not in BENCHES:
            raise ValueError(f"{part!r}: unknown benchmark {which!r}: choose one of {', '.join(BENCHES)}")
        args = _parse(which, words[4:], part)
        if args.out is not None and Path(args.out) != RESULTS:
            raise ValueError(f"{part!r} writes into {args.out}, not {RESULTS}: a file in {RESULTS} must have been "
                             "written there, not copied")


def _parse(which: str, argv: list[str], command: str) -> Namespace:
    """The benchmark's own parse_args, with argparse's exit turned into a ValueError that keeps its message."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module(BENCHES[which]).parse_args(argv)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        raise ValueError(f"{command!r}: {lines[-1] if lines else 'asks for --help, so runs nothing'}") from None
    except ValueError as exc:  # a check after argparse, such as scale's --memory size
        raise ValueError(f"{command!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    which, rest = argv[0], argv[1:]
    if which == "all":
        out = rest[1] if len(rest) == 2 and rest[0] == "--out" else str(RESULTS) if not rest else None
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
        rest = [*rest, "--out", str(RESULTS)]
    importlib.import_module(BENCHES[which]).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
