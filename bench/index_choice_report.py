"""index_choice.md: the table of bench/index_choice.py's report (index_choice.json), written beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    from bench.index_choice import Row, markdown_table

    m = payload["meta"]
    stats = "; ".join(f"{int(n):,}: query to its 1st / 10th exact neighbour {s['mean_cos_nn1']:.3f} / "
                      f"{s['mean_cos_nn10']:.3f}, random pair {s['mean_cos_random_pair']:.3f}"
                      for n, s in m["data_stats"].items())
    lines = [
        "# Index choice above ~100k vectors: IVF-Flat vs HNSW (vs exact Flat)", "",
        f"Command: `{payload['command']}` (raw numbers: `index_choice.json`). Total run {m['total_seconds']:.0f} s, "
        f"load average {m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after.", "",
        f"Machine: CPU `{m['cpu_model']}`, {m['cores']} cores, {m['omp_threads']} OpenMP threads; faiss-cpu "
        f"{m['faiss_version']} (`{m['faiss_compile_options'].strip()}`), numpy {m['numpy_version']}, Python "
        f"{m['python']}.", "",
        f"Data: {m['data']} (see bench/index_choice.py's docstring); mean cosines at {stats}.", "",
        "Recall@10 over the queries against exact search; single-query latency p50 / p99 (each query's fastest of "
        "the repeats); batch = one search call with every query. pick = the smallest setting that reaches "
        f"recall@10 >= {m['args']['target_recall']}.", "",
        markdown_table([Row(**row) for row in payload["rows"]]),
    ]
    path.write_text("\n".join(lines) + "\n")
