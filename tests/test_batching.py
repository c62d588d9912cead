"""The micro-batcher on its own: rows go back to the right callers, errors reach every caller of a batch, a lone
client pays no wait, and closing while callers arrive leaves none of them hanging."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vlsearch.api.batching import MicroBatcher


def rows(texts: list[str]) -> np.ndarray:
    """One row per text that identifies it: [len, first char code]."""
    return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def test_each_caller_gets_its_own_rows_from_shared_batches():
    sizes: list[int] = []

    def slow(texts):
        sizes.append(len(texts))
        time.sleep(0.02)  # requests pile up behind a busy model
        return rows(texts)

    batcher = MicroBatcher(slow, max_wait_s=0.005, max_batch=8, company=lambda: True)
    texts = [[chr(65 + i % 26) * (i + 1)] * (1 + i % 3) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(batcher, texts))
    batcher.close()
    for asked, got in zip(texts, answers, strict=True):
        assert np.array_equal(got, rows(asked))
    assert sum(sizes) == sum(len(t) for t in texts) and max(sizes) > 1 and batcher.waits > 0
    assert max(sizes) <= 8 + 2  # a batch stops growing at max_batch (the last request may carry it over)


def test_a_lone_client_is_encoded_at_once_in_its_own_thread():
    threads: list[str] = []

    def encode(texts):
        threads.append(threading.current_thread().name)
        return rows(texts)

    batcher = MicroBatcher(encode, max_wait_s=30, company=lambda: False)
    for i in range(5):  # with a 30 s wait spent on each, this would take minutes
        assert np.array_equal(batcher([f"q{i}"]), rows([f"q{i}"]))
    batcher.close()
    assert threads == [threading.current_thread().name] * 5 and batcher.alone == 5 and batcher.waits == 0


def test_an_encoder_error_reaches_every_caller_and_the_worker_lives_on():
    def flaky(texts):
        if any(t == "bad" for t in texts):
            raise RuntimeError("model fell over")
        return rows(texts)

    batcher = MicroBatcher(flaky, max_wait_s=0.001, company=lambda: True)
    with pytest.raises(RuntimeError, match="fell over"):
        batcher(["bad"])
    assert np.array_equal(batcher(["fine"]), rows(["fine"]))
    batcher.close()


def test_closing_while_callers_arrive_leaves_none_waiting():
    batcher = MicroBatcher(rows, max_wait_s=0.001, company=lambda: True)
    answered: list[bool] = []
    start = threading.Barrier(33)

    def caller(i: int) -> None:
        start.wait()
        for _ in range(20):
            answered.append(np.array_equal(batcher([f"x{i}"]), rows([f"x{i}"])))

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(32)]
    for t in threads:
        t.start()
    start.wait()
    batcher.close()
    batcher.close()  # twice is harmless
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller was left waiting on a stopped worker"
    assert len(answered) == 32 * 20 and all(answered)
