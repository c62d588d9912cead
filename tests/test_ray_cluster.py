"""`vlsearch index --ray ADDRESS` as on a real cluster: the CLI in a process of its own joins, by its address, a Ray
cluster of two nodes (ray.cluster_utils.Cluster: a head and a worker raylet, each with its own object store and
worker processes), so rows cross between nodes as they would between machines.

tests/test_distributed.py covers what a run does (against an in-process instance); this covers joining a cluster
that something else started, which that cannot.
"""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from tests.photos import write_photos
from vlsearch.library import Embedding, ImageRecord, Library
from vlsearch.library.schema import Caption

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlsearch[distributed]')")
from ray.cluster_utils import Cluster  # noqa: E402  (after the skip)

# The nodes have no GPUs (below); Ray no longer hides a machine's GPU from actors given none, so say so here too.
MODELS = ("--model", "tiny-random", "--caption-model", "tiny-random", "--beams", "1", "--max-length", "8",
          "--no-ocr", "--workers", "0", "--device", "cpu")


@pytest.fixture(scope="module")
def two_nodes():
    # GPUs pinned to none, so the resource line below reads the same on a machine that has one.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=0)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def vlsearch(*args, env, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlsearch.api.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_index_joins_a_two_node_cluster_by_address_and_fills_the_library(two_nodes, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 10)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    env = {**os.environ, "VLSEARCH_MODEL_DIR": str(tmp_path / "models"), "HF_HUB_OFFLINE": "1",
           "RAY_ADDRESS": ""}
    run = vlsearch("index", photos, "--library", tmp_path / "lib", *MODELS, "--ray", two_nodes.address,
                   "--shard-size", "3", env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "2 node(s), 4 CPUs, 0 GPUs" in out
    assert "broken.jpg" in out  # the failure is reported, the rest indexed

    lib = Library.open(tmp_path / "lib", create=False)
    try:
        with lib.session() as s:
            statuses = dict(s.execute(select(ImageRecord.status, func.count()).group_by(ImageRecord.status)).all())
            assert statuses == {"ok": 10, "error": 1}
            assert s.scalar(select(func.count()).select_from(Embedding)) == 10
            assert s.scalar(select(func.count()).select_from(Caption)) == 10
        assert lib.vector_index("tiny-random").ntotal == 10
    finally:
        lib.close()
    assert not list((tmp_path / "lib" / "ray-shards").glob("*")), "merged shards are removed"

    run = vlsearch("search", "a photo", "--library", tmp_path / "lib", "--model", "tiny-random", "-k", "3",
                   "--json", env=env)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert len(found) == 3 and all(hit["path"].startswith(str(photos)) for hit in found), found

    # a wrong address is refused at once (ray.init alone retries for many minutes), saying what to do
    for address, why in (("127.0.0.1:1", "nothing answers at 127.0.0.1:1"), ("headnode", "not an address")):
        run = vlsearch("index", photos, "--library", tmp_path / "lib", *MODELS, "--ray", address, env=env,
                       timeout=60)
        out = " ".join((run.stdout + run.stderr).split())
        assert run.returncode == 2 and f"cannot join the Ray cluster at {address}: {why}" in out, out
        assert "ray start --head" in out
