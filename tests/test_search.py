from datetime import datetime

import numpy as np
import pytest

from tests.photos import picture, write_photo, write_photos
from vlsearch.api.wording import explain
from vlsearch.indexer import Indexer
from vlsearch.library import Library, ModelMismatchError
from vlsearch.search import Filters, SearchEngine, SearchQuery


@pytest.fixture
def indexed(tmp_path, tiny_encoder):
    """30 photos: 10 under trips/ from a Canon in 2020, 10 under home/ from a Pixel in 2023, 10 undated."""
    for i in range(10):
        write_photo(tmp_path / "photos" / "trips" / f"t{i}.jpg", seed=i, taken=datetime(2020, 1, 1 + i),
                    make="Canon", model="EOS R5")
        write_photo(tmp_path / "photos" / "home" / f"h{i}.jpg", seed=100 + i, taken=datetime(2023, 6, 1 + i),
                    make="Google", model="Pixel 7")
    write_photos(tmp_path / "photos" / "misc", 10, start=200)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, batch_size=16, workers=0).run([tmp_path / "photos"])
    return lib, SearchEngine(lib, tiny_encoder), tmp_path / "photos"


def ranking(hits):
    return [h.id for h in hits]


def test_image_query_finds_the_same_image_first(indexed):
    _, engine, photos = indexed
    hits = engine.search(SearchQuery(image=picture(3), k=5))
    assert hits[0].path == str(photos / "trips" / "t3.jpg")
    assert hits[0].score == pytest.approx(1.0, abs=0.01)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_carry_what_a_result_list_shows(indexed):
    lib, engine, photos = indexed
    hit = engine.search(SearchQuery(image=picture(3), k=1))[0]
    assert (hit.width, hit.height, hit.taken_at, hit.camera) == (96, 72, datetime(2020, 1, 4), "Canon EOS R5")
    assert hit.thumbnail and hit.thumbnail.startswith(str(lib.root))


def test_similar_by_id_leaves_out_the_image_itself(indexed):
    _, engine, photos = indexed
    target = engine.search(SearchQuery(image=picture(3), k=1))[0]
    hits = engine.similar(target.id, k=5)
    assert len(hits) == 5 and target.id not in ranking(hits)
    by_path = engine.similar(photos / "trips" / "t3.jpg", k=5)
    assert ranking(by_path) == ranking(hits)


def test_similar_to_an_unindexed_file_encodes_it(indexed, tmp_path):
    _, engine, photos = indexed
    outside = write_photo(tmp_path / "outside.png", seed=104)
    assert engine.similar(outside, k=1)[0].path == str(photos / "home" / "h4.jpg")


def test_filters_apply_with_the_vector_search(indexed):
    _, engine, photos = indexed
    q = dict(text="a photo", k=30)
    in_trips = engine.search(SearchQuery(**q, filters=Filters(path_prefix=str(photos / "trips"))))
    assert len(in_trips) == 10 and all("/trips/" in h.path for h in in_trips)
    recent = engine.search(SearchQuery(**q, filters=Filters(after=datetime(2023, 1, 1))))
    assert len(recent) == 10 and all(h.taken_at >= datetime(2023, 1, 1) for h in recent)
    early = engine.search(SearchQuery(**q, filters=Filters(before=datetime(2020, 1, 5))))
    assert sorted(h.taken_at.day for h in early) == [1, 2, 3, 4]
    pixel = engine.search(SearchQuery(**q, filters=Filters(camera="pixel")))
    assert len(pixel) == 10 and all(h.camera == "Google Pixel 7" for h in pixel)
    both = engine.search(SearchQuery(**q, filters=Filters(camera="canon", after=datetime(2020, 1, 8))))
    assert len(both) == 3


def test_narrow_filter_is_answered_exactly_over_the_images_it_admits(indexed, tiny_encoder, monkeypatch):
    from vlsearch.library import VectorIndex

    lib, engine, photos = indexed
    lib.rebuild_index(tiny_encoder.name, "hnsw")  # an approximate index must not make a filter miss
    home = {h.id for h in engine.search(SearchQuery(text="x", k=30)) if "/home/" in h.path}
    calls = []
    original = VectorIndex.search
    monkeypatch.setattr(VectorIndex, "search", lambda self, q, k: calls.append(k) or original(self, q, k))
    query = SearchQuery(text="a blue circle", k=4, filters=Filters(path_prefix=str(photos / "home")))
    hits = engine.search(query)
    ids, vectors = lib.load_vectors(tiny_encoder.name)
    assert len(home) == 10
    scores = {int(i): float(v @ engine.query_vector(query)) for i, v in zip(ids, vectors, strict=True) if i in home}
    assert ranking(hits) == sorted(scores, key=lambda i: -scores[i])[:4]
    assert calls == []  # scored directly, no ANN search


def test_broad_filter_fills_k_by_widening_the_candidate_set(indexed, monkeypatch):
    import vlsearch.search.engine
    from vlsearch.library import VectorIndex

    monkeypatch.setattr(vlsearch.search.engine, "EXACT_FILTER_LIMIT", 0)  # as if the filter admitted too many to score
    _, engine, photos = indexed
    unfiltered = ranking(engine.search(SearchQuery(image=picture(3), k=30)))
    by_id = {h.id: h.path for h in engine.search(SearchQuery(image=picture(3), k=30))}
    # The two home/ photos that rank lowest for this query: far outside the first over-fetch of k*4.
    wanted = [i for i in unfiltered if "/home/h" in by_id[i]][-2:]
    wanted_paths = [by_id[i] for i in wanted]
    calls = []
    original = VectorIndex.search
    monkeypatch.setattr(VectorIndex, "search", lambda self, q, k, **kw: calls.append(k) or original(self, q, k, **kw))
    hits = engine.search(SearchQuery(image=picture(3), k=1, filters=Filters(path_prefix=wanted_paths[1])))
    assert ranking(hits) == [wanted[1]]
    assert len(calls) > 1 and calls == sorted(calls), "the candidate set was widened step by step"


def test_path_prefix_does_not_match_sibling_folders(indexed):
    _, engine, photos = indexed
    hits = engine.search(SearchQuery(text="x", k=30, filters=Filters(path_prefix=str(photos / "tri"))))
    assert hits == []


def test_min_score_and_sort_by_date(indexed):
    _, engine, _ = indexed
    top = engine.search(SearchQuery(image=picture(105), k=30))
    cut = top[5].score
    kept = engine.search(SearchQuery(image=picture(105), k=30, filters=Filters(min_score=cut)))
    assert ranking(kept) == ranking(top[:6])
    dated = engine.search(SearchQuery(image=picture(105), k=8, sort="date"))
    assert set(ranking(dated)) == set(ranking(top[:8]))
    dates = [h.taken_at or datetime.min for h in dated]
    assert dates == sorted(dates, reverse=True)


def test_combined_and_negative_queries_follow_the_weighted_sum(indexed, tiny_encoder):
    lib, engine, _ = indexed
    ids, vectors = lib.load_vectors(tiny_encoder.name)
    t = tiny_encoder.encode_texts(["a red square"])[0]
    i = tiny_encoder.encode_images([picture(7)])[0]
    n = tiny_encoder.encode_texts(["a blue circle"])[0]

    def expected(vec, k=10):
        vec = vec / np.linalg.norm(vec)
        return ids[np.argsort(-(vectors @ vec))][:k].tolist()

    text_only = ranking(engine.search(SearchQuery(text="a red square", k=10)))
    combined = ranking(engine.search(SearchQuery(text="a red square", image=picture(7), k=10, image_weight=2.0)))
    negative = ranking(engine.search(SearchQuery(text="a red square", negatives=("a blue circle",), k=10,
                                                 negative_weight=0.8)))
    assert text_only == expected(t)
    assert combined == expected(t + 2.0 * i)
    assert negative == expected(t - 0.8 * n)
    assert combined != text_only and negative != text_only
    # The image most like the negative term drops.
    closest_to_negative = int(ids[np.argmax(vectors @ n)])
    full = ranking(engine.search(SearchQuery(text="a red square", k=30)))
    pushed = ranking(engine.search(SearchQuery(text="a red square", negatives=("a blue circle",), k=30,
                                               negative_weight=0.8)))
    assert pushed.index(closest_to_negative) > full.index(closest_to_negative)


def test_image_weight_decides_what_a_combined_query_favours(indexed):
    _, engine, photos = indexed
    heavy_image = engine.search(SearchQuery(text="anything", image=picture(108), image_weight=10.0, k=1))
    assert heavy_image[0].path == str(photos / "home" / "h8.jpg")


def test_searching_with_another_model_is_a_clear_error(indexed, tmp_path):
    lib, _, _ = indexed
    from vlsearch.encoders.clip import ClipEncoder

    renamed = ClipEncoder("some-other-model/v1", "vlsearch-tiny", None, "cpu")
    with pytest.raises(ModelMismatchError, match=r"vectors from 'tiny-random'") as mismatch:
        SearchEngine(lib, renamed)
    assert "Search with --model tiny-random" in explain(mismatch.value)  # what the CLI says


def test_query_validation():
    with pytest.raises(ValueError, match="needs text, an image"):
        SearchQuery()
    with pytest.raises(ValueError, match="sort"):
        SearchQuery(text="x", sort="size")


def test_empty_library_returns_no_hits(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    lib.ensure_model(tiny_encoder.name, tiny_encoder.dim)
    assert SearchEngine(lib, tiny_encoder).search(SearchQuery(text="cat")) == []
