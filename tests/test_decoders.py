"""The decode seam of a local run (indexer/decoders.py): a decoder that leaves the pixels to its per-batch part, in the
main process, as a GPU decoder would, indexes the same vectors and records the same failures as the CPU decoder."""

from __future__ import annotations

import os

import numpy as np

from tests.photos import broken_corpus, write_photos
from vlsearch.indexer import Indexer
from vlsearch.indexer.decoders import CpuDecoder
from vlsearch.indexer.items import Batch, Decoded, WorkItem
from vlsearch.indexer.local import LocalRunner
from vlsearch.indexer.sources import read_source
from vlsearch.library import ImageRecord, Library


class Deferred:
    """Hashes in the workers and keeps the bytes; decodes each batch in the main process (the CPU decoder's steps,
    standing in for nvJPEG): the shape of a GPU decoder."""

    batches: list[int] = []  # the process each batch was finished in

    def __init__(self, library: Library, encoder, **options) -> None:
        self.cpu = CpuDecoder(library, encoder, **options)

    def item(self):
        return read_only

    def finish(self, batch: Batch) -> Batch:
        Deferred.batches.append(os.getpid())
        return Batch.collate([self.cpu.item()(d.item) if d.ok else d for d in batch.items])


def read_only(item: WorkItem) -> Decoded:
    import hashlib

    try:
        data = read_source(item.path, None)
    except OSError as exc:
        return Decoded(item, error=str(exc))
    return Decoded(item, sha256=hashlib.sha256(data).hexdigest(), data=data)


def test_a_decoder_that_decodes_per_batch_indexes_what_the_cpu_decoder_does(tmp_path, tiny_encoder):
    broken = broken_corpus(tmp_path / "photos" / "broken")
    good = write_photos(tmp_path / "photos", 5)
    found = {}
    for name, decoder in (("cpu", CpuDecoder), ("deferred", Deferred)):
        lib = Library.open(tmp_path / name)
        runner = LocalRunner(batch_size=2, workers=2, decoder=decoder)
        report = Indexer(lib, tiny_encoder, runner=runner).run([tmp_path / "photos"])
        assert (report.embedded, report.errors) == (len(good), len(broken))
        ids, vectors = lib.load_vectors(tiny_encoder.name)
        with lib.session() as s:
            rows = {r.id: r for r in s.query(ImageRecord)}
            found[name] = ({rows[i].path: v for i, v in zip(ids.tolist(), vectors, strict=True)},
                           {r.path: r.error for r in rows.values() if r.error}, {r.path: r.thumbnail for r in
                                                                              rows.values() if r.status == "ok"})
        lib.close()
    (cpu_vectors, cpu_errors, cpu_thumbs), (vectors, errors, thumbs) = found["cpu"], found["deferred"]
    assert set(vectors) == set(cpu_vectors) == {str(p) for p in good}
    assert all(np.allclose(vectors[p], cpu_vectors[p], atol=1e-3) for p in vectors)
    assert errors == cpu_errors and len(errors) == len(broken) and thumbs == cpu_thumbs
    assert Deferred.batches and set(Deferred.batches) == {os.getpid()}  # the batch part ran here, not in a worker
