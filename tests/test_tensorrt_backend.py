"""The TensorRT backend's host code on TensorRT: the Segmenter's batches against the engine's
profile, several threads on one backend, a CUDA graph TensorRT cannot capture, the sidecar
against the device, timing caches from elsewhere, and what the builder puts in the engine.
Each test runs on the simulated TensorRT 10.3 / 10.16 / 11.1 and CUDA runtime (tests/simulated:
host code only, no GPU) and on TensorRT with a CUDA GPU where both are installed."""
import json
import os
import sys
import threading

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime import Segmenter
from runtime.metadata import ModelFileError
from runtime.backends.trt_backend import (BackendUnavailable, TensorRTBackend, cuda_device, import_cudart, read_sidecar,
                                          sidecar_path)
from simulated.environment import install, trt_env  # noqa: F401  (the fixture)
from test_tensorrt import H, W, build_engine, tiny_gopt_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feeds(rng, batch):
    return {"rgb": rng.standard_normal((batch, 3, H, W), dtype=np.float32),
            "aux": rng.standard_normal((batch, 1, H, W), dtype=np.float32)}


@pytest.fixture(scope="module")
def frames():
    pairs = []
    for name in ("mfnet_01234N.png", "mfnet_01477D.png"):
        image = cv2.imread(os.path.join(ROOT, "data", "samples", name), cv2.IMREAD_UNCHANGED)
        pairs.append((image[..., :3], image[..., 3]))
    return pairs


def test_segmenter_batches_fit_the_engine_profile(trt_env, frames, tmp_path):
    """An engine for 2 to 3 frames: one frame, and a batch that leaves one over, are padded up to
    the profile's minimum with copies of the last frame; larger batches are sliced at its maximum."""
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine", "--min-batch", 2, "--max-batch", 3)
    pairs = [frames[i % 2] for i in range(4)]  # slices of 3 and 1
    reference = Segmenter(model).run_batch(pairs)
    with Segmenter(engine) as seg:
        assert seg.backend == "tensorrt"
        single = seg.run(*frames[0])
        batch = seg.run_batch(pairs)
    assert len(batch) == 4
    for got, want in zip([single, *batch], [reference[0], *reference]):
        assert got.shape == want.shape and (got == want).mean() >= 0.99


def test_threads_share_one_backend(trt_env, tmp_path):
    """Four threads calling one backend: each gets its own frames' results (calls are serialised)."""
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine", "--max-batch", 4)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    errors = []
    with TensorRTBackend(engine) as backend:
        def work(seed):
            rng = np.random.default_rng(seed)
            try:
                for i in range(6):
                    x = feeds(rng, 1 + (seed + i) % 3)
                    if not (backend.infer(x, ["labels"])["labels"] == session.run(["labels"], x)[0]).all():
                        errors.append(f"thread {seed}, call {i}: wrong labels")
            except Exception as e:  # noqa: BLE001: reported below
                errors.append(f"thread {seed}: {type(e).__name__}: {e}")
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often: unserialised calls would interleave
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
    assert errors == []


def test_a_capture_tensorrt_cannot_do_falls_back_to_direct_launches(trt_env, tmp_path):
    """TensorRT fails the enqueue inside the capture: a warning, CUDA graphs off for this
    backend, and every call still right."""
    if not trt_env.simulated:
        pytest.skip("needs an engine whose enqueue cannot be captured")
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    with TensorRTBackend(engine) as backend:
        x = feeds(rng, 1)
        backend.infer(x)
        backend.context._deferred = True  # the simulated TensorRT: its next enqueue has deferred work
        with pytest.warns(RuntimeWarning, match="CUDA graphs disabled for this engine"):
            out = backend.infer(x)
        assert not backend.cuda_graph and backend.graph is None
        assert (out["labels"] == session.run(["labels"], x)[0]).all()
        y = feeds(rng, 1)
        assert (backend.infer(y)["labels"] == session.run(["labels"], y)[0]).all()


def test_engine_of_another_compute_capability_is_refused_before_tensorrt(trt_env, tmp_path, monkeypatch):
    if not trt_env.simulated:
        pytest.skip("needs a second GPU model")
    engine = build_engine(tiny_gopt_onnx(tmp_path / "tiny.onnx"), tmp_path / "tiny.engine")
    monkeypatch.setattr(trt_env.cuda, "capability", (8, 7))  # the same engine, on an Orin
    with pytest.raises(ModelFileError, match="built for compute capability 8.6 .* has compute capability 8.7"):
        TensorRTBackend(engine)


def test_timing_cache_of_another_tensorrt_version_is_replaced(trt_env, tmp_path, monkeypatch, capsys):
    if not trt_env.simulated:
        pytest.skip("needs a second TensorRT version")
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    other = "11.1" if trt_env.id != "simulated-trt11.1" else "10.3"
    with monkeypatch.context() as m:
        install(m, other)
        build_engine(model, tmp_path / "other.engine", "--timing-cache", cache)
    written = cache.read_bytes()
    capsys.readouterr()
    engine = build_engine(model, tmp_path / "tiny.engine", "--timing-cache", cache)
    assert "is from another TensorRT version or GPU; starting a new timing cache" in capsys.readouterr().out
    assert not read_sidecar(engine).builder["timing_cache_reused"]
    assert cache.read_bytes() != written and trt_env.trt.__version__.encode() in cache.read_bytes()


def test_engine_holds_the_model_profile_and_settings(trt_env, tmp_path):
    """What the builder was asked for is what the (simulated) engine holds: the ONNX model as
    parsed, the sidecar's profile, a strongly typed network on every version, the settings."""
    if not trt_env.simulated:
        pytest.skip("reads the simulated engine's contents")
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine", "--min-batch", 1, "--opt-batch", 2, "--max-batch", 3,
                          "--workspace", 0.5, "--opt-level", 4)
    data, sidecar = trt_env.engine_data(engine), read_sidecar(engine)
    import onnx
    assert data.onnx == onnx.load(str(model)).SerializeToString()
    assert data.profiles == [{name: [r["min"], r["opt"], r["max"]] for name, r in sidecar.profiles.items()}]
    assert data.strongly_typed and data.optimization_level == 4
    assert data.memory_pool_limits == {"WORKSPACE": 2**29}
    assert data.tensorrt == sidecar.tensorrt == trt_env.trt.__version__
    assert data.compute_capability == [int(v) for v in sidecar.compute_capability.split(".")]
    assert [io[:3] for io in data.io] == [["rgb", "INPUT", "FLOAT"], ["aux", "INPUT", "FLOAT"],
                                          ["logits", "OUTPUT", "FLOAT"], ["labels", "OUTPUT", "UINT8"]]
    assert data.plugins == [] and data.timing_cache  # a fresh cache when none is given


def test_runtime_found_under_the_cuda_python_11_name(trt_env, tmp_path, monkeypatch):
    """cuda-python before 12.6 has the runtime as ``cuda.cudart`` only."""
    if not trt_env.simulated:
        pytest.skip("rearranges the simulated cuda-python")
    import sys
    package = sys.modules["cuda"]
    monkeypatch.setattr(package, "cudart", sys.modules["cuda.bindings.runtime"], raising=False)
    monkeypatch.delattr(package, "bindings")
    monkeypatch.delitem(sys.modules, "cuda.bindings")
    monkeypatch.delitem(sys.modules, "cuda.bindings.runtime")
    monkeypatch.setitem(sys.modules, "cuda.cudart", package.cudart)
    assert import_cudart() is package.cudart
    assert cuda_device(import_cudart())[1] == trt_env.cuda.capability
    engine = build_engine(tiny_gopt_onnx(tmp_path / "tiny.onnx"), tmp_path / "tiny.engine")
    with TensorRTBackend(engine) as backend:
        x = feeds(np.random.default_rng(0), 1)
        assert backend.infer(x)["labels"].shape == (1, H, W)


def test_fixed_shape_engine(trt_env, tmp_path):
    """A model of fixed shapes: no optimisation profile, a CUDA graph from the second call on."""
    model = tiny_gopt_onnx(tmp_path / "fixed.onnx", batch=1)
    engine = build_engine(model, tmp_path / "fixed.engine")
    if trt_env.simulated:
        assert trt_env.engine_data(engine).profiles == [{}]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    with TensorRTBackend(engine) as backend:
        assert backend.max_batch is None and backend.min_batch is None
        for call in range(3):
            x = feeds(rng, 1)
            assert (backend.infer(x)["labels"] == session.run(["labels"], x)[0]).all()
            assert (backend.graph is not None) == (call > 0)


def test_what_is_missing_on_a_machine_with_tensorrt(trt_env, tmp_path, monkeypatch, capsys):
    """TensorRT without a GPU, a GPU index this machine lacks, a TensorRT outside 10.3-11.x:
    one-line errors (exit status 2 from the builder)."""
    if not trt_env.simulated:
        pytest.skip("changes the simulated machine")
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine")
    with pytest.raises(ValueError, match=r"device cuda:1 asked for, but this machine has 1 CUDA GPU\(s\)"):
        TensorRTBackend(engine, device="cuda:1")
    monkeypatch.setattr(trt_env.cuda, "devices", 0)
    from export.tensorrt import run
    capsys.readouterr()
    assert run([str(model), "-o", str(tmp_path / "again.engine")]) == 2
    assert capsys.readouterr().err == "error: no CUDA GPU found\n"
    with pytest.raises(BackendUnavailable, match="no CUDA GPU found"):
        TensorRTBackend(engine)
    monkeypatch.setattr(trt_env.trt, "__version__", "12.0.0")
    with pytest.raises(BackendUnavailable, match=r"TensorRT 12.0.0 is installed; this project builds and runs "
                                                 r"TensorRT 10.3 to 11.x engines"):
        TensorRTBackend(engine)
    assert trt_env.cuda.live() == []


def test_a_shape_tensorrt_refuses_is_a_clear_error(trt_env, tmp_path):
    """A sidecar edited to promise more than its engine: TensorRT refuses the shape, the call
    fails with one line, and the backend goes on with shapes the engine takes."""
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine", "--max-batch", 2)
    path = sidecar_path(engine)
    d = json.loads(path.read_text())
    for profile in d["profiles"].values():
        profile["max"][0] = 4
    path.write_text(json.dumps(d))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    with TensorRTBackend(engine) as backend:
        with pytest.raises(ValueError, match=r"TensorRT refuses shape \[3, 3, 8, 12\] for input 'rgb'"):
            backend.infer(feeds(rng, 3))
        for batch in (2, 2, 1):
            x = feeds(rng, batch)
            assert (backend.infer(x)["labels"] == session.run(["labels"], x)[0]).all()
