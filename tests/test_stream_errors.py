"""Streams survive bad frames, report every frame they did not segment, and the command line
checks its inputs as the Python API does."""
import os

import cv2
import numpy as np
import pytest

from runtime import Segmenter
from runtime_cli import cli
from runtime.sources.streams import FolderPair, VideoPair, open_source, stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples")
@pytest.fixture(scope="module")
def models(tiny_gopt_models):
    return tiny_gopt_models


@pytest.fixture(scope="module")
def pair():
    img = cv2.imread(os.path.join(SAMPLES, "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    small = cv2.resize(img, (80, 60), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[..., :3]), np.ascontiguousarray(small[..., 3])


CORRUPT = {7: ("rgb", "truncated"), 21: ("thermal", "empty"), 38: ("rgb", "text")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, pair):
    """50 rgb / thermal pairs; three corrupt files: a truncated PNG, an empty file, a text file."""
    d = tmp_path_factory.mktemp("pairs")
    rgb_dir, aux_dir = d / "rgb", d / "thermal"
    rgb_dir.mkdir(), aux_dir.mkdir()
    bgr, thermal = pair
    for i in range(50):
        cv2.imwrite(str(rgb_dir / f"{i:03d}.png"), np.roll(bgr, i, axis=1))
        cv2.imwrite(str(aux_dir / f"{i:03d}.png"), np.roll(thermal, i, axis=1))
    for i, (side, how) in CORRUPT.items():
        path = d / side / f"{i:03d}.png"
        data = path.read_bytes()
        path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "text": b"frame list\n1 2 3\n"}[how])
    return rgb_dir, aux_dir


def test_stream_skips_bad_pairs_and_names_them(models, folders):
    seg = Segmenter(models / "thermal.onnx")
    frames = stream(seg, open_source(*folders))
    results = list(frames)
    assert len(results) == 47
    assert [r.frame.index for r in results] == [i for i in range(50) if i not in CORRUPT]
    assert results[0].frame.sources == ("000.png", "000.png")
    assert [f.index for f in frames.failed] == sorted(CORRUPT)
    for f in frames.failed:
        assert f"{f.index:03d}.png" in f.reason and "not a readable image" in f.reason
        assert "\n" not in f.line() and f.sources == (f"{f.index:03d}.png",) * 2


def test_on_error_stop_keeps_the_first_error(models, folders):
    seg = Segmenter(models / "thermal.onnx")
    got = []
    with pytest.raises(ValueError, match="007.png: not a readable image"):
        for r in stream(seg, open_source(*folders), on_error="stop"):
            got.append(r.frame.index)
    assert got == list(range(7))
    with pytest.raises(ValueError, match="on_error must be"):
        stream(seg, open_source(*folders), on_error="ignore")


def test_failed_inference_is_a_failed_frame(models, folders):
    seg = Segmenter(models / "thermal.onnx")

    class FailsOnThirdFrame:  # the real Segmenter; its third inference raises as a NaN output would
        kind, calls = "gopt", 0

        def prepare(self, *a):
            return seg.prepare(*a)

        def run_prepared(self, prepared):
            self.calls += 1
            if self.calls == 3:
                raise ValueError("the model's logits are not finite")
            return seg.run_prepared(prepared)

    frames = stream(FailsOnThirdFrame(), open_source(*folders))
    results = list(frames)
    assert len(results) == 46 and len(frames.failed) == 4
    assert any("logits are not finite" in f.reason for f in frames.failed)


def test_cli_skips_reports_and_exits_1(models, folders, tmp_path, pair):
    rgb_dir, aux_dir = folders
    # and an aux of another size: its pair fails, the stream goes on
    other = tmp_path / "thermal"
    other.mkdir()
    for p in aux_dir.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(other / "044.png"), cv2.resize(pair[1], (40, 30)))
    out = cli(models / "thermal.onnx", "--rgb", rgb_dir, "--aux", other, "--quiet", "--out", tmp_path / "o")
    assert out.returncode == 1, out.stderr[-2000:]
    skipped = [line for line in out.stderr.splitlines() if line.startswith("skipped frame")]
    assert len(skipped) == 4, out.stderr
    assert "frames 46, " in out.stdout and "failed 4" in out.stdout
    summary = out.stdout.split("failed frames (4):")[1]
    for name in ("007.png", "021.png", "038.png", "044.png"):
        assert name in summary
    assert "differ in size" in summary
    assert len(list((tmp_path / "o").glob("*_labels.png"))) == 46

    stop = cli(models / "thermal.onnx", "--rgb", rgb_dir, "--aux", aux_dir, "--quiet", "--on-error", "stop")
    assert stop.returncode == 2 and "007.png: not a readable image" in stop.stderr


def write_video(path, frames):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h), True)
    for f in frames:
        writer.write(f)
    writer.release()


def test_unmatched_frames_are_named(models, tmp_path, pair):
    bgr, thermal = pair
    write_video(tmp_path / "rgb.avi", [np.roll(bgr, i, axis=1) for i in range(40)])
    write_video(tmp_path / "thermal.avi", [cv2.cvtColor(np.roll(thermal, i, axis=1), cv2.COLOR_GRAY2BGR)
                                           for i in range(25)])
    seg = Segmenter(models / "thermal.onnx")
    source = open_source(tmp_path / "rgb.avi", tmp_path / "thermal.avi")
    assert isinstance(source, VideoPair)
    frames = stream(seg, source)
    assert len(list(frames)) == 25
    assert source.skipped == 15 and [u.count for u in frames.unmatched] == [15]
    assert frames.unmatched[0].line() == "not processed: rgb.avi frames 25-39: thermal.avi ended after 25 frames"
    out = cli(models / "thermal.onnx", "--rgb", tmp_path / "rgb.avi", "--aux", tmp_path / "thermal.avi", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unmatched 15" in out.stdout and "rgb.avi frames 25-39" in out.stdout

    rgb_dir, aux_dir = tmp_path / "r", tmp_path / "t"
    rgb_dir.mkdir(), aux_dir.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(rgb_dir / f"{name}.png"), bgr)
    for name in ("a", "c", "x"):
        cv2.imwrite(str(aux_dir / f"{name}.png"), thermal)
    folder = FolderPair(rgb_dir, aux_dir)
    assert [(u.name, u.reason.split(" ")[0]) for u in folder.unmatched] == [("b.png", "no"), ("x.png", "no")]
    out = cli(models / "thermal.onnx", "--rgb", rgb_dir, "--aux", aux_dir, "--quiet")
    assert "unmatched 2" in out.stdout and "b.png" in out.stdout and "x.png" in out.stdout


def test_cli_checks_inputs_as_the_api_does(models, tmp_path, pair):
    bgr, thermal = pair
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    cv2.imwrite(str(tmp_path / "thermal.png"), thermal)
    depth = cv2.resize(cv2.imread(os.path.join(SAMPLES, "esanet_depth.png"), cv2.IMREAD_UNCHANGED), (80, 60),
                       interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    thermal_model = models / "thermal.onnx"
    cases = [
        (["--rgb", tmp_path / "thermal.png", "--aux", tmp_path / "thermal.png"], "one-channel (grey)"),
        (["--rgb", tmp_path / "thermal.png", "--aux", tmp_path / "rgb.png"], "rgb and aux swapped"),
        (["--rgb", tmp_path / "rgb.png", "--aux", tmp_path / "depth.png"], "16-bit depth image"),
    ]
    for args, message in cases:
        out = cli(thermal_model, *args, "--quiet")
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
    seg = Segmenter(thermal_model)
    for rgb, aux, message in [(thermal, thermal, "one-channel"), (thermal, bgr, "swapped"), (bgr, depth, "depth")]:
        with pytest.raises(ValueError, match=message):
            seg.run(rgb, aux)

    out = cli(thermal_model, "--rgb", tmp_path / "rgb.png", "--aux", tmp_path / "thermal.png", "--depth-units", "0.0001")
    assert out.returncode == 2 and "--depth-units is for depth models" in out.stderr
    out = cli(models / "depth.onnx", "--rgb", tmp_path / "rgb.png", "--aux", tmp_path / "depth.png",
              "--depth-units", "0.0001", "--quiet")
    assert out.returncode == 0, out.stderr


def test_missing_inputs_are_found_before_the_model_loads(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    out = cli(tmp_path / "broken.onnx", "--rgb", tmp_path / "nowhere.png", "--aux", tmp_path / "t.png")
    assert out.returncode == 2 and out.stderr.strip() == f"error: {tmp_path / 'nowhere.png'}: no such file or folder"
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nowhere", tmp_path / "t")
