"""Schemathesis following the schema's links (api/contract.py): index a folder and read the job, search and open,
fetch and delete the hits, read a deleted image (a 404, not a ghost). Every check runs on every step, the stateful
ones included (a resource a link names exists; one deleted stays gone)."""

from __future__ import annotations

import os

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
FUZZ = int(os.environ.get("VLSEARCH_FUZZ", "0"))  # as in test_api_schema.py: N fresh scenarios instead of 15 fixed
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

    class Scenario(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": f"Bearer {KEY}"}}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, excluded_checks=[positive_data_acceptance, negative_data_rejection],
                                   additional_checks=[schema_valid_requests_are_accepted,
                                                      schema_violations_are_refused],
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    # No shrinking: deletes outlive a scenario, so a replay meets another library and hypothesis calls it flaky.
    Scenario.run(settings=settings(max_examples=FUZZ or 15, derandomize=not FUZZ, deadline=None,
                                   stateful_step_count=6, suppress_health_check=list(HealthCheck), database=None,
                                   phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    lib.close()
