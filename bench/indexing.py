"""Indexing throughput: end to end over a folder of real JPEGs, against the bare model's limit, per model.

Why: indexing speed is the first thing a user with a large photo library meets. We judge the pipeline against
the hardware's limit measured in the same run: the bare encoder's images/s on tensors already in memory, at the
same batch size. The ratio end-to-end / bare says how much of the model's speed the pipeline (read, hash, decode,
thumbnail, preprocess in worker processes, embed, commit to SQLite, FAISS update) keeps.

Rows per model and precision (`--precisions`: fp32, the reference, and what auto picks on this machine: bf16
weights where the CPU computes bf16 in hardware):
- bare: `encoder.encode_image_tensors` on a pre-made random batch, repeated (after a warm-up), in the row's
  precision and in fp32;
- decode only: the indexer's own decoding stage (read, sha256, decode, thumbnail, preprocess) through the same
  DataLoader workers, no model: the ceiling the CPU side puts on end to end; once with JPEGs decoded at reduced
  scale (the indexer's default) and once at full size (`reduced_decode=False`), the gain of the fast path;
- end to end: `Indexer.run` into a new library (the default worker count, batch 32).
- fidelity: cosine between the vectors the pipeline stored and the reference: the model's own PIL transform on
  the full-size decoded photo (EXIF-upright, RGB) encoded in fp32. The fast path (JPEG draft decoding at a reduced
  scale, the transform on uint8 tensors) and reduced precision together must keep mean >= 0.995 and min >= 0.98.

Photos: JPEGs of mixed, camera-like sizes (0.3 to 12 megapixels, landscape, portrait and square) made from the
bundled scikit-image/scikit-learn sample photos by upscaling, cropping and resizing, so no two files share bytes.
They are written once per count into a cache folder (--photos to choose it) and reused by later runs.

Models: `tiny-random` (the test model: its compute is near zero, so it measures the pipeline alone), `offline`
(EfficientNet-Lite0 + MiniLM, real weights) and `ViT-B-32-random` (CLIP ViT-B/32 shapes with seeded random
weights: the real compute of the default model).

    python -m bench indexing --count 2000 --models tiny-random,offline,ViT-B-32-random --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from sqlalchemy import select

from bench.api import load_bench_encoder
from bench.index_choice import cpu_model
from bench.record import recorded_command
from vlsearch.images import limit_aspect
from vlsearch.images.samples import sample_photos
from vlsearch.indexer import Indexer
from vlsearch.indexer.decoders import draft_size
from vlsearch.indexer.items import Batch, WorkItem
from vlsearch.indexer.local import DecodeDataset, decode_workers, model_threads
from vlsearch.indexer.stages import DecodeStage
from vlsearch.library import Library
from vlsearch.library.schema import ImageRecord

PHOTO_VERSION = 2  # bump when make_photos changes, so cached folders are rebuilt
MEGAPIXELS = (0.3, 1.0, 2.0, 4.0, 8.0, 12.0)
MP_WEIGHTS = (10, 15, 20, 20, 20, 15)  # a phone library: mostly 8-12 MP, with downloads and screenshots
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)
FIDELITY_SAMPLE = 48
STEP_SAMPLE = 200  # photos timed step by step (decode_steps)


# ------------------------------------------------------------------------------------------------- photos


def _make_one(args: tuple[int, Path]) -> None:
    i, folder = args
    rng = random.Random(i)
    photos = _make_one.photos  # set per worker process by _init_photos
    source = photos[i % len(photos)]
    mp = rng.choices(MEGAPIXELS, MP_WEIGHTS)[0]
    aspect = rng.choice(ASPECTS)
    width = max(64, round((mp * 1e6 * aspect) ** 0.5))
    height = max(64, round(width / aspect))
    # Crop a random part of the source (at least 60% of each side), then resize it to the target size.
    sw, sh = source.size
    cw, ch = round(sw * rng.uniform(0.6, 1.0)), round(sh * rng.uniform(0.6, 1.0))
    x, y = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
    image = source.crop((x, y, x + cw, y + ch)).resize((width, height), Image.Resampling.BICUBIC)
    image.save(folder / f"{i:05d}.jpg", quality=rng.choice((85, 90, 95)))


def _init_photos() -> None:
    _make_one.photos = [p.convert("RGB") for p in sample_photos().values()]


def make_photos(folder: Path, count: int) -> Path:
    """`count` distinct JPEGs of mixed sizes in `folder`, made once (a marker file says the folder is complete)."""
    marker = folder / f".complete-v{PHOTO_VERSION}"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count(), initializer=_init_photos) as pool:
        list(pool.map(_make_one, [(i, folder) for i in range(count)], chunksize=16))
    marker.touch()
    print(f"made {count} photos in {folder} in {time.perf_counter() - started:.0f} s")
    return folder


def photo_stats(folder: Path) -> dict:
    files = sorted(folder.glob("*.jpg"))
    mps, sizes = [], []
    for f in files:
        with Image.open(f) as im:
            mps.append(im.width * im.height / 1e6)
        sizes.append(f.stat().st_size)
    return {"files": len(files), "megapixels_mean": round(statistics.fmean(mps), 2),
            "megapixels_max": round(max(mps), 1), "bytes_mean": round(statistics.fmean(sizes)),
            "bytes_total": sum(sizes)}


# ------------------------------------------------------------------------------------------------- measurements


def bare_rate(encoder, shape: tuple[int, ...], batch_size: int, seconds: float) -> float:
    """images/s of the encoder alone on a pre-made batch (on the encoder's device), after a warm-up."""
    batch = torch.randn(batch_size, *shape)
    if encoder.device.startswith("cuda"):
        batch = batch.to(encoder.device)
    for _ in range(2):
        encoder.encode_image_tensors(batch)
    done, started = 0, time.perf_counter()
    while True:
        encoder.encode_image_tensors(batch)
        if encoder.device.startswith("cuda"):
            torch.cuda.synchronize()
        done += batch_size
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 3 * batch_size:
            return done / elapsed


def decode_rate(files: list[Path], encoder, batch_size: int, workers: int, draft: int | None) -> float:
    """images/s of the indexer's decoding stage alone (its DataLoader, the same workers), no model: read, hash,
    decode, thumbnail JPEG and preprocess (writing the thumbnail file is the writer's)."""
    from torch.utils.data import DataLoader

    items = [WorkItem(str(f), f.stat().st_size, f.stat().st_mtime, None) for f in files]
    dataset = DecodeDataset(items, DecodeStage(encoder.preprocess, max_pixels=128_000_000, draft=draft))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=Batch.collate,
                        prefetch_factor=4 if workers else None)
    started = time.perf_counter()
    n = sum(len(batch.items) for batch in loader)
    return n / (time.perf_counter() - started)


def decode_steps(files: list[Path], encoder, draft: int | None) -> dict[str, float]:
    """ms per image of each step of the decoding stage, in this process on one core, over `files`: what a decoding
    worker spends where (DecodeStage's steps, called one by one)."""
    import hashlib

    from vlsearch.images import decode_bytes, thumbnail_jpeg

    spent = dict.fromkeys(("read", "sha256", "decode", "thumbnail", "preprocess"), 0.0)
    for f in files:
        t0 = time.perf_counter()
        data = f.read_bytes()
        t1 = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        t2 = time.perf_counter()
        image, _ = decode_bytes(data, 128_000_000, draft)
        t3 = time.perf_counter()
        thumbnail_jpeg(image)
        t4 = time.perf_counter()
        encoder.preprocess(limit_aspect(image))
        t5 = time.perf_counter()
        for step, (start, end) in zip(spent, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True):
            spent[step] += end - start
    return {step: round(1e3 * seconds / len(files), 2) for step, seconds in spent.items()}


def fidelity(lib: Library, encoder, reference_encoder, files: list[Path]) -> dict:
    """Cosine between stored vectors and the reference: full-size decode, the model's own preprocess (its PIL
    transform, not the tensor one the indexer runs), fp32."""
    own = getattr(encoder.preprocess, "reference", encoder.preprocess)
    with lib.session() as s:
        ids = dict(s.execute(select(ImageRecord.path, ImageRecord.id)
                             .where(ImageRecord.path.in_([str(f) for f in files]))).all())
    got_ids, vectors = lib.load_vectors(encoder.name, list(ids.values()))
    stored = dict(zip(got_ids.tolist(), vectors, strict=True))
    refs, ours = [], []
    for f in files:
        with Image.open(f) as im:
            image = (ImageOps.exif_transpose(im) or im).convert("RGB")
        refs.append(own(limit_aspect(image)))
        ours.append(stored[ids[str(f)]])
    reference = np.concatenate([reference_encoder.encode_image_tensors(torch.stack(refs[i:i + 16]))
                                for i in range(0, len(refs), 16)])
    cos = np.sum(reference * np.asarray(ours, dtype=np.float32), axis=1)
    return {"images": len(cos), "mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5)}


def run_model(spec: str, files: list[Path], work: Path, args) -> list[dict]:
    """Rows for one model: one per precision it computes in (the offline preset has fp32 only). The decoding
    stage does not depend on the precision: it is measured once and repeated in each row."""
    reference = load_bench_encoder(spec, args.device, "fp32")
    workers = decode_workers(args.workers, reference.device)
    shape = tuple(reference.preprocess(Image.new("RGB", (640, 480))).shape)
    common: dict = {"model": spec, "device": reference.device, "batch_size": args.batch_size, "workers": workers,
                    "draft_to": None if args.full_decode else draft_size(reference), "input": list(shape)}
    common["bare_fp32_images_per_s"] = round(bare_rate(reference, shape, args.batch_size, args.bare_seconds), 1)
    common["decode_images_per_s"] = round(decode_rate(files, reference, args.batch_size, workers,
                                                      common["draft_to"]), 1)
    if common["draft_to"] is not None:
        full = decode_rate(files, reference, args.batch_size, workers, None)
        common["decode_full_size_images_per_s"] = round(full, 1)
    common["decode_steps_ms"] = decode_steps(files[:: max(1, len(files) // STEP_SAMPLE)][:STEP_SAMPLE], reference,
                                             common["draft_to"])
    rows: list[dict] = []
    for asked in args.precisions.split(","):
        encoder = reference if asked == "fp32" else load_bench_encoder(spec, args.device, asked)
        if any(r["precision"] == encoder.precision for r in rows):
            continue  # auto chose a precision already measured
        row = {**common, "precision": encoder.precision}
        row["bare_images_per_s"] = (common["bare_fp32_images_per_s"] if encoder is reference else
                                    round(bare_rate(encoder, shape, args.batch_size, args.bare_seconds), 1))
        rows.append(row | end_to_end(spec, encoder, reference, files, work, args))
        print(json.dumps(rows[-1]))
    return rows


def end_to_end(spec: str, encoder, reference, files: list[Path], work: Path, args) -> dict:
    """`Indexer.run` into a new library: images/s, its ratios to the bare model (in this precision and in fp32),
    and the fidelity of what it stored."""
    lib = Library.open(work / f"lib-{spec}-{encoder.precision}")
    started = time.perf_counter()
    workers = decode_workers(args.workers, encoder.device, precision=encoder.precision)
    report = Indexer(lib, encoder, batch_size=args.batch_size, workers=workers,
                     reduced_decode=not args.full_decode).run([files[0].parent])
    seconds = time.perf_counter() - started
    rate = report.embedded / seconds
    sample = files[:: max(1, len(files) // FIDELITY_SAMPLE)][:FIDELITY_SAMPLE]
    try:
        return {"images": report.embedded, "errors": report.errors, "seconds": round(seconds, 1),
                "end_to_end_workers": workers,
                "end_to_end_model_threads": model_threads(workers, encoder.device, encoder.precision),
                "end_to_end_images_per_s": round(rate, 1),
                "fidelity": fidelity(lib, encoder, reference, sample)}
    finally:
        lib.close()


# ------------------------------------------------------------------------------------------------- report


def write_report(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "indexing.json").write_text(json.dumps(result, indent=2) + "\n")
    m, p = result["machine"], result["photos"]
    lines = [
        "# Indexing throughput against the bare model",
        "",
        f"Command: `{result['command']}` (raw numbers: `indexing.json`). Measured {result['date']}, "
        f"{result['total_seconds']:.0f} s in all.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['gpu'] or 'no GPU'}; Python {m['python']}, torch {m['torch']}.",
        "",
        f"Photos: {p['files']} JPEGs, mean {p['megapixels_mean']} MP (max {p['megapixels_max']}), mean "
        f"{p['bytes_mean'] / 1e6:.2f} MB, {p['bytes_total'] / 1e9:.2f} GB in all.",
        "",
        "- **bare**: the encoder alone on a pre-made batch (the limit); **decode**: the indexer's decoding stage "
        "alone (read, sha256, decode, thumbnail, preprocess, in its worker processes), JPEGs at reduced scale; "
        "**decode, full size**: the same with every JPEG decoded at full size; **end to end**: "
        "`Indexer.run` into a new library; **ratio** = end to end / bare in the row's precision; **/ fp32** = end "
        "to end / bare in fp32 (the model's speed before reduced precision).",
        "- **precision**: what the model computed in (`--precision`; bf16 = bfloat16 weights, where the CPU has "
        "AVX512_BF16 or AMX). The decode columns do not depend on it: measured once per model.",
        "- **fidelity**: cosine of stored vectors against the model's own preprocess on the full-size photo, encoded "
        f"in fp32 ({FIDELITY_SAMPLE} photos; target mean >= 0.995, min >= 0.98).",
        "",
        "- **workers / threads**: the end-to-end run's decoding processes and the model's torch threads ('all': "
        "torch's own, every core); the decode columns use the fp32 row's workers.",
        "",
        "| model | precision | device | batch | workers / threads | bare img/s | bare fp32 img/s | decode img/s | "
        "decode, full size img/s | end-to-end img/s | ratio | / fp32 | images | fidelity mean / min |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["runs"]:
        f = r["fidelity"]
        lines.append(f"| {r['model']} | {r.get('precision', 'fp32')} | {r['device']} | {r['batch_size']} | "
                     f"{r.get('end_to_end_workers', r['workers'])} / {r.get('end_to_end_model_threads') or 'all'} | "
                     f"{r['bare_images_per_s']} | {r.get('bare_fp32_images_per_s', '')} | "
                     f"{r['decode_images_per_s']} | {r.get('decode_full_size_images_per_s', '')} | "
                     f"{r['end_to_end_images_per_s']} | {r['ratio_to_bare']:.2f} | "
                     f"{r.get('ratio_to_bare_fp32', r['ratio_to_bare']):.2f} | {r['images']} | "
                     f"{f['mean_cosine']:.4f} / {f['min_cosine']:.4f} |")
    steps = {r["model"]: r["decode_steps_ms"] for r in result["runs"] if "decode_steps_ms" in r}
    if steps:
        names = list(next(iter(steps.values())))
        lines += ["", f"Decoding, step by step: ms per image on one core ({STEP_SAMPLE} of the photos, in this "
                  "process, each step of the decoding stage called alone; JPEGs at reduced scale as above):", "",
                  "| model | " + " | ".join(names) + " | total |", "|---|" + "---:|" * (len(names) + 1)]
        lines += [f"| {model} | " + " | ".join(str(ms[n]) for n in names) + f" | {sum(ms.values()):.1f} |"
                  for model, ms in steps.items()]
    (out / "indexing.md").write_text("\n".join(lines) + "\n")


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench indexing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2000, help="photos to index (default 2000)")
    p.add_argument("--models", default="tiny-random,offline,ViT-B-32-random")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: the indexer's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", default="fp32,auto", help="what the model computes in, a row each (comma-"
                   "separated: auto, fp32, bf16; auto is bf16 on a CPU with AVX512_BF16 or AMX)")
    p.add_argument("--bare-seconds", type=float, default=10.0, help="how long to time the bare model")
    p.add_argument("--full-decode", action="store_true", help="decode every JPEG at full size (the old path)")
    p.add_argument("--photos", type=Path, help="folder for the generated photos (default: a cache in the temp dir)")
    p.add_argument("--out", type=Path, help="folder for indexing.json and indexing.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    folder = args.photos or Path(tempfile.gettempdir()) / f"vlsearch-bench-photos-{args.count}"
    make_photos(folder, args.count)
    files = sorted(folder.glob("*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="vlsearch-bench-indexing-"))
    try:
        runs = [row for spec in args.models.split(",") if spec for row in run_model(spec, files, work, args)]
        for row in runs:
            row["ratio_to_bare"] = round(row["end_to_end_images_per_s"] / row["bare_images_per_s"], 3)
            row["ratio_to_bare_fp32"] = round(row["end_to_end_images_per_s"] / row["bare_fp32_images_per_s"], 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"command": recorded_command("indexing", argv),
              "date": datetime.date.today().isoformat(), "machine": machine(), "photos": photo_stats(folder),
              "runs": runs, "total_seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        write_report(args.out, result)
    return result


if __name__ == "__main__":
    main()
