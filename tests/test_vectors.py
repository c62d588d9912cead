"""FAISS index kinds beyond exact search: IVF-PQ with exact rescoring, the recall guard, and GPU placement."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
from sqlalchemy import insert

import vlsearch.library.vectors.files
import vlsearch.library.vectors.gpu
import vlsearch.library.vectors.guard
from bench.index_choice import make_mixture
from vlsearch.library import Library, VectorIndex
from vlsearch.library.embeddings import encode_vector
from vlsearch.library.schema import Embedding, ImageRecord
from vlsearch.library.vectors import PQ_MIN_VECTORS, IndexMeta, gpu_eligible, meta_path, text_like_probes
from vlsearch.library.vectors.gpu import GPU_MAX_K

DIM = 32


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, image-like queries not in the set): clustered, anisotropic, like CLIP image vectors."""
    vectors, queries = make_mixture(12_000, 200, DIM, seed=1, n_clusters=60, noise=0.7, iso_noise=0.3, rank=16,
                                    mean_scale=1.0)
    return np.arange(1000, 13_000, dtype=np.int64), vectors, queries


def lookup_of(ids: np.ndarray, vectors: np.ndarray) -> dict[int, np.ndarray]:
    return dict(zip(ids.tolist(), vectors, strict=True))


def from_dict(store: dict[int, np.ndarray]):
    """A rescore_from over a dict, as the library's reads from SQLite: ids missing from it are left out."""

    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        have = [i for i in ids.tolist() if i in store]
        return np.asarray(have, dtype=np.int64), np.asarray([store[i] for i in have], dtype=np.float32).reshape(-1, DIM)

    return lookup


def recall(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> float:
    _, rows = faiss.knn(queries, vectors, 10, faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), ids[rows].tolist(), strict=True)]))


def test_ivfpq_rescores_removes_saves_and_loads(tmp_path, data):
    ids, vectors, queries = data
    store = lookup_of(ids, vectors)
    index = VectorIndex.build(ids, vectors, DIM, "ivfpq", rescore_from=from_dict(store))
    assert index.kind == "ivfpq" and index.ntotal == len(ids)
    assert {"nprobe", "rescore_factor"} <= index.params.keys()
    assert index.recall["stored"] >= 0.95 and index.recall["text_like"] >= 0.95

    scores, found = index.search(vectors[:50], 5)
    assert (found[:, 0] == ids[:50]).all()  # a stored vector finds itself ...
    np.testing.assert_allclose(scores[:, 0], np.sum(vectors[:50] ** 2, axis=1), rtol=1e-5)  # ... by its exact score
    rng = np.random.default_rng(3)
    assert recall(index, ids, vectors, queries) >= 0.95
    assert recall(index, ids, vectors, text_like_probes(vectors[:200], rng)) >= 0.93

    gone = ids[:50]
    index.remove(gone)
    for i in gone.tolist():
        del store[i]  # deleted from SQLite too
    assert index.ntotal == len(ids) - 50
    assert not set(index.search(vectors[:50], 10)[1].ravel().tolist()) & set(gone.tolist())
    assert sorted(index.ids().tolist()) == ids[50:].tolist()

    path = tmp_path / "v.faiss"
    index.save(path, index.meta("m", 3))
    saved = json.loads(meta_path(path).read_text())
    assert saved["kind"] == "ivfpq" and saved["params"] == index.params and saved["recall"]["target"] == 0.95
    loaded, meta = VectorIndex.load(path, DIM, rescore_from=from_dict(store))
    assert meta.params == index.params and loaded.params == index.params
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])

    loaded.add(ids[:50], vectors[:50])  # the library writes SQLite first, then the index
    store.update(lookup_of(ids[:50], vectors[:50]))
    assert (loaded.search(vectors[:50], 1)[1][:, 0] == ids[:50]).all()

    orphan, _ = VectorIndex.load(path, DIM)
    with pytest.raises(RuntimeError, match="rescore"):
        orphan.search(queries, 10)


def test_ivfpq_needs_exact_vectors_and_enough_of_them(data):
    ids, vectors, _ = data
    with pytest.raises(ValueError, match="rescore_from"):
        VectorIndex.build(ids, vectors, DIM, "ivfpq")
    few = PQ_MIN_VECTORS // 2
    small = VectorIndex.build(ids[:few], vectors[:few], DIM, "ivfpq", rescore_from=from_dict({}))
    assert small.kind == "ivf" and small.ntotal == few


def test_recall_guard_raises_a_tiny_nprobe_until_the_target_is_met(tmp_path, data):
    ids, vectors, queries = data
    index = VectorIndex.build(ids, vectors, DIM, "ivf", nprobe=1)
    assert index.params["nprobe"] > 1
    assert faiss.extract_index_ivf(index.index).nprobe == index.params["nprobe"]
    assert min(index.recall["stored"], index.recall["text_like"]) >= 0.95
    assert recall(index, ids, vectors, queries) >= 0.95  # holds for queries the guard never saw

    untuned = VectorIndex.build(ids, vectors, DIM, "ivf", nprobe=1, target_recall=None)
    assert untuned.params["nprobe"] == 1 and untuned.recall == {}
    assert recall(untuned, ids, vectors, text_like_probes(vectors[:200], np.random.default_rng(5))) < 0.9

    path = tmp_path / "v.faiss"
    index.save(path, index.meta("m", 1))
    loaded, meta = VectorIndex.load(path, DIM)
    assert meta.params["nprobe"] == index.params["nprobe"] == faiss.extract_index_ivf(loaded.index).nprobe
    assert meta.recall["stored"] == index.recall["stored"] and meta.recall["queries"] > 0


def test_a_deeper_search_probes_more_lists_for_that_search_only(data):
    """What a product condition that thins out the candidates asks for: more of an IVF index's lists, without
    changing what other searches (other threads) get."""
    ids, vectors, queries = data
    index = VectorIndex.build(ids, vectors, DIM, "ivf", nprobe=1, target_recall=None)
    probes = text_like_probes(vectors[:200], np.random.default_rng(5))
    _, rows = faiss.knn(probes, vectors, 10, faiss.METRIC_INNER_PRODUCT)

    def recall_at(factor: int) -> float:
        _, found = index.search(probes, 10, probe_factor=factor)
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), ids[rows].tolist(),
                                                                          strict=True)]))

    shallow, deep = recall_at(1), recall_at(16)
    assert shallow < 0.9 and deep > shallow + 0.1
    assert faiss.extract_index_ivf(index.index).nprobe == 1 and recall_at(1) == shallow
    flat = VectorIndex.build(ids, vectors, DIM, "flat")
    assert np.array_equal(flat.search(probes, 10, probe_factor=8)[1], flat.search(probes, 10)[1])
    # A cap: what duplicate finding asks for (its answers lie in the nearest lists), below the index's own setting.
    one_list = index.search(probes, 10)[1]
    assert np.array_equal(index.search(probes, 10, probe_cap=5)[1], one_list)  # a cap above the setting: no change
    index.tune({"nprobe": 16})
    assert recall_at(1) == deep and np.array_equal(index.search(probes, 10, probe_cap=1)[1], one_list)
    assert faiss.extract_index_ivf(index.index).nprobe == 16


def test_recall_guard_raises_hnsw_ef_search(data):
    ids, vectors, _ = data
    index = VectorIndex.build(ids[:4000], vectors[:4000], DIM, "hnsw", ef_search=2)
    assert index.params["ef_search"] > 2
    assert faiss.downcast_index(index.index.index).hnsw.efSearch == index.params["ef_search"]
    assert min(index.recall["stored"], index.recall["text_like"]) >= 0.95


def test_recall_guard_warns_when_its_bound_stops_it(data, monkeypatch, caplog):
    ids, vectors, _ = data
    monkeypatch.setattr(vlsearch.library.vectors.guard, "NPROBE_MAX", 2)
    with caplog.at_level(logging.WARNING, logger="vlsearch.library.vectors.guard"):
        index = VectorIndex.build(ids, vectors, DIM, "ivf", nprobe=1)
    assert index.params["nprobe"] == 2
    assert index.recall["text_like"] < 0.95 and index.recall["target"] == 0.95
    assert "below the 0.95 target" in caplog.text


def test_an_index_saved_before_the_guard_still_loads(tmp_path, data):
    ids, vectors, _ = data
    index = VectorIndex.build(ids, vectors, DIM, "ivf", nprobe=7, target_recall=None)
    path = tmp_path / "v.faiss"
    index.save(path, index.meta("m", 1))
    meta_path(path).write_text(json.dumps({"model": "m", "generation": 1, "count": len(ids), "kind": "ivf"}))
    loaded, meta = VectorIndex.load(path, DIM)
    assert meta == IndexMeta("m", 1, len(ids), "ivf") and loaded.params == {"nprobe": 7}


def synthetic_library(root, ids: np.ndarray, vectors: np.ndarray, model: str = "m", **opts) -> Library:
    lib = Library.open(root, **opts)
    lib.ensure_model(model, DIM)
    with lib.session() as s:
        s.execute(insert(ImageRecord.__table__), [
            {"id": i, "path": f"/p/{i}.jpg", "sha256": f"{i:064x}", "size": 1, "mtime": 0.0, "status": "ok"}
            for i in ids.tolist()])
        s.execute(insert(Embedding.__table__), [
            {"image_id": i, "model": model, "vector": encode_vector(v)} for i, v in zip(ids.tolist(), vectors,
                                                                                         strict=True)])
        Library.bump_generation(s, model)
    return lib


def test_a_library_checks_the_recall_of_an_index_saved_before_the_guard_once(tmp_path, data, caplog):
    """An upgraded library's IVF file has the old fixed nprobe and no recall in its .json: opening it runs the
    guard (no retraining), saves what it chose, and the next open uses that without checking again."""
    ids, vectors, _ = data
    lib = synthetic_library(tmp_path / "lib", ids, vectors)
    generation = lib.require_model("m").generation
    old = VectorIndex.build(ids, vectors.astype(np.float16).astype(np.float32), DIM, "ivf", nprobe=1,
                            target_recall=None)
    path = lib.index_path("m")
    path.parent.mkdir(parents=True, exist_ok=True)
    old.save(path, old.meta("m", generation))
    meta_path(path).write_text(json.dumps({"model": "m", "generation": generation, "count": len(ids), "kind": "ivf"}))
    trained = faiss.extract_index_ivf(old.index).quantizer.reconstruct_n(0, 4)
    lib.close()

    with caplog.at_level(logging.WARNING, logger="vlsearch.library.index_cache"):
        index = Library.open(tmp_path / "lib").vector_index("m")
    assert "without a recall check" in caplog.text
    assert index.params["nprobe"] > 1 and min(index.recall["stored"], index.recall["text_like"]) >= 0.95
    np.testing.assert_array_equal(faiss.extract_index_ivf(index.index).quantizer.reconstruct_n(0, 4), trained)
    saved = json.loads(meta_path(path).read_text())
    assert saved["params"] == index.params and saved["generation"] == generation

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vlsearch.library.index_cache"):
        again = Library.open(tmp_path / "lib").vector_index("m")
    assert again.params == index.params and caplog.text == ""


def test_a_library_ivfpq_index_rescores_from_sqlite_and_follows_deletes(tmp_path, data):
    ids, vectors, queries = data
    lib = synthetic_library(tmp_path / "lib", ids, vectors)
    built = lib.rebuild_index("m", "ivfpq")
    assert built.kind == "ivfpq" and not built.on_gpu
    stored = vectors.astype(np.float16).astype(np.float32)  # what SQLite keeps
    scores, found = lib.vector_index("m").search(stored[:20], 1)
    assert (found[:, 0] == ids[:20]).all()
    np.testing.assert_allclose(scores[:, 0], np.sum(stored[:20] ** 2, axis=1), rtol=1e-5)

    deleted, by_model = lib.delete_images(ids[:20].tolist())
    assert not set(lib.vector_index("m", max_stale_s=60).search(stored[:20], 10)[1].ravel()) & set(deleted)
    lib.apply_to_index("m", built, [], by_model["m"])
    reopened = Library.open(tmp_path / "lib")
    index = reopened.vector_index("m")
    assert index.kind == "ivfpq" and index.ntotal == len(ids) - 20
    assert index.params == built.params
    assert recall(index, ids[20:], stored[20:], queries) >= 0.95


# -- GPU placement, with fake FAISS modules: no test may need a GPU ------------------------------------------------


class GpuCopy:
    """What a fake index_cpu_to_gpu returns: a real CPU clone that counts its searches."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = faiss.clone_index(index)
        self.searches = 0

    def search(self, queries: np.ndarray, k: int):
        self.searches += 1
        return self.index.search(queries, k)


def fake_faiss(gpus: int = 1, gpu_build: bool = True) -> SimpleNamespace:
    module = SimpleNamespace(get_num_gpus=lambda: gpus, copies=[])
    if gpu_build:
        module.StandardGpuResources = object

        def index_cpu_to_gpu(resources, device, index):
            module.copies.append(GpuCopy(index))
            return module.copies[-1]

        module.index_cpu_to_gpu = index_cpu_to_gpu
    return module


@pytest.mark.parametrize(("kind", "allowed", "module", "expected"), [
    ("flat", True, fake_faiss(), True),
    ("ivf", True, fake_faiss(), True),
    ("hnsw", True, fake_faiss(), False),  # no GPU HNSW
    ("ivfpq", True, fake_faiss(), False),  # GPU IVF-PQ does not take 128-byte codes
    ("flat", False, fake_faiss(), False),  # the setting forbids it
    ("flat", True, fake_faiss(gpus=0), False),  # a GPU build on a machine without a GPU
    ("flat", True, fake_faiss(gpu_build=False), False),  # faiss-cpu
])
def test_gpu_eligible(kind, allowed, module, expected):
    assert gpu_eligible(kind, allowed, module) is expected


def test_a_gpu_copy_searches_while_the_cpu_index_is_updated_and_saved(tmp_path, data):
    ids, vectors, queries = data
    module = fake_faiss()
    index = VectorIndex.build(ids, vectors, DIM, "ivf")
    assert index.use_gpu(True, module) and index.on_gpu
    copy = module.copies[-1]
    assert copy.index.nprobe == index.params["nprobe"]  # the guard's setting travels with the copy
    expected = index.index.search(queries, 10)[1]
    np.testing.assert_array_equal(index.search(queries, 10)[1], expected)
    assert copy.searches == 1

    index.search(queries[:1], GPU_MAX_K + 1)  # deeper than a GPU search goes: the CPU answers
    assert copy.searches == 1

    index.remove(ids[:10])
    assert len(module.copies) == 2 and module.copies[-1].index.ntotal == index.ntotal  # a fresh copy
    index.search(queries, 10)
    assert module.copies[-1].searches == 1

    path = tmp_path / "v.faiss"
    index.save(path, index.meta("m", 1))
    loaded, _ = VectorIndex.load(path, DIM)
    assert loaded.ntotal == len(ids) - 10 and not loaded.on_gpu

    hnsw = VectorIndex.build(ids[:500], vectors[:500], DIM, "hnsw")
    assert not hnsw.use_gpu(True, module) and len(module.copies) == 2


def test_faiss_cpu_places_nothing_on_a_gpu_and_a_library_searches_as_before(tmp_path, data):
    """faiss-cpu (a build without GPU calls) places no kind on a GPU, whether or not the machine has one; a library
    opened without faiss_gpu searches on the CPU with whatever FAISS is installed."""
    ids, vectors, _ = data
    cpu_build = fake_faiss(gpu_build=False)
    assert not any(gpu_eligible(kind, True, cpu_build) for kind in ("flat", "ivf", "ivfpq", "hnsw"))
    lib = synthetic_library(tmp_path / "lib", ids[:300], vectors[:300])
    index = lib.vector_index("m")
    assert index.kind == "flat" and not index.on_gpu
    assert index.search(vectors[:3].astype(np.float16).astype(np.float32), 1)[1][:, 0].tolist() == ids[:3].tolist()


@pytest.mark.parametrize("allowed", [False, True])
def test_a_library_places_its_index_on_a_gpu_only_when_asked(tmp_path, data, monkeypatch, allowed):
    """With a GPU build of FAISS that sees a GPU, `Library.open(faiss_gpu=...)` decides; the server asks for it
    unless its device is "cpu" (test_the_server_asks_for_faiss_on_the_gpu_unless_pinned_to_the_cpu)."""
    ids, vectors, _ = data
    module = fake_faiss()
    for name in ("get_num_gpus", "StandardGpuResources", "index_cpu_to_gpu"):
        monkeypatch.setattr(vlsearch.library.vectors.gpu.faiss, name, getattr(module, name), raising=False)
    monkeypatch.setattr(vlsearch.library.vectors.gpu, "_GPU_RESOURCES", {})
    lib = synthetic_library(tmp_path / "lib", ids[:300], vectors[:300], faiss_gpu=allowed)
    index = lib.vector_index("m")
    assert index.on_gpu is allowed and len(module.copies) == int(allowed)
    index.search(vectors[:2], 5)
    assert [c.searches for c in module.copies] == ([1] if allowed else [])


@pytest.mark.parametrize(("device", "expected"), [("cpu", False), ("auto", True), ("cuda", True)])
def test_the_server_asks_for_faiss_on_the_gpu_unless_pinned_to_the_cpu(tmp_path, monkeypatch, device, expected):
    import vlsearch.api.wiring
    from vlsearch.api.settings import load_settings

    opened = {}

    def open_library(path, create=False, faiss_gpu=False):
        opened["faiss_gpu"] = faiss_gpu
        raise RuntimeError("stop here: no models needed")

    monkeypatch.setattr(vlsearch.api.wiring, "open_library", open_library)
    with pytest.raises(RuntimeError, match="stop here"):
        vlsearch.api.wiring.build_service(load_settings(library=tmp_path / "lib", device=device))
    assert opened == {"faiss_gpu": expected}


def add_one_vector_behind_the_index(lib: Library, image_id: int, vector: np.ndarray) -> None:
    """What an index run that died after committing a batch leaves: SQLite a generation ahead of the file."""
    with lib.session() as s:
        s.execute(insert(ImageRecord.__table__), [{"id": image_id, "path": f"/p/{image_id}.jpg",
                                                   "sha256": f"{image_id:064x}", "size": 1, "mtime": 0.0,
                                                   "status": "ok"}])
        s.execute(insert(Embedding.__table__), [{"image_id": image_id, "model": "m", "vector": encode_vector(vector)}])
        Library.bump_generation(s, "m")


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw", "flat"])
def test_a_stale_index_is_rebuilt_as_the_kind_that_was_asked_for(tmp_path, data, kind):
    ids, vectors, _ = data
    n = PQ_MIN_VECTORS + 100
    lib = synthetic_library(tmp_path / "lib", ids[:n], vectors[:n])
    assert lib.rebuild_index("m", kind).kind == kind
    add_one_vector_behind_the_index(lib, 99_999, vectors[0])
    reopened = Library.open(tmp_path / "lib")
    index = reopened.vector_index("m")
    assert index.kind == kind and index.requested == kind and index.ntotal == n + 1
    assert json.loads(meta_path(reopened.index_path("m")).read_text())["requested"] == kind


def test_an_index_whose_metadata_names_another_kind_is_rebuilt(tmp_path, data):
    """A crash between writing the .faiss file and its .json: the old .json must not vouch for the new file."""
    ids, vectors, _ = data
    n = PQ_MIN_VECTORS + 100
    lib = synthetic_library(tmp_path / "lib", ids[:n], vectors[:n])
    flat = lib.vector_index("m")
    path = lib.index_path("m")
    old_meta = meta_path(path).read_text()
    lib.rebuild_index("m", "ivfpq")
    meta_path(path).write_text(old_meta)  # the new index, the old metadata (same generation and count)
    with pytest.raises(ValueError, match="holds a ivfpq index, its metadata says flat"):
        VectorIndex.load(path, DIM)
    index = Library.open(tmp_path / "lib").vector_index("m")
    assert index.kind == "flat" and index.ntotal == flat.ntotal  # rebuilt as the metadata's request: auto
    assert vlsearch.library.vectors.kind_of(index.index) == "flat"


def test_every_gpu_index_takes_turns_with_the_shared_gpu_resources(data, monkeypatch):
    """One StandardGpuResources serves the process, and FAISS allows it one user at a time: the server's current
    index is still searched while its replacement is copied to the GPU and searched."""
    import threading
    import time

    ids, vectors, _ = data
    uses = {"now": 0, "overlaps": 0}
    guard = threading.Lock()

    def use():
        with guard:
            uses["now"] += 1
            uses["overlaps"] += uses["now"] > 1
        time.sleep(0.001)
        with guard:
            uses["now"] -= 1

    class Copy(GpuCopy):
        def search(self, queries, k):
            use()
            return super().search(queries, k)

    module = fake_faiss()

    def index_cpu_to_gpu(resources, device, index):
        use()
        module.copies.append(Copy(index))
        return module.copies[-1]

    module.index_cpu_to_gpu = index_cpu_to_gpu
    monkeypatch.setattr(vlsearch.library.vectors.gpu, "_GPU_RESOURCES", {})
    old = VectorIndex.build(ids[:500], vectors[:500], DIM, "flat")
    new = VectorIndex.build(ids[:500], vectors[:500], DIM, "flat")
    assert old.use_gpu(True, module)
    stop = threading.Event()

    def search_old():
        while not stop.is_set():
            old.search(vectors[:1], 5)

    threads = [threading.Thread(target=search_old) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            assert new.use_gpu(True, module)
            new.search(vectors[:1], 5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert uses["overlaps"] == 0 and sum(c.searches for c in module.copies) > 20


def test_a_recall_check_while_a_writer_works_is_used_but_not_saved(tmp_path, data):
    """A reader must not write an index file under a writer's feet (it could put an old generation over the
    writer's new one): while the writer lock is held, the checked index is used from memory only."""
    ids, vectors, _ = data
    lib = synthetic_library(tmp_path / "lib", ids, vectors)
    generation = lib.require_model("m").generation
    old = VectorIndex.build(ids, vectors.astype(np.float16).astype(np.float32), DIM, "ivf", nprobe=1,
                            target_recall=None)
    path = lib.index_path("m")
    path.parent.mkdir(parents=True, exist_ok=True)
    old.save(path, old.meta("m", generation))
    unchecked = json.dumps({"model": "m", "generation": generation, "count": len(ids), "kind": "ivf"})
    meta_path(path).write_text(unchecked)
    with lib.writer("a test"):
        index = Library.open(tmp_path / "lib").vector_index("m")
    assert index.params["nprobe"] > 1 and index.recall
    assert meta_path(path).read_text() == unchecked


# -- memory budgets, chunked builds, memory-mapped files, latency targets, sharding ---------------------------------


def test_a_memory_budget_picks_exact_search_while_it_fits_then_ever_smaller_codes():
    """autofaiss's rules: Flat if it fits, IVF-Flat below 1M vectors if it fits, else IVF-PQ with the largest code
    that fits; never an estimate over the budget, and a clear error where nothing fits."""
    plan = vlsearch.library.vectors.plan_index
    assert plan(20_000, 64, "auto", 10**8).kind == "flat"
    assert plan(200_000, 64, "auto", 10**9).kind == "ivf"  # past FLAT_LIMIT: IVF-Flat while it fits
    chosen = [plan(20_000, 64, "auto", budget) for budget in (700_000, 600_000, 500_000)]
    assert [p.m for p in chosen] == [16, 8, 4] and {p.kind for p in chosen} == {"ivfpq"}
    assert all(p.estimated_bytes <= p.memory_budget for p in chosen)
    too_small = r"need at least 440.7 KB \(IVF-PQ with 4-byte codes\); the memory budget is 400.0 KB"
    with pytest.raises(ValueError, match=too_small):
        plan(20_000, 64, "auto", 400_000)
    big = plan(10_000_000, 512, "auto", 4 * 10**9)
    assert big.factory == "IVF16384,PQ128x8" and big.estimated_bytes <= 4 * 10**9  # flat coarse quantizer
    graph = plan(10_000_000, 512, "auto", 4 * 10**9, quantizer="hnsw")  # asked for; its graph counted
    assert graph.factory == "IVF16384_HNSW32,PQ128x8" and big.estimated_bytes < graph.estimated_bytes <= 4 * 10**9
    with pytest.raises(ValueError, match="unknown coarse quantizer 'ivf'; choose one of flat, hnsw"):
        plan(10_000_000, 512, "auto", 4 * 10**9, quantizer="ivf")
    assert plan(10_000_000, 512, "auto", 1 * 10**9).m == 64
    assert plan(2_000_000, 512, "ivfpq", 4 * 10**9, opq=True).factory == "OPQ128,IVF4096,PQ128x8"
    assert plan(20_000, 64, "flat", 100_000).over_budget  # a kind asked for is built, and flagged
    assert plan(20_000, 64, "auto").kind == "flat" and plan(20_000, 64, "ivfpq").m == 16  # no budget: as before


@pytest.fixture(scope="module")
def budgeted(data):
    ids, vectors, _ = data
    return VectorIndex.build(ids, vectors, DIM, "auto", memory_budget=300_000,
                             rescore_from=from_dict(lookup_of(ids, vectors)))


def test_a_budgeted_index_fits_its_budget_and_records_what_it_chose(tmp_path, data, budgeted):
    ids, vectors, queries = data
    assert budgeted.kind == "ivfpq" and budgeted.build_info["m"] == 8 and budgeted.build_info["nbits"] == 8
    assert recall(budgeted, ids, vectors, queries) >= 0.9
    path = tmp_path / "v.faiss"
    budgeted.save(path, budgeted.meta("m", 1))
    build = json.loads(meta_path(path).read_text())["build"]
    assert build["estimated_bytes"] <= build["memory_budget"] == 300_000
    assert abs(path.stat().st_size / build["estimated_bytes"] - 1) < 0.02  # the estimate is the file, nearly
    assert build["file_bytes"] == path.stat().st_size
    assert build["factory"].endswith(",PQ8x8") and build["nlist"] > 1 and build["train_points"] > 0
    assert build["p50_ms"] > 0 and build["train_s"] >= 0 and build["add_s"] >= 0
    loaded, _ = VectorIndex.load(path, DIM, rescore_from=from_dict(lookup_of(ids, vectors)))
    assert loaded.build_options == {"memory_budget": 300_000, "latency_target_ms": None, "opq": False,
                                    "quantizer": "flat"}


def test_an_hnsw_coarse_quantizer_is_built_when_asked_for_and_kept_by_rebuilds(tmp_path, data):
    """`reindex --quantizer hnsw`: an IVF index whose lists are found by an HNSW graph, tuned by the guard like any
    other; a rebuild (a stale file) asks for it again, and a file that chose one itself (before it was an option)
    gets the flat quantizer."""
    ids, vectors, queries = data
    lib = synthetic_library(tmp_path / "lib", ids, vectors)
    built = lib.rebuild_index("m", "ivf", quantizer="hnsw")
    ivf = faiss.extract_index_ivf(built.index)
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW)
    assert built.build_info["factory"].startswith(f"IVF{built.build_info['nlist']}_HNSW32,")
    assert built.recall["stored"] >= 0.95 and recall(built, ids, vectors, queries) >= 0.9
    assert built.build_options["quantizer"] == "hnsw"
    lib.close()
    reopened = Library.open(tmp_path / "lib")
    assert reopened.vector_index("m").build_options["quantizer"] == "hnsw"
    old = dict(built.build_info)
    del old["quantizer_requested"]  # a file saved before the option: the plan's own choice is not repeated
    assert VectorIndex(built.index, "ivf", DIM, build_info=old).build_options["quantizer"] == "flat"


def test_a_chunked_build_equals_the_one_shot_build(data, budgeted):
    ids, vectors, queries = data

    def chunks():
        for lo in range(0, len(ids), 2_500):
            yield ids[lo : lo + 2_500], vectors[lo : lo + 2_500]

    chunked = VectorIndex.build_from_chunks(chunks, len(ids), DIM, "auto", memory_budget=300_000,
                                            rescore_from=from_dict(lookup_of(ids, vectors)))
    assert chunked.build_info["factory"] == budgeted.build_info["factory"] and chunked.params == budgeted.params
    for a, b in zip(chunked.search(queries, 10), budgeted.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_memory_mapped_index_searches_alike_and_refuses_changes(tmp_path, data, budgeted):
    ids, vectors, queries = data
    path = tmp_path / "v.faiss"
    budgeted.save(path, budgeted.meta("m", 1))
    mapped, _ = VectorIndex.load(path, DIM, rescore_from=from_dict(lookup_of(ids, vectors)), mmap=True)
    assert mapped.mmapped and mapped.params == budgeted.params
    for a, b in zip(mapped.search(queries, 10), budgeted.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(vlsearch.library.vectors.ReadOnlyIndexError, match="memory-mapped read-only"):
        mapped.add(ids[:1], vectors[:1])  # FAISS itself would abort the process
    with pytest.raises(vlsearch.library.vectors.ReadOnlyIndexError):
        mapped.save(path, mapped.meta("m", 2))
    writable = mapped.in_memory()
    writable.remove(ids[:10])
    assert not writable.mmapped and writable.ntotal == len(ids) - 10 and mapped.ntotal == len(ids)


def test_a_library_maps_a_large_index_and_updates_it_in_memory(tmp_path, data, monkeypatch):
    """A file over MMAP_RAM_FRACTION of the free RAM is mapped when loaded; an index run's changes read it into
    memory, apply, and save a new file, which the next load maps again."""
    ids, vectors, _ = data
    lib = synthetic_library(tmp_path / "lib", ids, vectors)
    built = lib.rebuild_index("m", memory_budget=300_000)
    assert built.kind == "ivfpq" and built.ntotal == len(ids)
    monkeypatch.setattr(vlsearch.library.vectors.files, "MMAP_RAM_FRACTION", 0.0)
    reopened = Library.open(tmp_path / "lib")
    index = reopened.vector_index("m")
    assert index.mmapped
    deleted, removed = reopened.delete_images(ids[:5].tolist())
    reopened.apply_to_index("m", index, [], removed["m"])
    again = Library.open(tmp_path / "lib").vector_index("m")
    assert again.mmapped and again.ntotal == len(ids) - 5 and again.build_options["memory_budget"] == 300_000
    assert not set(ids[:5].tolist()) & set(again.search(vectors[:5], 10)[1].ravel().tolist())


def test_a_latency_target_caps_nprobe_and_says_when_recall_must_give_way(data, caplog):
    ids, vectors, _ = data
    relaxed = VectorIndex.build(ids, vectors, DIM, "ivf", latency_target_ms=10_000)
    assert "conflict" not in relaxed.build_info and relaxed.build_info["p50_ms"] > 0
    assert relaxed.recall["text_like"] >= 0.95
    with caplog.at_level(logging.WARNING, logger="vlsearch.library.vectors.guard"):
        strict = VectorIndex.build(ids, vectors, DIM, "ivf", latency_target_ms=1e-6)
    assert strict.params["nprobe"] == 1 < relaxed.params["nprobe"]
    assert "answers in more than 1e-06 ms" in strict.build_info["conflict"]
    assert strict.recall["text_like"] < relaxed.recall["text_like"]  # the recall it settles for is what it reports
    assert "answers in more than" in caplog.text


def test_several_gpus_get_a_shard_each(data, monkeypatch):
    ids, vectors, queries = data
    module = fake_faiss(gpus=2)
    calls = []

    class ClonerOptions:
        shard = False

    def index_cpu_to_gpu_multiple_py(resources, index, options, gpus):
        calls.append((len(resources), options.shard, gpus))
        module.copies.append(GpuCopy(index))
        return module.copies[-1]

    module.GpuMultipleClonerOptions = ClonerOptions
    module.index_cpu_to_gpu_multiple_py = index_cpu_to_gpu_multiple_py
    monkeypatch.setattr(vlsearch.library.vectors.gpu, "_GPU_RESOURCES", {})
    monkeypatch.setattr(vlsearch.library.vectors.gpu, "_SHARD_RESOURCES", {})
    index = VectorIndex.build(ids, vectors, DIM, "ivf")
    assert index.use_gpu(True, module) and index.gpu_shards == 2
    assert calls == [(2, True, [0, 1])]
    np.testing.assert_array_equal(index.search(queries, 10)[1], index.index.search(queries, 10)[1])
    assert module.copies[-1].searches == 1
    one = VectorIndex.build(ids[:500], vectors[:500], DIM, "flat")
    assert one.use_gpu(True, fake_faiss(gpus=1)) and one.gpu_shards == 0


def test_reindex_takes_a_memory_budget_and_reports_what_it_built(tmp_path, data, monkeypatch):
    from typer.testing import CliRunner

    from vlsearch.api.cli import app

    ids, vectors, _ = data
    synthetic_library(tmp_path / "lib", ids[:300], vectors[:300]).close()
    monkeypatch.setenv("VLSEARCH_LIBRARY", str(tmp_path / "lib"))
    runner = CliRunner()
    result = runner.invoke(app, ["reindex", "--memory", "1MB", "--latency-ms", "50"])
    assert result.exit_code == 0, result.output
    assert "300 vectors, flat index (IDMap2,Flat)" in result.output and "budget 1.0 MB" in result.output
    assert "bytes/vector" in result.output
    for bad, message in (("4XB", "not a size"), ("0GB", "more than 0"), ("lots", "such as 512MB")):
        result = runner.invoke(app, ["reindex", "--memory", bad])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["reindex", "--memory", "1KB"])
    assert result.exit_code == 2 and "need at least" in result.output
    result = runner.invoke(app, ["reindex", "--quantizer", "tree"])
    assert result.exit_code == 2 and "unknown coarse quantizer 'tree'; choose one of flat, hnsw" in result.output
