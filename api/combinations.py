"""Rules across fields, in JSON Schema's own words, for the request bodies whose fields depend on each other: the
server refuses what these refuse (search/query.py and the routes hold the checks and their messages), and a client
or a generator that reads the schema can build only requests the server takes.

What JSON Schema cannot say (one value against another, content such as base64 that is no image) is a 422 that
names the rule; tests/api_contract.py lists those rules, operation by operation."""

from __future__ import annotations

# Python's str.isspace(), spelled out: ECMA's and Rust's \s differ from it (\x1c-\x1f, \x85), and the server
# tests text for words with str.strip().
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Both spelled anchored at each end: schemathesis merges a pattern with maxLength as if it were (it read "^/" with
# a maxLength as 1 to 4096 slashes, and "[^ ]" as no space at all), and its generator then fuzzed the wrong rule.
WORDS = {"type": "string", "pattern": f"^[\\s\\S]*[^{SPACE}][\\s\\S]*$"}  # something besides white space
ABSOLUTE = "^/[\\s\\S]*$"  # an absolute path
NO_NUL = {"not": {"pattern": "\\x00"}}  # no text the server stores or searches may hold a NUL
# A `where` condition's shape: no NUL, and an operator with something before it and after it.
CONDITION = "^[^\\x00]*[^\\x00=<>!][^\\x00]*(=|<|>)[^\\x00]*[^\\x00\\s][^\\x00]*$"
IMAGE_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"


def given(field: str, schema: dict | None = None) -> dict:
    """`field` is there and not null (and, with `schema`, meets it)."""
    return {"required": [field], "properties": {field: schema or {"not": {"type": "null"}}}}


def absent(*fields: str) -> dict:
    """None of `fields` is there, unless as null."""
    return {"properties": {field: {"type": "null"} for field in fields}}


def when(condition: dict, then: dict) -> dict:
    return {"if": condition, "then": then}


KEYWORD_MODE = {"required": ["mode"], "properties": {"mode": {"const": "keyword"}}}
RERANK = {"required": ["rerank"], "properties": {"rerank": {"minimum": 1}}}

SEARCH = {
    "anyOf": [given("text", WORDS), given("image"), given("image_id"), given("product_id")],
    "allOf": [
        when(given("product_id"), {"required": ["group"], "properties": {"group": {"const": "product"}}}),
        when(given("box"), given("image")),
        when(given("group"), {"properties": {"rerank": {"const": 0}}}),
        when(RERANK, given("text", WORDS)),
        when(KEYWORD_MODE, {"allOf": [
            given("text", WORDS), absent("image", "image_id", "product_id"),
            {"properties": {"negatives": {"maxItems": 0},
                            "filters": {"properties": {"min_score": {"type": "null"}}}}},
        ]}),
    ],
}

# Multipart forms: an upload or an indexed image, and what the upload must be.
# A form has no null (api/contract.py takes it out), so being there is enough.
ONE_IMAGE = {"oneOf": [{"required": ["file"]}, {"required": ["image_id"]}]}
SOME_IMAGES = {"anyOf": [{"required": [field], "properties": {field: {"minItems": 1}}}
                         for field in ("files", "image_ids")]}


def multipart(rules: dict | None, *image_fields: str) -> dict:
    """`openapi_extra` for a multipart route: its cross-field rules and its image parts' media types."""
    content: dict = {"encoding": {field: {"contentType": IMAGE_TYPES} for field in image_fields}}
    if rules:
        content["schema"] = rules
    return {"requestBody": {"content": {"multipart/form-data": content}, "required": True}}


# An eval case: its kind is told by the key only it has (search/eval_cases.py reads them).
PATH = {**WORDS, **NO_NUL}
PATHS = {"type": "array", "items": PATH}
EVAL_CASE = {"oneOf": [
    {"type": "object", "required": ["text", "relevant"], "additionalProperties": False,
     "properties": {"text": WORDS, "relevant": {**PATHS, "minItems": 1}}},
    {"type": "object", "required": ["image", "relevant"], "additionalProperties": False,
     "properties": {"image": PATH, "relevant": {**PATHS, "minItems": 1}}},
    {"type": "object", "required": ["path", "tags"], "additionalProperties": False,
     "properties": {"path": PATH, "tags": {"type": "array", "items": WORDS}}},
    {"type": "object", "required": ["duplicates"], "additionalProperties": False,
     "properties": {"duplicates": {"type": "array", "minItems": 1,
                                   "items": {**PATHS, "minItems": 2, "uniqueItems": True}}}},
]}
