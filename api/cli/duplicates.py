"""`vlsearch duplicates`: groups of copies and near-duplicates in a library, the image to keep of each, and
forgetting the others."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vlsearch.api.cli.loading import open_library
from vlsearch.api.cli.options import JsonOpt, LibraryOpt
from vlsearch.api.cli.output import RichProgress, console, fail, progress_bar

if TYPE_CHECKING:
    from vlsearch.library import Library
    from vlsearch.search.duplicates import DuplicateGroup

# The defaults are the core's (search/duplicates.py, where they are measured): with a visual descriptor (the offline
# preset), else with search vectors. Shown here without importing it, which would load torch before --help;
# tests/test_duplicates.py checks that the two agree.
COPY_DEFAULT, NEAR_DEFAULT = ("0.80", "0.92"), ("0.70", "0.90")

DupModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Whose vectors to compare.",
                                                 show_default="the library's model")]
CopyThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, show_default=f"{COPY_DEFAULT[0]} with the offline preset's visual descriptor, else "
                                   f"{COPY_DEFAULT[1]}",
    help="Similarity from which two images are copies of one picture (resized, recompressed, cropped, recoloured).")]
NearThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, show_default=f"{NEAR_DEFAULT[0]} with the offline preset's visual descriptor, else "
                                   f"{NEAR_DEFAULT[1]}",
    help="Similarity from which two images are near-duplicates (a burst's frames); at most --copy-threshold.")]
KindOpt = Annotated[list[str] | None, typer.Option(
    "--kind", help="Only groups of this kind (repeatable): exact (the same bytes), copy or near.",
    show_default="all")]
ForgetOpt = Annotated[bool, typer.Option(
    "--forget-others", help="Forget each listed group's images but its keeper (the files stay on disk).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Forget without asking first.")]


def duplicates(
    library: LibraryOpt,
    model: DupModelOpt = None,
    copy_threshold: CopyThresholdOpt = None,
    near_threshold: NearThresholdOpt = None,
    kind: KindOpt = None,
    as_json: JsonOpt = False,
    forget_others: ForgetOpt = False,
    yes: YesOpt = False,
) -> None:
    """List groups of duplicate images: exact copies, copies (resized, recompressed, cropped, recoloured) and
    near-duplicates, each with the image to keep (the largest, then the oldest, then a lossless format)."""
    from vlsearch.library import LibraryError
    from vlsearch.search.duplicates import KINDS, find_duplicates

    unknown = sorted(set(kind or ()) - set(KINDS))
    if unknown:
        raise fail(f"--kind {unknown[0]}: choose {', '.join(KINDS)}")
    if forget_others and as_json and not yes:
        raise fail("--forget-others with --json needs --yes: the question would go into the JSON")
    lib = open_library(library)
    name = model or lib.default_model()
    if name is None:
        raise fail(f"the library {lib.root} holds no images yet; index a folder into it first")
    thresholds = {k: v for k, v in (("copy_threshold", copy_threshold), ("near_threshold", near_threshold))
                  if v is not None}
    try:
        with progress_bar(transient=True) as bar:
            groups = find_duplicates(lib, name, progress=RichProgress(bar, "comparing"), **thresholds)
    except (LibraryError, ValueError) as exc:
        raise fail(exc) from None
    groups = [g for g in groups if not kind or g.kind in kind]
    if as_json:
        forgotten = _forget(lib, groups) if forget_others else []
        print(json.dumps({"groups": [g.as_dict() for g in groups], "forgotten": forgotten}, indent=2))
        return
    print_groups(groups)
    others = sum(len(g.others) for g in groups)
    if forget_others and others:
        if not yes:
            typer.confirm(f"Forget {others} images, keeping one of each of the {len(groups)} groups?", abort=True)
        console.print(f"forgot {len(_forget(lib, groups))} images; their files are still on disk")


def _forget(lib: Library, groups: list[DuplicateGroup]) -> list[int]:
    from vlsearch.library import LibraryError
    from vlsearch.search.duplicates import forget_duplicates

    try:
        return forget_duplicates(lib, groups)
    except LibraryError as exc:
        raise fail(exc) from None


def print_groups(groups: list[DuplicateGroup]) -> None:
    """A row per image, the keeper of each group first; a summary line by kind."""
    if not groups:
        console.print("no duplicates")
        return
    table = Table(box=None, header_style="bold")
    for column in ("group", "kind", "", "id", "similarity"):
        table.add_column(column, justify="right" if column in ("group", "id", "similarity") else "left")
    table.add_column("size")
    table.add_column("format")
    table.add_column("path", overflow="fold")  # the whole path, wrapped, never cut short
    for number, group in enumerate(groups, 1):
        for m in group.members:
            first = m is group.keeper
            size = f"{m.width}×{m.height}" if m.width else ""
            table.add_row(str(number) if first else "", group.kind if first else "", "keep" if first else "",
                          str(m.id), "" if first else f"{m.similarity:.3f}", size, m.format or "", Text(m.path))
    console.print(table)
    kinds = dict.fromkeys(g.kind for g in groups)  # in the order listed: strongest first
    counts = ", ".join(f"{sum(g.kind == k for g in groups)} {k}" for k in kinds)
    others = sum(len(g.others) for g in groups)
    console.print(f"{len(groups)} group{'' if len(groups) == 1 else 's'} ({counts}); {others} "
                  f"image{'' if others == 1 else 's'} besides the keepers (--forget-others forgets them)")
