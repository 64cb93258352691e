"""One Segmenter shared by several threads gives every thread the result a single thread gets."""
import threading

import numpy as np
import pytest
import torch

from factories import tiny_gopt
from export.progress import Progress
from export.simcmf_onnx import export_simcmf
from runtime import Segmenter
from runtime.backends.torch_backend import gopt_backend
from test_simcmf import tiny_model

THREADS, CALLS = 4, 200


@pytest.fixture(scope="module")
def simcmf_onnx(tmp_path_factory):
    _, paths = export_simcmf(tiny_model(modality="rgbt"), tmp_path_factory.mktemp("threads") / "tiny", batch=1,
                             progress=Progress(2))
    return paths[0]


def images(n=6):
    """Distinct RGB-T frames, so that one thread's cached embedding is never another's."""
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (96, 80, 4), dtype=np.uint8) for _ in range(n)]


def run_threads(call, expected, calls):
    """``call(k)`` from THREADS threads, ``calls`` times each over every k; the mismatches."""
    mismatches, errors = [], []

    def worker(t):
        try:
            for i in range(calls):
                k = (3 * t + i) % len(expected)  # threads interleave different inputs
                if not same(call(k), expected[k]):
                    mismatches.append((t, i, k))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert not mismatches, f"{len(mismatches)} of {THREADS * calls} results differ from single-threaded ones"


def same(a, b):
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def test_simcmf_segmenter_shared_by_four_threads(simcmf_onnx, onnx_backend):
    seg = Segmenter(simcmf_onnx, backend=onnx_backend)
    frames = images()
    clicks = [[(10 + 7 * k, 20 + 5 * k)] for k in range(len(frames))]
    expected = [seg.run(f, points=p) for f, p in zip(frames, clicks)]  # single-threaded
    run_threads(lambda k: seg.run(frames[k], points=clicks[k]), expected, CALLS)


def test_gopt_segmenter_shared_by_four_threads():
    seg = Segmenter.from_backends({"gopt": gopt_backend(tiny_gopt(), torch.device("cpu"))})
    rng = np.random.default_rng(3)
    pairs = [(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 80), dtype=np.uint8))
             for _ in range(4)]
    expected = [seg.run(*p, return_logits=True) for p in pairs]
    run_threads(lambda k: seg.run(*pairs[k], return_logits=True), expected, 50)


def test_gopt_onnx_segmenter_shared_by_four_threads(tmp_path, onnx_backend):
    from export.onnx import export_gopt

    export_gopt(tiny_gopt(), tmp_path / "tiny.onnx", progress=Progress(1))
    seg = Segmenter(tmp_path / "tiny.onnx", backend=onnx_backend)
    rng = np.random.default_rng(5)
    pairs = [(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (60, 80), dtype=np.uint8))
             for _ in range(4)]
    expected = [seg.run(*p, return_logits=True) for p in pairs]
    run_threads(lambda k: seg.run(*pairs[k], return_logits=True), expected, 50)
