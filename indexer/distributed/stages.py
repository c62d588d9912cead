"""The indexing stages on Ray workers: the decode and describe stages of a local run (indexer/stages.py) over
Arrow batches, and the models as actors that load once (one GPU each when the cluster has GPUs)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vlsearch.indexer.items import Decoded, WorkItem
from vlsearch.indexer.stages import DecodeStage, DescribeStage, describable

log = logging.getLogger(__name__)


@dataclass
class ModelSpecs:
    """What each worker loads: names that load the same models the driver resolved (never `auto`, which could
    resolve differently on a node with other weights)."""

    encoder: str
    weights: str | None
    model_dir: str | None
    device: str  # "auto": each actor takes its GPU when it has one
    precision: str = "auto"  # "auto": each actor picks for its own CPU or GPU (encoders/precision.py)
    caption: str | None = None
    generation: Any = None  # captioner.GenerationSettings
    ocr: bool = False


# What the decoders hand on (typed, so that batches with and without a given value concatenate).
DECODED = pa.schema([
    ("path", pa.string()), ("shard", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
    ("sha256", pa.string()), ("status", pa.string()), ("error", pa.string()), ("over_pixel_limit", pa.bool_()),
    ("thumbnail", pa.binary()), ("pixels", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("display_width", pa.int32()), ("display_height", pa.int32()), ("orientation", pa.int32()),
    ("format", pa.string()), ("taken_at", pa.timestamp("us")), ("camera_make", pa.string()),
    ("camera_model", pa.string()), ("data", pa.binary()),
])
_META = ("width", "height", "display_width", "display_height", "orientation", "format", "taken_at", "camera_make",
         "camera_model")


def decode_batch(table: pa.Table, stage: DecodeStage) -> pa.Table:
    """The decode stage over a batch of planned rows (path, size, mtime, shard). A file that fails becomes a row
    with status "error" and the reason; it never fails the batch."""
    import torch

    torch.set_num_threads(1)
    rows = [_row(stage(WorkItem(path, size, mtime, None)), shard)
            for path, size, mtime, shard in zip(*(table.column(c).to_pylist()
                                                  for c in ("path", "size", "mtime", "shard")), strict=True)]
    schema = DECODED if stage.keep_bytes else DECODED.remove(DECODED.get_field_index("data"))
    return pa.table({name: [row.get(name) for row in rows] for name in schema.names}, schema=schema)


def _row(decoded: Decoded, shard: str) -> dict[str, Any]:
    item = decoded.item
    row: dict[str, Any] = {"path": item.path, "shard": shard, "size": item.size, "mtime": item.mtime,
                           "sha256": decoded.sha256, "status": "ok" if decoded.ok else "error",
                           "error": decoded.error, "over_pixel_limit": decoded.over_pixel_limit,
                           "thumbnail": decoded.thumbnail, "data": decoded.data}
    if decoded.pixels is not None:
        row["pixels"] = decoded.pixels.numpy().astype(np.float16).tobytes()
    if decoded.meta is not None:
        row.update({name: getattr(decoded.meta, name) for name in _META})
    return row


class EmbedActor:
    """One encoder, loaded once, embedding the preprocessed pixels of each batch."""

    def __init__(self, specs: ModelSpecs) -> None:
        from PIL import Image

        from vlsearch.encoders import load_encoder

        self.encoder = load_encoder(specs.encoder, weights=Path(specs.weights) if specs.weights else None,
                                    model_dir=Path(specs.model_dir) if specs.model_dir else None,
                                    device=specs.device, allow_download=False, precision=specs.precision)
        self.shape = tuple(self.encoder.preprocess(Image.new("RGB", (64, 64))).shape)  # what the decoders send

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        dim = self.encoder.dim
        blobs = table.column("pixels").to_pylist()
        ok = [i for i, blob in enumerate(blobs) if blob is not None]
        vectors = np.zeros((len(blobs), dim), dtype=np.float32)
        if ok:
            pixels = np.stack([np.frombuffer(blobs[i], dtype=np.float16).reshape(self.shape) for i in ok])
            vectors[ok] = self.encoder.encode_image_tensors(torch.from_numpy(pixels.astype(np.float32)))
        valid = np.zeros(len(blobs), dtype=bool)
        valid[ok] = True
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim, mask=pa.array(~valid))
        return table.drop_columns(["pixels"]).append_column("embedding", embedding)


class DescribeActor:
    """The caption model and/or the OCR engine, describing the images of a batch that decoded."""

    def __init__(self, specs: ModelSpecs, max_pixels: int) -> None:
        captioner = ocr = None
        if specs.caption:
            from vlsearch.captioner import load_image_text_model

            captioner = load_image_text_model(
                specs.caption, "caption", model_dir=Path(specs.model_dir) if specs.model_dir else None,
                device=specs.device, settings=specs.generation, allow_download=False, precision=specs.precision)
        if specs.ocr:
            from vlsearch.captioner.ocr import ocr_reader

            ocr = ocr_reader()
        self.stage = DescribeStage(captioner, ocr)
        self.max_pixels = max_pixels

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        paths = table.column("path").to_pylist()
        images, slots = [], []
        for i, data in enumerate(table.column("data").to_pylist()):
            if data is None:
                continue
            try:
                images.append(describable(data, self.max_pixels))
                slots.append(i)
            except Exception as exc:  # decoded once already; a second failure leaves the row without text
                log.warning("cannot decode %s again for captions: %s", paths[i], exc)
        captions: list[str | None] = [None] * n
        texts: list[str | None] = [None] * n
        for i, found in zip(slots, self.stage(images), strict=True):
            captions[i], texts[i] = found.caption, found.ocr_text
            if found.ocr_error:  # left without OCR text: describing the library later tries again
                log.warning("OCR failed on %s: %s", paths[i], found.ocr_error)
        model, engine = self.stage.caption_model, self.stage.ocr_engine
        return (table.drop_columns(["data"])
                .append_column("caption", pa.array(captions, pa.string()))
                .append_column("caption_model", pa.array([model if c is not None else None for c in captions],
                                                         pa.string()))
                .append_column("ocr_text", pa.array(texts, pa.string()))
                .append_column("ocr_engine", pa.array([engine if t is not None else None for t in texts],
                                                      pa.string())))
