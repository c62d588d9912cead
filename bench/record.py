"""The command a result file records: `python -m bench WHICH ARGS`, the one form bench/__main__.py's check_command
accepts, so a result file in bench/results always says how to make it again."""

from __future__ import annotations

import shlex
import sys

PREFIX = ("python", "-m", "bench")


def recorded_command(which: str, argv: list[str] | None) -> str:
    """`argv` as the benchmark's main got it (None: this process's own arguments)."""
    return shlex.join([*PREFIX, which, *(sys.argv[1:] if argv is None else argv)])


def result_name(which: str, device: str) -> str:
    """WHICH on the CPU, WHICH-gpu on a GPU: a GPU run's results sit beside the CPU's rather than replace them."""
    return f"{which}-gpu" if device.startswith("cuda") else which
