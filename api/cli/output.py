"""What the commands share for talking to a terminal: results on stdout, progress, warnings and errors on stderr.
Paths, captions and messages are escaped: rich would read "[/]" or "[bold]" in a file name as markup."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(problem: str | BaseException, code: int = 2) -> typer.Exit:
    """Print the error and return the Exit to raise. An exception is worded by api/wording.py (imported only here,
    on the way out: it loads the model packages)."""
    if isinstance(problem, BaseException):
        from vlsearch.api.wording import explain

        problem = explain(problem)
    err.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
    return typer.Exit(code)


class SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.speed
        if task.finished and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s", style="cyan")


def progress_columns() -> tuple[ProgressColumn, ...]:
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(),
            TextColumn("ETA"), TimeRemainingColumn())


def progress_bar(transient: bool = False) -> Progress:
    return Progress(*progress_columns(), console=err, transient=transient)


class RichProgress:
    """A progress hook of the core (indexing, export, import), drawn by rich."""

    def __init__(self, progress: Progress, description: str = "indexing") -> None:
        self.progress = progress
        self.description = description
        self.task = None

    def start(self, total: int) -> None:
        self.task = self.progress.add_task(self.description, total=total)

    def advance(self, n: int, errors: int = 0) -> None:
        self.progress.advance(self.task, n)


@contextmanager
def writer_lock(lib: Any, who: str) -> Iterator[None]:
    """One indexing run per library at a time, whichever process (or server job) runs it."""
    from vlsearch.library import LibraryBusy

    try:
        with lib.writer(who):
            yield
    except LibraryBusy as exc:
        raise fail(exc) from None


def print_failures(failures: list[tuple[str, str]]) -> None:
    for path, reason in failures[:20]:
        console.print(f"  [red]✗[/] {escape(path)}: {escape(reason)}", highlight=False)
    if len(failures) > 20:
        console.print(f"  … and {len(failures) - 20} more (see `vlsearch status`)")


def print_described(report: Any, captioner: Any) -> None:
    """The summary of a caption/OCR run, and what failed."""
    model = f" with {escape(captioner.name)}" if captioner is not None else ""
    console.print(
        f"{report.captioned} captioned{model}, {report.read} read by OCR, {report.reused} copied from identical "
        f"files, {report.skipped} changed since indexing, [red]{report.errors} errors[/] in {report.seconds:.1f}s"
    )
    print_failures(report.failures)


def print_tagged(report: Any) -> None:
    """The summary of a tagging run."""
    names = ", ".join(report.vocabularies) or "none"
    console.print(f"{report.scored} images tagged with {report.tags} tags (vocabularies: {escape(names)}) in "
                  f"{report.seconds:.1f}s")


def parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} {value!r}: use a date like 2024-05-31 or 2024-05-31T18:00") from None


def parse_box(text: str | None) -> tuple[float, ...] | None:
    """--box's four numbers (their range is the query's to check)."""
    from vlsearch.images.geometry import box_from_text

    if text is None:
        return None
    try:
        return box_from_text(text)
    except ValueError:
        raise fail(f"--box {text!r}: give four numbers, left,top,right,bottom, e.g. 0.5,0.6,1,1") from None


def print_hits(hits: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    if not hits:
        console.print("no matches")
        return
    if any(h.product is not None for h in hits):
        print_products(hits)
        return
    table = Table(box=None, header_style="bold")
    for column in ("#", "score", "id"):
        table.add_column(column, justify="right")
    table.add_column("path", overflow="fold")  # the whole path, wrapped, never cut short
    table.add_column("size")
    table.add_column("taken")
    reranked = any(h.match_score is not None for h in hits)
    if reranked:
        table.add_column("match", justify="right")
    for rank, h in enumerate(hits, 1):
        size = f"{h.width}×{h.height}" if h.width else ""
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else ""
        match = [f"{h.match_score:.3f}" if h.match_score is not None else ""] if reranked else []
        table.add_row(str(rank), f"{h.score:.3f}", str(h.id), Text(h.path), size, taken, *match)
        if h.caption:  # under its path, so the path keeps the width
            table.add_row("", "", "", Text(h.caption, style="dim"), "", "", *([""] if reranked else []))
    console.print(table)


def print_products(hits: list[Any]) -> None:
    """Grouped hits: a product a row, with the image that matched best."""
    table = Table(box=None, header_style="bold")
    for column in ("#", "score", "product"):
        table.add_column(column, justify="right")
    for column in ("title", "brand", "price"):
        table.add_column(column)
    table.add_column("best image", overflow="fold")
    for rank, h in enumerate(hits, 1):
        p = h.product
        price = f"{p.price:g} {p.currency or ''}".strip() if p.price is not None else ""
        table.add_row(str(rank), f"{h.score:.3f}", Text(p.id), Text(p.title or ""), Text(p.brand or ""), price,
                      Text(h.path))
    console.print(table)
