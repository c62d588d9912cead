"""How a local run turns planned files into model input, behind one seam: `item` runs in the DataLoader's worker
processes, a file at a time; `finish` runs in the main process, a batch at a time, where the model's device is.
The CPU decoder does everything in `item`. A GPU decoder is one class more: its `item` reads, hashes and reads the
header of each file, keeping a JPEG's bytes (`Decoded.data`, no pixels) and decoding anything else as the CPU
decoder does; its `finish` decodes the batch's JPEGs on the device (nvJPEG), makes thumbnails and the model's input
from the decoded tensors there, and records a file it cannot decode with its reason, as `item` would have."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vlsearch.encoders import Encoder
from vlsearch.images import THUMB_LONG_SIDE
from vlsearch.indexer.items import Batch, Decoded, WorkItem
from vlsearch.indexer.stages import DecodeStage
from vlsearch.library import Library
from vlsearch.library.thumbs import store_thumbnail, thumbnail_relpath

# A JPEG is decoded at reduced scale down to this many times the largest size the indexer needs (the model's input
# short side, the thumbnail's long side): the margin keeps the final resize a real low-pass filter, so the vectors
# match those of a full-size decode (cosine >= 0.995 on average; tests/test_fast_path.py, bench indexing).
DRAFT_MARGIN = 2


def draft_size(encoder: Encoder) -> int:
    """The short side, in pixels, a JPEG may be decoded down to for this encoder and the thumbnail."""
    return DRAFT_MARGIN * max(encoder.input_size, THUMB_LONG_SIDE)


class Decoder(Protocol):
    """The decode stage of a local run, split where the processes are (see the module's docstring)."""

    def item(self) -> Callable[[WorkItem], Decoded]:
        """The per-file part, picklable: it runs in worker processes, and never raises for a bad file."""

    def finish(self, batch: Batch) -> Batch:
        """The per-batch part, in the main process: every item of the batch it returns is decoded or failed."""


DecoderFactory = Callable[..., Decoder]  # (library, encoder, *, max_pixels, confine_to, reduced_decode) -> Decoder


class CpuDecoder:
    """Everything in the worker processes: read, sha256, decode (large JPEGs at reduced scale), thumbnail (written
    there too: the committing process wrote 850 a second, bench writer) and the encoder's preprocess
    (indexer/stages.py's DecodeStage)."""

    def __init__(self, library: Library, encoder: Encoder, *, max_pixels: int, confine_to: list[Path] | None,
                 reduced_decode: bool = True) -> None:
        self.stage = DecodeStage(encoder.preprocess, max_pixels=max_pixels, confine_to=confine_to,
                                 draft=draft_size(encoder) if reduced_decode else None,
                                 has_thumbnail=HasThumbnail(library.root),
                                 store_thumbnail=StoreThumbnail(library.root))

    def item(self) -> Callable[[WorkItem], Decoded]:
        return self.stage

    def finish(self, batch: Batch) -> Batch:
        return batch


class StoreThumbnail:
    """Writes a content hash's thumbnail into the library (picklable, for the decoding workers)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, sha256: str, jpeg: bytes) -> None:
        store_thumbnail(self.root, sha256, jpeg)


class HasThumbnail:
    """Whether the library holds a content hash's thumbnail (picklable, for the decoding workers)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, sha256: str) -> bool:
        return (self.root / thumbnail_relpath(sha256)).exists()
