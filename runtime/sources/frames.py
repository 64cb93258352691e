"""What every frame source yields and shares: ``FramePair`` (one synchronised rgb + aux
pair), ``FrameFailure`` and ``Unmatched`` (frames skipped or left unpaired, each with its
reason), ``Result``, and the checks a decoded pair goes through (``to_rgb``, ``to_aux``,
``check_sizes``). File, video and camera sources (``streams.py``) and ROS bags
(``runtime/ros/bags.py``) both import it."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

AUX_CHANNELS = {"thermal": 1, "depth": 1, "hha": 3, "sar": 1}


@dataclass
class FramePair:
    index: int  # position in the source, counting from 0
    name: str  # a file-name-safe name for outputs
    timestamp: float | None  # ms on the source's clock (file name, video position, camera time)
    rgb: np.ndarray  # H x W x 3 uint8, as decoded (BGR for OpenCV decoders)
    aux: np.ndarray  # H x W (thermal, depth, SAR) or H x W x 3 (HHA), the sensor's own dtype
    captured: float | None = None  # time.perf_counter() at capture, for live sources
    sources: tuple = ()  # where the frame came from: file names, "video.avi#12", "camera 0#12"


@dataclass
class FrameFailure:
    """A frame that could not be segmented, and why (one line)."""

    index: int
    name: str
    sources: tuple
    reason: str

    def line(self) -> str:
        where = ", ".join(self.sources) or self.name
        return f"skipped frame {self.index} ({where}): {self.reason}"


@dataclass
class Unmatched:
    """Frames a source could not pair (``count`` > 1: a run of video frames)."""

    name: str
    reason: str
    count: int = 1

    def line(self) -> str:
        return f"not processed: {self.name}: {self.reason}"


@dataclass
class Result:
    frame: FramePair
    labels: np.ndarray  # H x W uint8 at the frame's size
    timing: dict[str, float]  # ms: decode, preprocess, infer, latency
    dropped: int = 0  # stale frames dropped so far in this stream


def aux_channels(modality: str) -> int:
    if modality not in AUX_CHANNELS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(AUX_CHANNELS)}")
    return AUX_CHANNELS[modality]


def one_line(e: BaseException) -> str:
    """An error as one line: the project's own messages as they are, others with their type."""
    text = " ".join(str(e).split())
    if isinstance(e, (ValueError, OSError)):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _grey(img: np.ndarray) -> bool:
    """A 3- or 4-channel decode of a grey picture: its colour channels agree (up to codec noise)."""
    c = img[..., :3].astype(np.int16)
    spread = np.maximum(np.abs(c[..., 0] - c[..., 1]), np.abs(c[..., 1] - c[..., 2]))
    return float(spread.mean()) <= 4.0


def to_rgb(rgb: np.ndarray) -> np.ndarray:
    """A decoded colour frame without its alpha channel. A grey (one-channel) picture stays
    as it is, so that Segmenter's checks refuse it as they refuse it from the Python API."""
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        return rgb[..., 0]
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        return np.ascontiguousarray(rgb[..., :3])
    return rgb


def to_aux(aux: np.ndarray, channels: int) -> np.ndarray:
    """A decoded auxiliary frame with the channels the model takes: a 3-channel (BGR) decode
    of a grey sensor becomes one grey channel; an alpha channel is dropped. A colour picture
    given for a one-channel sensor stays in colour, for Segmenter's checks to refuse."""
    if aux.ndim == 3 and aux.shape[2] == 1:
        aux = aux[..., 0]
    if aux.ndim == 3 and channels == 1 and aux.shape[2] in (3, 4) and _grey(aux):
        return cv2.cvtColor(aux, cv2.COLOR_BGR2GRAY if aux.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if aux.ndim == 3 and channels == 3 and aux.shape[2] == 4:
        return np.ascontiguousarray(aux[..., :3])
    return aux


def check_sizes(name: str, rgb: np.ndarray, aux: np.ndarray, resize_aux: bool) -> None:
    if not resize_aux and rgb.shape[:2] != aux.shape[:2]:
        raise ValueError(f"{name}: rgb {rgb.shape[1]}x{rgb.shape[0]} and aux {aux.shape[1]}x{aux.shape[0]} "
                         "frames differ in size; use resize_aux (--resize-aux) if the two sensors cover "
                         "the same field of view")
