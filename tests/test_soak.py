"""A short soak (bench/soak.py): 32 clients search a real `vlsearch serve` while index jobs add images and deletes
remove them. Nothing may fail or tear, and the library must be whole afterwards. The long run is `python -m bench
soak` (RELIABILITY.md); nothing here is timed."""

from __future__ import annotations

import json

from bench.__main__ import main as bench


def test_searches_under_load_while_the_library_changes_lose_nothing(tmp_path):
    # --device cpu: the memory bound below is the CPU server's (a CUDA context and the GPU libraries it loads lazily
    # would count too)
    assert bench(["soak", "--device", "cpu", "--duration", "15", "--clients", "32", "--photos", "40", "--batch", "8",
                  "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "soak.json").read_text())
    run, final = report["run"], report["final"]
    assert run["errors"] == 0, run["error_samples"]
    assert run["torn_reads"] == 0, run["torn_samples"]
    assert run["requests"] > 100 and run["jobs"] >= 2 and run["deleted"] >= 8
    assert {"search", "hybrid", "similar", "detail", "thumbnail"} <= set(run["latency_ms"])
    assert final == {**final, "integrity_check": "ok", "rows_match_files": True, "duplicate_paths": 0,
                     "faiss_ids_match_sqlite": True, "search_after": 200}
    assert final["images"] == final["files_on_disk"] == final["vectors"]
    assert run["rss_mb"]["max"] < 3 * run["rss_mb"]["start"]  # bounded, generously: the long run reports the figures
