"""Tags: vocabularies read from files, zero-shot scores from stored vectors, tags kept in step with images and
vocabularies, search by tag, and the CLI; the offline model's real weights for "the cat photo is tagged cat-like"."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from tests.api_helpers import make_app, serving
from tests.photos import write_photo, write_photos
from vlsearch.api.cli import app
from vlsearch.images.samples import sample_photos
from vlsearch.indexer import Indexer
from vlsearch.indexer.tagging import MAX_TAGS, Tagger, tag_scores
from vlsearch.indexer.vocabulary import (
    Label,
    VocabularyError,
    ensure_default,
    read_vocabulary,
    remove_vocabulary,
    save_vocabulary,
    vocabulary_counts,
)
from vlsearch.library import ImageRecord, Library
from vlsearch.library.schema import ImageTag, ImageTagging
from vlsearch.search import Filters, SearchEngine, SearchQuery
from vlsearch.search.tags import image_tags


def test_scores_are_a_softmax_over_the_vocabulary_and_tags_pass_the_threshold():
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    images = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    similarity, score, top = tag_scores(images, labels, threshold=0.1)
    # Image 0: cosines 1, 0, 0.6 -> logits 100, 0, 60: label 0 takes all but e^-40 of the share.
    assert similarity[0].tolist() == pytest.approx([1.0, 0.0, 0.6])
    assert score[0, 0] == pytest.approx(1.0) and score[0, 2] == pytest.approx(np.exp(-40.0), rel=1e-3)
    # Image 1: cosines 0.8, 0.6, 0.96 -> label 2 first, then label 0 at e^-16 of it: below 0.1.
    assert score[1, 2] == pytest.approx(1 / (1 + np.exp(-16.0) + np.exp(-36.0)))
    assert top == [(0, 0), (1, 2)]
    assert np.allclose(score.sum(axis=1), 1.0)
    flat = np.ones((1, 2 * MAX_TAGS), dtype=np.float32)  # a tie: every label 1/20 of the share
    assert len(tag_scores(np.ones((1, 1), np.float32), flat.T, threshold=0.01)[2]) == MAX_TAGS


def test_vocabulary_files_name_what_is_wrong(tmp_path):
    words = tmp_path / "styles.txt"
    words.write_text("# a shop's styles\nBoho\n\nminimal  # comment\nboho\n")
    assert read_vocabulary(words) == [Label("Boho", "a photo of Boho."), Label("minimal", "a photo of minimal.")]
    table = tmp_path / "styles.csv"
    table.write_text("label,prompt\nsneaker,a product photo of a {}\nboot,\n")
    assert read_vocabulary(table) == [Label("sneaker", "a product photo of a sneaker"),
                                      Label("boot", "a photo of boot.")]
    for content, name, words_ in (("# nothing\n", "empty.txt", "no labels"), ("name\nx\n", "bad.csv", "`label`"),
                                  ("label,prompt\nboot,a picture\n", "prompt.csv", "line 2")):
        (tmp_path / name).write_text(content)
        with pytest.raises(VocabularyError, match=words_):
            read_vocabulary(tmp_path / name)


@pytest.fixture
def tagged_library(tmp_path, tiny_encoder):
    paths = write_photos(tmp_path / "photos", 6)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    save_vocabulary(lib, "shapes", [Label(w, f"a photo of {w}") for w in ("circles", "squares", "stripes")], 0.2,
                    "test")
    yield lib, paths
    lib.close()


def stored_tags(lib: Library) -> dict[int, set[str]]:
    with lib.session() as s:
        rows = s.execute(select(ImageTag.image_id, ImageTag.label)).all()
    found: dict[int, set[str]] = {}
    for image_id, label in rows:
        found.setdefault(image_id, set()).add(label)
    return found


def test_tags_come_from_stored_vectors_and_stay_in_step(tagged_library, tiny_encoder):
    lib, paths = tagged_library
    report = Tagger(lib, tiny_encoder).run()
    assert (report.scored, report.vocabularies) == (6, ["shapes"])
    tags = stored_tags(lib)
    # Each image's tags are what tag_scores makes of its stored vector and the labels' vectors.
    labels, label_vectors = Tagger(lib, tiny_encoder).label_vectors("shapes")
    ids, vectors = lib.load_vectors(tiny_encoder.name)
    _, _, top = tag_scores(vectors, label_vectors, 0.2)
    expected: dict[int, set[str]] = {}
    for i, j in top:
        expected.setdefault(int(ids[i]), set()).add(labels[j])
    assert tags == expected and report.tags == sum(map(len, expected.values())) > 0
    assert Tagger(lib, tiny_encoder).run().scored == 0  # nothing new: nothing scored
    # A file whose content changes gets a new vector: its tags are dropped (a trigger) and the index run rescores it.
    write_photo(paths[0], seed=99)
    run = Indexer(lib, tiny_encoder, workers=0).run([paths[0].parent])
    assert run.embedded == 1 and run.tagged.scored == 1
    with lib.session() as s:
        changed = s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(paths[0])))
        assert s.scalar(select(ImageTagging.image_id).where(ImageTagging.image_id == changed)) == changed
    # New images are tagged by indexing; replacing the vocabulary drops its tags until the next run.
    write_photos(paths[0].parent / "more", 2)
    assert Indexer(lib, tiny_encoder, workers=0).run([paths[0].parent]).tagged.scored == 2
    save_vocabulary(lib, "shapes", [Label("dots", "a photo of dots")], 0.5, "test")
    assert stored_tags(lib) == {} and vocabulary_counts(lib)[0]["scored"] == 0
    assert Tagger(lib, tiny_encoder).run().scored == 8
    assert all(labels == {"dots"} for labels in stored_tags(lib).values())  # one label: all its share
    remove_vocabulary(lib, "shapes")
    assert stored_tags(lib) == {} and vocabulary_counts(lib) == []
    with pytest.raises(LookupError, match="shapes"):
        remove_vocabulary(lib, "shapes")


def test_search_by_tag_admits_only_tagged_images(tagged_library, tiny_encoder):
    lib, _ = tagged_library
    Tagger(lib, tiny_encoder).run()
    tags = stored_tags(lib)
    label = max({t for ts in tags.values() for t in ts}, key=lambda t: sum(t in ts for ts in tags.values()))
    engine = SearchEngine(lib, tiny_encoder)
    hits = engine.search(SearchQuery(text="a photo", k=20, filters=Filters(tags=(label.upper(),))))
    assert {h.id for h in hits} == {i for i, ts in tags.items() if label in ts}
    both = engine.search(SearchQuery(text="a photo", k=20, filters=Filters(tags=(label, "no such tag"))))
    assert both == []


def test_the_cli_adds_a_vocabulary_shows_tags_and_searches_by_tag(tmp_path, tiny_encoder):
    write_photos(tmp_path / "photos", 3)
    runner = CliRunner()
    lib_dir = str(tmp_path / "lib")
    index = runner.invoke(app, ["index", str(tmp_path / "photos"), "--library", lib_dir, "--model", "tiny-random",
                                "--workers", "0", "--no-captions", "--no-ocr"])
    assert index.exit_code == 0, index.output
    (tmp_path / "words.txt").write_text("red\ngreen\nblue\n")
    added = runner.invoke(app, ["tags", "vocab", str(tmp_path / "words.txt"), "--library", lib_dir,
                                "--threshold", "0.3"])
    assert added.exit_code == 0 and "3 labels" in added.output and "3 images tagged" in added.output, added.output
    listed = json.loads(runner.invoke(app, ["tags", "list", "--library", lib_dir, "--json"]).output)
    assert [(v["name"], v["labels"], v["scored"]) for v in listed] == [("words", 3, 3)]
    photo = str(tmp_path / "photos" / "photo_0000.jpg")
    shown = json.loads(runner.invoke(app, ["tags", "show", photo, "--library", lib_dir, "--json"]).output)
    assert all(t["score"] >= 0.3 and t["vocabulary"] == "words" for t in shown)
    if shown:
        found = runner.invoke(app, ["search", "x", "--tag", shown[0]["label"], "--library", lib_dir, "--json"])
        assert photo in {h["path"] for h in json.loads(found.output)}
    missing = runner.invoke(app, ["tags", "show", "nope.jpg", "--library", lib_dir])
    assert missing.exit_code != 0 and "not an indexed image" in missing.output
    bad = runner.invoke(app, ["tags", "vocab", str(tmp_path / "words.txt"), "--library", lib_dir, "--name", "a b"])
    assert bad.exit_code != 0 and "not a vocabulary name" in bad.output


def test_the_cat_photo_is_tagged_cat_like_and_a_custom_vocabulary_tags_a_catalogue(tmp_path):
    """The offline model's real weights: the default vocabulary tags the cat photo as a cat, --tag finds it; a
    shop's own labels tag its (sample-photo) products."""
    from vlsearch.encoders import load_encoder

    photos = sample_photos()
    (tmp_path / "photos").mkdir()
    for name in ("chelsea", "coffee", "rocket", "flower", "astronaut"):
        photos[name].convert("RGB").save(tmp_path / "photos" / f"{name}.jpg")
    encoder = load_encoder("offline", model_dir=tmp_path / "models", device="cpu")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, encoder, workers=0).run([tmp_path / "photos"])
    assert ensure_default(lib) and not ensure_default(lib)
    Tagger(lib, encoder).run()
    with lib.session() as s:
        ids = dict(s.execute(select(ImageRecord.path, ImageRecord.id)).all())
    chelsea = ids[str(tmp_path / "photos" / "chelsea.jpg")]
    top = image_tags(lib, chelsea)[0]
    assert "cat" in top.label
    # the offline preset's default tags are its ImageNet classifier's own probabilities, computed here afresh
    with Image.open(tmp_path / "photos" / "chelsea.jpg") as image:
        probs = encoder.classifier.probabilities(encoder.preprocess(image.convert("RGB"))[None])[0]
    assert top.score == pytest.approx(float(probs[encoder.class_names.index(top.label)]), abs=0.02)
    default_tags = {t.label for i in ids.values() for t in image_tags(lib, i) if t.vocabulary == "default"}
    assert default_tags and default_tags <= set(encoder.class_names)
    found = SearchEngine(lib, encoder).search(SearchQuery(text="an animal", filters=Filters(tags=("tiger cat",))))
    assert [h.id for h in found] == [chelsea]
    shop = tmp_path / "shop.txt"
    shop.write_text("cat cushion\nespresso cup\nspace rocket\ngarden flower\n")
    save_vocabulary(lib, "shop", read_vocabulary(shop), 0.5, str(shop))
    Tagger(lib, encoder).run()
    best = {name: [t.label for t in image_tags(lib, ids[str(tmp_path / "photos" / f"{name}.jpg")])
                   if t.vocabulary == "shop"][:1] for name in ("chelsea", "coffee", "rocket", "flower")}
    assert best == {"chelsea": ["cat cushion"], "coffee": ["espresso cup"], "rocket": ["space rocket"],
                    "flower": ["garden flower"]}
    lib.close()


def test_the_api_filters_by_tag_and_shows_an_images_tags(tagged_library, tiny_encoder):
    lib, _ = tagged_library
    Tagger(lib, tiny_encoder).run()
    tags = stored_tags(lib)
    image_id, labels = next(iter(sorted(tags.items())))
    label = sorted(labels)[0]
    with serving(make_app(lib, tiny_encoder)) as url:
        got = httpx.get(url + "/api/v1/search", params={"q": "a photo", "k": 50, "tag": label}, timeout=60).json()
        assert {h["id"] for h in got["hits"]} == {i for i, ts in tags.items() if label in ts}
        body = {"text": "a photo", "k": 50, "filters": {"tags": [label, "no such tag"]}}
        assert httpx.post(url + "/api/v1/search", json=body, timeout=60).json()["hits"] == []
        blank = httpx.get(url + "/api/v1/search", params={"q": "x", "tag": " "}, timeout=60)
        assert blank.status_code == 422
        counted = httpx.get(url + "/api/v1/search", params={"q": "a photo", "k": 2, "facet": "tags"}, timeout=60)
        everywhere: dict[str, int] = {}
        for labels_ in tags.values():  # over the best 200 hits: here all 6 images, though the page shows 2
            for t in labels_:
                everywhere[t] = everywhere.get(t, 0) + 1
        assert counted.json()["facets"] == {"tags": everywhere}
        detail = httpx.get(url + f"/api/v1/images/{image_id}", timeout=60).json()
        assert {t["label"] for t in detail["tags"]} == labels and all(t["vocabulary"] == "shapes"
                                                                      for t in detail["tags"])
        scores = [t["score"] for t in detail["tags"]]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.2 for s in scores)


def test_tags_are_in_the_keyword_index(tagged_library, tiny_encoder):
    lib, _ = tagged_library
    Tagger(lib, tiny_encoder).run()
    tags = stored_tags(lib)
    engine = SearchEngine(lib, tiny_encoder)
    for label in ("circles", "squares", "stripes"):
        found = {h.id for h in engine.search(SearchQuery(text=label, mode="keyword", k=50))}
        assert found == {i for i, ts in tags.items() if label in ts}
    assert any(tags.values())
    remove_vocabulary(lib, "shapes")  # its tags leave the keyword index with it (nothing else says these words)
    for label in ("circles", "squares", "stripes"):
        assert engine.search(SearchQuery(text=label, mode="keyword", k=50)) == []


def test_eval_scores_the_tags_against_labelled_photos(tagged_library, tiny_encoder, tmp_path):
    lib, paths = tagged_library
    Tagger(lib, tiny_encoder).run()
    tags = stored_tags(lib)
    with lib.session() as s:
        ids = dict(s.execute(select(ImageRecord.path, ImageRecord.id)).all())
    tagged_path = next(str(p) for p in paths if tags.get(ids[str(p)]))
    other = next(str(p) for p in paths if str(p) != tagged_path)
    own, others = sorted(tags[ids[tagged_path]]), tags.get(ids[other], set())
    # One photo labelled with its own tags (one in capitals) and one it lacks; another with a tag it lacks.
    lines = [{"path": tagged_path, "tags": [own[0].upper(), *own[1:], "unicorns"]},
             {"path": other, "tags": ["unicorns"]}]
    (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = CliRunner().invoke(app, ["eval", str(tmp_path / "tags.jsonl"), "--library", str(lib.root), "--json"])
    assert out.exit_code == 0, out.output
    given, expected = len(own) + len(others), len(own) + 2
    assert json.loads(out.stdout)["tags"] == {"precision": pytest.approx(len(own) / given),
                                              "recall": pytest.approx(len(own) / expected), "predicted": given,
                                              "expected": expected, "correct": len(own)}
