"""FAISS over L2-normalised vectors, inner product, ids = image ids. Derived from SQLite, saved atomically.

An approximate index (ivf, ivfpq, hnsw) is checked when it is built: the recall guard (guard.py) searches it with a
sample of the stored vectors and with text-like probes made from them, compares with exact search, and raises
nprobe / efSearch / the rescoring depth (bounded) until recall@10 reaches a target. What it settled on and the
recall it measured are kept in the index metadata (the .json beside the .faiss file; files.py).

Large libraries: with a memory budget the builder picks the index by autofaiss's rules (plan.py), trains it on a
sample and adds the vectors in chunks (build.py: 10M vectors never sit in RAM as float32 at once), and an index
file larger than a share of the free RAM is memory-mapped read-only when it is loaded. gpu.py places the search
copy on a GPU where FAISS has GPU support, torch_exact.py an exact float16 copy searched by torch where it has none;
index.py holds VectorIndex, which ties them together."""

from vlsearch.library.vectors.files import IndexMeta, kind_of, meta_path
from vlsearch.library.vectors.gpu import gpu_eligible
from vlsearch.library.vectors.guard import exact_search, text_like_probes
from vlsearch.library.vectors.index import ReadOnlyIndexError, VectorIndex
from vlsearch.library.vectors.plan import FLAT_LIMIT, PQ_MIN_VECTORS, IndexPlan, format_bytes, parse_size, plan_index
from vlsearch.library.vectors.sources import CHUNK_VECTORS, VectorChunks, VectorLookup

__all__ = [
    "CHUNK_VECTORS",
    "FLAT_LIMIT",
    "PQ_MIN_VECTORS",
    "IndexMeta",
    "IndexPlan",
    "ReadOnlyIndexError",
    "VectorChunks",
    "VectorIndex",
    "VectorLookup",
    "exact_search",
    "format_bytes",
    "gpu_eligible",
    "kind_of",
    "meta_path",
    "parse_size",
    "plan_index",
    "text_like_probes",
]
