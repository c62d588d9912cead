"""Serving on a GPU, in one prepared command for a lent GPU machine: the suite's non-browser tests with CUDA
visible, the text encoder alone in fp16, exact search on the GPU without faiss-gpu, then the API and captioning
benchmarks on the GPU.

    python -m bench gpu-serve --stages tests,encoder,search,api,captioning --out bench/results

Stages (run in the order given; a lease's 10-minute calls can run them a few at a time, since gpu_serve.json keeps
the stages a run did not repeat):
    tests       pytest over tests/ but the browser tests (test_web.py), CUDA visible: counts and the failures
    encoder     one text at a time and batches of 32, ViT-B-32 and ViT-L-14 with seeded random weights (fp16
                autocast on CUDA): p50/p99 ms and texts/s
    search      torch exact search (library/vectors/torch_exact.py) over --sizes synthetic unit vectors (a
                Gaussian mixture, text-like queries with cosine 0.3 to a stored vector): load time, GPU memory,
                p50/p99 of one query and of 32, recall@10 against faiss-cpu's exact search; beside it, the CPU
                IVF-Flat index the server would use, up to --cpu-ivf-max vectors
    api         python -m bench api at --api-vectors vectors, 1/8/32/128 clients, micro-batching on and off
                (writes api-gpu.json)
    captioning  python -m bench captioning on the GPU (writes captioning-gpu.json)
Without a GPU every stage runs on the CPU (tests/test_bench.py runs encoder and search that way at toy sizes)."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.record import recorded_command, result_name

STAGES = ("tests", "encoder", "search", "api", "captioning")
K = 10
BATCH = 32


def gpu_machine(device: str) -> dict:
    import faiss
    import torch

    from bench.api import machine

    gpu = torch.cuda.get_device_properties(device) if device.startswith("cuda") else None
    return {**machine(device), "gpu_memory_gib": round(gpu.total_memory / 2**30, 1) if gpu else None,
            "cuda": torch.version.cuda, "faiss": faiss.__version__}


# ------------------------------------------------------------------------------------------------------- tests


def tests_stage(args: argparse.Namespace) -> dict:
    """The suite but the browser tests, in a child pytest: its summary counts and the ids of what failed."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--ignore=tests/test_web.py",
           *shlex.split(args.pytest_args), "tests"]
    started = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=args.tests_timeout)
        output, code = (run.stdout + run.stderr).decode(errors="replace"), run.returncode
    except subprocess.TimeoutExpired as exc:  # what it printed so far still says what passed
        output, code = (exc.stdout or b"").decode(errors="replace"), f"timeout after {args.tests_timeout} s"
    print(output[-4000:], flush=True)
    summary = next((line for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", summary)}
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (.+)$", output, re.M)))  # test id - the error's first line
    return {"exit": code, "seconds": round(time.perf_counter() - started, 1), "counts": counts, "failed": failed}


# ----------------------------------------------------------------------------------------------------- encoder


def encoder_stage(args: argparse.Namespace, device: str) -> list[dict]:
    from bench.api import load_bench_encoder, query_texts
    from bench.query import percentiles, timed

    texts = list(zip(range(args.latency_queries + BATCH * 20), query_texts(), strict=False))
    texts = [text for _, text in texts]
    rows = []
    for spec in args.encoders.split(","):
        encoder = load_bench_encoder(spec, device)
        one = percentiles(timed(lambda i, e=encoder: e.encode_texts([texts[i]]), args.latency_queries, 2))
        batches = [texts[i * BATCH:(i + 1) * BATCH] for i in range(20)]
        encoder.encode_texts(batches[0])
        started = time.perf_counter()
        for batch in batches:
            encoder.encode_texts(batch)
        per_s = BATCH * len(batches) / (time.perf_counter() - started)
        rows.append({"model": encoder.name, "device": encoder.device, "one_text_ms": one,
                     f"texts_per_s_batch_{BATCH}": round(per_s, 1)})
        print(rows[-1], flush=True)
        del encoder
    return rows


# ------------------------------------------------------------------------------------------------------ search


def mixture_chunks(count: int, dim: int, device: str, seed: int, chunk: int = 1 << 20):
    """(ids, unit vectors) of a Gaussian mixture around 1,000 centres, made on `device` a chunk at a time (10M
    512-d vectors would take minutes to draw with numpy), float16 as SQLite stores them."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(1000, dim, device=device, generator=gen), dim=1)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        at = torch.randint(0, len(centres), (n,), device=device, generator=gen)
        vectors = centres[at] + 0.7 * torch.randn(n, dim, device=device, generator=gen) / dim**0.5
        ids = torch.arange(start, start + n, device=device, dtype=torch.int64)
        yield ids, torch.nn.functional.normalize(vectors, dim=1).half()


def search_stage(args: argparse.Namespace, device: str) -> list[dict]:
    import torch

    from bench.query import percentiles, recall_at_k, timed
    from vlsearch.library.vectors import text_like_probes
    from vlsearch.library.vectors.guard import TopK
    from vlsearch.library.vectors.torch_exact import TorchExactCopy

    rows = []
    for count in (int(s) for s in args.sizes.split(",")):
        copy = TorchExactCopy(device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        assert copy.fill(mixture_chunks(count, args.dim, device, args.seed), count, args.dim)
        load_s = time.perf_counter() - started
        held = torch.cuda.memory_allocated() if cuda else None
        rng = np.random.default_rng(args.seed)
        sources = copy.matrix[torch.as_tensor(rng.choice(count, args.queries, replace=False))].float().cpu().numpy()
        queries = text_like_probes(sources, rng)
        one = percentiles(timed(lambda i, c=copy, q=queries: c.search(q[i:i + 1], K), args.latency_queries, 2))
        batched = percentiles(timed(lambda i, c=copy, q=queries: c.search(q[:BATCH], K), 20, 2))
        truth = TopK(queries, K)
        for ids, vectors in _host_chunks(copy):
            truth.update(vectors, ids)
        recall = float(recall_at_k(copy.search(queries, K)[1], truth.ids).mean())
        row = {"vectors": count, "dim": args.dim, "device": device, "load_s": round(load_s, 2),
               "held_gib": round(held / 2**30, 2) if held else None,
               "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
               "one_query_ms": one, f"batch_{BATCH}_ms": batched, "recall_at_10": round(recall, 4)}
        if count <= args.cpu_ivf_max:
            row["cpu_ivf"] = cpu_ivf(copy, queries, args)
        rows.append(row)
        print(row, flush=True)
        del copy
    return rows


def _host_chunks(copy, chunk: int = 1 << 20):
    for start in range(0, len(copy.ids), chunk):
        yield (copy.ids[start:start + chunk].cpu().numpy(),
               copy.matrix[start:start + chunk].float().cpu().numpy())


def cpu_ivf(copy, queries: np.ndarray, args: argparse.Namespace) -> dict:
    """The server's CPU index at this size (IVF-Flat above 100k vectors, tuned by the recall guard): build time,
    and one query's latency and recall@10 against the exact copy's answers."""
    from bench.query import percentiles, recall_at_k, timed
    from vlsearch.library.vectors import VectorIndex

    ids, vectors = (np.concatenate(part) for part in zip(*_host_chunks(copy), strict=True))
    started = time.perf_counter()
    index = VectorIndex.build(ids, vectors, args.dim)
    build_s = time.perf_counter() - started
    del vectors
    one = percentiles(timed(lambda i: index.search(queries[i:i + 1], K), args.latency_queries, 2))
    recall = float(recall_at_k(index.search(queries, K)[1], copy.search(queries, K)[1]).mean())
    return {"kind": index.kind, "params": index.params, "build_s": round(build_s, 1), "one_query_ms": one,
            "recall_at_10": round(recall, 4)}


# ------------------------------------------------------------------------------------------------- the report


def write_markdown(path: Path, report: dict) -> None:
    m, stages = report["machine"], report["stages"]
    lines = [f"# Serving on a GPU ({m.get('gpu') or 'no GPU: ' + m['cpu']})", "",
             f"`{report['command']}` on {report['date']}: {m.get('gpu') or 'CPU'}, {m['cores']} cores, torch "
             f"{m['torch']}, CUDA {m.get('cuda')}, faiss {m['faiss']}. Random weights; synthetic vectors.", ""]
    if "tests" in stages:
        t = stages["tests"]
        lines += ["## Tests with CUDA visible (browser tests left out)", "",
                  f"exit {t['exit']} in {t['seconds']} s: {t['counts']}", *[f"- failed: `{f}`" for f in t["failed"]],
                  ""]
    if "encoder" in stages:
        lines += ["## Text encoder alone", "", "| model | device | one text p50 ms | p99 ms | texts/s (batch 32) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['device']} | {r['one_text_ms']['p50']} | {r['one_text_ms']['p99']} | "
                  f"{r[f'texts_per_s_batch_{BATCH}']} |" for r in stages["encoder"]] + [""]
    if "search" in stages:
        lines += ["## Exact search on the GPU (torch, no faiss-gpu), against the CPU index the server would use", "",
                  "| vectors | load s | GPU GiB held / peak | one query p50 / p99 ms | 32 queries p50 ms | recall@10 "
                  "| CPU index | its one query p50 / p99 ms | its recall@10 | its build s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in stages["search"]:
            ivf = r.get("cpu_ivf") or {}
            ivf_ms = f"{ivf['one_query_ms']['p50']} / {ivf['one_query_ms']['p99']}" if ivf else "–"
            lines.append(f"| {r['vectors']:,} | {r['load_s']} | {r['held_gib']} / {r['peak_gib']} | "
                         f"{r['one_query_ms']['p50']} / {r['one_query_ms']['p99']} | {r[f'batch_{BATCH}_ms']['p50']} "
                         f"| {r['recall_at_10']} | {ivf.get('kind', '–')} {ivf.get('params', '')} | {ivf_ms} | "
                         f"{ivf.get('recall_at_10', '–')} | "
                         f"{ivf.get('build_s', '–')} |")
        lines.append("")
    for name in ("api", "captioning"):
        if name in stages:
            lines += [f"## {name}", "", f"See {stages[name]}.md (its own result file).", ""]
    path.write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench gpu-serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated, from: " + ", ".join(STAGES))
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--sizes", default="1000000,10000000", help="vectors for the search stage (comma-separated)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="text-like queries for recall")
    p.add_argument("--latency-queries", type=int, default=200, help="queries timed one by one")
    p.add_argument("--cpu-ivf-max", type=int, default=1_000_000, help="largest size also built as a CPU IVF index")
    p.add_argument("--encoders", default="ViT-B-32-random,ViT-L-14-random")
    p.add_argument("--api-vectors", type=int, default=1_000_000)
    p.add_argument("--api-duration", type=float, default=10.0, help="seconds measured per API setting")
    p.add_argument("--tests-timeout", type=float, default=540.0)
    p.add_argument("--pytest-args", default="", help="more pytest arguments for the tests stage, e.g. '-n 8' "
                   "(pytest-xdist) or '-k vectors'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for gpu_serve.json and gpu_serve.md")
    args = p.parse_args(argv)
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}: choose from {', '.join(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from vlsearch.encoders.base import pick_device

    device = pick_device(args.device)
    out_json = args.out / "gpu_serve.json" if args.out else None
    old = json.loads(out_json.read_text()) if out_json and out_json.exists() else {}
    stages = dict(old.get("stages", {})) if old.get("machine", {}).get("gpu") == gpu_machine(device)["gpu"] else {}
    out = ["--out", str(args.out)] if args.out else []
    for stage in args.stages.split(","):
        started = time.perf_counter()
        print(f"== {stage} on {device}", flush=True)
        if stage == "tests":
            stages["tests"] = tests_stage(args)
        elif stage == "encoder":
            stages["encoder"] = encoder_stage(args, device)
        elif stage == "search":
            stages["search"] = search_stage(args, device)
        elif stage == "api":
            from bench import api

            api.main(["--models", "ViT-B-32-random", "--device", device, "--vectors", str(args.api_vectors),
                      "--concurrency", "1,8,32,128", "--duration", str(args.api_duration), "--attempts", "1", *out])
            stages["api"] = result_name("api", device)
        elif stage == "captioning":
            from bench import captioning

            captioning.main(["--device", device, *out])
            stages["captioning"] = result_name("captioning", device)
        print(f"== {stage} took {time.perf_counter() - started:.0f} s", flush=True)
    command = recorded_command("gpu-serve", argv)
    kept = set(stages) - set(args.stages.split(","))
    report = {"command": f"{old['command']}; then {command}" if kept else command,
              "date": datetime.date.today().isoformat(), "device": device, "machine": gpu_machine(device),
              "stages": stages}
    if out_json:
        args.out.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=2))
        write_markdown(args.out / "gpu_serve.md", report)


if __name__ == "__main__":
    main()
