"""Crash safety: SIGKILL `vlsearch index` over and over, at random moments, while it saves a FAISS index and while
it migrates the library's schema; every restart must pick up where the last run stopped and lose nothing.

The runs are children of a fork server (tests/crash_harness.py) that has imported torch and the CLI once, so
that a kill and a restart cost about a second instead of ~10 (a cold start on a 2-core machine). After each kill
the library is checked cheaply; at the end one run (a cold `python -m vlsearch.api.cli index`) goes to completion
and the library is checked in full: every photo once, FAISS ids equal to SQLite's, a search that finds its probe.

Only a kill that lands tests a guarantee: each pause point must be reached (where its name says) and killed as often
as planned, and at least half of the planned random kills of each kind must land (one can come after its run ended).
The figures (kills by phase and pause point) are printed and, if VLSEARCH_RELIABILITY_OUT names a file, written there
as JSON for RELIABILITY.md to cite.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.crash_checks import (
    MODEL,
    at_first_revision,
    check_final,
    check_library,
    count_embeddings,
    index_is_current,
    litter,
)
from tests.crash_harness import ForkServer
from tests.photos import write_photos

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("VLSEARCH_CRASH_SEED", "20261123"))  # another seed explores other kill points
PHOTOS = 200
MORE_PHOTOS = 60  # added whenever fewer are left to index, so that every run has work to be killed in
RANDOM_KILLS = 16  # a third of them during start-up (opening, loading the model, rebuilding the index, planning)
RANDOM_PLAN = {"random": RANDOM_KILLS - RANDOM_KILLS // 3, "random (start-up)": RANDOM_KILLS // 3}
# Pauses before a statement of the 0001 -> 0002 migration: on an empty library, then on a populated one.
EMPTY_MIGRATION = ("CREATE TABLE ocr", "CREATE VIRTUAL TABLE")
POPULATED_MIGRATION = ("INSERT INTO image_text", "CREATE TRIGGER", "UPDATE alembic_version")
# Pauses before the n-th rename of a run that starts with a stale index: it rebuilds and saves the index at start-up
# (the .faiss file, then its .json metadata), and saves it again with the run's images at the end.
RENAMES = {1: "index file, at start-up", 2: "metadata, at start-up", 3: "index file, at the end of a run",
           4: "metadata, at the end of a run"}
STARTUP_RENAME_KILLS = 2  # kills before each start-up rename, shuffled in among the random kills
WAIT_S = 90  # the most one run may take to reach a pause point or show progress (never reached when all is well)


class Crasher:
    """Starts `vlsearch index` runs in the fork server and kills each one, at a pause point or at a random moment;
    checks the library after each kill and keeps the tally."""

    def __init__(self, server: ForkServer, tmp_path: Path, argv: list[str], rng: random.Random) -> None:
        self.server, self.argv, self.rng = server, argv, rng
        self.photo_dir, self.lib_dir = tmp_path / "photos", tmp_path / "lib"
        self.db, self.log = self.lib_dir / "library.db", tmp_path / "runs.log"
        self.kills: Counter[str] = Counter()  # landed, by phase: random, random (start-up), faiss-save, migration
        self.paused: Counter[str] = Counter()  # landed where the pause point's name says, by pause point
        self.planned: Counter[str] = Counter()  # by pause point
        self.missed: Counter[str] = Counter()  # runs that finished before their random kill or their pause point
        self.where: Counter[str] = Counter()  # what the paused runs were about to do when killed
        self.misplaced: list[str] = []
        self.inconsistencies: list[str] = []
        self.staling_kills = 0  # random kills made to leave the index stale before a FAISS pause
        self.startups = [1.0]  # seconds from fork to the first committed batch, as measured so far

    def run_plan(self) -> None:
        for statement in EMPTY_MIGRATION:
            self.migration_kill(statement)
        plan = [(phase, 0) for phase, n in RANDOM_PLAN.items() for _ in range(n)]
        plan += [("faiss-save", nth) for nth in (1, 2) for _ in range(STARTUP_RENAME_KILLS)]
        self.rng.shuffle(plan)
        for i, (phase, nth) in enumerate(plan):
            if i == len(plan) // 2:
                at_first_revision(self.lib_dir, "downgrade")
                for statement in POPULATED_MIGRATION:
                    self.migration_kill(statement)
            if nth:
                self.faiss_kill(nth)
            else:
                self.random_kill(phase)
        for nth in self.rng.sample([3, 4], 2):
            self.faiss_kill(nth)

    def random_kill(self, phase: str) -> None:
        """Kill a run at a random moment: during start-up, or once it has committed a random number of images. A run
        that finished before its kill came is tried again (3 runs at most)."""
        for _ in range(3):
            pid, before = self._start(phase)
            if phase == "random (start-up)":
                time.sleep(self.rng.uniform(0.02, 0.9) * sorted(self.startups)[len(self.startups) // 2])
                reached = self.server.running(pid)
            else:
                reached = self._progress(pid, before)
            if self._kill(phase, pid, reached):
                # one that came after the first committed batch was a kill while indexing
                self.kills[phase if count_embeddings(self.db) == before else "random"] += 1
                return

    def migration_kill(self, statement: str) -> None:
        self._paused_kill(f"migration: {statement}", {"at": "migration", "statement": statement},
                          lambda about_to, committed: about_to.startswith(f"migrate: {statement}") and not committed)

    def faiss_kill(self, nth: int) -> None:
        """Pause before the n-th rename of a run that starts with a stale index, so that renames 1 and 2 are those
        of its start-up save and 3 and 4 those of its last."""
        for _ in range(3):  # a run opens a current index as it is: no save at start-up
            if not index_is_current(self.lib_dir):
                break
            self.staling_kills += 1
            self.random_kill("random")
        name = f"{MODEL}.{'faiss' if nth % 2 else 'json'}"
        self._paused_kill(f"faiss-save: rename {nth} ({RENAMES[nth]})", {"at": "faiss", "nth": nth},
                          lambda about_to, committed: f"rename {name} " in about_to and committed == (nth > 2))

    def _paused_kill(self, point: str, pause: dict, placed: Callable[[str, bool], bool]) -> None:
        """Run to the pause point and kill the run there. `placed(about_to, committed)` says whether the run paused
        where the point's name says, from what it was about to do and whether it had committed images by then."""
        self.planned[point] += 1
        pid, before = self._start(point, pause)
        about_to = self.server.paused(pid, WAIT_S)
        committed = count_embeddings(self.db) > before
        if not self._kill(point, pid, about_to is not None):
            return
        self.kills[point.split(":")[0]] += 1
        self.where[about_to] += 1
        if placed(about_to, committed):
            self.paused[point] += 1
        else:
            self.misplaced.append(f"{point}: the run paused to {about_to} {'after' if committed else 'before'} "
                                  "committing images, not where the name says")

    def _start(self, title: str, pause: dict | None = None) -> tuple[int, int]:
        """Fork a run that has work to do; (its pid, the images committed before it)."""
        photos = len(list(self.photo_dir.glob("*.jpg")))
        if photos - max(count_embeddings(self.db), 0) < MORE_PHOTOS:
            write_photos(self.photo_dir, MORE_PHOTOS, start=photos)
        before = count_embeddings(self.db)
        with self.log.open("a") as f:
            f.write(f"\n=== {title} {pause or ''}\n")
        return self.server.start(self.argv, self.log, pause=pause), before

    def _progress(self, pid: int, before: int) -> bool:
        """Wait until the run has committed a random number of images (progress, not time, picks the moment: how fast
        a batch goes depends on the machine and its load); whether it is still running then, in time."""
        forked = time.monotonic()
        deadline = forked + WAIT_S
        target = before + self.rng.randint(1, MORE_PHOTOS // 2)
        while self.server.running(pid) and count_embeddings(self.db) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        self.startups.append(time.monotonic() - forked)
        while self.server.running(pid) and count_embeddings(self.db) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        in_time = time.monotonic() < deadline
        time.sleep(self.rng.uniform(0.0, 0.05))  # somewhere in the next batch
        return in_time and self.server.running(pid)

    def _kill(self, key: str, pid: int, reached: bool) -> bool:
        """SIGKILL the run unless it has ended, check the library; whether the kill landed where it was `reached`
        for. A run that finished first is missed; one that stalled or failed is an inconsistency."""
        code = self.server.kill(pid)
        if code == 0:
            self.missed[key] += 1
        elif code != -signal.SIGKILL:
            self.inconsistencies.append(f"{key}: the restarted run failed with exit code {code}; see {self.log}")
        elif not reached:
            self.inconsistencies.append(f"{key}: the run stalled (no progress in {WAIT_S} s); see {self.log}")
        self.inconsistencies.extend(f"after a kill ({key}): {p}" for p in check_library(self.lib_dir))
        return code == -signal.SIGKILL and reached

    def lacking(self) -> list[str]:
        """The pause points and random phases with fewer kills than the plan needs, each saying why."""
        lacking = [f"{point}: {self.paused[point]} of {n} planned kills landed there ({self.missed[point]} run(s) "
                   "ended without reaching it): that guarantee went untested"
                   for point, n in self.planned.items() if self.paused[point] < n]
        lacking += self.misplaced
        lacking += [f"{phase}: {self.kills[phase]} of {n} planned kills landed, fewer than half "
                    f"({self.missed[phase]} run(s) finished before their kill)"
                    for phase, n in RANDOM_PLAN.items() if 2 * self.kills[phase] < n]
        return lacking


def final_run(server: ForkServer, tmp_path: Path, index_argv: list[str], env: dict[str, str]) -> list[str]:
    """The last run, left to finish: `python -m vlsearch.api.cli index` started afresh, as a user would; then a
    search, and the full checks. What is wrong (an empty list when nothing is)."""
    lib_dir, log = tmp_path / "lib", tmp_path / "runs.log"
    photos = sorted((tmp_path / "photos").glob("*.jpg"))
    with log.open("a") as f:
        f.write("\n=== final run\n")
        f.flush()  # before the child's output
        final_code = subprocess.run([sys.executable, "-m", "vlsearch.api.cli", *index_argv], cwd=REPO, env=env,
                                    stdout=f, stderr=f, timeout=300).returncode
    problems = [f"the final run failed with exit code {final_code}; see {log}"] if final_code else []
    results = tmp_path / "search.json"
    probe = photos[len(photos) // 3]
    search_code = server.wait(server.start(
        ["search", "--image", str(probe), "--library", str(lib_dir), "--model", MODEL, "--k", "3", "--json"],
        log, out=results))
    try:
        final_problems = check_final(lib_dir, photos, probe, results if search_code == 0 else None)
    except Exception as exc:  # noqa: BLE001 - reported with the figures, then failed
        final_problems = [f"the final checks raised {type(exc).__name__}: {exc}"]
    problems += [f"at the end: {p}" for p in final_problems]
    left = litter(lib_dir, "vectors")  # the next save of an index deletes those of killed writers
    if left:
        problems.append(f"{len(left)} FAISS temp files left by killed runs, e.g. {left[:3]}")
    return problems


def test_sigkill_anywhere_loses_nothing(tmp_path, capsys):
    started = time.monotonic()
    photo_dir, lib_dir = tmp_path / "photos", tmp_path / "lib"
    write_photos(photo_dir, PHOTOS)
    index_argv = ["index", str(photo_dir), "--library", str(lib_dir), "--model", MODEL, "--model-dir",
                  str(tmp_path / "models"), "--batch-size", "4", "--workers", "1", "--device", "cpu",
                  "--no-captions", "--no-ocr"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]),
           "VLSEARCH_MODEL_DIR": str(tmp_path / "models")}
    at_first_revision(lib_dir, "upgrade")  # killed while the first run migrates it (empty), then later with rows
    server = ForkServer(env, REPO, tmp_path / "paused")
    crasher = Crasher(server, tmp_path, index_argv, random.Random(SEED))
    try:
        crasher.run_plan()
        inconsistencies = crasher.inconsistencies + final_run(server, tmp_path, index_argv, env)
    finally:
        server.close()

    figures = {
        "test": "tests/test_crash.py::test_sigkill_anywhere_loses_nothing",
        "seed": SEED,
        "photos": len(list(photo_dir.glob("*.jpg"))),
        "kills": sum(crasher.kills.values()),
        "kills_by_phase": dict(sorted(crasher.kills.items())),
        "kills_by_pause_point": dict(sorted(crasher.paused.items())),
        "paused_kills_were_about_to": dict(sorted(crasher.where.items())),
        "runs_that_finished_before_their_kill": dict(sorted(crasher.missed.items())),
        "random_kills_to_leave_the_index_stale": crasher.staling_kills,
        "lacking_kills": crasher.lacking(),
        "inconsistencies": len(inconsistencies),
        # a run killed while writing a thumbnail (a few KB) leaves its temp file: counted, not an inconsistency
        "thumbnail_temp_files_left": len(litter(lib_dir, "thumbs")),
        "details": inconsistencies,
        "seconds": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print(f"\ncrash test: {json.dumps(figures)}")
    if os.environ.get("VLSEARCH_RELIABILITY_OUT"):
        Path(os.environ["VLSEARCH_RELIABILITY_OUT"]).write_text(json.dumps(figures, indent=2) + "\n")
    logged = f"\n(runs logged in {crasher.log})"
    assert not inconsistencies, "\n".join(inconsistencies) + logged
    assert not figures["lacking_kills"], "\n".join(figures["lacking_kills"]) + logged + f"\n{json.dumps(figures)}"
    assert figures["kills"] >= 20, figures
