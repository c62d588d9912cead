"""What an index run tells its caller: progress as it goes, phase by phase, and a report of what it did. The indexer
never prints; the CLI draws bars from these hooks, the server's index jobs keep them for GET /jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ProgressHook(Protocol):
    """One phase's progress: its size once known, then items as they are done."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int, errors: int = 0) -> None:
        """`n` more items done, `errors` of them failed."""


class IndexProgress(Protocol):
    """A run's progress, phase by phase: `embedding` (decode, embed, write), then `describing` (captions and OCR)
    when the run has a describe phase of its own."""

    def phase(self, name: str) -> ProgressHook: ...

    def finished(self, name: str, report: IndexReport | DescribeReport | TagReport) -> None:
        """The phase `name` is over; `report` says what it did."""


@dataclass
class IndexReport:
    """What the embedding phase of a run did."""

    seen: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    moved: int = 0
    errors: int = 0
    removed: int = 0
    over_pixel_limit: int = 0  # of the errors, files over the pixel limit (a limit the caller may raise)
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    described: DescribeReport | None = None  # the describe phase, when the run had one
    tagged: TagReport | None = None  # the tagging phase, when the library has vocabularies

    @property
    def images_per_second(self) -> float:
        done = self.embedded + self.reused + self.moved + self.errors
        return done / self.seconds if self.seconds else 0.0


@dataclass
class TagReport:
    """What a tagging phase did (indexer/tagging.py)."""

    scored: int = 0  # images scored against a vocabulary (an image counts once per vocabulary)
    tags: int = 0
    vocabularies: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DescribeReport:
    """What a caption/OCR phase did."""

    captioned: int = 0
    read: int = 0  # images OCR ran on
    reused: int = 0  # images whose text was copied from an identical file described before
    skipped: int = 0  # changed or gone since indexing: the next index run handles them
    errors: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return (self.captioned + self.read) / self.seconds if self.seconds else 0.0


@dataclass
class Changes:
    """Ids whose vectors a run added or changed, and ids it removed: what the model's FAISS index is brought up to
    date with. Recorded before each commit, so an interrupt cannot lose them (an id recorded for a batch that then
    fails to commit is harmless: FAISS is updated from SQLite)."""

    upserts: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.removed)
