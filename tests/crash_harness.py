"""A fork server for tests/test_crash.py: runs the real `vlsearch` CLI in child processes that the test SIGKILLs.

Started by ForkServer (the test's side, at the end of this file) as
`python -c "import crash_harness; crash_harness.serve()"`. Importing torch, open_clip and the CLI takes
~6 s on a 2-core machine; paying that once and forking a child per run lets one test kill the indexer dozens of
times. Each child is a separate process running `vlsearch.api.cli.app` from the top (argument parsing, opening and
migrating the library, loading the model, indexing), so a SIGKILL kills it exactly as it would kill
`vlsearch index` started from a shell. Nothing in the parent has started a thread or touched the GPU before
forking (imports only), so the children are sound.

Pauses, to kill at points a timer rarely hits, are monkeypatches installed in the child only (no test hooks in
production code). Each writes a marker file, then sleeps until the test kills it:
- `faiss`: the n-th `os.replace` of library/vectors/files.py's `_atomic_write`, i.e. after the temp file of the index
  (odd n) or of its metadata (even n) is written and fsynced, before it is renamed over the old file.
- `migration`: before the first SQL statement, while migrating, that starts with a given text (CREATE TABLE ocr,
  CREATE VIRTUAL TABLE, UPDATE alembic_version, ...).

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
  {"op": "run", "argv": [...], "log": PATH, "out": PATH | null, "pause": {...} | null}  ->  {"pid": PID}
  (stderr, and stdout unless "out" is given, are appended to "log")
  {"op": "wait", "pid": PID}                                         ->  {"code": EXIT CODE, -9 if killed}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path


def serve() -> None:
    import faiss  # noqa: F401
    import torch  # noqa: F401

    import vlsearch.api.cli  # noqa: F401
    import vlsearch.encoders  # noqa: F401
    import vlsearch.indexer  # noqa: F401
    import vlsearch.search  # noqa: F401

    out = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            out.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)  # never returns
            reply = {"pid": pid}
        elif request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            reply = {"code": os.waitstatus_to_exitcode(status)}
        else:
            reply = {"error": f"unknown op {request['op']!r}"}
        print(json.dumps(reply), file=out, flush=True)


def _child(request: dict) -> None:
    code = 1
    try:
        for target, path in ((1, request.get("out") or request["log"]), (2, request["log"])):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        pause = request.get("pause")
        if pause:
            _install_pause(pause)
        from vlsearch.api.cli import app

        app(args=request["argv"], prog_name="vlsearch")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _hold(marker: str, what: str) -> None:
    """Say where this process stopped, then wait to be killed."""
    Path(marker + ".tmp").write_text(what)
    os.replace(marker + ".tmp", marker)  # the test reads the marker as soon as it exists
    while True:
        time.sleep(60)


def _install_pause(pause: dict) -> None:
    if pause["at"] == "faiss":
        import vlsearch.library.vectors.files as index_files

        real = index_files.os
        calls = {"n": 0}

        class PausingOs:
            def __getattr__(self, name):
                return getattr(real, name)

            @staticmethod
            def replace(src, dst):
                calls["n"] += 1
                if calls["n"] == pause["nth"]:
                    _hold(pause["marker"], f"rename {Path(dst).name} into place (rename {calls['n']} of the run)")
                return real.replace(src, dst)

        index_files.os = PausingOs()
    elif pause["at"] == "migration":
        from alembic import command
        from sqlalchemy import Engine, event

        real_upgrade = command.upgrade
        state = {"migrating": False}

        def upgrade(*args, **kwargs):
            state["migrating"] = True
            return real_upgrade(*args, **kwargs)

        command.upgrade = upgrade  # library/migrate.py calls command.upgrade when a library needs migrating

        @event.listens_for(Engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):
            if state["migrating"] and statement.lstrip().startswith(pause["statement"]):
                _hold(pause["marker"], f"migrate: {' '.join(statement.split()[:4])} ...")
    else:
        raise ValueError(f"unknown pause point {pause['at']!r}")


class ForkServer:
    """The test's side: starts serve() in a process of its own and asks it for runs, one at a time (they share
    `marker`, the file a paused run writes)."""

    def __init__(self, env: dict[str, str], cwd: Path, marker: Path) -> None:
        self.marker = marker
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import crash_harness; crash_harness.serve()"], cwd=cwd, env=env,
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
        self.marker.unlink(missing_ok=True)
        pause = pause and {**pause, "marker": str(self.marker)}
        return self._ask(op="run", argv=argv, log=str(log), out=str(out) if out else None, pause=pause)["pid"]

    def paused(self, pid: int, timeout: float) -> str | None:
        """What the child was about to do where it paused; None if it ended, or `timeout` passed, before pausing."""
        deadline = time.monotonic() + timeout
        while self.running(pid) and not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.marker.read_text() if self.marker.exists() else None

    def wait(self, pid: int) -> int:
        """The child's exit code (-9 when SIGKILLed); blocks until it ends."""
        return self._ask(op="wait", pid=pid)["code"]

    def kill(self, pid: int) -> int:
        """SIGKILL the child unless it has ended; its exit code."""
        if self.running(pid):
            os.kill(pid, signal.SIGKILL)
        return self.wait(pid)

    @staticmethod
    def running(pid: int) -> bool:
        """Whether the child has not ended (one that has is a zombie until `wait` reaps it)."""
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
