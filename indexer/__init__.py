"""Indexing: plan → decode → embed → write, then describe (captions, OCR); incremental, resumable, safe, on this
machine or on a Ray cluster (indexer.distributed)."""

from vlsearch.images import DEFAULT_MAX_PIXELS, DecodeError
from vlsearch.images import decode_file as decode_image
from vlsearch.indexer.describe import Describer
from vlsearch.indexer.local import LocalRunner
from vlsearch.indexer.report import DescribeReport, IndexProgress, IndexReport, ProgressHook
from vlsearch.indexer.run import Indexer

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeError", "DescribeReport", "Describer", "IndexProgress", "IndexReport",
           "Indexer", "LocalRunner", "ProgressHook", "decode_image"]
