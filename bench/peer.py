"""Indexing throughput side by side with a peer: clip-retrieval 2.45.0 `inference`, on the same JPEGs, in one run.

Why: our indexing figures only mean something next to what a user would otherwise run. clip-retrieval is the
reference batch embedder for CLIP; this puts it and vlsearch on the same photos (bench indexing's generated JPEGs),
the same model shapes (open_clip ViT-B-32 with seeded random weights: no weights can be downloaded here, and
compute does not depend on weight values), batch size and number of decoding processes, on the same machine.

How:
- clip-retrieval runs in its own venv, made once under --cache: `clip-retrieval==2.45.0` with its own pins, the
  project's torch pair (constraints.txt) and `setuptools<81` (its openai-clip dependency imports pkg_resources,
  gone from setuptools 81). It runs through a wrapper that is its console script plus one patch:
  `open_clip.create_model_and_transforms` gets `pretrained=None` after `torch.manual_seed(0)`. Its command is
  `inference --clip_model open_clip:ViT-B-32 --batch_size 64 --num_prepro_workers 2 --enable_text False
  --enable_metadata False`, on the CPU (CUDA hidden).
- vlsearch runs `Indexer.run` (embedding only: no captions, no OCR) into a new library, in a fresh process of
  this module, with `ViT-B-32-random` in each of --precisions: auto (what a user gets: bf16 on a CPU that computes
  it in hardware) and fp32 (clip-retrieval's format on a CPU: the pipelines compared alone). No CLI preset has
  random weights, hence the Indexer rather than `vlsearch index`.
- Per tool: **process** = wall time of its whole process (imports, model build, clip-retrieval's warm-up, the
  run), what a user waits for; **loop** = the read-embed-write loop alone (clip-retrieval's own stats file:
  the summed batch durations; vlsearch: `Indexer.run`). Embeddings written are counted and must equal the photos.
- **bare**: the encoder alone on a pre-made batch of the same size (bench indexing's bare_rate), in fp32 (the
  limit for both) and at vlsearch's precision when that differs; measured after the tools, in this process.
- Order: per round, clip-retrieval then vlsearch; odd rounds (--rounds) swap the order. The JPEGs are read
  once before timing, so neither tool pays for a cold page cache.

    python -m bench peer --count 2000 --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.indexing import bare_rate, machine, make_photos, photo_stats
from bench.record import recorded_command

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ViT-B-32-random"
PEER = "clip-retrieval==2.45.0"
# torch and torchvision take their versions from constraints.txt; clip-retrieval's other pins stand as published
PEER_REQUIREMENTS = (PEER, "torch", "torchvision", "setuptools<81")
PEER_PACKAGES = ("clip-retrieval", "all_clip", "open_clip_torch", "torch", "torchvision", "numpy", "pillow")
RANDOM_MARK = "peer: open_clip built with pretrained=None"
WRAPPER = f'''"""clip-retrieval's console script; open_clip builds seeded random weights (no model hub here)."""
import sys

if __name__ == "__main__":
    import open_clip
    import torch

    create = open_clip.create_model_and_transforms

    def random_weights(*args, **kwargs):
        kwargs["pretrained"] = None
        torch.manual_seed(0)
        print("{RANDOM_MARK}", args[:1], flush=True)
        return create(*args, **kwargs)

    open_clip.create_model_and_transforms = random_weights
    from clip_retrieval.cli import main

    sys.exit(main())
'''


# ------------------------------------------------------------------------------------------------- the peer


def peer_venv(cache: Path) -> tuple[Path, dict]:
    """clip-retrieval's own venv, made once (a marker file records what it holds and how long it took)."""
    venv = cache / f"venv-{PEER.replace('==', '-')}"
    marker, constraints = venv / ".complete.json", ROOT / "constraints.txt"
    wanted = [*PEER_REQUIREMENTS, *(line for line in constraints.read_text().splitlines() if line[:1].isalnum())]
    if marker.exists() and json.loads(marker.read_text())["requirements"] == wanted:
        return venv, json.loads(marker.read_text())
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "peer-venv-install.log"
    started = time.perf_counter()
    print(f"making {venv} (a few minutes, once; log: {log})", flush=True)
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out)
        subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-c", str(constraints),
                        *PEER_REQUIREMENTS], check=True, stdout=out, stderr=out)
    versions = subprocess.run(
        [str(venv / "bin/python"), "-c", "import importlib.metadata as m, json, sys; "
         "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))", *PEER_PACKAGES],
        check=True, capture_output=True, text=True).stdout
    record = {"requirements": wanted, "versions": json.loads(versions),
              "setup_seconds": round(time.perf_counter() - started, 1), "made": datetime.date.today().isoformat()}
    marker.write_text(json.dumps(record, indent=2))
    return venv, record


def peer_command(venv: Path, photos: Path, output: Path, args: argparse.Namespace) -> list[str]:
    return [str(venv / "bin/python"), str(venv / "run_peer.py"), "inference", "--input_dataset", str(photos),
            "--output_folder", str(output), "--clip_model", "open_clip:ViT-B-32", "--batch_size",
            str(args.batch_size), "--num_prepro_workers", str(args.workers), "--enable_text", "False",
            "--enable_metadata", "False"]


def run_peer(venv: Path, photos: Path, work: Path, args: argparse.Namespace, log: Path) -> dict:
    """One clip-retrieval inference run into a new output folder: wall time, embeddings written, loop time."""
    (venv / "run_peer.py").write_text(WRAPPER)
    output = work / "peer-out"
    shutil.rmtree(output, ignore_errors=True)
    command = peer_command(venv, photos, output, args)
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    text = log.read_text()
    if rc != 0 or RANDOM_MARK not in text:
        raise RuntimeError(f"clip-retrieval failed (exit {rc}, random weights forced: {RANDOM_MARK in text}); "
                           f"see {log}")
    images = sum(np.load(f, mmap_mode="r").shape[0] for f in (output / "img_emb").glob("*.npy"))
    stats = [json.loads(f.read_text()) for f in (output / "stats").glob("[0-9]*.json")]
    loop = sum(s["total_duration"] for s in stats)
    warmup = re.search(r"done warming up in ([0-9.]+)s", text)
    shutil.rmtree(output, ignore_errors=True)
    return {"tool": "clip-retrieval", "precision": "fp32", "images": images, "process_seconds": round(seconds, 1),
            "loop_seconds": round(loop, 1), "warmup_seconds": round(float(warmup[1]), 1) if warmup else None,
            "command": shlex.join(["clip-retrieval", *command[2:]])}


# ------------------------------------------------------------------------------------------------- vlsearch


def vlsearch_child(args: argparse.Namespace) -> None:
    """In the fresh process the parent times: load the encoder, index the photos, print the figures as JSON."""
    from bench.api import load_bench_encoder
    from vlsearch.indexer import Indexer
    from vlsearch.library import Library

    encoder = load_bench_encoder(MODEL, "cpu", args.child_precision)
    lib = Library.open(args.child_library)
    started = time.perf_counter()
    report = Indexer(lib, encoder, batch_size=args.batch_size, workers=args.workers).run([args.photos])
    loop = time.perf_counter() - started
    lib.close()
    print(json.dumps({"images": report.embedded, "errors": report.errors, "loop_seconds": round(loop, 1),
                      "precision": getattr(encoder, "precision", "fp32")}))


def run_vlsearch(photos: Path, work: Path, args: argparse.Namespace, log: Path, precision: str) -> dict:
    library = work / "vlsearch-library"
    shutil.rmtree(library, ignore_errors=True)
    command = [sys.executable, "-m", "bench.peer", "--child-library", str(library), "--photos", str(photos),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--child-precision", precision]
    started = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"vlsearch indexing failed (exit {done.returncode}); see {log}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(library, ignore_errors=True)
    return {"tool": "vlsearch", **row, "process_seconds": round(seconds, 1)}


def run_round(n: int, venv: Path, photos: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """Each tool once, clip-retrieval first in odd rounds; the logs stay under --cache (errors point into them)."""
    logs = args.cache / "logs" / f"round-{n}"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    ours = [f"vlsearch {p}" for p in args.precisions.split(",")]
    for tool in ["clip-retrieval", *ours] if n % 2 else [*ours, "clip-retrieval"]:
        precision = tool.removeprefix("vlsearch ")
        row = (run_peer(venv, photos, work, args, logs / "clip-retrieval.log") if tool == "clip-retrieval"
               else run_vlsearch(photos, work, args, logs / f"vlsearch-{precision}.log", precision))
        row["tool"] = "clip-retrieval" if tool == "clip-retrieval" else f"vlsearch {row['precision']}"
        rows.append(rates(row, args.count) | {"round": n})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bare_rows(batch_size: int, seconds: float, precisions: list[str]) -> list[dict]:
    """The encoder alone: fp32 (the limit for both tools), and each precision vlsearch ran in."""
    from PIL import Image

    from bench.api import load_bench_encoder

    encoders = {}
    for asked in ["fp32", *precisions]:
        encoder = load_bench_encoder(MODEL, "cpu", asked)
        encoders.setdefault(encoder.precision, encoder)
    shape = tuple(encoders["fp32"].preprocess(Image.new("RGB", (640, 480))).shape)
    return [{"tool": f"bare model, {precision}", "precision": precision,
             "images_per_s": round(bare_rate(encoder, shape, batch_size, seconds), 1)}
            for precision, encoder in sorted(encoders.items(), key=lambda kv: kv[0] != "fp32")]


# ------------------------------------------------------------------------------------------------- report


def rates(row: dict, expected: int) -> dict:
    if row["images"] != expected:
        raise RuntimeError(f"{row['tool']} wrote {row['images']} embeddings for {expected} photos")
    return row | {"process_images_per_s": round(row["images"] / row["process_seconds"], 1),
                  "loop_images_per_s": round(row["images"] / row["loop_seconds"], 1)}


def summary(runs: list[dict], bare: list[dict]) -> dict:
    def median(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["tool"] == tool)

    limit = bare[0]["images_per_s"]
    out: dict = {"bare_fp32_images_per_s": limit}
    tools = sorted({r["tool"] for r in runs if r["tool"] != "clip-retrieval"})
    for key in ("process_images_per_s", "loop_images_per_s"):
        theirs = median("clip-retrieval", key)
        for tool in tools:
            ours = median(tool, key)
            out[f"{key}, {tool}"] = {"vlsearch": ours, "clip-retrieval": theirs, "ratio_vlsearch_to_clip_retrieval":
                                     round(ours / theirs, 2), "vlsearch_to_bare_fp32": round(ours / limit, 2),
                                     "clip_retrieval_to_bare_fp32": round(theirs / limit, 2)}
    return out


def write_report(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps(result, indent=2) + "\n")
    m, p, peer, s = result["machine"], result["photos"], result["peer"], result["summary"]
    setup = peer["setup_seconds"]
    lines = [
        "# Indexing side by side with clip-retrieval", "",
        f"Command: `{result['command']}` (raw numbers: `peer.json`). Measured {result['date']}, "
        f"{result['total_seconds']:.0f} s in all (the peer's venv, made {peer['made']}, took {setup:.0f} s once); "
        f"load average {result['loadavg_before']} before, {result['loadavg_after']} after.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['gpu'] or 'no GPU'}; Python {m['python']}, torch {m['torch']}.",
        "",
        f"Photos: {p['files']} JPEGs, mean {p['megapixels_mean']} MP (max {p['megapixels_max']}), mean "
        f"{p['bytes_mean'] / 1e6:.2f} MB.", "",
        f"Peer: clip-retrieval {peer['versions']['clip-retrieval']} (open_clip {peer['versions']['open_clip_torch']}, "
        f"numpy {peer['versions']['numpy']}, torch {peer['versions']['torch']}), random ViT-B-32 weights: "
        f"`{result['peer_command']}`.", "",
        f"vlsearch: `Indexer.run` with {MODEL}, batch {result['batch_size']}, {result['workers']} decoding "
        "processes, no captions or OCR, into a new library.", "",
        "- **process**: wall time of the tool's whole process; **loop**: its read-embed-write loop alone "
        "(no imports, model build or warm-up); **bare**: the encoder alone on a pre-made batch.", "",
        "| tool | round | precision | images | process s | process img/s | loop s | loop img/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['tool']} | {r['round']} | {r['precision']} | {r['images']} | {r['process_seconds']} | "
              f"{r['process_images_per_s']} | {r['loop_seconds']} | {r['loop_images_per_s']} |"
              for r in result["runs"]]
    lines += [f"| {b['tool']} | | {b['precision']} | | | | | {b['images_per_s']} |" for b in result["bare"]]
    lines += ["", "| measure, vlsearch in | vlsearch img/s | clip-retrieval img/s | vlsearch / clip-retrieval | "
              "vlsearch / bare fp32 | clip-retrieval / bare fp32 |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {key.split('_')[0]}, {key.split(', ')[1].removeprefix('vlsearch ')} | {v['vlsearch']} | "
              f"{v['clip-retrieval']} | "
              f"{v['ratio_vlsearch_to_clip_retrieval']} | {v['vlsearch_to_bare_fp32']} | "
              f"{v['clip_retrieval_to_bare_fp32']} |" for key, v in s.items() if isinstance(v, dict)]
    (out / "peer.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2000, help="photos to index (default 2000)")
    p.add_argument("--photos", type=Path, help="folder for the generated photos (default: a cache in the temp dir)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-peer",
                   help="where clip-retrieval's venv is made once and kept")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="decoding processes of each tool")
    p.add_argument("--rounds", type=int, default=1, help="runs of each tool, alternating which goes first")
    p.add_argument("--bare-seconds", type=float, default=10.0, help="how long to time the bare model")
    p.add_argument("--out", type=Path, help="folder for peer.json and peer.md")
    p.add_argument("--precisions", default="auto,fp32", help="what vlsearch's model computes in, a run each "
                   "(auto: bf16 on a CPU with AVX512_BF16 or AMX; fp32: clip-retrieval's format, the pipelines alone)")
    p.add_argument("--child-library", type=Path, help=argparse.SUPPRESS)  # the vlsearch process this one times
    p.add_argument("--child-precision", default="auto", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child_library:
        vlsearch_child(args)
        return None
    started, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    folder = make_photos(args.photos or Path(tempfile.gettempdir()) / f"vlsearch-bench-photos-{args.count}",
                         args.count)
    for f in sorted(folder.glob("*.jpg")):
        f.read_bytes()  # into the page cache, for whichever tool runs first
    venv, peer = peer_venv(args.cache)
    work = Path(tempfile.mkdtemp(prefix="vlsearch-bench-peer-"))
    runs: list[dict] = []
    try:
        for n in range(1, args.rounds + 1):
            runs += run_round(n, venv, folder, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare = bare_rows(args.batch_size, args.bare_seconds, args.precisions.split(","))
    result = {"command": recorded_command("peer", argv), "date": datetime.date.today().isoformat(),
              "machine": machine(), "photos": photo_stats(folder), "model": MODEL, "batch_size": args.batch_size,
              "workers": args.workers, "peer": peer, "peer_command": next(r["command"] for r in runs if "command" in r),
              "runs": [{k: v for k, v in r.items() if k != "command"} for r in runs], "bare": bare,
              "summary": summary(runs, bare), "total_seconds": round(time.perf_counter() - started, 1),
              "loadavg_before": load_before, "loadavg_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        write_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
