import functools
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text

import vlsearch.indexer.decoders
from tests.photos import broken_corpus, odd_but_valid, write_photo, write_photos
from vlsearch.indexer import Indexer
from vlsearch.indexer.items import Decoded, WorkItem
from vlsearch.indexer.stages import DecodeStage
from vlsearch.library import Embedding, ImageRecord


def run(library, encoder, *paths, **kwargs):
    return Indexer(library, encoder, batch_size=kwargs.pop("batch_size", 8), workers=kwargs.pop("workers", 0),
                   **kwargs).run(list(paths))


def rows(library):
    with library.session() as s:
        return {r.path: r for r in s.scalars(select(ImageRecord))}


def vector_ids(library, model):
    with library.session() as s:
        return sorted(s.scalars(select(Embedding.image_id).where(Embedding.model == model)))


def assert_index_matches_sqlite(library, model):
    index = library.vector_index(model)
    assert sorted(index.ids().tolist()) == vector_ids(library, model)


def test_first_run_indexes_everything_and_second_run_embeds_nothing(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 12)
    first = run(library, tiny_encoder, tmp_path / "photos")
    assert (first.seen, first.embedded, first.errors) == (12, 12, 0)
    assert set(rows(library)) == {str(p) for p in photos}
    assert_index_matches_sqlite(library, tiny_encoder.name)

    second = run(library, tiny_encoder, tmp_path / "photos")
    assert (second.embedded, second.unchanged, second.reused, second.moved) == (0, 12, 0, 0)


class RecordingDecode(DecodeStage):
    """The real decode stage that also leaves a file per photo naming the process that decoded it."""

    def __init__(self, *args, record_to: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record_to = record_to

    def __call__(self, item: WorkItem) -> Decoded:
        (self.record_to / Path(item.path).name).write_text(str(os.getpid()))
        return super().__call__(item)


def test_uses_worker_processes_for_decoding(library, tiny_encoder, tmp_path, monkeypatch):
    photos = write_photos(tmp_path / "photos", 10)
    decoded_by = tmp_path / "decoded_by"
    decoded_by.mkdir()
    monkeypatch.setattr(vlsearch.indexer.decoders, "DecodeStage", functools.partial(RecordingDecode,
                                                                                 record_to=decoded_by))
    report = run(library, tiny_encoder, tmp_path / "photos", workers=2, batch_size=3)
    assert report.embedded == 10
    assert_index_matches_sqlite(library, tiny_encoder.name)
    pids = {f.name: int(f.read_text()) for f in decoded_by.iterdir()}
    assert sorted(pids) == sorted(p.name for p in photos)
    # 4 batches of at most 3, dealt to the 2 workers in turn: both decode, and this process decodes none.
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values(), pids


def test_changed_file_is_embedded_again_keeping_its_id(library, tiny_encoder, tmp_path):
    photo = write_photos(tmp_path / "photos", 3)[0]
    run(library, tiny_encoder, tmp_path / "photos")
    before = rows(library)[str(photo)]
    old_vector = library.load_vectors(tiny_encoder.name, [before.id])[1][0]
    write_photo(photo, seed=999)
    os.utime(photo, (1_700_000_000, 1_700_000_000))
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert (report.embedded, report.unchanged) == (1, 2)
    after = rows(library)[str(photo)]
    assert after.id == before.id and after.sha256 != before.sha256
    assert not np.allclose(library.load_vectors(tiny_encoder.name, [after.id])[1][0], old_vector)
    assert_index_matches_sqlite(library, tiny_encoder.name)


def test_touched_file_with_the_same_bytes_is_not_embedded_again(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 3)
    run(library, tiny_encoder, tmp_path / "photos")
    os.utime(photos[1], (1_650_000_000, 1_650_000_000))
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert (report.embedded, report.unchanged) == (0, 3)
    assert rows(library)[str(photos[1])].mtime == 1_650_000_000
    assert run(library, tiny_encoder, tmp_path / "photos").unchanged == 3


def test_moved_file_keeps_its_row_and_vector_without_embedding(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 4)
    run(library, tiny_encoder, tmp_path / "photos")
    old = rows(library)[str(photos[0])]
    new_path = tmp_path / "photos" / "sub" / "renamed.jpg"
    new_path.parent.mkdir()
    shutil.move(photos[0], new_path)
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert (report.moved, report.embedded, report.removed) == (1, 0, 0)
    moved = rows(library)[str(new_path)]
    assert moved.id == old.id and str(photos[0]) not in rows(library)
    assert_index_matches_sqlite(library, tiny_encoder.name)


def test_copy_of_an_indexed_file_reuses_its_vector(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 2)
    run(library, tiny_encoder, tmp_path / "photos")
    shutil.copy(photos[1], tmp_path / "photos" / "copy.jpg")
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert (report.reused, report.embedded) == (1, 0)
    r = rows(library)
    a, b = r[str(photos[1])].id, r[str(tmp_path / "photos" / "copy.jpg")].id
    vectors = library.load_vectors(tiny_encoder.name, [a, b])[1]
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_deleted_files_are_pruned_and_leave_the_faiss_index(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 5)
    run(library, tiny_encoder, tmp_path / "photos")
    gone_id = rows(library)[str(photos[2])].id
    photos[2].unlink()
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert report.removed == 1
    assert str(photos[2]) not in rows(library)
    assert gone_id not in library.vector_index(tiny_encoder.name).ids().tolist()
    assert_index_matches_sqlite(library, tiny_encoder.name)


def test_no_prune_keeps_rows_of_vanished_files(library, tiny_encoder, tmp_path):
    photos = write_photos(tmp_path / "photos", 3)
    run(library, tiny_encoder, tmp_path / "photos")
    photos[0].unlink()
    report = run(library, tiny_encoder, tmp_path / "photos", prune=False)
    assert report.removed == 0 and str(photos[0]) in rows(library)


def test_broken_files_are_recorded_with_reasons_and_the_run_goes_on(library, tiny_encoder, tmp_path):
    broken = broken_corpus(tmp_path / "photos" / "broken")
    good = write_photos(tmp_path / "photos", 3)
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert report.errors == len(broken) and report.embedded == len(good)
    r = rows(library)
    reasons = {kind: r[str(path)].error for kind, path in broken.items()}
    assert all(r[str(path)].status == "error" for path in broken.values())
    assert "empty" in reasons["zero-byte"]
    assert "truncated" in reasons["truncated jpeg"]
    assert "not an image" in reasons["text named jpg"] and "not an image" in reasons["html named png"]
    assert "megapixels" in reasons["decompression bomb"]
    assert vector_ids(library, tiny_encoder.name) == sorted(r[str(p)].id for p in good)
    # Broken files are tried again on the next run (and fail again); the good ones are left alone, and since
    # no vector changed, neither does the FAISS file.
    index_file = library.index_path(tiny_encoder.name)
    saved = (index_file.stat().st_mtime_ns, library.require_model(tiny_encoder.name).generation)
    again = run(library, tiny_encoder, tmp_path / "photos")
    assert (again.errors, again.embedded, again.unchanged) == (len(broken), 0, len(good))
    assert (index_file.stat().st_mtime_ns, library.require_model(tiny_encoder.name).generation) == saved
    assert {r.path for r in rows(library).values() if r.status == "error"} == {str(p) for p in broken.values()}


def test_a_pipe_named_like_an_image_fails_without_blocking_the_run(library, tiny_encoder, tmp_path):
    import threading

    write_photos(tmp_path / "photos", 2)
    os.mkfifo(tmp_path / "photos" / "stuck.jpg")  # reading it would wait forever for a writer
    reports = []
    worker = threading.Thread(target=lambda: reports.append(run(library, tiny_encoder, tmp_path / "photos")),
                              daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the run blocked on a named pipe"
    assert (reports[0].embedded, reports[0].errors) == (2, 1)
    assert "not a regular file" in rows(library)[str(tmp_path / "photos" / "stuck.jpg")].error


def test_a_link_swapped_in_after_listing_cannot_bring_in_an_outside_file(library, tiny_encoder, tmp_path,
                                                                          monkeypatch):
    """The server's jobs confine reads to the allowed folders at the moment of reading, not only when listing:
    a file replaced by a link to an outside file between the two is refused, its content never read."""
    import vlsearch.indexer.plan

    allowed = tmp_path / "allowed"
    write_photos(allowed, 2)
    secret = write_photo(tmp_path / "outside" / "secret.jpg", 9)
    listed = vlsearch.indexer.plan.discover

    def list_then_swap(*args, **kwargs):
        files = list(listed(*args, **kwargs))
        (allowed / "photo_0000.jpg").unlink()
        (allowed / "photo_0000.jpg").symlink_to(secret)
        return iter(files)

    monkeypatch.setattr(vlsearch.indexer.plan, "discover", list_then_swap)
    report = run(library, tiny_encoder, allowed, confine_to=[allowed])
    assert (report.embedded, report.errors) == (1, 1)
    swapped = rows(library)[str(allowed / "photo_0000.jpg")]
    assert swapped.status == "error" and "outside the folders" in swapped.error and swapped.sha256 is None


def test_a_file_that_failed_is_indexed_once_the_cause_is_gone(library, tiny_encoder, tmp_path):
    photo = write_photo(tmp_path / "p" / "big.jpg", seed=4, size=(400, 300))
    first = run(library, tiny_encoder, tmp_path / "p", max_pixels=10_000)
    assert first.errors == 1 and "megapixels" in rows(library)[str(photo)].error
    second = run(library, tiny_encoder, tmp_path / "p")  # the default, larger limit
    assert (second.errors, second.embedded) == (0, 1)
    row = rows(library)[str(photo)]
    assert (row.status, row.error, row.display_width) == ("ok", None, 400)
    assert_index_matches_sqlite(library, tiny_encoder.name)


def test_long_thin_images_are_indexed_without_blowing_up_memory(library, tiny_encoder, tmp_path):
    from PIL import Image

    (tmp_path / "p").mkdir()
    Image.new("RGB", (12_000, 1), "red").save(tmp_path / "p" / "strip.png")
    Image.new("RGB", (2, 9_000), "blue").save(tmp_path / "p" / "pole.png")
    report = run(library, tiny_encoder, tmp_path / "p")
    assert (report.embedded, report.errors) == (2, 0)


def test_file_names_that_are_not_utf8_are_skipped_with_a_reason(library, tiny_encoder, tmp_path):
    folder = tmp_path / "p"
    write_photos(folder, 2)
    bad = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    shutil.copy(folder / "photo_0000.jpg", bad)
    report = run(library, tiny_encoder, folder)
    assert (report.embedded, report.errors) == (2, 1)
    assert "not valid UTF-8" in report.failures[0][1] and "caf\\xe9.jpg" in report.failures[0][0]
    assert len(rows(library)) == 2


def test_content_change_drops_the_stale_vectors_of_other_models(library, tiny_encoder, tmp_path):
    from vlsearch.encoders.clip import ClipEncoder

    other = ClipEncoder("tiny-other", "vlsearch-tiny", None, "cpu")
    photos = write_photos(tmp_path / "p", 3)
    run(library, tiny_encoder, tmp_path / "p")
    run(library, other, tmp_path / "p")
    write_photo(photos[0], seed=77)
    os.utime(photos[0], (1_600_000_000, 1_600_000_000))
    assert run(library, tiny_encoder, tmp_path / "p").embedded == 1
    # The other model's vector of the old picture is gone, so its next run embeds the new picture.
    assert len(vector_ids(library, "tiny-other")) == 2
    assert_index_matches_sqlite(library, "tiny-other")
    again = run(library, other, tmp_path / "p")
    assert (again.embedded, again.unchanged) == (1, 2)
    assert_index_matches_sqlite(library, "tiny-other")


def test_awkward_image_modes_decode_upright(library, tiny_encoder, tmp_path):
    odd = odd_but_valid(tmp_path / "photos")
    report = run(library, tiny_encoder, tmp_path / "photos")
    assert report.errors == 0, report.failures
    r = rows(library)
    for name, (path, (width, height)) in odd.items():
        row = r[str(path)]
        assert row.status == "ok", name
        assert (row.display_width, row.display_height) == (width, height), name
        assert (library.root / row.thumbnail).is_file(), name
    assert r[str(odd["exif orientation 6"][0])].orientation == 6
    from vlsearch.images import decode_file

    sixteen = np.asarray(decode_file(odd["16-bit"][0]))
    assert sixteen[0, 0, 0] == 0 and sixteen[-1, -1, 0] == 255 and 100 < sixteen[40, 60, 0] < 155  # scaled, not clipped
    first = np.asarray(decode_file(odd["animated"][0]))
    from tests.photos import picture

    expected = np.asarray(picture(0, (60, 40)).convert("P").convert("RGB"))
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 10  # the first frame, not another
    assert (r[str(odd["exif orientation 6"][0])].width, r[str(odd["exif orientation 6"][0])].height) == (120, 80)


def test_exif_date_and_camera_are_stored(library, tiny_encoder, tmp_path):
    path = write_photo(tmp_path / "p" / "a.jpg", seed=5, taken=datetime(2021, 7, 4, 12, 30), make="Canon",
                       model="EOS R5")
    run(library, tiny_encoder, tmp_path / "p")
    row = rows(library)[str(path)]
    assert row.taken_at == datetime(2021, 7, 4, 12, 30)
    assert (row.camera_make, row.camera_model, row.format) == ("Canon", "EOS R5", "JPEG")


@pytest.mark.parametrize("where", ["lib", "."])
def test_library_folder_inside_the_indexed_folder_is_not_indexed(tiny_encoder, tmp_path, where):
    from vlsearch.library import Library

    write_photos(tmp_path, 2)
    lib = Library.open(tmp_path / where)
    report = run(lib, tiny_encoder, tmp_path)
    assert report.seen == 2  # not the thumbnails the run itself writes under thumbs/
    assert run(lib, tiny_encoder, tmp_path).seen == 2


def test_an_emptied_folder_nested_in_another_root_is_not_pruned(library, tiny_encoder, tmp_path):
    write_photos(tmp_path / "pics", 2)
    external = write_photos(tmp_path / "pics" / "external", 3, start=10)
    run(library, tiny_encoder, tmp_path / "pics")
    run(library, tiny_encoder, tmp_path / "pics" / "external")
    for p in external:
        p.unlink()
    report = run(library, tiny_encoder, tmp_path / "pics", tmp_path / "pics" / "external")
    assert report.removed == 0 and len(rows(library)) == 5


def test_a_folder_whose_name_is_not_utf8_is_refused_with_a_reason(library, tiny_encoder, tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(folder)
    with pytest.raises(ValueError, match=r"caf\\xe9: the name is not valid UTF-8"):
        run(library, tiny_encoder, os.fsdecode(folder))


def test_an_emptied_folder_is_not_pruned(library, tiny_encoder, tmp_path, caplog):
    photos = write_photos(tmp_path / "drive", 3)
    run(library, tiny_encoder, tmp_path / "drive")
    for p in photos:  # what an unmounted drive looks like from here
        p.unlink()
    report = run(library, tiny_encoder, tmp_path / "drive")
    assert report.removed == 0 and len(rows(library)) == 3
    assert "is the drive mounted" in caplog.text


def test_missing_path_is_a_clear_error(library, tiny_encoder, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        run(library, tiny_encoder, tmp_path / "nope")


def test_sqlite_is_in_wal_mode_with_foreign_keys(library, tiny_encoder, tmp_path):
    write_photos(tmp_path / "p", 2)
    run(library, tiny_encoder, tmp_path / "p")
    with library.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    with library.session() as s:
        s.execute(text("DELETE FROM images"))
    with library.session() as s:
        assert s.scalar(select(func.count()).select_from(Embedding)) == 0


def test_default_decoding_workers_follow_where_the_model_runs():
    from vlsearch.indexer.local import decode_workers

    assert decode_workers(3, "cuda", cores=16) == 3  # asked for: as asked
    assert decode_workers(None, "cpu", cores=2) == 2  # the model shares the cores
    assert decode_workers(None, "cpu", cores=16) == 4
    assert decode_workers(None, "cuda", cores=16) == 15  # on a GPU, decoding is the limit: all cores but one
    assert decode_workers(None, "cuda:1", cores=1) == 1
    assert decode_workers(None, "cpu", cores=2, precision="bf16") == 1  # bf16: the model costs what decoding does
    assert decode_workers(None, "cpu", cores=16, precision="bf16") == 8


def test_a_bf16_model_and_the_decoding_workers_split_the_cores_and_fp32_takes_them_all():
    import torch

    from vlsearch.indexer.local import model_threads, torch_threads

    assert model_threads(1, "cpu", "bf16", cores=2) == 1 and model_threads(8, "cpu", "bf16", cores=16) == 8
    assert model_threads(0, "cpu", "bf16", cores=4) == 4  # decoding in this process: the model takes every core
    assert model_threads(2, "cpu", "fp32", cores=2) is None and model_threads(15, "cuda", "fp16", cores=16) is None
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_a_bf16_index_run_embeds_on_the_cores_its_workers_leave(library, tmp_path):
    import os

    import torch

    from vlsearch.encoders import load_encoder

    write_photos(tmp_path / "photos", 4)
    encoder = load_encoder("tiny-random", device="cpu", precision="bf16")
    seen, embed = [], encoder.encode_image_tensors
    encoder.encode_image_tensors = lambda batch: seen.append(torch.get_num_threads()) or embed(batch)
    before = torch.get_num_threads()
    report = Indexer(library, encoder, workers=1, batch_size=2).run([tmp_path / "photos"])
    assert report.embedded == 4 and set(seen) == {max(1, (os.cpu_count() or 1) - 1)}
    assert torch.get_num_threads() == before  # given back after the run
