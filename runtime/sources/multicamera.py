"""Several camera pairs, one model: the newest pending pair of each camera, batched.

    from runtime import Segmenter
    from runtime.sources.multicamera import multi_stream
    from runtime import open_source

    seg = Segmenter("gopt_rgbt.onnx")          # exported with --dynamic-batch to batch
    cams = [open_source(0, 1), open_source(2, 3)]
    for r in multi_stream(seg, cams):
        print(r.camera, r.batch, r.frame.index, r.timing["latency"])

Each camera has a background thread that decodes and preprocesses its frames into a
small pending queue. The inference loop takes one pending pair from every camera that
has one (the newest with ``drop_stale``, older ones discarded and counted; else the
oldest, in order) and runs them as one ``run_prepared`` batch, up to the model's batch
capacity: a fixed-batch graph's batch, a TensorRT profile's maximum, ``max_batch``, or
the number of cameras for a dynamic batch axis. When more cameras wait than fit, the
cameras served least recently go first, so no camera starves.

A frame the Segmenter refuses (a ``ValueError``: wrong size, dtype, NaN ...) is logged,
counted in ``CameraResult.errors`` and skipped; the camera goes on. One loop drives the
Segmenter: it is the only caller of ``run_prepared``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

from .frames import FramePair, Result

log = logging.getLogger(__name__)


@dataclass
class CameraResult(Result):
    camera: int = 0  # position of the camera's source in ``sources``
    batch: int = 1  # frames in the inference call that produced this result
    errors: int = 0  # frames of this camera refused (ValueError) and skipped so far


@dataclass
class _Pending:
    frame: FramePair
    prepared: object
    start: float
    timing: dict


def batch_capacity(segmenter, max_batch: int | None = None, cameras: int = 1) -> int:
    """How many frames one inference call takes: a fixed batch axis's size, else the
    TensorRT profile's maximum, else ``max_batch``, else ``cameras``; never above ``max_batch``."""
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    dim = segmenter.info.input("rgb").shape[0]
    fixed = None if isinstance(dim, str) else int(dim)
    capacity = fixed or getattr(segmenter.graphs["gopt"], "max_batch", None) or max_batch or cameras
    return min(capacity, max_batch) if max_batch else capacity


class _Camera:
    """One camera's producer thread and pending queue (guarded by the shared condition)."""

    def __init__(self, index, source, segmenter, cond, stop, queue_size, drop_stale, color_order):
        self.index, self.source, self.segmenter = index, source, segmenter
        self.cond, self.stop = cond, stop
        self.queue_size, self.drop_stale, self.color_order = queue_size, drop_stale, color_order
        self.pending: deque[_Pending] = deque()
        self.dropped = 0
        self.errors = 0
        self.ended = False
        self.error: BaseException | None = None
        self.last_served = -1  # batch number that last served this camera
        self.thread = threading.Thread(target=self._produce, name=f"camera-{index}", daemon=True)

    def _produce(self) -> None:
        try:
            frames = iter(self.source)
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                decoded = time.perf_counter()
                if frame.captured is not None:
                    start = frame.captured
                try:
                    prepared = self.segmenter.prepare(frame.rgb, frame.aux, self.color_order)
                except ValueError as e:
                    self.errors += 1
                    log.warning("camera %d, frame %s skipped: %s", self.index, frame.name, e)
                    continue
                done = time.perf_counter()
                self._offer(_Pending(frame, prepared, start, {"decode": 1e3 * (decoded - start),
                                                              "preprocess": 1e3 * (done - decoded),
                                                              "_ready": done}))
        except BaseException as e:  # noqa: BLE001 - handed to the inference loop, which re-raises it
            with self.cond:
                self.error = e
        finally:
            self.source.close()
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def _offer(self, job: _Pending) -> None:
        with self.cond:
            while not self.drop_stale and len(self.pending) >= self.queue_size and not self.stop.is_set():
                self.cond.wait(0.05)
            self.pending.append(job)
            if len(self.pending) > self.queue_size:
                self.pending.popleft()
                self.dropped += 1
            self.cond.notify_all()

    def take(self) -> _Pending:
        """The pair to run now (caller holds the condition): newest with drop_stale, else oldest."""
        if self.drop_stale:
            job = self.pending.pop()
            self.dropped += len(self.pending)
            self.pending.clear()
        else:
            job = self.pending.popleft()
        return job


def multi_stream(segmenter, sources, max_batch: int | None = None, drop_stale: bool = True, queue_size: int = 2,
                 color_order: str | None = None) -> Iterator[CameraResult]:
    """Segment the frame pairs of several sources with one Segmenter, batching one pending
    pair per camera into each inference call. Yields ``CameraResult``s (``camera``: the
    source's position, ``batch``: frames in that call, ``dropped``: that camera's stale
    frames so far) in the order they are produced. Sources are closed when the stream ends,
    stops early or fails; an error in a camera's thread is raised here."""
    if getattr(segmenter, "kind", "gopt") != "gopt":
        raise ValueError("multi_stream runs GoPT models (rgb + aux frames)")
    sources = list(sources)
    if not sources:
        raise ValueError("multi_stream needs at least one source")
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    capacity = batch_capacity(segmenter, max_batch, len(sources))
    return _loop(segmenter, sources, capacity, drop_stale, queue_size, color_order)


def _pick(cameras: list[_Camera], capacity: int) -> list[_Camera]:
    """Cameras with a pending pair, least recently served first (then the oldest frame first)."""
    ready = [c for c in cameras if c.pending]
    ready.sort(key=lambda c: (c.last_served, c.pending[0].start, c.index))
    return ready[:capacity]


def _loop(segmenter, sources, capacity, drop_stale, queue_size, color_order) -> Iterator[CameraResult]:
    cond, stop = threading.Condition(), threading.Event()
    cameras = [_Camera(i, s, segmenter, cond, stop, queue_size, drop_stale, color_order) for i, s in enumerate(sources)]
    for c in cameras:
        c.thread.start()
    batch_number = 0
    try:
        while True:
            with cond:
                while True:
                    failed = next((c for c in cameras if c.error is not None), None)
                    if failed is not None:
                        raise failed.error
                    chosen = _pick(cameras, capacity)
                    if chosen or all(c.ended for c in cameras):
                        break
                    cond.wait(0.1)
                if not chosen:
                    return
                jobs = [c.take() for c in chosen]
                for c in chosen:
                    c.last_served = batch_number
                cond.notify_all()
            batch_number += 1
            t0 = time.perf_counter()
            labels = segmenter.run_prepared([j.prepared for j in jobs])
            t1 = time.perf_counter()
            for c, job, lab in zip(chosen, jobs, labels):
                timing = {k: v for k, v in job.timing.items() if not k.startswith("_")}
                timing.update(queued=1e3 * (t0 - job.timing["_ready"]), infer=1e3 * (t1 - t0),
                              latency=1e3 * (t1 - job.start))
                yield CameraResult(job.frame, lab, timing, c.dropped, camera=c.index, batch=len(jobs), errors=c.errors)
    finally:
        stop.set()
        with cond:
            for c in cameras:
                c.pending.clear()
            cond.notify_all()
        for c in cameras:
            c.thread.join(timeout=5.0)
