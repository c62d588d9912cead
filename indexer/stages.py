"""The stages every runner (local or Ray) applies to work items: decode (read, hash, decode, thumbnail, the
model's preprocess) and describe (captions and OCR text). Each takes and gives the contract of indexer/items.py,
and never raises for a bad file: the file's row records why."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from vlsearch.captioner import ImageTextModel
from vlsearch.captioner.ocr import OcrFailed, OcrReader
from vlsearch.images import DecodeError, ImageTooLarge, decode_bytes, limit_aspect, thumbnail_jpeg
from vlsearch.indexer.items import Decoded, WorkItem
from vlsearch.indexer.sources import is_url, read_failure, read_source

# Images are handed to the describing models at most this large: BLIP sees 384 px, OCR reads text down to ~10 px.
DESCRIBE_MAX_SIDE = 1600


class DecodeStage:
    """read → sha256 → decode (large JPEGs at reduced scale, down to `draft` pixels) → thumbnail → the encoder's
    preprocess, for one work item. `has_thumbnail(sha256)` says a thumbnail need not be made again;
    `store_thumbnail(sha256, jpeg)` writes one where it is made (a decoding worker), so the process that commits
    does not (`Decoded.thumbnail` stays None); `keep_bytes` keeps the file's bytes for a describe stage later in the
    same stream."""

    def __init__(self, preprocess: Callable[[Image.Image], torch.Tensor], *, max_pixels: int,
                 draft: int | None = None, confine_to: list[Path] | None = None, keep_bytes: bool = False,
                 has_thumbnail: Callable[[str], bool] | None = None,
                 store_thumbnail: Callable[[str, bytes], object] | None = None) -> None:
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.draft = draft
        self.confine_to = confine_to
        self.keep_bytes = keep_bytes
        self.has_thumbnail = has_thumbnail
        self.store_thumbnail = store_thumbnail

    def __call__(self, item: WorkItem) -> Decoded:
        try:
            data = read_source(item.path, self.confine_to)
        except (OSError, DecodeError, ValueError) as exc:
            return Decoded(item, error=read_failure(exc))
        sha = hashlib.sha256(data).hexdigest()
        if is_url(item.path):
            item = replace(item, size=len(data))
        try:
            image, meta = decode_bytes(data, self.max_pixels, self.draft)
            known = self.has_thumbnail is not None and self.has_thumbnail(sha)
            thumbnail = None if known else thumbnail_jpeg(image)
            pixels = self.preprocess(limit_aspect(image))
        except ImageTooLarge as exc:
            return Decoded(item, sha256=sha, error=str(exc), over_pixel_limit=True)
        except DecodeError as exc:
            return Decoded(item, sha256=sha, error=str(exc))
        except Exception as exc:  # a decoder bug on one file must not end the run
            return Decoded(item, sha256=sha, error=f"decoding failed: {type(exc).__name__}: {exc}")
        if thumbnail is not None and self.store_thumbnail is not None:
            try:
                self.store_thumbnail(sha, thumbnail)
                thumbnail = None
            except OSError:
                pass  # the committing process writes it, and says why if it cannot either
        return Decoded(item, sha256=sha, meta=meta, thumbnail=thumbnail, pixels=pixels,
                       data=data if self.keep_bytes else None)


def describable(data: bytes, max_pixels: int) -> Image.Image:
    """A file's bytes decoded for the describing models, shrunk to DESCRIBE_MAX_SIDE. Raises DecodeError."""
    image, _ = decode_bytes(data, max_pixels)
    image.thumbnail((DESCRIBE_MAX_SIDE, DESCRIBE_MAX_SIDE))
    return image


@dataclass
class Description:
    caption: str | None = None
    ocr_text: str | None = None
    ocr_error: str | None = None  # OCR failed on this image (the others are unaffected); the next run tries again


class DescribeStage:
    """Captions (batched, one model call) and OCR text for images; either model may be absent."""

    def __init__(self, captioner: ImageTextModel | None, ocr: OcrReader | None, prompt: str | None = None) -> None:
        if captioner is None and ocr is None:
            raise ValueError("nothing to do: neither captions nor OCR were asked for")
        self.captioner = captioner
        self.ocr = ocr
        self.prompt = prompt

    @property
    def caption_model(self) -> str | None:
        return self.captioner.name if self.captioner is not None else None

    @property
    def ocr_engine(self) -> str | None:
        return self.ocr.engine if self.ocr is not None else None

    def __call__(self, images: Sequence[Image.Image], caption: Sequence[bool] | None = None,
                 ocr: Sequence[bool] | None = None) -> list[Description]:
        """What each image shows and says; `caption` and `ocr` pick the images each model runs on (default: all)."""
        out = [Description() for _ in images]
        wanted = [i for i in range(len(images)) if caption is None or caption[i]] if self.captioner is not None else []
        if wanted:
            texts = self.captioner.caption([images[i] for i in wanted], self.prompt)
            for i, text in zip(wanted, texts, strict=True):
                out[i].caption = text
        for i, image in enumerate(images if self.ocr is not None else []):
            if ocr is not None and not ocr[i]:
                continue
            try:
                out[i].ocr_text = self.ocr.read(image)
            except OcrFailed as exc:
                out[i].ocr_error = str(exc)
        return out
