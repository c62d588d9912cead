import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from tests.photos import broken_corpus, write_photos
from vlsearch.api.cli import app

runner = CliRunner()
NO_TEXT = ("--no-captions", "--no-ocr")  # the caption/OCR stage has its own tests (test_describe.py)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VLSEARCH_LIBRARY", str(tmp_path / "lib"))
    monkeypatch.setenv("VLSEARCH_MODEL_DIR", str(tmp_path / "models"))
    import vlsearch.captioner.registry
    import vlsearch.encoders.registry

    for module in (vlsearch.captioner.registry, vlsearch.encoders.registry):  # `auto` must never download in a test
        monkeypatch.setattr(module, "hub_reachable", lambda timeout=3.0: False)
    return tmp_path


def cli(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_index_search_similar_status_round_trip(env):
    write_photos(env / "photos", 6)
    broken_corpus(env / "photos" / "bad")
    code, out = cli("index", str(env / "photos"), "--model", "tiny-random", "--workers", "0",
                    "--caption-model", "tiny-random", "--no-ocr")
    assert code == 0, out
    assert "6 embedded" in out and "6 errors" in out and "empty file" in out
    assert "6 captioned with tiny-random" in out
    assert "1 file is over the pixel limit: raise --max-pixels to index them" in out  # the bomb: stored without a flag

    code, out = cli("search", "a photo", "--k", "3", "--json")
    assert code == 0, out
    hits = json.loads(out)
    assert len(hits) == 3 and {"id", "path", "score", "width", "height", "taken_at", "thumbnail"} <= set(hits[0])

    code, out = cli("similar", str(env / "photos" / "photo_0002.jpg"), "--k", "2", "--json")
    assert code == 0, out
    assert str(env / "photos" / "photo_0002.jpg") not in [h["path"] for h in json.loads(out)]

    code, out = cli("search", "--image", str(env / "photos" / "photo_0004.jpg"), "--k", "1")
    assert code == 0 and "photo_0004.jpg" in out

    code, out = cli("status", "--json")
    status = json.loads(out)
    assert (status["images"], status["errors"]) == (6, 6)
    assert status["models"] == [{"name": "tiny-random", "dim": 32, "vectors": 6}]

    code, out = cli("index", *NO_TEXT, str(env / "photos"))  # the library's own model is the default on re-runs
    assert code == 0 and "0 embedded" in out and "6 unchanged" in out and "6 errors" in out  # broken: retried

    code, out = cli("reindex", "--index", "flat")
    assert code == 0 and "6 vectors, flat index" in out

    code, out = cli("db", "upgrade")
    assert code == 0 and "revision 0004 (head)" in out


def test_errors_say_what_to_change(env):
    code, out = cli("search", "cat")
    assert code == 2 and "index a folder into it first" in out
    code, out = cli("index", *NO_TEXT, str(env / "does-not-exist"), "--model", "tiny-random")
    assert code == 2 and "no such file or folder" in out
    write_photos(env / "photos", 2)
    cli("index", *NO_TEXT, str(env / "photos"), "--model", "tiny-random", "--workers", "0")
    code, out = cli("search", "cat", "--model", "offline")
    assert code == 2 and "--model tiny-random" in out
    code, out = cli("search", "cat", "--after", "last tuesday")
    assert code == 2 and "2024-05-31" in out
    code, out = cli("search", "--image", str(env / "photos"))
    assert code == 2 and "cannot read" in out
    code, out = cli("search")
    assert code == 2 and "give words" in out
    code, out = cli("index", *NO_TEXT, str(env / "photos"), "--workers", "-1")
    assert code == 2 and "Invalid value" in out
    code, out = cli("index", *NO_TEXT, str(env / "photos"), "--device", "gpu")
    assert code == 2 and "use auto, cpu, cuda" in out
    (env / "a-file").write_text("x")
    code, out = cli("status", "--library", str(env / "a-file"))
    assert code == 2 and "is a file; a library is a folder" in out
    (env / "notlib").mkdir()
    (env / "notlib" / "library.db").write_bytes(b"this is not sqlite" * 100)
    code, out = cli("status", "--library", str(env / "notlib"))
    assert code == 2 and "not a readable vlsearch library" in out
    code, out = cli("search", "cat", "--weights", str(env / "missing.pt"))
    assert code == 2 and "missing.pt: no such file" in out
    (env / "bad.pt").write_bytes(b"garbage")
    code, out = cli("index", *NO_TEXT, str(env / "photos"), "--model", "vlsearch-tiny",
                    "--weights", str(env / "bad.pt"))
    assert code == 2 and "not a usable vlsearch-tiny checkpoint" in out


def test_wrong_model_is_reported_before_loading_it(env, monkeypatch):
    import vlsearch.encoders.registry

    write_photos(env / "photos", 2)
    cli("index", *NO_TEXT, str(env / "photos"), "--model", "tiny-random", "--workers", "0")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the mismatch was reported")

    monkeypatch.setattr(vlsearch.encoders.registry, "resolve_clip_weights", no_loading)
    code, out = cli("search", "cat", "--model", "ViT-B-32")
    assert code == 2 and "not from 'ViT-B-32/laion2b_s34b_b79k'" in out


def test_clip_weights_unavailable_offline_explains_how_to_get_them(env, monkeypatch):
    import vlsearch.encoders.registry

    monkeypatch.setattr(vlsearch.encoders.registry, "hub_reachable", lambda timeout=3.0: False)
    code, out = cli("models", "pull", "ViT-B-32")
    assert code == 2
    assert "vlsearch models pull ViT-B-32/laion2b_s34b_b79k" in out and "--model-dir" in out


def test_local_weights_file_is_loaded(env):
    from vlsearch.encoders import load_encoder

    tiny = load_encoder("tiny-random", device="cpu")
    weights = env / "tiny.pt"
    torch.save(tiny.model.state_dict(), weights)
    write_photos(env / "photos", 3)
    code, out = cli("index", *NO_TEXT, str(env / "photos"), "--model", "vlsearch-tiny", "--weights", str(weights),
                    "--workers", "0")
    assert code == 0, out
    assert "vlsearch-tiny/tiny.pt" in out
    code, out = cli("search", "a photo")  # the library remembers the model, but not where its file was
    assert code == 2 and "--model vlsearch-tiny --weights" in out
    code, out = cli("search", "a photo", "--model", "vlsearch-tiny", "--weights", str(weights), "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out = cli("search", "a photo", "--weights", str(weights), "--json")  # the architecture from the library
    assert code == 0 and len(json.loads(out)) == 3


def test_two_checkpoints_with_the_same_file_name_are_two_models(env):
    from vlsearch.encoders import load_encoder

    tiny = load_encoder("tiny-random", device="cpu")
    first, second = env / "a" / "model.pt", env / "b" / "model.pt"
    first.parent.mkdir()
    second.parent.mkdir()
    torch.save(tiny.model.state_dict(), first)
    torch.save({k: v + 0.01 for k, v in tiny.model.state_dict().items()}, second)
    write_photos(env / "photos", 2)
    for weights in (first, second):
        code, out = cli("index", *NO_TEXT, str(env / "photos"), "--model", "vlsearch-tiny", "--weights", str(weights),
                        "--workers", "0")
        assert code == 0 and "2 embedded" in out, out
    code, out = cli("status", "--json")
    models = json.loads(out)["models"]
    assert len(models) == 2 and all(m["vectors"] == 2 for m in models)
    assert all(m["name"].startswith("vlsearch-tiny/model.pt#") for m in models)


def test_models_list_marks_the_offline_fallback(env):
    code, out = cli("models", "list")
    assert code == 0
    assert "ViT-B-32" in out and "FALLBACK, weaker than CLIP" in out and "tiny-random" in out


def test_help_explains_every_command():
    code, out = cli("--help")
    assert code == 0
    for command in ("index", "search", "similar", "caption", "ask", "status", "reindex", "db", "models", "serve"):
        assert command in out
    code, out = cli("search", "--help")
    assert "--not" in out and "--min-score" in out and "--camera" in out


def test_caption_files_gives_alt_text_as_json_and_reports_bad_files(env):
    photos = write_photos(env / "photos", 2)
    (env / "notes.jpg").write_text("not a picture")
    code, out = cli("caption", str(photos[0]), str(env / "notes.jpg"), str(photos[1]), "--caption-model",
                    "tiny-random", "--no-ocr", "--json", "--prompt", "a photo of")
    assert code == 1  # one file could not be described; the others still are
    result = json.loads(out[out.index("["):])
    assert [r["path"] for r in result] == [str(photos[0]), str(env / "notes.jpg"), str(photos[1])]
    assert result[0]["model"] == "tiny-random" and result[0]["caption"].startswith("a photo of")
    assert "not an image" in result[1]["error"]
    code, out = cli("caption", str(photos[0]), "--caption-model", "blip-vqa-base")
    assert code == 2 and "cannot write captions" in out
    code, out = cli("caption", str(env / "photos"), str(env / "gone.png"), "--caption-model", "tiny-random",
                    "--no-ocr")
    assert code == 1 and "is a folder: index it (`vlsearch index FOLDER`)" in out
    assert f"{env / 'gone.png'}: no such file" in out.replace("\n", "") and out.count("gone.png") == 1


def test_caption_library_is_incremental_and_search_modes_use_the_text(env):
    write_photos(env / "photos", 4)
    assert cli("index", *NO_TEXT, str(env / "photos"), "--model", "tiny-random", "--workers", "0")[0] == 0
    code, out = cli("caption", "--caption-model", "tiny-random", "--no-ocr", "--workers", "0")
    assert code == 0 and "4 captioned with tiny-random" in out, out
    code, out = cli("caption", "--no-ocr", "--workers", "0")  # the library's caption model is the default
    assert code == 0 and "0 captioned with tiny-random" in out, out
    code, out = cli("status", "--json")
    assert json.loads(out)["captions"] == {"tiny-random": 4}
    code, out = cli("search", "photo_0002", "--mode", "keyword", "--json")
    hits = json.loads(out)
    assert code == 0 and hits[0]["path"].endswith("photo_0002.jpg") and hits[0]["caption"]
    code, out = cli("search", "photo_0002", "--mode", "hybrid", "--k", "2")
    assert code == 0 and "photo_0002.jpg" in out
    code, out = cli("search", "x", "--mode", "fuzzy")
    assert code == 2 and "mode must be one of vector, keyword, hybrid" in out
    code, out = cli("search", "x", "--rerank", "3", "--itm-model", "tiny-random", "--json")
    assert code == 0 and all(h["match_score"] is not None for h in json.loads(out)[:3])


def test_ask_one_image_and_the_collection(env):
    photos = write_photos(env / "photos", 5)
    assert cli("index", *NO_TEXT, str(env / "photos"), "--model", "tiny-random", "--workers", "0")[0] == 0
    code, out = cli("ask", "what colour is it?", "--image", str(photos[1]), "--vqa-model", "tiny-random", "--json")
    assert code == 0 and json.loads(out)["model"] == "tiny-random" and json.loads(out)["answer"]
    code, out = cli("ask", "what colour is it?", "--image", "2", "--vqa-model", "tiny-random", "--json")
    assert code == 0 and json.loads(out)["path"] == str(photos[1])
    code, out = cli("ask", "is there a cat?", "--image", str(photos[1]), "--vqa-model", "offline")
    assert code == 2 and "needs a VQA model" in out and "--vqa-model blip-vqa-base" in out
    code, out = cli("ask", "what is it?", "--image", "99", "--vqa-model", "tiny-random")
    assert code == 2 and "image 99 is not in the library" in out
    for blank in ("", "  ", "???"):
        code, out = cli("ask", blank, "--image", str(photos[1]), "--vqa-model", "tiny-random")
        assert code == 2 and "is not a question" in out
    code, out = cli("ask", "which photos show a red ball?", "--vqa-model", "tiny-random", "--threshold", "0",
                    "--candidates", "4", "--json")
    result = json.loads(out)
    assert code == 0 and result["retrieval_query"] == "a red ball" and result["method"] == "vqa"
    assert len(result["results"]) == 4 and all(r["answer"] == "yes" for r in result["results"])
    code, out = cli("ask", "which photos show a red ball?", "--vqa-model", "offline", "--itm-model", "none-such")
    assert code == 2 and "unknown model 'none-such' for --itm-model" in out
    code, out = cli("ask", "which photos show a red ball?", "--vqa-model", "offline",
                    "--model-dir", str(env / "empty-model-dir"))  # no VQA or ITM model: answered by search alone
    assert code == 0 and "found by search, not verified: pass --vqa-model blip-vqa-base" in out
    assert "found by similarity" in out
    code, out = cli("ask", "which photos show a red ball?", "--vqa-model", "offline", "--json",
                    "--model-dir", str(env / "empty-model-dir"))
    result = json.loads(out)
    assert (result["method"], result["verified"]) == ("retrieval", False) and result["results"]


def test_models_list_names_the_caption_models():
    code, out = cli("models", "list")
    assert code == 0 and all(name in out for name in ("blip-base", "blip-vqa-base", "blip-itm-base", "offline"))


def test_a_folder_caption_model_is_reused_while_there_and_a_stand_in_fills_gaps_when_gone(env):
    """Captions made with a folder checkpoint: later runs load it again by the name the library recorded; when
    the folder is gone they warn, and `auto` (offline here) captions only images that have no caption at all."""
    import shutil

    from vlsearch.captioner.tiny import tiny_blip

    model, processor = tiny_blip("caption")
    model.save_pretrained(env / "my-blip")
    processor.save_pretrained(env / "my-blip")
    write_photos(env / "photos", 2)
    code, out = cli("index", str(env / "photos"), "--model", "tiny-random", "--workers", "0", "--no-ocr",
                    "--caption-model", str(env / "my-blip"))
    assert code == 0 and f"2 captioned with blip:{env / 'my-blip'}#" in out.replace("\n", ""), out
    write_photos(env / "photos", 3)
    code, out = cli("index", str(env / "photos"), "--workers", "0", "--no-ocr")
    assert code == 0 and "warning" not in out and "1 captioned with blip:" in out, out
    shutil.rmtree(env / "my-blip")
    write_photos(env / "photos", 4)
    code, out = cli("index", str(env / "photos"), "--workers", "0", "--no-ocr")
    assert code == 0, out
    assert "my-blip" in out and "is gone" in out and "only the images that have no caption" in out
    assert "1 captioned with offline" in out  # not the three that have a caption already
    code, out = cli("status", "--json")
    captions = json.loads(out)["captions"]
    assert captions["offline"] == 1 and sum(captions.values()) == 4


def test_markup_in_paths_and_text_is_printed_as_is(env):
    """Rich would read "[/]" or "[bold]" in a file name as markup and crash or drop it."""
    folder = env / "photos [/] [bold]x"
    photos = write_photos(folder, 2)
    code, out = cli("index", str(folder), "--model", "tiny-random", "--workers", "0", "--no-ocr",
                    "--caption-model", "tiny-random")
    assert code == 0, out
    code, out = cli("search", "a photo", "--k", "2")
    assert code == 0 and "photos [/] [bold]x" in out.replace("\n", ""), out
    code, out = cli("caption", str(photos[0]), "--caption-model", "tiny-random", "--no-ocr")
    assert code == 0 and "[bold]x" in out
    code, out = cli("caption", str(folder / "[red]missing.png"), "--caption-model", "tiny-random")
    assert code != 0 and "[red]missing.png" in out


def test_a_fallback_warning_from_the_core_says_how_to_get_the_weights(tmp_path):
    """`auto` without BLIP weights falls back to the offline captioner; the core logs why, naming no flag, and the
    CLI shows that warning in its own words. A process of its own, as logging is set up once per process."""
    photo = write_photos(tmp_path / "p", 1)[0]
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "VLSEARCH_MODEL_DIR": str(tmp_path / "models")}
    run = subprocess.run([sys.executable, "-m", "vlsearch.api.cli", "caption", str(photo), "--no-ocr"], env=env,
                         capture_output=True, text=True, timeout=300)
    said = " ".join(run.stderr.split())
    assert run.returncode == 0, run.stderr
    assert "run `vlsearch models pull blip-base --model-dir DIR`" in said and "Falling back to `offline`" in said
