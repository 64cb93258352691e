"""The README's main job on the bundled sample, as a user runs it."""
import os
import subprocess
import sys

import cv2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    ckpt = tmp_path / "demo.pt"
    out = subprocess.run([sys.executable, "demo.py", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                          "--runs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UNTRAINED" in out.stdout
    assert "within tolerance" in out.stdout  # the export was checked against PyTorch
    table = out.stdout.split("labels = torch")[1]
    assert "torch" in table and "onnxruntime" in table and "100.00%" in table
    overlay = cv2.imread(str(tmp_path / "out" / "overlay.png"))
    assert overlay.shape == (480, 640, 3)
    import torch

    saved = torch.load(ckpt, weights_only=True)
    assert saved["format"] == "gopt/1" and saved["config"]["untrained"] is True
    assert "UNTRAINED" in saved["config"]["description"]


@pytest.mark.slow
def test_demo_rgbd_end_to_end(tmp_path):
    """python demo.py --modality depth: the RGB-D ViT-B demo passes its fp32 export check and
    runs on the bundled ESANet frame."""
    ckpt = tmp_path / "demo_rgbd.pt"
    out = subprocess.run([sys.executable, "demo.py", "--modality", "depth", "--checkpoint", str(ckpt),
                          "--out", str(tmp_path / "out"), "--runs", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "within tolerance" in out.stdout and "RGB-depth" in out.stdout
    table = out.stdout.split("labels = torch")[1]
    assert "onnxruntime" in table and "100.00%" in table
    assert (tmp_path / "demo_rgbd.onnx").is_file() and not (tmp_path / "demo_rgbd.unverified.onnx").exists()
    overlay = cv2.imread(str(tmp_path / "out" / "overlay.png"))
    assert overlay.shape[:2] == (424, 512)
