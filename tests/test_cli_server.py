"""`vlsearch search` and `similar` with --server: the same hits as against the library itself, the table alike, and
the server's refusals worded as CLI errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.api.cli import app
from vlsearch.captioner import load_image_text_model
from vlsearch.encoders import load_encoder
from vlsearch.library import Library

runner = CliRunner()
KEY = "s" * 32


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("VLSEARCH_LIBRARY", str(tmp_path / "lib"))
    monkeypatch.setenv("VLSEARCH_MODEL_DIR", str(tmp_path / "models"))
    photos = write_photos(tmp_path / "photos", 6)
    write_photos(tmp_path / "elsewhere", 1, start=9)  # a query image the library does not hold
    code, out = cli("index", str(tmp_path / "photos"), "--model", "tiny-random", "--workers", "0", "--no-captions",
                    "--no-ocr")
    assert code == 0, out
    lib = Library.open(tmp_path / "lib")
    models = {"captioner": load_image_text_model("tiny-random", "caption", device="cpu"),
              "answerer": load_image_text_model("tiny-random", "answer", device="cpu")}
    with serving(make_app(lib, load_encoder("tiny-random", device="cpu"), api_keys=[KEY], auth_reads=True,
                          index_roots=[tmp_path / "photos"], **models)) as url:
        yield url, photos
    lib.close()


def hits(out: str) -> list[tuple[int, str, float]]:
    return [(h["id"], h["path"], h["score"]) for h in json.loads(out)]


@pytest.mark.parametrize("args", [
    ("search", "a photo", "--k", "4"),
    ("search", "a photo", "--mode", "keyword", "--k", "3"),
    ("search", "--image", "{other}", "--k", "3", "--not", "dark"),
    ("similar", "2", "--k", "3"),
    ("similar", "{photo}", "--k", "3"),
    ("similar", "{other}", "--k", "3"),
])
def test_the_server_answers_as_the_library_does(served, args):
    url, photos = served
    other = photos[0].parent.parent / "elsewhere" / "photo_0009.jpg"
    args = [a.replace("{photo}", str(photos[1])).replace("{other}", str(other)) for a in args]
    code, local = cli(*args, "--json")
    assert code == 0, local
    code, remote = cli(*args, "--json", "--server", url, "--key", KEY)
    assert code == 0, remote
    assert [(i, p) for i, p, _ in hits(remote)] == [(i, p) for i, p, _ in hits(local)]
    # an indexed file: locally its stored (float16) vector, through the server its bytes embedded afresh
    assert [s for *_, s in hits(remote)] == pytest.approx([s for *_, s in hits(local)], abs=1e-3)
    assert cli(*args, "--server", url, "--key", KEY) == cli(*args)  # the same table


def test_the_servers_refusals_are_cli_errors(served):
    url, _ = served
    code, out = cli("search", "a photo", "--server", url)  # reads need the key on this server
    assert code != 0 and "--key" in out and "Traceback" not in out
    code, out = cli("search", "a photo", "--server", "http://127.0.0.1:9", "--key", KEY)
    assert code != 0 and "cannot reach the server" in out
    code, out = cli("similar", "999999", "--server", url, "--key", KEY)
    assert code != 0 and "999999" in out


def test_status_and_captions_through_the_server(served, tmp_path):
    url, photos = served
    code, local = cli("status", "--json")
    code2, remote = cli("status", "--json", "--server", url, "--key", KEY)
    assert code == code2 == 0 and json.loads(remote) == json.loads(local)
    code, out = cli("caption", str(photos[0]), str(tmp_path / "missing.jpg"), "--json", "--server", url, "--key", KEY)
    assert out.lstrip().startswith("["), out
    results = json.loads(out)
    assert code == 1 and [r["path"] for r in results] == [str(photos[0]), str(tmp_path / "missing.jpg")]
    assert results[0]["caption"] and results[0]["model"] == "tiny-random" and results[1]["error"] == "no such file"


def test_asking_the_collection_through_the_server(served):
    url, _ = served
    args = ("ask", "which photos show a red square?", "--vqa-model", "tiny-random", "--threshold", "0", "--k", "3",
            "--json")
    code, local = cli(*args)
    code2, remote = cli(*args, "--server", url, "--key", KEY)
    assert code == code2 == 0, remote
    local, remote = json.loads(local), json.loads(remote)
    assert [(r["id"], r["answer"]) for r in remote["results"]] == [(r["id"], r["answer"]) for r in local["results"]]
    assert len(remote["results"]) == 3 and remote["check"] == local["check"] and remote["method"] == "vqa"


def test_indexing_folders_on_the_server(served, tmp_path):
    url, photos = served
    write_photos(photos[0].parent / "more", 2, start=20)
    code, out = cli("index", str(photos[0].parent), "--server", url, "--key", KEY, "--no-captions", "--no-ocr")
    assert code == 0, out
    assert "server job 1" in out and "2 embedded" in " ".join(out.split()) and "0 errors" in out
    code, out = cli("status", "--json", "--server", url, "--key", KEY)
    assert json.loads(out)["images"] == 8
    code, out = cli("index", "/nowhere", "--server", url, "--key", KEY)
    assert code != 0 and "the server says" in out
