"""POST /api/v1/eval over a real server: the same numbers `vlsearch eval --json` gives for the same cases, and errors
that name the case at fault; example images only from the library (the server reads no other file for a caller)."""

from __future__ import annotations

import json
import shutil

import httpx
from typer.testing import CliRunner

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.api.cli import app
from vlsearch.indexer import Indexer
from vlsearch.indexer.tagging import Tagger
from vlsearch.indexer.vocabulary import ensure_default
from vlsearch.library import Library
from vlsearch.search.tags import tags_by_path


def test_the_api_reports_what_the_command_does(tmp_path, tiny_encoder):
    photos = write_photos(tmp_path / "photos", 4)
    shutil.copy(photos[0], tmp_path / "photos" / "again.jpg")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    ensure_default(lib)
    Tagger(lib, tiny_encoder).run()
    given = tags_by_path(lib, [str(photos[1])]).get(str(photos[1]), [])
    cases = [{"text": "a photo", "relevant": ["photo_0001.jpg", "photo_0002.jpg"]},
             {"image": "photo_0003.jpg", "relevant": ["photo_0003.jpg"]},
             {"path": "photo_0001.jpg", "tags": [*given[:1], "no such tag"]},
             {"duplicates": [["photo_0000.jpg", "again.jpg"]]}]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    cli = CliRunner().invoke(app, ["eval", str(tmp_path / "eval.jsonl"), "--photos", str(tmp_path / "photos"),
                                   "--library", str(lib.root), "--json"])
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.stdout)
    with serving(make_app(lib, tiny_encoder)) as url:
        answer = httpx.post(url + "/api/v1/eval", json={"cases": cases}, timeout=60)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        # A case the schema refuses is a 422; one naming a file or folder the library lacks, a 404.
        bad = [({"cases": [cases[0], {"text": "x"}]}, 422, 'cases[1]: a case has exactly one of "relevant"'),
               ({"cases": [{"image": "missing.jpg", "relevant": ["photo_0001.jpg"]}]}, 404,
                "an example image must be one the library holds"),
               ({"cases": cases, "photos": str(tmp_path)}, 404, "is not one of the library's folders"),
               ({"cases": cases, "modes": ["fuzzy"]}, 422, "modes")]
        for body, status, words in bad:
            refused = httpx.post(url + "/api/v1/eval", json=body, timeout=60)
            assert refused.status_code == status and words in refused.json()["detail"], (body, refused.text)
    lib.close()
    assert got["duplicates"] == expected["duplicates"] == {"precision": 1.0, "recall": 1.0, "predicted": 1,
                                                           "expected": 1, "correct": 1}
    assert got["tags"] == expected["tags"] and got["tags"]["expected"] == 1 + len(given[:1])
    assert [m["mode"] for m in got["modes"]] == ["vector", "keyword", "hybrid"]
    assert got["modes"] == expected["modes"] and got["k"] == 10
    vector = got["modes"][0]
    assert vector["scored"] == 2 and vector["cases"][1]["query"].endswith("photo_0003.jpg")


def test_the_api_does_not_say_where_the_servers_links_lead(tmp_path, tiny_encoder):
    photos = write_photos(tmp_path / "photos", 2)
    (tmp_path / "photos" / "link.jpg").symlink_to(tmp_path / "secret" / "target.jpg")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with serving(make_app(lib, tiny_encoder)) as url:
        answer = httpx.post(url + "/api/v1/eval", json={"cases": [
            {"text": "a photo", "relevant": ["link.jpg", photos[0].name, "/proc/self/cwd"]}]}, timeout=60).json()
    lib.close()
    assert answer["unindexed"] == ["/proc/self/cwd", str(tmp_path / "photos" / "link.jpg")]  # as given, joined
