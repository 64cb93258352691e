"""What users see: SimCMF clicks from the command line, overlays with a legend, progress that
never looks hung, error messages that say what a file is."""
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from export.progress import Progress
from export.simcmf_onnx import export_simcmf
from factories import tiny_gopt
from models import save_gopt
from runtime import Segmenter
from runtime_cli import cli
from runtime.colors import class_names, mask_overlay, overlay, palette
from test_simcmf import tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "samples", "mfnet_01234N.png")
@pytest.fixture(scope="module")
def simcmf(tmp_path_factory):
    d = tmp_path_factory.mktemp("simcmf_cli")
    export_simcmf(tiny_model(modality="rgbt"), d / "tiny", batch=1, progress=Progress(2))
    return d / "tiny.encoder.onnx"


@pytest.fixture(scope="module")
def gopt_onnx(tmp_path_factory):
    from export.onnx import parse_args, run

    d = tmp_path_factory.mktemp("gopt_cli")
    save_gopt(tiny_gopt(class_names=["void", "car", "person", "bike", "curve"]), d / "g.pt")
    assert run(parse_args([str(d / "g.pt"), "-o", str(d / "g.onnx"), "--no-check"])) == 0
    return d / "g.onnx"


def test_simcmf_clicks_from_the_command_line(simcmf, tmp_path):
    out = cli(simcmf, "--rgb", SAMPLE, "--points", "320,240", "500,400,0", "--out", tmp_path / "o")
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"mask: (\d+) pixels .* IoU estimate (-?[\d.]+), 2 click", out.stdout)
    assert m, out.stdout
    frame = cv2.imread(SAMPLE, cv2.IMREAD_UNCHANGED)
    mask, iou = Segmenter(simcmf).run(frame, points=[(320, 240), (500, 400)], labels=[1, 0])
    assert int(m.group(1)) == int(mask.sum()) and abs(float(m.group(2)) - iou) < 1e-3
    saved = cv2.imread(str(tmp_path / "o" / "mfnet_01234N_mask.png"), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint8 and ((saved > 0) == mask).all()
    over = cv2.imread(str(tmp_path / "o" / "mfnet_01234N_overlay.png"))
    assert over.shape[0] == 480 and over.shape[1] > 640  # the frame, and the legend beside it
    assert (over[240, 320] == (0, 220, 0)).all() and (over[400, 500] == (0, 0, 230)).all()  # the clicks
    assert "encoding the image" in out.stdout  # the slow first step is announced and timed

    # rgb + aux stacked into the 4-channel image
    cv2.imwrite(str(tmp_path / "rgb.png"), frame[..., :3])
    cv2.imwrite(str(tmp_path / "t.png"), frame[..., 3])
    two = cli(simcmf, "--rgb", tmp_path / "rgb.png", "--aux", tmp_path / "t.png", "--points", "320,240,1")
    assert two.returncode == 0 and f"mask: {int(Segmenter(simcmf).run(frame, points=[(320, 240)])[0].sum())} " \
        in two.stdout, two.stderr


@pytest.mark.parametrize("args, message", [
    (["--rgb", SAMPLE], "segments on clicks; pass --points"),
    (["--rgb", os.path.join(ROOT, "data", "samples", "esanet_rgb.png"), "--points", "5,5"],
     "takes 4-channel images"),
    (["--rgb", SAMPLE, "--points", "5,5,3"], "LABEL 1 (object) or 0"),
    (["--rgb", SAMPLE, "--points", "5000,5"], "points must lie inside"),
])
def test_simcmf_cli_errors_are_one_line(simcmf, args, message):
    out = cli(simcmf, *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and message in lines[-1], out.stderr
    assert len(lines) == 1 or lines[0].startswith("usage: "), out.stderr  # argparse prints its usage first


def test_gopt_refuses_points(gopt_onnx):
    out = cli(gopt_onnx, "--rgb", SAMPLE, "--points", "10,10")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--points are clicks for SimCMF models" in out.stderr


def swatch_of(image, colour, size=8) -> bool:
    """Whether ``image`` holds a size x size block of exactly ``colour``."""
    hit = (image == np.asarray(colour, np.uint8)).all(axis=2).astype(np.uint8)
    return bool(cv2.erode(hit, np.ones((size, size), np.uint8)).any())


def test_overlay_has_a_legend_of_the_classes_present(gopt_onnx, tmp_path):
    out = cli(gopt_onnx, "--rgb", SAMPLE, "--out", tmp_path / "o", "--quiet")
    assert out.returncode == 0, out.stderr
    labels = cv2.imread(str(tmp_path / "o" / "mfnet_01234N_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.ndim == 2 and labels.max() < 5  # plain class ids
    over = cv2.imread(str(tmp_path / "o" / "mfnet_01234N_overlay.png"))
    colours = palette(5)
    present = np.unique(labels)
    assert len(present) >= 2
    for k in range(1, 5):  # (class 0 is black, which dark night pixels can be too)
        assert swatch_of(over, colours[k]) == (k in present), k  # a swatch for every class present, no others
    # the shared helpers name classes as the model does
    assert class_names({"num_classes": 3, "class_names": ["a", "b"]}) == ["a", "b", "2"]
    frame = cv2.imread(SAMPLE)
    assert swatch_of(overlay(frame, labels, 5, ["void", "car", "person", "bike", "curve"]), colours[present[0]])
    mask = np.zeros(frame.shape[:2], bool)
    mask[100:200, 100:300] = True
    assert swatch_of(mask_overlay(frame, mask, [(150, 150)], [1]), (255, 144, 30))


def test_the_legend_hides_nothing():
    """The legend is a strip beside the frame: no pixel of the frame is covered (the depth
    demo's 512x424 frame with every one of SUN RGB-D's 37 classes, each in the legend, none
    cut off), and docs/runtime.md's background click at (100, 50) shows in its own colour."""
    from models.demo_checkpoint import SUNRGBD_CLASSES

    bgr = cv2.imread(os.path.join(ROOT, "data", "samples", "esanet_rgb.png"), cv2.IMREAD_COLOR)
    H, W = bgr.shape[:2]
    labels = (np.arange(H * W).reshape(H, W) * 37 // (H * W)).astype(np.uint8)
    with_legend = overlay(bgr, labels, 37, SUNRGBD_CLASSES)
    assert with_legend.shape[0] == H and with_legend.shape[1] > W
    assert (with_legend[:, :W] == overlay(bgr, labels, 37)).all()  # the frame as it is without a legend
    strip = with_legend[:, W:]
    assert all(swatch_of(strip, colour, 6) for colour in palette(37)[1:])  # every class, no "+N more"
    frame = cv2.imread(SAMPLE)
    mask = np.zeros(frame.shape[:2], bool)
    mask[150:330, 230:420] = True
    over = mask_overlay(frame, mask, [(320, 240), (100, 50)], [1, 0])
    assert (over[50, 100] == (0, 0, 230)).all() and (over[240, 320] == (0, 220, 0)).all()
    assert swatch_of(over[:, 640:], (255, 144, 30), 6)


def test_demo_shares_the_colour_module():
    src = open(os.path.join(ROOT, "demo.py")).read()
    assert "from runtime.colors import" in src and "def palette" not in src


def test_progress_ticks_while_a_step_runs(capsys):
    progress = Progress(2, tick_s=0.05)
    with progress.unnumbered("loading"):
        pass
    with progress("a slow step"):
        time.sleep(0.3)
    with progress("a quick step"):
        pass
    out = capsys.readouterr().out
    assert re.search(r"\[1/2\] a slow step \.\.\.( \d+ s \.\.\.)+ [\d.]+ s", out), out
    assert "[2/2] a quick step" in out and "loading ..." in out


def test_export_step_counters_are_consistent(tmp_path, capsys):
    from export.onnx import parse_args, run

    save_gopt(tiny_gopt(), tmp_path / "m.pt")
    assert run(parse_args([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx")])) == 0
    steps = re.findall(r"\[(\d+)/(\d+)\]", capsys.readouterr().out)
    assert steps and {n for _, n in steps} == {str(len(steps))}
    assert [int(i) for i, _ in steps] == list(range(1, len(steps) + 1))


def test_a_text_file_as_checkpoint_says_what_it_is(tmp_path):
    notes = tmp_path / "notes.pt"
    notes.write_text("epoch 1\nloss 0.31\n")
    out = subprocess.run([sys.executable, "-m", "export.onnx", str(notes)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    err = out.stderr.strip()
    assert out.returncode == 2 and len(err.splitlines()) == 1, err
    assert "it is a text file" in err and "torch.save" in err
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", err.replace("ModelFileError", "")), err
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="it is an empty file"):
        Segmenter(tmp_path / "empty.pt")


def test_ticks_reach_the_terminal_while_a_library_redirects_stdout(capsys):
    import contextlib
    import io

    progress = Progress(1, tick_s=0.05)
    with progress("exporting"), contextlib.redirect_stdout(io.StringIO()):  # as export_graph silences torch
        time.sleep(0.3)
    assert re.search(r"\[1/1\] exporting \.\.\.( \d+ s \.\.\.)+ [\d.]+ s", capsys.readouterr().out)
