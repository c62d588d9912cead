"""Indexing: plan → decode → embed → write, then tag (from the stored vectors) and describe (captions, OCR);
incremental, resumable, safe, on this machine or on a Ray cluster (indexer.distributed)."""

from vlsearch.indexer.describe import Describer
from vlsearch.indexer.local import LocalRunner
from vlsearch.indexer.report import DescribeReport, IndexProgress, IndexReport, ProgressHook, TagReport
from vlsearch.indexer.run import Indexer

__all__ = ["DescribeReport", "Describer", "IndexProgress", "IndexReport", "Indexer", "LocalRunner", "ProgressHook",
           "TagReport"]
