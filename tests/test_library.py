import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.photos import write_photos
from vlsearch.indexer import Indexer
from vlsearch.library import Embedding, ImageRecord, Library, VectorIndex, migrate


def index(lib, encoder, folder):
    return Indexer(lib, encoder, batch_size=4, workers=0).run([folder])


def test_new_library_is_migrated_to_head(tmp_path):
    lib = Library.open(tmp_path / "lib")
    assert migrate.current_revision(lib.engine) == migrate.head_revision(lib.engine) is not None
    assert (tmp_path / "lib" / "library.db").is_file()


def test_opening_a_missing_library_without_create_says_what_to_do(tmp_path):
    with pytest.raises(Exception, match="index a folder into it first"):
        Library.open(tmp_path / "nothing", create=False)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "stale", "truncated"])
def test_damaged_faiss_file_is_rebuilt_from_sqlite(tmp_path, tiny_encoder, damage, caplog):
    lib = Library.open(tmp_path / "lib")
    write_photos(tmp_path / "p", 6)
    index(lib, tiny_encoder, tmp_path / "p")
    model = tiny_encoder.name
    path = lib.index_path(model)
    expected = sorted(lib.load_vectors(model)[0].tolist())
    lib.close()
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(b"not a faiss index at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # stale: vectors deleted behind the index's back
        with sqlite3.connect(tmp_path / "lib" / "library.db") as conn:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("DELETE FROM images WHERE id = (SELECT min(id) FROM images)")
            conn.execute("UPDATE models SET generation = generation + 1")
        expected = expected[1:]
    reopened = Library.open(tmp_path / "lib")
    with caplog.at_level(logging.WARNING, logger="vlsearch.library.index_cache"):
        rebuilt = reopened.vector_index(model)
    assert sorted(rebuilt.ids().tolist()) == expected
    assert "rebuilding" in caplog.text
    # ... and saved again, so the next open reads it without a rebuild.
    caplog.clear()
    again = Library.open(tmp_path / "lib")
    with caplog.at_level(logging.WARNING, logger="vlsearch.library.index_cache"):
        assert sorted(again.vector_index(model).ids().tolist()) == expected
    assert "rebuilding" not in caplog.text


def test_index_save_is_atomic_and_leaves_no_temp_files(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    write_photos(tmp_path / "p", 3)
    index(lib, tiny_encoder, tmp_path / "p")
    files = sorted(p.name for p in lib.index_path(tiny_encoder.name).parent.iterdir())
    assert files == ["tiny-random.faiss", "tiny-random.json"]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_every_index_kind_finds_exact_matches(kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 2100)
    index = VectorIndex.build(ids, vectors, 32, kind)
    scores, found = index.search(vectors[:20], 1)
    assert (found[:, 0] == ids[:20]).mean() >= 0.95
    assert sorted(index.ids().tolist()) == ids.tolist()


def test_reindex_chooses_the_requested_kind(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    write_photos(tmp_path / "p", 5)
    index(lib, tiny_encoder, tmp_path / "p")
    rebuilt = lib.rebuild_index(tiny_encoder.name, "hnsw")
    assert rebuilt.kind == "hnsw" and rebuilt.ntotal == 5
    assert Library.open(tmp_path / "lib").vector_index(tiny_encoder.name).kind == "hnsw"


def test_killed_indexer_loses_nothing_and_resumes(tmp_path):
    """SIGKILL a real `vlsearch index` mid-run: committed batches stay, SQLite and FAISS agree, a rerun finishes."""
    photos = write_photos(tmp_path / "photos", 300)
    lib_dir = tmp_path / "lib"
    cmd = [sys.executable, "-m", "vlsearch.api.cli", "index", str(tmp_path / "photos"), "--library", str(lib_dir),
           "--model", "tiny-random", "--batch-size", "2", "--workers", "0", "--device", "cpu",
           "--no-captions", "--no-ocr"]
    env = {**os.environ, "VLSEARCH_MODEL_DIR": str(tmp_path / "models")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = lib_dir / "library.db"
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    committed = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
            if committed >= 20:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"indexer ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    lib = Library.open(lib_dir)
    with lib.session() as s:
        done = s.scalar(select(ImageRecord.id).order_by(ImageRecord.id.desc()).limit(1))
        embedded = s.scalars(select(Embedding.image_id)).all()
    assert 0 < len(embedded) < len(photos) and done is not None
    index = lib.vector_index("tiny-random")  # stale or missing after the kill: rebuilt, never an error
    assert sorted(index.ids().tolist()) == sorted(embedded)

    from vlsearch.encoders import load_encoder

    report = Indexer(lib, load_encoder("tiny-random", device="cpu"), batch_size=16, workers=0).run(
        [tmp_path / "photos"]
    )
    assert report.embedded + report.unchanged == len(photos)
    assert report.unchanged == len(embedded)
    with lib.session() as s:
        paths = s.scalars(select(ImageRecord.path)).all()
        vectors = s.scalars(select(Embedding.image_id)).all()
    assert sorted(paths) == sorted(str(p) for p in photos)  # every image exactly once
    assert len(vectors) == len(set(vectors)) == len(photos)
    assert sorted(lib.vector_index("tiny-random").ids().tolist()) == sorted(vectors)


def test_two_libraries_do_not_share_state(tmp_path, tiny_encoder):
    write_photos(tmp_path / "a", 2)
    write_photos(tmp_path / "b", 3, start=10)
    a, b = Library.open(tmp_path / "la"), Library.open(tmp_path / "lb")
    index(a, tiny_encoder, tmp_path / "a")
    index(b, tiny_encoder, tmp_path / "b")
    assert a.vector_index(tiny_encoder.name).ntotal == 2
    assert b.vector_index(tiny_encoder.name).ntotal == 3
    assert Path(a.stats().root) != Path(b.stats().root)


def test_growing_past_the_flat_limit_switches_to_the_approximate_index(tmp_path, tiny_encoder, monkeypatch):
    import vlsearch.library.index_cache
    import vlsearch.library.vectors.plan

    monkeypatch.setattr(vlsearch.library.index_cache, "FLAT_LIMIT", 8)
    monkeypatch.setattr(vlsearch.library.vectors.plan, "FLAT_LIMIT", 8)
    lib = Library.open(tmp_path / "lib")
    write_photos(tmp_path / "p", 6)
    index(lib, tiny_encoder, tmp_path / "p")
    assert lib.vector_index(tiny_encoder.name).kind == "flat"
    write_photos(tmp_path / "p", 4, start=6)
    index(lib, tiny_encoder, tmp_path / "p")
    grown = Library.open(tmp_path / "lib").vector_index(tiny_encoder.name)
    assert grown.kind != "flat" and grown.ntotal == 10


@pytest.mark.parametrize("name", ["what?lib", "100% photos", "lib#2"])
def test_library_folder_names_with_url_characters(tmp_path, tiny_encoder, name):
    write_photos(tmp_path / "p", 2)
    lib = Library.open(tmp_path / name)
    index(lib, tiny_encoder, tmp_path / "p")
    assert (tmp_path / name / "library.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p", name])
    assert Library.open(tmp_path / name).vector_index(tiny_encoder.name).ntotal == 2


def test_an_empty_library_can_be_given_an_ivf_index_and_then_filled(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    lib.ensure_model(tiny_encoder.name, tiny_encoder.dim)
    assert lib.rebuild_index(tiny_encoder.name, "ivf").ntotal == 0
    write_photos(tmp_path / "p", 3)
    index(lib, tiny_encoder, tmp_path / "p")
    assert lib.vector_index(tiny_encoder.name).ntotal == 3


def test_a_reader_may_keep_a_recent_index_while_another_process_writes(tmp_path, tiny_encoder):
    from tests.photos import picture
    from vlsearch.search import SearchEngine, SearchQuery

    photos = write_photos(tmp_path / "p", 5)
    writer = Library.open(tmp_path / "lib")
    index(writer, tiny_encoder, tmp_path / "p")
    reader = Library.open(tmp_path / "lib")  # a server's own connection, as in another process
    model = tiny_encoder.name
    assert reader.vector_index(model).ntotal == 5

    write_photos(tmp_path / "p", 3, start=5)
    photos[2].unlink()
    index(writer, tiny_encoder, tmp_path / "p")
    kept = reader.vector_index(model, max_stale_s=3600)
    assert kept.ntotal == 5  # within its staleness budget: no rebuild per query
    hits = SearchEngine(reader, tiny_encoder, max_stale_s=3600).search(SearchQuery(image=picture(2), k=5))
    assert str(photos[2]) not in [h.path for h in hits]  # a removed image is never returned, even so
    assert reader.vector_index(model).ntotal == 7  # a reader that wants it current gets it current


def test_a_migration_that_dies_midway_leaves_the_old_schema_and_reruns(tmp_path):
    """A migration is one transaction: Python's sqlite3 used to commit each CREATE on its own, so a crash after
    the first one left a half-migrated library at the old revision that no later open could migrate."""
    from alembic import command
    from sqlalchemy import URL, Engine, create_engine, event

    db = tmp_path / "lib" / "library.db"
    db.parent.mkdir()
    engine = create_engine(URL.create("sqlite", database=str(db)))
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()

    class Crash(Exception):
        pass

    def crash(conn, cursor, statement, *args):
        if "CREATE VIRTUAL TABLE" in statement:
            raise Crash  # after CREATE TABLE captions and ocr ran

    event.listen(Engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(Crash):
            Library.open(db.parent)
    finally:
        event.remove(Engine, "before_cursor_execute", crash)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name IN ('captions', 'ocr')").fetchall()
    lib = Library.open(db.parent)
    assert migrate.current_revision(lib.engine) == migrate.head_revision(lib.engine)


def test_a_killed_writers_forked_children_do_not_keep_the_library_locked(tmp_path):
    """The indexer's decoding workers are forked while it holds the writer lock; after `kill -9` of the indexer
    they linger a few seconds, and must not hold the lock meanwhile."""
    Library.open(tmp_path / "lib").close()
    script = (
        "import os, signal, sys, time\n"
        "from library import Library\n"
        "lib = Library.open(sys.argv[1])\n"
        "with lib.writer('a test'):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    print('locked', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "lib")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    proc.wait()
    lib = Library.open(tmp_path / "lib")
    with lib.writer("the next run"):  # raised LibraryBusy while the orphaned child lived
        pass


def test_saving_an_index_deletes_temp_files_of_killed_writers(tmp_path, tiny_encoder):
    lib = Library.open(tmp_path / "lib")
    write_photos(tmp_path / "p", 3)
    index(lib, tiny_encoder, tmp_path / "p")
    path = lib.index_path(tiny_encoder.name)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = [path.with_name(f".{path.name}.{dead_pid}.0123abcd.tmp"),
            path.with_name(f".{path.with_suffix('.json').name}.{dead_pid}.4567cdef.tmp")]
    live = path.with_name(f".{path.name}.{os.getppid()}.89abcdef.tmp")  # a writer that is still at work
    for tmp in [*left, live]:
        tmp.write_bytes(b"partial")
    lib.rebuild_index(tiny_encoder.name)
    assert not any(tmp.exists() for tmp in left)
    assert live.exists()
