"""The ROS 2 node's worker: off the callback thread, bounded queue dropping the oldest,
failures skipped and counted, statistics for the diagnostics."""
import threading
import time

import numpy as np
import pytest

from runtime.ros.worker import SegmentWorker


def collect():
    out, lock = [], threading.Lock()

    def publish(item, result):
        with lock:
            out.append((item, result))
    return out, publish


def wait_for(cond, seconds=5.0):
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_all_items_in_order_without_drop_stale():
    out, publish = collect()
    w = SegmentWorker(lambda x: x * x, publish, queue_size=2, drop_stale=False)
    for i in range(20):
        assert w.offer(i)
    w.close()
    assert out == [(i, i * i) for i in range(20)]
    assert (w.processed, w.dropped, w.failed) == (20, 0, 0)
    assert not w.offer(99)  # closed


def test_full_queue_drops_the_oldest_and_offer_never_waits():
    out, publish = collect()
    gate, started = threading.Event(), threading.Event()

    def slow(x):
        started.set()
        gate.wait(5)
        return x

    w = SegmentWorker(slow, publish, queue_size=2, drop_stale=True)
    w.offer(0)
    started.wait(5)  # 0 is in the model; 1..4 arrive while it runs
    t0 = time.perf_counter()
    for i in range(1, 5):
        w.offer(i)
    assert time.perf_counter() - t0 < 0.5  # the callback thread was never held up
    assert w.dropped == 2 and w.stats()["queued"] == 2
    gate.set()
    w.close()
    assert [item for item, _ in out] == [0, 3, 4]  # the newest pairs, in order
    assert w.stats()["dropped"] == 2


def test_without_drop_stale_offer_waits_for_room():
    out, publish = collect()
    gate = threading.Event()
    w = SegmentWorker(lambda x: gate.wait(5) and x, publish, queue_size=1, drop_stale=False)
    w.offer(0)
    wait_for(lambda: w.stats()["queued"] == 0)
    w.offer(1)  # fills the queue
    done = threading.Event()
    threading.Thread(target=lambda: (w.offer(2), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # held until the model takes 1
    gate.set()
    assert done.wait(5)
    w.close()
    assert [item for item, _ in out] == [0, 1, 2] and w.dropped == 0


def test_a_failing_pair_is_reported_and_skipped():
    out, publish = collect()
    errors = []

    def process(x):
        if x == 2:
            raise ValueError("bad frame")
        return x

    w = SegmentWorker(process, publish, queue_size=8, drop_stale=False, on_error=lambda item, e: errors.append((item, str(e))))
    for i in range(5):
        w.offer(i)
    w.close()
    assert [item for item, _ in out] == [0, 1, 3, 4]
    assert errors == [(2, "bad frame")] and w.failed == 1


def test_stats_fps_and_latency():
    out, publish = collect()
    w = SegmentWorker(lambda x: time.sleep(0.01) or x, publish, queue_size=4, drop_stale=False, window_s=10.0)
    start = time.perf_counter()
    for i in range(10):
        w.offer(i, received=time.perf_counter())
    wait_for(lambda: w.processed == 10)
    s = w.stats()
    elapsed = time.perf_counter() - start
    assert s["processed"] == 10 and s["failed"] == 0
    assert 10 / elapsed * 0.5 <= s["fps"] <= 10 / 0.1  # counted over the time since the start
    assert 10 <= s["latency_p50_ms"] <= s["latency_p90_ms"] <= s["latency_p99_ms"]
    w.close()
    empty = SegmentWorker(lambda x: x, lambda i, r: None).stats()
    assert empty["fps"] == 0 and np.isnan(empty["latency_p50_ms"])


def test_queue_size_checked():
    with pytest.raises(ValueError, match="queue_size must be >= 1"):
        SegmentWorker(lambda x: x, lambda i, r: None, queue_size=0)
