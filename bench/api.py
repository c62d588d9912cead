"""HTTP load on text search: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients, with and without
micro-batching, over a library of 100k synthetic vectors.

Why: text search is what every user of the server waits on, and micro-batching (api/batching.py) exists to make
throughput grow with concurrency. This measures the whole path a client sees (HTTP, FastAPI, the text encoder,
FAISS, hydrating hits from SQLite) against a real uvicorn server, and shows whether batching earns its wait.

The server runs in its own process (this script re-invoked with --serve), so the load generator does not share its
GIL; on a small machine the two still share the cores, and each run records how much CPU each side used. The
library is 100k image rows with vectors drawn from a CLIP-like Gaussian mixture (bench.index_choice), inserted
straight into SQLite and indexed once (IVF-Flat at this size, as the server would build it); it is cached in a temp
folder per model and size. Models: `tiny-random` (the test model: the encoder costs almost nothing, so this measures
the HTTP and search overhead) and `ViT-B-32-random` (CLIP ViT-B/32 shapes, seeded random weights: real compute).
Every request carries a different query text. Each client sends requests back to back, first for a warm-up, then
for the measured phase, whose completed requests are counted. /api/v1/metrics is scraped while the server is idle
before and after the measured phase: the mean text batch is the change in sum / the change in count of
`vlsearch_text_batch_size`. Each run also records the CPU used by the server, by the load generator and by anything
else on the machine (which should be nothing).

    python -m bench api --models tiny-random,ViT-B-32-random --concurrency 1,8,32 --duration 20 --out bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import UTC
from pathlib import Path

import httpx
import numpy as np

from bench.index_choice import cpu_model, make_mixture
from bench.record import recorded_command, result_name

# bench model name -> open_clip architecture, random weights
RANDOM_CLIP = {"ViT-B-32-random": "ViT-B-32", "ViT-L-14-random": "ViT-L-14"}
HEALTH_TIMEOUT_S = 300

ADJECTIVES = ("red", "old", "small", "shiny", "wet", "wooden", "striped", "blurry", "bright", "broken", "tall", "empty")
SUBJECTS = ("dog", "bicycle", "cup of coffee", "mountain", "cat", "car", "beach", "rocket", "horse", "street",
            "birthday cake", "bridge", "forest", "child", "boat", "window")
PLACES = ("at night", "in the snow", "on a table", "in the city", "by the sea", "in the rain", "at sunset",
          "in a kitchen", "on a road", "in a garden")


def load_bench_encoder(spec: str, device: str, precision: str = "auto"):
    """The encoders this benchmark knows: a registry preset, or a CLIP architecture with seeded random weights."""
    from vlsearch.encoders import load_encoder

    if spec in RANDOM_CLIP:
        from vlsearch.encoders.base import pick_device
        from vlsearch.encoders.clip import ClipEncoder

        return ClipEncoder(spec, RANDOM_CLIP[spec], None, pick_device(device), precision)
    return load_encoder(spec, device=device, precision=precision)


def query_texts():
    """An endless stream of distinct query texts, so no answer can come from a cache."""
    for n in itertools.count():
        yield f"a {ADJECTIVES[n % 12]} {SUBJECTS[n // 12 % 16]} {PLACES[n // 192 % 10]} {n}"


# ------------------------------------------------------------------------------------------------- the library


def synthetic_library(root: Path, model: str, dim: int, count: int) -> Path:
    """A library of `count` images with `model` vectors, built once and reused while `root` keeps it."""
    from sqlalchemy import insert

    from vlsearch.library import Library
    from vlsearch.library.embeddings import encode_vector
    from vlsearch.library.schema import Embedding, ImageRecord

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    path = root / f"{slug}-{count}"
    if (path / "complete").exists():
        return path
    if path.exists():
        import shutil

        shutil.rmtree(path)
    started = time.perf_counter()
    vectors, _ = make_mixture(count, 0, dim, seed=0, n_clusters=2000, noise=0.7, iso_noise=0.3, rank=min(64, dim),
                              mean_scale=1.0)
    lib = Library.open(path)
    lib.ensure_model(model, dim)
    taken = datetime.datetime(2020, 1, 1)
    with lib.session() as s:
        for lo in range(0, count, 10_000):
            ids = range(lo + 1, min(lo + 10_000, count) + 1)
            s.execute(insert(ImageRecord.__table__), [
                {"id": i, "path": f"/synthetic/{i // 1000:03d}/{i:06d}.jpg", "sha256": f"{i:064x}",
                 "size": 2_000_000 + i, "mtime": 1.7e9 + i, "width": 4032, "height": 3024, "display_width": 4032,
                 "display_height": 3024, "orientation": 1, "format": "JPEG",
                 "taken_at": taken + datetime.timedelta(minutes=i), "status": "ok"} for i in ids])
            s.execute(insert(Embedding.__table__), [
                {"image_id": i, "model": model, "vector": encode_vector(vectors[i - 1])} for i in ids])
        Library.bump_generation(s, model)
    index = lib.rebuild_index(model)
    lib.close()
    (path / "complete").write_text(f"{count} images, {index.kind} index\n")
    print(f"built {path} ({count} images, {index.kind} index) in {time.perf_counter() - started:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------------------------- the server


def serve(args: argparse.Namespace) -> None:
    """The child process: the real app over the library, in uvicorn, until killed."""
    import uvicorn

    from vlsearch.api.app import create_app
    from vlsearch.api.service import Models, Service
    from vlsearch.api.settings import Settings
    from vlsearch.library import Library

    encoder = load_bench_encoder(args.models, args.device)
    settings = Settings(library=args.library, model_dir=args.library / "models", device=encoder.device,
                        batch_wait_ms=args.batch_wait_ms, batch_max=args.batch_max, captions=False, ocr=False,
                        port=args.port)
    service = Service(Library.open(args.library, create=False), Models(encoder=encoder), settings)
    uvicorn.run(create_app(service), host="127.0.0.1", port=args.port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m bench.api --serve ...` in a subprocess, up once /api/v1/healthz answers."""

    def __init__(self, library: Path, model: str, device: str, batch_wait_ms: float, batch_max: int,
                 log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLSEARCH_")}  # only our settings count
        command = [sys.executable, "-m", "bench.api", "--serve", "--library", str(library), "--models", model,
                   "--device", device, "--batch-wait-ms", str(batch_wait_ms), "--batch-max", str(batch_max),
                   "--port", str(self.port)]
        with log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            cwd=Path(__file__).resolve().parent.parent)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /api/v1/healthz in {HEALTH_TIMEOUT_S} s; log: {self.log}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------------------------------------- the load


def text_batches(metrics: str) -> tuple[float, float]:
    """(sum, count) of the vlsearch_text_batch_size histogram in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(metrics):
        if family.name == "vlsearch_text_batch_size":
            for sample in family.samples:
                for suffix in values:
                    if sample.name.endswith(suffix):
                        values[suffix] = sample.value
    return values["_sum"], values["_count"]


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting on I/O), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in
                                                                Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def phase(clients: list[httpx.AsyncClient], seconds: float, texts) -> tuple[list[float], list[str]]:
    """Each client sends searches back to back for `seconds`; the latencies (s) of the requests that completed in
    that time and the errors among them. Requests still in flight at the end are waited for and left out."""
    latencies: list[float] = []
    errors: list[str] = []
    end = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            sent = time.perf_counter()
            try:
                response = await client.get("/api/v1/search", params={"q": next(texts), "k": 10})
                error = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if done <= end:
                if error is None:
                    latencies.append(done - sent)
                else:
                    errors.append(error)

    await asyncio.gather(*(worker(client) for client in clients))
    return latencies, errors


async def load(server: Server, clients: int, warmup_s: float, duration_s: float, texts) -> dict:
    """A warm-up phase, then the measured one. The server is idle between them and after, when its metrics are
    scraped (the scrape reads the library's counts from SQLite, which would otherwise delay a measured request)."""

    async def mark(scraper: httpx.AsyncClient) -> tuple[float, ...]:
        """Wall clock, CPU seconds (server, load generator, whole machine), and the text batch histogram."""
        metrics = (await scraper.get("/api/v1/metrics")).text
        return (time.perf_counter(), server.cpu_seconds(), time.process_time(), busy_cpu_seconds(),
                *text_batches(metrics))

    async with AsyncExitStack() as stack:
        # One client and one keep-alive connection per simulated user: a shared pool of N connections costs the
        # load generator more CPU per request as N grows (httpcore scans its connections for each request).
        pool = [await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=120))
                for _ in range(clients)]
        scraper = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=120))
        await phase(pool, warmup_s, texts)
        start = await mark(scraper)
        latencies, errors = await phase(pool, duration_s, texts)
        end = await mark(scraper)
    wall, server_cpu, client_cpu, busy, batch_sum, batch_count = (b - a for a, b in zip(start, end, strict=True))
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": len(ms), "errors": len(errors), "error_sample": errors[0] if errors else None,
        "requests_per_s": round(len(ms) / duration_s, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if ms else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "mean_text_batch": round(batch_sum / batch_count, 2) if batch_count else None,
        "encoder_calls": int(batch_count),
        "server_cpu_cores": round(server_cpu / wall, 2),
        "client_cpu_cores": round(client_cpu / wall, 2),
        "other_cpu_cores": round(max(busy - server_cpu - client_cpu, 0.0) / wall, 2),
    }


def wait_for_quiet(max_cores: float, timeout_s: float = 120) -> None:
    """Wait (at most `timeout_s`) until the machine, our idle server included, keeps fewer than `max_cores` busy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = busy_cpu_seconds()
        time.sleep(2)
        if (busy_cpu_seconds() - before) / 2 < max_cores:
            return


def measure(server: Server, clients: int, args: argparse.Namespace, texts) -> dict:
    """One setting, run again (up to --attempts) while other programs took CPU during it; the quietest run wins."""
    best: dict | None = None
    for attempt in range(1, args.attempts + 1):
        wait_for_quiet(args.max_other_cpu)
        result = asyncio.run(load(server, clients, args.warmup, args.duration, texts)) | {"attempt": attempt}
        if best is None or result["other_cpu_cores"] < best["other_cpu_cores"]:
            best = result
        if result["other_cpu_cores"] <= args.max_other_cpu:
            break
        print(f"  (other programs kept {result['other_cpu_cores']} cores busy; measuring again)", flush=True)
    assert best is not None
    return best


# ------------------------------------------------------------------------------------------------- the report


def machine(device: str) -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "uvicorn": _version("uvicorn"), "httpx": httpx.__version__,
            "uvloop": _version("uvloop"), "httptools": _version("httptools")}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def loadavg() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def cell(value) -> str:
    return "–" if value is None else str(value)


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    runs = report["runs"]
    small = m["cores"] is not None and m["cores"] <= 4
    lines = [
        "# HTTP text search under load: requests/s and latency, with and without micro-batching", "",
        f"Command: `{report['command']}` (raw numbers: `{path.with_suffix('.json').name}`). Measured {report['date']}, "
        f"total run {report['total_seconds']:.0f} s, load average {report['loadavg_start']} before, "
        f"{report['loadavg_end']} after.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores ({m['torch_threads']} torch threads), GPU "
        f"{m['gpu'] or 'none used'}; device `{report['device']}`; Python {m['python']}, torch {m['torch']}, uvicorn "
        f"{m['uvicorn']} ({'uvloop' if m['uvloop'] else 'asyncio'} loop, {'httptools' if m['httptools'] else 'h11'} "
        f"HTTP parser), httpx {m['httpx']}.", "",
        f"Setup: `GET /api/v1/search?q=...&k=10` against a real uvicorn server in its own process, over a library of "
        f"{report['vectors']:,} synthetic images (CLIP-like Gaussian-mixture vectors, {report['index_kind']} index "
        f"as the server builds it at this size; rows hydrated from SQLite). Every request has a distinct query "
        f"text. Each of N clients (an httpx.AsyncClient with one keep-alive connection) sends requests back to back: "
        f"{report['warmup_s']} s of warm-up, then {report['duration_s']} s measured (requests completing in it; "
        "those in flight at its end are left out). The metrics are scraped while the server is idle, before and "
        f"after the measured phase. Batching on = `batch_wait_ms={report['batch_wait_ms']}`, "
        f"`batch_max={report['batch_max']}`; "
        "off = `batch_wait_ms=0` (each request encodes its text alone, in its own worker thread).", "",
        "- **mean batch** = texts per encoder call in the measured phase (`vlsearch_text_batch_size` sum / count, from "
        "/api/v1/metrics); – with batching off.",
        "- **server CPU**, **client CPU**, **other CPU** = cores busy on average in the measured phase (CPU seconds / "
        "seconds) in the server process, in the load generator, and in anything else on the machine (non-zero: "
        "another program shared the machine). Before each setting the script waits for the machine to be idle, and "
        f"it measures a setting again (up to {report['attempts']} times in all) when other programs kept more than "
        f"{report['max_other_cpu']} cores busy during it; the quietest attempt is shown, marked (!) when even that "
        "one was above the limit.",
        "- Models: `tiny-random` is the test model (the encoder costs ~1 ms, so this shows the HTTP, FAISS and SQLite "
        "overhead); `ViT-B-32-random` is CLIP ViT-B/32 with seeded random weights (compute does not depend on weight "
        "values).", "",
    ]
    if small:
        lines += [f"Caveat: on {m['cores']} cores the load generator and the server compete for the CPU; the client "
                  "CPU column is what the load generator took from the server. Figures at high concurrency, for the "
                  "cheap model above all, are a floor for what a separate client machine would measure.", ""]
    lines += ["| model | batching | clients | requests | req/s | p50 ms | p99 ms | mean ms | mean batch | errors | "
              "server CPU | client CPU | other CPU |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batching']} | {r['clients']} | {r['requests']} | {r['requests_per_s']} | "
              f"{cell(r['p50_ms'])} | {cell(r['p99_ms'])} | {cell(r['mean_ms'])} | {cell(r['mean_text_batch'])} | "
              f"{r['errors']} | {r['server_cpu_cores']} | {r['client_cpu_cores']} | {r['other_cpu_cores']}"
              f"{' (!)' if r['other_cpu_cores'] > report['max_other_cpu'] else ''} |" for r in runs]
    pairs = [(on, off) for on in runs for off in runs if on["batching"] == "on" and off["batching"] == "off"
             and on["model"] == off["model"] and on["clients"] == off["clients"]]
    if pairs:
        lines += ["", "Micro-batching, on against off:", "",
                  "| model | clients | req/s off | req/s on | on / off | p99 ms off | p99 ms on |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {on['model']} | {on['clients']} | {off['requests_per_s']} | {on['requests_per_s']} | "
                  f"{on['requests_per_s'] / off['requests_per_s'] if off['requests_per_s'] else 0:.2f} | "
                  f"{cell(off['p99_ms'])} | {cell(on['p99_ms'])} |" for on, off in pairs]
    samples = [f"{r['model']}, batching {r['batching']}, {r['clients']} clients: {r['error_sample']}"
               for r in runs if r["error_sample"]]
    if samples:
        lines += ["", "First error of each run that had any:", ""] + [f"- {s}" for s in samples]
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny-random,ViT-B-32-random",
                   help=f"registry presets or {', '.join(RANDOM_CLIP)} (comma-separated)")
    p.add_argument("--batching", default="on,off", help="on, off, or on,off for both")
    p.add_argument("--concurrency", default="1,8,32", help="concurrent clients (comma-separated)")
    p.add_argument("--vectors", type=int, default=100_000, help="images in the synthetic library")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measured window")
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured per setting")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="the server's batch_wait_ms when batching is on")
    p.add_argument("--batch-max", type=int, default=64)
    p.add_argument("--max-other-cpu", type=float, default=0.1,
                   help="a setting during which other programs kept more than this many cores busy is run again")
    p.add_argument("--attempts", type=int, default=3, help="most runs of one setting; the quietest one is kept")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-api",
                   help="where synthetic libraries are kept between runs")
    p.add_argument("--out", type=Path, help="folder for api.json and api.md (api-gpu.* on a GPU)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server child process
    p.add_argument("--library", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        serve(args)
        return
    from vlsearch.encoders.base import pick_device

    started = time.perf_counter()
    loadavg_start = loadavg()
    device = pick_device(args.device)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    batching = args.batching.split(",")
    args.cache.mkdir(parents=True, exist_ok=True)
    texts = query_texts()
    rows, index_kind = [], None
    print("| model | batching | clients | requests | req/s | p50 ms | p99 ms | mean batch | errors | server CPU | "
          "client CPU | other CPU |", flush=True)
    for spec in args.models.split(","):
        encoder = load_bench_encoder(spec, "cpu")  # for its name and dimension; the server loads its own
        name, dim = encoder.name, encoder.dim
        del encoder
        library = synthetic_library(args.cache, name, dim, args.vectors)
        index_kind = (library / "complete").read_text().split(", ")[1].split()[0]
        for mode in batching:
            wait_ms = args.batch_wait_ms if mode == "on" else 0.0
            server = Server(library, spec, device, wait_ms, args.batch_max, args.cache / f"server-{name}-{mode}.log")
            try:
                for clients in concurrency:
                    result = measure(server, clients, args, texts)
                    row = {"model": name, "device": device, "batching": mode, "clients": clients, **result}
                    rows.append(row)
                    print(f"| {name} | {mode} | {clients} | {row['requests']} | {row['requests_per_s']} | "
                          f"{row['p50_ms']} | {row['p99_ms']} | {row['mean_text_batch']} | {row['errors']} | "
                          f"{row['server_cpu_cores']} | {row['client_cpu_cores']} | {row['other_cpu_cores']} |",
                          flush=True)
            finally:
                server.stop()
    report = {"command": recorded_command("api", argv),
              "date": datetime.datetime.now(UTC).date().isoformat(), "device": device, "machine": machine(device),
              "vectors": args.vectors, "index_kind": index_kind, "warmup_s": args.warmup,
              "duration_s": args.duration, "batch_wait_ms": args.batch_wait_ms, "batch_max": args.batch_max,
              "max_other_cpu": args.max_other_cpu, "attempts": args.attempts,
              "total_seconds": round(time.perf_counter() - started, 1), "loadavg_start": loadavg_start,
              "loadavg_end": loadavg(), "runs": rows}
    print(f"total {report['total_seconds']} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = result_name("api", device)
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
        write_markdown(args.out / f"{name}.md", report)


if __name__ == "__main__":
    main()
