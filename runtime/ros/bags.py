"""Recorded robot data in and out: ROS bags through the ``rosbags`` library (pure Python,
``pip install -e ".[ros]"``; no ROS installation).

    from runtime import open_source, stream
    from runtime.ros.bags import BagWriter

    source = open_source(bag="run.mcap", rgb_topic="/cam/image_raw", aux_topic="/flir/image_raw")
    with BagWriter("run_seg", storage="mcap", topic_prefix="gopt", num_classes=9) as out:
        for r in stream(seg, source):
            out.write(r.frame, r.labels)
    print(source.unmatched)                    # [Unmatched("/flir/image_raw @ 1700000000.123456789", why)]

Input: rosbag2 (a folder with ``metadata.yaml``, or one ``.db3`` / ``.mcap`` file) or ROS 1
(``.bag``), topics of ``sensor_msgs/msg/Image`` or ``CompressedImage``. RGB and auxiliary
messages are paired by header stamp: the closest pairs first, each message used once,
a pair only within ``max_skew_ms`` (``pair_by_stamp``). Messages left without a partner
are listed in ``unmatched``; a pair with a damaged message is yielded as a ``FrameFailure``
and the bag is read on. Output: a new rosbag2 (MCAP or sqlite3) with
``/<prefix>/raw_segmentation_mask`` (mono8 class ids; a SimCMF mask as 0 / 1) and
``/<prefix>/colored_segmentation_mask`` (bgr8 overlay), each carrying the RGB message's
header, written under a temporary name and renamed when complete. SimCMF models click on
every pair with ``click_frames``.
"""
from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..files import atomic_dir
from ..sources.frames import FrameFailure, FramePair, Unmatched, aux_channels, check_sizes, one_line
from .messages import image_fields, mask_images, model_aux, rgb_frame, simcmf_image
from .stamps import header_stamp, stamp_text

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGES = ("mcap", "sqlite3")


def _rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise ValueError("reading and writing bags needs the rosbags package: pip install -e \".[ros]\"") from None


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


def damaged(conn, raw, error: Exception) -> str:
    """Why a serialised message cannot be read, in one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"not a readable {conn.msgtype} ({len(raw)} bytes; truncated or damaged?): {text}"


class BagPair:
    """RGB and auxiliary image messages from one bag, paired by header stamp within
    ``max_skew_ms``. ``modality`` None: auxiliary frames as they came (for SimCMF's
    ``messages.simcmf_image``). Messages without a partner, or whose header cannot be
    read, are not segmented: they are listed in ``unmatched`` as ``Unmatched``
    ("TOPIC @ STAMP" and why), and ``skipped`` counts the RGB ones. A pair with a message
    that cannot be decoded (sizes that do not add up, an unsupported encoding, a truncated
    message) is yielded as a ``FrameFailure`` naming the message, and reading goes on.

    Reading is two passes over the two topics: header stamps first (to pair; read in place,
    ``stamps.py``), then images, decoded only for pairs; memory holds at most the images
    between a pair's two parts."""

    def __init__(self, path, rgb_topic: str, aux_topic: str, max_skew_ms: float = 20.0, modality: str | None = "thermal",
                 resize_aux: bool = False):
        if not max_skew_ms >= 0:
            raise ValueError(f"max_skew_ms must be >= 0, got {max_skew_ms}")
        self.path, self.topics = Path(path), (rgb_topic, aux_topic)
        if modality is not None:
            aux_channels(modality)  # an unknown modality fails before the bag is read
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
        unreadable = self._read_stamps()
        rgb, aux = self.stamps
        rgb_ok, aux_ok = ([i for i, t in enumerate(side) if t is not None] for side in self.stamps)
        pairs, lone_rgb, lone_aux = pair_by_stamp([rgb[i] for i in rgb_ok], [aux[j] for j in aux_ok], max_skew_ns)
        self.pairs = [(rgb_ok[i], aux_ok[j]) for i, j in pairs]
        lone = [(rgb[rgb_ok[i]], self._unpaired(0, rgb[rgb_ok[i]], max_skew_ns)) for i in lone_rgb]
        lone += [(aux[aux_ok[j]], self._unpaired(1, aux[aux_ok[j]], max_skew_ns)) for j in lone_aux]
        self.unmatched = [u for _, u in sorted(lone + unreadable, key=lambda item: item[0])]
        self.skipped = len(rgb) - len(self.pairs)
        if not self.pairs:
            raise ValueError(f"{self.path}: no message of {self.topics[0]} ({len(rgb_ok)}) has a partner on "
                             f"{self.topics[1]} ({len(aux_ok)}) within {max_skew_ns / 1e6:g} ms by header stamp")

    def _read_stamps(self) -> list[tuple[int, Unmatched]]:
        """``self.stamps``: per topic, the header stamps (ns) in bag order, None where a header
        cannot be read. Returns those messages as (bag time, ``Unmatched``)."""
        stamps, unreadable = {t: [] for t in self.topics}, []
        for conn, log_time, raw in self.reader.messages(connections=self.conns):
            try:
                stamps[conn.topic].append(header_stamp(self.reader, conn, raw))
            except Exception as e:  # noqa: BLE001 - rosbags raises several kinds for a damaged message
                stamps[conn.topic].append(None)
                name = f"{conn.topic} message {len(stamps[conn.topic]) - 1} (bag time {stamp_text(log_time)})"
                unreadable.append((log_time, Unmatched(name, f"its header cannot be read: {damaged(conn, raw, e)}")))
        self.stamps = (stamps[self.topics[0]], stamps[self.topics[1]])
        return unreadable

    def _unpaired(self, side: int, stamp: int, max_skew_ns: int) -> Unmatched:
        return Unmatched(f"{self.topics[side]} @ {stamp_text(stamp)}",
                         f"no partner on {self.topics[1 - side]} within {max_skew_ns / 1e6:g} ms")

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[BagFramePair | FrameFailure]:
        want = [{i: k for k, (i, _) in enumerate(self.pairs)}, {j: k for k, (_, j) in enumerate(self.pairs)}]
        seen = [0, 0]
        held: dict[int, list] = {}  # pair number -> [rgb _Decoded, aux _Decoded]
        done = 0
        for conn, log_time, raw in self.reader.messages(connections=self.conns):
            side = 0 if conn.topic == self.topics[0] else 1
            k = want[side].get(seen[side])
            seen[side] += 1
            if k is None:
                continue
            parts = held.setdefault(k, [None, None])
            parts[side] = self._decode(side, conn, raw, log_time)
            if parts[0] is not None and parts[1] is not None:
                del held[k]
                yield self._frame(done, k, *parts)
                done += 1

    def _decode(self, side: int, conn, raw, log_time: int) -> "_Decoded":
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
        except Exception as e:  # noqa: BLE001 - a damaged message fails its pair, the bag is read on
            return _Decoded(None, "", int(log_time), damaged(conn, raw, e))
        try:
            image = rgb_frame(msg) if side == 0 else model_aux(msg, self.modality)
        except Exception as e:  # noqa: BLE001 - sizes that do not add up, an unknown encoding ...
            return _Decoded(None, "", int(log_time), one_line(e))
        return _Decoded(image, str(msg.header.frame_id), int(log_time))

    def _frame(self, index: int, k: int, rgb: "_Decoded", aux: "_Decoded") -> BagFramePair | FrameFailure:
        i, j = self.pairs[k]
        t = self.stamps[0][i]
        name = f"{self.topics[0].strip('/').replace('/', '_')}_{stamp_text(t).replace('.', '_')}"
        sources = (f"{self.topics[0]} @ {stamp_text(t)}", f"{self.topics[1]} @ {stamp_text(self.stamps[1][j])}")
        reason = next((f"{where}: {part.error}" for where, part in zip(sources, (rgb, aux)) if part.error), None)
        if reason is None and self.modality is not None:
            try:
                check_sizes(name, rgb.image, aux.image, self.resize_aux)
            except ValueError as e:
                reason = one_line(e)
        if reason is not None:
            return FrameFailure(index, name, sources, reason)
        return BagFramePair(index, name, t / 1e6, rgb.image, aux.image, sources=sources, stamp=t,
                            frame_id=rgb.frame_id, log_time=rgb.log_time)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


@dataclass
class _Decoded:
    """One message of a pair: its image, or why it has none."""

    image: np.ndarray | None
    frame_id: str
    log_time: int
    error: str = ""


def click_frames(seg, source, points, labels=None, on_error: str = "skip",
                 on_skip=None) -> Iterator[tuple[BagFramePair, np.ndarray, float]]:
    """SimCMF on every pair of ``source`` (a ``BagPair`` with ``modality=None``) with the
    same clicks (image pixels): yields (frame, H x W bool mask, IoU estimate). The input is
    the colour frame stacked with the auxiliary one as the model's modality says. A pair
    that cannot be read or segmented is passed to ``on_skip`` as a ``FrameFailure`` and
    left out (``on_error="skip"``), or its error is raised (``"stop"``), as ``stream`` does."""
    if seg.kind != "simcmf":
        raise ValueError("click_frames runs SimCMF models; GoPT models label frames with stream()")
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    for frame in source:
        try:
            if isinstance(frame, FrameFailure):
                raise ValueError(frame.reason)
            mask, iou = seg.run(simcmf_image(seg.config, frame.rgb, frame.aux), points=points, labels=labels)
        except Exception as e:  # noqa: BLE001 - a bad frame: reported, the bag is read on
            if on_error == "stop":
                raise
            if on_skip is not None:
                on_skip(FrameFailure(frame.index, frame.name, frame.sources, one_line(e)))
            continue
        yield frame, mask, iou


def ros2_message(msg, typestore):
    """A message read from a ROS 1 bag as the same type of ``typestore`` (ROS 2): fields by
    name, nested messages converted, ROS 1's extra fields (``Header.seq``) left out. (The ROS 1
    bytes cannot be converted to CDR with the ROS 1 definitions: the output bag declares ROS 2's.)"""
    cls = typestore.types[msg.__msgtype__]
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(msg, f.name)
        if hasattr(value, "__msgtype__"):
            value = ros2_message(value, typestore)
        elif isinstance(value, list):
            value = [ros2_message(v, typestore) if hasattr(v, "__msgtype__") else v for v in value]
        values[f.name] = value
    return cls(**values)


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
                data = raw if reader.is2 else self.typestore.serialize_cdr(
                    ros2_message(reader.deserialize(raw, conn.msgtype), self.typestore), conn.msgtype)
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
