"""FAISS on a GPU: whether an index goes there, and the copy that searches there (sharded over several GPUs)
while the CPU index stays what is updated and saved. So far run only against the tests' stand-in for faiss's GPU
calls (tests/test_vectors.py), never on a GPU."""

from __future__ import annotations

import logging
import threading
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

# Flat and IVF-Flat have GPU versions. HNSW has none, and GPU IVF-PQ does not take our 128-byte codes. A GPU search
# returns at most GPU_MAX_K results per query; deeper fetches use the CPU copy.
GPU_KINDS = frozenset({"flat", "ivf"})
GPU_MAX_K = 2048


def gpu_eligible(kind: str, allowed: bool = True, faiss_module: Any = faiss) -> bool:
    """Whether an index of `kind` should be searched on a GPU: allowed by the caller's setting, this FAISS build
    has GPU support and sees a GPU, and the kind runs there."""
    if not allowed or kind not in GPU_KINDS:
        return False
    if not (hasattr(faiss_module, "StandardGpuResources") and hasattr(faiss_module, "index_cpu_to_gpu")):
        return False  # faiss-cpu
    try:
        return int(faiss_module.get_num_gpus()) > 0
    except (AttributeError, RuntimeError):
        return False


_GPU_RESOURCES: dict[int, tuple[Any, threading.Lock]] = {}  # id(faiss module) -> its resources and their lock
_GPU_RESOURCES_LOCK = threading.Lock()


def _gpu_resources(faiss_module: Any) -> tuple[Any, threading.Lock]:
    """One StandardGpuResources per process (each reserves scratch memory on the GPU), with the lock every use of
    it takes: FAISS allows a resources object one user at a time, and the indexes of every VectorIndex (the
    server's current one and the one replacing it after an index job) share it."""
    with _GPU_RESOURCES_LOCK:
        if id(faiss_module) not in _GPU_RESOURCES:
            _GPU_RESOURCES[id(faiss_module)] = (faiss_module.StandardGpuResources(), threading.Lock())
        return _GPU_RESOURCES[id(faiss_module)]


def _gpu_count(module: Any) -> int:
    try:
        return int(module.get_num_gpus())
    except (AttributeError, RuntimeError):
        return 0


_SHARD_RESOURCES: dict[int, list[Any]] = {}  # id(faiss module) -> one StandardGpuResources per GPU


def _shard_resources(module: Any, first: Any, gpus: int) -> list[Any]:
    """Resources for GPUs 0..gpus-1, GPU 0's being the process's shared one; used under its lock."""
    have = _SHARD_RESOURCES.setdefault(id(module), [first])
    while len(have) < gpus:
        have.append(module.StandardGpuResources())
    return have[:gpus]


class GpuCopy:
    """A CPU index's copy on the GPU(s) of `module` (faiss, or a stand-in in tests), searched under the shared
    resources' lock."""

    max_k = GPU_MAX_K
    follows_params = True  # the copy carries nprobe: a change of settings needs a new copy

    def __init__(self, module: Any) -> None:
        self.module = module
        self.index: Any = None
        self.shards = 0  # GPUs the copy is spread over, when it is sharded

    def clone(self, cpu_index: faiss.Index, kind: str) -> bool:
        """Copy `cpu_index` to the GPU, or shard it over every GPU when there are several (each holds 1/n of the
        vectors and searches its share; FAISS merges the results). False, after a warning, where it cannot."""
        module = self.module
        try:
            resources, lock = _gpu_resources(module)
            gpus = _gpu_count(module)
            with lock:
                if gpus > 1 and hasattr(module, "GpuMultipleClonerOptions"):
                    options = module.GpuMultipleClonerOptions()
                    options.shard = True
                    self.index = module.index_cpu_to_gpu_multiple_py(_shard_resources(module, resources, gpus),
                                                                     cpu_index, options, list(range(gpus)))
                    self.shards = gpus
                else:
                    self.index = module.index_cpu_to_gpu(resources, 0, cpu_index)
                    self.shards = 0
        except RuntimeError as exc:  # out of GPU memory, say: the CPU index still answers
            log.warning("cannot copy the %s index of %d vectors to the GPU (%s); searching on the CPU",
                        kind, cpu_index.ntotal, exc)
            return False
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with _gpu_resources(self.module)[1]:
            return self.index.search(queries, k)
