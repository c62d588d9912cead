"""Crash safety: SIGKILL `vlsearch index` over and over, at random moments, while it saves a FAISS index and while
it migrates the library's schema; every restart must pick up where the last run stopped and lose nothing.

The runs are children of a fork server (tests/crash_harness.py) that has imported torch and the CLI once, so
that a kill and a restart cost about a second instead of ~10 (a cold start on a 2-core machine). After each kill
the library is checked cheaply; at the end one run (a cold `python -m vlsearch.api.cli index`) goes to completion
and the library is checked in full: every photo once, FAISS ids equal to SQLite's, a search that finds its probe. The
figures (kills by phase, inconsistencies) are printed and, if VLSEARCH_RELIABILITY_OUT names a file, written
there as JSON for RELIABILITY.md to cite.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.photos import write_photos

REPO = Path(__file__).resolve().parent.parent
MODEL = "tiny-random"
SEED = int(os.environ.get("VLSEARCH_CRASH_SEED", "20261123"))  # another seed explores other kill points
PHOTOS = 200
MORE_PHOTOS = 60  # added whenever fewer are left to index, so that every run has work to be killed in
RANDOM_KILLS = 16  # a third of them during start-up (opening, loading the model, rebuilding the index, planning)
TRIGGERS = len(importlib.import_module("vlsearch.migrations.versions.0002_captions_ocr_fts").TRIGGERS)
WAIT_S = 90  # the most one run may take to reach a pause point or show progress (never reached when all is well)


class ForkServer:
    """The test's side of tests/crash_harness.py."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import crash_harness; crash_harness.serve()"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._reply()  # {"ready": pid}: the heavy imports are done

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit code {self.proc.wait()})")
        return json.loads(line)

    def _ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def start(self, argv: list[str], log: Path, out: Path | None = None, pause: dict | None = None) -> int:
        return self._ask(op="run", argv=argv, log=str(log), out=str(out) if out else None, pause=pause)["pid"]

    def wait(self, pid: int) -> int:
        """The child's exit code (-9 when SIGKILLed); blocks until it ends."""
        return self._ask(op="wait", pid=pid)["code"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def running(pid: int) -> bool:
    """Whether the child has not exited yet (an exited, unreaped child is a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


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
        new_tables = {"captions", "ocr", "image_text"} & tables
        if version == [("0002",)]:
            if len(new_tables) != 3 or triggers != TRIGGERS:
                problems.append(f"schema at 0002 lacks parts of it: tables {sorted(new_tables)}, {triggers} triggers")
            else:
                images = conn.execute("SELECT count(*) FROM images").fetchone()[0]
                texts = conn.execute("SELECT count(*) FROM image_text").fetchone()[0]
                if images != texts:
                    problems.append(f"{images} images but {texts} rows in the keyword index")
        elif version == [("0001",)]:
            if new_tables or triggers:
                problems.append(f"schema at 0001 holds parts of 0002: {sorted(new_tables)}, {triggers} triggers")
        elif tables - {"sqlite_sequence"}:
            problems.append(f"alembic_version is {version} with tables {sorted(tables)}")
        model = conn.execute("SELECT generation, dim FROM models WHERE name = ?", (MODEL,)).fetchone()
        stored = sorted(i for (i,) in conn.execute("SELECT image_id FROM embeddings WHERE model = ?", (MODEL,)))
    if model is not None:
        problems += check_saved_index(lib_dir, *model, stored)
    return problems


def check_saved_index(lib_dir: Path, generation: int, dim: int, stored: list[int]) -> list[str]:
    """A FAISS file may be stale after a kill (it is rebuilt), but one whose metadata says it is current must hold
    exactly the vectors SQLite holds."""
    from vlsearch.library.vectors import VectorIndex, meta_path

    path = lib_dir / "vectors" / "tiny-random.faiss"
    if not path.exists() or not meta_path(path).exists():
        return []
    try:
        index, meta = VectorIndex.load(path, dim)
    except Exception:  # noqa: BLE001 - an unreadable or mismatched pair reads as stale and is rebuilt: allowed
        return []
    if meta.generation == generation and meta.count == len(stored) and sorted(index.ids().tolist()) != stored:
        return [f"{path.name} claims generation {generation} but holds other ids than SQLite"]
    return []


def litter(lib_dir: Path, under: str) -> list[str]:
    """Temp files left behind by killed writers."""
    return sorted(str(p.relative_to(lib_dir)) for p in (lib_dir / under).rglob("*.tmp"))


def create_at_first_revision(lib_dir: Path) -> None:
    """A library as the first release made it: opening it with today's code migrates it."""
    from alembic import command
    from sqlalchemy import URL, create_engine

    from vlsearch.library import migrate

    lib_dir.mkdir(parents=True)
    engine = create_engine(URL.create("sqlite", database=str(lib_dir / "library.db")))
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()


def downgrade_to_first_revision(lib_dir: Path) -> None:
    """Take a populated library back to 0001, so that the next run migrates it with rows in it."""
    from alembic import command
    from sqlalchemy import URL, create_engine

    from vlsearch.library import migrate

    engine = create_engine(URL.create("sqlite", database=str(lib_dir / "library.db")))
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
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


def test_sigkill_anywhere_loses_nothing(tmp_path, capsys):
    started = time.monotonic()
    rng = random.Random(SEED)
    photo_dir = tmp_path / "photos"
    write_photos(photo_dir, PHOTOS)
    lib_dir = tmp_path / "lib"
    db = lib_dir / "library.db"
    log = tmp_path / "runs.log"
    marker = tmp_path / "paused"
    index_argv = ["index", str(photo_dir), "--library", str(lib_dir), "--model", MODEL, "--model-dir",
                  str(tmp_path / "models"), "--batch-size", "4", "--workers", "1", "--device", "cpu",
                  "--no-captions", "--no-ocr"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]),
           "VLSEARCH_MODEL_DIR": str(tmp_path / "models")}
    create_at_first_revision(lib_dir)

    kills: Counter[str] = Counter()
    inconsistencies: list[str] = []
    missed: Counter[str] = Counter()  # pause points a run ended without reaching, and random kills that came late
    where: Counter[str] = Counter()  # what the paused runs were about to do when killed
    server = ForkServer(env)

    def ensure_work() -> None:
        photos = len(list(photo_dir.glob("*.jpg")))
        if photos - max(count_embeddings(db), 0) < MORE_PHOTOS:
            write_photos(photo_dir, MORE_PHOTOS, start=photos)

    startups = [1.0]  # seconds from fork to the first committed batch, as measured so far

    def cycle(phase: str, pause: dict | None = None) -> bool:
        """Start an index run, kill it at the pause point or at a random moment (during start-up, or once it has
        committed a random number of images), then check the library. Returns whether the kill landed."""
        marker.unlink(missing_ok=True)
        ensure_work()
        before = count_embeddings(db)
        with log.open("a") as f:
            f.write(f"\n=== {phase} {pause or ''}\n")
        pid = server.start(index_argv, log, pause=pause and {**pause, "marker": str(marker)})
        forked = time.monotonic()
        deadline = forked + WAIT_S
        if pause:
            while running(pid) and not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            reached = marker.exists()
            if reached:
                where[marker.read_text()] += 1
        elif phase == "random (start-up)":
            time.sleep(rng.uniform(0.02, 0.9) * sorted(startups)[len(startups) // 2])
            reached = running(pid)
        else:
            # Progress, not time, picks the moment: how fast a batch goes depends on the machine and its load.
            target = before + rng.randint(1, MORE_PHOTOS // 2)
            while running(pid) and count_embeddings(db) <= before and time.monotonic() < deadline:
                time.sleep(0.005)
            startups.append(time.monotonic() - forked)
            while running(pid) and count_embeddings(db) < target and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the next batch
            reached = running(pid)
        if running(pid):
            os.kill(pid, signal.SIGKILL)
        code = server.wait(pid)
        if code == -signal.SIGKILL and reached:
            kills[phase] += 1
        elif code == -signal.SIGKILL:
            inconsistencies.append(f"{phase}: the run stalled (no progress in {WAIT_S} s); see {log}")
        elif code == 0:
            missed[phase] += 1  # finished before the kill came: a restart that worked, but no kill to count
        else:
            inconsistencies.append(f"{phase}: the restarted run failed with exit code {code}; see {log}")
        inconsistencies.extend(f"after a {phase} kill: {p}" for p in check_library(lib_dir))
        return code == -signal.SIGKILL and reached

    try:
        # A library at the first schema revision; killed while the first run migrates it (empty), twice.
        cycle("migration", {"at": "migration", "statement": "CREATE TABLE ocr"})
        cycle("migration", {"at": "migration", "statement": "CREATE VIRTUAL TABLE"})
        # Random kills while indexing, with kills while the (stale, so rebuilt) index is saved at start-up:
        # before its .faiss file is renamed into place (nth 1) or its metadata (nth 2).
        plan = (["random"] * (RANDOM_KILLS - RANDOM_KILLS // 3) + ["random (start-up)"] * (RANDOM_KILLS // 3)
                + ["faiss-save"] * 4)
        rng.shuffle(plan)
        for i, phase in enumerate(plan):
            if i == len(plan) // 2:
                # Back to the old schema with rows in it: kills while migrating a populated library.
                downgrade_to_first_revision(lib_dir)
                for statement in ("INSERT INTO image_text", "CREATE TRIGGER", "UPDATE alembic_version"):
                    cycle("migration", {"at": "migration", "statement": statement})
            pause = {"at": "faiss", "nth": rng.choice([1, 2])} if phase == "faiss-save" else None
            for _ in range(3):  # a run that finished before its random kill came is tried again
                if cycle(phase, pause):
                    break
        # Kills while the updated index is saved at the end of a run that finished its work (the stale index
        # was rebuilt and saved at start-up: renames 1 and 2).
        cycle("faiss-save", {"at": "faiss", "nth": 3})
        cycle("faiss-save", {"at": "faiss", "nth": 4})
        photos = sorted(photo_dir.glob("*.jpg"))

        # The last run, left to finish: `python -m vlsearch.api.cli index` started afresh, as a user would.
        with log.open("a") as f:
            f.write("\n=== final run\n")
            final_code = subprocess.run([sys.executable, "-m", "vlsearch.api.cli", *index_argv], cwd=REPO, env=env,
                                        stdout=f, stderr=f, timeout=300).returncode
        results = tmp_path / "search.json"
        probe = photos[len(photos) // 3]
        search_code = server.wait(server.start(
            ["search", "--image", str(probe), "--library", str(lib_dir), "--model", MODEL, "--k", "3", "--json"],
            log, out=results))
    finally:
        server.close()

    if final_code != 0:
        inconsistencies.append(f"the final run failed with exit code {final_code}; see {log}")
    try:
        final_problems = check_final(lib_dir, photos, probe, results if search_code == 0 else None)
    except Exception as exc:  # noqa: BLE001 - reported with the figures, then failed below
        final_problems = [f"the final checks raised {type(exc).__name__}: {exc}"]
    inconsistencies += [f"at the end: {p}" for p in final_problems]
    left = litter(lib_dir, "vectors")  # the next save of an index deletes those of killed writers
    if left:
        inconsistencies.append(f"{len(left)} FAISS temp files left by killed runs, e.g. {left[:3]}")
    # A run killed while writing a thumbnail (a few KB) leaves its temp file: counted, not an inconsistency.
    thumb_litter = len(litter(lib_dir, "thumbs"))

    figures = {
        "test": "tests/test_crash.py::test_sigkill_anywhere_loses_nothing",
        "seed": SEED,
        "photos": len(photos),
        "kills": sum(kills.values()),
        "kills_by_phase": dict(sorted(kills.items())),
        "paused_kills_were_about_to": dict(sorted(where.items())),
        "runs_that_finished_before_their_kill": dict(missed),
        "inconsistencies": len(inconsistencies),
        "thumbnail_temp_files_left": thumb_litter,
        "details": inconsistencies,
        "seconds": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print(f"\ncrash test: {json.dumps(figures)}")
    if os.environ.get("VLSEARCH_RELIABILITY_OUT"):
        Path(os.environ["VLSEARCH_RELIABILITY_OUT"]).write_text(json.dumps(figures, indent=2) + "\n")
    assert not inconsistencies, "\n".join(inconsistencies) + f"\n(runs logged in {log})"
    assert figures["kills"] >= 20, figures
