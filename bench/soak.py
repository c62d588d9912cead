"""Soak: searches from many concurrent clients while index jobs add images and deletes remove them, against the real
`vlsearch serve` in its own process; then the library is checked end to end.

Why: a photo library or a shop catalogue is searched while it changes. This looks for what only shows under that
mix: errors or 5xx under load, torn reads (a page of hits that is not a consistent snapshot: a duplicate id, scores
out of order, a hit missing its fields, more hits than asked for), memory that grows with requests, and a library
left inconsistent (SQLite integrity, FAISS ids against SQLite's vectors, image rows against files on disk).

Readers: `--clients` async HTTP clients, each looping over a mix of requests: GET /search by words (60 %),
POST /search in hybrid mode (10 %), GET /images/{id}/similar (10 %), GET /images/{id} (10 %) and its thumbnail
(10 %), ids taken from earlier hits (a 404 for an image the writer deleted since is expected and counted apart;
any other 404 is an error). Writer: one loop that writes a batch of new JPEGs into the indexed folder, POSTs /index
and waits for the job, then removes the files of an older batch from disk and deletes their images with POST
/images/delete. The server's resident memory (VmRSS) is sampled every second.

    python -m bench soak --duration 180 --clients 32 --out bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from bench.record import recorded_command

MODEL = "tiny-random"
KEY = "soak-key-0123456789"
WORDS = ("red", "dog", "beach", "blue", "circle", "sunset", "car", "green", "square", "night", "tree", "boat")


def write_batch(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` small distinct JPEGs of random shapes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (rng.randint(160, 480), rng.randint(160, 480)),
                          tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 6)):
            x, y = rng.randrange(image.width), rng.randrange(image.height)
            box = (x, y, x + rng.randint(10, 150), y + rng.randint(10, 150))
            colour = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        path = folder / f"p{seed}_{i}.jpg"
        image.save(path, quality=85)
        paths.append(path)
    return paths


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`vlsearch serve` (the CLI entry point) in a subprocess, with a key and the photo folder as its index root."""

    def __init__(self, library: Path, root: Path, workdir: Path, device: str = "auto") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        config = workdir / "vlsearch.toml"
        config.write_text(f'index_roots = ["{root}"]\napi_keys = ["{KEY}"]\ncaptions = false\nocr = false\n'
                          f'vqa_model = "{MODEL}"\nitm_model = "{MODEL}"\nindex_lag_s = 2.0\ndevice = "{device}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLSEARCH_")}
        command = [sys.executable, "-m", "vlsearch.api.cli", "serve", "--library", str(library),
                   "--port", str(self.port), "--config", str(config), "--model-dir", str(workdir / "models")]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vlsearch serve exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("vlsearch serve did not come up in 180 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.torn: list[str] = []
        self.gone = 0  # 404 for an image the writer deleted since its id was seen: expected
        self.ids: list[int] = []
        # Ids the writer asked the server to delete, added before it asks, so a reader's 404 that arrives before the
        # writer's own answer still counts as gone. A plain set: readers and writer share one event loop thread.
        self.deleted: set[int] = set()

    def record(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)


def check_page(body: dict, k: int) -> str | None:
    """Why a page of hits is not a consistent snapshot, or None."""
    hits = body.get("hits")
    if not isinstance(hits, list):
        return "no hits list"
    ids = [h.get("id") for h in hits]
    if len(set(ids)) != len(ids):
        return f"duplicate ids {ids}"
    if len(hits) > k:
        return f"{len(hits)} hits for k={k}"
    if any(not h.get("path") or not h.get("file_url") or h.get("score") is None for h in hits):
        return "a hit without path, file_url or score"
    if body.get("mode") == "vector":
        scores = [h["score"] for h in hits]
        if any(a < b - 1e-6 for a, b in zip(scores, scores[1:], strict=False)):
            return f"scores out of order {scores}"
    return None


async def reader(client: httpx.AsyncClient, tally: Tally, end: float, rng: random.Random) -> None:
    while time.monotonic() < end:
        roll = rng.random()
        words = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
        some_id = rng.choice(tally.ids) if tally.ids else None
        if roll < 0.6 or some_id is None:
            kind, call = "search", client.get("/api/v1/search", params={"q": words, "k": 10})
        elif roll < 0.7:
            kind, call = "hybrid", client.post("/api/v1/search", json={"text": words, "k": 10, "mode": "hybrid"})
        elif roll < 0.8:
            kind, call = "similar", client.get(f"/api/v1/images/{some_id}/similar", params={"k": 10})
        elif roll < 0.9:
            kind, call = "detail", client.get(f"/api/v1/images/{some_id}")
        else:
            kind, call = "thumbnail", client.get(f"/api/v1/images/{some_id}/thumbnail")
        sent = time.perf_counter()
        try:
            response = await call
        except httpx.HTTPError as exc:
            tally.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        tally.record(kind, time.perf_counter() - sent)
        if response.status_code == 404 and kind in ("similar", "detail", "thumbnail") and some_id in tally.deleted:
            tally.gone += 1
            continue
        if response.status_code != 200:
            tally.errors.append(f"{kind}: HTTP {response.status_code}: {response.text[:200]}")
            continue
        if kind in ("search", "hybrid", "similar"):
            body = response.json()
            problem = check_page(body, 10)
            if problem:
                tally.torn.append(f"{kind}: {problem}")
            tally.ids = (tally.ids + [h["id"] for h in body["hits"]])[-500:]


async def writer(client: httpx.AsyncClient, root: Path, end: float, batch_size: int, tally: Tally,
                 stats: dict) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    batches: list[Path] = []
    seed = 1000
    while time.monotonic() < end:
        seed += 1
        folder = root / f"batch{seed}"
        await asyncio.to_thread(write_batch, folder, batch_size, seed)
        batches.append(folder)
        job = await client.post("/api/v1/index", json={"paths": [str(root)]}, headers=auth)
        if job.status_code != 202:
            tally.errors.append(f"index: HTTP {job.status_code}: {job.text[:200]}")
            await asyncio.sleep(1)
            continue
        while True:
            await asyncio.sleep(0.3)
            state = (await client.get(job.json()["url"])).json()
            if state["state"] != "running":
                break
        stats["jobs"] += 1
        if state["state"] != "succeeded" or state["errors"]:
            tally.errors.append(f"index job: {state['state']} {state.get('error')} {state['failures'][:3]}")
        stats["added"] += batch_size
        if len(batches) >= 2:  # delete an older batch: files first, then its images
            old = batches.pop(0)
            found = await client.get("/api/v1/search", params={"q": "x", "k": 1000, "path": str(old)})
            ids = [h["id"] for h in found.json()["hits"]]
            shutil.rmtree(old)
            if ids:
                tally.deleted.update(ids)
                deleted = await client.post("/api/v1/images/delete", json={"ids": ids}, headers=auth)
                if deleted.status_code != 200:
                    tally.errors.append(f"delete: HTTP {deleted.status_code}: {deleted.text[:200]}")
                else:
                    stats["deleted"] += len(deleted.json()["deleted"])
            stats["delete_calls"] += 1


async def sample_rss(pid: int, end: float, samples: list[float]) -> None:
    while time.monotonic() < end:
        samples.append(rss_mb(pid))
        await asyncio.sleep(1)


async def soak(server: Server, root: Path, args: argparse.Namespace) -> dict:
    tally, stats, rss = Tally(), {"jobs": 0, "added": 0, "deleted": 0, "delete_calls": 0}, []
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        warm = time.monotonic() + args.warmup
        await asyncio.gather(*(reader(client, Tally(), warm, random.Random(i)) for i in range(4)))
        rss_start = rss_mb(server.process.pid)
        started = time.monotonic()
        end = started + args.duration
        await asyncio.gather(writer(client, root, end, args.batch, tally, stats), sample_rss(server.process.pid, end,
                                                                                             rss),
                             *(reader(client, tally, end, random.Random(100 + i)) for i in range(args.clients)))
        elapsed = time.monotonic() - started
    requests = sum(len(v) for v in tally.latencies.values())
    return {
        "seconds": round(elapsed, 1), "clients": args.clients, "requests": requests,
        "requests_per_s": round(requests / elapsed, 1), "errors": len(tally.errors), "error_samples": tally.errors[:10],
        "torn_reads": len(tally.torn), "torn_samples": tally.torn[:10], "gone_404": tally.gone,
        "latency_ms": {kind: {"n": len(v), "p50": round(1000 * float(np.percentile(v, 50)), 1),
                              "p99": round(1000 * float(np.percentile(v, 99)), 1)}
                       for kind, v in sorted(tally.latencies.items())},
        **stats,
        "rss_mb": {"start": round(rss_start, 1), "end": round(rss[-1] if rss else rss_start, 1),
                   "max": round(max(rss, default=rss_start), 1),
                   "median": round(statistics.median(rss), 1) if rss else None,
                   "every_10_s": [round(v, 1) for v in rss[::10]]},
    }


def final_checks(library: Path, root: Path, url: str) -> dict:
    """After the load: the server answers, and the library is whole (SQLite, FAISS and the files agree)."""
    from vlsearch.library import Library

    files = sorted(str(p) for p in root.rglob("*.jpg"))
    stats = httpx.get(url + "/api/v1/stats", timeout=30).json()
    probe = httpx.get(url + "/api/v1/search", params={"q": "red circle", "k": 5}, timeout=30)
    with sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        paths = sorted(p for (p,) in db.execute("SELECT path FROM images WHERE status = 'ok'"))
        duplicates = db.execute("SELECT count(*) - count(DISTINCT path) FROM images").fetchone()[0]
    lib = Library.open(library, create=False)
    try:
        index = lib.vector_index(MODEL)
        faiss_ids = set(index.ids().tolist())
        sqlite_ids = set(lib.load_vectors(MODEL)[0].tolist())
    finally:
        lib.close()
    return {"integrity_check": integrity, "images": stats["images"], "files_on_disk": len(files),
            "rows_match_files": paths == files, "duplicate_paths": duplicates,
            "faiss_ids_match_sqlite": faiss_ids == sqlite_ids, "vectors": len(sqlite_ids),
            "search_after": probe.status_code}


def rss_line(rss: dict) -> str:
    """The server's memory over the run, and its growth over the second half: what says whether it levelled off."""
    series = rss["every_10_s"]
    half = series[len(series) // 2:] or [rss["start"]]
    return (f"Server RSS (MB) every 10 s: {', '.join(f'{v:.0f}' for v in series)}. Over the second half of the run: "
            f"{half[-1] - half[0]:+.0f} MB (max {max(half) - half[0]:+.0f} MB above its start).")


def markdown(report: dict) -> str:
    r, f = report["run"], report["final"]
    lines = [
        "# Soak: concurrent searches while index jobs add and deletes remove images",
        "",
        f"Command: `{report['command']}`. Measured {report['date']}. Machine: {report['machine']}.",
        "",
        f"Setup: `vlsearch serve` ({MODEL} model) over a library of {report['photos']} photos to start; "
        f"{r['clients']} clients for {r['seconds']} s; an index job per batch of {report['batch']} new photos and a "
        "delete of an older batch after each (see bench/soak.py's docstring).",
        "",
        "| requests | req/s | errors | torn reads | 404 for deleted images | index jobs | images added | "
        "images deleted | RSS start MB | RSS end MB | RSS max MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['requests']} | {r['requests_per_s']} | {r['errors']} | {r['torn_reads']} | {r['gone_404']} | "
        f"{r['jobs']} | {r['added']} | {r['deleted']} | {r['rss_mb']['start']} | {r['rss_mb']['end']} | "
        f"{r['rss_mb']['max']} |",
        "",
        rss_line(r["rss_mb"]),
        "",
        "| request | n | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *(f"| {kind} | {v['n']} | {v['p50']} | {v['p99']} |" for kind, v in r["latency_ms"].items()),
        "",
        f"After the load: SQLite integrity_check `{f['integrity_check']}`; {f['images']} images for "
        f"{f['files_on_disk']} files on disk (rows match files: {f['rows_match_files']}; duplicate paths: "
        f"{f['duplicate_paths']}); FAISS ids equal SQLite's vectors: {f['faiss_ids_match_sqlite']} "
        f"({f['vectors']}); a search answers HTTP {f['search_after']}.",
    ]
    if r["error_samples"] or r["torn_samples"]:
        lines += ["", "Samples:", *(f"- {e}" for e in r["error_samples"] + r["torn_samples"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    p.add_argument("--clients", type=int, default=32, help="concurrent search clients")
    p.add_argument("--photos", type=int, default=200, help="photos in the library before the load")
    p.add_argument("--batch", type=int, default=20, help="photos each index job adds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of light load before measuring")
    p.add_argument("--device", default="auto", help="the server's device: auto (cuda when present), cpu or cuda")
    p.add_argument("--work", type=Path, help="working folder (default: a fresh temp folder, removed after)")
    p.add_argument("--out", type=Path, help="folder for soak.json and soak.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from vlsearch.encoders import load_encoder
    from vlsearch.indexer import Indexer
    from vlsearch.library import Library

    work = args.work or Path(tempfile.mkdtemp(prefix="vlsearch-soak-"))
    root, library = work / "photos", work / "library"
    write_batch(root / "start", args.photos, 0)
    lib = Library.open(library)
    Indexer(lib, load_encoder(MODEL, device="cpu"), workers=0).run([root])
    lib.close()
    server = Server(library, root, work, args.device)
    try:
        run = asyncio.run(soak(server, root, args))
        time.sleep(3)  # past index_lag_s: the server's index catches up with the last delete
        final = final_checks(library, root, server.url)
    finally:
        server.stop()
    report = {"command": recorded_command("soak", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "photos": args.photos, "batch": args.batch, "run": run, "final": final}
    print(markdown(report))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "soak.md").write_text(markdown(report))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
