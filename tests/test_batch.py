"""``python -m runtime.batch``: Ray Data offline segmentation on a local 2-CPU Ray.

One local Ray for the module (starting it costs seconds on a loaded 2-core machine); every
run has a generous time limit, so that a pipeline that waits forever fails instead of hanging.
"""
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'mmseg-deploy[fleet]')")
pd = pytest.importorskip("pandas")

from factories import tiny_gopt  # noqa: E402
from export.onnx import parse_args, run  # noqa: E402
from models import save_gopt  # noqa: E402
from runtime import Segmenter  # noqa: E402
from runtime.batch.__main__ import main  # noqa: E402
from runtime.batch.job import list_shards, segment_recording, worker_resources  # noqa: E402
from test_streams import within  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [ROOT / "data" / "samples" / f for f in ("mfnet_01234N.png", "mfnet_01477D.png")]
RUN_LIMIT_S = 240  # a 60-frame run takes ~10 s; minutes only on a machine shared with heavy jobs


def _descendants(pid: int) -> list[int]:
    """Live (not zombie) processes below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ray_processes(before: set) -> list[int]:
    """Processes below this one started since ``before`` that belong to Ray (its workers,
    raylet, GCS server, log monitor...), not other helpers of the test process."""
    return [p for p in _descendants(os.getpid()) if p not in before and "ray" in _cmdline(p)]


@pytest.fixture(scope="module")
def local_ray():
    before = set(_descendants(os.getpid()))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        deadline = time.time() + 30
        while _ray_processes(before) and time.time() < deadline:
            time.sleep(0.5)
        left = [f"{p}: {_cmdline(p)[:80]}" for p in _ray_processes(before)]
        assert not left, f"Ray processes left running after ray.shutdown(): {left}"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_model")
    save_gopt(tiny_gopt(untrained=True), d / "tiny.pt")
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "tiny.onnx"), "--dynamic-batch", "--no-check"])) == 0
    return d / "tiny.onnx"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """60 MFNet 4-channel frames (BGR + thermal): the two bundled samples under new names."""
    d = tmp_path_factory.mktemp("recording")
    for i in range(60):
        shutil.copy(SAMPLES[i % 2], d / f"drive_{i:04d}.png")
    return d


@pytest.fixture(scope="module")
def expected(model, recording):
    seg = Segmenter(model)
    out = {}
    for path in sorted(recording.iterdir()):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        out[path.stem] = seg.run(np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3]))
    return out


def check_outputs(out: Path, expected: dict) -> "pd.DataFrame":
    labels = sorted(p.stem for p in (out / "labels").iterdir())
    assert labels == sorted(expected), "a label map is missing, extra, or a temporary file was left behind"
    for name, want in expected.items():
        got = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert got.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got, want), f"{name}: label map differs from Segmenter.run"
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["frame"]) == sorted(expected) and index["frame"].is_unique
    return index


def test_worker_resources_leave_room_for_reading():
    # the reservation that finishes on 2 CPUs: two actors at half a CPU each
    assert worker_resources(2, 0, 2.0) == {"num_cpus": 0.5}
    assert worker_resources(1, 0, 2.0) == {"num_cpus": 1.0}
    for workers in (1, 2, 3, 8):
        for cpus in (1.0, 2.0, 4.0, 16.0):
            r = worker_resources(workers, 0, cpus)
            assert workers * r["num_cpus"] <= max(cpus - 1, cpus / 2) + 1e-6
    assert worker_resources(4, 1, 16.0) == {"num_cpus": 0.25, "num_gpus": 1}
    with pytest.raises(ValueError, match="workers"):
        worker_resources(0, 0, 2.0)


def test_sixty_pairs_equal_segmenter_and_resume(local_ray, model, recording, expected, tmp_path):
    out = tmp_path / "out"
    report = within(RUN_LIMIT_S, lambda: segment_recording(model, out, rgb=recording, workers=2, batch_size=4))
    assert (report.segmented, report.skipped) == (60, 0)
    index = check_outputs(out, expected)
    assert (index["status"] == "segmented").all()
    assert (index["rgb_file"].map(lambda f: Path(f).parent) == recording).all()
    assert (index["latency_ms"] > 0).all() and (index["infer_ms"] > 0).all()

    # a second run skips everything and rewrites nothing
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    again = within(RUN_LIMIT_S, lambda: segment_recording(model, out, rgb=recording, workers=2, batch_size=4))
    assert (again.frames, again.segmented, again.existing) == (0, 0, 60)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "labels").iterdir()} == mtimes
    assert pd.read_parquet(out / "index.parquet").equals(index)

    # one output lost: only that frame is redone; --overwrite redoes all of them
    (out / "labels" / "drive_0007.png").unlink()
    partial = within(RUN_LIMIT_S, lambda: segment_recording(model, out, rgb=recording, workers=1, batch_size=4))
    assert (partial.segmented, partial.existing) == (1, 59)
    check_outputs(out, expected)
    assert within(RUN_LIMIT_S, lambda: main([str(model), "--rgb", str(recording), "--out", str(out), "--workers", "2",
                                             "--overwrite"])) == 0
    index = check_outputs(out, expected)
    assert (index["status"] == "segmented").all()
    assert all(p.stat().st_mtime_ns > mtimes[p.name] for p in (out / "labels").iterdir())


def test_killed_worker_is_retried_nothing_lost(local_ray, model, recording, expected, tmp_path):
    out = tmp_path / "out"
    job = {}

    def go():
        job["report"] = segment_recording(model, out, rgb=recording, workers=2, batch_size=1)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    killed, written_then = None, None
    deadline = time.time() + RUN_LIMIT_S
    while killed is None and t.is_alive() and time.time() < deadline:
        labels = list((out / "labels").glob("*.png")) if (out / "labels").exists() else []
        if labels:
            workers = [p for p in _descendants(os.getpid()) if "SegmentFrames" in _cmdline(p)]
            if workers:
                written_then = len(labels)
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
        time.sleep(0.01)
    t.join(max(1.0, deadline - time.time()))
    assert not t.is_alive(), f"the batch job did not end within {RUN_LIMIT_S} s after a worker was killed"
    assert killed is not None, "no SegmentFrames worker process was found to kill"
    assert written_then < 60, "the run finished before a worker could be killed mid-run"
    assert job["report"].segmented == 60
    index = check_outputs(out, expected)
    assert (index["status"] == "segmented").all()


def test_bad_files_are_skipped_with_the_reason(local_ray, model, tmp_path):
    rgb, aux = tmp_path / "rgb", tmp_path / "thermal"
    rgb.mkdir(), aux.mkdir()
    frames = []
    for i in range(4):
        img = cv2.imread(str(SAMPLES[i % 2]), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(rgb / f"{1700000000000 + 100 * i}.png"), img[..., :3])
        cv2.imwrite(str(aux / f"{1700000000000 + 100 * i}.png"), img[..., 3])
        frames.append(img)
    (aux / "1700000000200.png").write_bytes(b"not a png")  # a corrupt thermal frame
    cv2.imwrite(str(aux / "1700000000300.png"), frames[3][:100, :100, 3])  # the wrong size
    out = tmp_path / "out"
    report = within(RUN_LIMIT_S, lambda: segment_recording(model, out, rgb=rgb, aux=aux, batch_size=2))
    assert (report.segmented, report.skipped) == (2, 2)
    index = pd.read_parquet(out / "index.parquet").set_index("frame")
    assert index.loc["1700000000200", "status"] == "skipped"
    assert "not a readable image" in index.loc["1700000000200", "reason"]
    assert "differ in size" in index.loc["1700000000300", "reason"]
    assert sorted(p.stem for p in (out / "labels").iterdir()) == ["1700000000000", "1700000000100"]
    seg = Segmenter(model)
    want = seg.run(frames[1][..., :3].copy(), frames[1][..., 3].copy())
    assert np.array_equal(cv2.imread(str(out / "labels" / "1700000000100.png"), cv2.IMREAD_UNCHANGED), want)


def test_shards_and_bad_arguments(tmp_path, recording):
    assert len(list_shards(rgb=recording)) == 60
    with pytest.raises(ValueError, match="no such file"):
        list_shards(rgb=tmp_path / "missing")
    with pytest.raises(ValueError, match="not both"):
        list_shards(rgb=recording, bag=tmp_path)
    with pytest.raises(ValueError, match="bag"):  # no bag source in runtime.sources.streams, or no bag in the folder
        list_shards(bag=tmp_path)
    assert main(["model.onnx", "--out", str(tmp_path)]) == 2  # no frames given: one line


def test_every_input_is_in_the_index(local_ray, model, tmp_path, capsys):
    """12 RGB files and 7 thermal files: the 6 pairs are segmented, the 6 RGB files and the
    thermal file without a partner are in the index as unpaired, with the reason."""
    rgb, aux = tmp_path / "rgb", tmp_path / "thermal"
    rgb.mkdir(), aux.mkdir()
    img = cv2.imread(str(SAMPLES[0]), cv2.IMREAD_UNCHANGED)
    for i in range(12):
        cv2.imwrite(str(rgb / f"f{i:02d}.png"), img[..., :3])
        if i % 2 == 0:
            cv2.imwrite(str(aux / f"f{i:02d}.png"), img[..., 3])
    cv2.imwrite(str(aux / "lone.png"), img[..., 3])
    out = tmp_path / "out"
    assert within(RUN_LIMIT_S, lambda: main([str(model), "--rgb", str(rgb), "--aux", str(aux), "--out", str(out)])) == 0
    assert "6 frames segmented, 0 skipped, 7 without a partner" in capsys.readouterr().out
    index = pd.read_parquet(out / "index.parquet").set_index("frame")
    assert len(index) == 13 and (index["status"] == "segmented").sum() == 6
    assert index.loc["f01.png", "status"] == "unpaired" and "no image of the same name" in index.loc["f01.png", "reason"]
    assert index.loc["lone.png", "status"] == "unpaired" and index.loc["lone.png", "aux_file"] == str(aux / "lone.png")


def test_two_inputs_with_one_output_name_are_refused_before_ray(model, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(SAMPLES[0], frames / "a.png")
    cv2.imwrite(str(frames / "a.tiff"), cv2.imread(str(SAMPLES[1]), cv2.IMREAD_UNCHANGED))
    assert main([str(model), "--rgb", str(frames), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "a.png and " in err and "a.tiff map to one output name 'a'" in err
    assert not (tmp_path / "out").exists()


def test_interrupt_writes_the_index_of_the_frames_done(model, recording, tmp_path):
    """Ctrl-C on python -m runtime.batch: exit status 130, no traceback, and index.parquet
    lists every label map written."""
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.batch", str(model), "--rgb", str(recording), "--out",
                             str(out), "--batch-size", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + RUN_LIMIT_S
    while time.time() < deadline and len(list((out / "labels").glob("[!.]*.png"))) < 3 if (out / "labels").exists() \
            else time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=RUN_LIMIT_S)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr
    index = pd.read_parquet(out / "index.parquet")
    written = sorted(p.stem for p in (out / "labels").glob("[!.]*.png"))
    assert 0 < len(written) and sorted(index["frame"]) == written
    assert set(index["status"]) <= {"segmented", "exists"}


def test_video_folders_one_shard_per_video_pair(local_ray, model, tmp_path):
    from runtime.sources.streams import VideoPair

    rgb, aux = tmp_path / "rgb", tmp_path / "thermal"
    rgb.mkdir(), aux.mkdir()
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    for drive in ("a", "b"):
        writers = [cv2.VideoWriter(str(d / f"drive_{drive}.avi"), fourcc, 10, (160, 120)) for d in (rgb, aux)]
        for i in range(3):
            img = cv2.resize(cv2.imread(str(SAMPLES[i % 2]), cv2.IMREAD_UNCHANGED), (160, 120))
            writers[0].write(np.ascontiguousarray(img[..., :3]))
            writers[1].write(cv2.cvtColor(img[..., 3], cv2.COLOR_GRAY2BGR))
        for w in writers:
            w.release()
    assert len(list_shards(rgb=rgb, aux=aux)) == 2
    out = tmp_path / "out"
    report = within(RUN_LIMIT_S, lambda: segment_recording(model, out, rgb=rgb, aux=aux, workers=2, batch_size=2))
    assert report.segmented == 6
    seg = Segmenter(model)
    for drive in ("a", "b"):
        source = VideoPair(rgb / f"drive_{drive}.avi", aux / f"drive_{drive}.avi")
        for frame in source:
            got = cv2.imread(str(out / "labels" / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(got, seg.run(frame.rgb, frame.aux)), frame.name
        source.close()
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["frame"]) == [f"drive_{d}_{i:06d}" for d in "ab" for i in range(3)]
    assert (index["timestamp_ms"] >= 0).all()


def test_bag_one_shard(local_ray, model, tmp_path):
    pytest.importorskip("rosbags", reason="reading bags needs rosbags (pip install 'mmseg-deploy[ros]')")
    from test_bags import AUX_TOPIC, RGB_TOPIC, mfnet_frames, rgbt_streams, schedule, write_bag

    rgb_stamps, aux_stamps = schedule(seconds=1.0)
    bag = write_bag(tmp_path / "drive", rgbt_streams(rgb_stamps, aux_stamps, mfnet_frames(len(rgb_stamps))))
    assert len(list_shards(bag=bag)) == 1
    out = tmp_path / "out"
    report = within(RUN_LIMIT_S, lambda: segment_recording(model, out, bag=bag, rgb_topic=RGB_TOPIC,
                                                           aux_topic=AUX_TOPIC, workers=2, batch_size=2))
    seg = Segmenter(model)
    from runtime.sources.streams import open_source

    source = open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)
    names = []
    for frame in source:
        got = cv2.imread(str(out / "labels" / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, seg.run(frame.rgb, frame.aux)), frame.name
        names.append(frame.name)
    source.close()
    assert report.segmented == len(names) > 0
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index[index["status"] == "segmented"]["frame"]) == sorted(names)
    # every message without a partner is in the index too
    unpaired = index[index["status"] == "unpaired"]
    assert sorted(unpaired["frame"]) == sorted(u.name for u in source.unmatched) and report.unpaired == len(unpaired) > 0
