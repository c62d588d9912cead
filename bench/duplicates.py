"""Duplicate groups: `vlsearch duplicates` over 1M images, and how well its thresholds find copies of real photos.

Why: finding a library's copies and burst frames is one pass over its vectors, so a million photos should take
minutes on a CPU; and the thresholds must join a photo's copies without joining two photos. This measures
`search.duplicates.find_duplicates` end to end (every stored vector's 16 nearest neighbours through the library's
own FAISS index, 4,096 queries a search at the duplicates' probe depth; links at or above the near threshold; the
connected groups, their rows read, keepers chosen) and the choices it rests on.

Scale: --images images with the synthetic 512-d vectors of bench/query.py (`make_data`: the CLIP-like mixture), of
which 1% are replaced by copies of other images (cosine 0.97 to their source) and 1% by near-duplicates (0.91),
written by `filled_library` and cached in --cache; the index is the one the library picks for its size
(`Library.vector_index`). Reported: images/s, the groups by kind, the images in them, the largest group, and the
share of planted copies and near-duplicates found in their source's group. Beside it, for one batch of 4,096
stored vectors: kNN against a range search at the duplicates' probe depth (DUPLICATE_NPROBE), and per nprobe the
seconds and the share of the batch's pairs at or above the near threshold found, against exact search over all
vectors (an IVF index only). The synthetic mixture has dense clusters: most groups are "near" ones of its own,
beside the planted ones.

Copies (bench/duplicates_copies.py): the bundled sample photos, 7 copies each and a burst-like frame, indexed with
the offline model: each transform's similarity to its original, find_duplicates' pair precision and recall at its
default thresholds, and copy recall@1.

    python -m bench duplicates --out bench/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.duplicates_copies import copies_lines, measure_copies
from bench.query import filled_library, machine, make_data
from bench.record import recorded_command

MODEL, DIM, GAPS, QUERIES = "synthetic-dups", 512, 1, 8
PLANTED = {"copies": 0.97, "near_duplicates": 0.91}  # each replaces 1% of the images: cosine to its source
NPROBES = (1, 2, 4, 8, 16)
EXACT_CHUNK = 50_000  # stored vectors per exact matrix product (4,096 x 50,000 scores: 0.8 GB)
PROGRESS_S = 30
REPEATS = 2  # timings of one batch: the fastest of this many


def with_duplicates(data: dict[str, np.ndarray], seed: int) -> dict[str, dict[int, int]]:
    """Replace 1% of the images by copies, 1% by near-duplicates of other images, in place; {planted id: source
    id} of each."""
    rng = np.random.default_rng(seed + 2)
    x = data["vectors"]
    n = len(x)
    rows = rng.permutation(n)
    targets, sources = (rows[: n // 100], rows[n // 100: n // 50]), rows[n // 50: 2 * (n // 50)]
    planted = {}
    for (kind, cosine), mine, src_rows in zip(PLANTED.items(), targets, np.split(sources, [n // 100]), strict=True):
        planted[kind] = dict(zip((mine + 1).tolist(), (src_rows + 1).tolist(), strict=True))
        src = x[src_rows]
        away = rng.standard_normal(src.shape).astype(np.float32)
        away -= np.sum(away * src, axis=1, keepdims=True) * src
        away /= np.linalg.norm(away, axis=1, keepdims=True)
        x[mine] = cosine * src + np.sqrt(1 - cosine**2) * away
    data["vectors"] = x.astype(np.float16).astype(np.float32)  # what the library stores
    return planted


class Progress:
    """find_duplicates' progress hook: a line every PROGRESS_S seconds and at the end."""

    def start(self, total: int) -> None:
        self.done, self.total, self.started = 0, total, time.perf_counter()
        self.last = self.started

    def advance(self, n: int, errors: int = 0) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > PROGRESS_S or self.done == self.total:
            print(f"  {self.done:,}/{self.total:,} compared, {self.done / (now - self.started):,.0f} images/s",
                  flush=True)
            self.last = now


def fastest(search: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """search(*args, **kwargs) and its fastest time of REPEATS."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        answer = search(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return answer, min(times)


def probes(index, nprobe: int) -> faiss.SearchParametersIVF | None:
    return faiss.SearchParametersIVF(nprobe=nprobe) if index.kind in ("ivf", "ivfpq") else None


def knn_against_range(lib, index) -> dict[str, Any]:
    """One batch of QUERY_BATCH stored vectors at DUPLICATE_NPROBE, searched REPEATS times each way (fastest kept):
    kNN as find_duplicates does, and a range search at the near threshold; the pairs each finds, self left out."""
    from vlsearch.search.duplicates import DUPLICATE_NPROBE, NEIGHBOURS, QUERY_BATCH, SEARCH_THRESHOLDS

    ids, vectors = next(iter(lib.stored_vectors(MODEL).chunks(QUERY_BATCH)()))
    params = probes(index, DUPLICATE_NPROBE)
    (scores, found), knn_s = fastest(index.index.search, vectors, NEIGHBOURS + 1, params=params)
    (bounds, _, within), range_s = fastest(index.index.range_search, vectors, SEARCH_THRESHOLDS.near, params=params)
    return {"queries": len(ids), "nprobe": DUPLICATE_NPROBE if params else None, "k": NEIGHBOURS + 1,
            "radius": SEARCH_THRESHOLDS.near, "knn_s": round(knn_s, 2), "range_s": round(range_s, 2),
            "knn_pairs": int(((scores >= SEARCH_THRESHOLDS.near) & (found != ids[:, None])).sum()),
            "range_pairs": int((within != np.repeat(ids, np.diff(bounds).astype(np.int64))).sum())}


def exact_pairs(queries: np.ndarray, qids: np.ndarray, vectors: np.ndarray, threshold: float, k: int
                ) -> tuple[np.ndarray, float, float]:
    """The pairs (as qid * (n + 1) + id) of `queries` with stored vectors at or above `threshold`, self left out,
    by exact search over all; its seconds; and the share of them k neighbours an image can hold."""
    started, keys, counts = time.perf_counter(), [], np.zeros(len(queries), dtype=np.int64)
    for lo in range(0, len(vectors), EXACT_CHUNK):
        rows, cols = np.nonzero(queries @ vectors[lo: lo + EXACT_CHUNK].T >= threshold)
        ids = cols + lo + 1
        keep = ids != qids[rows]
        keys.append(qids[rows[keep]] * (len(vectors) + 1) + ids[keep])
        counts += np.bincount(rows[keep], minlength=len(queries))
    seconds = time.perf_counter() - started
    return np.unique(np.concatenate(keys)), seconds, float(np.minimum(counts, k).sum() / max(counts.sum(), 1))


def nprobe_sweep(index, data: dict[str, np.ndarray], seed: int) -> dict[str, Any] | None:
    """One batch of QUERY_BATCH random stored vectors per nprobe: seconds (fastest of REPEATS), vectors compared per
    query and the share of the batch's pairs at or above the near threshold found (an IVF-Flat index only)."""
    from vlsearch.search.duplicates import NEIGHBOURS, QUERY_BATCH, SEARCH_THRESHOLDS

    if index.kind != "ivf":
        return None
    vectors, n = data["vectors"], len(data["vectors"])
    rows = np.random.default_rng(seed + 3).choice(n, min(QUERY_BATCH, n), replace=False)
    queries, qids = vectors[rows], data["ids"][rows]
    truth, exact_s, ceiling = exact_pairs(queries, qids, vectors, SEARCH_THRESHOLDS.near, NEIGHBOURS)
    sweep = []
    for nprobe in sorted({*NPROBES, index.params["nprobe"]}):
        faiss.cvar.indexIVF_stats.reset()
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        (scores, found), seconds = fastest(index.index.search, queries, NEIGHBOURS + 1, params=params)
        keep = (scores >= SEARCH_THRESHOLDS.near) & (found >= 0) & (found != qids[:, None])
        keys = np.broadcast_to(qids[:, None], keep.shape)[keep] * (n + 1) + found[keep]
        sweep.append({"nprobe": nprobe, "own": nprobe == index.params["nprobe"], "seconds": round(seconds, 2),
                      "queries_per_s": round(len(queries) / seconds),
                      "compared_per_query": round(faiss.cvar.indexIVF_stats.ndis / REPEATS / len(queries)),
                      "pairs_found": round(len(np.intersect1d(keys, truth)) / max(len(truth), 1), 4)})
        print(json.dumps(sweep[-1]), flush=True)
    return {"queries": len(queries), "pairs": len(truth), "exact_s": round(exact_s, 2),
            "knn_ceiling": round(ceiling, 4), "rows": sweep}


def timed_find(lib, planted: dict[str, dict[int, int]]) -> dict[str, Any]:
    """find_duplicates over every vector: its time, the groups and the planted duplicates it put with their source."""
    from vlsearch.search.duplicates import KINDS, find_duplicates

    started = time.perf_counter()
    groups = find_duplicates(lib, MODEL, progress=Progress())
    seconds = time.perf_counter() - started
    group_of = {m.id: n for n, g in enumerate(groups) for m in g.members}
    found = {kind: round(sum(group_of.get(a, -1) == group_of.get(b, -2) for a, b in pairs.items()) / len(pairs), 4)
             for kind, pairs in planted.items() if pairs}
    return {"seconds": round(seconds, 1), "groups": len(groups), "kinds": {k: sum(g.kind == k for g in groups)
                                                                          for k in KINDS},
            "images_in_groups": sum(len(g.members) for g in groups),
            "largest_group": max((len(g.members) for g in groups), default=0), "planted_found": found}


def measure_scale(args: argparse.Namespace) -> dict[str, Any]:
    from bench.products import index_info

    started = time.perf_counter()
    data = make_data(args.images, QUERIES, DIM, args.seed, GAPS)
    planted = with_duplicates(data, args.seed)
    data_s = time.perf_counter() - started
    lib, fill_s = filled_library(args.cache, MODEL, DIM, data, args.seed)
    print(f"data made in {data_s:.0f} s, library filled in {fill_s:.0f} s", flush=True)
    index = index_info(lib, MODEL)
    print(json.dumps({"index": index}, default=str), flush=True)
    vector_index = lib.vector_index(MODEL)
    knn = knn_against_range(lib, vector_index)
    print(json.dumps({"knn_against_range": knn}), flush=True)
    sweep = nprobe_sweep(vector_index, data, args.seed)
    del data
    found = timed_find(lib, planted)
    found["images_per_s"] = round(args.images / found["seconds"], 1)
    print(json.dumps({"find_duplicates": found}), flush=True)
    lib.close()
    return {"data_s": round(data_s, 1), "library_fill_s": round(fill_s, 1), "index": index,
            "find_duplicates": found, "knn_against_range": knn, "nprobe_sweep": sweep}


# ------------------------------------------------------------------------------------------------- the report


def scale_lines(report: dict[str, Any]) -> list[str]:
    from vlsearch.search.duplicates import DUPLICATE_NPROBE, NEIGHBOURS, SEARCH_THRESHOLDS

    s = report["results"]["scale"]
    ix, f, kr, sw = s["index"], s["find_duplicates"], s["knn_against_range"], s["nprobe_sweep"]
    guard = ", ".join(f"{k.replace('_', '-')} {ix['guard'][k]}" for k in ("text_like", "target") if k in ix["guard"])
    settings = ", ".join(f"{k}={v}" for k, v in ({"nlist": ix.get("nlist")} | ix["params"]).items() if v)
    planted = report["sizes"]["images"] // 100
    depth = f" at nprobe {kr['nprobe']}" if kr["nprobe"] else " (an exact index)"
    lines = [
        "## At scale: synthetic vectors", "",
        f"Setup: {report['sizes']['images']:,} images with synthetic {DIM}-d vectors (see bench/duplicates.py), 1% "
        f"replaced by copies of other images (cosine {PLANTED['copies']} to their source), 1% by near-duplicates "
        f"({PLANTED['near_duplicates']}); the library's own index: **{ix['kind']}** ({settings or 'exact'}; recall "
        f"guard: {guard or '-'}), ready in {ix['seconds']:.0f} s. `find_duplicates` at its defaults: near "
        f"{SEARCH_THRESHOLDS.near:.2f}, copy {SEARCH_THRESHOLDS.copy:.2f}, {NEIGHBOURS} neighbours, at most nprobe "
        f"{DUPLICATE_NPROBE}. Data made in {s['data_s']:.0f} s, library filled in {s['library_fill_s']:.0f} s "
        "(0 when cached).", "",
        "| images | seconds | images/s | groups | exact | copy | near | images in groups | largest group | "
        "planted copies found | planted near-duplicates found |", "|---:" * 11 + "|",
        f"| {report['sizes']['images']:,} | {f['seconds']:.1f} | {f['images_per_s']:,.0f} | {f['groups']:,} | "
        f"{f['kinds']['exact']:,} | {f['kinds']['copy']:,} | {f['kinds']['near']:,} | {f['images_in_groups']:,} | "
        f"{f['largest_group']:,} | {f['planted_found'].get('copies', 0):.4f} | "
        f"{f['planted_found'].get('near_duplicates', 0):.4f} |", "",
        f"Found: the share of planted copies (near-duplicates) that are in their source's group. Planted: "
        f"{planted:,} of each; the other links are the mixture's own close pairs (its dense clusters).", "",
        f"kNN against a range search, one batch of {kr['queries']:,} stored vectors{depth}: kNN (k={kr['k']}) "
        f"**{kr['knn_s']:.2f} s**, range search (radius {kr['radius']:.2f}) **{kr['range_s']:.2f} s**; pairs at or "
        f"above {kr['radius']:.2f}, self left out: kNN {kr['knn_pairs']:,}, range {kr['range_pairs']:,}."]
    if sw is None:
        return [*lines, "", f"No nprobe sweep: the index is {ix['kind']}, not IVF-Flat."]
    lines += ["", f"Probe depth, one batch of {sw['queries']:,} random stored vectors, k={NEIGHBOURS + 1}: "
              f"{sw['pairs']:,} pairs at or above {SEARCH_THRESHOLDS.near:.2f} by exact search over all vectors "
              f"({sw['exact_s']:.1f} s); even exact, {NEIGHBOURS} neighbours an image would find at most "
              f"{sw['knn_ceiling']:.4f} of them (an image with more such neighbours keeps {NEIGHBOURS}).", "",
              "| nprobe | seconds per batch | queries/s | vectors compared per query | pairs found |",
              "|---:|---:|---:|---:|---:|"]
    for r in sw["rows"]:
        label = f"{r['nprobe']}" + (" (the index's own)" if r["own"] else "") + \
            (" (duplicates')" if r["nprobe"] == DUPLICATE_NPROBE else "")
        lines.append(f"| {label} | {r['seconds']:.2f} | {r['queries_per_s']:,} | "
                     f"{r['compared_per_query']:,} | {r['pairs_found']:.4f} |")
    return lines


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m, results = report["machine"], report["results"]
    lines = [
        "# Duplicate groups: speed at scale, and copies of real photos", "",
        f"Command: `{report['command']}` (raw numbers: `duplicates.json`). Measured {report['date']}, total run "
        f"{report['total_seconds']:.0f} s.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used. faiss-cpu "
        f"{m['faiss']} ({m['faiss_threads']} threads), torch {m['torch']} ({m['torch_threads']} threads), Python "
        f"{m['python']}.", ""]
    if results.get("scale"):
        lines += [*scale_lines(report), ""]
    if results.get("copies"):
        lines += copies_lines(results["copies"])
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench duplicates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for duplicates.json and duplicates.md")
    p.add_argument("--images", type=int, default=1_000_000, help="synthetic images of the scale part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-duplicates",
                   help="where the synthetic library is kept between runs")
    p.add_argument("--skip-scale", action="store_true", help="measure only the copies of the sample photos")
    p.add_argument("--skip-copies", action="store_true", help="measure only the synthetic library at scale")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"scale": None, "copies": None}
    if not args.skip_scale:
        args.cache.mkdir(parents=True, exist_ok=True)
        results["scale"] = measure_scale(args)
    if not args.skip_copies:
        results["copies"] = measure_copies()
        print(json.dumps({"copies": results["copies"]["find_duplicates"]}), flush=True)
    copies = results["copies"]
    sizes = {"images": None if args.skip_scale else args.images, "seed": args.seed,
             "planted": {k: {"share": 0.01, "cosine": v} for k, v in PLANTED.items()},
             "sample_photos": copies and copies["photos"], "sample_images": copies and copies["images"]}
    report = {"command": recorded_command("duplicates", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "sizes": sizes, "results": results, "total_seconds": round(time.perf_counter() - started, 1)}
    print(f"total {report['total_seconds']:.0f} s", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "duplicates.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(args.out / "duplicates.md", report)


if __name__ == "__main__":
    main()
