"""Captioning throughput (captions/s) of BLIP-base per batch size and beam count, against the bare model.

Why: captioning is the slowest stage of indexing and what the alt-text API waits on. This tells a user which batch
size and decoding to choose on their hardware, and what our code path (`BlipModel.caption`: RGB conversion,
processor, generate, decode) costs on top of `model.generate` on ready-made pixel tensors (the bare limit).

No BLIP weights can be downloaded here, so the model is BLIP-base built from its config (ViT-B/16 at 384 px, BERT-base
decoder) with seeded random weights and BLIP's real tokenizer: compute does not depend on weight values. Random
weights rarely emit [SEP], so every caption runs the full --max-new-tokens: an upper bound on the decode work of a
real caption (real BLIP-base captions end after roughly 10-15 tokens).

    python -m bench captioning --batch-sizes 1,2,4,8,16 --beams 1,3 --images 8 --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from PIL import Image

from bench.index_choice import cpu_model
from bench.record import recorded_command, result_name
from vlsearch.captioner.blip import BlipModel, GenerationSettings
from vlsearch.captioner.tiny import blip_tokenizer
from vlsearch.encoders.base import pick_device
from vlsearch.images.samples import sample_photos


def blip_base_random() -> tuple[torch.nn.Module, transformers.BlipProcessor]:
    """BLIP-base captioning shapes (the `BlipConfig()` defaults) with seeded random weights."""
    tokenizer = blip_tokenizer()
    config = transformers.BlipConfig(text_config={"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                                                  "pad_token_id": 0, "sep_token_id": 102})
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(config).eval()
    processor = transformers.BlipProcessor(image_processor=transformers.BlipImageProcessor(), tokenizer=tokenizer)
    return model, processor


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def end_to_end(captioner: BlipModel, images: list[Image.Image]) -> float:
    """Seconds for `BlipModel.caption` over `images`, after a warm-up batch of the same shape and beam count (two
    new tokens are enough to allocate its buffers; a full-length warm-up would double the run on a small CPU)."""
    warm_up = replace(captioner.settings, max_new_tokens=2)
    BlipModel(captioner.name, captioner.model, captioner.processor, captioner.device, warm_up,
              captioner.precision).caption(images[: warm_up.batch_size])
    started = time.perf_counter()
    captioner.caption(images)
    return time.perf_counter() - started


@torch.inference_mode()
def bare(captioner: BlipModel, images: list[Image.Image]) -> tuple[float, float]:
    """Seconds for `model.generate` alone on pixel tensors made beforehand, and generated tokens per caption."""
    settings = captioner.settings
    batches = [captioner.processor(images=[im.convert("RGB") for im in images[i : i + settings.batch_size]],
                                   return_tensors="pt")["pixel_values"].to(captioner.device, captioner.dtype)
               for i in range(0, len(images), settings.batch_size)]
    sync(captioner.device)
    started = time.perf_counter()
    outputs = [captioner.model.generate(pixel_values=pixels, max_new_tokens=settings.max_new_tokens,
                                        num_beams=settings.num_beams, do_sample=False) for pixels in batches]
    sync(captioner.device)
    seconds = time.perf_counter() - started
    pad = captioner.model.config.text_config.pad_token_id
    tokens = sum(int((ids[:, 1:] != pad).sum()) for ids in outputs)  # column 0 is the [DEC] prompt
    return seconds, tokens / len(images)


def loadavg() -> str:
    """Other work on the machine skews the figures; the load average before and after shows whether there was any."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def machine(device: str) -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = [
        "# Captioning throughput: BLIP-base (random weights)", "",
        f"Command: `{report['command']}` (raw numbers: `{path.with_suffix('.json').name}`). Measured {report['date']}, "
        f"total run {report['total_seconds']:.0f} s, load average {report['loadavg_start']} before, "
        f"{report['loadavg_end']} after.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"GPU {m['gpu'] or 'none used'}; device `{report['device']}`; Python {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}.", "",
        "Model: `BlipForConditionalGeneration(BlipConfig())` with BLIP's tokenizer (vocab_size = len(tokenizer)), "
        "seeded random weights, wrapped in `BlipModel` in each precision asked for (weights and pixels in that "
        "format). Inputs: the bundled "
        "scikit-image/scikit-learn photos, cycled. Before timing, each setting captions one batch of its size and beam "
        "count with 2 new tokens (warm-up).", "",
        "- **end-to-end** = `BlipModel.caption(images)`: RGB conversion, processor (resize to 384x384, normalise), "
        "`generate`, decode.",
        "- **bare** = `model.generate(pixel_values=...)` on tensors made before the clock starts.",
        "- **ratio** = end-to-end captions/s / bare captions/s (1.0 = our code path adds nothing).", "",
        f"Caveat: random weights rarely emit [SEP], so every caption ran to max_new_tokens={report['max_new_tokens']} "
        "(the tokens column). Real BLIP-base captions stop after about 10-15 tokens, so these figures are an upper "
        "bound on per-caption decode work, i.e. a lower bound on captions/s with real weights.", "",
        "Fidelity to the first precision (cosine of next-token logits along its greedy captions of 4 photos, "
        "mean / min): " + ", ".join(f"{p} {f['mean_cosine']} / {f['min_cosine']}"
                                    for p, f in report.get("fidelity", {}).items()) + ".", "",
        "| precision | beams | batch | images | end-to-end s | captions/s | bare s | bare captions/s | ratio | "
        "tokens/caption |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.get('precision', 'fp32')} | {r['beams']} | {r['batch_size']} | {r['images']} | {r['seconds']} | "
              f"{r['captions_per_s']} | "
              f"{r['bare_seconds']} | {r['bare_captions_per_s']} | {r['ratio']} | {r['tokens_per_caption']} |"
              for r in report["runs"]]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench captioning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,2,4,8,16")
    p.add_argument("--beams", default="1,3")
    p.add_argument("--images", type=int, default=8, help="images per setting, rounded up to whole batches")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--precisions", default="fp32,auto", help="what BLIP computes in, a set of rows each (comma-"
                   "separated: auto, fp32, bf16; auto is bf16 on a CPU with AVX512_BF16 or AMX, fp16 on a GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, help="folder for captioning.json and captioning.md (captioning-gpu.* on a GPU)")
    return p.parse_args(argv)


@torch.inference_mode()
def fidelity(captioner: BlipModel, reference: BlipModel, images: list[Image.Image], tokens: int) -> dict:
    """How closely `captioner` (another precision) follows the fp32 `reference`: cosine of their next-token logits
    along the reference's greedy captions (random weights make the captions themselves meaningless to compare)."""
    inputs = reference._inputs(images, None)
    ids = reference.model.generate(**inputs, max_new_tokens=tokens, num_beams=1, do_sample=False)
    want = reference.model(**inputs, input_ids=ids).logits.float()
    got = captioner.model(**captioner._inputs(images, None), input_ids=ids).logits.float()
    cos = torch.nn.functional.cosine_similarity(want, got, dim=-1)
    return {"mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    started = time.perf_counter()
    loadavg_start = loadavg()
    device = pick_device(args.device)
    photos = list(sample_photos().values())
    rows, reference, fidelities = [], None, {}
    print("| precision | beams | batch | images | s | captions/s | bare s | bare captions/s | ratio | tokens/caption |")
    for asked in args.precisions.split(","):
        model, processor = blip_base_random()  # BlipModel casts the model it is given: a fresh one per precision
        captioner = BlipModel("blip-base-random", model, processor, device, precision=asked)
        if captioner.precision in fidelities:
            continue  # auto chose a precision already measured
        reference = reference or captioner
        fidelities[captioner.precision] = fidelity(captioner, reference, photos[:4], args.max_new_tokens)
        for beams in (int(b) for b in args.beams.split(",")):
            for size in (int(s) for s in args.batch_sizes.split(",")):
                captioner.settings = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=beams,
                                                        batch_size=size)
                rows.append({"precision": captioner.precision, **measure(captioner, photos, args.images)})
                print("| " + " | ".join(str(v) for v in rows[-1].values()) + " |", flush=True)
    report = {"command": recorded_command("captioning", argv),
              "date": datetime.date.today().isoformat(), "device": device, "machine": machine(device),
              "max_new_tokens": args.max_new_tokens, "total_seconds": round(time.perf_counter() - started, 1),
              "loadavg_start": loadavg_start, "loadavg_end": loadavg(), "fidelity": fidelities, "runs": rows}
    print(f"total {report['total_seconds']} s; fidelity to the first precision: {fidelities}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = result_name("captioning", device)
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=2))
        write_markdown(args.out / f"{name}.md", report)


def measure(captioner: BlipModel, photos: list[Image.Image], images: int) -> dict:
    """One setting (the captioner's beams and batch size): end to end and bare, over `images` rounded up to whole
    batches."""
    settings = captioner.settings
    count = -(-images // settings.batch_size) * settings.batch_size
    batch = [photos[i % len(photos)] for i in range(count)]
    seconds = end_to_end(captioner, batch)
    bare_seconds, tokens = bare(captioner, batch)
    return {"beams": settings.num_beams, "batch_size": settings.batch_size, "images": count,
            "seconds": round(seconds, 2), "captions_per_s": round(count / seconds, 3),
            "bare_seconds": round(bare_seconds, 2), "bare_captions_per_s": round(count / bare_seconds, 3),
            "ratio": round(bare_seconds / seconds, 2), "tokens_per_caption": round(tokens, 1)}

if __name__ == "__main__":
    main()
