"""Indexing on a Ray cluster: the stages on its nodes (Ray Data), results merged into the library shard by shard."""

from vlsearch.indexer.distributed.cluster import ClusterUnreachable, DistributedError, connect
from vlsearch.indexer.distributed.runner import SHARD_DIR, RayOptions, RayReport, RayRunner
from vlsearch.indexer.distributed.stages import ModelSpecs

__all__ = ["SHARD_DIR", "ClusterUnreachable", "DistributedError", "ModelSpecs", "RayOptions", "RayReport",
           "RayRunner", "connect"]
