"""python -m export.quantize --eval DIR: the check reports the quantized model's mean IoU beside
the fp32 model's on a labelled folder, and fails beyond --eval-tolerance."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import factories
from export.onnx import export_gopt
from export.progress import Progress
from export.quantize import run
from runtime import Segmenter

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
FRAMES = ("mfnet_01234N", "mfnet_01477D")


def gentle_gopt():
    """The tiny GoPT with weights ~N(0, 0.05^2), which INT8 keeps within the label-agreement check
    (test_quantize.py's well-conditioned model)."""
    model = factories.tiny_gopt(0, img_size=(96, 128), class_names=list("abcde"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.25)
    model.backbone.refresh_pos_embed()
    return model.eval()


def labelled_folder(d, model):
    """The fp32 export of ``model``, and a folder layout of the two bundled frames labelled by it."""
    fp32 = d / "tiny.onnx"
    export_gopt(model, fp32, progress=Progress(1))
    data = d / "data"
    for sub in ("rgb", "aux", "labels"):
        (data / sub).mkdir(parents=True)
    with Segmenter(fp32, device="cpu") as seg:
        for name in FRAMES:
            f = cv2.imread(str(SAMPLES / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(data / "rgb" / f"{name}.png"), f[..., :3])
            cv2.imwrite(str(data / "aux" / f"{name}.png"), f[..., 3])
            cv2.imwrite(str(data / "labels" / f"{name}.png"), seg.run(f[..., :3], f[..., 3]))
    return fp32, data


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return labelled_folder(tmp_path_factory.mktemp("quantize_eval"), gentle_gopt())


def eval_line(text):
    line = next(x for x in text.splitlines() if "mean IoU on" in x and "labels agree" in x)
    return line, float(line.split("% (")[1].split(" points")[0]), float(line.rsplit("labels agree ", 1)[1].rstrip("%"))


def test_eval_reports_the_mean_iou_change(labelled, tmp_path, capsys):
    fp32, data = labelled
    out = tmp_path / "q.int8.onnx"
    rc = run([str(fp32), "--int8", "-o", str(out), "--eval", str(data), "--eval-tolerance", "100"])
    text = capsys.readouterr().out
    assert rc == 0, text
    line, change, agree = eval_line(text)
    # The labels are the fp32 model's own: it scores 100%; the INT8 model scores what its labels keep.
    assert line.startswith("  ok   ") and "(2 frames)" in line and "fp32 100.00%" in line, line
    assert change <= 0 and (change == 0) == (agree == 100.0)
    assert "mean IoU at most 100 points below it" in text


def test_eval_fails_beyond_the_tolerance(tmp_path, capsys):
    # The factory's N(0, 0.2^2) weights make a chaotic network: INT8 rounding flips labels, so its
    # mean IoU against the fp32 model's own labels drops below 100%.
    fp32, data = labelled_folder(tmp_path, factories.tiny_gopt(0, class_names=list("abcde")))
    rc = run([str(fp32), "--int8", "--eval", str(data), "--eval-tolerance", "0.01"])
    text = capsys.readouterr().out
    line, change, agree = eval_line(text)
    assert agree < 100.0 and change < -0.01, line
    assert rc == 1 and line.startswith("  FAIL mean IoU on") and "tolerance -0.01" in line


def test_eval_arguments_are_checked_before_quantizing(labelled, tmp_path, capsys):
    fp32, data = labelled
    out = tmp_path / "never.onnx"
    assert run([str(fp32), "--int8", "-o", str(out), "--eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --eval: ") and "no labelled layout this reads" in err and err.count("\n") == 1
    assert run([str(fp32), "--int8", "-o", str(out), "--eval", str(data), "--no-check"]) == 2
    assert "cannot be combined with --no-check" in capsys.readouterr().err
    assert run([str(fp32), "--int8", "-o", str(out), "--eval", str(data), "--eval-format", "mfnet"]) == 2
    assert "expected DIR/images/" in capsys.readouterr().err
    assert not out.exists()
