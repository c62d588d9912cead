"""The OpenAPI document, made as exact as the server: what FastAPI's generator loses or cannot know is put back.

- Integer bounds stay integers. FastAPI's OpenAPI models hold `minimum`/`maximum` as floats: 1 became 1.0, which
  JSON Schema lets a generator send as `1.0` (a strict integer field refuses it), and 2**63 - 1 became 2**63.
- Reads that are open say a key is optional (an empty security requirement).
- Every operation with a body documents the 400 of a body that cannot be parsed and the 413 of one over the
  server's limit (api/limits.py refuses it before any route runs).
- Links say which answer feeds which request (a job started, then read; a hit, then its image, then deleted), so
  clients and stateful tests can follow them.
- A multipart form or a query string has no null: a field is sent or left out (FastAPI offered null for every
  optional one, and a generator sent the text "null" for it)."""

from __future__ import annotations

from typing import Any

from vlsearch.api.errors import DESCRIPTIONS
from vlsearch.api.schemas import MAX_ID

ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
BODY_ERRORS = {str(status): {"description": DESCRIPTIONS[status], **ERROR} for status in (400, 413)}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
IMAGE = {"image_id": "$response.body#/hits/0/id"}  # a search's best hit
SAME_IMAGE = {"image_id": "$request.path.image_id"}
IMAGE_READS = [("get", "/api/v1/images/{image_id}"), ("get", "/api/v1/images/{image_id}/thumbnail"),
               ("get", "/api/v1/images/{image_id}/file"), ("get", "/api/v1/images/{image_id}/similar")]
# (method, path, status) -> [(method, path of the operation it feeds, its parameters)]
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict]]] = {
    ("post", "/api/v1/index", "202"): [("get", "/api/v1/jobs/{job_id}", {"job_id": "$response.body#/id"})],
    ("get", "/api/v1/jobs", "200"): [("get", "/api/v1/jobs/{job_id}", {"job_id": "$response.body#/0/id"})],
    **{(method, "/api/v1/search", "200"): [*[(m, p, IMAGE) for m, p in IMAGE_READS],
                                           ("delete", "/api/v1/images/{image_id}", IMAGE)]
       for method in ("get", "post")},
    ("get", "/api/v1/images/{image_id}", "200"): [("delete", "/api/v1/images/{image_id}", SAME_IMAGE)],
    ("delete", "/api/v1/images/{image_id}", "200"): [(m, p, SAME_IMAGE) for m, p in IMAGE_READS[:2]],
}


def exact(schema: dict, *, open_reads: bool, writes: set[tuple[str, str]]) -> dict:
    """The document FastAPI generated, corrected in place (and returned)."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if operation.get("security") and open_reads and (method, path) not in writes:
                operation["security"] = [{}, *operation["security"]]
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter["schema"])
            if "requestBody" in operation:  # unparseable or over the limit: refused before the route runs
                for status, response in BODY_ERRORS.items():
                    operation["responses"].setdefault(status, response)
                if form := operation["requestBody"]["content"].get("multipart/form-data"):
                    _form(schema, form)
    integer_bounds(schema)
    _link(schema)
    return schema


def _link(schema: dict) -> None:
    paths = schema.get("paths", {})
    for (method, path, status), targets in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            paths[to_path][to_method]["operationId"]: {"operationId": paths[to_path][to_method]["operationId"],
                                                       "parameters": parameters}
            for to_method, to_path, parameters in targets}


def integer_bounds(node: Any) -> None:
    """Bounds of every integer schema as integers; past SQLite's largest integer (a float's rounding) is MAX_ID."""
    if isinstance(node, list):
        for item in node:
            integer_bounds(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "integer":
        for key in BOUNDS:
            if isinstance(node.get(key), float):
                node[key] = min(int(node[key]), MAX_ID)
    for value in node.values():
        integer_bounds(value)


def _form(schema: dict, media: dict) -> None:
    """A route's rules (api/combinations.py, merged next to FastAPI's $ref) moved into the form's own schema, which
    tools read more reliably than a $ref's siblings; null taken out of every field."""
    rules = {key: value for key, value in media["schema"].items() if key != "$ref"}
    ref = media["schema"].get("$ref", "")
    form = schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref.startswith("#/components/") else {}
    if form:
        form.update(rules)
        media["schema"] = {"$ref": ref}
    else:
        form = media["schema"]
    for name, field in form.get("properties", {}).items():
        form["properties"][name] = _without_null(field)


def _without_null(field: dict) -> dict:
    """`field` with its null branch taken out: what a form field or a query parameter can be, being text."""
    if "anyOf" not in field:
        return field
    kept = [branch for branch in field["anyOf"] if branch != {"type": "null"}]
    rest = {key: value for key, value in field.items() if key != "anyOf"}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
