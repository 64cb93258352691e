"""Recorded robot data in and out: ROS bags through the ``rosbags`` library (pure Python,
``pip install -e ".[ros]"``; no ROS installation).

    from runtime.streams import open_source, stream
    from runtime.bags import BagWriter

    source = open_source(bag="run.mcap", rgb_topic="/cam/image_raw", aux_topic="/flir/image_raw")
    with BagWriter("run_seg", storage="mcap", topic_prefix="gopt", num_classes=9) as out:
        for r in stream(seg, source):
            out.write(r.frame, r.labels)
    print(source.unmatched)                    # messages that found no partner, by topic and stamp

Input: rosbag2 (a folder with ``metadata.yaml``, or one ``.db3`` / ``.mcap`` file) or ROS 1
(``.bag``), topics of ``sensor_msgs/msg/Image`` or ``CompressedImage``. RGB and auxiliary
messages are paired by header stamp: the closest pairs first, each message used once,
a pair only within ``max_skew_ms`` (``pair_by_stamp``). Output: a new rosbag2 (MCAP or
sqlite3) with ``/<prefix>/raw_segmentation_mask`` (mono8 class ids) and
``/<prefix>/colored_segmentation_mask`` (bgr8 overlay), each carrying the RGB message's
header, written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .files import atomic_dir
from .ros_messages import frame_pair, image_fields, mask_images, simcmf_image
from .streams import FramePair, _aux_channels

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGES = ("mcap", "sqlite3")


def _rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise ValueError("reading and writing bags needs the rosbags package: pip install -e \".[ros]\"") from None


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds (ROS 2 ``sec`` / ``nanosec``; ROS 1 bags read the same)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def stamp_text(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def pair_by_stamp(rgb: list[int], aux: list[int], max_skew_ns: int) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair two lists of stamps (ns): of all pairs within ``max_skew_ns``, the closest are
    taken first and each stamp is used at most once. Returns (pairs as (rgb index, aux
    index) in RGB order, unmatched rgb indices, unmatched aux indices)."""
    order = sorted(range(len(aux)), key=lambda j: aux[j])
    times = [aux[j] for j in order]
    candidates = []
    for i, t in enumerate(rgb):
        lo, hi = bisect.bisect_left(times, t - max_skew_ns), bisect.bisect_right(times, t + max_skew_ns)
        candidates += [(abs(times[k] - t), i, order[k]) for k in range(lo, hi)]
    used_rgb, used_aux, pairs = set(), set(), []
    for _, i, j in sorted(candidates):
        if i not in used_rgb and j not in used_aux:
            used_rgb.add(i)
            used_aux.add(j)
            pairs.append((i, j))
    pairs.sort(key=lambda p: (rgb[p[0]], p[0]))
    return (pairs, [i for i in range(len(rgb)) if i not in used_rgb],
            [j for j in range(len(aux)) if j not in used_aux])


@dataclass
class BagFramePair(FramePair):
    """A frame pair from a bag, with what an output message needs from the RGB message."""

    stamp: int = 0  # the RGB header's stamp, ns
    frame_id: str = ""  # the RGB header's frame_id
    log_time: int = 0  # the RGB message's time in the bag, ns


def open_reader(path):
    """An open ``rosbags.highlevel.AnyReader`` on a rosbag2 folder / .db3 / .mcap or a ROS 1 .bag."""
    _rosbags()
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag")
    if path.is_file() and path.suffix in (".db3", ".mcap") and (path.parent / "metadata.yaml").exists():
        path = path.parent  # a rosbag2 storage file inside its bag folder
    reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
    try:
        reader.open()
    except (AnyReaderError, Exception) as e:  # noqa: BLE001 - rosbags raises several kinds for a bad file
        raise ValueError(f"{path}: not a readable ROS bag ({' '.join(str(e).split()) or type(e).__name__})") from None
    return reader


def image_topics(reader) -> dict[str, tuple[str, int]]:
    """{topic: (message type, message count)} of a bag's image topics."""
    return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items() if info.msgtype in IMAGE_TYPES}


def describe_topics(topics: dict[str, tuple[str, int]]) -> str:
    if not topics:
        return "it has no sensor_msgs/Image or CompressedImage topics"
    return "its image topics: " + ", ".join(f"{t} ({m.rsplit('/', 1)[-1]}, {n} messages)" for t, (m, n) in topics.items())


class BagPair:
    """RGB and auxiliary image messages from one bag, paired by header stamp within
    ``max_skew_ms``. ``modality`` None: auxiliary frames as they came (for SimCMF's
    ``ros_messages.simcmf_image``). Messages without a partner are not segmented: they are listed in
    ``unmatched`` as (topic, stamp ns), and ``skipped`` counts the RGB ones.

    Reading is two passes over the two topics: headers first (to pair), then images,
    decoded only for pairs; memory holds at most the messages between a pair's two parts."""

    def __init__(self, path, rgb_topic: str, aux_topic: str, max_skew_ms: float = 20.0, modality: str | None = "thermal",
                 resize_aux: bool = False):
        if not max_skew_ms >= 0:
            raise ValueError(f"max_skew_ms must be >= 0, got {max_skew_ms}")
        self.path, self.topics = Path(path), (rgb_topic, aux_topic)
        if modality is not None:
            _aux_channels(modality)  # an unknown modality fails before the bag is read
        self.modality, self.resize_aux = modality, resize_aux
        self.reader = open_reader(path)
        try:
            self._pair(int(round(max_skew_ms * 1e6)))
        except BaseException:
            self.close()
            raise

    def _connections(self, topic, found):
        conns = [c for c in self.reader.connections if c.topic == topic]
        if not topic or not conns or conns[0].msgtype not in IMAGE_TYPES:
            what = "no topic given" if not topic else (f"no topic {topic!r}" if not conns else
                                                       f"{topic!r} is a {conns[0].msgtype}, not an image topic")
            raise ValueError(f"{self.path}: {what}; {describe_topics(found)}")
        return conns

    def _pair(self, max_skew_ns: int) -> None:
        found = image_topics(self.reader)
        rgb_conns, aux_conns = (self._connections(t, found) for t in self.topics)
        if self.topics[0] == self.topics[1]:
            raise ValueError(f"{self.path}: {self.topics[0]!r} given as both the rgb and the aux topic")
        self.conns = rgb_conns + aux_conns
        stamps = {t: [] for t in self.topics}  # per topic: header stamps, in bag order
        for conn, _, raw in self.reader.messages(connections=self.conns):
            stamps[conn.topic].append(stamp_ns(self.reader.deserialize(raw, conn.msgtype).header))
        rgb, aux = stamps[self.topics[0]], stamps[self.topics[1]]
        pairs, lone_rgb, lone_aux = pair_by_stamp(rgb, aux, max_skew_ns)
        self.pairs = pairs
        self.unmatched = sorted([(self.topics[0], rgb[i]) for i in lone_rgb] + [(self.topics[1], aux[j]) for j in lone_aux],
                                key=lambda u: u[1])
        self.skipped = len(lone_rgb)
        if not pairs:
            raise ValueError(f"{self.path}: no message of {self.topics[0]} ({len(rgb)}) has a partner on "
                             f"{self.topics[1]} ({len(aux)}) within {max_skew_ns / 1e6:g} ms by header stamp")

    def unmatched_lines(self) -> list[str]:
        """One line per message that was not paired: topic, stamp, and why."""
        return [f"{topic} @ {stamp_text(t)}: no partner within the skew limit" for topic, t in self.unmatched]

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BagFramePair]:
        want = [{i: k for k, (i, _) in enumerate(self.pairs)}, {j: k for k, (_, j) in enumerate(self.pairs)}]
        seen = [0, 0]
        held: dict[int, list] = {}  # pair number -> [rgb (msg, log time), aux msg]
        done = 0
        for conn, log_time, raw in self.reader.messages(connections=self.conns):
            side = 0 if conn.topic == self.topics[0] else 1
            k = want[side].get(seen[side])
            seen[side] += 1
            if k is None:
                continue
            parts = held.setdefault(k, [None, None])
            msg = self.reader.deserialize(raw, conn.msgtype)
            parts[side] = (msg, log_time)
            if parts[0] is not None and parts[1] is not None:
                del held[k]
                yield self._frame(done, parts[0], parts[1][0])
                done += 1

    def _frame(self, index: int, rgb_part, aux_msg) -> BagFramePair:
        rgb_msg, log_time = rgb_part
        t = stamp_ns(rgb_msg.header)
        name = f"{self.topics[0].strip('/').replace('/', '_')}_{stamp_text(t).replace('.', '_')}"
        try:
            rgb, aux = frame_pair(rgb_msg, aux_msg, self.modality, self.resize_aux, name)
        except ValueError as e:
            raise ValueError(f"{self.topics[0]} @ {stamp_text(t)}: {e}") from None
        return BagFramePair(index, name, t / 1e6, rgb, aux, stamp=t, frame_id=str(rgb_msg.header.frame_id),
                            log_time=int(log_time))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def click_frames(seg, source, points, labels=None) -> Iterator[tuple[BagFramePair, np.ndarray, float]]:
    """SimCMF on every pair of ``source`` (a ``BagPair`` with ``modality=None``) with the
    same clicks (image pixels): yields (frame, H x W bool mask, IoU estimate). The input is
    the colour frame stacked with the auxiliary one as the model's modality says."""
    if seg.kind != "simcmf":
        raise ValueError("click_frames runs SimCMF models; GoPT models label frames with stream()")
    for frame in source:
        mask, iou = seg.run(simcmf_image(seg.config, frame.rgb, frame.aux), points=points, labels=labels)
        yield frame, mask, iou


class BagWriter:
    """A new rosbag2 with the segmentation masks: ``/<prefix>/raw_segmentation_mask`` (mono8
    class ids) and ``/<prefix>/colored_segmentation_mask`` (bgr8, the classes over the RGB
    frame), each with the RGB message's stamp and frame_id and its time in the input bag.
    ``copy_from``: an input bag whose ``copy_topics`` are copied unchanged (ROS 1 messages
    converted to ROS 2's serialisation). The bag is written under a temporary name in the
    same folder and renamed when ``close`` completes; after an error nothing is left."""

    def __init__(self, path, num_classes: int, storage: str = "mcap", topic_prefix: str = "gopt",
                 copy_from=None, copy_topics=()):
        _rosbags()
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        prefix = "/" + topic_prefix.strip("/")
        if prefix == "/" or any(not part.replace("_", "").isalnum() or part[0].isdigit() for part in prefix[1:].split("/")):
            raise ValueError(f"topic prefix {topic_prefix!r} is not a valid ROS topic name part "
                             "(letters, digits and _, not starting with a digit)")
        self.path, self.num_classes, self.written = Path(path), num_classes, 0
        self.copy_from, self.copy_topics = copy_from, tuple(copy_topics)
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self.writer = None
        self._atomic = atomic_dir(self.path)
        tmp = self._atomic.__enter__()
        try:
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer(tmp, version=Writer.VERSION_LATEST, storage_plugin=plugin)
            self.writer.open()
            image = "sensor_msgs/msg/Image"
            self.raw = self.writer.add_connection(f"{prefix}/raw_segmentation_mask", image, typestore=self.typestore)
            self.colored = self.writer.add_connection(f"{prefix}/colored_segmentation_mask", image,
                                                      typestore=self.typestore)
        except BaseException as e:
            self.writer = None
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise

    def _image(self, array, encoding, stamp: int, frame_id: str):
        t = self.typestore.types
        header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                                                nanosec=stamp % 1_000_000_000),
                                          frame_id=frame_id)
        return t["sensor_msgs/msg/Image"](header=header, **image_fields(array, encoding))

    def write(self, frame: BagFramePair, labels: np.ndarray) -> None:
        """The two masks of one frame (``labels``: H x W class ids, or a SimCMF bool mask)."""
        raw, colored = mask_images(frame.rgb, labels, self.num_classes)
        for conn, array, enc in ((self.raw, raw, "mono8"), (self.colored, colored, "bgr8")):
            msg = self._image(array, enc, frame.stamp, frame.frame_id)
            self.writer.write(conn, frame.log_time, self.typestore.serialize_cdr(msg, conn.msgtype))
        self.written += 1

    def _copy_inputs(self) -> None:
        reader = open_reader(self.copy_from)
        try:
            conns = [c for c in reader.connections if c.topic in self.copy_topics]
            out = {}
            for c in conns:
                if c.topic not in out:
                    out[c.topic] = self.writer.add_connection(c.topic, c.msgtype, typestore=self.typestore)
            for conn, log_time, raw in reader.messages(connections=conns):
                data = raw if reader.is2 else reader.typestore.ros1_to_cdr(raw, conn.msgtype)
                self.writer.write(out[conn.topic], log_time, data)
        finally:
            reader.close()

    def close(self) -> None:
        """Finish the bag and move it to its final name."""
        if self.writer is None:
            return
        try:
            if self.copy_from is not None:
                self._copy_inputs()
            self.writer.close()
        except BaseException as e:
            self._discard(e)
            raise
        self.writer = None
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard the bag: nothing appears under its name."""
        if self.writer is not None:
            self._discard(RuntimeError(f"{self.path}: writing aborted"))

    def _discard(self, error: BaseException) -> None:
        writer, self.writer = self.writer, None
        try:
            writer.abort()
        finally:
            self._atomic.__exit__(type(error), error, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
