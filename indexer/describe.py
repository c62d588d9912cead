"""The describe phase: indexed images that lack a caption from the chosen model, or OCR text, get them.

It runs after embedding (in an index run) or on its own over a library (`vlsearch caption`). What to do is read
from SQLite each time, so it is incremental and resumable by construction: a run killed at any point keeps every
committed batch, and the next run picks up the images still missing their text.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import and_, exists, false, insert, or_, select, true
from sqlalchemy.orm import aliased
from torch.utils.data import DataLoader, Dataset

from vlsearch.captioner import ImageTextModel
from vlsearch.captioner.ocr import OcrReader
from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError
from vlsearch.indexer.local import worker_init
from vlsearch.indexer.report import DescribeReport, ProgressHook
from vlsearch.indexer.sources import read_failure, read_source
from vlsearch.indexer.stages import DescribeStage, describable
from vlsearch.library import ImageRecord, Library
from vlsearch.library.records import UNDER_ANY_MAX, under_any
from vlsearch.library.schema import Caption, OcrText
from vlsearch.library.sql import in_chunks


@dataclass(frozen=True)
class Pending:
    image_id: int
    path: str
    sha256: str | None
    caption: bool
    ocr: bool


class LoadDataset(Dataset):
    """Reads and decodes one indexed file, checking it is still the file that was indexed."""

    def __init__(self, items: list[Pending], max_pixels: int, confine_to: list[Path] | None = None) -> None:
        self.items = items
        self.max_pixels = max_pixels
        self.confine_to = confine_to

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Pending, Image.Image | None, str | None]:
        item = self.items[i]
        try:
            data = read_source(item.path, self.confine_to)
        except (OSError, DecodeError) as exc:
            return item, None, read_failure(exc)
        if item.sha256 is not None and hashlib.sha256(data).hexdigest() != item.sha256:
            return item, None, None  # changed since indexing
        try:
            return item, describable(data, self.max_pixels), None
        except DecodeError as exc:
            return item, None, str(exc)
        except Exception as exc:  # a decoder bug on one file must not end the run
            return item, None, f"decoding failed: {type(exc).__name__}: {exc}"


class Describer:
    """Writes captions (keyed by image and model) and OCR text (per image) for indexed images."""

    def __init__(
        self,
        library: Library,
        captioner: ImageTextModel | None,
        ocr: OcrReader | None,
        *,
        prompt: str | None = None,
        batch_size: int = 8,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: ProgressHook | None = None,
        mp_context: str | None = None,
        fill_gaps: bool = False,
        confine_to: Iterable[Path] | None = None,
    ) -> None:
        """`fill_gaps`: caption only images with no caption from any model (a stand-in model then fills in what
        is missing instead of captioning the whole library again). `confine_to`: read only files that really lie
        inside these folders (the server's index_roots). `mp_context`: "forkserver" where the caller runs threads
        (the server): forking a threaded process can deadlock."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.library = library
        self.stage = DescribeStage(captioner, ocr, prompt)
        self.batch_size = batch_size
        self.workers = min(2, os.cpu_count() or 1) if workers is None else workers
        self.max_pixels = max_pixels
        self.progress = progress
        self.mp_context = mp_context
        self.fill_gaps = fill_gaps
        self.confine_to = None if confine_to is None else [Path(os.path.realpath(p)) for p in confine_to]

    def run(self, paths: Iterable[Path | str] | None = None, sources: Sequence[str] = ()) -> DescribeReport:
        """Describe the images under `paths` (all of the library's when None), and those at `sources` (files and
        URLs, as a list names them), that still lack text."""
        started = time.perf_counter()
        report = DescribeReport()
        roots = None if paths is None else [Path(p).expanduser().resolve() for p in paths]
        report.reused = self._reuse_twins()
        work = self._pending(roots, sources)
        if self.progress:
            self.progress.start(len(work))
        if work:
            loader = DataLoader(
                LoadDataset(work, self.max_pixels, self.confine_to), batch_size=self.batch_size,
                num_workers=self.workers, collate_fn=list, worker_init_fn=worker_init if self.workers else None,
                multiprocessing_context=self.mp_context if self.workers else None,
                prefetch_factor=2 if self.workers else None,
            )
            for batch in loader:
                errors_before = report.errors
                self._write_batch(batch, report)
                if self.progress:
                    self.progress.advance(len(batch), report.errors - errors_before)
        report.seconds = time.perf_counter() - started
        return report

    def _reuse_twins(self) -> int:
        """Copy text from an identical file (same sha256) already described: copies and re-added files cost
        nothing. Returns how many images got text this way."""
        copied: set[int] = set()
        twin = aliased(ImageRecord)
        same_content = and_(twin.sha256 == ImageRecord.sha256, twin.id != ImageRecord.id)
        with self.library.session() as s:
            if self.stage.captioner is not None:
                source = aliased(Caption)
                rows = s.execute(
                    select(ImageRecord.id, source.text).join(twin, same_content)
                    .join(source, and_(source.image_id == twin.id, source.model == self.stage.caption_model))
                    .where(ImageRecord.status == "ok", ~self._has_caption())
                ).all()
                captions = dict(rows)
                if captions:
                    s.execute(insert(Caption), [{"image_id": i, "model": self.stage.caption_model, "text": t}
                                                for i, t in captions.items()])
                copied |= captions.keys()
            if self.stage.ocr is not None:
                source_ocr = aliased(OcrText)
                rows = s.execute(
                    select(ImageRecord.id, source_ocr.engine, source_ocr.text).join(twin, same_content)
                    .join(source_ocr, source_ocr.image_id == twin.id)
                    .where(ImageRecord.status == "ok", ~self._has_ocr())
                ).all()
                unique = {image_id: (engine, text) for image_id, engine, text in rows}
                if unique:
                    s.execute(insert(OcrText), [{"image_id": i, "engine": e, "text": t}
                                                for i, (e, t) in unique.items()])
                copied |= unique.keys()
        return len(copied)

    def _has_caption(self):
        if self.fill_gaps:
            return exists().where(Caption.image_id == ImageRecord.id)
        return exists().where(Caption.image_id == ImageRecord.id, Caption.model == self.stage.caption_model)

    def _has_ocr(self):
        return exists().where(OcrText.image_id == ImageRecord.id)

    def _pending(self, roots: list[Path] | None, sources: Sequence[str]) -> list[Pending]:
        needs_caption = ~self._has_caption() if self.stage.captioner is not None else None
        needs_ocr = ~self._has_ocr() if self.stage.ocr is not None else None
        wanted = [c for c in (needs_caption, needs_ocr) if c is not None]
        query = select(
            ImageRecord.id, ImageRecord.path, ImageRecord.sha256,
            needs_caption if needs_caption is not None else false(),
            needs_ocr if needs_ocr is not None else false(),
        ).where(ImageRecord.status == "ok", or_(*wanted))
        if roots is None:
            where = [true()]
        else:
            where = [under_any(ImageRecord.path, chunk) for chunk in in_chunks(roots, UNDER_ANY_MAX)]
            where += [ImageRecord.path.in_(chunk) for chunk in in_chunks(sources)]
        with self.library.session() as s:
            found = {row[0]: row for clause in where for row in s.execute(query.where(clause))}
        rows = [found[i] for i in sorted(found)]
        return [Pending(i, p, sha, bool(c), bool(o)) for i, p, sha, c, o in rows]

    def _write_batch(self, batch: list[tuple[Pending, Image.Image | None, str | None]], report: DescribeReport) -> None:
        for item, image, error in batch:
            if image is None and error is None:
                report.skipped += 1
            elif image is None:
                report.errors += 1
                report.failures.append((item.path, error))
        ready = [(item, image) for item, image, _ in batch if image is not None]
        described = self.stage([image for _, image in ready], caption=[item.caption for item, _ in ready],
                               ocr=[item.ocr for item, _ in ready])
        with self.library.session() as s:
            for (item, _), found in zip(ready, described, strict=True):
                if found.ocr_error is not None:  # left without OCR text: the next run tries again
                    report.errors += 1
                    report.failures.append((item.path, found.ocr_error))
                row = s.get(ImageRecord, item.image_id)
                if row is None or row.sha256 != item.sha256:
                    continue  # deleted, or re-indexed with new content, meanwhile
                if found.caption is not None:
                    s.merge(Caption(image_id=item.image_id, model=self.stage.caption_model, text=found.caption))
                if found.ocr_text is not None:
                    s.merge(OcrText(image_id=item.image_id, engine=self.stage.ocr_engine, text=found.ocr_text))
        report.captioned += sum(found.caption is not None for found in described)
        report.read += sum(found.ocr_text is not None for found in described)
