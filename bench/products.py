"""Grouped product search with product conditions at 100k products x 3 images, and the catalogue import rate.

Why: a shop searches its catalogue by text and gets products, not pictures, usually narrowed by a condition (a
brand, a colour, a price). This measures that wait end to end through search.SearchEngine with group="product"
(encode the text, search FAISS or score the admitted images, group the image hits by product, widen until 10
products are found, read the products' rows), with no condition, a selective one, a broad one and a range; how
many of the exact best products it returns; and how fast `vlsearch products import` takes in a catalogue's rows.

The library: --products x --images-per-product images with the synthetic 512-d vectors of bench/query.py
(`make_data`: the CLIP-like mixture, and text-like query vectors that model CLIP's modality gap), written into a
library by `filled_library`; then the products, inserted in bulk into `products` and `product_images` (image ids
3p+1..3p+3 show product p; the FTS triggers of a real import fire). Both are cached in --cache per sizes and seed.
The index is the one the library picks for its size (`Library.vector_index`: IVF with the recall guard at 300k).
Product fields come from a seeded generator: brand b0000..b0999 (p mod 1000: one brand is 0.1% of the products),
one of 20 categories, a price uniform in 1..500, and a colour attribute c0..c9 (c0|c1|c2 is 30%).

Queries: --queries text queries, each through `SearchEngine.search(SearchQuery(text, group="product", k=10,
filters=Filters(where=...)))`. The engine's encoder runs the real tiny-random text encoder on a distinct text
(its cost is real) and answers with the query's synthetic vector. Cases: none, selective (brand=bNNNN, a brand
drawn per query), broad (colour=c0|c1|c2), range (price<50) and range+broad. Each query is timed in 2 passes and
its fastest time kept; p50/p99 are over the queries. Recall@10: the products returned against the exact grouped
answer (numpy over every image vector, a product scored by its best image, the same condition evaluated on the
generated fields), divided by the exact answer's size when the condition admits fewer than 10 products.

Import: a CSV of --import-rows products (3 picture paths each, which do not exist) imported into a new library by
`CatalogueImport(library, index=None)`: rows and links only, so every picture comes back as a "not indexed"
problem (expected; indexing pictures is the indexing benchmark's).

    python -m bench products --out bench/results
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import operator
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.query import SyntheticVectorEncoder, filled_library, machine, make_data, percentiles, timed
from bench.record import recorded_command

MODEL, DIM, K, GAPS, REPEATS = "tiny-random", 512, 10, 4, 2
BRANDS, COLOURS = 1000, tuple(f"c{i}" for i in range(10))
CATEGORIES = ("shoes", "bags", "shirts", "trousers", "dresses", "jackets", "hats", "scarves", "belts", "watches",
              "rings", "necklaces", "lamps", "chairs", "tables", "rugs", "mugs", "plates", "toys", "books")
BROAD, RANGE = "colour=c0|c1|c2", "price<50"
CASES = ("none", "selective", "broad", "range", "range+broad")
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


# ------------------------------------------------------------------------------------------------- the catalogue


def catalogue(products: int, seed: int) -> dict[str, np.ndarray]:
    """Each product's fields, as arrays indexed by product number."""
    rng = np.random.default_rng(seed + 7)
    p = np.arange(products)
    return {"brand": np.array([f"b{b:04d}" for b in p % BRANDS]),
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), products)],
            "price": np.round(rng.uniform(1, 500, products), 2),
            "colour": np.array(COLOURS)[rng.integers(0, len(COLOURS), products)]}


def product_row(fields: dict[str, np.ndarray], p: int) -> dict[str, Any]:
    return {"id": f"p{p}", "title": f"product {p}", "brand": str(fields["brand"][p]),
            "category": str(fields["category"][p]), "price": float(fields["price"][p]), "currency": "EUR",
            "attributes": json.dumps({"colour": str(fields["colour"][p])}), "seen_in": "bench"}


def add_products(lib, fields: dict[str, np.ndarray], per: int, seed: int) -> float:
    """The products and their image links, inserted once per (products, images per product, seed); seconds."""
    from sqlalchemy import delete, insert, select

    from vlsearch.library.schema import ImageRecord, Product, ProductImage

    products = len(fields["brand"])
    marker = lib.root / f"products-{products}x{per}-s{seed}"
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    with lib.session() as s:
        s.execute(delete(ProductImage))  # another sizing's products, if any
        s.execute(delete(Product))
        paths = dict(s.execute(select(ImageRecord.id, ImageRecord.path)).all())
        for lo in range(0, products, 10_000):
            ps = range(lo, min(lo + 10_000, products))
            s.execute(insert(Product.__table__), [product_row(fields, p) for p in ps])
            s.execute(insert(ProductImage.__table__), [
                {"product_id": f"p{p}", "position": j, "ref": paths[per * p + j + 1], "line": p + 2,
                 "image_id": per * p + j + 1} for p in ps for j in range(per)])
    marker.write_text(f"{products} products x {per} images, seed {seed}\n")
    return time.perf_counter() - started


def conditions(case: str, queries: int, products: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """The conditions each query of a case carries."""
    if case == "selective":
        return [(f"brand=b{b:04d}",) for b in rng.integers(0, min(BRANDS, products), queries)]
    return [{"none": (), "broad": (BROAD,), "range": (RANGE,), "range+broad": (RANGE, BROAD)}[case]] * queries


def admitted(fields: dict[str, np.ndarray], where: tuple) -> np.ndarray:
    """Which products meet the parsed conditions `where`, computed from the generated fields."""
    mask = np.ones(len(fields["brand"]), dtype=bool)
    for c in where:
        column = fields[c.name]
        if c.op in ("=", "!="):
            mask &= np.isin(np.char.lower(column), [v.lower() for v in c.values]) == (c.op == "=")
        else:
            mask &= OPS[c.op](column, float(c.values[0]))
    return mask


# ------------------------------------------------------------------------------------------------- measuring


def product_scores(vectors: np.ndarray, queries: np.ndarray, per: int) -> np.ndarray:
    """(queries, products): each product's best image score, exactly, in float32."""
    out = np.empty((len(queries), len(vectors) // per), dtype=np.float32)
    step = 60_000 - 60_000 % per
    for lo in range(0, len(vectors), step):
        chunk = vectors[lo: lo + step] @ queries.T
        out[:, lo // per: (lo + len(chunk)) // per] = chunk.reshape(-1, per, len(queries)).max(axis=1).T
    return out


def exact_top(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    candidates = np.flatnonzero(mask)
    if len(candidates) > K:
        candidates = candidates[np.argpartition(-scores[candidates], K - 1)[:K]]
    return candidates


def recall(found: dict[int, list[int]], truth: list[np.ndarray]) -> tuple[float, float, int]:
    """Mean and worst recall over the queries whose exact answer is not empty, and how many those are."""
    per = [len(set(found[i]) & set(t.tolist())) / len(t) for i, t in enumerate(truth) if len(t)]
    return (round(float(np.mean(per)), 4), round(float(np.min(per)), 4), len(per)) if per else (0.0, 0.0, 0)


def measure_case(case: str, engine, encoder, texts: list[str], data: dict[str, np.ndarray],
                 scores: np.ndarray, fields: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
    from vlsearch.search import SearchQuery
    from vlsearch.search.conditions import Condition
    from vlsearch.search.query import Filters

    count = len(texts)
    written = conditions(case, count, len(fields["brand"]), rng)
    wheres = [tuple(Condition.parse(c) for c in cs) for cs in written]
    masks = [admitted(fields, where) for where in wheres]
    truth = [exact_top(scores[i], masks[i]) for i in range(count)]
    found: dict[int, list[int]] = {}

    def search(i: int) -> None:
        encoder.answer = data["text"][i]
        hits = engine.search(SearchQuery(text=texts[i], group="product", k=K, filters=Filters(where=wheres[i])))
        found[i] = [int(h.product.id[1:]) for h in hits]

    latency = percentiles(timed(search, count, REPEATS))
    mean, worst, scored = recall(found, truth)
    share = float(np.mean([m.mean() for m in masks]))
    shown = written[0] if case != "selective" else ("brand=bNNNN (a brand per query)",)
    return {"case": case, "condition": " and ".join(shown) or "(none)", "admits_pct": round(100 * share, 3),
            **latency,
            "recall_at_10": mean, "recall_worst": worst, "queries_scored": scored}


def index_info(lib, model: str) -> dict[str, Any]:
    """The library's own index for the model (loaded, or built with the recall guard on first use)."""
    existed = lib.index_path(model).exists()
    started = time.perf_counter()
    index = lib.vector_index(model)
    info = {"kind": index.kind, "params": dict(index.params), "guard": dict(index.recall),
            "build": dict(index.build_info), "loaded_from_file": existed,
            "seconds": round(time.perf_counter() - started, 1)}
    if index.kind in ("ivf", "ivfpq"):
        info["nlist"] = int(faiss.extract_index_ivf(index.index).nlist)
    return info


def import_rate(rows: int, per: int, seed: int) -> dict[str, Any]:
    """Rows/s of `CatalogueImport(index=None)` over a CSV of `rows` products, into a new library."""
    from vlsearch.indexer.products import CatalogueImport
    from vlsearch.library import Library

    fields = catalogue(rows, seed)
    with tempfile.TemporaryDirectory(prefix="vlsearch-bench-products-") as tmp:
        path = Path(tmp) / "catalogue.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["product_id", "title", "brand", "category", "price", "currency", "image", "colour"])
            for p in range(rows):
                out.writerow([f"p{p}", f"product {p}", fields["brand"][p], fields["category"][p],
                              f"{fields['price'][p]:.2f}", "EUR",
                              "|".join(f"pictures/p{p}-{j}.jpg" for j in range(per)), fields["colour"][p]])
        lib = Library.open(Path(tmp) / "library")
        started = time.perf_counter()
        report = CatalogueImport(lib, index=None).run(path)
        seconds = time.perf_counter() - started
        lib.close()
    return {"rows": report.rows, "seconds": round(seconds, 1), "rows_per_s": round(report.rows / seconds, 1),
            "new": report.new, "updated": report.updated, "images": report.images,
            "problems": report.problem_count, "not_indexed": report.unlinked}


# ------------------------------------------------------------------------------------------------- the report


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m, s, ix, imp = report["machine"], report["sizes"], report["index"], report["import"]
    guard = ", ".join(f"{k.replace('_', '-')} {ix['guard'][k]}" for k in ("text_like", "target") if k in ix["guard"])
    settings = ", ".join(f"{k}={v}" for k, v in ({"nlist": ix.get("nlist")} | ix["params"]).items() if v)
    lines = [
        "# Grouped product search with conditions, and the catalogue import rate", "",
        f"Command: `{report['command']}` (raw numbers: `products.json`). Measured {report['date']}, total run "
        f"{report['total_seconds']:.0f} s.", "",
        f"Machine: CPU `{m['cpu']}`, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used. faiss-cpu "
        f"{m['faiss']} ({m['faiss_threads']} threads), torch {m['torch']} ({m['torch_threads']} threads), Python "
        f"{m['python']}.", "",
        f"Setup: {s['products']:,} products x {s['images_per_product']} images = {s['images']:,} images (synthetic "
        f"{DIM}-d vectors, see bench/products.py); the library's own index: **{ix['kind']}** ({settings or 'exact'}; "
        f"recall guard: {guard or '-'}). {s['queries']} text queries per case, the {MODEL} text encoder run on "
        f"each, fastest of {REPEATS} passes. Library filled in {s['library_fill_s']:.0f} s, products inserted in "
        f"{s['products_insert_s']:.0f} s (FTS triggers included; 0 when cached).", "",
        "- **condition**: the `where` every query of the case carries; **admits**: the share of products meeting it "
        "(mean over the queries);",
        "- **p50 / p99 ms**: `SearchEngine.search(group=\"product\", k=10)` end to end: encode the text, estimate "
        "the share of products the condition admits from a sample, search (a condition on indexed fields admitting "
        "at most 2,000 products: by scoring their images; else the index first, as deep and probing as many IVF "
        "lists as that share asks, fetched deeper until 10 products survive, at most 3 times; then, if the "
        "condition admits at most 20,000 images, by scoring them all), group by product, read the products;",
        "- **recall@10**: the products returned that are among the exact 10 (numpy over every image, a product "
        "scored by its best image, the same condition), / the exact answer's size; mean over the queries "
        "(worst in brackets).", "",
        "| case | condition | admits % of products | p50 ms | p99 ms | recall@10 grouped vs exact |",
        "|---|---|---:|---:|---:|---:|"]
    for r in report["cases"]:
        condition = r["condition"].replace("|", "\\|")  # a table cell's pipe, even in code
        lines.append(f"| {r['case']} | `{condition}` | {r['admits_pct']:.1f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['recall_at_10']:.3f} ({r['recall_worst']:.2f}) |")
    lines += ["", f"Import: **{imp['rows_per_s']:,.0f} rows/s**: {imp['rows']:,} CSV rows ({imp['images']:,} picture "
              f"paths) in {imp['seconds']:.1f} s into a new library by `CatalogueImport(library, index=None)`: "
              f"{imp['new']:,} new products, {imp['problems']:,} problems, of which {imp['not_indexed']:,} pictures "
              "\"not indexed\" (expected: the files do not exist; indexing pictures is the indexing benchmark's)."]
    path.write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench products", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for products.json and products.md")
    p.add_argument("--products", type=int, default=100_000)
    p.add_argument("--images-per-product", type=int, default=3)
    p.add_argument("--queries", type=int, default=200, help="text queries per case, timed one by one")
    p.add_argument("--import-rows", type=int, default=100_000, help="rows of the imported CSV")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vlsearch-bench-products",
                   help="where the synthetic library is kept between runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.api import load_bench_encoder, query_texts
    from vlsearch.search import SearchEngine

    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    real = load_bench_encoder(MODEL, "cpu")
    encoder = SyntheticVectorEncoder(real, real.name, DIM)
    per, n = args.images_per_product, args.products * args.images_per_product
    data = make_data(n, args.queries, DIM, args.seed, GAPS)
    lib, fill_s = filled_library(args.cache, real.name, DIM, data, args.seed)
    fields = catalogue(args.products, args.seed)
    insert_s = add_products(lib, fields, per, args.seed)
    print(f"library filled in {fill_s:.0f} s, products inserted in {insert_s:.0f} s", flush=True)
    index = index_info(lib, real.name)
    print(json.dumps({"index": index}, default=str), flush=True)
    stream = query_texts()
    texts = [next(stream) for _ in range(args.queries)]
    scores = product_scores(data["vectors"], data["text"], per)
    engine, rng = SearchEngine(lib, encoder), np.random.default_rng(args.seed + 11)
    cases = []
    for case in CASES:
        cases.append(measure_case(case, engine, encoder, texts, data, scores, fields, rng))
        print(json.dumps(cases[-1]), flush=True)
    lib.close()
    imported = import_rate(args.import_rows, per, args.seed)
    print(json.dumps({"import": imported}), flush=True)
    report = {"command": recorded_command("products", argv),
              "date": datetime.datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "model": real.name, "sizes": {"products": args.products, "images_per_product": per, "images": n,
                                            "queries": args.queries, "repeats": REPEATS,
                                            "library_fill_s": round(fill_s, 1),
                                            "products_insert_s": round(insert_s, 1)},
              "index": index, "cases": cases, "import": imported,
              "total_seconds": round(time.perf_counter() - started, 1)}
    print(f"total {report['total_seconds']:.0f} s", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "products.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(args.out / "products.md", report)


if __name__ == "__main__":
    main()
