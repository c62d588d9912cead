"""Questions over the collection without a checking model: how good is "ask" by search alone?

Why: without a VQA or ITM model, `ask` answers "which photos show X?" with the images within RELATIVE of the best
match's similarity, fused with keyword matches (search/ask_unchecked.py). Cosines sit on each model's own scale, so
the cut is relative; this measures it, and absolute cuts of the similarity for comparison, on the 21 bundled sample
photos indexed as `make demo` does (the offline preset, its captions and OCR; real weights) against the labelled
text cases of search/eval/samples.jsonl, asked as "which photos show TEXT?".

Precision and recall are over all (case, relevant image) pairs; "kept" is images answered per question.

    python -m bench ask --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from bench.query import machine
from bench.record import recorded_command

CASES = Path(__file__).resolve().parent.parent / "search" / "eval" / "samples.jsonl"


def demo_library(root: Path):
    """The sample photos indexed, captioned and read as `make demo` does; the library and its engine."""
    from vlsearch.captioner import load_image_text_model
    from vlsearch.encoders import load_encoder
    from vlsearch.images.samples import write_samples
    from vlsearch.indexer import Indexer
    from vlsearch.indexer.describe import Describer
    from vlsearch.library import Library
    from vlsearch.search.engine import SearchEngine

    write_samples(root / "photos")
    lib = Library.open(root / "library")
    encoder = load_encoder("offline", device="cpu")
    Indexer(lib, encoder, workers=0).run([root / "photos"])
    captioner = load_image_text_model("offline", "caption", device="cpu")
    Describer(lib, captioner, captioner.ocr, workers=0).run([root / "photos"])
    return lib, SearchEngine(lib, encoder)


def score(found: list[set[str]], relevant: list[set[str]]) -> dict[str, float]:
    hits = sum(len(f & r) for f, r in zip(found, relevant, strict=True))
    kept, wanted = sum(map(len, found)), sum(map(len, relevant))
    return {"precision": round(hits / kept, 3) if kept else 0.0, "recall": round(hits / wanted, 3),
            "kept_per_question": round(kept / len(found), 2)}


def sweep(engine, cases: list[dict], relative: list[float], absolute: list[float]) -> list[dict[str, Any]]:
    """Each relative cut through the whole unchecked answer, then absolute cuts of the similarity alone."""
    from vlsearch.search import ask_unchecked
    from vlsearch.search.ask import ask_collection
    from vlsearch.search.query import SearchQuery

    relevant = [set(c["relevant"]) for c in cases]
    rows = []
    for cut in relative:
        ask_unchecked.RELATIVE = cut
        found = [{Path(f.hit.path).name for f in ask_collection(engine, None, f"which photos show {c['text']}?",
                                                                 k=100).findings} for c in cases]
        rows.append({"rule": f"ask: within {cut:g} of the best, and keyword matches", **score(found, relevant)})
    similar = [engine.search(SearchQuery(text=c["text"], k=100)) for c in cases]
    for cut in absolute:
        found = [{Path(h.path).name for h in hits if h.score >= cut} for hits in similar]
        rows.append({"rule": f"similarity alone, at least {cut:g}", **score(found, relevant)})
    return rows


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    lines = [
        "# Ask without a checking model", "",
        f"Command: `{report['command']}` (raw numbers: `ask.json`). Measured {report['date']}, total run "
        f"{report['total_seconds']:.0f} s.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used. Python {m['python']}.",
        "", f"Setup: the {report['photos']} sample photos indexed with the offline preset (real weights), its "
        f"captions and OCR; {report['cases']} labelled text cases of search/eval/samples.jsonl asked as \"which "
        "photos show TEXT?\". Precision and recall over (case, relevant image) pairs.", "",
        "| rule | precision | recall | images per question |", "|---|---:|---:|---:|"]
    lines += [f"| {r['rule']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['kept_per_question']:.2f} |"
              for r in report["rows"]]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench ask", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for ask.json and ask.md")
    p.add_argument("--relative", default="0.8,0.85,0.9,0.95", help="relative cuts to try (comma-separated)")
    p.add_argument("--absolute", default="0.2,0.3,0.4", help="absolute similarity cuts to compare")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    cases = [c for c in cases if "text" in c]
    with tempfile.TemporaryDirectory() as tmp:
        lib, engine = demo_library(Path(tmp))
        photos = len(list((Path(tmp) / "photos").iterdir()))
        rows = sweep(engine, cases, [float(x) for x in args.relative.split(",")],
                     [float(x) for x in args.absolute.split(",")])
        lib.close()
    for row in rows:
        print(json.dumps(row), flush=True)
    report = {"command": recorded_command("ask", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "photos": photos, "cases": len(cases), "rows": rows,
              "total_seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ask.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(args.out / "ask.md", report)


if __name__ == "__main__":
    main()
