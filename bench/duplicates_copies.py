"""The second part of `python -m bench duplicates`: copies of the bundled sample photos, embedded by the offline model,
and how well search/duplicates.py's thresholds tell a photo's copies from other photos (see bench/duplicates.py).

Each sample photo (vlsearch.images.samples.sample_photos) is written as NAME.png, with 7 copies (half size, JPEG
quality 40, a 5% crop, a 10% crop off two sides, recoloured, a 5% white border, mirrored) and a burst-like frame
(moved 12% and turned 2 degrees: a neighbour, not a copy) as NAME--TRANSFORM.jpg, and indexed into a new library by
`Indexer(library, load_encoder("offline", device="cpu"), workers=0)`."""

from __future__ import annotations

import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# The real photographs among the samples; the others are textures, micrographs, text and drawings.
PHOTOGRAPHS = ("astronaut", "camera", "chelsea", "china", "coffee", "flower", "horse", "rocket")
COPIES = ("half", "q40", "crop5", "crop10", "recolour", "border", "mirror")
TRANSFORMS = (*COPIES, "burst")
ORIGINAL = "original"


def transforms(image: Image.Image) -> dict[str, Image.Image]:
    """Each transform's version of `image` (q40's is the image itself, saved at JPEG quality 40)."""
    w, h = image.size
    rgb = image.convert("RGB")
    c5 = (int(w * 0.05), int(h * 0.05))
    return {
        "half": rgb.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "q40": rgb,
        "crop5": rgb.crop((c5[0], c5[1], w - c5[0], h - c5[1])),
        "crop10": rgb.crop((int(w * 0.10), 0, w, int(h * 0.90))),  # 10% off the left and the bottom
        "recolour": ImageEnhance.Color(ImageEnhance.Brightness(rgb).enhance(1.25)).enhance(0.6),
        "border": ImageOps.expand(rgb, border=max(2, int(0.05 * max(w, h))), fill=(255, 255, 255)),
        "mirror": ImageOps.mirror(rgb),
        "burst": rgb.crop((int(w * 0.12), 0, w, h)).rotate(2, resample=Image.Resampling.BICUBIC, expand=False),
    }


def write_photos(folder: Path) -> list[str]:
    """The sample photos and their versions, written into `folder`; the photos' names."""
    from vlsearch.images.samples import sample_photos

    photos = sample_photos()
    for name, image in photos.items():
        image.save(folder / f"{name}.png")
        for kind, version in transforms(image).items():
            version.save(folder / f"{name}--{kind}.jpg", quality=40 if kind == "q40" else 90)
    return list(photos)


def version_of(path: str) -> tuple[str, str]:
    """(photo name, transform or "original") from a written file's path."""
    name, _, kind = Path(path).stem.partition("--")
    return name, kind or ORIGINAL


def transform_rows(sim: np.ndarray, names: np.ndarray, kinds: np.ndarray) -> list[dict[str, Any]]:
    """Per transform: the copy-to-original similarity (min, median) and recall@1 with sibling versions left out,
    for the photographs and for all photos."""
    original = {n: j for j, (n, k) in enumerate(zip(names, kinds, strict=True)) if k == ORIGINAL}
    photo = np.isin(names, PHOTOGRAPHS)
    rows = []
    for kind in TRANSFORMS:
        row: dict[str, Any] = {"transform": kind}
        for label, keep in (("photographs", photo), ("all", np.ones(len(names), dtype=bool))):
            mine = np.flatnonzero(keep & (kinds == kind))
            to_original = np.array([sim[j, original[names[j]]] for j in mine])
            hits = [nearest_other(sim, names, kinds, keep, j) == original[names[j]] for j in mine]
            row[label] = {"images": len(mine), "min": round(float(to_original.min()), 3),
                          "median": round(float(np.median(to_original)), 3), "recall_at_1": int(sum(hits))}
        rows.append(row)
    return rows


def nearest_other(sim: np.ndarray, names: np.ndarray, kinds: np.ndarray, keep: np.ndarray, j: int) -> int:
    """Image j's nearest among `keep`, itself and its sibling versions (same photo, not the original) left out."""
    candidates = keep & ((names != names[j]) | (kinds == ORIGINAL))
    candidates[j] = False
    where = np.flatnonzero(candidates)
    return int(where[np.argmax(sim[j, where])])


def margins(sim: np.ndarray, names: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """The closest two distinct photos: any versions but bursts, among the photographs; originals, among all."""
    photo, other = np.isin(names, PHOTOGRAPHS), names[:, None] != names[None, :]
    versions = photo & (kinds != "burst")
    nearest_versions = float(sim[other & versions[:, None] & versions[None, :]].max())
    originals = np.flatnonzero(kinds == ORIGINAL)
    pairs = [(float(sim[a, b]), str(names[a]), str(names[b])) for a, b in combinations(originals, 2)]
    score, a, b = max(pairs)
    return {"photographs_distinct_max": round(nearest_versions, 3), "originals_distinct_max": round(score, 3),
            "originals_closest_pair": f"{a}/{b}"}


def copies_joined(sim: np.ndarray, names: np.ndarray, kinds: np.ndarray, threshold: float) -> int:
    """How many photographs' original and 7 copies links at or above `threshold` alone join into one group."""
    joined = 0
    for name in PHOTOGRAPHS:
        mine = np.flatnonzero((names == name) & (kinds != "burst"))
        a, b = np.nonzero(np.triu(sim[np.ix_(mine, mine)] >= threshold, 1))
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(mine), len(mine)))
        joined += connected_components(graph, directed=False)[0] == 1
    return joined


def pair_scores(groups, paths: list[str], keep: set[str]) -> dict[str, Any]:
    """Pair precision and recall of `groups` over the images of the photos in `keep` (two images belong together
    when they are versions of one photo, the burst frame included), and the kinds of the groups among them."""
    group_of = {m.path: n for n, g in enumerate(groups) for m in g.members}
    mine = [p for p in paths if version_of(p)[0] in keep]
    tp = fp = fn = 0
    for x, y in combinations(mine, 2):
        same = version_of(x)[0] == version_of(y)[0]
        joined = x in group_of and group_of[x] == group_of.get(y)
        tp, fp, fn = tp + (same and joined), fp + (joined and not same), fn + (same and not joined)
    kinds: dict[str, int] = {}
    for g in groups:
        if all(version_of(m.path)[0] in keep for m in g.members):
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
    return {"images": len(mine), "precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
            "tp": tp, "fp": fp, "fn": fn, "groups": kinds}


def indexed_library(lib, folder: Path) -> tuple[str, dict[str, Any]]:
    """Embed `folder` into `lib` with the offline model: its name and what indexing did."""
    from vlsearch.encoders import load_encoder
    from vlsearch.indexer import Indexer

    started = time.perf_counter()
    encoder = load_encoder("offline", device="cpu")
    load_s = time.perf_counter() - started
    report = Indexer(lib, encoder, workers=0).run([folder])
    return encoder.name, {"model_load_s": round(load_s, 1), "embedded": report.embedded, "errors": report.errors,
                          "index_s": round(report.seconds, 1)}


def measure_copies() -> dict[str, Any]:
    """Write, index and score the sample photos and their copies in a temporary library: the similarities in each
    vector space the model stores (its visual descriptor, its search vectors), and find_duplicates' groups."""
    from sqlalchemy import select

    from vlsearch.encoders.base import VISUAL
    from vlsearch.library import ImageRecord, Library
    from vlsearch.library.spaces import companion
    from vlsearch.search.duplicates import comparison_space, find_duplicates

    with tempfile.TemporaryDirectory(prefix="vlsearch-bench-duplicates-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos = write_photos(folder)
        lib = Library.open(Path(tmp) / "library")
        model, indexing = indexed_library(lib, folder)
        with lib.session() as s:
            path_of = dict(s.execute(select(ImageRecord.id, ImageRecord.path)).all())
        spaces = {}
        for label, space in (("visual descriptor", companion(model, VISUAL)), ("search vectors", model)):
            ids, vectors = lib.load_vectors(space)
            paths = [path_of[int(i)] for i in ids]
            spaces[label] = space_scores(vectors @ vectors.T, paths)
        compared, thresholds = comparison_space(lib, model)
        started = time.perf_counter()
        groups = find_duplicates(lib, model)
        find_s = time.perf_counter() - started
        lib.close()
    return {"model": model, "photos": len(photos), "photographs": list(PHOTOGRAPHS), "images": len(paths),
            "indexing": indexing, "compared": compared, "near_threshold": thresholds.near,
            "copy_threshold": thresholds.copy, "spaces": spaces,
            "find_duplicates": {"seconds": round(find_s, 2), "groups": len(groups),
                                "photographs": pair_scores(groups, paths, set(PHOTOGRAPHS)),
                                "all": pair_scores(groups, paths, set(photos))}}


def space_scores(sim: np.ndarray, paths: list[str]) -> dict[str, Any]:
    """How one vector space tells copies from other photos: per transform, and the closest distinct photos."""
    names, kinds = (np.array(v) for v in zip(*map(version_of, paths), strict=True))
    return {"transforms": transform_rows(sim, names, kinds), "margins": margins(sim, names, kinds),
            "photographs_joined_at": {f"{t:.2f}": int(copies_joined(sim, names, kinds, t))
                                      for t in (0.70, 0.80, 0.90, 0.92)}}


def copies_lines(c: dict[str, Any]) -> list[str]:
    """The report's section on the copies."""
    fd, ix = c["find_duplicates"], c["indexing"]
    lines = [
        "## Copies of the sample photos, offline model", "",
        f"Setup: the {c['photos']} bundled sample photos, each with 7 copies (half size, JPEG quality 40, 5% crop, "
        "10% crop off two sides, recoloured, 5% white border, mirrored) and a burst-like frame (moved 12%, turned 2 "
        f"degrees), {c['images']} images indexed with the `{c['model']}` preset on the CPU in {ix['index_s']:.0f} s "
        f"({ix['errors']} errors). The photographs: {', '.join(c['photographs'])}; the other samples are textures, "
        "micrographs, text and drawings.", "",
        "- **similarity**: each version's cosine with its own original (min / median over the photos);",
        "- **recall@1**: the version's nearest image, its own sibling versions left out, is its original (among the "
        "photographs, or among all photos).", ""]
    for label, space in c["spaces"].items():
        lines += space_lines(label, space)
    lines += [f"`find_duplicates` at its defaults (compares `{c['compared']}`: near {c['near_threshold']:.2f}, copy "
              f"{c['copy_threshold']:.2f}): {fd['groups']} groups in {fd['seconds']:.2f} s. Pairs: two images belong "
              "together when they are versions of one photo, the burst frame included.", "",
              "| photos | images | pair precision | pair recall | true / false pairs, missed | groups by kind |",
              "|---|---:|---:|---:|---|---|"]
    for label in ("photographs", "all"):
        r = fd[label]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["groups"].items())) or "-"
        lines.append(f"| {label} | {r['images']} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['tp']} / {r['fp']}, {r['fn']} | {kinds} |")
    return lines


def space_lines(label: str, space: dict[str, Any]) -> list[str]:
    """One vector space's table: similarity and recall@1 per transform, then its margins."""
    m = space["margins"]
    lines = [f"### {label[0].upper()}{label[1:]}", "",
             "| transform | photographs: min | median | recall@1 | all photos: min | median | recall@1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in space["transforms"]:
        p, a = r["photographs"], r["all"]
        name = r["transform"] + (" (not a copy)" if r["transform"] == "burst" else "")
        lines.append(f"| {name} | {p['min']:.3f} | {p['median']:.3f} | {p['recall_at_1']}/{p['images']} | "
                     f"{a['min']:.3f} | {a['median']:.3f} | {a['recall_at_1']}/{a['images']} |")
    copies = [r for r in space["transforms"] if r["transform"] in COPIES]
    hits = {k: (sum(r[k]["recall_at_1"] for r in copies), sum(r[k]["images"] for r in copies))
            for k in ("photographs", "all")}
    joined = ", ".join(f"{n} at {t}" for t, n in space["photographs_joined_at"].items())
    return lines + [
        f"| **all 7 copies** | | | {'/'.join(map(str, hits['photographs']))} | | | "
        f"{'/'.join(map(str, hits['all']))} |", "",
        f"Distinct photos: any two versions of different photographs (bursts left out) score at most "
        f"{m['photographs_distinct_max']:.3f}; the closest two originals among all photos, "
        f"{m['originals_closest_pair']}, {m['originals_distinct_max']:.3f}. Links at or above a threshold alone join "
        f"the original and 7 copies of this many of the {len(PHOTOGRAPHS)} photographs: {joined}.", ""]
