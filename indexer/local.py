"""The local runner: decoding in worker processes (a DataLoader) while this process embeds and commits the batch
before. Each batch commits on its own, so a run killed at any point keeps what it finished."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from vlsearch.encoders import Encoder
from vlsearch.indexer.decoders import CpuDecoder, DecoderFactory
from vlsearch.indexer.items import Batch, Decoded, WorkItem
from vlsearch.indexer.report import Changes, IndexReport, ProgressHook
from vlsearch.indexer.runner import Prepared
from vlsearch.indexer.write import LibraryWriter
from vlsearch.library import Library


def decode_workers(workers: int | None = None, device: str = "cpu", cores: int | None = None,
                   precision: str = "fp32") -> int:
    """Decoding processes: as asked, else by where the model runs. On the CPU in fp32 the model is the limit and
    shares the cores, so one worker per core up to 4; in bf16 the model costs about what decoding does, so half the
    cores (see model_threads). On a GPU the CPU does nothing but decode, and decoding is the limit, so every core but
    one (the main process feeds the GPU and writes to SQLite)."""
    if workers is not None:
        return workers
    cores = cores or os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, cores - 1)
    if precision == "bf16":
        return max(1, cores // 2)
    return min(4, cores)


def model_threads(workers: int, device: str, precision: str, cores: int | None = None) -> int | None:
    """torch threads for a CPU model while `workers` decode, or None (torch's own: every core). In bf16 the model and
    decoding cost about the same per image, and with both on every core they take turns: on 2 cores, ViT-B-32 indexed
    50.7 images/s with 1 thread and 1 worker, 38-40 with 2 and 2. In fp32 the model is the limit and is best on
    every core (18.6-19.4 against 14.8 split). A one-off run on 600 photos; bench indexing measures the default."""
    if device.startswith("cuda") or precision != "bf16":
        return None
    return max(1, (cores or os.cpu_count() or 1) - workers)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch on `threads` threads for the block (None: as it is), then back."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers share the cores with the model; one thread each


class DecodeDataset(Dataset):
    """The decode stage over a list of work items, for DataLoader workers."""

    def __init__(self, items: list[WorkItem], stage: Callable[[WorkItem], Decoded]) -> None:
        self.items = items
        self.stage = stage

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        return self.stage(self.items[i])


class LocalRunner:
    """Runs the stages on this machine. `mp_context`: "forkserver" where the caller runs threads (the server), since
    forking a threaded process can deadlock. `reduced_decode`: decode large JPEGs at a reduced scale (see
    draft_size); off only to measure it."""

    writes_library = True
    writes_companions = True
    report_type = IndexReport

    def __init__(self, *, batch_size: int = 32, workers: int | None = None, mp_context: str | None = None,
                 reduced_decode: bool = True, decoder: DecoderFactory = CpuDecoder) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.batch_size = batch_size
        self.workers = workers
        self.mp_context = mp_context
        self.reduced_decode = reduced_decode
        self.decoder = decoder

    def prepare(self, library: Library, encoder: Encoder, report: IndexReport, changes: Changes) -> Prepared:
        """Nothing is left over from an earlier local run (each batch committed, or never happened)."""
        return Prepared()

    def run(self, library: Library, encoder: Encoder, work: list[WorkItem], *, max_pixels: int,
            confine_to: list[Path] | None, report: IndexReport, changes: Changes,
            progress: ProgressHook | None) -> None:
        workers = decode_workers(self.workers, encoder.device, precision=encoder.precision)
        decoder = self.decoder(library, encoder, max_pixels=max_pixels, confine_to=confine_to,
                               reduced_decode=self.reduced_decode)
        loader = DataLoader(
            DecodeDataset(work, decoder.item()), batch_size=self.batch_size, num_workers=workers,
            collate_fn=Batch.collate,
            worker_init_fn=worker_init if workers else None,
            multiprocessing_context=self.mp_context if workers else None,
            prefetch_factor=4 if workers else None, pin_memory=encoder.device.startswith("cuda"),
            persistent_workers=False,
        )
        writer = LibraryWriter(library, encoder.name, encoder.dim, encoder.embed_image_tensors, encoder.companions)
        with torch_threads(model_threads(workers, encoder.device, encoder.precision)):
            for batch in map(decoder.finish, loader):
                errors_before = report.errors
                writer.write(batch, report, changes)
                if progress:
                    progress.advance(len(batch.items), report.errors - errors_before)
