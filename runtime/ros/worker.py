"""Segmentation off the caller's thread, for live message callbacks (the ROS 2 node).

    worker = SegmentWorker(lambda pair: seg.run(*pair), publish, queue_size=2, drop_stale=True)
    worker.offer(pair)            # from a subscription callback: never waits when drop_stale
    worker.stats()                # fps, latency percentiles, processed / dropped / failed counts
    worker.close()

A callback must return quickly or the executor stops delivering messages. ``offer`` puts
the item in a bounded queue; with ``drop_stale`` a full queue gives up its oldest item
(counted in ``dropped``), so a slow model always works on the newest frames. One thread
runs ``process`` then ``publish`` per item, in order. A failing item is counted, handed to
``on_error`` and skipped; the worker goes on. All methods are safe to call from any thread.
"""
from __future__ import annotations

import collections
import threading
import time

import numpy as np


class SegmentWorker:
    def __init__(self, process, publish, queue_size: int = 2, drop_stale: bool = True, on_error=None,
                 window_s: float = 5.0):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.process, self.publish, self.on_error = process, publish, on_error
        self.queue_size, self.drop_stale, self.window_s = queue_size, drop_stale, window_s
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._done: collections.deque = collections.deque()  # (finish time, latency s) in the window
        self.processed = self.dropped = self.failed = 0
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="segment-worker", daemon=True)
        self._thread.start()

    def offer(self, item, received: float | None = None) -> bool:
        """Queue ``item`` (``received``: its arrival, ``time.perf_counter()``, default now).
        With ``drop_stale`` this never waits: a full queue drops its oldest item. Without it,
        it waits for room. False once the worker is closed."""
        received = time.perf_counter() if received is None else received
        with self._cond:
            while len(self._items) >= self.queue_size and not self._closed:
                if self.drop_stale:
                    self._items.popleft()
                    self.dropped += 1
                else:
                    self._cond.wait()
            if self._closed:
                return False
            self._items.append((item, received))
            self._cond.notify_all()
            return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                item, received = self._items.popleft()
                self._cond.notify_all()
            try:
                self.publish(item, self.process(item))
            except Exception as e:  # noqa: BLE001 - one bad pair is reported and skipped
                with self._cond:
                    self.failed += 1
                if self.on_error is not None:
                    self.on_error(item, e)
                continue
            now = time.perf_counter()
            with self._cond:
                self.processed += 1
                self._done.append((now, now - received))

    def stats(self) -> dict:
        """fps and latency (arrival to published, ms: p50 / p90 / p99) over the last
        ``window_s`` seconds; processed, dropped, failed and queued counts since the start."""
        now = time.perf_counter()
        with self._cond:
            while self._done and self._done[0][0] < now - self.window_s:
                self._done.popleft()
            latencies = np.array([lat for _, lat in self._done], np.float64) * 1e3
            out = {"processed": self.processed, "dropped": self.dropped, "failed": self.failed,
                   "queued": len(self._items)}
        span = min(self.window_s, now - self._started)
        out["fps"] = len(latencies) / span if span > 0 else 0.0
        for q in (50, 90, 99):
            out[f"latency_p{q}_ms"] = float(np.percentile(latencies, q)) if len(latencies) else float("nan")
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking items, finish the queued ones, join the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
