"""Index jobs started over HTTP: one at a time per library, run in a server thread so they outlive the request
that started them, with progress a client can poll."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vlsearch.api.memory import return_free_memory
from vlsearch.api.metrics import Metrics
from vlsearch.captioner import ImageTextModel
from vlsearch.encoders import Encoder
from vlsearch.indexer import DescribeReport, Indexer, IndexReport, TagReport
from vlsearch.library import Library, LibraryBusy

log = logging.getLogger(__name__)
KEEP_FINISHED = 100  # finished jobs remembered for GET /jobs
FORK = "forkserver"  # decoding workers of a threaded server: plain fork could copy a lock held by another thread


@dataclass
class Job:
    id: int
    paths: list[str]
    state: str = "running"  # running, succeeded, failed
    phase: str = "embedding"  # embedding, tagging (when the library has vocabularies), describing, then done
    done: int = 0
    total: int = 0
    errors: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    phase_started: float = field(default_factory=time.monotonic)
    phase_ended: float | None = None  # set when the job ends, so its rate stops decaying afterwards
    error: str | None = None
    summary: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        elapsed = (self.phase_ended or time.monotonic()) - self.phase_started
        return self.done / elapsed if elapsed > 0 else 0.0


class PhaseProgress:
    """One phase of a job's run, counted into the Job (and the metrics)."""

    def __init__(self, job: Job, phase: str, metrics: Metrics) -> None:
        self.job, self.phase, self.metrics = job, phase, metrics

    def start(self, total: int) -> None:
        self.job.phase, self.job.total, self.job.done = self.phase, total, 0
        self.job.phase_started = time.monotonic()

    def advance(self, n: int, errors: int = 0) -> None:
        self.job.done += n
        self.job.errors += errors
        if self.phase == "embedding":
            self.metrics.images_indexed.inc(n - errors)
            self.metrics.index_errors.inc(errors)


class JobProgress:
    """The index run's progress hooks, writing into a Job: its phases as they go, then what each did."""

    def __init__(self, job: Job, metrics: Metrics) -> None:
        self.job, self.metrics = job, metrics

    def phase(self, name: str) -> PhaseProgress:
        return PhaseProgress(self.job, name, self.metrics)

    def finished(self, name: str, report: IndexReport | DescribeReport | TagReport) -> None:
        job = self.job
        if name == "embedding":
            job.summary = {"seen": report.seen, "embedded": report.embedded, "reused": report.reused,
                           "moved": report.moved, "unchanged": report.unchanged, "removed": report.removed,
                           "errors": report.errors}
            job.failures = list(report.failures)
            job.errors = report.errors  # with the files refused before decoding (names, links out)
        elif name == "tagging":
            job.summary |= {"tagged": report.scored, "tags": report.tags}
        else:
            job.summary |= {"captioned": report.captioned, "read_by_ocr": report.read,
                            "describe_errors": report.errors}
            job.failures += report.failures


class IndexJobs:
    """Starts and tracks index jobs on one library. A second job while one runs (here, or `vlsearch index` in
    another process) is refused with LibraryBusy, never run alongside."""

    def __init__(self, root: Path, encoder: Encoder, captioner: ImageTextModel | None, ocr, metrics: Metrics,
                 *, workers: int = 0, fill_gaps: bool = False, confine_to: list[Path] | None = None) -> None:
        self.root = root
        self.confine_to = confine_to  # the operator's index_roots: symlinks out of them are not followed
        self.encoder, self.captioner, self.ocr = encoder, captioner, ocr
        self.metrics = metrics
        self.workers = workers
        self.fill_gaps = fill_gaps
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def running(self) -> Job | None:
        return next((j for j in list(self.jobs.values()) if j.state == "running"), None)

    def start(self, paths: list[Path], captions: bool = True, ocr: bool = True, prune: bool = True) -> Job:
        with self._lock:
            current = self.running()
            if current is not None:
                raise LibraryBusy(self.root, f"job {current.id} ({current.phase}, {current.done}/{current.total}; "
                                             f"GET /api/v1/jobs/{current.id})")
            library = Library.open(self.root, create=False)  # its own FAISS cache: searches never see a half-update
            stack = ExitStack()
            stack.callback(library.close)
            try:
                stack.enter_context(library.writer("the vlsearch server's index job"))
            except BaseException:
                stack.close()
                raise
            job = Job(next(self._ids), [str(p) for p in paths])
            self.jobs[job.id] = job
            for old in [j.id for j in self.jobs.values() if j.state != "running"][:-KEEP_FINISHED]:
                del self.jobs[old]
        thread = threading.Thread(target=self._run, args=(job, library, stack, paths, captions, ocr, prune),
                                  name=f"index-job-{job.id}", daemon=True)
        thread.start()
        return job

    def _run(self, job: Job, library: Library, stack: ExitStack, paths: list[Path], captions: bool, ocr: bool,
             prune: bool) -> None:
        state = "failed"  # a BaseException (interpreter exit) still ends the job
        with stack:
            try:
                Indexer(library, self.encoder, workers=self.workers, prune=prune, mp_context=FORK,
                        confine_to=self.confine_to, captioner=self.captioner if captions else None,
                        ocr=self.ocr if ocr else None, fill_gaps=self.fill_gaps,
                        progress=JobProgress(job, self.metrics)).run(paths)
                state = "succeeded"
            except Exception as exc:
                log.exception("index job %d failed", job.id)
                state, job.error = "failed", f"{type(exc).__name__}: {exc}".removesuffix(": ")
            finally:
                # The end time and rate first and the state last: a poller that sees the job finished sees it whole.
                job.phase_ended = time.monotonic()
                job.finished_at = datetime.now(UTC)
                job.phase = "done"
                job.state = state
        return_free_memory()  # the job's buffers, freed between long-lived objects, would stay with malloc
