"""lnm_jax.data.threads: results in order on any number of threads; an error stops the rest."""

from __future__ import annotations

import threading
import time

import pytest

from lnm_jax.data.threads import ordered_map


@pytest.mark.parametrize("threads", [1, 3])
def test_results_come_in_the_items_order(threads):
    def slow_first(i):
        time.sleep(0.01 * (5 - i % 5))
        return i * i

    assert list(ordered_map(slow_first, range(20), threads)) == [i * i for i in range(20)]


def test_an_error_cancels_the_items_not_started():
    """The caller sees the error after the running items, not after the whole queue (futures
    collected one by one inside a ``with ThreadPoolExecutor`` block run all 200 first: 10.9 s
    here, measured)."""
    started, lock = [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        if i == 1:
            raise ValueError("row 1 is bad")
        time.sleep(0.1)
        return i

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="row 1 is bad"):
        list(ordered_map(work, range(200), 2))
    assert time.monotonic() - t0 < 5 and len(started) < 50
