"""The caption/OCR stage and what it feeds: stored captions and OCR text, the FTS5 keyword index kept in step
by triggers, keyword and hybrid search, rerank, and questions over the collection."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from tests.photos import picture, write_photo, write_photos
from tests.served import serving
from vlsearch.api.wording import explain
from vlsearch.captioner import ModelSuite, load_image_text_model
from vlsearch.captioner.ocr import OcrFailed, ocr_reader
from vlsearch.indexer import Indexer
from vlsearch.indexer.describe import Describer
from vlsearch.library import ImageRecord, Library
from vlsearch.library.schema import Caption, OcrText
from vlsearch.search import Filters, SearchEngine, SearchQuery
from vlsearch.search.ask import ask_collection, check_question, retrieval_query


@pytest.fixture(scope="module")
def tiny_text():
    return {task: load_image_text_model("tiny-random", task, device="cpu") for task in ("caption", "answer", "match")}


def captions(lib: Library) -> dict[str, str]:
    with lib.session() as s:
        rows = s.execute(select(ImageRecord.path, Caption.text).join(Caption, Caption.image_id == ImageRecord.id))
        return {path: caption for path, caption in rows}


def fts_rows(lib: Library) -> dict[int, tuple[str, str, str]]:
    with lib.session() as s:
        return {r[0]: r[1:] for r in s.execute(text("SELECT rowid, name, caption, ocr FROM image_text"))}


def test_captions_are_stored_per_image_and_a_rerun_captions_nothing(library, tiny_encoder, tiny_text, tmp_path):
    write_photos(tmp_path / "photos", 5)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    first = Describer(library, tiny_text["caption"], None, workers=0, batch_size=2).run()
    assert first.captioned == 5 and first.errors == 0
    stored = captions(library)
    assert len(stored) == 5 and all(stored.values())
    with library.session() as s:
        assert set(s.scalars(select(Caption.model))) == {"tiny-random"}
    again = Describer(library, tiny_text["caption"], None, workers=0).run()
    assert again.captioned == 0 and again.read == 0 and captions(library) == stored


def test_changed_file_loses_its_stale_text_and_is_described_again(library, tiny_encoder, tiny_text, tmp_path):
    paths = write_photos(tmp_path / "photos", 3)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    Describer(library, tiny_text["caption"], None, workers=0).run()
    with library.session() as s:
        changed_id = s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(paths[1])))
        s.add(OcrText(image_id=changed_id, engine="rapidocr", text="OLD SIGN"))
    write_photo(paths[1], seed=99)  # new content at the same path
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with library.session() as s:
        assert s.get(Caption, (changed_id, "tiny-random")) is None and s.get(OcrText, changed_id) is None
    assert "OLD SIGN" not in fts_rows(library)[changed_id][2]
    assert Describer(library, tiny_text["caption"], None, workers=0).run().captioned == 1


class ScriptedOcr:
    """Stands in for the OCR engine where a test needs it to fail on one image: the real one is padded against
    the inputs known to break it, so its failures cannot be produced on demand."""

    engine = "scripted"

    def __init__(self, fail_on_size: tuple[int, int] | None = None) -> None:
        self.fail_on_size = fail_on_size
        self.calls = 0

    def read(self, image):
        self.calls += 1
        if image.size == self.fail_on_size:
            raise OcrFailed("OCR failed on this image: ResizeImgError")
        return f"TEXT {image.width}"


def test_copies_reuse_the_text_of_their_twin(library, tiny_encoder, tiny_text, tmp_path):
    paths = write_photos(tmp_path / "photos", 2)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    Describer(library, tiny_text["caption"], ScriptedOcr(), workers=0).run()
    shutil.copy(paths[0], tmp_path / "photos" / "copy.jpg")
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    ocr = ScriptedOcr()
    report = Describer(library, tiny_text["caption"], ocr, workers=0).run()
    assert report.reused == 1 and report.captioned == 0 and ocr.calls == 0  # one image, its caption and its text
    assert captions(library)[str(tmp_path / "photos" / "copy.jpg")] == captions(library)[str(paths[0])]


def test_an_ocr_failure_on_one_image_is_reported_and_retried_next_run(library, tiny_encoder, tmp_path):
    write_photos(tmp_path / "photos", 3)
    write_photo(tmp_path / "photos" / "odd.png", seed=7, size=(90, 30))
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    report = Describer(library, None, ScriptedOcr(fail_on_size=(90, 30)), workers=0).run()
    assert (report.read, report.errors) == (3, 1)
    assert report.failures[0][0].endswith("odd.png") and "ResizeImgError" in report.failures[0][1]
    ocr = ScriptedOcr()
    assert Describer(library, None, ocr, workers=0).run().read == 1 and ocr.calls == 1


def test_file_changed_after_indexing_is_skipped_not_misdescribed(library, tiny_encoder, tiny_text, tmp_path):
    paths = write_photos(tmp_path / "photos", 2)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    write_photo(paths[0], seed=42)  # the row still describes the old bytes
    paths[1].unlink()
    report = Describer(library, tiny_text["caption"], None, workers=0).run()
    assert report.skipped == 1 and report.errors == 1 and report.captioned == 0
    assert "cannot read file" in report.failures[0][1]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    from vlsearch.images.samples import sample_photos

    folder = tmp_path_factory.mktemp("samples")
    photos = sample_photos()
    for name in ("page", "chelsea", "coffee", "rocket", "astronaut"):
        photos[name].save(folder / f"{name}.png")
    write_photos(folder / "more", 6)
    return folder


def test_ocr_text_is_stored_and_an_exact_phrase_finds_it(tmp_path, tiny_encoder, sample_dir):
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([sample_dir])
    report = Describer(lib, None, ocr_reader(), workers=0).run()
    assert report.read == 11 and report.captioned == 0
    with lib.session() as s:
        page_text = s.scalar(select(OcrText.text).join(ImageRecord).where(ImageRecord.path.like("%page.png")))
        texts = list(s.scalars(select(OcrText.text)))
    assert "markers of the coins" in page_text
    assert len(texts) == 11  # read once each, text found or not: a rerun reads nothing
    assert Describer(lib, None, ocr_reader(), workers=0).run().read == 0
    engine = SearchEngine(lib, tiny_encoder)
    keyword = engine.search(SearchQuery(text='"markers of the coins"', mode="keyword", k=5))
    assert [h.path for h in keyword] == [str(sample_dir / "page.png")]
    assert "markers of the coins" in keyword[0].ocr_text
    assert engine.search(SearchQuery(text='"coins markers"', mode="keyword")) == []  # a phrase is exact
    hybrid = engine.search(SearchQuery(text='"markers of the coins"', mode="hybrid", k=3))
    assert hybrid[0].path == str(sample_dir / "page.png")


def test_fts_follows_captions_renames_and_deletions(library, tiny_encoder, tmp_path):
    paths = write_photos(tmp_path / "photos", 4)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with library.session() as s:
        ids = {p.name: s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(p))) for p in paths}
        s.add(Caption(image_id=ids["photo_0002.jpg"], model="m", text="Two dogs running on a sandy beach"))
    engine = SearchEngine(library, tiny_encoder)

    def keyword(q, **kw):
        return [h.id for h in engine.search(SearchQuery(text=q, mode="keyword", **kw))]

    assert keyword("dog") == [ids["photo_0002.jpg"]]  # stemmed: "dogs" is found by "dog"
    assert keyword("photo_0003") == [ids["photo_0003.jpg"]]  # file names are searchable
    assert keyword("beach dogs zebra")[0] == ids["photo_0002.jpg"]  # not every word has to match
    (tmp_path / "photos" / "photo_0002.jpg").rename(tmp_path / "photos" / "holiday.jpg")
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    assert keyword("holiday") == keyword("dogs") == [ids["photo_0002.jpg"]]  # moved: row, caption and name follow
    (tmp_path / "photos" / "holiday.jpg").unlink()
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    assert keyword("dogs") == [] and ids["photo_0002.jpg"] not in fts_rows(library)
    with library.session() as s:
        assert s.scalar(text("SELECT count(*) FROM captions")) == 0


def test_keyword_ranks_all_words_first_and_never_matches_on_stopwords_alone(library, tiny_encoder, tmp_path):
    paths = write_photos(tmp_path / "photos", 5)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    texts = {0: "a red car on a road", 1: "car car car car car parked", 2: "a bowl of soup",
             3: "the cat sat on the mat"}
    with library.session() as s:
        ids = {p.name: s.scalar(select(ImageRecord.id).where(ImageRecord.path == str(p))) for p in paths}
        order = [ids[p.name] for p in paths]
        s.add_all(Caption(image_id=order[i], model="m", text=t) for i, t in texts.items())
    engine = SearchEngine(library, tiny_encoder)

    def keyword(q, **kw):
        return [h.id for h in engine.search(SearchQuery(text=q, mode="keyword", **kw))]

    assert keyword("a red car") == [order[0], order[1]]  # every word first, however often another says "car"
    assert keyword("a dog on the road") == [order[0]]  # "a", "on", "the" alone match nothing
    assert keyword("the cat") == [order[3]]
    assert keyword("on the") == [order[3]]  # stopwords asked for on their own must all match
    # hybrid: --min-score prunes the vector ranking only; what matches the words stays
    hybrid = engine.search(SearchQuery(text="a red car", mode="hybrid", filters=Filters(min_score=1.01)))
    assert [h.id for h in hybrid] == [order[0], order[1]]


def test_query_text_is_never_fts_syntax(library, tiny_encoder, tmp_path):
    write_photos(tmp_path / "photos", 3)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    engine = SearchEngine(library, tiny_encoder)
    for q in ('NOT', '*', '"', 'a OR', 'name:photo', '(', 'NEAR(a b)', '""', "'; DROP TABLE images; --", "^x", "ü"):
        for mode in ("keyword", "hybrid"):
            assert isinstance(engine.search(SearchQuery(text=q, mode=mode)), list)
    assert [h.path for h in engine.search(SearchQuery(text="photo_0001 NOT", mode="keyword"))][0].endswith(
        "photo_0001.jpg")


def test_keyword_search_applies_filters(library, tiny_encoder, tmp_path):
    write_photos(tmp_path / "photos" / "a", 3)
    write_photos(tmp_path / "photos" / "b", 3, start=10)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    engine = SearchEngine(library, tiny_encoder)
    only_b = Filters(path_prefix=str(tmp_path / "photos" / "b"))
    hits = engine.search(SearchQuery(text="photo", mode="keyword", filters=only_b))
    assert len(hits) == 3 and all("/b/" in h.path for h in hits)
    with pytest.raises(ValueError, match="keyword mode matches words only"):
        SearchQuery(image=picture(1), mode="keyword")
    with pytest.raises(ValueError, match="keyword mode matches words only"):
        SearchQuery(text="cat", image_id=3, mode="keyword")
    with pytest.raises(ValueError, match="mode must be one of"):
        SearchQuery(text="x", mode="fuzzy")


def test_hybrid_lifts_an_image_whose_caption_says_what_the_vectors_miss(library, tiny_encoder, tmp_path):
    """Random tiny vectors cannot know what a zebra crossing is; a caption that says so can. Hybrid ranking
    must bring that image to the top, while pure vector ranking leaves it where CLIP put it."""
    write_photos(tmp_path / "photos", 20)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    engine = SearchEngine(library, tiny_encoder)
    query = "a zebra crossing in the rain"
    vector = engine.search(SearchQuery(text=query, k=20))
    target = vector[-1].id  # the image vector search ranks last
    with library.session() as s:
        s.add(Caption(image_id=target, model="m", text="a zebra crossing on a rainy street"))
    assert engine.search(SearchQuery(text=query, k=5))[0].id != target
    hybrid = engine.search(SearchQuery(text=query, mode="hybrid", k=5))
    assert hybrid[0].id == target and hybrid[0].caption == "a zebra crossing on a rainy street"
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    image_only = engine.search(SearchQuery(image=picture(3), mode="hybrid", k=3))  # no words: vector ranking
    assert image_only == engine.search(SearchQuery(image=picture(3), k=3))


def test_rerank_orders_the_top_candidates_by_the_matching_model(library, tiny_encoder, tiny_text, tmp_path):
    write_photos(tmp_path / "photos", 8)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    plain = SearchEngine(library, tiny_encoder)
    with pytest.raises(ValueError, match="needs an image-text matching model") as refused:
        plain.search(SearchQuery(text="a red square", rerank=4))
    assert explain(refused.value).endswith("pass --itm-model blip-itm-base")
    engine = SearchEngine(library, tiny_encoder, matcher=tiny_text["match"])
    before = engine.search(SearchQuery(text="a red square", k=8))
    after = engine.search(SearchQuery(text="a red square", k=8, rerank=4))
    from PIL import Image

    expected = tiny_text["match"].match([Image.open(h.path) for h in before[:4]], ["a red square"] * 4)
    scored = {h.id: float(sc) for h, sc in zip(before[:4], expected, strict=True)}
    assert [h.id for h in after[:4]] == sorted(scored, key=lambda i: -scored[i])
    assert all(h.match_score == pytest.approx(scored[h.id], abs=1e-5) for h in after[:4])
    assert [h.id for h in after[4:]] == [h.id for h in before[4:]] and all(h.match_score is None for h in after[4:])
    Path(before[0].path).unlink()
    Path(before[2].path).unlink()  # gone since indexing: kept, in their order, below the rescored ones
    gone = engine.search(SearchQuery(text="a red square", k=8, rerank=4))
    assert [h.id for h in gone[2:4]] == [before[0].id, before[2].id] and gone[2].match_score is None
    assert [h.id for h in gone[4:]] == [h.id for h in before[4:]]


def test_a_deep_rerank_scores_small_images_in_chunks(library, tiny_encoder, tiny_text, tmp_path):
    """Rerank decodes candidates one by one, shrinks each at once and scores them in chunks: memory stays bounded
    however deep the rerank and however large the photos (200 camera photos at once would be gigabytes)."""
    from vlsearch.search.engine import RERANK_CHUNK, RERANK_SIDE

    for i in range(RERANK_CHUNK + 4):
        write_photo(tmp_path / "big" / f"p{i:02d}.jpg", i, size=(1800, 1200))
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "big"])
    calls: list[list[tuple[int, int]]] = []

    class Recording:
        def match(self, images, texts):
            calls.append([im.size for im in images])
            return tiny_text["match"].match(images, texts)

    engine = SearchEngine(library, tiny_encoder, matcher=Recording())
    hits = engine.search(SearchQuery(text="shapes", k=RERANK_CHUNK + 4, rerank=RERANK_CHUNK + 4))
    assert [len(c) for c in calls] == [RERANK_CHUNK, 4]
    assert {size for c in calls for size in c} == {(RERANK_SIDE, RERANK_SIDE * 2 // 3)}
    assert all(h.match_score is not None for h in hits)
    assert [h.match_score for h in hits] == sorted((h.match_score for h in hits), reverse=True)


def test_questions_become_retrieval_queries():
    assert retrieval_query("which photos show a dog on a beach?") == "a dog on a beach"
    assert retrieval_query("Find me pictures of red cars") == "red cars"
    assert retrieval_query("are there any photos with snow?") == "snow"
    assert retrieval_query("a cat on a sofa") == "a cat on a sofa"
    assert retrieval_query("are there any dogs?") == "dogs"
    assert retrieval_query("is there a photo with a cake?") == "a cake"
    assert retrieval_query("photos of dogs on a beach") == "dogs on a beach"
    assert retrieval_query("show me all the dogs") == "dogs"
    assert retrieval_query("photosynthesis diagrams") == "photosynthesis diagrams"  # "photo" only as a word
    for vague in ("show me all the photos", "which photos?", "find pictures"):
        with pytest.raises(ValueError, match="not what they should show"):
            retrieval_query(vague)
    assert check_question("a dog on a beach") == "does the picture show a dog on a beach?"


def test_ask_over_the_collection_returns_the_yeses_best_first(library, tiny_encoder, tiny_text, tmp_path):
    write_photos(tmp_path / "photos", 10)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    engine = SearchEngine(library, tiny_encoder)
    vqa = ModelSuite(answerer=tiny_text["answer"])
    candidates = engine.search(SearchQuery(text="a dog on a beach", k=6))
    from PIL import Image

    p_yes = tiny_text["answer"].yes_probability([Image.open(h.path) for h in candidates],
                                                ["does the picture show a dog on a beach?"] * 6)
    threshold = float(np.median(p_yes))
    result = ask_collection(engine, vqa, "which photos show a dog on a beach?", candidates=6, threshold=threshold)
    assert result.method == "vqa" and result.retrieval_query == "a dog on a beach" and result.candidates == 6
    expected = {h.id for h, p in zip(candidates, p_yes, strict=True) if p >= threshold}
    assert {f.hit.id for f in result.findings} == expected and expected
    assert [f.score for f in result.findings] == sorted((f.score for f in result.findings), reverse=True)
    assert all(f.answer == "yes" and f.score >= threshold for f in result.findings)
    assert set(result.findings[0].as_dict()) >= {"id", "path", "answer", "answer_score"}
    itm = ask_collection(engine, ModelSuite(matcher=tiny_text["match"]), "which photos show a dog?", threshold=0.0)
    assert itm.method == "itm" and len(itm.findings) == 10 and all(f.answer == "matches" for f in itm.findings)
    unchecked = ask_collection(engine, ModelSuite(), "which photos show a dog?")  # no model: search alone
    assert (unchecked.method, unchecked.verified) == ("retrieval", False) and unchecked.findings
    nowhere = Filters(path_prefix=str(tmp_path / "no-such-folder"))  # no candidates: an empty answer, unchecked
    assert ask_collection(engine, ModelSuite(), "which photos show a dog?", filters=nowhere).findings == []
    assert ask_collection(engine, vqa, "which photos show a dog?", filters=nowhere).findings == []
    with pytest.raises(ValueError, match="no words to search for"):
        ask_collection(engine, vqa, "???")


def test_a_library_at_the_first_schema_gets_its_keyword_index_on_open(tmp_path):
    """Upgrading 0001 -> the newest revision creates the FTS table and fills it with the images already there."""
    from alembic import command
    from sqlalchemy import URL, create_engine

    from vlsearch.library import migrate

    db = tmp_path / "lib" / "library.db"
    db.parent.mkdir()
    engine = create_engine(URL.create("sqlite", database=str(db)))
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO images (path, size, mtime, status, indexed_at) "
                          "VALUES ('/photos/2019/IMG_0042.jpg', 1, 1.0, 'ok', '2020-01-01')"))
    engine.dispose()
    lib = Library.open(tmp_path / "lib")
    assert fts_rows(lib) == {1: ("IMG_0042.jpg", "", "")}
    assert migrate.current_revision(lib.engine) == migrate.head_revision(lib.engine) == "0004"
    lib.close()


def test_a_real_caption_model_is_the_library_default_and_its_captions_are_shown(library, tiny_encoder, tmp_path):
    paths = write_photos(tmp_path / "photos", 3)
    Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    with library.session() as s:
        for image_id in (1, 2, 3):
            s.add(Caption(image_id=image_id, model="offline", text=f"offline words {image_id}"))
        s.add(Caption(image_id=2, model="blip-base", text="a red square on a blue ground"))
    assert library.caption_model() == "blip-base"  # fewer captions, but a real model outranks the fallback
    hits = {h.path: h.caption for h in SearchEngine(library, tiny_encoder).search(SearchQuery(text="x", k=3))}
    assert hits[str(paths[1])] == "a red square on a blue ground" and hits[str(paths[0])] == "offline words 1"


def test_a_run_over_a_list_describes_the_files_and_urls_it_names(library, tiny_encoder, tiny_text, tmp_path):
    """As a catalogue import indexes its pictures: a list of a file and a URL (a real server on localhost) is
    captioned; an image indexed earlier without captions, not on the list, is left as it was."""
    paths = write_photos(tmp_path / "photos", 3)
    Indexer(library, tiny_encoder, workers=0).run([paths[0]])  # no captioner: no caption
    with serving(tmp_path / "photos") as base:
        listed = tmp_path / "list.csv"
        listed.write_text(f"path\n{paths[1]}\n{base}/{paths[2].name}\n")
        report = Indexer(library, tiny_encoder, workers=0, captioner=tiny_text["caption"]).run((), [listed])
    assert report.embedded == 2 and report.described.captioned == 2 and report.described.errors == 0
    assert set(captions(library)) == {str(paths[1]), f"{base}/{paths[2].name}"}
