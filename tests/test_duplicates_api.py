"""GET /api/v1/duplicates over a real server: groups with their keeper, filtered and paged, found again after the
others are forgotten through POST /images/delete (behind the key)."""

from __future__ import annotations

import shutil

import httpx

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "k" * 32


def test_duplicate_groups_are_listed_and_the_others_forgotten(tmp_path, tiny_encoder):
    photos = write_photos(tmp_path / "photos", 4)
    for n in range(2):  # two byte-for-byte copies of the first photo, and one of the second
        shutil.copy(photos[0], tmp_path / "photos" / f"copy_{n}.jpg")
    shutil.copy(photos[1], tmp_path / "photos" / "copy_of_1.jpg")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    strict = {"near_threshold": 0.9999, "copy_threshold": 0.9999}  # random weights: distinct photos may look alike
    with serving(make_app(lib, tiny_encoder, api_keys=[KEY])) as url:
        found = httpx.get(url + "/api/v1/duplicates", params=strict, timeout=60).json()
        assert found["total"] == 2, found
        first, second = found["groups"]
        assert first["kind"] == "exact" and len(first["members"]) == 3 and len(second["members"]) == 2
        assert first["keeper"] == first["members"][0]["id"] and {m["path"].rsplit("/", 1)[-1]
                                                                  for m in first["members"]} == {
            "photo_0000.jpg", "copy_0.jpg", "copy_1.jpg"}
        assert all(m["similarity"] == 1.0 for m in first["members"])
        page = httpx.get(url + "/api/v1/duplicates", params={**strict, "kind": "exact", "limit": 1, "offset": 1},
                         timeout=60)
        assert httpx.get(url + "/api/v1/duplicates", params={**strict, "kind": "near"}).json()["total"] == 0
        assert page.json()["groups"] == [second]
        wrong = httpx.get(url + "/api/v1/duplicates", params={"near_threshold": 0.99, "copy_threshold": 0.5})
        assert wrong.status_code == 422 and "near_threshold" in wrong.text
        others = [m["id"] for m in first["members"][1:]]
        assert httpx.post(url + "/api/v1/images/delete", json={"ids": others}).status_code == 401
        done = httpx.post(url + "/api/v1/images/delete", json={"ids": others},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert [d["id"] for d in done.json()["deleted"]] == others
        after = httpx.get(url + "/api/v1/duplicates", params=strict, timeout=60).json()
        assert after["total"] == 1 and after["groups"][0] == second
    lib.close()


def test_eval_scores_duplicate_pairs_against_labelled_groups(tmp_path, tiny_encoder):
    import json
    from itertools import combinations

    from typer.testing import CliRunner

    from vlsearch.api.cli import app
    from vlsearch.search.duplicates import find_duplicates

    photos = write_photos(tmp_path / "photos", 3)
    shutil.copy(photos[0], tmp_path / "photos" / "again.jpg")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    truth = {str(photos[0]), str(tmp_path / "photos" / "again.jpg")}
    (tmp_path / "eval.jsonl").write_text(json.dumps({"duplicates": [sorted(truth)]}) + "\n"
                                         + json.dumps({"text": "x", "relevant": [str(photos[1])]}) + "\n")
    out = CliRunner().invoke(app, ["eval", str(tmp_path / "eval.jsonl"), "--library", str(lib.root), "--json",
                                   "--mode", "vector"])
    assert out.exit_code == 0, out.output
    scored = json.loads(out.stdout)["duplicates"]
    # Only pairs among the photos the duplicate cases name are judged: there, the exact copies' one pair.
    found = {frozenset(p) for g in find_duplicates(lib, tiny_encoder.name)
             for p in combinations(sorted({m.path for m in g.members} & truth), 2)}
    assert found == {frozenset(truth)}
    assert scored == {"precision": 1.0, "recall": 1.0, "predicted": 1, "expected": 1, "correct": 1}
    lib.close()
