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
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "stateful-key"
register_image_parts()


def test_following_the_links_every_check_holds(tmp_path, tiny_encoder, tiny_models):
    write_photos(tmp_path / "photos", 6)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    app = make_app(lib, tiny_encoder, api_keys=[KEY], index_roots=[tmp_path / "photos"], **tiny_models)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    links = sum(len(response.get("links", {})) for operations in app.openapi()["paths"].values()
                for operation in operations.values() for response in operation["responses"].values())
    assert links >= 15  # the state machine below has something to follow

    answered: set[tuple[str, int]] = set()

    def finish_jobs() -> None:
        """Wait for the index jobs started, which run in the server's threads."""
        deadline = time.monotonic() + 120
        while any(job.state == "running" for job in app.state.service.jobs.jobs.values()):
            assert time.monotonic() < deadline, "an index job did not end"
            time.sleep(0.05)

    @schema.hook
    def map_case(context, case):
        """An index job needs a folder the operator allowed: generated paths are ones the server lacks (404).
        Schema-valid cases only: a negative one keeps the violation it was made to carry."""
        if (case.operation.label == "POST /api/v1/index" and case.meta is not None
                and case.meta.generation.mode.is_positive and isinstance(case.body, dict)):
            case.body = {**case.body, "paths": [str(tmp_path / "photos")]}
        return case

    class Scenario(schema.as_state_machine()):
        def after_call(self, response, case):
            super().after_call(response, case)
            answered.add((case.operation.label, response.status_code))
            if case.operation.label == "POST /api/v1/index" and response.status_code == 202:
                finish_jobs()  # a job running beside later steps made their answers, and so the run, vary

        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Bearer {KEY}"}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=[positive_data_acceptance, negative_data_rejection],
                                   additional_checks=[schema_valid_requests_are_accepted,
                                                      schema_violations_are_refused],
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    # A fixed sample, no shrinking: deletes and jobs outlive a scenario, so a replay meets another library, and
    # random runs (VLSEARCH_FUZZ) stop with hypothesis's FlakyStrategyDefinition instead of finding anything.
    Scenario.run(settings=settings(max_examples=25, derandomize=True, deadline=None,
                                   stateful_step_count=6, suppress_health_check=list(HealthCheck), database=None,
                                   phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    finish_jobs()
    lib.close()
    # A job's id comes only from the answer that started it: reading one proves a link was followed, not guessed.
    assert ("GET /api/v1/jobs/{job_id}", 200) in answered, sorted(answered)
