"""query.md: the tables of bench/query.py's report (query.json), written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def setting(row: dict[str, Any], key: str = "params") -> str:
    params = row.get(key) or {}
    text = ", ".join(f"{k}={v}" for k, v in params.items()) or "exact"
    return f"nlist={row['nlist']}, {text}" if "nlist" in row and key == "params" else text


def ms(stats: dict[str, float] | None) -> str:
    return "–" if not stats else f"{stats['p50']:.2f} / {stats['p99']:.2f}"


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    lines = [
        "# Query latency and recall per FAISS index kind, in a real library", "",
        f"Command: `{report['command']}` (raw numbers: `query.json`). Measured {report['date']}, total run "
        f"{report['total_seconds']:.0f} s, load average {report['loadavg_start']} before, {report['loadavg_end']} "
        "after.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used. faiss-cpu "
        f"**{m['faiss']}** (`{m['faiss_options']}`, {m['faiss_threads']} OpenMP threads), numpy {m['numpy']}, torch "
        f"{m['torch']} ({m['torch_threads']} threads), Python {m['python']}.", "",
        f"Setup: {report['setup']}", "",
        "## The synthetic queries", "",
        "Mean cosine of a query with its exact 1st and 10th neighbour, and of random pairs (real CLIP ViT-B/32: "
        "image-image random ~0.4-0.5, a caption's best image ~0.3, text-text ~0.7-0.8):", "",
        "| n | image query top-1 | image top-10 | text query top-1 | text top-10 | image-image random | "
        "text-image random | text-text |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        c = size["cosines"]
        lines.append(f"| {size['n']:,} | {c['image_top1']:.3f} | {c['image_top10']:.3f} | {c['text_top1']:.3f} | "
                     f"{c['text_top10']:.3f} | {c['image_image_random']:.3f} | {c['text_image_random']:.3f} | "
                     f"{c['text_text']:.3f} |")
    lines += recall_lines(report) + latency_lines(report) + threads_lines(report)
    path.write_text("\n".join(lines) + "\n")


def recall_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "", "## Recall, build and memory", "",
        "Setting = what the recall guard chose (library/vectors/guard.py: it raises nprobe / efSearch / the rescoring "
        f"depth until recall@10 of {report['guard_queries']} stored vectors and of as many text-like probes reaches "
        "the target, 0.95). Recall@10 against exact search over "
        f"{report['queries']:,} queries of each kind; text = mean over the {report['gaps']} gap directions (worst "
        "direction in brackets). Guard = what the guard measured itself (stored / text-like probes). Build = train + "
        "add + guard (guard alone in brackets). bytes/vec: the .faiss file / n, and the RSS growth of a fresh "
        "process reading it / n (IndexIDMap2's reverse id map included; for ivfpq not the SQLite pages it reads to "
        "rescore).", "",
        "| n | index | setting | recall image→image | recall text→image (worst) | guard stored / text-like | "
        "build s (guard) | bytes/vec file | bytes/vec RAM |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        for r in size["kinds"]:
            g = r["guard"]
            guard = f"{g['stored']:.3f} / {g['text_like']:.3f}" if g else "–"
            guard_s = f" ({g['seconds']:.1f})" if g else ""
            lines.append(f"| {r['n']:,} | {r['kind']} | {setting(r)} | {r['recall']['image']:.3f} | "
                         f"{r['recall']['text']:.3f} ({r['recall']['text_worst_gap']:.3f}) | {guard} | "
                         f"{r['build_s']:.1f}{guard_s} | {r['bytes_per_vector']:,.0f} | "
                         f"{r['ram_bytes_per_vector']:,.0f} |")
    lines += [
        "", "At the settings the guard starts from (the library's defaults before this change), for comparison:", "",
        "| n | index | default setting | recall image→image | recall text→image (worst) |", "|---:|---|---|---:|---:|"]
    for size in report["sizes"]:
        for r in size["kinds"]:
            if "recall_at_defaults" in r:
                d = r["recall_at_defaults"]
                lines.append(f"| {r['n']:,} | {r['kind']} | {setting(r, 'default_params')} | {d['image']:.3f} | "
                             f"{d['text']:.3f} ({d['text_worst_gap']:.3f}) |")
    return lines


def latency_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "", "## Latency (ms, p50 / p99, one query at a time, k=10)", "",
        f"Model `{report['model']}` encodes each query (its cost alone: text {ms(report['encode']['text'])}, "
        f"image {ms(report['encode']['image'])}). Index = `VectorIndex.search` alone (for ivfpq it includes "
        "reading the candidates' vectors from SQLite and rescoring them; FAISS's part in brackets). End to end = "
        "`SearchEngine.search`: encode + index + SQLite lookups and hydration of the 10 hits.", "",
        "| n | index | text: index | text: end to end | image: index | image: end to end |",
        "|---:|---|---:|---:|---:|---:|"]
    for size in report["sizes"]:
        for r in size["kinds"]:
            lat = r["latency_ms"]
            cells = []
            for q in ("text", "image"):
                extra = f" ({lat[q]['faiss_candidates']['p50']:.2f})" if "faiss_candidates" in lat[q] else ""
                cells += [ms(lat[q]["index"]) + extra, ms(lat[q]["end_to_end"])]
            count = lat["text"]["index"]["n"]
            note = f" ({count} queries)" if count != report["latency_queries"] else ""
            lines.append(f"| {r['n']:,} | {r['kind']}{note} | " + " | ".join(cells) + " |")
    if report["encoders"]:
        lines += ["", "Encoders alone (random weights; compute does not depend on their values), one query at a "
                  "time, in each precision asked for (`--precisions`):", "",
                  "| model | precision | text encode ms p50 / p99 | image encode ms p50 / p99 (1024x768 picture) |",
                  "|---|---|---:|---:|"]
        lines += [f"| {e['model']} | {e.get('precision', 'fp32')} | {ms(e['text'])} | {ms(e['image'])} |"
                  for e in report["encoders"]]
    return lines


def threads_lines(report: dict[str, Any]) -> list[str]:
    rows = [(size["n"], r["faiss_one_query_by_threads"]) for size in report["sizes"] for r in size["kinds"]
            if "faiss_one_query_by_threads" in r]
    if not rows:
        return []
    threads = sorted({t for _, by in rows for t in by}, key=int)
    return ["", "Exact (flat) search, FAISS alone, one text query at a time on 1 and on all OpenMP threads "
            "(ms p50 / p99): why `VectorIndex` searches a single query on one thread.", "",
            "| n | " + " | ".join(f"{t} thread{'s' if t != '1' else ''}" for t in threads) + " |",
            "|---:|" + "---:|" * len(threads)] + [
        f"| {n:,} | " + " | ".join(ms(by.get(t)) for t in threads) + " |" for n, by in rows]
