"""Property-based fuzzing of the three places untrusted input enters: image bytes (the decoder uploads use),
query text and filters (the search engine in every mode), and query parameters (GET /api/v1/search over HTTP).

Each property is bounded: a fixed, repeatable sample by default (the whole file runs in well under a minute on a
2-core machine); VLSEARCH_FUZZ_EXAMPLES=N explores N fresh random examples per property to look for new failures."""

from __future__ import annotations

import io
import math
import os
from datetime import datetime
from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import func, select

from tests.api_helpers import make_app, serving
from tests.photos import picture, write_photo
from vlsearch.captioner import load_image_text_model
from vlsearch.images import DecodeError, decode_bytes
from vlsearch.indexer import Indexer
from vlsearch.library import ImageRecord, Library
from vlsearch.search import Filters, SearchEngine, SearchQuery

EXAMPLES = int(os.environ.get("VLSEARCH_FUZZ_EXAMPLES", "0"))
# The fixed sample's size, which RELIABILITY.md cites: the sum of the properties' bounded() defaults. Each property
# runs exactly its default in passing examples (--hypothesis-show-statistics), besides those it rejects as invalid.
CI_EXAMPLES = 810
_fixed_sample: list[int] = []  # each property's default, in the order they are defined


def bounded(default: int):
    """Hypothesis settings for one property: `default` derandomized examples, or VLSEARCH_FUZZ_EXAMPLES random
    ones."""
    _fixed_sample.append(default)
    return settings(max_examples=EXAMPLES or default, derandomize=not EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# -- (a) image decoding ---------------------------------------------------------------------------------------

SMALL_PIXELS = 60 * 45 * 2  # the seed images fit; a header mutated to claim more must be refused or shrink


def _encoded(fmt: str, seed: int) -> bytes:
    image = picture(seed, (60, 45))
    buf = io.BytesIO()
    if fmt == "GIF":
        frames = [image.convert("P"), picture(seed + 1, (60, 45)).convert("P")]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    elif fmt == "PNG":
        image.convert("RGBA").save(buf, format="PNG")
    elif fmt == "JPEG":
        image.save(buf, format="JPEG", quality=80, exif=Image.Exif().tobytes())
    else:
        image.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _encoded(fmt, i) for i, fmt in enumerate(("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"))}


def _decodes_or_refuses(data: bytes, max_pixels: int, draft: int | None = None) -> None:
    """The decoder's contract: an RGB image within the pixel limit, or a DecodeError that says why."""
    try:
        image, meta = decode_bytes(data, max_pixels, draft)
    except DecodeError as exc:
        assert str(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("decoded")
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    assert image.width * image.height <= max_pixels and meta.width * meta.height <= max_pixels


@bounded(150)
@given(data=st.binary(max_size=2048), max_pixels=st.sampled_from([SMALL_PIXELS, 1_000_000]))
def test_arbitrary_bytes_decode_or_raise_decode_error(data, max_pixels):
    _decodes_or_refuses(data, max_pixels)


Mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("big"), st.integers(0, 64), st.sampled_from([b"\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00"])),
)


def _mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, where, what in mutations:
        at = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= what
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = what
        elif kind in ("overwrite", "big"):  # "big": near the header, where sizes and counts live
            buf[at : at + len(what)] = what
    return bytes(buf)


@bounded(250)
@given(fmt=st.sampled_from(sorted(SEEDS)), mutations=st.lists(Mutation, min_size=1, max_size=4),
       max_pixels=st.sampled_from([SMALL_PIXELS, 60 * 45, 1_000_000]), draft=st.sampled_from([None, None, 8, 20]))
def test_mutated_valid_images_decode_or_raise_decode_error(fmt, mutations, max_pixels, draft):
    """Uploads decode in full (no draft); the indexer asks JPEGs for a reduced-size draft: both paths are fuzzed."""
    _decodes_or_refuses(_mutate(SEEDS[fmt], mutations), max_pixels, draft)


def test_unmutated_seeds_decode():
    """The fuzzer starts from images that really decode (else the mutations would only test the error path)."""
    for fmt, data in SEEDS.items():
        image, meta = decode_bytes(data, SMALL_PIXELS)
        assert image.size == (60, 45) and meta.format == fmt


# -- (b) query text and filters through the engine ------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_encoder):
    """Eight photos whose names hold words keyword search finds, two with camera (with % and _) and date."""
    root = tmp_path_factory.mktemp("fuzz-engine")
    photos = root / "photos"
    for i, name in enumerate(["red bicycle", "caption x", "NEAR the sea", "not a cat", "a_b%c", "émoji 😀"]):
        write_photo(photos / f"{name}.jpg", i)
    write_photo(photos / "cams" / "pixel.jpg", 10, taken=datetime(2024, 5, 3), make="Go%gle", model="Pixel_8")
    write_photo(photos / "cams" / "canon.jpg", 11, taken=datetime(2001, 1, 1), make="Canon", model="EOS")
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([photos])
    yield SearchEngine(lib, tiny_encoder), photos
    lib.close()


FTS_TOKENS = ['"', "'", "NEAR", "NEAR/3", "NEAR(", "*", "^", "caption:", "name:", "ocr:", "{name caption}:", "AND",
              "OR", "NOT", "(", ")", "-", "+", ":", ";", "--", "\x00", "%", "_", "\\", "red", "cat", "sea", "x",
              "bicycle", "😀", "\u202e", "e\u0301", "\ud800", "\udfff", "'; DROP TABLE images; --", "a" * 300]
fts_text = st.lists(st.one_of(st.sampled_from(FTS_TOKENS), st.text(max_size=6)), max_size=12).map(
    lambda parts: " ".join(parts) if len(parts) % 2 else "".join(parts))
query_text = st.one_of(st.text(max_size=80), fts_text, st.just("red " * 3000),
                       st.text(min_size=1).map(lambda s: s * 500))
finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
filters = st.fixed_dictionaries(dict(  # keyword arguments: Filters itself may refuse them, as a user error
    path_prefix=st.none() | st.sampled_from(["../", "/../../etc", "%2e%2e%2f", "/", "//", "~", "~nobody-here/x",
                                              "/etc/passwd", "\x00", "/a\x00b", "/\ud800", "photos"]) | st.text(),
    after=st.none() | st.datetimes(),
    before=st.none() | st.datetimes(),
    camera=st.none() | st.sampled_from(["%", "_", "Go%gle", "Pixel_8", "o", "\x00", "\ud800"]) | st.text(max_size=10),
    min_score=st.none() | finite_or_not,
))


def _engine_answers_or_refuses(engine: SearchEngine, make_query) -> None:
    """A list of hits, or the engine's user-facing errors (ValueError for a query it cannot answer, LookupError
    for an unknown image) with our message: never sqlite3, encoding or other errors from below."""
    try:
        query = make_query()
        hits = engine.search(query)
    except (ValueError, LookupError) as exc:
        assert not isinstance(exc, UnicodeError), f"an encoding error leaked: {exc!r}"
        assert type(exc) in (ValueError, LookupError), f"{type(exc).__name__} leaked: {exc}"
        assert str(exc)
        event(f"refused: {str(exc)[:40]}")
        return
    event("answered with hits" if hits else "answered, no hits")
    assert len(hits) <= query.k and all(math.isfinite(h.score) for h in hits)
    assert len({h.id for h in hits}) == len(hits)


@bounded(120)
@given(text=query_text, mode=st.sampled_from(["keyword", "hybrid", "vector"]), k=st.integers(-2, 2**64),
       f=filters | st.just({}))
def test_any_text_and_filters_give_hits_or_a_user_error(engine, text, mode, k, f):
    eng, _ = engine
    _engine_answers_or_refuses(eng, lambda: SearchQuery(text=text, mode=mode, k=k, filters=Filters(**f)))


@bounded(60)
@given(text=st.none() | query_text, image_id=st.none() | st.integers(1, 9) | st.integers(-2**64, 2**64),
       negatives=st.lists(st.sampled_from(FTS_TOKENS) | st.text(max_size=10), max_size=3),
       weights=st.tuples(*[st.floats(-10, 10) | finite_or_not] * 3), mode=st.sampled_from(["hybrid", "vector"]),
       sort=st.sampled_from(["score", "date"]) | st.text(max_size=3), f=filters | st.just({}))
def test_combined_queries_give_hits_or_a_user_error(engine, text, image_id, negatives, weights, mode, sort, f):
    eng, _ = engine
    _engine_answers_or_refuses(eng, lambda: SearchQuery(
        text=text, image_id=image_id, negatives=tuple(negatives), text_weight=weights[0], image_weight=weights[1],
        negative_weight=weights[2], mode=mode, sort=sort, k=5, filters=Filters(**f)))


def test_the_library_is_intact_after_fuzzing(engine):
    eng, photos = engine
    with eng.library.session() as s:
        assert s.scalar(select(func.count()).select_from(ImageRecord)) == 8
    hits = eng.search(SearchQuery(text="bicycle", mode="keyword"))
    assert [Path(h.path).name for h in hits] == ["red bicycle.jpg"]


# -- (c) query parameters over HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(engine, tiny_encoder):
    """The engine's library over HTTP, with a matching model so that reranks run too."""
    eng, _ = engine
    matcher = load_image_text_model("tiny-random", "match", device="cpu")
    with serving(make_app(eng.library, tiny_encoder, matcher=matcher)) as url:
        yield url


def _raw(value: bytes) -> str:
    return quote_from_bytes(value, safe="")


param_value = st.one_of(
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20),  # invalid UTF-8 and overlong sequences, percent-encoded as they are
    st.sampled_from([b"10", b"-1", b"0", b"1e3", b"1000", b"1001", b"10000", b"9223372036854775808", b"nan", b"inf",
                     b"-inf", b"2024-05-01", b"2024-13-45", b"0001-01-01", b"9999-12-31T23:59:59+14:00",
                     b"/", b"../../etc", b"%2e%2e%2f", b"/etc/passwd", b"keyword", b"hybrid", b"vector", b"date",
                     b"", b"\x00", b"\xed\xa0\x80", b'"unbalanced', b"a NEAR/3 b", b"caption:x", b"*", b"NOT"]),
)
param_name = st.sampled_from(["q", "k", "offset", "mode", "sort", "not", "path", "after", "before", "camera",
                              "min_score", "rerank", "surprise"])


plausible_param = st.one_of(  # values of the right kind, so that many requests get as far as the search itself
    st.tuples(st.just("k"), st.integers(1, 1000).map(lambda n: str(n).encode())),
    st.tuples(st.just("offset"), st.integers(0, 9000).map(lambda n: str(n).encode())),
    st.tuples(st.just("mode"), st.sampled_from([b"vector", b"keyword", b"hybrid"])),
    st.tuples(st.just("sort"), st.sampled_from([b"score", b"date"])),
    st.tuples(st.sampled_from(["camera", "not"]), st.text(min_size=1, max_size=12).map(str.encode)),
    st.tuples(st.just("path"), st.text(max_size=20).map(lambda t: ("/" + t).encode())),
    st.tuples(st.just("min_score"), st.floats(-1, 1).map(lambda f: repr(f).encode())),
    st.tuples(st.sampled_from(["after", "before"]), st.dates().map(lambda d: d.isoformat().encode())),
)


@bounded(120)
@given(params=st.lists(st.tuples(param_name, param_value) | plausible_param, max_size=6),
       q=param_value | fts_text.filter(str.strip).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_search_query_parameters_never_cause_a_server_error(server, params, q):
    query = "&".join(f"{name}={_raw(value)}" for name, value in [("q", q), *params])
    r = httpx.get(f"{server}/api/v1/search?{query}", timeout=60)
    assert r.status_code < 500, (query, r.text)
    event(f"HTTP {r.status_code}")
    body = r.json()
    if r.status_code >= 400:
        assert set(body) == {"error", "detail"} and body["detail"], (query, body)
    else:
        assert len(body["hits"]) <= body["k"]


@bounded(30)
@given(segment=st.binary(max_size=24) | st.sampled_from([b"..", b"../../etc/passwd", b"%2e%2e", b"1/../2", b"0",
                                                          b"-1", b"9223372036854775808", b"1.0", b"\x00", b" 1"]),
       tail=st.sampled_from(["", "/thumbnail", "/file", "/similar"]))
def test_image_path_parameters_never_cause_a_server_error(server, segment, tail):
    r = httpx.get(f"{server}/api/v1/images/{_raw(segment)}{tail}", timeout=60)
    assert r.status_code < 500, (segment, r.text)
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "detail"}
    assert b"root:" not in r.content



json_text = st.one_of(st.text(max_size=40), st.sampled_from(FTS_TOKENS))
search_body = st.fixed_dictionaries({}, optional={
    "text": st.none() | json_text, "image_id": st.none() | st.integers(-2, 2**64) | st.booleans() | json_text,
    "negatives": st.lists(json_text, max_size=3), "text_weight": finite_or_not, "image_weight": st.floats(-20, 20),
    "k": st.integers(-1, 2**64), "offset": st.integers(-1, 2**64), "mode": st.sampled_from(["vector", "keyword",
    "hybrid", "x"]), "sort": st.sampled_from(["score", "date", ""]), "rerank": st.integers(-1, 300),
    "filters": st.fixed_dictionaries({}, optional={"path": json_text, "camera": json_text, "min_score": finite_or_not,
                                                   "after": st.datetimes().map(str) | json_text,
                                                   "before": st.datetimes().map(str) | json_text}),
})


plausible_body = st.fixed_dictionaries({"text": fts_text.filter(str.strip)}, optional={
    "image_id": st.integers(1, 9), "negatives": st.lists(st.text(min_size=1, max_size=10), max_size=2),
    "text_weight": st.floats(-10, 10), "image_weight": st.floats(-10, 10), "k": st.integers(1, 1000),
    "offset": st.integers(0, 200), "mode": st.sampled_from(["vector", "hybrid"]), "sort": st.sampled_from(["score",
    "date"]), "filters": st.fixed_dictionaries({}, optional={"camera": json_text, "min_score": st.floats(-1, 1)}),
})


@bounded(80)
@given(body=search_body | plausible_body)
def test_search_bodies_never_cause_a_server_error(server, body):
    """POST /search with any JSON body of the right shape: lone surrogates, NaN, huge numbers and all (the JSON is
    written by hand, so nothing the client library would refuse is lost)."""
    import json

    content = json.dumps(body, allow_nan=True, ensure_ascii=True).encode()
    r = httpx.post(f"{server}/api/v1/search", content=content, headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code < 500, (content, r.text)
    event(f"HTTP {r.status_code}")
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "detail"}, (content, r.text)


def test_the_fixed_sample_is_the_size_the_docs_give():
    assert sum(_fixed_sample) == CI_EXAMPLES, _fixed_sample
