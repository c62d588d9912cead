"""Exact search on a GPU without faiss-gpu (library/vectors/torch_exact.py), tested on CPU tensors: the same torch
code runs on "cpu" as on "cuda". One test runs on a real GPU where torch sees one, and is skipped elsewhere."""

from __future__ import annotations

from types import SimpleNamespace

import faiss
import numpy as np
import pytest
import torch

import vlsearch.library.vectors.torch_exact as torch_exact
from bench.index_choice import make_mixture
from tests.test_vectors import synthetic_library
from vlsearch.library import VectorIndex
from vlsearch.library.vectors import text_like_probes
from vlsearch.library.vectors.gpu import GPU_MAX_K
from vlsearch.library.vectors.torch_exact import TorchExactCopy, exact_copy_device

DIM = 32
FAISS_CPU = SimpleNamespace(get_num_gpus=lambda: 0)  # a FAISS build without GPU calls: the torch copy's case


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors as SQLite stores them: float16 values, image-like queries), clustered like CLIP vectors."""
    vectors, queries = make_mixture(20_000, 300, DIM, seed=2, n_clusters=60, noise=0.7, iso_noise=0.3, rank=16,
                                    mean_scale=1.0)
    return np.arange(5, 20_005, dtype=np.int64), vectors.astype(np.float16).astype(np.float32), queries


def flat_truth(ids, vectors, queries, k=10):
    scores, rows = faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)
    return scores, ids[rows]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("chunk_rows", [torch_exact.CHUNK_ROWS, 3_000])  # one chunk; 7 chunks merged
def test_the_torch_copy_finds_what_the_flat_index_finds(data, chunk_rows):
    """recall@10 = 1.000 against faiss-cpu's exact search, for image-like and text-like queries (whose top 10 lie
    within a few hundredths of each other: the float16 scores alone would swap some), with the same scores."""
    ids, vectors, queries = data
    flat = VectorIndex.build(ids, vectors, DIM, "flat")
    copy = TorchExactCopy("cpu", chunk_rows=chunk_rows)
    assert copy.clone(flat.index, "flat")
    text = text_like_probes(vectors[:300], np.random.default_rng(0))
    for asked in (queries, text):
        truth_scores, truth_ids = flat_truth(ids, vectors, asked)
        scores, found = copy.search(asked, 10)
        assert found.dtype == np.int64 and scores.dtype == np.float32 and found.shape == (len(asked), 10)
        assert recall_at(found, truth_ids) == 1.0
        np.testing.assert_allclose(scores, truth_scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(found[:, 0], truth_ids[:, 0])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_a_copy_of_an_approximate_index_searches_every_vector_exactly(data, kind):
    """IVF-Flat and HNSW-Flat hold every vector exactly, so their copy is exact search over all of them: better
    recall than the index it came from, with nothing left out."""
    ids, vectors, queries = data
    index = VectorIndex.build(ids, vectors, DIM, kind, target_recall=None)
    copy = TorchExactCopy("cpu")
    assert copy.clone(index.index, kind)
    assert sorted(copy.ids.tolist()) == ids.tolist()
    _, truth = flat_truth(ids, vectors, queries)
    assert recall_at(copy.search(queries, 10)[1], truth) == 1.0


def test_a_vector_index_searches_its_torch_copy_while_the_cpu_index_is_updated(data):
    ids, vectors, queries = data
    index = VectorIndex.build(ids[:15_000], vectors[:15_000], DIM, "ivf")
    assert index.use_gpu(True, FAISS_CPU, torch_device="cpu") and index.gpu_search == "torch exact"
    first = index._gpu.held
    _, truth = flat_truth(ids[:15_000], vectors[:15_000], queries)
    assert recall_at(index.search(queries, 10)[1], truth) == 1.0  # exact, where the IVF index alone is not

    index.tune({"nprobe": 2})  # settings the copy does not use: no new copy
    assert index._gpu.held is first
    index.add(ids[15_000:], vectors[15_000:])
    index.remove(ids[:100])
    assert index._gpu.held is not first and index._gpu.matrix.shape == (len(ids) - 100, DIM)
    _, truth = flat_truth(ids[100:], vectors[100:], queries)
    assert recall_at(index.search(queries, 10)[1], truth) == 1.0
    _, deep = index.search(vectors[:1], GPU_MAX_K + 10)  # any depth: faiss-gpu's limit is not the copy's
    assert len(set(deep[0].tolist())) == GPU_MAX_K + 10 and not set(deep[0].tolist()) & set(ids[:100].tolist())

    assert not index.use_gpu(False, FAISS_CPU, torch_device="cpu") and index.gpu_search is None
    store = dict(zip(ids.tolist(), vectors, strict=True))

    def rescore_from(wanted):
        have = [i for i in wanted.tolist() if i in store]
        return np.asarray(have, dtype=np.int64), np.asarray([store[i] for i in have], dtype=np.float32)

    pq = VectorIndex.build(ids, vectors, DIM, "ivfpq", rescore_from=rescore_from, target_recall=None)
    assert not pq.use_gpu(True, FAISS_CPU, torch_device="cpu")  # PQ codes are not the vectors


def test_a_library_asked_for_the_gpu_searches_a_torch_copy(tmp_path, data, monkeypatch):
    """With faiss-cpu and room on a GPU (stood in for by the CPU), the server's library searches the exact copy;
    a library pinned to the CPU does not."""
    ids, vectors, queries = data
    monkeypatch.setattr(torch_exact, "exact_copy_device", lambda kind, count, dim, device=None: "cpu")
    for allowed in (False, True):
        lib = synthetic_library(tmp_path / f"lib-{allowed}", ids[:500], vectors[:500], faiss_gpu=allowed)
        index = lib.vector_index("m")
        assert index.gpu_search == ("torch exact" if allowed else None)
        _, truth = flat_truth(ids[:500], vectors[:500], queries)
        assert recall_at(index.search(queries, 10)[1], truth) == 1.0


def test_the_copy_goes_to_a_gpu_only_where_torch_sees_one_with_room(monkeypatch):
    assert exact_copy_device("ivfpq", 1000, 512, "cpu") is None
    assert exact_copy_device("flat", 0, 512, "cpu") is None
    assert exact_copy_device("hnsw", 1000, 512, "cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert exact_copy_device("flat", 1000, 512) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    needs = 1_000_000 * (2 * 512 + 8)  # 1M vectors of 512 dimensions: ~1 GB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=0: (int(needs / 0.41), 80 << 30))  # 41 % of free
    assert exact_copy_device("flat", 1_000_000, 512) is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=0: (int(needs / 0.39), 80 << 30))  # 39 %
    assert exact_copy_device("ivf", 1_000_000, 512) == "cuda:0"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU that torch sees (the CPU path is tested "
                    "above on CPU tensors)")
def test_on_a_real_gpu_the_copy_finds_what_the_flat_index_finds(data):
    ids, vectors, queries = data
    flat = VectorIndex.build(ids, vectors, DIM, "flat")
    assert flat.use_gpu(True, FAISS_CPU) and flat._gpu.device.type == "cuda"
    text = text_like_probes(vectors[:300], np.random.default_rng(0))
    for asked in (queries, text):
        truth_scores, truth_ids = flat_truth(ids, vectors, asked)
        scores, found = flat.search(asked, 10)
        assert recall_at(found, truth_ids) == 1.0
        np.testing.assert_allclose(scores, truth_scores, rtol=1e-4, atol=1e-5)
