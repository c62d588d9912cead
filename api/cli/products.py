"""`vlsearch products`: import a product catalogue (its rows become products, its pictures indexed images), and
find products like a product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from vlsearch.api.cli.index import TAGGING, Phase, PhaseBars, print_indexed
from vlsearch.api.cli.loading import (
    engine_for,
    generation,
    library_caption_model,
    load_model,
    load_ocr,
    open_library,
)
from vlsearch.api.cli.options import (
    BatchSizeOpt,
    CaptionsOpt,
    DeviceOpt,
    IndexOcrOpt,
    JsonOpt,
    KOpt,
    LibraryOpt,
    ModelDirOpt,
    ModelOpt,
    PrecisionOpt,
    WeightsOpt,
    WhereOpt,
    WorkersOpt,
)
from vlsearch.api.cli.output import console, fail, print_described, print_hits, writer_lock

CatalogueArg = Annotated[Path, typer.Argument(help="The catalogue: a .csv, .tsv, .jsonl or .parquet file.",
                                              exists=True, dir_okay=False, show_default=False)]
FormatOpt = Annotated[str | None, typer.Option("--format", help="csv, jsonl or parquet (default: from the file's "
                                               "suffix).")]
PruneProductsOpt = Annotated[bool, typer.Option("--prune", help="Forget the products this file does not name.")]
ProductArg = Annotated[str, typer.Argument(help="A product id from the catalogue.", show_default=False)]
PROBLEMS_SHOWN = 20


def import_products(
    catalogue: CatalogueArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    format: FormatOpt = None,
    prune: PruneProductsOpt = False,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    captions: CaptionsOpt = True,
    ocr: IndexOcrOpt = True,
) -> None:
    """Import a product catalogue: each row a product (product_id, title, description, brand, category, price,
    currency, url, image, and any other column as an attribute), its images indexed as `vlsearch index` does.

    Run it again after the catalogue changes: changed rows update their products and new images are indexed;
    with --prune, the products the file no longer names are forgotten. Rows that cannot be imported are listed by
    line, and the command then exits with status 1."""
    from vlsearch.indexer import Indexer
    from vlsearch.indexer.catalogue import CatalogueError, catalogue_format
    from vlsearch.indexer.products import CatalogueImport
    from vlsearch.library import LibraryError

    try:
        format = catalogue_format(catalogue, format)  # before the models load: a wrong file is said at once
    except CatalogueError as exc:
        raise fail(exc) from None

    lib = open_library(library, create=True)
    encoder = load_model(model or lib.default_model() or "auto", weights, model_dir, device, precision)
    captioner = (library_caption_model(lib, None, model_dir, device, generation(3, 30), precision)[0]
                 if captions else None)
    indexer = Indexer(lib, encoder, batch_size=batch_size, workers=workers, prune=False, captioner=captioner,
                      ocr=load_ocr() if ocr else None)
    bars = PhaseBars({
        "embedding": Phase("indexing images", lambda r: print_indexed(r, encoder.name, lib.root),
                           "interrupted; the products and images so far are kept, run the same command again"),
        "describing": Phase("describing images", lambda r: print_described(r, captioner),
                            "interrupted; run the same command again (or `vlsearch caption`) to finish"),
        "tagging": TAGGING,
    })
    indexer.progress = bars

    def index(listed: Path) -> Any:
        with bars:
            return indexer.run((), [listed])

    with writer_lock(lib, "`vlsearch products import`"):
        try:
            report = CatalogueImport(lib, index, prune=prune).run(catalogue, format)
        except KeyboardInterrupt:
            raise fail(bars.phases[bars.current].interrupted, code=130) from None
        except (CatalogueError, LibraryError, ValueError) as exc:
            raise fail(exc) from None
    print_import(report, catalogue)


def print_import(report: Any, catalogue: Path) -> None:
    console.print(f"{report.rows} rows: [green]{report.new} new products[/], {report.updated} updated, "
                  f"{report.pruned} pruned; {report.images} images, {report.unlinked} not indexed; "
                  f"[red]{report.problem_count} problem{'' if report.problem_count == 1 else 's'}[/]")
    for problem in report.problems[:PROBLEMS_SHOWN]:
        console.print(f"  [red]✗[/] {escape(catalogue.name)}:{problem.line}: {escape(problem.message)}",
                      highlight=False)
    if report.problem_count > PROBLEMS_SHOWN:
        console.print(f"  … and {report.problem_count - PROBLEMS_SHOWN} more")
    if report.problem_count:
        raise typer.Exit(1)  # a script sees that not everything was imported


def similar_products(
    product: ProductArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    k: KOpt = 20,
    where: WhereOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Products that look like a product: all of its images count, and it is left out of the results."""
    from vlsearch.search import Filters, SearchQuery

    lib = open_library(library)
    engine = engine_for(lib, model, weights, model_dir)
    try:
        hits = engine.search(SearchQuery(product_id=product, group="product", k=k,
                                         filters=Filters(where=parse_where(where))))
    except (LookupError, ValueError) as exc:
        raise fail(exc) from None
    print_hits(hits, as_json)


def parse_where(conditions: list[str] | None) -> tuple:
    from vlsearch.search.conditions import Condition

    try:
        return tuple(Condition.parse(c) for c in conditions or ())
    except ValueError as exc:
        raise fail(f"--where: {exc}") from None
