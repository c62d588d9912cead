"""What schemathesis needs to know beyond the schema: how to make an image part, and the rules JSON Schema cannot
state (api/combinations.py lists their kinds). A schema-valid request the server refuses passes only when the
refusal names one of its operation's rules here; any other refusal still fails `positive_data_acceptance`."""

from __future__ import annotations

import io
import json
import re

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP",
           "image/tiff": "TIFF"}


def _encoded(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def register_image_parts() -> None:
    """Image parts of multipart bodies are real images of each type the schema names."""
    for media_type, fmt in FORMATS.items():
        schemathesis.openapi.media_type(media_type, st.builds(
            _encoded, st.just(fmt), st.tuples(st.integers(1, 64), st.integers(1, 64)),
            st.tuples(*[st.integers(0, 255)] * 3)))


# Rules of the search core (search/query.py, api/deps.py) that hold a value against another or read content.
SEARCH = (
    r"filters\.after must be earlier than filters\.before", r"^offset \+ k is \d+",  # one value against another
    r"the query's parts cancel out|too large to combine",  # weights, as numbers
    r"^where: ", r"^facets: .* cannot be a facet",  # grammar past the shape (names, numbers after <)
    r"names the home folder of an unknown user",  # ~user paths, resolved on the server
    r"^image: not valid base64|^image: .*Pillow|^image is empty",  # base64 that is no image
    r"(after|before): Input should be a valid datetime.*day value is outside",  # 2024-02-30T10:00: no such day
    r"must be left,top,right,bottom",  # box: left < right, top < bottom
)
# Query parameters are separate schemas: OpenAPI cannot say one depends on another.
QUERY_COMBINATIONS = (
    r"a rerank scores images, and grouped results are products",
    r"keyword mode|not-terms and a minimum score", r"a rerank matches the query's words",
)
RULES: dict[str, tuple[str, ...]] = {
    "GET /api/v1/search": SEARCH + QUERY_COMBINATIONS,
    "POST /api/v1/search": SEARCH,
    "POST /api/v1/search/image": SEARCH + (r"^box .*: give four numbers",),
    "GET /api/v1/images/{image_id}/similar": SEARCH + QUERY_COMBINATIONS,
    "GET /api/v1/products/{product_id}/similar": SEARCH + QUERY_COMBINATIONS,
    "POST /api/v1/ask": SEARCH + (r"has no words to search for|asks for photos but not what",),  # words, by meaning
    "POST /api/v1/vqa": (r"^question has no words",),
    "GET /api/v1/duplicates": (r"near_threshold \(.*\) must be at most copy_threshold",),
    "POST /api/v1/caption/batch": (r"images in one request; send at most",),  # files + image_ids, summed
    "POST /api/v1/eval": (r"is already in (a group|tags) on line", r"is not a usable path",  # one case against another
                          r"a group of duplicates names at least two different files"),  # "a" and "./a" are one
}


def refusal_named(case, response) -> bool:
    """The response refuses the request for one of its operation's rules the schema cannot state."""
    if response.status_code not in (413, 415, 422):
        return False
    detail = str(response.json().get("detail", ""))
    return any(re.search(rule, detail) for rule in RULES.get(case.operation.label, ()))


def schema_valid_requests_are_accepted(ctx, response, case):
    """`positive_data_acceptance`, except for a refusal that names a rule the schema cannot state."""
    if refusal_named(case, response):
        return None
    return positive_data_acceptance(ctx, response, case)


FILE_PART = "application/octet-stream"  # how FastAPI's schema marks an upload


def _read(value, field: dict):
    """A form field's value as FastAPI reads it off the wire: every part is text (a numeric field parses it), a
    file part is a file, a list field takes every part and a single field the last one; nothing sent is absent."""
    if field.get("contentMediaType") == FILE_PART:
        return "a file"  # whatever was generated for it, it arrives as a file's content
    if field.get("type") == "array":
        values = [_read(v, field.get("items", {})) for v in (value if isinstance(value, list) else [value])]
        return [v for v in values if v is not None] or None
    if isinstance(value, list):
        return _read(value[-1], field) if value else None
    text = value.decode(errors="replace") if isinstance(value, bytes) else (
        value if isinstance(value, str) else json.dumps(value))
    if text == "":
        return None  # a blank field: HTML forms send one for every empty input, and FastAPI reads it as left out
    if field.get("type") in ("integer", "number"):
        try:
            number = json.loads(text)
        except ValueError:
            return text
        return number if isinstance(number, (int, float)) and not isinstance(number, bool) else text
    return text


def _lost_in_a_form(case) -> bool:
    """This negative multipart case meets the schema once read as the server reads it: its violation was lost on
    the wire (`false` for a list of strings arrives as ["false"]; a blank field as no field; an integer sent as a
    file's content is a file)."""
    if not (case.media_type or "").startswith("multipart/") or not isinstance(getattr(case.body, "body", case.body),
                                                                             dict):
        return False
    form = case.operation.get_body_for_media_type(case.media_type).optimized_schema
    fields = form.get("properties", {})
    read = {name: _read(value, fields.get(name, {})) for name, value in getattr(case.body, "body", case.body).items()}
    read = {name: value for name, value in read.items() if value is not None}
    files = {name: {"type": "array", "items": {"type": "string"}} if field.get("type") == "array" else
             {"type": "string"} for name, field in fields.items()
             if FILE_PART in (field.get("contentMediaType"), field.get("items", {}).get("contentMediaType"))}
    schema = {**form, "properties": {**fields, **files}}
    return jsonschema_rs.validator_for(schema).is_valid(read)


def schema_violations_are_refused(ctx, response, case):
    """`negative_data_rejection`, except where the violation cannot survive the trip through a multipart form; a 413
    (a body over the server's limit, refused before it is read) is a refusal too."""
    if _lost_in_a_form(case) or response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)
