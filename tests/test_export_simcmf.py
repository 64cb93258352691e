"""SimCMF -> two ONNX graphs: parity with the PyTorch model as loaded (LoRA unfolded), dynamic
click count, metadata, no LoRA in the graph, and the Segmenter on a real RGB-T frame."""
import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import graph
from export.progress import Progress
from export.simcmf_onnx import check_simcmf, export_simcmf
from export.trt_ops import TRT10_SUPPORTED_OPS
from models.simcmf_checkpoint import save_simcmf
from runtime import Segmenter
from runtime.metadata import read_onnx_info
from runtime.backends.torch_backend import simcmf_backends
from test_simcmf import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "samples", "mfnet_01234N.png")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("simcmf")
    model = tiny_model(modality="rgbt")
    _, paths = export_simcmf(model, d / "tiny", batch=1, progress=Progress(2))
    return model, paths


def test_parity_with_unfolded_model(exported):
    model, paths = exported
    results = check_simcmf(model, paths, 1, Progress(2))
    names = [r.name for r in results]
    assert any(n.startswith("real frame") for n in names)  # the bundled RGB-T frame was checked
    for r in results:
        # fp32: accumulation-order rounding only; masks are the logits' sign.
        assert r.max_abs <= 1e-4, r.line()
        if r.label_agreement is not None:
            assert r.label_agreement >= 0.999, r.line()


def test_decoder_takes_any_number_of_clicks(exported):
    model, paths = exported
    enc = ort.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(paths[1]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(int.from_bytes(os.urandom(2), "little")).standard_normal((1, 4, 128, 128),
                                                                                     dtype=np.float32)
    (emb,) = enc.run(None, {"x": x})
    for n in (1, 2, 7):
        coords = np.random.default_rng(n).uniform(0, 127, (1, n, 2)).astype(np.float32)
        labels = np.ones((1, n), np.int64)
        logits, iou = dec.run(None, {"embeddings": emb, "point_coords": coords, "point_labels": labels})
        with torch.no_grad():
            ref, ref_iou = model.decode(torch.from_numpy(emb), torch.from_numpy(coords), torch.from_numpy(labels))
        assert logits.shape == (1, 1, 32, 32) and iou.shape == (1, 1)
        assert np.abs(logits - ref.numpy()).max() <= 1e-4
        assert np.abs(iou - ref_iou.numpy()).max() <= 1e-4


def test_graphs_are_folded_and_tensorrt_friendly(exported):
    _, paths = exported
    for path in paths:
        m = onnx.load(path)
        assert not [t.name for t in m.graph.initializer if "lora" in t.name.lower()]
        assert graph.op_types(m) <= TRT10_SUPPORTED_OPS
        assert graph.tensorrt_problems(m) == []
        assert "Einsum" not in graph.op_types(m)  # rel-pos terms as MatMul
    enc, dec = read_onnx_info(paths[0]), read_onnx_info(paths[1])
    assert (enc.kind, dec.kind) == ("simcmf_encoder", "simcmf_decoder")
    assert enc.companion == paths[1].name and dec.companion == paths[0].name
    assert enc.config["lora_folded"] is True and enc.config["modality"] == "rgbt"
    assert dec.input("point_coords").shape == [1, "num_points", 2]


def test_segmenter_clicks_on_a_real_rgbt_frame(exported):
    model, paths = exported
    frame = cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED)  # H x W x 4: BGR + thermal, as SimCMF's RGB-T
    seg = Segmenter(paths[0])
    assert seg.kind == "simcmf" and seg.backend == "onnxruntime"
    calls = []
    encoder_infer = seg.graphs["encoder"].infer
    seg.graphs["encoder"].infer = lambda *a, **k: calls.append(1) or encoder_infer(*a, **k)
    mask, iou = seg.run(frame, points=[(320, 240)])
    mask2, _ = seg.run(frame, points=[(100, 400), (500, 100)], labels=[1, 0])
    assert mask.shape == (480, 640) and mask.dtype == bool and isinstance(iou, float)
    assert len(calls) == 1  # two clicks on one frame: one encoder run
    seg.run(frame[::-1].copy(), points=[(10, 10)])
    assert len(calls) == 2  # a new frame runs the encoder again

    ref = Segmenter.from_backends(simcmf_backends(model, torch.device("cpu")))
    ref_mask, ref_iou = ref.run(frame, points=[(320, 240)])
    assert (mask == ref_mask).mean() >= 0.999
    assert abs(iou - ref_iou) <= 1e-4


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=[(640, 10)]), "inside the 640x480 image"),
    (dict(points=[(-1, 10)]), "inside the 640x480 image"),
    (dict(points=[]), "at least one click"),
    (dict(points=[(1, 1)], labels=[2]), "one 0 \\(background\\) or 1 \\(foreground\\)"),
    (dict(points=[(1, 1), (2, 2)], labels=[1]), "one 0 \\(background\\) or 1"),
])
def test_bad_clicks(exported, kwargs, message):
    frame = cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED)
    with pytest.raises(ValueError, match=message):
        Segmenter(exported[1][0]).run(frame, **kwargs)


def test_wrong_channel_count(exported):
    frame = cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED)
    with pytest.raises(ValueError, match="image must be H x W x 4"):
        Segmenter(exported[1][0]).run(frame[..., :3], points=[(1, 1)])


def test_cli_refuses_a_delta_without_base(tmp_path):
    save_simcmf(tiny_model(), tmp_path / "delta.pth")
    out = subprocess.run([sys.executable, "-m", "export.onnx", str(tmp_path / "delta.pth")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--base" in lines[0], out.stderr
