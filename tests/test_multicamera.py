"""runtime.sources.multicamera: one Segmenter, several cameras, one batch per inference call."""
import os
import threading
import time
from collections import deque

import cv2
import numpy as np
import pytest

from export.onnx import parse_args, run as export
from factories import tiny_gopt
from models import save_gopt
from runtime import Segmenter
from runtime.sources.multicamera import _Camera, _Pending, _pick, batch_capacity, multi_stream
from runtime.sources.streams import FramePair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_cameras_ended(seconds=5.0):
    def alive():
        return [t for t in threading.enumerate() if t.name.startswith("camera-") and t.is_alive()]

    deadline = time.monotonic() + seconds
    while alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(), "a camera thread is still running"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("multicam")
    save_gopt(tiny_gopt(), d / "tiny.pt")
    assert export(parse_args([str(d / "tiny.pt"), "-o", str(d / "dynamic.onnx"), "--dynamic-batch", "--no-check"])) == 0
    assert export(parse_args([str(d / "tiny.pt"), "-o", str(d / "fixed.onnx"), "--no-check"])) == 0
    return d


@pytest.fixture(scope="module")
def seg(models):
    return Segmenter(models / "dynamic.onnx")


def camera_frames(camera, n):
    """n distinct real-looking frames for one camera: the MFNet frame shifted per camera and index."""
    f = cv2.imread(os.path.join(ROOT, "data", "samples", "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    f = cv2.resize(f, (128, 96))
    return [np.ascontiguousarray(np.roll(f, 7 * camera + 3 * i, axis=1)) for i in range(n)]


class ListSource:
    def __init__(self, camera, n, delay_s=0.0):
        self.frames, self.camera, self.delay_s = camera_frames(camera, n), camera, delay_s
        self.closed = False

    def __iter__(self):
        for i, f in enumerate(self.frames):
            time.sleep(self.delay_s)
            yield FramePair(i, f"cam{self.camera}_{i}", None, f[..., :3].copy(), f[..., 3].copy())

    def close(self):
        self.closed = True


def test_results_equal_separate_runs_and_batches(seg):
    sources = [ListSource(c, 6) for c in range(3)]
    results = list(multi_stream(seg, sources, drop_stale=False))
    assert sorted((r.camera, r.frame.index) for r in results) == [(c, i) for c in range(3) for i in range(6)]
    for r in results:
        f = sources[r.camera].frames[r.frame.index]
        np.testing.assert_array_equal(r.labels, seg.run(f[..., :3], f[..., 3]))
        assert r.timing["latency"] >= r.timing["infer"] > 0
    assert max(r.batch for r in results) > 1  # the cameras really shared inference calls
    for c in range(3):  # in order per camera without drop_stale
        idx = [r.frame.index for r in results if r.camera == c]
        assert idx == sorted(idx)
    assert all(s.closed for s in sources)
    assert_cameras_ended()


def test_capacity_one_serves_cameras_in_turn(seg):
    sources = [ListSource(c, 8) for c in range(3)]
    order = []
    for r in multi_stream(seg, sources, max_batch=1, drop_stale=False):
        order.append(r.camera)
        time.sleep(0.05)  # a slow consumer: every camera has refilled its queue before the next pick
    assert len(order) == 24
    # While every camera has a pending frame, each window of three calls serves all three.
    for start in range(0, 18, 3):
        assert sorted(order[start:start + 3]) == [0, 1, 2], order


def test_newest_pending_is_taken_and_the_rest_counted():
    def pending(i):
        return _Pending(FramePair(i, str(i), None, None, None), None, float(i), {})

    cam = _Camera(0, None, None, threading.Condition(), threading.Event(), 3, True, None)
    cam.pending = deque(pending(i) for i in range(3))
    assert cam.take().frame.index == 2 and cam.dropped == 2 and not cam.pending
    fifo = _Camera(1, None, None, threading.Condition(), threading.Event(), 3, False, None)
    fifo.pending = deque(pending(i) for i in range(3))
    assert fifo.take().frame.index == 0 and fifo.dropped == 0 and len(fifo.pending) == 2


def test_pick_prefers_cameras_served_least_recently():
    cams = []
    for i, (served, t) in enumerate([(5, 0.0), (2, 9.0), (2, 1.0), (-1, 50.0)]):
        c = _Camera(i, None, None, threading.Condition(), threading.Event(), 2, True, None)
        c.last_served = served
        c.pending = deque([_Pending(None, None, t, {})])
        cams.append(c)
    cams.append(_Camera(4, None, None, threading.Condition(), threading.Event(), 2, True, None))  # nothing pending
    assert [c.index for c in _pick(cams, 3)] == [3, 2, 1]


def test_slow_consumer_with_drop_stale_gets_the_newest(seg):
    sources = [ListSource(c, 12, delay_s=0.002) for c in range(2)]
    last = {}
    seen = {0: [], 1: []}
    for r in multi_stream(seg, sources, drop_stale=True, queue_size=1):
        time.sleep(0.03)
        seen[r.camera].append(r.frame.index)
        last[r.camera] = r.dropped
    for c in range(2):
        assert seen[c] == sorted(seen[c]) and seen[c][-1] == 11  # newest first, the final frame always served
        assert len(seen[c]) + last[c] == 12  # processed + dropped = offered
        assert last[c] > 0


def test_batch_capacity(models, seg):
    assert batch_capacity(seg, None, 4) == 4
    assert batch_capacity(seg, 2, 4) == 2
    fixed = Segmenter(models / "fixed.onnx")
    assert batch_capacity(fixed, None, 4) == 1
    with pytest.raises(ValueError, match="max_batch"):
        batch_capacity(seg, 0, 2)


def test_a_failing_camera_is_raised_and_everything_stops(seg):
    class Broken(ListSource):
        def __iter__(self):
            yield from list(super().__iter__())[:2]
            raise ValueError("camera 1: stopped delivering frames")

    sources = [ListSource(0, 50, delay_s=0.01), Broken(1, 5)]
    with pytest.raises(ValueError, match="stopped delivering"):
        for _ in multi_stream(seg, sources):
            pass
    assert all(s.closed for s in sources)
    assert_cameras_ended()


def test_a_bad_frame_is_counted_and_skipped(seg):
    class OneBad(ListSource):
        def __iter__(self):
            for f in super().__iter__():
                if f.index == 2:
                    f.aux = f.aux[:10]  # a size the Segmenter refuses
                yield f

    results = list(multi_stream(seg, [OneBad(0, 5), ListSource(1, 5)], drop_stale=False))
    assert sorted(r.frame.index for r in results if r.camera == 0) == [0, 1, 3, 4]
    assert [r.errors for r in results if r.camera == 0][-1] == 1
    assert len([r for r in results if r.camera == 1]) == 5
