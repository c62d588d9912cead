"""`vlsearch eval`: the metrics against numbers worked out by hand, the eval file's checks, and a run over a real
library (real SQLite, FAISS and encoder) whose scores must match the engine's own result lists."""

import json
import math
import re
from pathlib import Path

import pytest
import typer
from PIL import ImageOps
from typer.testing import CliRunner

from vlsearch.api.cli.evaluate import evaluate
from vlsearch.indexer import Indexer
from vlsearch.search import SearchEngine, SearchQuery
from vlsearch.search.eval_cases import EvalFileError, read_eval_file
from vlsearch.search.evaluation import (
    duplicate_pair_scores,
    evaluate_search,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    tag_scores,
)

SAMPLES = Path(__file__).resolve().parents[1] / "search" / "eval" / "samples.jsonl"
PHOTOS = ("chelsea", "coffee", "rocket", "horse", "astronaut", "china")


def test_the_metrics_of_a_ranking_worked_out_by_hand():
    relevant, ranked = {"a", "b"}, ["c", "a", "d", "b"]
    assert recall_at(ranked, relevant, 1) == 0.0
    assert recall_at(ranked, relevant, 2) == 0.5
    assert recall_at(ranked, relevant, 5) == 1.0
    assert reciprocal_rank(ranked, relevant) == 0.5
    # DCG = 1/log2(2+1) + 1/log2(4+1) = 0.63093 + 0.43068 = 1.06161 (hits at ranks 2 and 4);
    # IDCG = 1/log2(1+1) + 1/log2(2+1) = 1 + 0.63093 = 1.63093 (two hits at ranks 1 and 2); nDCG = 0.65092.
    assert ndcg_at(ranked, relevant) == pytest.approx(0.65092, abs=1e-5)


def test_the_edges_of_the_metrics():
    assert recall_at(["a", "b"], {"a", "b", "c"}, 1) == pytest.approx(1 / 3)  # more relevant than k: under 1
    assert reciprocal_rank(["x", "y", "a"], {"a"}, depth=2) == 0.0  # beyond the depth looked at
    assert reciprocal_rank([], {"a"}) == 0.0
    assert ndcg_at(["a", "b", "x"], {"a", "b"}) == 1.0
    assert ndcg_at(["x"] * 10 + ["a"], {"a"}) == 0.0  # rank 11 is past nDCG@10
    assert ndcg_at(["a", "a"], {"a"}) == 1.0  # a path listed twice gains once
    # Three relevant, one found first: the ideal list of three hits is the denominator. 1 / (1 + 1/log2 3 + 1/2).
    assert ndcg_at(["a"], {"a", "b", "c"}) == pytest.approx(1 / (1 + 1 / math.log2(3) + 0.5))
    with pytest.raises(ValueError, match="at least one relevant"):
        recall_at(["a"], set(), 1)


def test_tag_scores_are_micro_averaged_over_the_labelled_photos():
    truth = {"x": {"cat", "animal"}, "y": {"coffee"}}
    predicted = {"x": {"cat", "dog"}, "y": set(), "z": {"tree"}}  # z is not labelled: its tag is not judged
    scores = tag_scores(predicted, truth)
    assert (scores.predicted, scores.expected, scores.correct) == (2, 3, 1)
    assert (scores.precision, scores.recall) == (0.5, pytest.approx(1 / 3))
    assert tag_scores({}, truth).precision == 0.0


def test_duplicate_scores_count_pairs_put_in_one_group():
    truth = [{"a", "b", "c"}]  # pairs ab, ac, bc
    scores = duplicate_pair_scores([{"a", "b"}, {"c", "d"}], truth)  # ab is right, cd is not
    assert (scores.predicted, scores.expected, scores.correct) == (2, 3, 1)
    assert (scores.precision, scores.recall) == (0.5, pytest.approx(1 / 3))
    assert duplicate_pair_scores([{"c", "b", "a"}], truth).as_dict()["precision"] == 1.0


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_an_eval_file_is_read_with_its_paths_resolved(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "x.jpg"
    cases = tmp_path / "cases"
    cases.mkdir()
    file = write_lines(
        tmp_path / "cases" / "eval.jsonl",
        '{"text": "a cat", "relevant": ["photos/cat.jpg", "' + str(elsewhere) + '"]}',
        "",
        '{"image": "queries/../q.jpg", "relevant": ["photos/cat.jpg"]}',
        '{"path": "photos/cat.jpg", "tags": ["cat", "animal"]}',
        '{"duplicates": [["a.jpg", "b.jpg"], ["c.jpg", "d.jpg", "e.jpg"]]}',
    )
    found = read_eval_file(file)
    text, image = found.search
    assert (text.line, text.text, text.relevant) == (1, "a cat", {str(cases / "photos/cat.jpg"), str(elsewhere)})
    assert (image.line, image.image) == (3, cases / "q.jpg")
    assert found.tag_truth() == {str(cases / "photos/cat.jpg"): {"cat", "animal"}}
    assert duplicate_pair_scores(found.duplicate_truth(), found.duplicate_truth()).recall == 1.0
    assert len(found.duplicate_truth()) == 2
    moved = read_eval_file(file, photos=tmp_path / "photos")  # --photos: relative paths resolve against it
    assert moved.search[0].relevant == {str(tmp_path / "photos/photos/cat.jpg"), str(elsewhere)}


@pytest.mark.parametrize(("line", "words"), [
    ('{"text": "a cat", "relevant": ["a.jpg"]', "not JSON"),
    ('["a.jpg"]', "a JSON object, not list"),
    ('{"text": "a cat", "relevant": ["a.jpg"], "k": 5}', 'unknown key "k"'),
    ('{"text": "a cat", "image": "q.jpg", "relevant": ["a.jpg"]}', '"text" or "image"'),
    ('{"relevant": ["a.jpg"]}', '"text" or "image"'),
    ('{"text": "a cat"}', 'exactly one of "relevant"'),
    ('{"text": "a cat", "relevant": [], "tags": []}', 'exactly one of "relevant"'),
    ('{"text": "a cat", "relevant": []}', '"relevant" must be a non-empty list'),
    ('{"text": "a cat", "relevant": "a.jpg"}', '"relevant" must be a non-empty list'),
    ('{"text": "a cat", "relevant": [3]}', "must be a non-empty string, not 3"),
    ('{"text": " ", "relevant": ["a.jpg"]}', '"text" must be a non-empty string'),
    ('{"tags": ["cat"]}', '"path" must be a non-empty string, not null'),
    ('{"path": "a.jpg", "tags": "cat"}', '"tags" must be a list'),
    ('{"duplicates": [["a.jpg", "a.jpg"]]}', "at least two different files"),
    ('{"duplicates": []}', "non-empty list of groups"),
    ('{"path": "ok.jpg", "tags": []}', "already in tags on line 1"),
    ('{"duplicates": [["b.jpg", "ok.jpg"]]}', "already in a group on line 1"),
])
def test_a_bad_line_is_named_with_what_is_wrong(tmp_path, line, words):
    first = '{"path": "ok.jpg", "tags": ["x"]}' if "tags" in words else '{"duplicates": [["ok.jpg", "c.jpg"]]}'
    file = write_lines(tmp_path / "eval.jsonl", first, line)
    with pytest.raises(EvalFileError, match=f"line 2: .*{re.escape(words)}") as caught:
        read_eval_file(file)
    assert caught.value.line == 2 and isinstance(caught.value, ValueError)


def test_an_empty_or_missing_file_is_an_error(tmp_path):
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(EvalFileError, match="holds no cases"):
            read_eval_file(tmp_path / name)
    with pytest.raises(EvalFileError, match="cannot read it"):
        read_eval_file(tmp_path / "nowhere.jsonl")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoder):
    """Six sample photos indexed with the tiny random model (file names are the keyword index's text), an eval
    file over them with text cases, an image case (a mirrored crop of the cat) and a photo that is not there."""
    from vlsearch.images.samples import sample_photos
    from vlsearch.library import Library

    root = tmp_path_factory.mktemp("eval")
    photos = sample_photos()
    (root / "photos").mkdir()
    for name in PHOTOS:
        photos[name].convert("RGB").save(root / "photos" / f"{name}.jpg", quality=90)
    cat = photos["chelsea"].convert("RGB")
    w, h = cat.size
    ImageOps.mirror(cat.crop((w // 10, h // 10, w - w // 10, h - h // 10))).save(root / "cat-query.jpg")
    lib = Library.open(root / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([root / "photos"])
    file = write_lines(
        root / "eval.jsonl",
        '{"text": "coffee", "relevant": ["photos/coffee.jpg"]}',
        '{"text": "a horse or a rocket", "relevant": ["photos/horse.jpg", "photos/rocket.jpg"]}',
        '{"text": "a chinese temple", "relevant": ["photos/china.jpg", "photos/pagoda.jpg"]}',
        '{"image": "cat-query.jpg", "relevant": ["photos/chelsea.jpg"]}',
    )
    yield SearchEngine(lib, tiny_encoder), file, root
    lib.close()


def by_hand(ranked: list[str], relevant: set[str], k: int) -> list[float]:
    """The five scores of one ranking, written out without the module's functions."""
    recalls = [sum(p in relevant for p in ranked[:cut]) / len(relevant) for cut in (1, 5, 10)]
    first = next((rank for rank, p in enumerate(ranked[:k], 1) if p in relevant), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, p in enumerate(ranked[:10], 1) if p in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    return [*recalls, 1 / first if first else 0.0, dcg / ideal]


def test_the_report_scores_what_the_engine_returns(indexed):
    engine, file, root = indexed
    cases = read_eval_file(file).search
    report = evaluate_search(engine, cases, k=3)
    assert [m.mode for m in report.modes] == ["vector", "keyword", "hybrid"]
    assert report.unindexed == (str(root / "photos" / "pagoda.jpg"),)  # labelled, never indexed: a miss everywhere
    image = next(c for c in cases if c.image is not None)
    for mode in report.modes:
        scored = [c for c in cases if mode.mode != "keyword" or c.text is not None]
        assert (len(mode.cases), mode.skipped) == (len(scored), len(cases) - len(scored))
        expected = []
        for case in scored:
            query_image = None
            if case is image:
                from vlsearch.images import decode_file

                query_image = decode_file(case.image)
            hits = engine.search(SearchQuery(text=case.text, image=query_image, k=10, mode=mode.mode))
            expected.append(by_hand([h.path for h in hits], set(case.relevant), k=3))
        assert [list(c.scores.as_tuple()) for c in mode.cases] == [pytest.approx(e) for e in expected]
        means = [sum(column) / len(expected) for column in zip(*expected, strict=True)]
        assert list(mode.mean.as_tuple()) == pytest.approx(means)
    keyword = report.modes[1]
    assert keyword.cases[0].scores.recall_1 == 1.0  # "coffee" is in coffee.jpg's file name
    vector = report.modes[0]
    assert vector.cases[-1].query == str(root / "cat-query.jpg")


def test_a_rerank_needs_a_matcher_and_scores_text_cases_only(indexed):
    from vlsearch.captioner import ModelMissing, load_image_text_model

    engine, file, _ = indexed
    cases = read_eval_file(file).search
    with pytest.raises(ModelMissing):
        evaluate_search(engine, cases, modes=["vector"], rerank=5)
    with pytest.raises(ValueError, match="modes must be some of"):
        evaluate_search(engine, cases, modes=["vektor"])
    reranking = SearchEngine(engine.library, engine.encoder,
                             matcher=load_image_text_model("tiny-random", "match", device="cpu"))
    report = evaluate_search(reranking, cases, modes=["vector", "vector"], rerank=5)
    assert len(report.modes) == 1 and report.modes[0].skipped == 1 and report.rerank == 5


def eval_app() -> typer.Typer:
    """The command as `vlsearch eval` registers it: a subcommand of an app with a callback."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("eval")(evaluate)
    return app


def test_the_command_prints_a_table_or_json(indexed, tmp_path):
    engine, file, root = indexed
    runner = CliRunner()
    base = ["eval", str(file), "--library", str(engine.library.root), "--model-dir", str(tmp_path / "models")]
    table = runner.invoke(eval_app(), [*base, "--mode", "vector", "--mode", "keyword"])
    assert table.exit_code == 0, table.output
    assert "nDCG@10" in table.output and "MRR@10" in table.output and "hybrid" not in table.output
    assert "4 of 4" in table.output and "3 of 4" in table.output  # keyword mode scores the text cases
    assert "1 relevant paths are not in the library" in table.output and "pagoda.jpg" in table.output
    as_json = runner.invoke(eval_app(), [*base, "--json", "--k", "5"])
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout)
    direct = evaluate_search(engine, read_eval_file(file).search, k=5).as_dict()
    assert printed == direct


def test_the_command_says_what_is_wrong(indexed, tmp_path):
    engine, file, _ = indexed
    runner = CliRunner()
    lib = ["--library", str(engine.library.root), "--model-dir", str(tmp_path / "models")]
    bad = write_lines(tmp_path / "bad.jsonl", '{"text": "a cat", "relevant": ["a.jpg"]}', '{"text": "a dog"}')
    for args, words in (([str(bad)], "line 2"), ([str(file), "--mode", "vektor"], "--mode vektor"),
                        ([str(tmp_path / "nowhere.jsonl")], "cannot read it")):
        result = runner.invoke(eval_app(), ["eval", *args, *lib])
        assert result.exit_code == 2 and words in result.output, result.output
    groups_only = write_lines(tmp_path / "groups.jsonl", '{"duplicates": [["a.jpg", "b.jpg"]]}')
    result = runner.invoke(eval_app(), ["eval", str(groups_only), *lib, "--json"])
    assert result.exit_code == 0, result.output  # photos the library lacks: no pair found, the one expected missed
    assert json.loads(result.stdout) == {"duplicates": {"precision": 0.0, "recall": 0.0, "predicted": 0,
                                                        "expected": 1, "correct": 0}}


def test_the_shipped_eval_set_labels_every_sample_photo_it_names():
    """Its paths are the names `python -m vlsearch.images.samples DIR` writes."""
    from vlsearch.images.samples import SKIMAGE_PHOTOS

    cases = read_eval_file(SAMPLES, photos=Path("/photos")).search
    names = {Path(p).stem for case in cases for p in case.relevant}
    assert len(cases) >= 15 and all(case.text for case in cases)
    assert names <= set(SKIMAGE_PHOTOS) | {"china", "flower"}


def test_the_shipped_eval_set_with_the_offline_models_real_weights(tmp_path):
    """The `offline` preset's real weights on the sample photos: a floor under what it measured (MRR 0.707)."""
    from vlsearch.encoders import load_encoder
    from vlsearch.images.samples import write_samples
    from vlsearch.library import Library

    write_samples(tmp_path / "photos")
    encoder = load_encoder("offline", model_dir=tmp_path / "models", device="cpu")
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, encoder, workers=0).run([tmp_path / "photos"])
    cases = read_eval_file(SAMPLES, photos=tmp_path / "photos").search
    report = evaluate_search(SearchEngine(lib, encoder), cases, modes=["vector"])
    lib.close()
    assert report.unindexed == ()
    vector = report.modes[0].mean
    assert vector.reciprocal_rank > 0.6 and vector.recall_10 > 0.85
