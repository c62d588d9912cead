"""The one way in to indexing, for the CLI, the server's index jobs and Ray runs alike:

    plan (what is new, changed or failed) → embed (a runner: decode → embed → write) → prune → FAISS → describe

The runner decides where the stages run: this machine (LocalRunner) or a Ray cluster (distributed.RayRunner).
Embedding comes before captions and OCR, so stopping during the describe phase never costs a vector."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from vlsearch.captioner import ImageTextModel
from vlsearch.captioner.ocr import OcrReader
from vlsearch.encoders import Encoder
from vlsearch.images import DEFAULT_MAX_PIXELS
from vlsearch.indexer.describe import Describer
from vlsearch.indexer.local import LocalRunner
from vlsearch.indexer.plan import Planner
from vlsearch.indexer.report import Changes, DescribeReport, IndexProgress, IndexReport, TagReport
from vlsearch.indexer.runner import Runner
from vlsearch.indexer.sources import read_source_list
from vlsearch.indexer.tagging import Tagger
from vlsearch.indexer.vocabulary import vocabularies
from vlsearch.library import Library, VectorIndex
from vlsearch.library.spaces import companion

log = logging.getLogger(__name__)


class Indexer:
    """Indexes folders, files and lists of files or URLs into a library with one encoder, incrementally and
    resumably, then describes the images (captions, OCR) when a caption model or OCR reader is given.

    `confine_to`: read no file whose real path lies outside these folders (the server's index_roots). `fill_gaps`:
    the caption model stands in for the library's own, so it captions only images with no caption at all.
    `batch_size`, `workers`, `mp_context`, `reduced_decode` set up the local runner when `runner` is None;
    `workers` and `mp_context` also serve the describe phase."""

    def __init__(self, library: Library, encoder: Encoder, *, runner: Runner | None = None, batch_size: int = 32,
                 workers: int | None = None, mp_context: str | None = None, reduced_decode: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS, prune: bool = True, confine_to: Iterable[Path] | None = None,
                 captioner: ImageTextModel | None = None, ocr: OcrReader | None = None, fill_gaps: bool = False,
                 progress: IndexProgress | None = None) -> None:
        self.library = library
        self.encoder = encoder
        self.runner = runner or LocalRunner(batch_size=batch_size, workers=workers, mp_context=mp_context,
                                            reduced_decode=reduced_decode)
        self.workers = workers
        self.mp_context = mp_context
        self.max_pixels = max_pixels
        self.prune = prune
        self.confine_to = None if confine_to is None else [Path(p).resolve() for p in confine_to]
        self.captioner, self.ocr, self.fill_gaps = captioner, ocr, fill_gaps
        self.progress = progress

    def run(self, paths: Iterable[Path | str] = (), lists: Iterable[Path] = ()) -> IndexReport:
        """Index `paths` (folders walked recursively, and files) and the files or URLs `lists` name; the report of
        the embedding phase, with the describe phase's as `described`."""
        paths, lists = list(paths), list(lists)
        report = self.embed(paths, lists)
        if self.runner.writes_library:
            report.tagged = self.tag()
        if self.captioner is not None or self.ocr is not None:
            report.described = self.describe(paths, [source for listed in lists for source in read_source_list(listed)])
        return report

    def embed(self, paths: list[Path | str], lists: Iterable[Path]) -> IndexReport:
        started = time.perf_counter()
        report = self.runner.report_type()
        model = self.encoder.name
        self.library.ensure_model(model, self.encoder.dim)
        companions = self.encoder.companions if self.runner.writes_companions else {}
        for role, dim in companions.items():
            self.library.ensure_model(companion(model, role), dim)
        index = self.library.vector_index(model)  # current before we start: the changes apply to it
        changes = Changes()
        prepared = self.runner.prepare(self.library, self.encoder, report, changes)
        planner = Planner(self.library, model, confine_to=self.confine_to, exclude=prepared.exclude,
                          companions=companions)
        plan = planner.plan(paths, report, lists, skip=prepared.skip)
        hook = self.progress.phase("embedding") if self.progress else None
        if hook:
            hook.start(len(plan.work))
        try:
            if plan.work:
                self.runner.run(self.library, self.encoder, plan.work, max_pixels=self.max_pixels,
                                confine_to=self.confine_to, report=report, changes=changes, progress=hook)
        except BaseException:
            self._apply_after_failure(index, changes)
            raise
        if self.prune and self.runner.writes_library:
            changes.removed += planner.prune(plan, report)
        if changes:
            self.library.apply_to_index(model, index, changes.upserts, changes.removed)
        report.seconds = time.perf_counter() - started
        log.info("indexed %d files: %d embedded, %d reused, %d moved, %d unchanged, %d errors, %d removed in %.1fs",
                 report.seen, report.embedded, report.reused, report.moved, report.unchanged, report.errors,
                 report.removed, report.seconds)
        if self.progress:
            self.progress.finished("embedding", report)
        return report

    def tag(self) -> TagReport | None:
        """The tagging phase: new and changed images scored against the library's vocabularies (None when it has
        none). Reads stored vectors only: seconds for thousands of images."""
        if not vocabularies(self.library):
            return None
        hook = self.progress.phase("tagging") if self.progress else None
        report = Tagger(self.library, self.encoder, hook).run()
        if self.progress:
            self.progress.finished("tagging", report)
        return report

    def describe(self, paths: list[Path | str], sources: Sequence[str] = ()) -> DescribeReport:
        """The describe phase over the images under `paths` and at `sources` (files and URLs a list named): those
        lacking a caption from the model or OCR text."""
        hook = self.progress.phase("describing") if self.progress else None
        described = Describer(self.library, self.captioner, self.ocr, workers=self.workers,
                              max_pixels=self.max_pixels, mp_context=self.mp_context, fill_gaps=self.fill_gaps,
                              confine_to=self.confine_to, progress=hook).run(paths, sources)
        if self.progress:
            self.progress.finished("describing", described)
        return described

    def _apply_after_failure(self, index: VectorIndex, changes: Changes) -> None:
        """Committed batches stay (after an interrupt, or a failure mid-run): bring FAISS up to date with them so a
        search right away sees them. Failing that, the next open rebuilds the index from SQLite."""
        if not changes:
            return
        try:
            self.library.apply_to_index(self.encoder.name, index, changes.upserts, changes.removed)
        except Exception as exc:
            log.warning("the FAISS index is rebuilt when next used: %s", exc)
