"""The evidence behind encoders/precision.py: which way of computing a CLIP model in less than fp32 is fastest on
this CPU, and how faithful each is.

Ways, each on the same seeded random weights:
- fp32: the reference;
- autocast-bf16: fp32 weights under `torch.autocast("cpu", dtype=torch.bfloat16)` (casts each weight per call);
- bf16-unpacked: bf16 weights with the text tower's Linears as torch keeps them;
- bf16-weights: the model's weights and inputs in bfloat16, the text tower's Linear weights packed for oneDNN
  (what `--precision bf16` does; encoders/packed.py);
- int8-dynamic: `torch.ao.quantization.quantize_dynamic` of the Linear layers to int8 (image tower only: open_clip's
  text tower reads a Linear's weight dtype, which a quantized Linear no longer has).
Per way: image-tower images/s on a pre-made batch (after a warm-up, the best of --repeats passes), one text query's
latency (p50 over distinct queries of 3-10 words, each way's trimmed encode_texts path where it has one), and
fidelity: cosine to fp32's vectors (mean / min) for the images of the batch and for the queries.

    python -m bench precision --model ViT-B-32-random --batch-size 64 --out bench/results
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.api import load_bench_encoder, query_texts
from bench.indexing import machine
from bench.query import timed
from bench.record import recorded_command

WAYS = ("fp32", "autocast-bf16", "bf16-unpacked", "bf16-weights", "int8-dynamic")


def image_rate(encode, batch: torch.Tensor, repeats: int) -> tuple[float, np.ndarray]:
    encode(batch)  # warm-up: the first calls set up kernels for these shapes
    vectors = encode(batch)
    best = min(_seconds(lambda: encode(batch)) for _ in range(repeats))
    return len(batch) / best, vectors


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def text_latency(encode, texts: list[str]) -> tuple[float, np.ndarray]:
    ms = timed(lambda i: encode([texts[i]]), len(texts), 1)
    return float(np.median(ms)), np.concatenate([encode([t]) for t in texts[:20]])


def ways(spec: str):
    """(name, image encode, text encode or None) per way; each encode takes a batch and gives normalised rows."""
    reference = load_bench_encoder(spec, "cpu", "fp32")
    yield "fp32", reference.encode_image_tensors, reference.encode_texts

    autocast = copy.copy(reference)  # the same model; its own autocast (off on a CPU) replaced by bf16's
    autocast.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    yield "autocast-bf16", autocast.encode_image_tensors, autocast.encode_texts
    with mock.patch("vlsearch.encoders.clip.pack_blocks", lambda transformer: False):
        unpacked = load_bench_encoder(spec, "cpu", "bf16")
    yield "bf16-unpacked", unpacked.encode_image_tensors, unpacked.encode_texts
    bf16 = load_bench_encoder(spec, "cpu", "bf16")
    yield "bf16-weights", bf16.encode_image_tensors, bf16.encode_texts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice (torchao is the successor)
        quantized = copy.deepcopy(reference)
        quantized.model = torch.ao.quantization.quantize_dynamic(quantized.model, {torch.nn.Linear}, torch.qint8)
    yield "int8-dynamic", quantized.encode_image_tensors, None


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    c = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench precision", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32-random")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the image batch; the best is kept")
    p.add_argument("--queries", type=int, default=50, help="text queries timed one by one")
    p.add_argument("--out", type=Path, help="folder for precision.json and precision.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(1)
    batch = torch.randn(args.batch_size, 3, 224, 224) if args.model != "tiny-random" else torch.randn(
        args.batch_size, 3, 32, 32)
    stream = query_texts()
    texts = [next(stream) for _ in range(args.queries)]
    rows, reference = [], {}
    for name, encode_images, encode_texts in ways(args.model):
        with torch.inference_mode():
            rate, image_vectors = image_rate(encode_images, batch, args.repeats)
            text_ms, text_vectors = text_latency(encode_texts, texts) if encode_texts else (None, None)
        reference = reference or {"image": image_vectors, "text": text_vectors}
        rows.append({"way": name, "images_per_s": round(rate, 1),
                     "text_ms_p50": round(text_ms, 2) if text_ms else None,
                     "image_fidelity": cosine(image_vectors, reference["image"]),
                     "text_fidelity": cosine(text_vectors, reference["text"]) if text_vectors is not None else None})
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": recorded_command("precision", argv), "date": datetime.date.today().isoformat(),
              "machine": machine() | {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
                                      "amx": torch.cpu._is_amx_tile_supported()},
              "model": args.model, "batch_size": args.batch_size, "rows": rows,
              "total_seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        write_report(args.out, result)
    return result


def write_report(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["# Reduced precision on the CPU: which way, how fast, how faithful", "",
             f"Command: `{result['command']}` (raw numbers: `precision.json`). Measured {result['date']}, "
             f"{result['total_seconds']:.0f} s in all.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (AVX512_BF16: {m['avx512_bf16']}, AMX: {m['amx']}); torch "
             f"{m['torch']}. Model: {result['model']} with seeded random weights; image batch {result['batch_size']} "
             "of random 224x224 inputs; text: one query at a time. Fidelity: cosine to fp32's vectors, mean / min.",
             "", "| way | image tower img/s | vs fp32 | one text query p50 ms | image fidelity | text fidelity |",
             "|---|---:|---:|---:|---|---|"]
    base = result["rows"][0]["images_per_s"]
    for r in result["rows"]:
        text = r["text_fidelity"]
        text_cell = f"{text['mean']} / {text['min']}" if text else "–"
        lines.append(f"| {r['way']} | {r['images_per_s']} | {r['images_per_s'] / base:.2f}x | "
                     f"{r['text_ms_p50'] if r['text_ms_p50'] is not None else '–'} | "
                     f"{r['image_fidelity']['mean']} / {r['image_fidelity']['min']} | "
                     f"{text_cell} |")
    (out / "precision.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
