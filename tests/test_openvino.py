"""The OpenVINO backend's own behaviour: the precision it computes in, the compiled-model
cache, the model kinds it runs (INT8 with integer kernels) and the ones it refuses."""
import collections
import contextlib
import io
import os
import shutil
import time

import cv2
import numpy as np
import onnx
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[openvino]')")

import factories  # noqa: E402

from export import graph  # noqa: E402
from export.onnx import SAMPLES, export_gopt  # noqa: E402
from export.progress import Progress  # noqa: E402
from export.quantize import run as quantize  # noqa: E402
from runtime import ModelFileError, Segmenter  # noqa: E402
from runtime.metadata import read_onnx_info  # noqa: E402
from runtime.backends.openvino_backend import OpenVINOBackend, default_cache_dir  # noqa: E402
from test_quantize import SIZE, well_conditioned_gopt  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("openvino")
    export_gopt(well_conditioned_gopt(), d / "tiny.onnx", progress=Progress(1))
    export_gopt(factories.tiny_gopt(1, img_size=SIZE), d / "other.onnx", progress=Progress(1))
    with contextlib.redirect_stdout(io.StringIO()):
        assert quantize([str(d / "tiny.onnx"), "--int8", "--no-check"]) == 0
        assert quantize([str(d / "tiny.onnx"), "--int8", "--target", "tensorrt", "--no-check"]) == 0
    return d


@pytest.fixture
def night():
    frame = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    return frame[..., :3], frame[..., 3]


def layer_precisions(backend) -> collections.Counter:
    """(layer type, precision) of every compute layer OpenVINO really runs (its runtime model)."""
    counts = collections.Counter()
    for op in backend.compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str)
        if kind in ("FullyConnected", "MatMul", "Convolution", "MVN", "Softmax"):
            counts[(kind, rt["runtimePrecision"].astype(str))] += 1
    return counts


def test_fp32_model_computes_in_fp32(models, night, tmp_path):
    """OpenVINO would choose bf16 by itself on a CPU that has it; the backend asks for f32."""
    b = OpenVINOBackend(models / "tiny.onnx", cache_dir=tmp_path)
    assert str(b.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    precisions = layer_precisions(b)
    assert precisions and {p for _, p in precisions} == {"f32"}, precisions
    with Segmenter(models / "tiny.onnx", device="cpu") as ort_seg:
        seg = Segmenter.from_backends({"gopt": b})
        la, ga = ort_seg.run(*night, return_logits=True)
        lb, gb = seg.run(*night, return_logits=True)
    assert (la == lb).all() and np.abs(ga - gb).max() <= 1e-4


def test_bf16_when_asked(models, night, tmp_path):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(ValueError, match="needs a CPU with native bf16") as e:
            OpenVINOBackend(models / "tiny.onnx", precision="bf16", cache_dir=tmp_path)
        assert "\n" not in str(e.value)
        return
    b = OpenVINOBackend(models / "tiny.onnx", precision="bf16", cache_dir=tmp_path)
    assert "bf16" in repr(b) and ("FullyConnected", "bf16") in layer_precisions(b)
    assert "precision=bf16" in repr(Segmenter.from_backends({"gopt": b}))
    with Segmenter(models / "tiny.onnx", device="cpu") as ort_seg:
        agreement = (Segmenter.from_backends({"gopt": b}).run(*night) == ort_seg.run(*night)).mean()
    print(f"OpenVINO bf16 vs ONNX Runtime fp32, night frame: labels {100 * agreement:.2f}%")
    assert agreement >= 0.95


def test_bf16_refused_in_one_line_on_a_cpu_without_it(models, tmp_path, monkeypatch):
    """Simulated: the CPU's capability list without BF16 (this machine's may have it)."""
    import openvino as ov

    real = ov.Core.get_property

    def without_bf16(self, device, name):
        value = real(self, device, name)
        return [c for c in value if c != "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else value

    monkeypatch.setattr(ov.Core, "get_property", without_bf16)
    with pytest.raises(ValueError, match=r"precision='bf16' needs a CPU with native bf16 .* offers .*FP32") as e:
        OpenVINOBackend(models / "tiny.onnx", precision="bf16", cache_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_compiled_model_is_cached_and_a_changed_file_compiles_anew(models, night, tmp_path):
    cache = tmp_path / "cache"
    model = tmp_path / "model.onnx"
    shutil.copy(models / "tiny.onnx", model)
    t0 = time.perf_counter()
    first = OpenVINOBackend(model, cache_dir=cache)
    cold = time.perf_counter() - t0
    blobs = list(cache.glob("*.blob"))
    assert not first.loaded_from_cache and blobs
    t0 = time.perf_counter()
    second = OpenVINOBackend(model, cache_dir=cache)
    warm = time.perf_counter() - t0
    print(f"tiny model: compiled in {cold:.2f} s, loaded from the cache in {warm:.2f} s")
    assert second.loaded_from_cache
    expected = Segmenter.from_backends({"gopt": first}).run(*night)
    assert (Segmenter.from_backends({"gopt": second}).run(*night) == expected).all()
    # Another model under the same name: never the stale compiled one.
    time.sleep(0.01)
    shutil.copy(models / "other.onnx", model)
    os.utime(model)
    third = OpenVINOBackend(model, cache_dir=cache)
    with Segmenter(models / "other.onnx", device="cpu") as ref:
        assert not third.loaded_from_cache
        assert (Segmenter.from_backends({"gopt": third}).run(*night) == ref.run(*night)).all()


def test_cache_default_off_and_unwritable(models, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mmseg-deploy" / "openvino"
    assert OpenVINOBackend(models / "tiny.onnx").cache_dir == default_cache_dir()
    assert list(default_cache_dir().glob("*.blob"))
    off = OpenVINOBackend(models / "tiny.onnx", cache_dir="")
    assert off.cache_dir is None and not off.loaded_from_cache
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match="compiled-model cache off"):
        assert OpenVINOBackend(models / "tiny.onnx", cache_dir=tmp_path / "file" / "sub").cache_dir is None


def test_int8_models_run(models, night, tmp_path):
    """The Q/DQ model runs with OpenVINO's integer kernels; the dynamic model (ONNX Runtime's)
    runs correctly, its linear layers in fp32. Both agree with ONNX Runtime running the same file."""
    qdq = OpenVINOBackend(models / "tiny.int8.qdq.onnx", cache_dir=tmp_path)
    precisions = layer_precisions(qdq)
    assert precisions[("FullyConnected", "i8")] >= 10 and ("FullyConnected", "f32") not in precisions, precisions
    dynamic = OpenVINOBackend(models / "tiny.int8.onnx", cache_dir=tmp_path)
    for b, name in ((qdq, "tiny.int8.qdq.onnx"), (dynamic, "tiny.int8.onnx")):
        with Segmenter(models / name, device="cpu") as ort_seg:
            agreement = (Segmenter.from_backends({"gopt": b}).run(*night) == ort_seg.run(*night)).mean()
        print(f"{name}: OpenVINO vs ONNX Runtime labels {100 * agreement:.2f}%")
        assert agreement >= 0.99


def test_simcmf_masks_agree_with_onnx_runtime(tmp_path):
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    _, (encoder, _) = export_simcmf(tiny_model(modality="rgbt"), tmp_path / "tiny", batch=1, progress=Progress(2))
    image = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    with Segmenter(encoder) as a, Segmenter(encoder, backend="openvino", cache_dir=tmp_path / "cache") as b:
        assert b.backend == "openvino" and b.graphs["decoder"].name == "openvino"
        for clicks in ([(320, 240)], [(100, 50), (500, 400)]):
            (ma, ia), (mb, ib) = a.run(image, points=clicks), b.run(image, points=clicks)
            assert (ma == mb).mean() >= 0.999 and abs(ia - ib) <= 1e-3


def test_fused_kernel_graphs_are_refused_in_one_line(models, tmp_path):
    model = onnx.load(str(models / "tiny.onnx"))
    info = read_onnx_info(models / "tiny.onnx")
    info.plugins = ["GoptGroupMerge", "GoptPromptInject"]
    graph.set_metadata(model, info)
    onnx.save(model, str(tmp_path / "fused.onnx"))
    with pytest.raises(ModelFileError, match="OpenVINO cannot run its fused GoPT nodes .* --fused-kernels") as e:
        Segmenter(tmp_path / "fused.onnx", backend="openvino")
    assert "\n" not in str(e.value)


def test_bad_model_files_and_options(models, tmp_path):
    (tmp_path / "corrupt.onnx").write_bytes((models / "tiny.onnx").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt.onnx: not a readable ONNX model"):
        Segmenter(tmp_path / "corrupt.onnx", backend="openvino")
    with pytest.raises(ValueError, match="runs on the CPU: device must be None or 'cpu'"):
        Segmenter(models / "tiny.onnx", backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="precision must be None"):
        Segmenter(models / "tiny.onnx", backend="openvino", precision="int4")
    with pytest.raises(ValueError, match="providers= are ONNX Runtime's"):
        Segmenter(models / "tiny.onnx", backend="openvino", providers=["CPUExecutionProvider"])


def test_fp16_export_computes_in_fp32(models, night, tmp_path):
    """An fp16 export on the CPU: its fp16 weights, f32 arithmetic (the hint), labels as ONNX Runtime's."""
    export_gopt(well_conditioned_gopt(), tmp_path / "half.onnx", fp16=True, progress=Progress(1))
    b = OpenVINOBackend(tmp_path / "half.onnx", cache_dir=tmp_path / "cache")
    assert b.info.precision == "fp16" and b.compute_precision == "fp32"
    assert {p for _, p in layer_precisions(b)} == {"f32"}
    with Segmenter(tmp_path / "half.onnx", device="cpu") as ort_seg:
        agreement = (Segmenter.from_backends({"gopt": b}).run(*night) == ort_seg.run(*night)).mean()
    assert agreement >= 0.99
