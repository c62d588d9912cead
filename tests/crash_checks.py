"""The crash test's checks of a library: cheap ones after each kill, the full ones after the final run, and the
helpers that read or stage its state (the saved index, the schema revision, litter of killed writers)."""

from __future__ import annotations

import importlib
import json
import sqlite3
from pathlib import Path

MODEL = "tiny-random"
_VERSIONS = "vlsearch.migrations.versions."
# What each revision adds to 0001's schema: its tables and how many triggers it keeps.
ADDED = {
    "0002": ({"captions", "ocr", "image_text"},
             len(importlib.import_module(_VERSIONS + "0002_captions_ocr_fts").TRIGGERS)),
    "0003": ({"captions", "ocr", "image_text", "products", "product_images", "product_text"},
             len(importlib.import_module(_VERSIONS + "0003_products").triggers(products=True))),
    "0004": ({"captions", "ocr", "image_text", "products", "product_images", "product_text", "vocabularies",
              "vocabulary_labels", "label_vectors", "image_tags", "image_tagging"},
             len(importlib.import_module(_VERSIONS + "0003_products").triggers(products=True))
             + len(importlib.import_module(_VERSIONS + "0004_tags").TRIGGERS)),
}

def count_embeddings(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.Error:
        return -1


def check_library(lib_dir: Path) -> list[str]:
    """Cheap checks after a kill: what is wrong with the library now (an empty list when nothing is)."""
    db = lib_dir / "library.db"
    if not db.exists():
        return []
    problems = []
    with sqlite3.connect(db, timeout=30) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            problems.append(f"integrity_check: {integrity[:5]}")
        dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            problems.append(f"foreign_key_check: {dangling[:5]}")
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0]
        version = (conn.execute("SELECT version_num FROM alembic_version").fetchall()
                   if "alembic_version" in tables else [])
        new_tables = set().union(*(added for added, _ in ADDED.values())) & tables
        if len(version) == 1 and version[0][0] in ADDED:
            revision = version[0][0]
            tables_wanted, triggers_wanted = ADDED[revision]
            if new_tables != tables_wanted or triggers != triggers_wanted:
                problems.append(f"schema at {revision} lacks parts of it: tables {sorted(new_tables)}, {triggers} "
                                "triggers")
            else:
                images = conn.execute("SELECT count(*) FROM images").fetchone()[0]
                texts = conn.execute("SELECT count(*) FROM image_text").fetchone()[0]
                if images != texts:
                    problems.append(f"{images} images but {texts} rows in the keyword index")
        elif version == [("0001",)]:
            if new_tables or triggers:
                problems.append(f"schema at 0001 holds parts of later ones: {sorted(new_tables)}, {triggers} "
                                "triggers")
        elif tables - {"sqlite_sequence"}:
            problems.append(f"alembic_version is {version} with tables {sorted(tables)}")
        model = conn.execute("SELECT generation, dim FROM models WHERE name = ?", (MODEL,)).fetchone()
        stored = sorted(i for (i,) in conn.execute("SELECT image_id FROM embeddings WHERE model = ?", (MODEL,)))
    if model is not None:
        problems += check_saved_index(lib_dir, *model, stored)
    return problems


def saved_index(lib_dir: Path, dim: int) -> tuple | None:
    """(the saved FAISS index, its metadata); None where there is none or it cannot be read (it is rebuilt)."""
    from vlsearch.library.vectors import VectorIndex, meta_path

    path = lib_dir / "vectors" / f"{MODEL}.faiss"
    if not path.exists() or not meta_path(path).exists():
        return None
    try:
        return VectorIndex.load(path, dim)
    except Exception:  # noqa: BLE001 - an unreadable or mismatched pair reads as stale and is rebuilt: allowed
        return None


def check_saved_index(lib_dir: Path, generation: int, dim: int, stored: list[int]) -> list[str]:
    """A FAISS file may be stale after a kill (it is rebuilt), but one whose metadata says it is current must hold
    exactly the vectors SQLite holds."""
    saved = saved_index(lib_dir, dim)
    if saved is None:
        return []
    index, meta = saved
    if meta.generation == generation and meta.count == len(stored) and sorted(index.ids().tolist()) != stored:
        return [f"{MODEL}.faiss claims generation {generation} but holds other ids than SQLite"]
    return []


def index_is_current(lib_dir: Path) -> bool:
    """Whether the next run opens the saved index as it is; a stale one (or none) it rebuilds and saves at start-up."""
    with sqlite3.connect(f"file:{lib_dir / 'library.db'}?mode=ro", uri=True, timeout=30) as conn:
        model = conn.execute("SELECT generation, dim FROM models WHERE name = ?", (MODEL,)).fetchone()
        count = conn.execute("SELECT count(*) FROM embeddings WHERE model = ?", (MODEL,)).fetchone()[0]
    saved = saved_index(lib_dir, model[1]) if model else None
    return saved is not None and (saved[1].model, saved[1].generation, saved[1].count) == (MODEL, model[0], count)


def litter(lib_dir: Path, under: str) -> list[str]:
    """Temp files left behind by killed writers."""
    return sorted(str(p.relative_to(lib_dir)) for p in (lib_dir / under).rglob("*.tmp"))


def at_first_revision(lib_dir: Path, step: str) -> None:
    """Take the library to schema revision 0001 by `step`: "upgrade" creates one as the first release made it,
    "downgrade" takes a populated one back. Either way the next run migrates it (with rows in it, after a downgrade)."""
    from alembic import command
    from sqlalchemy import URL, create_engine

    from vlsearch.library import migrate

    lib_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(URL.create("sqlite", database=str(lib_dir / "library.db")))
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, "0001")
    engine.dispose()


def check_final(lib_dir: Path, photos: list[Path], probe: Path, results: Path | None) -> list[str]:
    """After the last run: every photo indexed once, FAISS equal to SQLite, a search that finds its probe."""
    db = lib_dir / "library.db"
    final_problems = check_library(lib_dir)
    with sqlite3.connect(db) as conn:
        paths = [p for (p,) in conn.execute("SELECT path FROM images")]
        per_image = conn.execute(
            "SELECT count(*), count(DISTINCT image_id) FROM embeddings WHERE model = ?", (MODEL,)).fetchone()
        duplicates = conn.execute(
            "SELECT sha256, path, count(*) FROM images GROUP BY sha256, path HAVING count(*) > 1").fetchall()
        not_ok = conn.execute("SELECT path, error FROM images WHERE status != 'ok'").fetchall()
        stored = sorted(i for (i,) in conn.execute("SELECT image_id FROM embeddings WHERE model = ?", (MODEL,)))
        thumbs = [t for (t,) in conn.execute("SELECT thumbnail FROM images")]
    if sorted(paths) != sorted(str(p) for p in photos):
        final_problems.append(f"{len(paths)} image rows for {len(photos)} photos (or other paths)")
    if per_image != (len(photos), len(photos)):
        final_problems.append(f"(embeddings, images with one) = {per_image}, expected {len(photos)} of each")
    if duplicates or not_ok:
        final_problems.append(f"duplicate rows {duplicates[:3]}, rows not ok {not_ok[:3]}")
    missing_thumbs = [t for t in thumbs if not t or not (lib_dir / t).is_file()]
    if missing_thumbs:
        final_problems.append(f"{len(missing_thumbs)} thumbnails missing, e.g. {missing_thumbs[:2]}")

    from vlsearch.library import Library

    lib = Library.open(lib_dir, create=False)
    try:
        faiss_ids = sorted(lib.vector_index(MODEL).ids().tolist())
    finally:
        lib.close()
    if faiss_ids != stored:
        final_problems.append(f"FAISS holds {len(faiss_ids)} ids, SQLite {len(stored)} embeddings, and they differ")
    hits = json.loads(results.read_text()) if results is not None else []
    if not hits or hits[0]["path"] != str(probe):
        final_problems.append(f"search by {probe.name} does not find it first: {hits[:1]}")
    return final_problems
