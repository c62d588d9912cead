"""One HTTP call of the API, described rather than made: the sync and async clients send the same descriptions, so
each endpoint is written once (operations.py), and uploads are turned into multipart parts here."""

from __future__ import annotations

import io
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

API = "/api/v1"
ImageInput = str | Path | bytes | Any  # a file's path, its bytes, or a PIL image


@dataclass(frozen=True)
class Call:
    """`method` and `route` (the schema's path template, e.g. /api/v1/images/{image_id}), with the values that
    fill it; what the answer is read as: a pydantic type, "bytes" or "text"."""

    method: str
    route: str
    answer: Any
    path_values: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None

    @property
    def url(self) -> str:
        return API + self.route.format(**{k: _segment(v) for k, v in self.path_values.items()})

    def read(self, content: bytes, text: str, body: Any) -> Any:
        if self.answer == "bytes":
            return content
        if self.answer == "text":
            return text
        return TypeAdapter(self.answer).validate_python(body)


def _segment(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters without the ones left unset (None), models as JSON-ready dicts."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else value
    return out


def upload(field_name: str, image: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    """A multipart part for an image given as a path, bytes or a PIL image (sent as PNG)."""
    if isinstance(image, str | Path):
        path = Path(image)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return field_name, (path.name, path.read_bytes(), kind)
    if isinstance(image, bytes | bytearray):
        return field_name, ("image", bytes(image), "application/octet-stream")
    if hasattr(image, "save"):  # a PIL image
        out = io.BytesIO()
        image.save(out, format="PNG")
        return field_name, ("image.png", out.getvalue(), "image/png")
    raise TypeError(f"an image is a path, bytes or a PIL image, not {type(image).__name__}")
