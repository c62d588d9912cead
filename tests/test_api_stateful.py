"""Schemathesis following the schema's links (api/contract.py): index a folder and read the job, search and open,
fetch and delete the hits, read a deleted image (a 404, not a ghost). Every check runs on every step, the stateful
ones included (a resource a link names exists; one deleted stays gone)."""

from __future__ import annotations

import time

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.api_contract import register_image_parts, schema_valid_requests_are_accepted, schema_violations_are_refused
from tests.api_helpers import make_app
from tests.photos import write_photos
from vlsearch.captioner import load_image_text_model
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "stateful-key"
register_image_parts()


def test_following_the_links_every_check_holds(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 6)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    models = {task_field: load_image_text_model("tiny-random", task, device="cpu")
              for task_field, task in (("captioner", "caption"), ("answerer", "answer"), ("matcher", "match"))}
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[tmp_path / "photos"], **models)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    links = sum(len(response.get("links", {})) for operations in app.openapi()["paths"].values()
                for operation in operations.values() for response in operation["responses"].values())
    assert links >= 15  # the state machine below has something to follow

    answered: set[tuple[str, int]] = set()

    @schema.hook
    def map_body(context, body):
        """An index job needs a folder the operator allowed: generated paths are ones the server lacks (404)."""
        if context.operation is not None and context.operation.label == "POST /api/v1/index":
            return {**body, "paths": [str(tmp_path / "photos")]} if isinstance(body, dict) else body
        return body

    class Scenario(schema.as_state_machine()):
        def after_call(self, response, case):
            super().after_call(response, case)
            answered.add((case.operation.label, response.status_code))

        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Bearer {KEY}"}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=[positive_data_acceptance, negative_data_rejection],
                                   additional_checks=[schema_valid_requests_are_accepted,
                                                      schema_violations_are_refused],
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    # A fixed sample, no shrinking: deletes and jobs outlive a scenario, so a replay meets another library, and
    # random runs (VLSEARCH_FUZZ) stop with hypothesis's FlakyStrategyDefinition instead of finding anything.
    Scenario.run(settings=settings(max_examples=15, derandomize=True, deadline=None,
                                   stateful_step_count=6, suppress_health_check=list(HealthCheck), database=None,
                                   phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    deadline = time.monotonic() + 120  # the jobs started run in the server's threads: let them end first
    while any(job.state == "running" for job in app.state.service.jobs.jobs.values()):
        assert time.monotonic() < deadline, "an index job did not end"
        time.sleep(0.1)
    lib.close()
    # Ids that exist come only from answers, so these prove the links were followed, not guessed.
    assert {("GET /api/v1/jobs/{job_id}", 200), ("DELETE /api/v1/images/{image_id}", 200)} <= answered, answered
