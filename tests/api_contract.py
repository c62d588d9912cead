"""What schemathesis needs to know beyond the schema: how to make an image part, and the rules JSON Schema cannot
state (api/combinations.py lists their kinds). A schema-valid request the server refuses passes only when the
refusal names one of its operation's rules here; any other refusal still fails `positive_data_acceptance`."""

from __future__ import annotations

import io
import re

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
    "POST /api/v1/eval": (r"is already in a group on line", r"is not a usable path",  # one case against another
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


def _form_type_change(case) -> bool:
    """The negative case only changes a multipart field's JSON type: on the wire every part is text, so `false`
    for a list of strings arrives as the one-item list ["false"], which the schema admits."""
    mutations = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    mutations = getattr(mutations, "mutations", None)
    return bool(case.media_type and case.media_type.startswith("multipart/") and mutations) and all(
        m.operator is OperatorKind.CHANGE_TYPE and m.parameter_location is ParameterLocation.BODY for m in mutations)


def schema_violations_are_refused(ctx, response, case):
    """`negative_data_rejection`, except where the violation cannot survive the trip through a multipart form; a 413
    (a body over the server's limit, refused before it is read) is a refusal too."""
    if _form_type_change(case) or response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)
