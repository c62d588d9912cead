"""The contract between the indexing stages, on one machine or on a Ray cluster: what a planned item, a decoded
item and a batch carry."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlsearch.images import ImageMeta


@dataclass(frozen=True)
class WorkItem:
    """A file (or URL) the plan says to index, with the size and time it was planned at."""

    path: str
    size: int
    mtime: float
    image_id: int | None  # the row this file already has, if any


@dataclass
class Decoded:
    """A work item after the decode stage: its content hash and metadata, its thumbnail and the model's input, or
    why it cannot be used (`error`, stored with its row). A decode stage never raises for a bad file."""

    item: WorkItem
    sha256: str | None = None
    meta: ImageMeta | None = None
    thumbnail: bytes | None = None  # a JPEG; None when the library has this content's thumbnail already
    pixels: torch.Tensor | None = None  # the encoder's preprocessed input
    error: str | None = None
    over_pixel_limit: bool = False  # the error is the pixel limit, which the caller may raise
    data: bytes | None = None  # the file's bytes, for a describe stage later in the same stream
    slot: int | None = None  # the row of `pixels` in its batch's stacked tensor

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Batch:
    """Decoded items that go to the model together: the pixels of those that decoded, stacked."""

    items: list[Decoded]
    pixels: torch.Tensor | None

    @classmethod
    def collate(cls, items: list[Decoded]) -> Batch:
        """Stack the pixels of the items that decoded, each item remembering its row."""
        tensors = []
        for item in items:
            if item.pixels is not None:
                item.slot = len(tensors)
                tensors.append(item.pixels)
                item.pixels = None
        return cls(items, torch.stack(tensors) if tensors else None)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader on GPU runs, so the copy to the device overlaps with compute."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self
