"""Parquet export and import: what DuckDB, Spark and vector databases read, and rows coming back from them (or from
the shards of distributed indexing): round trips, idempotent re-imports, changed files, bad rows, foreign files."""

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.photos import broken_corpus, picture, write_photo, write_photos
from vlsearch.api.cli import app
from vlsearch.api.wording import explain
from vlsearch.captioner import load_image_text_model
from vlsearch.indexer import Indexer
from vlsearch.indexer.describe import Describer
from vlsearch.indexer.tagging import Tagger
from vlsearch.indexer.vocabulary import Label, save_vocabulary
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.parquet_io import ParquetError, export_parquet, import_parquet, parquet_schema
from vlsearch.library.schema import Caption, OcrText
from vlsearch.library.tags import tags_of
from vlsearch.search import SearchEngine, SearchQuery

MODEL = "tiny-random"
DIM = 32


class SignReader:
    """Stands in for the OCR engine (the real one takes seconds to load): text in wide images, none in others."""

    engine = "signs"

    def read(self, image):
        return f"SIGN {image.width}" if image.width > image.height else ""


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_encoder):
    """A library of 5 photos (one with EXIF, one tall), 6 unreadable files, captions and OCR text, and its export
    in parts of 4 rows, with thumbnails."""
    root = tmp_path_factory.mktemp("source")
    photos = write_photos(root / "photos", 3)
    photos.append(write_photo(root / "photos" / "exif.jpg", seed=7, taken=datetime(2021, 6, 5, 14, 30),
                              make="Canon", model="EOS 5D"))
    photos.append(write_photo(root / "photos" / "tall.png", seed=8, size=(60, 90)))
    broken_corpus(root / "photos" / "bad")
    lib = Library.open(root / "library")
    Indexer(lib, tiny_encoder, workers=0).run([root / "photos"])
    Describer(lib, load_image_text_model("tiny-random", "caption", device="cpu"), SignReader(), workers=0).run()
    save_vocabulary(lib, "shapes", [Label(w, f"a photo of {w}") for w in ("dots", "bars")], 0.3, "test")
    Tagger(lib, tiny_encoder).run()
    report = export_parquet(lib, root / "export", thumbnails=True, rows_per_file=4)
    yield lib, report, photos
    lib.close()


def rows_by_path(lib: Library) -> dict[str, dict]:
    """Everything a library knows of each path, ids left out."""
    out = {}
    with lib.session() as s:
        for row in s.scalars(select(ImageRecord)):
            vectors = {e.model: np.frombuffer(e.vector, dtype=np.float16) for e in row.embeddings}
            captions = {c.model: c.text for c in s.scalars(select(Caption).where(Caption.image_id == row.id))}
            ocr = s.get(OcrText, row.id)
            out[row.path] = {
                "fields": {c: getattr(row, c) for c in ("sha256", "size", "mtime", "width", "height", "display_width",
                                                        "display_height", "orientation", "format", "taken_at",
                                                        "camera_make", "camera_model", "status", "error",
                                                        "thumbnail")},
                "vectors": vectors, "captions": captions, "ocr": (ocr.engine, ocr.text) if ocr else None,
            }
    return out


def test_export_is_a_folder_of_parts_that_dataset_readers_see_as_one_table(source):
    lib, report, _ = source
    assert [p.name for p in report.files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in report.out.iterdir()) == [p.name for p in report.files]  # no temp files left
    table = ds.dataset(report.out, format="parquet").to_table()  # what DuckDB's read_parquet('out/*.parquet') reads
    assert table.num_rows == report.rows == 11 and (report.vectors, report.errors) == (5, 6)
    expected = parquet_schema(DIM, MODEL)
    assert table.schema.names == expected.names and table.schema.metadata == expected.metadata
    embedding = table.schema.field("embedding").type  # Parquet names the list's item "element": same type otherwise
    assert (embedding.list_size, embedding.value_type) == (DIM, pa.float32())
    assert all(table.schema.field(f.name).type == f.type for f in expected if f.name != "embedding")
    assert json.loads(table.schema.metadata[b"vlsearch"]) == {"format_version": 1, "model": MODEL, "dim": DIM}
    rows = {r["path"]: r for r in table.to_pylist()}
    exif = next(r for path, r in rows.items() if path.endswith("exif.jpg"))
    assert (exif["camera_make"], exif["camera_model"], exif["taken_at"]) == ("Canon", "EOS 5D",
                                                                                datetime(2021, 6, 5, 14, 30))
    assert exif["caption_model"] == "tiny-random" and exif["caption"]
    assert exif["ocr_engine"] == "signs" and exif["ocr_text"] == "SIGN 96"
    tall = next(r for path, r in rows.items() if path.endswith("tall.png"))
    assert tall["ocr_text"] == ""  # read, nothing found: not the same as never read
    assert tall["thumbnail"].startswith(b"\xff\xd8") and tall["format"] == "PNG"
    errors = [r for r in rows.values() if r["status"] == "error"]
    assert len(errors) == 6 and all(r["embedding"] is None and r["error"] for r in errors)
    ids = {r["path"]: r["id"] for r in rows.values()}
    assert {p: r["tags"] for p, r in rows.items()} == {p: tags_of(lib, [i]).get(i, []) for p, i in ids.items()}
    assert any(r["tags"] for r in rows.values()) and all(r["tags"] == [] for r in errors)
    vector = np.asarray(exif["embedding"], dtype=np.float32)
    assert vector.shape == (DIM,) and abs(np.linalg.norm(vector) - 1) < 1e-2


def test_round_trip_into_an_empty_library_keeps_everything(source, tmp_path, tiny_encoder):
    lib, report, photos = source
    copy = Library.open(tmp_path / "copy")
    result = import_parquet(copy, [report.out], batch_rows=3)
    assert (result.read, result.added, result.updated, result.unchanged, result.skipped) == (11, 11, 0, 0, 0)
    assert result.thumbnails == 5 and result.models == [MODEL]
    before, after = rows_by_path(lib), rows_by_path(copy)
    assert before.keys() == after.keys()
    for path, row in before.items():
        assert after[path]["fields"] == row["fields"], path
        assert after[path]["captions"] == row["captions"] and after[path]["ocr"] == row["ocr"]
        assert after[path]["vectors"].keys() == row["vectors"].keys()
        for name, vector in row["vectors"].items():
            np.testing.assert_array_equal(after[path]["vectors"][name], vector)  # float16 both ways: exact
        if row["fields"]["thumbnail"]:
            thumb = row["fields"]["thumbnail"]
            assert (copy.root / thumb).read_bytes() == (lib.root / thumb).read_bytes()
    assert copy.vector_index(MODEL).ntotal == 5
    query = SearchQuery(image=picture(7), k=1)
    hit_before = SearchEngine(lib, tiny_encoder).search(query)[0]
    hit_after = SearchEngine(copy, tiny_encoder).search(query)[0]
    assert hit_before.path == hit_after.path == str(photos[3])
    assert SearchEngine(copy, tiny_encoder).search(SearchQuery(text="SIGN", mode="keyword", k=5))  # text searchable


def test_reimport_changes_nothing_and_a_changed_file_replaces_its_row(source, tmp_path):
    lib, report, photos = source
    copy = Library.open(tmp_path / "copy")
    import_parquet(copy, [report.out])
    generation = copy.require_model(MODEL).generation
    again = import_parquet(copy, [report.out])
    assert (again.added, again.updated, again.unchanged, again.skipped) == (0, 0, 11, 0)
    assert copy.require_model(MODEL).generation == generation  # nothing changed, FAISS stays as it is
    assert (import_parquet(lib, [report.out]).unchanged == 11)  # back into the library it came from: the same

    path = str(photos[3])
    with copy.session() as s:
        row = s.scalar(select(ImageRecord).where(ImageRecord.path == path))
        image_id = row.id
        copy.ensure_model("other", 4)
        s.add(Embedding(image_id=image_id, model="other", vector=np.ones(4, np.float16).tobytes()))
    new_vector = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    changed = pa.table({"path": [path], "sha256": ["ab" * 32], "size": [123], "width": [10], "height": [20],
                        "embedding": pa.array([new_vector], pa.list_(pa.float32(), DIM))},
                       schema=None).replace_schema_metadata(parquet_schema(DIM, MODEL).metadata)
    pq.write_table(changed, tmp_path / "changed.parquet")
    result = import_parquet(copy, [tmp_path / "changed.parquet"])
    assert (result.added, result.updated, result.unchanged) == (0, 1, 0)
    after = rows_by_path(copy)[path]
    assert after["fields"]["sha256"] == "ab" * 32 and (after["fields"]["width"], after["fields"]["height"]) == (10, 20)
    assert after["fields"]["camera_make"] is None and after["fields"]["taken_at"] is None  # of the old file: gone
    assert after["captions"] == {} and after["ocr"] is None and set(after["vectors"]) == {MODEL}
    np.testing.assert_allclose(after["vectors"][MODEL], new_vector / np.linalg.norm(new_vector), atol=1e-3)
    with copy.session() as s:
        assert s.scalar(select(ImageRecord.id).where(ImageRecord.path == path)) == image_id  # same row
    hits = copy.vector_index(MODEL).search(new_vector[None, :] / np.linalg.norm(new_vector), 1)
    assert int(hits[1][0][0]) == image_id  # FAISS has the new vector


def foreign_file(path: Path, rows: list[tuple[str | None, list[float] | None]], **columns) -> Path:
    """A file as another tool writes one: path and a list<double> embedding (any length), no vlsearch metadata."""
    table = pa.table({"path": [p for p, _ in rows], "embedding": pa.array([v for _, v in rows],
                                                                          pa.list_(pa.float64())), **columns})
    pq.write_table(table, path)
    return path


def test_bad_rows_are_skipped_with_reasons_and_good_rows_land(library, tmp_path):
    good = [float(x) for x in range(1, DIM + 1)]
    file = foreign_file(tmp_path / "mixed.parquet", [
        ("/photos/good.jpg", good),
        ("/photos/short.jpg", good[:10]),
        ("/photos/nan.jpg", [float("nan")] + good[1:]),
        ("", good),
        (None, good),
        ("/photos/zero.jpg", [0.0] * DIM),
        ("/photos/status.jpg", good),
        ("/photos/sha.jpg", good),
        ("/photos/no-vector.jpg", None),
    ], status=["ok"] * 6 + ["maybe", "ok", None], sha256=[None] * 7 + ["../../etc/passwd", None],
        width=pa.array([640] * 9, pa.int64()),  # types other tools write are converted
        taken_at=pa.array([datetime(2020, 1, 2, 3, 4)] * 9, pa.timestamp("ms", tz="UTC")))
    result = import_parquet(library, [file], model=MODEL)
    assert (result.read, result.added, result.skipped) == (9, 2, 7)
    reasons = dict(result.reasons)
    assert "has 10 values" in reasons["/photos/short.jpg"] and "NaN" in reasons["/photos/nan.jpg"]
    assert "all zeros" in reasons["/photos/zero.jpg"] and "neither 'ok' nor 'error'" in reasons["/photos/status.jpg"]
    assert "64 hexadecimal" in reasons["/photos/sha.jpg"]
    assert [r for w, r in result.reasons if "row 3" in w or "row 4" in w] == ["empty path", "empty path"]
    stored = rows_by_path(library)
    assert set(stored) == {"/photos/good.jpg", "/photos/no-vector.jpg"}
    vector = stored["/photos/good.jpg"]["vectors"][MODEL].astype(np.float32)
    assert abs(np.linalg.norm(vector) - 1) < 1e-2  # normalised on the way in
    assert stored["/photos/no-vector.jpg"]["vectors"] == {} and library.vector_index(MODEL).ntotal == 1
    assert stored["/photos/good.jpg"]["fields"]["width"] == 640
    assert stored["/photos/good.jpg"]["fields"]["taken_at"] == datetime(2020, 1, 2, 3, 4)


def test_a_file_with_only_paths_and_embeddings_imports_with_the_model_named(library, tmp_path, tiny_encoder):
    photos = write_photos(tmp_path / "photos", 3)
    vectors = tiny_encoder.encode_images([picture(i) for i in range(3)])
    rows = [(str(p), v.tolist()) for p, v in zip(photos, vectors, strict=True)]
    file = foreign_file(tmp_path / "vectors.parquet", rows)
    with pytest.raises(ParquetError, match="no vlsearch metadata says which model") as unnamed:
        import_parquet(library, [file])
    assert explain(unnamed.value).endswith("name it (--model NAME)")  # what the CLI says
    result = import_parquet(library, [file], model=MODEL, update_index=False)
    assert result.added == 3 and library.require_model(MODEL).dim == DIM
    assert library.vector_index(MODEL).ntotal == 3  # left stale, rebuilt from SQLite when used
    hit = SearchEngine(library, tiny_encoder).search(SearchQuery(image=picture(1), k=1))[0]
    assert hit.path == str(photos[1])
    # The next index run fills in what the file did not say (size, pixels, hash), keeping the vectors' rows.
    report = Indexer(library, tiny_encoder, workers=0).run([tmp_path / "photos"])
    assert report.embedded == 3 and len(rows_by_path(library)) == 3
    assert all(r["fields"]["sha256"] and r["fields"]["width"] == 96 for r in rows_by_path(library).values())


def test_a_model_or_dimension_mismatch_is_refused_before_anything_is_written(source, library, tmp_path):
    _, report, _ = source
    library.ensure_model(MODEL, 16)
    with pytest.raises(ParquetError, match=r"embeddings have 32 dimensions, but the library .* dimension 16"):
        import_parquet(library, [report.out])
    with pytest.raises(ParquetError, match="holds vectors of 'tiny-random', not 'ViT-B-32"):
        import_parquet(library, [report.out], model="ViT-B-32/laion2b_s34b_b79k")
    wrong = tmp_path / "wrong.parquet"
    table = pa.table({"path": ["/a.jpg"], "embedding": pa.array([[1.0] * 8], pa.list_(pa.float32(), 8))})
    pq.write_table(table.replace_schema_metadata(parquet_schema(DIM, "other").metadata), wrong)
    with pytest.raises(ParquetError, match="metadata says 32 dimensions, its embedding column holds 8"):
        import_parquet(library, [wrong])
    with pytest.raises(ParquetError, match="no such file or folder"):
        import_parquet(library, [tmp_path / "missing"])
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 not really" * 10)
    fresh = Library.open(tmp_path / "fresh")
    with pytest.raises(ParquetError, match="garbage.parquet: not a readable Parquet file"):
        import_parquet(fresh, [report.out, tmp_path / "garbage.parquet"])  # checked before the export is read
    assert rows_by_path(library) == rows_by_path(fresh) == {}


def test_an_interrupted_import_keeps_its_finished_batches_and_the_rerun_finishes(source, tmp_path):
    _, report, _ = source

    class StopAfterOneBatch:
        def start(self, total):
            pass

        def advance(self, n, errors=0):
            raise KeyboardInterrupt

    copy = Library.open(tmp_path / "copy")
    with pytest.raises(KeyboardInterrupt):
        import_parquet(copy, [report.out], batch_rows=3, progress=StopAfterOneBatch())
    assert len(rows_by_path(copy)) == 3
    assert copy.vector_index(MODEL).ntotal == copy.vector_count(MODEL)
    result = import_parquet(copy, [report.out], batch_rows=3)
    assert (result.added, result.unchanged) == (8, 3) and copy.vector_index(MODEL).ntotal == 5


def test_export_refuses_a_folder_with_files_unless_told_to_overwrite(source, tmp_path):
    lib, _, _ = source
    out = tmp_path / "out"
    assert len(export_parquet(lib, out, rows_per_file=2).files) == 6
    with pytest.raises(ParquetError, match="is not empty") as refused:
        export_parquet(lib, out)
    assert "pass --overwrite" in explain(refused.value)
    (out / "notes.txt").write_text("mine")
    report = export_parquet(lib, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "part-00000.parquet"]  # old parts gone
    assert ds.dataset(sorted(out.glob("*.parquet")), format="parquet").count_rows() == 11  # as DuckDB globs it
    assert report.thumbnails == 0


def test_cli_export_then_import_into_a_new_library(source, tmp_path):
    lib, _, _ = source
    runner = CliRunner()
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(out), "--library", str(lib.root), "--rows-per-file", "5"])
    assert result.exit_code == 0, result.output
    assert "11 images (6 unreadable), 5 vectors of tiny-random" in result.output and "3 part files" in result.output
    result = runner.invoke(app, ["export", str(out), "--library", str(lib.root)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    target = tmp_path / "new-library"
    result = runner.invoke(app, ["import", str(out), "--library", str(target)])
    assert result.exit_code == 0, result.output
    assert "11 rows: 11 added, 0 updated, 0 unchanged, 0 skipped" in result.output
    result = runner.invoke(app, ["import", str(out / "part-00000.parquet"), "--library", str(target)])
    assert result.exit_code == 0 and "5 rows: 0 added, 0 updated, 5 unchanged" in result.output
    result = runner.invoke(app, ["status", "--json", "--library", str(target)])
    assert json.loads(result.output)["models"] == [{"name": MODEL, "dim": DIM, "vectors": 5}]
    result = runner.invoke(app, ["import", str(tmp_path / "nothing-here"), "--library", str(target)])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    shutil.rmtree(out)
