"""Paired sensor streams: the frame sources robots have, and a pipelined segmentation loop.

    from runtime import Segmenter
    from runtime import open_source, stream

    seg = Segmenter("gopt_rgbt.onnx")
    source = open_source("rgb.avi", "thermal.avi")          # or folders, an MFNet PNG, camera indices
    frames = stream(seg, source, drop_stale=True)            # on_error="skip" (default) or "stop"
    for r in frames:
        print(r.frame.index, r.frame.sources, r.labels.shape, r.timing["latency"])
    frames.failed       # [FrameFailure(index, name, sources, reason)]: frames that could not be segmented
    frames.unmatched    # [Unmatched(name, reason, count)]: frames the source could not pair

Sources yield ``FramePair``s and have ``close()``:

- ``VideoPair(rgb_video, aux_video)``: two video files, frame by frame.
- ``FolderPair(rgb_dir, aux_dir, match="name" | "timestamp")``: two image folders; auxiliary
  images are read unchanged, so 16-bit depth and radiometric thermal PNGs keep their values.
- ``ImagePair(rgb_file, aux_file)``: one still pair.
- ``MFNetFrames(path)``: MFNet's 4-channel PNGs (BGR + thermal), one file or a folder.
- ``CameraPair(i, j)``: two OpenCV cameras.

``stream`` decodes and preprocesses frame t+1 in a background thread while frame t is
in inference, through a bounded queue. With ``drop_stale`` a slow consumer gets the newest
frames: older queued frames are discarded and counted. Every result carries its timing in
milliseconds: decode, preprocess, infer (inference + postprocessing) and latency (from the
start of decoding, or from capture for cameras, to the label map).

A bad frame (unreadable, empty, not an image, an aux of another size, a failed
inference) is skipped and recorded in ``failed`` by default (``on_error="skip"``);
``on_error="stop"`` raises it instead. Frames a source could not pair (a file without a
partner, the longer video's tail, a bag message without a partner) are recorded in the
source's ``unmatched``.
"""
from __future__ import annotations

import bisect
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .frames import FrameFailure, FramePair, Result, Unmatched, aux_channels, check_sizes, one_line, to_aux, to_rgb

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".exr")
TIME_UNITS_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
STAGES = ("decode", "preprocess", "infer", "latency")


# ---- helpers ----------------------------------------------------------------------------------


def _exists(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path


def check_inputs_exist(rgb, aux=None) -> None:
    """FileNotFoundError for an rgb / aux path that does not exist (camera indices pass):
    checked before a model is loaded."""
    for x in (rgb, aux):
        if x is not None and _camera_index(x) is None:
            _exists(x)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def list_images(folder) -> list[Path]:
    """The image files of a folder in natural order (frame_2 before frame_10)."""
    folder = _exists(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
    return sorted(files, key=_natural_key)


def check_unique_names(files, what: str = "output") -> None:
    """ValueError when two files share a stem (``a.png`` and ``a.tiff``): their frames would
    get one name, so one output would overwrite the other (or a pairing by name would guess)."""
    seen: dict[str, Path] = {}
    for path in files:
        path = Path(path)
        if path.stem in seen:
            raise ValueError(f"{seen[path.stem]} and {path} map to one {what} name {path.stem!r}; "
                             "rename or move one of them")
        seen[path.stem] = path


def read_image(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return img


def stem_time(path: Path, unit: str = "ms") -> float:
    """The timestamp in a file name, in ms: its longest digit run (``1700000000123.png``,
    ``thermal_1700000000123.png``), or seconds with a fraction (``1700000000.123.png``, unit "s")."""
    runs = re.findall(r"\d+(?:\.\d+)?", path.stem)
    if not runs:
        raise ValueError(f"{path}: no digits in the file name to read a timestamp from")
    return float(max(runs, key=len)) * TIME_UNITS_MS[unit]


# ---- sources ----------------------------------------------------------------------------------


class ImagePair:
    """One still RGB + auxiliary image pair."""

    def __init__(self, rgb_path, aux_path, modality: str = "thermal", resize_aux: bool = False):
        self.rgb_path, self.aux_path = _exists(rgb_path), _exists(aux_path)
        self.channels, self.resize_aux = aux_channels(modality), resize_aux
        self.skipped, self.unmatched = 0, []

    def __iter__(self) -> Iterator[FramePair]:
        rgb = to_rgb(read_image(self.rgb_path, cv2.IMREAD_ANYCOLOR))
        aux = to_aux(read_image(self.aux_path, cv2.IMREAD_UNCHANGED), self.channels)
        check_sizes(self.rgb_path.name, rgb, aux, self.resize_aux)
        yield FramePair(0, self.rgb_path.stem, None, rgb, aux, sources=(self.rgb_path.name, self.aux_path.name))

    def close(self) -> None:
        pass


class FolderPair:
    """Two image folders, paired by file stem (``match="name"``) or by the timestamp in the
    file names (``match="timestamp"``: the nearest auxiliary frame within ``max_skew_ms``).
    RGB frames without a partner are counted in ``skipped``; they and the auxiliary frames
    no RGB frame uses are listed in ``unmatched`` with the reason. A pair that cannot be
    read is yielded as a ``FrameFailure`` (the stream reports it and goes on)."""

    def __init__(self, rgb_dir, aux_dir, match: str = "name", max_skew_ms: float = 50.0,
                 modality: str = "thermal", resize_aux: bool = False, time_unit: str = "ms"):
        if match not in ("name", "timestamp"):
            raise ValueError(f"match must be 'name' or 'timestamp', got {match!r}")
        if time_unit not in TIME_UNITS_MS:
            raise ValueError(f"time_unit must be one of {list(TIME_UNITS_MS)}, got {time_unit!r}")
        self.channels, self.resize_aux = aux_channels(modality), resize_aux
        rgb_files, aux_files = list_images(rgb_dir), list_images(aux_dir)
        check_unique_names(rgb_files)
        if match == "name":
            check_unique_names(aux_files, "pairing")
        if match == "name":
            self.pairs = self._by_name(rgb_files, aux_files)
        else:
            self.pairs = self._by_time(rgb_files, aux_files, max_skew_ms, time_unit)
        self.skipped = len(rgb_files) - len(self.pairs)
        self.unmatched = self._unmatched(rgb_files, aux_files, aux_dir, match, max_skew_ms)
        if not self.pairs:
            how = "file name" if match == "name" else f"timestamp within {max_skew_ms:g} ms"
            hint = " (try match='timestamp')" if match == "name" else ""
            raise ValueError(f"no image of {rgb_dir} has a partner in {aux_dir} by {how}{hint}")

    def _unmatched(self, rgb_files, aux_files, aux_dir, match, max_skew_ms) -> list[Unmatched]:
        used_rgb = {r for r, _, _ in self.pairs}
        used_aux = {a for _, a, _ in self.pairs}
        why = (f"no image of the same name in {aux_dir}" if match == "name"
               else f"no {Path(aux_dir).name} frame within {max_skew_ms:g} ms")
        out = [Unmatched(r.name, why) for r in rgb_files if r not in used_rgb]
        return out + [Unmatched(a.name, "no rgb frame pairs with it") for a in aux_files if a not in used_aux]

    @staticmethod
    def _by_name(rgb_files, aux_files):
        aux = {p.stem: p for p in aux_files}
        return [(r, aux[r.stem], None) for r in rgb_files if r.stem in aux]

    @staticmethod
    def _by_time(rgb_files, aux_files, max_skew_ms, unit):
        aux = sorted((stem_time(p, unit), p) for p in aux_files)
        times = [t for t, _ in aux]
        pairs = []
        for r in sorted(rgb_files, key=lambda p: stem_time(p, unit)):
            t = stem_time(r, unit)
            i = bisect.bisect_left(times, t)
            near = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t))
            if abs(times[near] - t) <= max_skew_ms:
                pairs.append((r, aux[near][1], t))
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[FramePair]:
        for index, (rgb_path, aux_path, t) in enumerate(self.pairs):
            sources = (rgb_path.name, aux_path.name)
            try:
                rgb = to_rgb(read_image(rgb_path, cv2.IMREAD_ANYCOLOR))
                aux = to_aux(read_image(aux_path, cv2.IMREAD_UNCHANGED), self.channels)
                check_sizes(rgb_path.name, rgb, aux, self.resize_aux)
            except (ValueError, cv2.error) as e:
                yield FrameFailure(index, rgb_path.stem, sources, one_line(e))
                continue
            yield FramePair(index, rgb_path.stem, t, rgb, aux, sources=sources)

    def close(self) -> None:
        pass


class MFNetFrames:
    """MFNet's layout: one 4-channel PNG per frame, channels 0-2 BGR and channel 3 thermal.
    ``path`` is one such file or a folder of them."""

    def __init__(self, path):
        path = _exists(path)
        self.files = list_images(path) if path.is_dir() else [path]
        check_unique_names(self.files)
        self.skipped, self.unmatched = 0, []
        self._read(self.files[0])  # a wrong layout fails here, not in the middle of a stream

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        img = read_image(path, cv2.IMREAD_UNCHANGED)
        if img.ndim != 3 or img.shape[2] != 4 or img.dtype != np.uint8:
            raise ValueError(f"{path}: expected an MFNet 4-channel uint8 PNG (BGR + thermal), got shape "
                             f"{img.shape} {img.dtype}; pass the auxiliary frames separately")
        return np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3])

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[FramePair]:
        for index, path in enumerate(self.files):
            try:
                rgb, thermal = self._read(path)
            except (ValueError, cv2.error) as e:
                yield FrameFailure(index, path.stem, (path.name,), one_line(e))
                continue
            yield FramePair(index, path.stem, None, rgb, thermal, sources=(path.name,))

    def close(self) -> None:
        pass


class VideoPair:
    """Two video files read in step; the stream ends with the shorter one. Videos decode
    as 3-channel BGR: a grey sensor's frames become one grey channel. The longer video's
    remaining frames are counted in ``skipped`` and listed in ``unmatched``."""

    def __init__(self, rgb_path, aux_path, modality: str = "thermal", resize_aux: bool = False):
        if modality == "depth":
            raise ValueError(f"{aux_path}: depth from a video file has lost its 16-bit values; "
                             "record depth as a folder of 16-bit PNGs")
        self.channels, self.resize_aux = aux_channels(modality), resize_aux
        self.paths = (_exists(rgb_path), _exists(aux_path))
        self.caps = []
        for p in self.paths:
            cap = cv2.VideoCapture(str(p))
            if not cap.isOpened():
                self.close()
                raise ValueError(f"{p}: cannot be opened as a video")
            self.caps.append(cap)
        self.skipped, self.unmatched = 0, []

    def __iter__(self) -> Iterator[FramePair]:
        rgb_cap, aux_cap = self.caps
        stem = self.paths[0].stem
        index = 0
        while True:
            ok_rgb, rgb = rgb_cap.read()
            ok_aux, aux = aux_cap.read()
            if not (ok_rgb and ok_aux):
                if ok_rgb or ok_aux:
                    self._count_tail(index, 0 if ok_rgb else 1)
                return
            aux = to_aux(aux, self.channels)
            if index == 0:
                check_sizes(f"{self.paths[0].name} + {self.paths[1].name}", rgb, aux, self.resize_aux)
            sources = (f"{self.paths[0].name}#{index}", f"{self.paths[1].name}#{index}")
            yield FramePair(index, f"{stem}_{index:06d}", rgb_cap.get(cv2.CAP_PROP_POS_MSEC), rgb, aux,
                            sources=sources)
            index += 1

    def _count_tail(self, index: int, longer: int) -> None:
        """The longer video's frames from ``index`` on (one already read) have no partner."""
        n = 1
        while self.caps[longer].grab():
            n += 1
        name, other = self.paths[longer].name, self.paths[1 - longer].name
        self.skipped += n
        self.unmatched.append(Unmatched(f"{name} frames {index}-{index + n - 1}",
                                        f"{other} ended after {index} frames", n))

    def close(self) -> None:
        for cap in self.caps:
            cap.release()
        self.caps = []


def open_camera(index: int, width: int | None = None, height: int | None = None) -> cv2.VideoCapture:
    level = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        cap = cv2.VideoCapture(int(index))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"camera {index}: cannot be opened (no such device, or another program holds it)")
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return cap


class CameraPair:
    """Two OpenCV cameras (device indices). Both are grabbed back to back before decoding,
    so the pair is as close in time as the drivers allow; ``timestamp`` is the capture time
    in ms on ``time.monotonic``'s clock. Runs until the consumer stops."""

    def __init__(self, rgb_index: int, aux_index: int, modality: str = "thermal", resize_aux: bool = False,
                 width: int | None = None, height: int | None = None):
        if int(rgb_index) == int(aux_index):
            raise ValueError(f"camera {rgb_index} given for both rgb and aux")
        self.channels, self.resize_aux = aux_channels(modality), resize_aux
        self.indices = (int(rgb_index), int(aux_index))
        self.caps = [open_camera(self.indices[0], width, height)]
        try:
            self.caps.append(open_camera(self.indices[1], width, height))
        except ValueError:
            self.close()
            raise
        self.skipped, self.unmatched = 0, []

    def __iter__(self) -> Iterator[FramePair]:
        rgb_cap, aux_cap = self.caps
        index = 0
        while True:
            for i, cap in zip(self.indices, self.caps):
                if not cap.grab():
                    raise ValueError(f"camera {i}: stopped delivering frames")
            captured, timestamp = time.perf_counter(), time.monotonic() * 1e3
            (ok_rgb, rgb), (ok_aux, aux) = rgb_cap.retrieve(), aux_cap.retrieve()
            if not (ok_rgb and ok_aux):
                raise ValueError(f"camera {self.indices[0] if not ok_rgb else self.indices[1]}: "
                                 "a grabbed frame could not be decoded")
            if rgb.ndim == 2:
                rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR)
            aux = to_aux(aux, self.channels)
            if index == 0:
                check_sizes(f"cameras {self.indices[0]} + {self.indices[1]}", rgb, aux, self.resize_aux)
            yield FramePair(index, f"cam{self.indices[0]}_{index:06d}", timestamp, rgb, aux, captured,
                            (f"camera {self.indices[0]}#{index}", f"camera {self.indices[1]}#{index}"))
            index += 1

    def close(self) -> None:
        for cap in self.caps:
            cap.release()
        self.caps = []


def _camera_index(x) -> int | None:
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, str) and x.isdigit() and not os.path.exists(x):
        return int(x)
    return None


def open_source(rgb=None, aux=None, modality: str = "thermal", resize_aux: bool = False, match: str = "name",
                max_skew_ms: float | None = None, time_unit: str = "ms", bag=None, rgb_topic: str | None = None,
                aux_topic: str | None = None):
    """The source for what ``rgb`` and ``aux`` are: two camera indices, two folders, two
    videos, two images, or (``aux`` None) an MFNet 4-channel PNG file or folder. Or a ROS
    bag: ``bag=PATH, rgb_topic=..., aux_topic=...`` (``runtime.ros.bags.BagPair``, messages
    paired by header stamp within ``max_skew_ms``, default 20; folders default to 50)."""
    if bag is not None:
        if rgb is not None or aux is not None:
            raise ValueError("give either a bag (with its topics) or rgb / aux sources, not both")
        from ..ros.bags import BagPair

        return BagPair(bag, rgb_topic, aux_topic, 20.0 if max_skew_ms is None else max_skew_ms, modality, resize_aux)
    if rgb is None:
        raise ValueError("open_source needs rgb (and aux) sources, or bag=PATH with rgb_topic and aux_topic")
    max_skew_ms = 50.0 if max_skew_ms is None else max_skew_ms
    cams = _camera_index(rgb), (None if aux is None else _camera_index(aux))
    if cams[0] is not None or cams[1] is not None:
        if None in cams:
            raise ValueError("a camera index pairs only with another camera index (rgb and aux)")
        return CameraPair(*cams, modality=modality, resize_aux=resize_aux)
    rgb = _exists(rgb)
    if aux is None:
        if rgb.is_dir() or rgb.suffix.lower() == ".png":
            return MFNetFrames(rgb)
        raise ValueError(f"{rgb}: an aux source is needed unless rgb is an MFNet 4-channel PNG file or folder")
    aux = _exists(aux)
    if rgb.is_dir() and aux.is_dir():
        return FolderPair(rgb, aux, match, max_skew_ms, modality, resize_aux, time_unit)
    if rgb.is_dir() or aux.is_dir():
        raise ValueError(f"{rgb} and {aux}: one is a folder and the other a file; pass two folders or two files")
    images = [p.suffix.lower() in IMAGE_EXTS for p in (rgb, aux)]
    if all(images):
        return ImagePair(rgb, aux, modality, resize_aux)
    if any(images):
        raise ValueError(f"{rgb} and {aux}: one is an image and the other a video; pass two of a kind")
    return VideoPair(rgb, aux, modality, resize_aux)


# ---- the pipelined loop -----------------------------------------------------------------------


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


@dataclass
class _Job:
    frame: FramePair
    prepared: object
    start: float
    timing: dict = field(default_factory=dict)


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """A blocking put that gives up when the consumer has gone."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


def stream(segmenter, source, queue_size: int = 2, drop_stale: bool = False,
           color_order: str | None = None, on_error: str = "skip", on_skip=None) -> "Stream":
    """Segment every frame pair of ``source``, in order, with decoding and preprocessing of
    the next frames overlapping the current inference (a background thread, a queue of
    ``queue_size`` prepared frames). ``drop_stale``: when the consumer falls behind, the
    oldest queued frames are discarded (counted in ``Result.dropped``) so that it always gets
    the newest. ``on_error="skip"``: a frame that cannot be read, checked or segmented is
    recorded in ``Stream.failed`` (and passed to ``on_skip(failure)``) and the stream goes on;
    ``"stop"``: its error is raised here. The source is closed when the stream ends, stops
    early or fails."""
    if getattr(segmenter, "kind", "gopt") != "gopt":
        raise ValueError("streams run GoPT models (rgb + aux frames); SimCMF segments on clicks")
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    return Stream(segmenter, source, queue_size, drop_stale, color_order, on_error, on_skip)


@dataclass
class _Report:
    """What a running pipeline records besides its results (no reference back to the Stream,
    so that a Stream dropped by its consumer is closed at once)."""

    on_error: str
    on_skip: object
    failed: list = field(default_factory=list)
    dropped: int = 0

    def failure(self, failure: FrameFailure) -> None:
        self.failed.append(failure)
        if self.on_skip is not None:
            self.on_skip(failure)


class Stream:
    """The iterator ``stream`` returns: ``Result``s in order, and the report of what was not
    segmented: ``failed`` (``FrameFailure``s), ``unmatched`` (the source's ``Unmatched``),
    ``dropped`` (stale frames discarded)."""

    def __init__(self, segmenter, source, queue_size, drop_stale, color_order, on_error, on_skip):
        self.source = source
        self._report = _Report(on_error, on_skip)
        self._results = _pipeline(segmenter, source, queue_size, drop_stale, color_order, self._report)

    def __iter__(self):
        return self

    def __next__(self) -> Result:
        return next(self._results)

    def close(self) -> None:
        self._results.close()

    @property
    def failed(self) -> list[FrameFailure]:
        return self._report.failed

    @property
    def dropped(self) -> int:
        return self._report.dropped

    @property
    def unmatched(self) -> list[Unmatched]:
        """The source's ``Unmatched`` entries: files, video frames or bag messages it could not pair."""
        return list(getattr(self.source, "unmatched", []))


def _failure_of(frame: FramePair, error: BaseException) -> FrameFailure:
    return FrameFailure(frame.index, frame.name, frame.sources, one_line(error))


def _pipeline(segmenter, source, queue_size, drop_stale, color_order, report: _Report) -> Iterator[Result]:
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    skip = report.on_error == "skip"

    def offer(job: _Job) -> None:
        if not drop_stale:
            return _put(q, job, stop)
        while not stop.is_set():
            try:
                q.put_nowait(job)
                return
            except queue.Full:
                try:
                    q.get_nowait()
                    report.dropped += 1
                except queue.Empty:
                    pass

    def produce() -> None:
        try:
            frames = iter(source)
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                if isinstance(frame, FrameFailure):
                    if not skip:
                        raise ValueError(frame.reason)
                    _put(q, frame, stop)
                    continue
                decoded = time.perf_counter()
                if frame.captured is not None:
                    start = frame.captured
                try:
                    prepared = segmenter.prepare(frame.rgb, frame.aux, color_order)
                except Exception as e:  # noqa: BLE001 - a bad frame: reported, the stream goes on
                    if not skip:
                        raise
                    _put(q, _failure_of(frame, e), stop)
                    continue
                done = time.perf_counter()
                offer(_Job(frame, prepared, start, {"decode": 1e3 * (decoded - start),
                                                    "preprocess": 1e3 * (done - decoded)}))
            _put(q, _End(), stop)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            _put(q, _Failed(e), stop)
        finally:
            source.close()

    worker = threading.Thread(target=produce, name="frame-pipeline", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                if not worker.is_alive() and q.empty():
                    raise RuntimeError("the frame pipeline thread ended without a result") from None
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, FrameFailure):
                report.failure(item)
                continue
            t0 = time.perf_counter()
            try:
                labels = segmenter.run_prepared([item.prepared])[0]
            except Exception as e:  # noqa: BLE001 - e.g. non-finite logits: this frame failed
                if not skip:
                    raise
                report.failure(_failure_of(item.frame, e))
                continue
            t1 = time.perf_counter()
            timing = {**item.timing, "infer": 1e3 * (t1 - t0), "latency": 1e3 * (t1 - item.start)}
            yield Result(item.frame, labels, timing, report.dropped)
    finally:
        stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=5.0)


def timing_summary(results) -> dict[str, dict[str, float]]:
    """{stage: {"mean", "p50", "p90"}} in ms over results (or their timing dicts)."""
    timings = [r.timing if isinstance(r, Result) else r for r in results]
    out = {}
    for stage in STAGES:
        v = np.array([t[stage] for t in timings if stage in t], np.float64)
        if len(v):
            out[stage] = {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
                          "p90": float(np.percentile(v, 90))}
    return out
