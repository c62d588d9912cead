"""What schemathesis needs to know beyond the schema: how to make an image part, and the rules JSON Schema cannot
state (api/combinations.py lists their kinds). A schema-valid request the server refuses passes only when the
refusal names one of its operation's rules here; any other refusal still fails `positive_data_acceptance`."""

from __future__ import annotations

import io
import re

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.mutations import OperatorKind
from schemathesis.core.parameters import ParameterLocation

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
    r"(after|before): Input should be a valid datetime",  # a day the calendar lacks (2024-02-30T10:00)
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


def _lost_in_a_form(case) -> bool:
    """Every violation of this negative case is lost on the way through a multipart form: a changed JSON type
    (every part is text, so `false` for a list of strings arrives as ["false"], which the schema admits), a field
    sent empty ("" or no parts), which FastAPI reads as left out, as HTML forms send blank inputs, or a value that
    meets its field's schema after all (a mutated pattern whose string still matches the original)."""
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    mutations = getattr(data, "mutations", None)
    if not (case.media_type or "").startswith("multipart/") or not mutations:
        return False
    body = getattr(case.body, "body", case.body)
    body = body if isinstance(body, dict) else {}
    fields = case.operation.get_body_for_media_type(case.media_type).form_properties

    def lost(m) -> bool:
        sent = body.get(m.path[0]) if m.path else None
        meets = bool(m.path) and m.path[0] in fields and jsonschema_rs.validator_for(fields[m.path[0]]).is_valid(sent)
        return m.parameter_location is ParameterLocation.BODY and (
            m.operator is OperatorKind.CHANGE_TYPE or (bool(m.path) and sent in ("", [])) or meets)
    return all(lost(m) for m in mutations)


def schema_violations_are_refused(ctx, response, case):
    """`negative_data_rejection`, except where the violation cannot survive the trip through a multipart form; a 413
    (a body over the server's limit, refused before it is read) is a refusal too."""
    if _lost_in_a_form(case) or response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)
