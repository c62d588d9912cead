"""The benchmarks still run (tiny sizes): a benchmark that has rotted is found here, not on the day it is needed.
Nothing here is timed; only the shape and sanity of the reports are checked."""

from __future__ import annotations

import importlib
import json
import shlex
from pathlib import Path

import pytest

from bench import scale
from bench.__main__ import BENCHES, GPU_ONLY, check_command
from bench.__main__ import main as bench
from bench.record import result_name

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def test_indexing_benchmark_reports_the_ratio_to_the_bare_model_and_vector_fidelity(tmp_path):
    assert bench(["indexing", "--count", "6", "--models", "tiny-random", "--bare-seconds", "0.05",
                  "--precisions", "fp32,bf16,fp32", "--photos", str(tmp_path / "photos"),
                  "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "indexing.json").read_text())
    fp32, bf16 = report["runs"]  # a precision asked for twice is measured once
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    for run in (fp32, bf16):
        assert run["images"] == 6 and run["errors"] == 0
        assert run["ratio_to_bare"] == round(run["end_to_end_images_per_s"] / run["bare_images_per_s"], 3)
        assert run["ratio_to_bare_fp32"] == round(run["end_to_end_images_per_s"] / fp32["bare_images_per_s"], 3)
        assert run["fidelity"]["images"] == 6 and run["fidelity"]["min_cosine"] >= 0.98
        assert run["draft_to"] and run["decode_full_size_images_per_s"] > 0  # the fast path's gain, beside it
    assert bf16["bare_images_per_s"] != fp32["bare_images_per_s"] == bf16["bare_fp32_images_per_s"]
    assert report["photos"]["files"] == 6 and report["photos"]["megapixels_max"] > 1
    table = (tmp_path / "out" / "indexing.md").read_text()
    assert "| tiny-random | fp32 |" in table and "| tiny-random | bf16 |" in table


def test_index_choice_benchmark_writes_its_table_beside_the_raw_numbers(tmp_path):
    assert bench(["index-choice", "--sizes", "3000", "--dim", "32", "--queries", "40", "--latency-queries", "5",
                  "--repeats", "1", "--clusters", "20", "--rank", "8", "--nprobe", "1,8", "--ef-search", "16",
                  "--hnsw-efc", "40", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "index_choice.json").read_text())
    check_command(report["command"].replace(str(tmp_path), "bench/results"))
    assert {row["index"] for row in report["rows"]} == {"Flat", "IVFFlat", "HNSWFlat"}
    table = (tmp_path / "index_choice.md").read_text()
    assert report["command"] in table and len([line for line in table.splitlines() if line.startswith("| 3,000")]) \
        == len(report["rows"])


def test_precision_benchmark_compares_each_way_of_computing_below_fp32_with_fp32(tmp_path):
    assert bench(["precision", "--model", "tiny-random", "--batch-size", "4", "--queries", "3", "--repeats", "1",
                  "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "precision.json").read_text())
    rows = {r["way"]: r for r in report["rows"]}
    assert list(rows) == ["fp32", "autocast-bf16", "bf16-unpacked", "bf16-weights", "int8-dynamic"]
    assert rows["fp32"]["image_fidelity"] == {"mean": 1.0, "min": 1.0}
    for way in ("autocast-bf16", "bf16-unpacked", "bf16-weights", "int8-dynamic"):
        assert 0.98 <= rows[way]["image_fidelity"]["min"] < 1.0, way  # faithful, and really another format
        assert rows[way]["images_per_s"] > 0
    assert rows["int8-dynamic"]["text_ms_p50"] is None and rows["bf16-weights"]["text_ms_p50"] > 0
    assert "| bf16-weights |" in (tmp_path / "precision.md").read_text()


def test_gpu_serve_runs_its_encoder_and_search_stages_on_the_cpu_where_there_is_no_gpu(tmp_path):
    """The one-shot GPU script's code, at toy sizes on the CPU (a GPU machine runs it with --device auto): exact
    torch search finds the exact top 10, and the CPU index the server would use is measured beside it."""
    assert bench(["gpu-serve", "--stages", "encoder,search", "--device", "cpu", "--sizes", "2000,5000",
                  "--cpu-ivf-max", "2000", "--encoders", "tiny-random", "--queries", "30", "--latency-queries", "5",
                  "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_serve.json").read_text())
    assert report["device"] == "cpu" and report["machine"]["gpu"] is None
    (encoder,) = report["stages"]["encoder"]
    assert encoder["model"] == "tiny-random" and encoder["texts_per_s_batch_32"] > 0
    small, large = report["stages"]["search"]
    assert (small["vectors"], large["vectors"]) == (2000, 5000)
    assert small["recall_at_10"] == large["recall_at_10"] == 1.0 and small["one_query_ms"]["p50"] > 0
    assert small["cpu_ivf"]["kind"] == "flat" and small["cpu_ivf"]["recall_at_10"] == 1.0 and "cpu_ivf" not in large
    assert bench(["gpu-serve", "--stages", "encoder", "--device", "cpu", "--encoders", "tiny-random",
                  "--latency-queries", "5", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "gpu_serve.json").read_text())
    assert again["stages"]["search"] == report["stages"]["search"]  # a later call keeps the stages it did not rerun
    assert "; then python -m bench gpu-serve --stages encoder" in again["command"]
    check_command(again["command"].replace(str(tmp_path), "bench/results"))
    assert "| 5,000 |" in (tmp_path / "gpu_serve.md").read_text()


def test_unknown_benchmark_is_refused_with_the_choices(capsys):
    assert bench(["nope"]) == 2
    assert "indexing" in capsys.readouterr().err


def test_query_benchmark_reports_recall_latency_and_memory_per_index_kind(tmp_path):
    argv = ["--sizes", "12000", "--queries", "50", "--latency-queries", "10", "--repeats", "1", "--ivfpq-from",
            "12000", "--dim", "64", "--encoders", "", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert bench(["query", *argv]) == 0
    report = json.loads((tmp_path / "out" / "query.json").read_text())
    assert shlex.split(report["command"]) == ["python", "-m", "bench", "query", *argv]  # the empty --encoders too
    (size,) = report["sizes"]
    kinds = {k["kind"]: k for k in size["kinds"]}
    assert set(kinds) == {"flat", "ivf", "hnsw", "ivfpq"}
    assert kinds["flat"]["recall"]["text"] == kinds["flat"]["recall"]["image"] == 1.0  # exact search against itself
    assert kinds["flat"]["faiss_one_query_by_threads"]["1"]["p50"] > 0  # the one-thread rule's evidence
    for name in ("ivf", "hnsw", "ivfpq"):
        kind = kinds[name]
        assert 0.0 < kind["recall"]["text"] <= 1.0 and kind["params"] and kind["guard"]["queries"] > 0
        for query in ("text", "image"):
            latency = kind["latency_ms"][query]["end_to_end"]
            assert latency["n"] == 10 and 0 < latency["p50"] <= latency["p99"]
    assert kinds["ivfpq"]["bytes_per_vector"] < kinds["ivf"]["bytes_per_vector"] / 2  # codes, not floats
    assert "| 12,000 | ivfpq |" in (tmp_path / "out" / "query.md").read_text()


def test_scale_benchmark_builds_within_the_budget_and_reports_recall_latency_and_size(tmp_path):
    assert bench(["scale", "--sizes", "12000", "--dim", "32", "--memory", "300KB", "--queries", "20",
                  "--latency-queries", "5", "--repeats", "1", "--chunk", "5000", "--cache", str(tmp_path / "cache"),
                  "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "scale.json").read_text())
    (size,) = report["sizes"]
    assert size["kind"] == "ivfpq" and size["build"]["memory_budget"] == 300_000
    assert size["file_bytes"] <= 300_000 and abs(size["estimate_error"]) < 0.02
    assert 0.5 < size["recall"]["text"] <= 1.0 and size["recall"]["image"] > 0.8
    assert size["latency_ms"]["text"]["rescored"]["p50"] > 0 and size["build"]["train_s"] >= 0
    assert "| 12,000 | 300.0 KB | ivfpq" in (tmp_path / "out" / "scale.md").read_text()


def test_quantizer_benchmark_compares_flat_and_hnsw_lists_at_each_nprobe(tmp_path):
    assert bench(["quantizer", "--size", "6000", "--nlist", "64", "--dim", "32", "--nprobe", "4,64", "--queries", "20",
                  "--latency-queries", "5", "--repeats", "1", "--accuracy-sample", "1000", "--chunk", "2000",
                  "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "quantizer.json").read_text())["result"]
    assert set(result["add_s"]) == {"hnsw", "exact-add", "flat"}
    assert 0.0 < result["hnsw_add_assignment_accuracy"] <= 1.0
    rows = {(r["variant"], r["nprobe"]): r for r in result["rows"]}
    assert len(rows) == 6 and all(r["p50_ms_text"] > 0 for r in rows.values())
    for variant in ("hnsw", "exact-add", "flat"):  # every list probed: exact search, whatever the quantizer
        assert rows[(variant, 64)]["recall_image"] == rows[(variant, 64)]["recall_text"] == 1.0
    assert rows[("flat", 4)]["recall_text"] < 1.0  # a few lists of 64 miss neighbours: the table can show a gap
    assert "| 64 | 1.000 / 1.000" in (tmp_path / "out" / "quantizer.md").read_text()


def test_distributed_benchmark_compares_ray_with_a_local_run_and_measures_the_merge(tmp_path):
    assert bench(["distributed", "--count", "6", "--models", "tiny-random", "--shard-size", "4", "--ray-cpus", "2",
                  "--merge-rows", "3000", "--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "distributed.json").read_text())
    (run,) = report["runs"]
    assert run["shards"] == 2 and run["ray_images_per_s"] > 0 and run["local_images_per_s"] > 0
    assert run["shard_bytes_per_image"] > 1000  # a thumbnail and a vector at least
    merge = report["synthetic_merge"]
    assert merge["rows"] == 3000 and merge["rows_per_s"] > 0 and merge["sqlite_bytes_per_row"] > 512
    assert "| tiny-random |" in (tmp_path / "out" / "distributed.md").read_text()


def test_products_benchmark_reports_grouped_search_per_condition_and_the_import_rate(tmp_path):
    argv = ["--products", "2000", "--queries", "12", "--import-rows", "300", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert bench(["products", *argv]) == 0
    report = json.loads((tmp_path / "out" / "products.json").read_text())
    check_command(report["command"].replace(str(tmp_path / "out"), "bench/results").replace(
        str(tmp_path / "cache"), "cache"))
    assert report["sizes"]["images"] == 6000 and report["index"]["kind"] == "flat"  # exact below 100k vectors
    cases = {row["case"]: row for row in report["cases"]}
    assert list(cases) == ["none", "selective", "broad", "range", "range+broad"]
    for row in cases.values():  # every path is exact here: grouped results must be the exact products
        assert row["n"] == 12 and 0 < row["p50"] <= row["p99"]
        assert 0.95 <= row["recall_at_10"] <= 1.0 and row["queries_scored"] == 12
    assert cases["none"]["admits_pct"] == 100 and cases["selective"]["admits_pct"] == 0.1
    assert 20 < cases["broad"]["admits_pct"] < 40 and cases["range+broad"]["admits_pct"] < cases["range"]["admits_pct"]
    imported = report["import"]
    assert imported["rows"] == imported["new"] == 300 and imported["rows_per_s"] > 0
    assert imported["images"] == imported["not_indexed"] == imported["problems"] == 900  # the pictures do not exist
    table = (tmp_path / "out" / "products.md").read_text()
    assert "| selective | `brand=bNNNN (a brand per query)` | 0.1 |" in table and "| range+broad |" in table
    assert "rows/s" in table
    assert bench(["products", *argv]) == 0  # again: from the cache, the same library and products
    again = json.loads((tmp_path / "out" / "products.json").read_text())
    assert again["sizes"]["library_fill_s"] == again["sizes"]["products_insert_s"] == 0
    assert again["index"]["loaded_from_file"]


def test_writer_benchmark_times_new_rows_with_and_without_thumbnails(tmp_path):
    assert bench(["writer", "--rows", "300", "--batch-sizes", "32,128", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "writer.json").read_text())
    check_command(report["command"].replace(str(tmp_path), "bench/results"))
    assert [(r["thumbnails"], r["batch_size"], r["rows"]) for r in report["runs"]] == [
        ("workers", 32, 300), ("workers", 128, 300), ("writer", 32, 300), ("writer", 128, 300)]
    assert all(r["rows_per_s"] > 0 for r in report["runs"]) and report["thumbnail_bytes"] > 1000
    assert "| workers | 128 | 300 |" in (tmp_path / "writer.md").read_text()


def written_names(command: str) -> set[str]:
    """The file stems the last command of a (checked) record may write into bench/results: api and captioning
    write WHICH-gpu on a GPU, which --device auto finds only when they run."""
    words = shlex.split(command.split("; then ")[-1])
    if words[3] == "scale":
        return {scale.result_name(scale.parse_args(words[4:]))}
    stem = BENCHES[words[3]].removeprefix("bench.")
    if words[3] in ("api", "captioning"):
        device = importlib.import_module(BENCHES[words[3]]).parse_args(words[4:]).device
        return {result_name(stem, "cpu"), result_name(stem, "cuda")} - (set() if device == "auto" else {
            result_name(stem, "cpu" if device.startswith("cuda") else "cuda")})
    return {stem}


@pytest.mark.parametrize("name", sorted(path.name for path in RESULTS.glob("*.json")))
def test_every_result_file_records_a_command_that_python_m_bench_accepts_and_that_writes_it(name):
    report = json.loads((RESULTS / name).read_text())
    assert "command" in report, f"{name} records no command: rerun its benchmark"
    check_command(report["command"])
    assert name.removesuffix(".json") in written_names(report["command"])


def test_every_benchmark_has_published_results():
    names = {path.stem for path in RESULTS.glob("*.json")}
    assert {module.removeprefix("bench.") for which, module in BENCHES.items() if which not in GPU_ONLY} <= names


@pytest.mark.parametrize("command", [
    "python -m bench query --sizes 10000,100000 --encoders '' --out bench/results",
    "python -m bench index-choice --sizes 100000,300000",
    "python -m bench peer --count 200 --precisions fp32 --rounds 2 --out bench/results",
    "python -m bench gpu-serve --stages search --sizes 1000000 --out bench/results",
    "python -m bench scale --sizes 1000000 --out bench/results; then python -m bench scale --sizes 10000000 "
    "--out ./bench/results/",
])
def test_a_command_the_benchmarks_write_passes_the_check(command):
    check_command(command)


@pytest.mark.parametrize(("command", "message"), [
    ("python -m bench scale --sizes 1000000 --out bench/results (19:51-19:56 UTC)",
     "unrecognized arguments: (19:51-19:56 UTC)"),
    ("python -m bench scale --out bench/results; then python -m bench scale --sizes 10000000 (21:02 UTC)",
     "unrecognized arguments: (21:02 UTC)"),
    (".venv/bin/python -m bench.query --out bench/results", "does not start with `python -m bench WHICH`"),
    ("python -m bench all --out bench/results", "unknown benchmark 'all'"),
    ("python -m bench query --nope 3 --out bench/results", "unrecognized arguments: --nope 3"),
    ("python -m bench quantizer --size many", "argument --size: invalid int value: 'many'"),
    ("python -m bench scale --memory 4 lots", "unrecognized arguments: lots"),
    ("python -m bench scale --memory 4XB", "'4XB' is not a size"),
    ("python -m bench query --help", "asks for --help"),
    ("python -m bench scale --opq --out /tmp/opq-results", "writes into /tmp/opq-results, not bench/results"),
    ("python -m bench query --out 'bench/results", "No closing quotation"),
])
def test_a_hand_edited_or_foreign_command_fails_the_check_saying_why(command, message):
    with pytest.raises(ValueError) as raised:
        check_command(command)
    assert message in str(raised.value)


def test_each_scale_variant_writes_its_own_file_beside_the_others():
    assert scale.result_name(scale.parse_args([])) == "scale"
    assert scale.result_name(scale.parse_args(["--opq"])) == "scale-opq"
    assert scale.result_name(scale.parse_args(["--index", "ivfpq", "--quantizer", "hnsw"])) == \
        "scale-ivfpq-hnsw-quantizer"
