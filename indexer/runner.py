"""What a runner is: where the indexing stages run (this machine, a Ray cluster) behind one interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vlsearch.encoders import Encoder
from vlsearch.indexer.items import WorkItem
from vlsearch.indexer.report import Changes, IndexReport, ProgressHook
from vlsearch.library import Library


@dataclass(frozen=True)
class Prepared:
    """What a runner settled before planning."""

    skip: frozenset[str] = frozenset()  # paths done elsewhere: planned as unchanged
    exclude: tuple[Path, ...] = ()  # folders of the runner's own, which discovery must not enter


class Runner(Protocol):
    """Runs decode → embed (→ describe) → write over planned work. `writes_library`: its results are in the
    library when `run` returns (not kept elsewhere for a later import), so vanished files may be pruned.
    `writes_companions`: it stores the encoder's companion vectors (library/spaces.py) beside its search vectors."""

    writes_library: bool
    writes_companions: bool
    report_type: type[IndexReport]

    def prepare(self, library: Library, encoder: Encoder, report: IndexReport, changes: Changes) -> Prepared:
        """Before planning: finish what an earlier run left (counting into `report`, adding to `changes`), and say
        what to skip."""

    def run(self, library: Library, encoder: Encoder, work: list[WorkItem], *, max_pixels: int,
            confine_to: list[Path] | None, report: IndexReport, changes: Changes,
            progress: ProgressHook | None) -> None:
        """Do the work, counting into `report`, recording vector changes in `changes` before each commit."""
