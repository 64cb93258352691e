"""Segmenter on real frames: backends agree, batching, errors, and no torch for ONNX models."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from factories import tiny_gopt
from export.onnx import parse_args, run
from models import save_gopt
from runtime import ModelFileError, Segmenter
from runtime.backends.base import check_feeds
from runtime.metadata import TensorSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "samples", "mfnet_01234N.png")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runtime")
    save_gopt(tiny_gopt(), d / "tiny.pt")
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "fixed.onnx"), "--no-check"])) == 0
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "dynamic.onnx"), "--dynamic-batch", "--no-check"])) == 0
    return d


@pytest.fixture(scope="module")
def frames():
    mfnet = cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED)
    day = cv2.imread(os.path.join(ROOT, "data", "samples", "mfnet_01477D.png"), cv2.IMREAD_UNCHANGED)
    return [(mfnet[..., :3], mfnet[..., 3]), (day[..., :3], day[..., 3])]


def test_onnx_and_torch_backends_agree_on_real_frames(models_dir, frames, onnx_backend):
    onnx_seg = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend)
    torch_seg = Segmenter(models_dir / "tiny.pt", device="cpu")
    assert onnx_seg.backend == onnx_backend and torch_seg.backend == "torch"
    assert f"backend={onnx_backend}" in repr(onnx_seg) and "device=cpu" in repr(onnx_seg)
    for rgb, thermal in frames:
        a, b = onnx_seg.run(rgb, thermal), torch_seg.run(rgb, thermal)
        assert a.shape == (480, 640) and a.dtype == np.uint8
        # Labels come from an argmax: allow a flip at a near-tie, nothing more.
        assert (a == b).mean() >= 0.999


def test_labels_are_the_model_output_resized_to_the_frame(models_dir, frames, onnx_backend):
    """The frame goes through preprocessing exactly once, and labels are mapped back with
    nearest-neighbour sampling from the model's own label map."""
    from runtime.preprocess import preprocess_aux, preprocess_rgb

    model = tiny_gopt()
    rgb, thermal = frames[0]
    cfg = model.config
    x = preprocess_rgb(rgb, cfg.img_size, cfg.rgb_mean, cfg.rgb_std)
    a = preprocess_aux(thermal, cfg.img_size, cfg.aux_mean, cfg.aux_std, "thermal")
    with torch.no_grad():
        small = model.predict(torch.from_numpy(x), torch.from_numpy(a))[0].numpy().astype(np.uint8)
    labels = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend).run(rgb, thermal)
    expected = cv2.resize(small, (640, 480), interpolation=cv2.INTER_NEAREST)
    assert (labels == expected).mean() >= 0.999


def test_return_logits(models_dir, frames, onnx_backend):
    seg = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend)
    labels, logits = seg.run(*frames[0], return_logits=True)
    assert logits.shape == (5, 480, 640) and logits.dtype == np.float32
    # Logits are resized bilinearly, labels by nearest neighbour: they differ in a band along class
    # boundaries, which is wide here because the tiny model runs at 48x64 (a 10x upscale).
    assert (logits.argmax(0) == labels).mean() >= 0.95


def test_run_batch_fixed_and_dynamic(models_dir, frames, onnx_backend):
    pairs = frames + frames[:1]  # 3 pairs
    fixed = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend).run_batch(pairs)
    dynamic = Segmenter(models_dir / "dynamic.onnx", backend=onnx_backend).run_batch(pairs)
    single = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend)
    singles = [single.run(*p) for p in pairs]
    assert len(fixed) == len(dynamic) == 3
    for f, d, s in zip(fixed, dynamic, singles):
        assert (f == s).all()
        assert (d == s).mean() >= 0.999


def test_rgb_colour_order_option(models_dir, frames):
    rgb, thermal = frames[0]
    seg = Segmenter(models_dir / "fixed.onnx")
    bgr_result = seg.run(rgb, thermal)
    assert (seg.run(rgb[..., ::-1].copy(), thermal, color_order="rgb") == bgr_result).all()
    assert Segmenter(models_dir / "fixed.onnx", color_order="rgb").run(rgb[..., ::-1].copy(), thermal).shape


@pytest.mark.parametrize("make, message", [
    (lambda rgb, t: (rgb[..., :2], t), r"rgb must be H x W x 3"),
    (lambda rgb, t: (rgb, t[:100]), "same size"),
    (lambda rgb, t: (rgb.astype(np.float32), t), "rgb must be uint8"),
    (lambda rgb, t: (rgb, np.full(t.shape, np.nan, np.float32)), "NaN"),
    (lambda rgb, t: (rgb, np.stack([t, t], -1)), "thermal must be H x W"),
    (lambda rgb, t: (rgb, None), "GoPT takes run"),
    (lambda rgb, t: (np.asarray(rgb[0, 0, 0]), t), "rgb must be an H x W x 3 image, got a 0-d array"),
    (lambda rgb, t: (rgb, t[0]), "aux must be an H x W or H x W x C image, got a 1-d array"),
    (lambda rgb, t: (rgb[None], t), r"rgb must be an H x W x 3 image, got a 4-d array of shape \(1, 480, 640, 3\)"),
])
def test_bad_frames_give_one_line_errors(models_dir, frames, make, message, onnx_backend):
    seg = Segmenter(models_dir / "fixed.onnx", backend=onnx_backend)
    with pytest.raises(ValueError, match=message) as e:
        seg.run(*make(*frames[0]))
    assert "\n" not in str(e.value)


def test_bad_model_files(tmp_path, models_dir):
    with pytest.raises(ValueError, match="no such file"):
        Segmenter(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown model file type"):
        Segmenter(tmp_path / "model.tflite")
    (tmp_path / "corrupt.onnx").write_bytes((models_dir / "fixed.onnx").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="ONNX Runtime cannot load it"):
        Segmenter(tmp_path / "corrupt.onnx")
    with pytest.raises(ValueError, match="device must be"):
        Segmenter(models_dir / "fixed.onnx", device="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        Segmenter(models_dir / "fixed.onnx", backend="tflite")
    with pytest.raises(ValueError, match=r"the openvino backend runs \.onnx files, not \.pt"):
        Segmenter(models_dir / "tiny.pt", backend="openvino")


def test_check_feeds_names_shapes_and_dynamic_axes():
    specs = [TensorSpec("a", ["batch", 3], "float32"), TensorSpec("b", ["batch", "n", 2], "int64")]
    ok = {"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 5, 2), np.int64)}
    check_feeds(specs, ok)
    for feeds, message in [
        ({"a": ok["a"]}, "expected inputs"),
        ({**ok, "a": np.zeros((2, 4), np.float32)}, r"must be \['batch', 3\]"),
        ({**ok, "a": np.zeros((3, 3), np.float32)}, "another input has batch = 3"),
        ({**ok, "b": ok["b"].astype(np.int32)}, "must be int64"),
        ({**ok, "a": np.full((2, 3), np.inf, np.float32)}, "NaN or infinite"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_feeds(specs, feeds)
    with pytest.raises(ValueError, match="above this model's maximum 1"):
        check_feeds(specs, ok, max_batch=1)


def test_onnx_path_runs_without_torch(models_dir, onnx_backend):
    """A robot running an exported model never imports PyTorch."""
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import cv2
from runtime import Segmenter
frame = cv2.imread({SAMPLE!r}, cv2.IMREAD_UNCHANGED)
seg = Segmenter({str(models_dir / 'fixed.onnx')!r}, backend={onnx_backend!r})
labels = seg.run(frame[..., :3], frame[..., 3])
assert labels.shape == (480, 640), labels.shape
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok", seg.backend)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"ok {onnx_backend}"


def test_resize_aux_option(models_dir, frames):
    rgb, thermal = frames[0]
    half = cv2.resize(thermal, (320, 240), interpolation=cv2.INTER_AREA)
    with pytest.raises(ValueError, match="pass resize_aux=True"):
        Segmenter(models_dir / "fixed.onnx").run(rgb, half)
    labels = Segmenter(models_dir / "fixed.onnx", resize_aux=True).run(rgb, half)
    assert labels.shape == (480, 640)
