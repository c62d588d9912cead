"""`vlsearch eval`: how well search finds what a file of labelled queries says it should, per search mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vlsearch.api.cli.loading import engine_for, load_text_model, open_library
from vlsearch.api.cli.options import ItmModelOpt, JsonOpt, LibraryOpt, ModelDirOpt, ModelOpt, RerankOpt, WeightsOpt
from vlsearch.api.cli.output import console, err, fail

if TYPE_CHECKING:
    from vlsearch.search.evaluation import SearchReport

EvalFileArg = Annotated[Path, typer.Argument(
    help='A JSON Lines file, one case a line: {"text": "a cat", "relevant": ["cat.jpg"]} or {"image": "q.jpg", '
    '"relevant": [...]}; {"path": "cat.jpg", "tags": ["cat"]}; {"duplicates": [["a.jpg", "a-copy.jpg"]]}.')]
PhotosOpt = Annotated[Path | None, typer.Option(
    "--photos", help="The folder the file's relative paths are relative to.", show_default="the file's folder")]
EvalModesOpt = Annotated[list[str] | None, typer.Option(
    "--mode", help="vector, keyword or hybrid (repeatable); keyword mode scores the text cases only.",
    show_default="all three")]
EvalKOpt = Annotated[int, typer.Option("--k", "-k", min=1, help="How deep reciprocal rank looks (MRR@k); recall@10 "
                                       "and nDCG@10 are always measured.")]
SHOWN_UNINDEXED = 5


def evaluate(
    file: EvalFileArg,
    library: LibraryOpt,
    model_dir: ModelDirOpt,
    photos: PhotosOpt = None,
    mode: EvalModesOpt = None,
    k: EvalKOpt = 10,
    rerank: RerankOpt = 0,
    itm_model: ItmModelOpt = "auto",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score search on labelled queries (recall@1/5/10, MRR and nDCG@10 for each mode), the library's tags (precision
    and recall of (image, tag) pairs) and its duplicate groups (of pairs of photos), as the file's cases ask."""
    from vlsearch.images import DecodeError
    from vlsearch.search.eval_cases import read_eval_file
    from vlsearch.search.quality import quality_report
    from vlsearch.search.query import MODES

    for name in mode or ():
        if name not in MODES:
            raise fail(f"--mode {name}: use {', '.join(MODES)}")
    try:
        cases = read_eval_file(file, photos)
    except ValueError as exc:
        raise fail(exc) from None
    lib = open_library(library)
    name = model or lib.default_model()
    if name is None:
        raise fail("the library holds no vectors yet: index the photos first")

    def engine():
        found = engine_for(lib, model, weights, model_dir)
        if rerank:
            found.matcher = load_text_model(itm_model, "match", model_dir)
        return found

    try:
        report = quality_report(lib, name, cases, engine, mode or MODES, k, rerank)
    except (DecodeError, ValueError) as exc:
        raise fail(exc) from None
    if report.search and report.search.unindexed:
        warn_unindexed(report.search.unindexed)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    if report.search:
        print_report(report.search, len(cases.search))
    if report.tags:
        print_pairs("tags:", report.tags.as_dict(), "tags given")
    if report.duplicates:
        print_pairs("duplicates: pair", report.duplicates.as_dict(), "pairs found")


def print_pairs(what: str, scores: dict, given: str) -> None:
    """A line of pair precision and recall (PairScores.as_dict) and the counts behind them."""
    console.print(f"{what} precision {scores['precision']:.3f}, recall {scores['recall']:.3f} ({scores['correct']} of "
                  f"{scores['predicted']} {given} are right, of {scores['expected']} expected)")


def warn_unindexed(paths: tuple[str, ...]) -> None:
    """Relevant paths every search misses: the scores are low for a reason that is not the model's."""
    shown = ", ".join(paths[:SHOWN_UNINDEXED]) + (" …" if len(paths) > SHOWN_UNINDEXED else "")
    err.print(f"[yellow]warning:[/] {len(paths)} relevant paths are not in the library (a typo, or photos not "
              f"indexed; pass --photos DIR if the paths are relative to another folder): {escape(shown)}",
              highlight=False)


def print_report(report: SearchReport, total: int) -> None:
    """A row per mode: the cases it scored (of all), and its mean scores."""
    table = Table(box=None, header_style="bold")
    table.add_column("mode")
    for column in ("cases", "R@1", "R@5", "R@10", f"MRR@{report.k}", "nDCG@10"):
        table.add_column(column, justify="right")
    for row in report.modes:
        mean = row.mean
        scores = [f"{value:.3f}" for value in mean.as_tuple()] if mean else ["–"] * 5
        name = f"{row.mode} + rerank {report.rerank}" if report.rerank else row.mode
        table.add_row(name, f"{len(row.cases)} of {total}", *scores)
    console.print(table)
