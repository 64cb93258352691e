"""ROS bags in and out, on bags written here with rosbags from the bundled MFNet and ESANet
frames: RGB at 30 Hz, thermal at 8.7 Hz as FLIR cores publish, stamp jitter, a dropped frame."""
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bags need the rosbags package (pip install -e '.[ros]')")

from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from runtime import Segmenter  # noqa: E402
from runtime.__main__ import main  # noqa: E402
from runtime.ros.bags import BagPair, BagWriter, pair_by_stamp, stamp_text  # noqa: E402
from runtime.preprocess import overlay  # noqa: E402
from runtime.ros.messages import compressed_fields, compressed_to_numpy, image_fields, image_to_numpy  # noqa: E402
from runtime.sources.streams import FrameFailure, Unmatched, open_source, stream  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples")
T0 = 1_700_000_000 * 10**9
SIZE = (160, 120)
RGB_TOPIC, AUX_TOPIC = "/camera/color/image_raw", "/flir/image_raw"


def sample(name):
    return cv2.imread(os.path.join(SAMPLES, name), cv2.IMREAD_UNCHANGED)


def schedule(seed=0, seconds=1.5):
    """Capture stamps (ns): RGB at 30 Hz and thermal at 8.7 Hz, +-1.5 ms jitter, thermal
    frame 5 (or the last of a short run) dropped by the camera."""
    rng = np.random.default_rng(seed)
    rgb = [T0 + int(i * 1e9 / 30 + rng.uniform(-1.5e6, 1.5e6)) for i in range(int(30 * seconds))]
    aux = [T0 + int(4e6 + j * 1e9 / 8.7 + rng.uniform(-1.5e6, 1.5e6)) for j in range(int(8.7 * seconds))]
    del aux[min(5, len(aux) - 1)]
    return rgb, aux


def mfnet_frames(n):
    """n (bgr, thermal) frames from the two MFNet samples, each shifted differently."""
    out = []
    for i in range(n):
        img = cv2.resize(sample(("mfnet_01234N.png", "mfnet_01477D.png")[i % 2]), SIZE, interpolation=cv2.INTER_AREA)
        img = np.roll(img, 3 * i, axis=1)
        out.append((np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3])))
    return out


def header(store, stamp, frame_id):
    t = store.types
    kw = {"seq": 0} if "seq" in t["std_msgs/msg/Header"].__dataclass_fields__ else {}
    return t["std_msgs/msg/Header"](**kw, stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                nanosec=stamp % 10**9),
                                    frame_id=frame_id)


def image_msg(store, stamp, frame_id, array, encoding):
    return store.types["sensor_msgs/msg/Image"](header=header(store, stamp, frame_id), **image_fields(array, encoding))


def compressed_msg(store, stamp, frame_id, array, fmt):
    return store.types["sensor_msgs/msg/CompressedImage"](header=header(store, stamp, frame_id),
                                                         **compressed_fields(array, fmt))


def write_bag(path, streams, storage="mcap"):
    """streams: {topic: [(stamp, log delay ns, message or its serialised bytes, msgtype)]}; messages in
    log-time order."""
    store = get_typestore(Stores.ROS1_NOETIC if storage == "ros1" else Stores.ROS2_HUMBLE)
    items = sorted((stamp + delay, topic, msg, typ) for topic, msgs in streams(store).items()
                   for stamp, delay, msg, typ in msgs)
    if storage == "ros1":
        writer, serialize = Writer1(path), store.serialize_ros1
    else:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer, serialize = Writer(path, version=9, storage_plugin=plugin), store.serialize_cdr
    with writer as w:
        conns = {}
        for log, topic, msg, typ in items:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=store)
            w.write(conns[topic], log, msg if isinstance(msg, bytes) else serialize(msg, typ))
    return path


def rgbt_streams(rgb_stamps, aux_stamps, frames, rgb_kind="rgb8", aux_kind="mono8"):
    """RGB message i shows frames[i]'s colour, thermal message j frames[j]'s thermal."""
    def build(store):
        def make(stamp, frame_id, array, kind):
            if kind in ("jpeg", "png"):
                return compressed_msg(store, stamp, frame_id, array, kind), "sensor_msgs/msg/CompressedImage"
            if kind == "rgb8":
                array = array[..., ::-1].copy()
            if kind == "mono16":
                array = array.astype(np.uint16) * 257
            return image_msg(store, stamp, frame_id, array, kind), "sensor_msgs/msg/Image"
        return {
            RGB_TOPIC: [(t, 2_000_000, *make(t, "camera_color_optical_frame", frames[i][0], rgb_kind))
                        for i, t in enumerate(rgb_stamps)],
            AUX_TOPIC: [(t, 6_000_000, *make(t, "flir_optical_frame", frames[j][1], aux_kind))
                        for j, t in enumerate(aux_stamps)],
        }
    return build


def read_bag(path):
    """{topic: [(log time, message)]} of a bag."""
    out = {}
    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as r:
        for conn, log, raw in r.messages():
            out.setdefault(conn.topic, []).append((log, r.deserialize(raw, conn.msgtype)))
    return out


def stamp_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def expected_pairs(rgb, aux, skew_ns):
    """Each thermal frame with its nearest RGB frame when within the skew (thermal frames are
    far enough apart at 8.7 Hz never to want the same RGB frame)."""
    pairs = []
    for j, t in enumerate(aux):
        i = int(np.argmin([abs(r - t) for r in rgb]))
        if abs(rgb[i] - t) <= skew_ns:
            pairs.append((i, j))
    return pairs


@pytest.fixture(scope="module")
def thermal_seg(tiny_gopt_models):
    return Segmenter(tiny_gopt_models / "thermal.onnx")


# ---- pairing ---------------------------------------------------------------------------------


def test_pairing_takes_closest_pairs_first_each_message_once():
    # an RGB-order greedy match would give rgb 0 the aux at 8; the closest pair is rgb 10
    assert pair_by_stamp([0, 10], [8], 10) == ([(1, 0)], [0], [])
    assert pair_by_stamp([0, 10, 20], [4, 6], 10) == ([(0, 0), (1, 1)], [2], [])
    assert pair_by_stamp([0, 100], [50], 10) == ([], [0, 1], [0])
    assert pair_by_stamp([], [1, 2], 10) == ([], [], [0, 1])


def test_bag_pairing_at_camera_rates(tmp_path):
    rgb, aux = schedule()
    frames = mfnet_frames(len(rgb))
    del rgb[17]  # an RGB frame dropped too: its thermal partner takes the next nearest or none
    bag = write_bag(tmp_path / "rgbt", rgbt_streams(rgb, aux, frames[:len(rgb)]))
    for skew_ms in (20, 5):
        source = BagPair(bag, RGB_TOPIC, AUX_TOPIC, max_skew_ms=skew_ms)
        want = expected_pairs(rgb, aux, skew_ms * 10**6)
        assert source.pairs == want
        assert len(want) >= (len(aux) - 3 if skew_ms == 20 else 1)
        lone_rgb = [t for i, t in enumerate(rgb) if i not in {p[0] for p in want}]
        lone_aux = [t for j, t in enumerate(aux) if j not in {p[1] for p in want}]
        lone = sorted([(t, RGB_TOPIC, AUX_TOPIC) for t in lone_rgb] + [(t, AUX_TOPIC, RGB_TOPIC) for t in lone_aux])
        why = f"within {skew_ms} ms"
        assert source.unmatched == [Unmatched(f"{topic} @ {stamp_text(t)}", f"no partner on {other} {why}")
                                    for t, topic, other in lone]
        assert source.skipped == len(lone_rgb)
        assert source.unmatched[0].line() == f"not processed: {lone[0][1]} @ {stamp_text(lone[0][0])}: no partner " \
                                             f"on {lone[0][2]} within {skew_ms} ms"
        got = list(source)
        source.close()
        assert [f.stamp for f in got] == [rgb[i] for i, _ in want]
        for f, (i, j) in zip(got, want):  # the decoded images are the paired messages' own
            np.testing.assert_array_equal(f.rgb, frames[i][0])
            np.testing.assert_array_equal(f.aux, frames[j][1])
            assert f.frame_id == "camera_color_optical_frame" and f.log_time == rgb[i] + 2_000_000


def test_missing_or_wrong_topic_lists_image_topics(tmp_path):
    rgb, aux = schedule(seconds=0.3)
    bag = write_bag(tmp_path / "b", rgbt_streams(rgb, aux, mfnet_frames(len(rgb))))
    for topic in ("/camera/image", None):
        with pytest.raises(ValueError) as e:
            open_source(bag=bag, rgb_topic=topic, aux_topic=AUX_TOPIC)
        text = str(e.value)
        assert "\n" not in text and f"{RGB_TOPIC} (Image, {len(rgb)} messages)" in text and AUX_TOPIC in text, text
    with pytest.raises(ValueError, match="no message of .* has a partner .* within 0.001 ms"):
        open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC, max_skew_ms=0.001)
    with pytest.raises(FileNotFoundError):
        open_source(bag=tmp_path / "nothing", rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    with pytest.raises(ValueError, match="not a readable ROS bag"):
        open_source(bag=tmp_path / "junk.mcap", rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)


def test_ros1_bag(tmp_path):
    rgb, aux = schedule(1, seconds=0.6)
    frames = mfnet_frames(len(rgb))
    bag = write_bag(tmp_path / "rgbt.bag", rgbt_streams(rgb, aux, frames, "bgr8", "mono16"), storage="ros1")
    source = open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)
    want = expected_pairs(rgb, aux, 20 * 10**6)
    got = list(source)
    assert [(f.stamp, f.frame_id) for f in got] == [(rgb[i], "camera_color_optical_frame") for i, _ in want]
    for f, (i, j) in zip(got, want):
        np.testing.assert_array_equal(f.rgb, frames[i][0])
        np.testing.assert_array_equal(f.aux, frames[j][1].astype(np.uint16) * 257)


# ---- bags out --------------------------------------------------------------------------------


def check_output(out_bag, source_frames, seg, prefix="gopt", num_classes=5):
    """The output bag holds one raw and one coloured mask per pair, with the RGB header, equal
    to Segmenter.run on the pair's frames."""
    topics = read_bag(out_bag)
    raw, colored = topics[f"/{prefix}/raw_segmentation_mask"], topics[f"/{prefix}/colored_segmentation_mask"]
    assert len(raw) == len(colored) == len(source_frames)
    for (log, m), (log2, c), (stamp, rgb, aux, frame_id, log_in) in zip(raw, colored, source_frames):
        assert stamp_of(m) == stamp_of(c) == stamp and m.header.frame_id == c.header.frame_id == frame_id
        assert log == log2 == log_in
        assert m.encoding == "mono8" and c.encoding == "bgr8"
        labels = seg.run(rgb, aux)
        np.testing.assert_array_equal(image_to_numpy(m), labels)
        np.testing.assert_array_equal(image_to_numpy(c), overlay(rgb, labels, num_classes))
    return topics


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_in_bag_out_rgbt(tmp_path, thermal_seg, storage):
    rgb, aux = schedule(2, seconds=1.0)
    frames = mfnet_frames(len(rgb))
    kinds = ("rgb8", "mono8") if storage == "mcap" else ("jpeg", "mono8")
    bag = write_bag(tmp_path / "in", rgbt_streams(rgb, aux, frames, *kinds), storage)
    source = open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)
    out = tmp_path / "out"
    with BagWriter(out, 5, storage) as w:
        results = list(stream(thermal_seg, source))
        for r in results:
            w.write(r.frame, r.labels)
    want = expected_pairs(rgb, aux, 20 * 10**6)
    assert len(results) == len(want) > 0
    rgb_in = {stamp_of(m): m for _, m in read_bag(bag)[RGB_TOPIC]}
    expect = []
    for (i, j), r in zip(want, results):
        colour = compressed_to_numpy(rgb_in[rgb[i]]) if kinds[0] == "jpeg" else frames[i][0]
        expect.append((rgb[i], colour, frames[j][1], "camera_color_optical_frame", rgb[i] + 2_000_000))
    check_output(out, expect, thermal_seg)
    names = sorted(p.name for p in out.iterdir())  # the storage file is named after the bag, not the temporary
    assert names[0] == "metadata.yaml" and names[1].startswith("out") and len(names) == 2, names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_bag_writer_is_atomic(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with BagWriter(out, 5):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(FileExistsError, match="exists already"):
        BagWriter(out, 5)
    with pytest.raises(ValueError, match="storage must be one of"):
        BagWriter(tmp_path / "x", 5, storage="bag")
    with pytest.raises(ValueError, match="topic prefix '1x'"):
        BagWriter(tmp_path / "x", 5, topic_prefix="1x")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_command_line_rgbd_esanet(tmp_path, tiny_gopt_models, storage, capsys):
    """python -m runtime MODEL --bag IN --out-bag OUT on an RGB-D bag (ESANet frame, depth as
    compressedDepth png at 30 Hz), with --copy-inputs and a topic prefix."""
    rgb_img, depth_img = sample("esanet_rgb.png"), sample("esanet_depth.png")
    n = 6
    rgb = [T0 + int(i * 1e9 / 30) for i in range(n)]
    dep = [t + 3_000_000 for t in rgb]
    frames = [(np.roll(rgb_img, 4 * i, axis=1), np.roll(depth_img, 4 * i, axis=1)) for i in range(n)]

    def build(store):
        return {"/rgb": [(t, 1000, image_msg(store, t, "cam", frames[i][0], "bgr8"), "sensor_msgs/msg/Image")
                         for i, t in enumerate(rgb)],
                "/depth": [(t, 1000, compressed_msg(store, t, "cam", frames[i][1], "compressedDepth"),
                            "sensor_msgs/msg/CompressedImage") for i, t in enumerate(dep)]}
    bag = write_bag(tmp_path / "rgbd", build, storage)
    out = tmp_path / "seg"
    args = [str(tiny_gopt_models / "depth.onnx"), "--bag", str(bag), "--rgb-topic", "/rgb", "--aux-topic", "/depth",
            "--out-bag", str(out), "--topic-prefix", "esanet", "--copy-inputs", "--quiet"]
    if storage == "sqlite3":
        args += ["--storage", "sqlite3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"frames {n}," in printed and f"wrote {n} frames to {out}" in printed
    seg = Segmenter(tiny_gopt_models / "depth.onnx")
    topics = check_output(out, [(rgb[i], frames[i][0], frames[i][1], "cam", rgb[i] + 1000) for i in range(n)], seg,
                          prefix="esanet")
    assert len(topics["/rgb"]) == len(topics["/depth"]) == n  # inputs copied unchanged
    np.testing.assert_array_equal(compressed_to_numpy(topics["/depth"][2][1]), frames[2][1])
    # an existing output is refused before any work, one line
    assert main(args) == 2
    assert "exists already" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["mcap", "sqlite3", "ros1"])
def test_copy_inputs_round_trips_every_input_format(tmp_path, tiny_gopt_models, storage, capsys):
    """--copy-inputs from each bag format docs/ros2.md lists (rosbag2 MCAP and sqlite3, ROS 1):
    the copied Image and CompressedImage messages read back with the input's stamps, frame
    ids and pixels (ROS 1 messages converted to ROS 2's types, Header.seq dropped)."""
    n = 4
    rgb = [T0 + int(i * 1e9 / 30) for i in range(n)]
    aux = [t + 2_000_000 for t in rgb]
    frames = mfnet_frames(n)
    name = "in.bag" if storage == "ros1" else "in"
    bag = write_bag(tmp_path / name, rgbt_streams(rgb, aux, frames, "jpeg", "mono8"), storage)
    out = tmp_path / "out"
    assert main([str(tiny_gopt_models / "thermal.onnx"), "--bag", str(bag), "--rgb-topic", RGB_TOPIC,
                 "--aux-topic", AUX_TOPIC, "--out-bag", str(out), "--copy-inputs", "--quiet"]) == 0, \
        capsys.readouterr().err
    copied, given = read_bag(out), read_bag(bag)
    for topic in (RGB_TOPIC, AUX_TOPIC):
        assert len(copied[topic]) == len(given[topic]) == n
        for (log_a, a), (log_b, b) in zip(copied[topic], given[topic]):
            assert log_a == log_b and stamp_of(a) == stamp_of(b) and a.header.frame_id == b.header.frame_id
            if topic == RGB_TOPIC:
                assert a.format == b.format and bytes(a.data) == bytes(b.data)
            else:
                np.testing.assert_array_equal(image_to_numpy(a), image_to_numpy(b))
    assert len(copied["/gopt/raw_segmentation_mask"]) == n


def test_second_sigterm_while_the_bag_is_finished_keeps_the_frames(tmp_path, tiny_gopt_models):
    """SIGTERM, then another 20 ms later while the output bag (with --copy-inputs) is being
    finished: exit status 143, the summary, and a complete bag with every frame segmented
    (the second signal used to discard the bag without a word)."""
    import signal
    import subprocess
    import sys
    import time

    n = 150
    rgb = [T0 + int(i * 1e9 / 30) for i in range(n)]
    frames = []
    for i in range(n):
        img = np.roll(cv2.resize(sample(("mfnet_01234N.png", "mfnet_01477D.png")[i % 2]), (320, 240)), 5 * i, axis=1)
        frames.append((np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3])))
    bag = write_bag(tmp_path / "in", rgbt_streams(rgb, [t + 1_000_000 for t in rgb], frames, "rgb8", "mono8"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime", str(tiny_gopt_models / "thermal.onnx"), "--bag", str(bag),
                             "--rgb-topic", RGB_TOPIC, "--aux-topic", AUX_TOPIC, "--out-bag", str(out),
                             "--copy-inputs"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("frame ")
        if seen >= 40:
            break
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    written = re.search(r"wrote (\d+) frames to ", stdout)
    assert written and re.search(r"^frames \d+, ", stdout, re.M), stdout[-2000:]
    topics = read_bag(out)
    assert len(topics["/gopt/raw_segmentation_mask"]) == int(written.group(1)) >= 40
    assert len(topics[RGB_TOPIC]) == n  # the inputs copied whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_command_line_lists_topics_and_reports_unmatched(tmp_path, tiny_gopt_models, thermal_seg, capsys):
    rgb, aux = schedule(3, seconds=0.5)
    bag = write_bag(tmp_path / "in", rgbt_streams(rgb, aux, mfnet_frames(len(rgb))))
    model = str(tiny_gopt_models / "thermal.onnx")
    assert main([model, "--bag", str(bag), "--rgb-topic", "/wrong", "--aux-topic", AUX_TOPIC]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and RGB_TOPIC in err and "no topic '/wrong'" in err
    assert main([model, "--bag", str(bag), "--rgb-topic", RGB_TOPIC, "--aux-topic", AUX_TOPIC, "--quiet"]) == 0
    out = capsys.readouterr().out
    want = expected_pairs(rgb, aux, 20 * 10**6)
    lone = len(rgb) + len(aux) - 2 * len(want)
    assert f"frames {len(want)}," in out and f"unmatched {lone}\n" in out and f"not paired ({lone}):" in out
    assert f"not processed: {RGB_TOPIC} @ {stamp_text(rgb[1])}: no partner on {AUX_TOPIC} within 20 ms" in out
    source = open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)  # the Python API reports the same
    frames = stream(thermal_seg, source)
    assert len(list(frames)) == len(want) and frames.unmatched == source.unmatched and len(frames.unmatched) == lone


def test_simcmf_clicks_on_a_bag(tmp_path):
    """SimCMF through the bag path: each pair stacked RGB + thermal, the same click on every
    frame, masks written with the RGB header; equal to Segmenter.run on the stacked frames."""
    torch = pytest.importorskip("torch")
    from test_simcmf import tiny_model

    from runtime.ros.bags import click_frames
    from runtime.backends.torch_backend import simcmf_backends

    seg = Segmenter.from_backends(simcmf_backends(tiny_model(modality="rgbt"), torch.device("cpu")))
    rgb, aux = schedule(4, seconds=0.5)
    frames = mfnet_frames(len(rgb))
    bag = write_bag(tmp_path / "in", rgbt_streams(rgb, aux, frames, "bgr8", "mono8"), "sqlite3")
    source = BagPair(bag, RGB_TOPIC, AUX_TOPIC, modality=None)
    out = tmp_path / "out"
    with BagWriter(out, 2, "sqlite3", topic_prefix="simcmf") as w:
        for frame, mask, iou in click_frames(seg, source, [(80, 60)]):
            assert mask.shape == (SIZE[1], SIZE[0]) and mask.dtype == bool and np.isfinite(iou)
            w.write(frame, mask)
    want = expected_pairs(rgb, aux, 20 * 10**6)
    raw = read_bag(out)["/simcmf/raw_segmentation_mask"]
    assert [stamp_of(m) for _, m in raw] == [rgb[i] for i, _ in want]
    for (_, m), (i, j) in zip(raw, want):
        ref, _ = seg.run(np.dstack([frames[i][0], frames[j][1]]), points=[(80, 60)])
        np.testing.assert_array_equal(image_to_numpy(m), ref.astype(np.uint8))


# ---- damaged messages ------------------------------------------------------------------------


def damaged_bag(path):
    """Eight RGB + thermal pairs 100 ms apart (thermal 3 ms later) with damaged messages: RGB 2
    has fewer data bytes than step x height, thermal 4 an unsupported encoding, RGB 6 is cut
    short after its header, thermal 7 is cut inside its header. Returns (path, stamps, frames)."""
    n = 8
    rgb = [T0 + i * 100_000_000 for i in range(n)]
    frames = mfnet_frames(n)

    def build(store):
        def rgb_msg(i):
            msg = image_msg(store, rgb[i], "cam", frames[i][0], "bgr8")
            if i == 2:
                msg.data = msg.data[:-7]
            raw = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            return raw[:200] if i == 6 else raw

        def aux_msg(j):
            msg = image_msg(store, rgb[j] + 3_000_000, "flir", frames[j][1], "mono8")
            if j == 4:
                msg.encoding = "yuv422"
            raw = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            return raw[:10] if j == 7 else raw
        return {RGB_TOPIC: [(t, 1000, rgb_msg(i), "sensor_msgs/msg/Image") for i, t in enumerate(rgb)],
                AUX_TOPIC: [(t + 3_000_000, 1000, aux_msg(j), "sensor_msgs/msg/Image") for j, t in enumerate(rgb)]}
    return write_bag(path, build), rgb, frames


def test_damaged_messages_fail_their_pair_only(tmp_path, thermal_seg):
    bag, rgb, frames = damaged_bag(tmp_path / "in")
    source = open_source(bag=bag, rgb_topic=RGB_TOPIC, aux_topic=AUX_TOPIC)
    assert source.pairs == [(i, i) for i in range(7)]
    assert source.unmatched == [
        Unmatched(f"{RGB_TOPIC} @ {stamp_text(rgb[7])}", f"no partner on {AUX_TOPIC} within 20 ms"),
        Unmatched(f"{AUX_TOPIC} message 7 (bag time {stamp_text(rgb[7] + 3_001_000)})", source.unmatched[1].reason)]
    assert source.unmatched[1].reason.startswith("its header cannot be read: ")
    frames_out = stream(thermal_seg, source)
    results = list(frames_out)
    assert [r.frame.stamp for r in results] == [rgb[i] for i in (0, 1, 3, 5)]
    for r, i in zip(results, (0, 1, 3, 5)):
        np.testing.assert_array_equal(r.labels, thermal_seg.run(frames[i][0], frames[i][1]))
    failed = frames_out.failed
    assert [f.index for f in failed] == [2, 4, 6] and all(isinstance(f, FrameFailure) for f in failed)
    where = [f"{RGB_TOPIC} @ {stamp_text(rgb[2])}", f"{AUX_TOPIC} @ {stamp_text(rgb[4] + 3_000_000)}",
             f"{RGB_TOPIC} @ {stamp_text(rgb[6])}"]
    for f, w, why in zip(failed, where, ("data has 57593 bytes, expected step x height = 57600",
                                         "encoding 'yuv422' is not supported",
                                         "not a readable sensor_msgs/msg/Image (200 bytes; truncated")):
        assert f.reason.startswith(f"{w}: ") and why in f.reason and "\n" not in f.reason, f.reason
        assert w in f.sources


def test_command_line_skips_damaged_messages(tmp_path, tiny_gopt_models, capsys):
    bag, rgb, _ = damaged_bag(tmp_path / "in")
    model = str(tiny_gopt_models / "thermal.onnx")
    args = [model, "--bag", str(bag), "--rgb-topic", RGB_TOPIC, "--aux-topic", AUX_TOPIC, "--quiet"]
    assert main(args + ["--out-bag", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    skipped = captured.err.strip().splitlines()
    assert len(skipped) == 3 and all(line.startswith("skipped frame ") for line in skipped), captured.err
    assert f"{RGB_TOPIC} @ {stamp_text(rgb[2])}" in skipped[0] and "yuv422" in skipped[1]
    assert "frames 4," in captured.out and "failed 3, unmatched 2" in captured.out
    assert "failed frames (3):" in captured.out and "its header cannot be read" in captured.out
    assert len(read_bag(tmp_path / "out")["/gopt/raw_segmentation_mask"]) == 4
    assert main(args + ["--on-error", "stop", "--out-bag", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {RGB_TOPIC} @ {stamp_text(rgb[2])}: ") and \
        not (tmp_path / "out2").exists(), err


# ---- SimCMF from the command line ------------------------------------------------------------


@pytest.fixture(scope="module")
def simcmf_onnx(tmp_path_factory):
    """The tiny RGB-T SimCMF exported to ONNX (encoder and decoder)."""
    pytest.importorskip("torch")
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    folder = tmp_path_factory.mktemp("simcmf_bag")
    export_simcmf(tiny_model(modality="rgbt"), folder / "tiny", batch=1, progress=Progress(2))
    return folder / "tiny.encoder.onnx"


def test_command_line_simcmf_clicks_on_every_pair(tmp_path, simcmf_onnx, tiny_gopt_models, capsys):
    """python -m runtime SIMCMF --bag IN --points ... --out-bag OUT: one mask per pair (mono8
    0 / 1 and its overlay) with the RGB header, equal to Segmenter.run on the stacked pair."""
    rgb, aux = schedule(6, seconds=0.5)
    frames = mfnet_frames(len(rgb))
    bag = write_bag(tmp_path / "in", rgbt_streams(rgb, aux, frames, "bgr8", "mono8"))
    out = tmp_path / "out"
    topics = ["--bag", str(bag), "--rgb-topic", RGB_TOPIC, "--aux-topic", AUX_TOPIC]
    clicks = ["--points", "80,60", "20,100,0"]
    pngs = tmp_path / "pngs"
    assert main([str(simcmf_onnx), *topics, *clicks, "--out-bag", str(out), "--topic-prefix", "simcmf",
                 "--out", str(pngs)]) == 0
    printed = capsys.readouterr().out
    want = expected_pairs(rgb, aux, 20 * 10**6)
    assert sorted(p.name for p in pngs.iterdir())[:2] == [f"camera_color_image_raw_{stamp_text(rgb[want[0][0]])}"
                                                          .replace(".", "_") + s for s in ("_mask.png", "_overlay.png")]
    assert len(list(pngs.iterdir())) == 2 * len(want)
    assert f"frames {len(want)}," in printed and f"wrote {len(want)} frames to {out}" in printed
    assert re.search(r"frame +0 camera_color_image_raw_\S+: mask \d+ pixels \(.*%\), IoU estimate", printed), printed
    seg = Segmenter(simcmf_onnx)
    written = read_bag(out)
    raw, colored = written["/simcmf/raw_segmentation_mask"], written["/simcmf/colored_segmentation_mask"]
    assert len(raw) == len(colored) == len(want)
    for (log, m), (_, c), (i, j) in zip(raw, colored, want):
        assert stamp_of(m) == stamp_of(c) == rgb[i] and m.header.frame_id == "camera_color_optical_frame"
        assert log == rgb[i] + 2_000_000 and m.encoding == "mono8"
        mask, _ = seg.run(np.dstack([frames[i][0], frames[j][1]]), points=[(80, 60), (20, 100)], labels=[1, 0])
        np.testing.assert_array_equal(image_to_numpy(m), mask.astype(np.uint8))
        np.testing.assert_array_equal(image_to_numpy(c), overlay(frames[i][0], mask.astype(np.uint8), 2))

    # damaged messages are skipped as for GoPT; the good pairs still get their masks
    damaged, stamps, _ = damaged_bag(tmp_path / "damaged")
    assert main([str(simcmf_onnx), "--bag", str(damaged), "--rgb-topic", RGB_TOPIC, "--aux-topic", AUX_TOPIC,
                 *clicks, "--quiet", "--out-bag", str(tmp_path / "out2")]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 3 and f"{RGB_TOPIC} @ {stamp_text(stamps[2])}" in captured.err
    assert "frames 4," in captured.out and len(read_bag(tmp_path / "out2")["/gopt/raw_segmentation_mask"]) == 4

    # SimCMF without clicks, GoPT with clicks: one line each
    for model, extra, message in ((simcmf_onnx, [], "is a SimCMF model: it segments on clicks; pass --points"),
                                  (tiny_gopt_models / "thermal.onnx", clicks, "--points are clicks for SimCMF")):
        assert main([str(model), *topics, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
