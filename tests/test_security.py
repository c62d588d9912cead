"""Security properties that no other test pins down: untrusted weight files run no code, uploads leave nothing on
disk, keys never reach the logs (see also test_api.py's key, symlink and /file tests)."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.api_helpers import make_app, serving
from tests.photos import write_photos
from vlsearch.encoders import WeightsUnavailable, load_encoder
from vlsearch.indexer import Indexer
from vlsearch.library import Library

KEY = "sk-test-0123456789abcdef"


class Payload:
    """Unpickling this runs a shell command that leaves a marker file: what a booby-trapped checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_booby_trapped_clip_checkpoint_runs_no_code(tmp_path):
    tiny = load_encoder("tiny-random", device="cpu")
    good, evil, marker = tmp_path / "good.pt", tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save(tiny.model.state_dict(), good)
    torch.save({"state_dict": tiny.model.state_dict(), "extra": Payload(marker)}, evil)
    assert load_encoder("vlsearch-tiny", weights=good, device="cpu").name.startswith("vlsearch-tiny/good.pt#")
    with pytest.raises(WeightsUnavailable, match="not a usable vlsearch-tiny checkpoint.*Weights only load failed"):
        load_encoder("vlsearch-tiny", weights=evil, device="cpu")
    assert not marker.exists()


def test_a_booby_trapped_blip_checkpoint_folder_runs_no_code(tmp_path):
    from vlsearch.captioner import load_image_text_model
    from vlsearch.captioner.tiny import tiny_blip

    folder, marker = tmp_path / "caption", tmp_path / "pwned"
    model, processor = tiny_blip("caption")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "model.safetensors").unlink()  # weights as a pickle instead, as older checkpoints ship them
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    assert load_image_text_model(str(folder), "caption", device="cpu").caption  # the honest file loads
    torch.save({**model.state_dict(), "extra": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsUnavailable):
        load_image_text_model(str(folder), "caption", device="cpu")
    assert not marker.exists()


def noisy_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG that does not compress: big enough that the multipart parser spools it to a temporary file."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_uploads_are_spooled_only_to_temporary_files_that_are_gone_after_each_request(tmp_path, tiny_encoder,
                                                                                       monkeypatch, caplog):
    """Every upload endpoint, answered or refused: the spooled file is closed (so deleted: it is a
    TemporaryFile) when the request ends, nothing is written into the library or the temp folder, and neither the
    key nor a wrong one shows up in the logs."""
    from vlsearch.captioner import load_image_text_model

    write_photos(tmp_path / "photos", 2)
    lib = Library.open(tmp_path / "lib")
    Indexer(lib, tiny_encoder, workers=0).run([tmp_path / "photos"])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spooled: list = []
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        spooled.append(real(*args, **kwargs))
        return spooled[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    models = {task: load_image_text_model("tiny-random", task, device="cpu") for task in ("caption", "answer")}
    app = make_app(lib, tiny_encoder, api_keys=[KEY], max_upload_bytes=4_000_000, max_body_bytes=6_000_000,
                   max_pixels=4_000_000, captioner=models["caption"], answerer=models["answer"])
    big = noisy_png((1100, 1000))  # ~3.3 MB: over the parser's 1 MB in-memory limit
    too_big = noisy_png((1300, 1100), 1)  # over max_upload_bytes
    not_an_image = os.urandom(1_500_000)
    assert 1_000_000 < len(big) < 4_000_000 < len(too_big) < 6_000_000
    library_files = files_under(lib.root)
    with caplog.at_level(logging.DEBUG), serving(app) as url:
        auth = {"Authorization": f"Bearer {KEY}"}
        wrong = {"Authorization": "Bearer sk-wrong-key-fedcba9876543210"}
        calls = [
            ("/api/v1/search/image", {"file": ("a.png", big, "image/png")}, {}),
            ("/api/v1/search/image", {"file": ("b.png", too_big, "image/png")}, {}),
            ("/api/v1/search/image", {"file": ("c.jpg", not_an_image, "image/jpeg")}, {}),
            ("/api/v1/caption", {"file": ("a.png", big, "image/png")}, {}),
            ("/api/v1/caption", {"file": ("c.jpg", not_an_image, "image/jpeg")}, {}),
            ("/api/v1/caption/batch", [("files", ("a.png", big, "image/png")),
                                       ("files", ("c.jpg", not_an_image, "image/jpeg"))], {}),
            ("/api/v1/vqa", {"file": ("a.png", big, "image/png")}, {"question": "what is it?"}),
        ]
        statuses = []
        for headers in (auth, wrong, {}):
            for endpoint, files, data in calls:
                r = httpx.post(url + endpoint, files=files, data=data, headers=headers, timeout=120)
                statuses.append(r.status_code)
                assert r.status_code < 500, (endpoint, r.text)
                # The server closes a request's files once the response has gone out: give it a moment.
                deadline = time.monotonic() + 10
                while [f for f in spooled if not f.closed] and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert not [f for f in spooled if not f.closed], f"{endpoint} left an upload open"
        assert httpx.delete(url + "/api/v1/images/1", headers=wrong).status_code == 401
    assert 200 in statuses and 413 in statuses and any(400 <= s < 500 and s != 413 for s in statuses)
    assert len(spooled) >= 10  # the big uploads did go through temporary files
    assert files_under(scratch) == set()
    assert {f for f in files_under(lib.root) if not f.endswith(("-wal", "-shm"))} == {
        f for f in library_files if not f.endswith(("-wal", "-shm"))}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in logged and "sk-wrong-key" not in logged


def test_keys_are_compared_in_constant_time_against_every_configured_key(monkeypatch):
    """hmac.compare_digest for each key, and no early exit when one matches: neither the time of one comparison
    nor the number of them says which key (or how much of one) was right."""
    import hmac

    from vlsearch.api import security

    compared = []
    real = hmac.compare_digest

    def counting(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    keys = ["first-key-aaaa", "second-key-bbbb", "third-key-cccc"]
    for given, expected in (("first-key-aaaa", True), ("third-key-cccc", True), ("first-key-aaab", False),
                            ("", False), ("ключ-\udcff", False)):
        compared.clear()
        assert security.key_matches(given, keys) is expected
        assert len(compared) == len(keys) and {b for _, b in compared} == {k.encode() for k in keys}


def test_the_server_caps_malloc_arenas_unless_the_operator_chose(monkeypatch):
    """Fewer glibc arenas keep a long-running server's memory from creeping up (RELIABILITY.md, soak)."""
    from vlsearch.api.memory import M_ARENA_MAX, SERVER_MALLOC_ARENAS, limit_malloc_arenas

    class Libc:
        calls: list = []

        def mallopt(self, param, value):
            self.calls.append((param, value))
            return 1

    libc = Libc()
    assert limit_malloc_arenas({}, libc) and libc.calls == [(M_ARENA_MAX, SERVER_MALLOC_ARENAS)]
    assert not limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}, libc) and len(libc.calls) == 1
    assert not limit_malloc_arenas({}, object())  # not glibc: nothing to set


def test_free_memory_goes_back_to_the_system_where_glibc_can():
    from vlsearch.api.memory import return_free_memory

    class Libc:
        def __init__(self, released: int) -> None:
            self.released, self.calls = released, []

        def malloc_trim(self, pad):
            self.calls.append(pad)
            return self.released

    libc = Libc(1)
    assert return_free_memory(libc) and libc.calls == [0]  # 0: keep no slack at the top of the heap
    assert not return_free_memory(Libc(0))
    assert not return_free_memory(object())  # not glibc
    assert isinstance(return_free_memory(), bool)  # this machine's own libc answers either way
