"""A fork server for tests/test_crash.py: runs the real `vlsearch` CLI in child processes that the test SIGKILLs.

Started as `python -c "import crash_harness; crash_harness.serve()"`. Importing torch, open_clip and the CLI takes
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
