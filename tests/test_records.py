"""The record rules the indexer, the Parquet merge and search share, on a real SQLite library: what a changed file
loses, when a vector counts as changed, which paths lie in a folder, and IN (...) lists SQLite accepts."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.embeddings import encode_vector
from vlsearch.library.parquet_io import import_parquet
from vlsearch.library.records import drop_replaced_content, set_vector, under_any
from vlsearch.library.schema import Caption, OcrText
from vlsearch.library.sql import IN_CHUNK, in_chunks

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def add_described_image(lib: Library, path: str, models: tuple[str, ...] = ("clip", "other")) -> int:
    """A row with a vector of each model, a caption and OCR text; its id."""
    for model in models:
        lib.ensure_model(model, DIM)
    with lib.session() as s:
        row = ImageRecord(path=path, sha256="a" * 64, size=1, mtime=1.0, status="ok",
                          embeddings=[Embedding(model=m, vector=encode_vector(unit(i))) for i, m in enumerate(models)])
        s.add(row)
        s.flush()
        s.add_all([Caption(image_id=row.id, model="blip", text="a dog"),
                   OcrText(image_id=row.id, engine="ocr", text="STOP")])
        return row.id


def content(lib: Library, image_id: int) -> tuple[set[str], dict[str, str], str | None]:
    """A row's vector models, captions (model -> text) and OCR text, as a reader sees them after the commit."""
    with lib.session() as s:
        models = set(s.scalars(select(Embedding.model).where(Embedding.image_id == image_id)))
        captions = {c.model: c.text for c in s.scalars(select(Caption).where(Caption.image_id == image_id))}
        ocr = s.get(OcrText, image_id)
        return models, captions, ocr.text if ocr else None


def test_a_changed_file_loses_its_text_and_other_models_vectors(library):
    changed = add_described_image(library, "/photos/a.jpg")
    untouched = add_described_image(library, "/photos/b.jpg")
    with library.session() as s:
        dropped = drop_replaced_content(s, s.get(ImageRecord, changed), keep_model="clip")
    assert dropped == ["other"]  # the caller bumps its generation and removes it from FAISS
    assert content(library, changed) == ({"clip"}, {}, None)
    assert content(library, untouched) == ({"clip", "other"}, {"blip": "a dog"}, "STOP")


def test_without_a_model_to_keep_every_vector_goes(library):
    image_id = add_described_image(library, "/photos/a.jpg")
    with library.session() as s:
        assert sorted(drop_replaced_content(s, s.get(ImageRecord, image_id), keep_model=None)) == ["clip", "other"]
    assert content(library, image_id) == (set(), {}, None)


@pytest.mark.filterwarnings("error")  # SQLAlchemy warns when a new row takes the identity of a stale copy
def test_text_added_again_in_the_same_transaction_is_kept(library):
    image_id = add_described_image(library, "/photos/a.jpg")
    with library.session() as s:
        row = s.get(ImageRecord, image_id)
        cached = [*s.scalars(select(Caption)), s.get(OcrText, image_id)]  # held, as the merge caches them
        drop_replaced_content(s, row, keep_model="clip")
        s.add_all([Caption(image_id=image_id, model="blip", text="a cat"),
                   OcrText(image_id=image_id, engine="ocr", text="GO")])
        s.flush()
        drop_replaced_content(s, row, keep_model="clip")  # replaced again: text written earlier in the transaction
        s.add(Caption(image_id=image_id, model="blip", text="a bird"))
    assert content(library, image_id) == ({"clip"}, {"blip": "a bird"}, None)
    assert len(cached) == 2


def test_a_path_replaced_twice_in_one_import_batch_keeps_the_last_caption(library, tmp_path):
    image_id = add_described_image(library, "/photos/a.jpg")
    table = pa.table({"path": ["/photos/a.jpg", "/photos/a.jpg", "/photos/new.jpg", "/photos/new.jpg"],
                      "sha256": ["b" * 64, "c" * 64, "d" * 64, "e" * 64],
                      "caption": ["a cat", "a bird", "a fox", "an owl"]})
    pq.write_table(table, tmp_path / "twice.parquet")
    result = import_parquet(library, [tmp_path / "twice.parquet"])
    assert (result.added, result.updated, result.skipped) == (1, 3, 0)  # a path seen again: updated
    assert content(library, image_id) == (set(), {"imported": "a bird"}, None)
    with library.session() as s:
        new = s.scalar(select(ImageRecord).where(ImageRecord.path == "/photos/new.jpg"))
        assert new.sha256 == "e" * 64
    assert content(library, new.id)[1] == {"imported": "an owl"}


def test_set_vector_says_whether_the_stored_vector_changed(library):
    library.ensure_model("clip", DIM)
    vector = unit(1)
    with library.session() as s:
        row = ImageRecord(path="/photos/a.jpg", size=1, mtime=1.0, status="ok")
        s.add(row)
        s.flush()
        assert set_vector(row, "clip", vector) is True  # none before
        assert set_vector(row, "clip", vector) is False  # the same vector: the FAISS index stays as it is
        assert set_vector(row, "clip", vector + 2e-4) is False  # within float16 rounding of what is stored
        assert set_vector(row, "clip", unit(2)) is True
        image_id = row.id
    with library.session() as s:
        stored = s.scalars(select(Embedding).where(Embedding.image_id == image_id)).all()
    assert len(stored) == 1
    np.testing.assert_allclose(np.frombuffer(stored[0].vector, np.float16), unit(2), atol=1e-3)


def test_under_any_matches_folders_by_prefix_never_by_pattern(library):
    paths = ["/photos", "/photos/a.jpg", "/photos/sub/b.jpg", "/photos2/c.jpg", "/photosx.jpg",
             "/100%_done/x.jpg", "/100%_done2/y.jpg", "/100ab_done/z.jpg", "/100a_done/w.jpg"]
    with library.session() as s:
        s.add_all(ImageRecord(path=p, size=1, mtime=1.0, status="ok") for p in paths)

    def under(*folders: Path | str) -> set[str]:
        with library.session() as s:
            return set(s.scalars(select(ImageRecord.path).where(under_any(ImageRecord.path, folders))))

    assert under("/photos") == {"/photos", "/photos/a.jpg", "/photos/sub/b.jpg"}  # not /photos2 nor /photosx.jpg
    assert under(Path("/photos/sub")) == {"/photos/sub/b.jpg"}
    assert under("/100%_done") == {"/100%_done/x.jpg"}  # % and _ are characters, not wildcards
    assert under("/photos2", "/100a_done") == {"/photos2/c.jpg", "/100a_done/w.jpg"}
    assert under("/") == set(paths)
    assert under() == set()


def test_indexing_hundreds_of_files_named_one_by_one_plans_and_captions_them(library, tmp_path):
    """`vlsearch index photos/*.jpg` names each file: the planner, pruning and the caption stage query those roots
    in chunks (one query over 600 of them went past SQLite's expression depth of 1,000)."""
    from vlsearch.captioner import load_image_text_model
    from vlsearch.indexer.describe import Describer
    from vlsearch.indexer.plan import Planner
    from vlsearch.indexer.report import IndexReport

    folder = tmp_path / "photos"
    folder.mkdir()
    names = [folder / f"{i:04d}.jpg" for i in range(600)]
    for name in names:
        name.write_bytes(b"not decoded here")
    with library.session() as s:
        s.add_all(ImageRecord(path=str(n), size=1, mtime=1.0, status="ok") for n in names[:300])
    plan = Planner(library, "m").plan(names, IndexReport())
    assert len(plan.work) == 600 and {w.image_id is not None for w in plan.work[:300]} == {True}
    described = Describer(library, load_image_text_model("tiny-random", "caption", device="cpu"), None,
                          workers=0).run(names)
    assert described.errors == 300 and len(described.failures) == 300  # each row found, and its bytes don't decode
    with pytest.raises(ValueError, match="in chunks"):
        under_any(ImageRecord.path, names)


def test_in_chunks_slices_lists_for_sql_in():
    assert list(in_chunks([], size=3)) == []
    assert list(in_chunks([1], size=3)) == [[1]]
    assert list(in_chunks([1, 2, 3], size=3)) == [[1, 2, 3]]
    assert list(in_chunks([1, 2, 3, 4], size=3)) == [[1, 2, 3], [4]]
    assert [len(c) for c in in_chunks(list(range(IN_CHUNK + 1)))] == [IN_CHUNK, 1]
    assert IN_CHUNK < 32_766  # SQLite's default limit of bound parameters a statement


def test_a_full_default_chunk_runs_as_one_query(library):
    with library.session() as s:
        s.add(ImageRecord(path="/photos/a.jpg", size=1, mtime=1.0, status="ok"))
    ids = list(range(IN_CHUNK + 5))
    with library.session() as s:
        found = [i for chunk in in_chunks(ids)
                 for i in s.scalars(select(ImageRecord.id).where(ImageRecord.id.in_(chunk)))]
    assert found == [1]
