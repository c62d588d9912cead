"""Schemathesis against the app's own OpenAPI schema, every check on: generated requests to every operation, with
and without an API key, schema-valid ones accepted (save for the rules tests/api_contract.py lists, which JSON Schema
cannot state) and schema-violating ones refused, never a 5xx, and answers that match the documented status codes,
content types and bodies."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error, positive_data_acceptance

from tests.api_contract import register_image_parts, schema_valid_requests_are_accepted, schema_violations_are_refused
from tests.api_helpers import make_app
from tests.photos import write_photos
from vlsearch.api.combinations import ABSOLUTE
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "schema-key"
# CI runs a fixed, repeatable sample so a red build always reproduces; VLSEARCH_FUZZ=N explores N fresh random
# examples per operation (e.g. VLSEARCH_FUZZ=500 make test) to look for new failures.
FUZZ = int(os.environ.get("VLSEARCH_FUZZ", "0"))
register_image_parts()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, tiny_encoder, tiny_models):
    root = tmp_path_factory.mktemp("schema")
    write_photos(root / "allowed", 4)
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([root / "allowed"])
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[root / "allowed"], max_upload_bytes=200_000,
                   max_pixels=1_000_000, max_body_bytes=400_000, **tiny_models)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


UNAVAILABLE: list[str] = []  # the operations that answered a documented 503


def documented_unavailable(ctx, response, case):
    """not_a_server_error, where a 503 the operation documents is the answer of a server without that model."""
    if response.status_code == 503 and "503" in case.operation.definition.raw.get("responses", {}):
        UNAVAILABLE.append(case.operation.label)
        return None
    return not_a_server_error(ctx, response, case)


def run_every_operation(schema, headers: dict[str, str], examples: int, bare: bool = False,
                        mode: GenerationMode = GenerationMode.POSITIVE) -> list[str]:
    """Generated requests against every operation; returns the failures, each with the request that caused it.
    `bare`: the server lacks the optional models, so their documented 503 is expected. Negative mode skips the
    operations that take nothing: no request to them can break the schema."""
    failures = []
    excluded = [positive_data_acceptance, negative_data_rejection, *([not_a_server_error] if bare else [])]
    extra = [schema_valid_requests_are_accepted, schema_violations_are_refused,
             *([documented_unavailable] if bare else [])]
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query or operation.body):
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=FUZZ or examples, derandomize=not FUZZ, deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers=headers, excluded_checks=excluded, additional_checks=extra)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every operation is tried; the report lists them all
            failures.append(f"{operation.label}: {str(exc)[:3000]}")  # a generated upload can run to megabytes
    return failures


def test_with_a_key_no_server_errors_and_answers_match_the_schema(api_schema):
    failures = run_every_operation(api_schema, {"Authorization": f"Bearer {KEY}"}, examples=25)
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def bare_schema(tmp_path_factory, tiny_encoder):
    """A server with only its embedding model: no caption, VQA or matching model."""
    root = tmp_path_factory.mktemp("bare")
    write_photos(root / "photos", 3)
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([root / "photos"])
    return schemathesis.openapi.from_asgi("/openapi.json", make_app(lib, tiny_encoder, api_keys=[KEY]))


def test_a_server_without_the_optional_models_answers_their_documented_503(bare_schema):
    failures = run_every_operation(bare_schema, {"Authorization": f"Bearer {KEY}"}, examples=10, bare=True)
    assert not failures, "\n\n".join(failures)
    assert {"POST /api/v1/caption", "POST /api/v1/vqa"} <= set(UNAVAILABLE)  # what this server cannot answer


def test_without_a_key_no_server_errors_and_answers_match_the_schema(api_schema):
    failures = run_every_operation(api_schema, {}, examples=10)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {}], ids=["key", "no key"])
def test_requests_that_break_the_schema_are_refused(api_schema, headers):
    failures = run_every_operation(api_schema, headers, examples=25, mode=GenerationMode.NEGATIVE)
    assert not failures, "\n\n".join(failures)


def test_the_schema_states_the_bounds_the_server_enforces(tmp_path, tiny_encoder):
    """Constraints in JSON Schema's own words (pydantic's ge/le reached it verbatim, so ids of 0 and below looked
    valid), and absolute paths where the server wants them."""
    lib = Library.open(tmp_path / "lib")
    schema = make_app(lib, tiny_encoder).openapi()
    lib.close()

    def keys(node):
        if isinstance(node, dict):
            yield from node
            for value in node.values():
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    assert not {"ge", "le", "gt", "lt"} & set(keys(schema))
    image = schema["paths"]["/api/v1/images/{image_id}"]["get"]["parameters"][0]["schema"]
    assert (image["minimum"], image["maximum"]) == (1, 2**63 - 1)
    similar = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/images/{image_id}/similar"]["get"]
               ["parameters"]}
    assert similar["path"]["pattern"] == ABSOLUTE  # a query parameter is given or not: no null
    assert schema["components"]["schemas"]["IndexRequest"]["properties"]["paths"]["items"]["pattern"] == ABSOLUTE


def test_a_wrong_method_is_told_the_methods_the_path_takes(tmp_path, tiny_encoder):
    from fastapi.testclient import TestClient

    lib = Library.open(tmp_path / "lib")
    client = TestClient(make_app(lib, tiny_encoder))
    # Starlette named the first route matching the path: GET, from /images/{image_id}, for /images/delete
    for method, path, allowed in (("OPTIONS", "/api/v1/images/delete", "POST"),
                                  ("PUT", "/api/v1/search", "GET, HEAD, POST"),
                                  ("PATCH", "/api/v1/images/5", "DELETE, GET, HEAD")):
        answer = client.request(method, path)
        assert answer.status_code == 405 and answer.headers["allow"] == allowed
        assert answer.json()["detail"] == f"this path does not take {method}, only {allowed} (see /docs)"
    assert client.post("/web/app.js").headers["allow"] == "GET, HEAD"  # outside the API: Starlette's own
    lib.close()


def test_a_body_that_cannot_be_parsed_is_a_documented_400(tmp_path, tiny_encoder):
    from fastapi.testclient import TestClient

    lib = Library.open(tmp_path / "lib")
    app = make_app(lib, tiny_encoder)
    answer = TestClient(app).post("/api/v1/caption", content=b"xx", headers={"content-type": "multipart/form-data"})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            assert ("400" in operation["responses"]) == ("requestBody" in operation), (method, path)
            assert "413" in operation["responses"] or "requestBody" not in operation, (method, path)  # body limit
    lib.close()


def test_a_single_valued_parameter_given_twice_is_refused_after_the_key_check(tmp_path, tiny_encoder):
    """FastAPI kept the last of repeated values; the schema admits one. A caller without a key hears 401 first."""
    from fastapi.testclient import TestClient

    lib = Library.open(tmp_path / "lib")
    client = TestClient(make_app(lib, tiny_encoder, api_keys=[KEY], auth_reads=True))
    key = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/api/v1/search?q=a&q=b").status_code == 401
    twice = client.get("/api/v1/search?q=a&q=b", headers=key)
    assert twice.status_code == 422 and twice.json()["detail"] == "q: give it once; it takes one value"
    form = client.post("/api/v1/caption", headers=key, files=[("image_id", (None, "1")), ("image_id", (None, "2"))])
    assert form.status_code == 422 and form.json()["detail"] == "image_id: give it once; it takes one value"
    repeatable = client.get("/api/v1/search?q=a&not=b&not=c", headers=key)
    assert repeatable.status_code == 200, repeatable.text  # a list parameter repeats
    lib.close()
