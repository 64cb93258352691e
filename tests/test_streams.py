"""Paired sensor streams and ``python -m runtime`` on the bundled real samples."""
import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from runtime import Segmenter
from runtime.sources.streams import (CameraPair, FolderPair, FramePair, ImagePair, MFNetFrames, VideoPair, open_source,
                                     stem_time, stream, timing_summary)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples")
MFNET = [os.path.join(SAMPLES, f) for f in ("mfnet_01234N.png", "mfnet_01477D.png")]


@pytest.fixture(scope="module")
def models_dir(tiny_gopt_models):
    return tiny_gopt_models


@pytest.fixture(scope="module")
def seg(models_dir):
    return Segmenter(models_dir / "thermal.onnx")


@pytest.fixture(scope="module")
def mfnet():
    """[(bgr, thermal)] for the two bundled MFNet frames."""
    out = []
    for path in MFNET:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        out.append((np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3])))
    return out


def small(img, w=160, h=120):
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def mfnet_folder(folder, mfnet, n, size=(160, 120)):
    """n 4-channel MFNet frames (the two samples, shifted by a frame-dependent amount)."""
    folder.mkdir()
    for i in range(n):
        bgr, thermal = mfnet[i % 2]
        img = np.dstack([small(bgr, *size), small(thermal, *size)])
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.roll(img, 5 * i, axis=1))
    return folder


def within(seconds, fn):
    """fn() in a thread; fails the test when it has not returned within ``seconds``."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not finish within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def pipeline_threads():
    return [t for t in threading.enumerate() if t.name == "frame-pipeline" and t.is_alive()]


def assert_pipeline_ended(seconds=5.0):
    deadline = time.monotonic() + seconds
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pipeline_threads(), "the pipeline thread is still running"


class Endless:
    """A live-like source: the same real pair, forever; records close()."""

    def __init__(self, rgb, aux):
        self.rgb, self.aux, self.closed = rgb, aux, False

    def __iter__(self):
        i = 0
        while True:
            yield FramePair(i, f"f{i}", None, self.rgb, self.aux)
            i += 1

    def close(self):
        self.closed = True


# ---- sources ----------------------------------------------------------------------------------


def test_mfnet_single_file_and_folder(tmp_path, seg, mfnet):
    one = open_source(MFNET[0])
    assert isinstance(one, MFNetFrames)
    frames = list(one)
    assert len(frames) == 1 and frames[0].name == "mfnet_01234N"
    assert frames[0].rgb.shape == (480, 640, 3) and frames[0].aux.shape == (480, 640)
    assert (frames[0].rgb == mfnet[0][0]).all() and (frames[0].aux == mfnet[0][1]).all()

    folder = tmp_path / "mfnet"
    folder.mkdir()
    for path in MFNET:
        shutil.copy(path, folder)
    results = list(stream(seg, open_source(folder)))
    assert [r.frame.name for r in results] == ["mfnet_01234N", "mfnet_01477D"]
    for r, (bgr, thermal) in zip(results, mfnet):
        assert (r.labels == seg.run(bgr, thermal)).all()


def test_folders_matched_by_name(tmp_path, mfnet):
    rgb_dir, aux_dir = tmp_path / "rgb", tmp_path / "thermal"
    rgb_dir.mkdir(), aux_dir.mkdir()
    bgr, thermal = small(mfnet[0][0]), small(mfnet[0][1])
    for i, name in enumerate(["a", "b", "c"]):
        cv2.imwrite(str(rgb_dir / f"{name}.png"), np.roll(bgr, i, axis=0))
    for i, name in enumerate(["a", "c", "x"]):
        cv2.imwrite(str(aux_dir / f"{name}.png"), np.roll(thermal, i, axis=0))
    source = open_source(rgb_dir, aux_dir)
    assert isinstance(source, FolderPair) and source.skipped == 1  # b.png has no partner
    frames = list(source)
    assert [f.name for f in frames] == ["a", "c"]
    assert (frames[1].rgb == np.roll(bgr, 2, axis=0)).all() and (frames[1].aux == np.roll(thermal, 1, axis=0)).all()


def test_folders_matched_by_timestamp(tmp_path, mfnet):
    rgb_dir, aux_dir = tmp_path / "rgb", tmp_path / "thermal"
    rgb_dir.mkdir(), aux_dir.mkdir()
    bgr, thermal = small(mfnet[1][0]), small(mfnet[1][1])
    t0 = 1700000000000
    rgb_times = [t0, t0 + 33, t0 + 66, t0 + 100, t0 + 500]
    aux_times = [t0 + 8, t0 + 41, t0 + 58, t0 + 112, t0 + 300]  # nothing near t0 + 500
    for i, t in enumerate(rgb_times):
        cv2.imwrite(str(rgb_dir / f"{t}.png"), np.roll(bgr, i, axis=1))
    for i, t in enumerate(aux_times):
        cv2.imwrite(str(aux_dir / f"thermal_{t}.png"), np.roll(thermal, 10 * i, axis=1))
    assert stem_time(aux_dir / f"thermal_{t0 + 8}.png") == t0 + 8

    source = open_source(rgb_dir, aux_dir, match="timestamp", max_skew_ms=20)
    assert source.skipped == 1
    frames = list(source)
    assert [f.timestamp for f in frames] == rgb_times[:4]
    # nearest partners: +8 -> 0, 41 -> 1, 58 (8 before 66) -> 2, 112 -> 3
    for f, partner in zip(frames, [0, 1, 2, 3]):
        assert (f.aux == np.roll(thermal, 10 * partner, axis=1)).all()
    with pytest.raises(ValueError, match="has a partner"):
        open_source(rgb_dir, aux_dir)  # by name: nothing matches


def test_depth_folder_pair_keeps_16_bit(tmp_path, models_dir):
    rgb_dir, aux_dir = tmp_path / "rgb", tmp_path / "depth"
    rgb_dir.mkdir(), aux_dir.mkdir()
    shutil.copy(os.path.join(SAMPLES, "esanet_rgb.png"), rgb_dir / "0001.png")
    shutil.copy(os.path.join(SAMPLES, "esanet_depth.png"), aux_dir / "0001.png")
    depth_seg = Segmenter(models_dir / "depth.onnx")
    assert depth_seg.config["modality"] == "depth"
    results = list(stream(depth_seg, open_source(rgb_dir, aux_dir, modality="depth")))
    assert len(results) == 1
    frame = results[0].frame
    depth = cv2.imread(os.path.join(SAMPLES, "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    assert frame.aux.dtype == np.uint16 and (frame.aux == depth).all()
    assert results[0].labels.shape == (424, 512)
    assert (results[0].labels == depth_seg.run(frame.rgb, depth)).all()
    # Read as 8 bits the depth would be wrong; the runtime refuses it rather than guessing.
    with pytest.raises(ValueError, match="depth must be uint16 or float32"):
        depth_seg.run(frame.rgb, (depth // 257).astype(np.uint8))


def write_video(path, frames, color=True):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h), color)
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def test_video_pair_thermal_from_bgr(tmp_path, seg, mfnet):
    n = 5
    bgr, thermal = small(mfnet[0][0]), small(mfnet[0][1])
    write_video(tmp_path / "rgb.avi", [np.roll(bgr, 7 * i, axis=1) for i in range(n)])
    thermals = [np.roll(thermal, 7 * i, axis=1) for i in range(n)]
    write_video(tmp_path / "thermal.avi", [cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) for t in thermals])
    source = open_source(tmp_path / "rgb.avi", tmp_path / "thermal.avi")
    assert isinstance(source, VideoPair)
    results = list(stream(seg, source))
    assert len(results) == n and [r.frame.index for r in results] == list(range(n))
    assert [round(r.frame.timestamp) for r in results] == [0, 100, 200, 300, 400]  # 10 fps
    reader = cv2.VideoCapture(str(tmp_path / "thermal.avi"))
    for r, t in zip(results, thermals):
        assert r.frame.rgb.shape == (120, 160, 3)
        assert r.frame.aux.shape == (120, 160) and r.frame.aux.dtype == np.uint8  # one grey channel
        ok, decoded = reader.read()
        assert ok and (r.frame.aux == cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY)).all()
        assert np.abs(r.frame.aux.astype(int) - t).mean() < 4  # MJPG is lossy, but it is the thermal frame
        assert (r.labels == seg.run(r.frame.rgb, r.frame.aux)).all()
    reader.release()
    assert source.caps == []  # the stream closed its source


# ---- the pipeline -----------------------------------------------------------------------------


def test_pipelined_results_in_order_and_equal_to_run(tmp_path, seg, mfnet):
    source = MFNetFrames(mfnet_folder(tmp_path / "f", mfnet, 8))
    results = list(stream(seg, source, queue_size=3))
    assert [r.frame.index for r in results] == list(range(8))
    assert [r.frame.name for r in results] == [f"frame_{i}" for i in range(8)]
    for r in results:
        assert (r.labels == seg.run(r.frame.rgb, r.frame.aux)).all()
        t = r.timing
        assert set(t) == {"decode", "preprocess", "infer", "latency"} and min(t.values()) >= 0
        assert t["latency"] >= t["decode"] + t["preprocess"] + t["infer"] - 1e-6
        assert r.dropped == 0
    # the frames differ, so do their label maps: results are not one frame repeated
    assert not (results[0].labels == results[1].labels).all()
    stats = timing_summary(results)
    assert set(stats) == {"decode", "preprocess", "infer", "latency"}
    assert stats["latency"]["p50"] <= stats["latency"]["p90"]


def test_drop_stale_drops_for_a_slow_consumer_and_keeps_the_newest(tmp_path, seg, mfnet):
    folder = mfnet_folder(tmp_path / "f", mfnet, 16)
    seen = []
    for r in stream(seg, MFNetFrames(folder), queue_size=1, drop_stale=True):
        seen.append(r)
        time.sleep(0.15)  # a consumer much slower than decoding 160x120 PNGs
    indices = [r.frame.index for r in seen]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert seen[-1].frame.index == 15  # the newest frame is never dropped
    assert seen[-1].dropped > 0 and len(seen) + seen[-1].dropped == 16
    # without drop_stale the same slow consumer gets every frame
    seen = []
    for r in stream(seg, MFNetFrames(folder), queue_size=1):
        seen.append(r.frame.index)
        time.sleep(0.02)
    assert seen == list(range(16))


def test_producer_error_surfaces_in_the_consumer(tmp_path, seg, mfnet):
    rgb_dir, aux_dir = tmp_path / "rgb", tmp_path / "thermal"
    rgb_dir.mkdir(), aux_dir.mkdir()
    for i in range(4):
        cv2.imwrite(str(rgb_dir / f"{i}.png"), small(mfnet[0][0]))
        cv2.imwrite(str(aux_dir / f"{i}.png"), small(mfnet[0][1]))
    (aux_dir / "2.png").write_bytes(b"not a png")
    got = []

    def consume():
        with pytest.raises(ValueError, match=r"2\.png: not a readable image"):
            for r in stream(seg, open_source(rgb_dir, aux_dir), on_error="stop"):
                got.append(r.frame.index)

    within(20, consume)
    assert got == [0, 1]
    assert_pipeline_ended()  # the worker has ended

    # an error in preprocessing (a 2-channel thermal frame) surfaces the same way
    bad = Endless(small(mfnet[0][0]), np.zeros((120, 160, 2), np.uint8))
    with pytest.raises(ValueError, match="thermal must be H x W"):
        within(20, lambda: list(stream(seg, bad, on_error="stop")))
    assert bad.closed


@pytest.mark.parametrize("drop_stale", [False, True])
def test_early_stop_does_not_hang(seg, mfnet, drop_stale):
    source = Endless(small(mfnet[0][0]), small(mfnet[0][1]))

    def consume():
        out = []
        for r in stream(seg, source, queue_size=2, drop_stale=drop_stale):
            out.append(r.frame.index)
            if len(out) == 3:
                break
        return out

    got = within(20, consume)
    assert len(got) == 3 and got == sorted(set(got))
    if not drop_stale:
        assert got == [0, 1, 2]  # with drop_stale, a late consumer may legitimately miss frame 0
    assert_pipeline_ended()
    assert source.closed

    frames = stream(seg, Endless(small(mfnet[1][0]), small(mfnet[1][1])), drop_stale=drop_stale)
    first = next(frames).frame.index
    assert first == 0 or drop_stale
    within(10, frames.close)
    assert_pipeline_ended()


# ---- errors -----------------------------------------------------------------------------------


def test_source_errors_are_one_line(tmp_path, mfnet):
    empty, rgb_dir = tmp_path / "empty", tmp_path / "rgb"
    empty.mkdir(), rgb_dir.mkdir()
    cv2.imwrite(str(rgb_dir / "a.png"), small(mfnet[0][0]))
    (tmp_path / "broken.avi").write_bytes(b"\x00" * 2048)
    write_video(tmp_path / "ok.avi", [small(mfnet[0][0])] * 2)
    cv2.imwrite(str(tmp_path / "rgb.png"), small(mfnet[0][0]))
    cv2.imwrite(str(tmp_path / "half.png"), small(mfnet[0][1], 80, 60))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_source(tmp_path / "missing", tmp_path / "rgb.png")
    cases = [
        (lambda: open_source(empty, rgb_dir), "no image files"),
        (lambda: open_source(rgb_dir, empty), "no image files"),
        (lambda: open_source(tmp_path / "broken.avi", tmp_path / "ok.avi"), "cannot be opened as a video"),
        (lambda: open_source(rgb_dir, tmp_path / "rgb.png"), "one is a folder"),
        (lambda: open_source(tmp_path / "ok.avi", tmp_path / "rgb.png"), "one is an image"),
        (lambda: open_source(tmp_path / "rgb.png"), "expected an MFNet 4-channel"),
        (lambda: open_source(tmp_path / "ok.avi"), "an aux source is needed"),
        (lambda: list(open_source(tmp_path / "rgb.png", tmp_path / "half.png")), "differ in size"),
        (lambda: open_source(tmp_path / "ok.avi", tmp_path / "ok.avi", modality="depth"), "16-bit"),
        (lambda: open_source(0, tmp_path / "rgb.png"), "camera index pairs only"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            make()
        assert "\n" not in str(e.value)
    # resize_aux accepts the smaller thermal frame
    frames = list(ImagePair(tmp_path / "rgb.png", tmp_path / "half.png", resize_aux=True))
    assert frames[0].aux.shape == (60, 80)


def test_unavailable_camera_is_a_one_line_error():
    with pytest.raises(ValueError, match="camera 97: cannot be opened") as e:
        CameraPair(97, 98)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="camera 97: cannot be opened"):
        open_source("97", "98")


# ---- the command line -------------------------------------------------------------------------

NO_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.argv[0] = 'runtime'; " \
           "runpy.run_module('runtime', run_name='__main__')"


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_writes_overlays_and_prints_fps(tmp_path, models_dir, seg, mfnet):
    folder = tmp_path / "mfnet"
    folder.mkdir()
    for path in MFNET:
        shutil.copy(path, folder)
    out = cli(models_dir / "thermal.onnx", "--rgb", folder, "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert sum(line.startswith("frame ") and "latency" in line for line in lines) == 2
    assert any(line.startswith("frames 2, ") and " fps " in line for line in lines)
    for stage in ("decode", "preprocess", "infer", "latency"):
        assert any(line.split()[:1] == [stage] and len(line.split()) == 4 for line in lines), stage
    assert sum("labels mean nothing" in line for line in lines) == 1  # the model is marked untrained
    for name, (bgr, thermal) in zip(["mfnet_01234N", "mfnet_01477D"], mfnet):
        labels = cv2.imread(str(tmp_path / "out" / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint8 and (labels == seg.run(bgr, thermal)).all()
        over = cv2.imread(str(tmp_path / "out" / f"{name}_overlay.png"))
        assert over.shape[0] == 480 and over.shape[1] > 640 and not (over[:, :640] == bgr).all()

    quiet = cli(models_dir / "thermal.onnx", "--rgb", MFNET[0], "--quiet", "--max-frames", "1")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not any(line.startswith("frame ") for line in quiet.stdout.splitlines())
    assert "frames 1, " in quiet.stdout


def test_cli_depth_pair_and_max_frames(tmp_path, models_dir):
    out = cli(models_dir / "depth.onnx", "--rgb", os.path.join(SAMPLES, "esanet_rgb.png"),
              "--aux", os.path.join(SAMPLES, "esanet_depth.png"), "--out", tmp_path / "o")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "frames 1, " in out.stdout and "labels mean nothing" not in out.stdout
    assert (tmp_path / "o" / "esanet_rgb_overlay.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--rgb", "nowhere/frames"], "nowhere/frames: no such file or folder"),
    (["--rgb", "97", "--aux", "98"], "camera 97: cannot be opened"),
    (["--rgb", os.path.join(SAMPLES, "esanet_rgb.png")], "expected an MFNet 4-channel"),
])
def test_cli_errors_are_one_line_with_exit_code_2(models_dir, args, message):
    out = cli(models_dir / "thermal.onnx", *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr
    assert out.stderr.startswith("error: ")


def test_cli_missing_model_is_one_line(tmp_path):
    out = cli(tmp_path / "missing.onnx", "--rgb", MFNET[0])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "no such file" in out.stderr


@pytest.mark.parametrize("precision", [None, "bf16"])
def test_cli_openvino_backend(tmp_path, models_dir, seg, mfnet, precision):
    """--backend openvino (--precision bf16): the same command, the same outputs, no torch."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[openvino]')")
    import openvino as ov

    if precision and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        out = cli(models_dir / "thermal.onnx", "--rgb", MFNET[0], "--backend", "openvino", "--precision", "bf16")
        assert out.returncode == 2 and "needs a CPU with native bf16" in out.stderr
        return
    backend_args = ["--backend", "openvino"] + (["--precision", precision] if precision else [])
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(models_dir / "thermal.onnx"), "--rgb", MFNET[0],
                          "--out", str(tmp_path / "out"), *backend_args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backend=openvino" in out.stdout and "frames 1, " in out.stdout
    labels = cv2.imread(str(tmp_path / "out" / "mfnet_01234N_labels.png"), cv2.IMREAD_UNCHANGED)
    agreement = (labels == seg.run(*mfnet[0])).mean()
    assert agreement == 1.0 if precision is None else agreement >= 0.9
    assert list((tmp_path / "cache" / "mmseg-deploy" / "openvino").glob("*.blob"))


def test_cli_precision_needs_openvino(models_dir):
    out = cli(models_dir / "thermal.onnx", "--rgb", MFNET[0], "--precision", "bf16")
    assert out.returncode == 2 and "--precision is for --backend openvino" in out.stderr
