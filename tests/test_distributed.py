"""`vlsearch index --ray`: the real CLI against a local Ray instance (2 CPUs) with the tiny models.

What it must give is what `vlsearch index` gives on one machine: the same rows, vectors, captions and OCR text, the
same errors; plus shards that survive a stopped run, lists of files and URLs, and shards merged by `vlsearch import`.
"""

import csv
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.photos import broken_corpus, write_photos
from tests.served import serving
from vlsearch.api.cli import app
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.embeddings import decode_vectors
from vlsearch.library.schema import Caption, OcrText

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlsearch[distributed]')")

runner = CliRunner()
# On the CPU, local and Ray runs alike: fp16 on a GPU would change the vectors and captions compared between them.
MODELS = ("--model", "tiny-random", "--caption-model", "tiny-random", "--beams", "1", "--max-length", "8",
          "--workers", "0", "--device", "cpu")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (starting one takes seconds); `--ray auto` joins it. No GPUs, also on
    a machine that has one: the runs here are CPU runs."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VLSEARCH_MODEL_DIR", str(tmp_path / "models"))
    import vlsearch.captioner.registry
    import vlsearch.encoders.registry

    for module in (vlsearch.captioner.registry, vlsearch.encoders.registry):  # `auto` must never download in a test
        monkeypatch.setattr(module, "hub_reachable", lambda timeout=3.0: False)
    return tmp_path


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def contents(root):
    """path -> (status, error, sha256, vector, caption, OCR text, thumbnail present) of a library."""
    lib = Library.open(root, create=False)
    try:
        with lib.session() as s:
            rows = {r.path: r for r in s.scalars(select(ImageRecord))}
            vectors = {i: v for i, v in s.execute(select(Embedding.image_id, Embedding.vector))}
            captions = dict(s.execute(select(Caption.image_id, Caption.text)).all())
            texts = dict(s.execute(select(OcrText.image_id, OcrText.text)).all())
            return {
                path: (r.status, r.error, r.sha256,
                       decode_vectors([vectors[r.id]], 32)[0] if r.id in vectors else None,
                       captions.get(r.id), texts.get(r.id),
                       bool(r.thumbnail) and (root / r.thumbnail).exists(),
                       (r.width, r.height, r.taken_at, r.camera_model))
                for path, r in rows.items()
            }
    finally:
        lib.close()


def assert_same_library(ray_lib, local_lib):
    got, want = contents(ray_lib), contents(local_lib)
    assert got.keys() == want.keys()
    for path, (status, error, sha, vector, caption, text, thumb, meta) in want.items():
        g = got[path]
        assert (g[0], g[1], g[2]) == (status, error, sha), path
        assert g[7] == meta, path
        if status == "ok":
            assert float(np.dot(g[3], vector)) > 0.999, path  # same decode, same model: equal up to float16
            assert (g[4], g[5], g[6]) == (caption, text, thumb), path
            assert g[6], path
        else:
            assert g[3] is None and vector is None


def test_ray_index_gives_what_a_local_index_gives(cluster, env):
    photos = env / "photos"
    write_photos(photos, 9)
    broken_corpus(photos / "bad")
    code, out = cli("index", photos, "--library", env / "local", *MODELS)
    assert code == 0, out

    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--ray", "auto", "--shard-size", "4",
                    "--batch-size", "3")
    assert code == 0, out
    assert "9 embedded" in out and "9 captioned" in out and "6 errors" in out and "4 shards" in out, out
    assert "1 node(s), 2 CPUs" in out and "empty file" in out
    assert_same_library(env / "lib", env / "local")
    assert not list((env / "lib" / "ray-shards").glob("*")), "merged shards are removed"

    code, out = cli("search", "--image", photos / "photo_0004.jpg", "--k", "1", "--json", "--library", env / "lib")
    assert code == 0 and json.loads(out)[0]["path"] == str(photos / "photo_0004.jpg")

    # Incremental: nothing changed, nothing sent to the cluster (broken files are retried, as locally).
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--ray", "auto")
    assert code == 0 and "0 embedded" in out and "9 unchanged" in out, out

    # A deleted photo is forgotten, a changed one embedded again.
    (photos / "photo_0000.jpg").unlink()
    write_photos(env / "other", 10)
    os.replace(env / "other" / "photo_0009.jpg", photos / "photo_0001.jpg")
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--ray", "auto", "--no-ocr")
    assert code == 0 and "1 embedded" in out and "1 removed" in out, out
    lib = contents(env / "lib")
    assert str(photos / "photo_0000.jpg") not in lib
    changed = lib[str(photos / "photo_0001.jpg")]
    assert changed[2] != contents(env / "local")[str(photos / "photo_0001.jpg")][2]  # the new bytes' hash
    code, out = cli("search", "--image", photos / "photo_0001.jpg", "--k", "1", "--json", "--library", env / "lib")
    assert code == 0 and json.loads(out)[0]["path"] == str(photos / "photo_0001.jpg")


def test_a_stopped_run_keeps_its_merged_shards_and_resumes(cluster, env, monkeypatch):
    import vlsearch.indexer.distributed as distributed

    photos = env / "photos"
    write_photos(photos, 12)
    merged = []
    real_merge = distributed.RayRunner.merge_shard

    def merge_then_stop(self, library, model, shard, changes):
        result = real_merge(self, library, model, shard, changes)
        merged.append(shard)
        if len(merged) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a dead driver) after two shards were merged
        return result

    monkeypatch.setattr(distributed.RayRunner, "merge_shard", merge_then_stop)
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--no-ocr", "--ray", "auto",
                    "--shard-size", "3", "--batch-size", "3")
    assert code == 130 and "merged shards are kept" in out, out
    assert len(contents(env / "lib")) == 6
    assert not list((env / "lib" / "ray-shards").glob("*.tmp")), "unfinished shards are dropped"

    monkeypatch.setattr(distributed.RayRunner, "merge_shard", real_merge)
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--no-ocr", "--ray", "auto",
                    "--shard-size", "3")
    assert code == 0 and "6 embedded" in out and "6 unchanged" in out, out
    lib = contents(env / "lib")
    assert len(lib) == 12 and all(v[0] == "ok" and v[3] is not None and v[4] for v in lib.values())
    opened = Library.open(env / "lib", create=False)
    try:
        assert opened.vector_index("tiny-random").ntotal == 12
    finally:
        opened.close()


def test_a_shard_left_unmerged_is_merged_first(cluster, env):
    photos = env / "photos"
    write_photos(photos, 5)
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--no-captions", "--no-ocr", "--ray", "auto",
                    "--shards", env / "lib" / "ray-shards", "--shard-size", "5")
    assert code == 0 and "1 shard files written" in out, out
    assert contents(env / "lib") == {}
    # The driver died between finishing a shard and merging it: the next run merges it and sends nothing.
    code, out = cli("index", photos, "--library", env / "lib", *MODELS, "--no-captions", "--no-ocr", "--ray", "auto")
    assert code == 0 and "merged 1 shards left by an earlier run" in out and "5 unchanged" in out, out
    assert len(contents(env / "lib")) == 5


@pytest.fixture
def http_photos(env):
    """A real HTTP server over a folder of photos on localhost."""
    folder = env / "served"
    write_photos(folder, 4)
    with serving(folder) as base:
        yield folder, base


def test_lists_of_urls_and_files_into_shards_then_import(cluster, env, http_photos):
    folder, base = http_photos
    write_photos(env / "local", 2)
    urls = [f"{base}/photo_000{i}.jpg" for i in range(4)]
    with open(env / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "label"])
        for url in [*urls, f"{base}/missing.jpg"]:
            writer.writerow([url, "x"])
    pq.write_table(pa.table({"path": [str(env / "local" / "photo_0000.jpg"), str(env / "local" / "photo_0001.jpg"),
                                      str(env / "local" / "gone.jpg")]}), env / "list.parquet")

    shards = env / "shards"
    code, out = cli("index", "--list", env / "list.csv", "--list", env / "list.parquet", "--library", env / "lib",
                    *MODELS, "--no-ocr", "--ray", "auto", "--shards", shards, "--shard-size", "4")
    assert code == 0, out
    assert "8 files" in out and "6 embedded" in out and "2 errors" in out and "HTTP 404" in out, out
    assert "vlsearch import" in out and len(list(shards.glob("shard-*.parquet"))) == 2
    assert contents(env / "lib") == {}, "with --shards nothing is merged"

    # A re-run skips what the shards already hold, and tries the failed URL again.
    code, out = cli("index", "--list", env / "list.csv", "--library", env / "lib", *MODELS, "--no-ocr",
                    "--ray", "auto", "--shards", shards)
    assert code == 0 and "0 embedded" in out and "4 unchanged" in out and "1 errors" in out, out

    code, out = cli("import", shards, "--library", env / "lib")
    assert code == 0, out
    lib = contents(env / "lib")
    assert {p for p, v in lib.items() if v[0] == "ok"} == {*urls, str(env / "local" / "photo_0000.jpg"),
                                                           str(env / "local" / "photo_0001.jpg")}
    assert "HTTP 404" in lib[f"{base}/missing.jpg"][1]
    assert "cannot read file" in lib[str(env / "local" / "gone.jpg")][1]
    assert all(v[6] and v[4] for v in lib.values() if v[0] == "ok"), "thumbnails and captions came with the shards"

    code, out = cli("search", "--image", folder / "photo_0002.jpg", "--k", "1", "--json", "--library", env / "lib")
    assert code == 0 and json.loads(out)[0]["path"] == urls[2]

    # The API sends a client to an indexed URL's image, and answers for what it holds itself.
    import httpx

    from tests.api_helpers import make_app, serving
    from vlsearch.encoders import load_encoder

    lib = Library.open(env / "lib", create=False)
    try:
        with serving(make_app(lib, load_encoder("tiny-random", device="cpu"))) as base_url:
            hit = httpx.get(f"{base_url}/api/v1/search", params={"q": "photo", "k": 10}).json()
            by_path = {h["path"]: h["id"] for h in hit["hits"]}
            answer = httpx.get(f"{base_url}/api/v1/images/{by_path[urls[1]]}/file")
            assert answer.status_code == 307 and answer.headers["location"] == urls[1]
            answer = httpx.get(f"{base_url}/api/v1/images/{by_path[urls[1]]}/file", follow_redirects=True)
            assert answer.content == (folder / "photo_0001.jpg").read_bytes()
            thumb = httpx.get(f"{base_url}/api/v1/images/{by_path[urls[1]]}/thumbnail")
            assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    finally:
        lib.close()


def test_clear_errors(env):
    code, out = cli("index", "--library", env / "lib", "--model", "tiny-random")
    assert code == 2 and "name the folders or files" in out
    (env / "l.csv").write_text("path\n")
    code, out = cli("index", "--list", env / "l.csv", "--library", env / "lib", "--model", "tiny-random")
    assert code == 2 and "--list needs --ray" in out


def test_a_model_that_cannot_load_on_the_workers_is_a_clear_error(cluster, env):
    from vlsearch.encoders import load_encoder
    from vlsearch.indexer import Indexer
    from vlsearch.indexer.distributed import DistributedError, ModelSpecs, RayOptions, RayRunner

    write_photos(env / "photos", 2)
    lib = Library.open(env / "lib")
    try:
        specs = ModelSpecs(encoder="no-such-model", weights=None, model_dir=None, device="cpu")
        with pytest.raises(DistributedError, match="the Ray job failed: .*unknown model 'no-such-model'.*resume"):
            Indexer(lib, load_encoder("tiny-random", device="cpu"), runner=RayRunner(specs, RayOptions())).run(
                [env / "photos"])
        assert not list((env / "lib" / "ray-shards").glob("*"))
    finally:
        lib.close()
