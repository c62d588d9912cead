"""A server (or CLI) without BLIP weights still answers: questions over the collection from OCR text or by search
(marked unverified), searches asking for a rerank unreranked (and told why), and every HTTP error names the
server's settings, never a command-line flag."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from sqlalchemy import select

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.captioner import load_image_text_model
from vlsearch.indexer import Indexer
from vlsearch.library import ImageRecord, Library
from vlsearch.library.schema import OcrText
from vlsearch.search.ask import ask_collection
from vlsearch.search.engine import SearchEngine

READ = {"photo_0001.jpg": "EXIT this way", "photo_0002.jpg": "Fire EXITS", "photo_0003.jpg": ""}


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_encoder):
    """Five photos; OCR read text in two of them (stored as indexing stores it), nothing in a third."""
    root = tmp_path_factory.mktemp("unchecked")
    write_photos(root / "photos", 5)
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([root / "photos"])
    with lib.session() as s:
        ids = {r.path.rsplit("/", 1)[1]: r.id for r in s.scalars(select(ImageRecord))}
        s.add_all(OcrText(image_id=ids[name], engine="test", text=text) for name, text in READ.items())
        s.commit()
    yield lib, ids
    lib.close()


def names(result) -> list[str]:
    return [f.hit.path.rsplit("/", 1)[1] for f in result.findings]


def test_questions_about_text_are_answered_from_the_stored_ocr_text(library, tiny_encoder):
    lib, _ = library
    engine = SearchEngine(lib, tiny_encoder)
    has_text = ask_collection(engine, None, "which photos have text?")
    assert (has_text.method, has_text.verified, has_text.check) == ("ocr", True, "is there text?")
    assert sorted(names(has_text)) == ["photo_0001.jpg", "photo_0002.jpg"]
    assert {f.answer for f in has_text.findings} == {'yes: "EXIT this way"', 'yes: "Fire EXITS"'}
    says = ask_collection(engine, None, "which photos say 'exit'?")
    assert names(says) == ["photo_0001.jpg"] and says.check == 'does it say "exit"?'  # whole words: not EXITS
    quoted = ask_collection(engine, None, "which photos have the word 'exit' on them?")
    assert names(quoted) == ["photo_0001.jpg"] and quoted.method == "ocr"
    for described in ("which photos show text on a sign?", "which photos have words written in red?"):
        assert ask_collection(engine, None, described).method == "retrieval"  # text described, not quoted


def test_other_questions_are_answered_by_search_and_marked_unverified(library, tiny_encoder):
    lib, _ = library
    result = ask_collection(SearchEngine(lib, tiny_encoder), None, "which photos show a red square?", k=3)
    assert (result.method, result.verified, result.retrieval_query) == ("retrieval", False, "a red square")
    assert 1 <= len(result.findings) <= 3 and result.candidates == 5
    assert all(f.answer.startswith("found by") for f in result.findings)
    scores = [f.score for f in result.findings]
    assert scores == sorted(scores, reverse=True)


def test_a_checking_model_still_checks_each_candidate(library, tiny_encoder):
    lib, _ = library
    vqa = load_image_text_model("tiny-random", "answer", device="cpu")
    result = ask_collection(SearchEngine(lib, tiny_encoder), vqa, "which photos have text?", threshold=0)
    assert (result.method, result.verified) == ("vqa", True) and result.check == "does the picture show text?"


def test_the_api_answers_ask_and_rerank_without_blip_and_names_settings_not_flags(library, tiny_encoder):
    lib, ids = library
    with serving(make_app(lib, tiny_encoder)) as url:
        ask = httpx.post(url + "/api/v1/ask", json={"question": "which photos show a red square?"})
        assert ask.status_code == 200, ask.text
        assert (ask.json()["method"], ask.json()["verified"]) == ("retrieval", False) and ask.json()["results"]
        text = httpx.post(url + "/api/v1/ask", json={"question": "which photos have text?"}).json()
        assert (text["method"], text["verified"]) == ("ocr", True)
        assert {r["id"] for r in text["results"]} == {ids["photo_0001.jpg"], ids["photo_0002.jpg"]}
        plain = httpx.get(url + "/api/v1/search", params={"q": "red", "k": 3}).json()
        asked = httpx.get(url + "/api/v1/search", params={"q": "red", "k": 3, "rerank": 5})
        assert asked.status_code == 200 and asked.json()["reranked"] is False
        assert "itm_model" in asked.json()["rerank_note"] and "--" not in asked.json()["rerank_note"]
        assert [h["id"] for h in asked.json()["hits"]] == [h["id"] for h in plain["hits"]]
        assert plain["reranked"] is None  # none asked for
        for answer, setting in ((httpx.post(url + "/api/v1/caption", data={"image_id": "1"}), "caption_model"),
                                (httpx.post(url + "/api/v1/vqa", data={"image_id": "1", "question": "what?"}),
                                 "vqa_model")):
            detail = answer.json()["detail"]
            assert answer.status_code == 503 and f"set {setting} = " in detail and "--" not in detail, detail


def test_a_rerank_with_the_model_says_so(library, tiny_encoder):
    lib, _ = library
    matcher = load_image_text_model("tiny-random", "match", device="cpu")
    with serving(make_app(lib, tiny_encoder, matcher=matcher)) as url:
        asked = httpx.get(url + "/api/v1/search", params={"q": "red", "k": 3, "rerank": 5}).json()
        assert asked["reranked"] is True and asked["rerank_note"] is None
        assert all(h["match_score"] is not None for h in asked["hits"])


def test_a_server_told_to_load_an_itm_model_it_cannot_find_fails_at_start_up(library, tmp_path):
    """Answering unreranked is for servers without the model; one asked for it by name must not start without it."""
    lib, _ = library
    run = subprocess.run([sys.executable, "-m", "vlsearch.api.cli", "serve", "--library", str(lib.root), "--port",
                          "1", "--itm-model", "blip-itm-base", "--model-dir", str(tmp_path / "empty")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "weights of blip-itm-base" in run.stdout + run.stderr
