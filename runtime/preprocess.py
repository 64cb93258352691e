"""Frame preprocessing and label-map postprocessing with OpenCV and numpy (no torch).

Sensor frames in, model-space float32 tensors out, and back. The one place that knows
how each modality's raw values become the values the model's ``aux_mean``/``aux_std``
were computed on:

- thermal: uint8 as is (0-255); uint16 scaled by 1/257 onto 0-255; float32 as is.
- depth: uint16 counts (millimetres unless ``depth_units`` says otherwise) or float32
  metres, both to metres; 0 is a hole.
  Holes are filled with the normalisation mean, so they enter the model as 0.
- hha: H x W x 3 uint8, 0-255.  sar: uint8 / uint16 (scaled to 0-255) / float32.
"""
from __future__ import annotations

import cv2
import numpy as np

from .colors import colorize, overlay, palette  # noqa: F401  (colours live in colors.py; kept importable here)


def _check_frame(name: str, x, channels: int | None, dtypes: tuple) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must be {' or '.join(np.dtype(d).name for d in dtypes)}, got {x.dtype}")
    if channels == 1 and x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    want = "H x W" if channels == 1 else f"H x W x {channels}"
    if (channels == 1 and x.ndim != 2) or (channels not in (None, 1) and (x.ndim != 3 or x.shape[2] != channels)):
        raise ValueError(f"{name} must be {want}, got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"{name} is empty or a single pixel row / column (shape {x.shape}); "
                         "expected a frame of at least 2x2")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values"
                         + ("; mark depth holes as 0 (np.nan_to_num(depth, nan=0))" if "depth" in name else ""))
    return x


# A normalised value this many standard deviations from the model's statistics is a frame on
# another scale (raw counts given as float32, millimetres as metres), not a reading.
MAX_STD = 1000.0
SCALES = {"depth": "metres", "thermal": "0-255 (8-bit) values", "sar": "0-255 (8-bit) values",
          "hha": "0-255 (8-bit) values"}


def _check_range(name: str, x: np.ndarray, raw: np.ndarray, mean, std, scale: str) -> None:
    """ValueError when normalised ``x`` lies beyond MAX_STD standard deviations (one pass)."""
    if x.size and float(np.abs(x).max()) > MAX_STD:
        extreme = float(raw.flat[np.abs(raw).argmax()])
        raise ValueError(f"{name} values reach {extreme:.3g}, more than {MAX_STD:.0f} standard deviations from the "
                         f"model's statistics (mean {list(mean)}, std {list(std)}); float32 {name} frames are "
                         f"taken as {scale}: convert the frame to that scale")


def _resize(x: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    h, w = size
    if x.shape[:2] == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=interpolation)


def preprocess_rgb(image: np.ndarray, size, mean, std, color_order: str = "bgr") -> np.ndarray:
    """H x W x 3 uint8 -> [1, 3, h, w] float32, RGB order, (x - mean) / std on 0-255 values."""
    image = _check_frame("rgb", image, 3, (np.uint8,))
    if color_order not in ("bgr", "rgb"):
        raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    if color_order == "bgr":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    x = _resize(image, size, cv2.INTER_LINEAR).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def decode_aux(aux: np.ndarray, modality: str, channels: int,
               depth_units: float = 0.001) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw sensor values -> (H x W x C float32 model units, hole mask or None).
    ``depth_units``: metres per count of a uint16 depth image (0.001: millimetres)."""
    if modality == "depth":
        aux = _check_frame("depth", aux, 1, (np.uint16, np.float32))
        metres = aux.astype(np.float32) * np.float32(depth_units) if aux.dtype == np.uint16 else aux
        return metres[..., None], metres <= 0
    name = modality
    aux = _check_frame(name, aux, channels, (np.uint8, np.uint16, np.float32))
    x = aux.astype(np.float32)
    if aux.dtype == np.uint16:
        x /= 257.0  # 16-bit sensor range onto the 8-bit range the statistics use
    return (x[..., None] if x.ndim == 2 else x), None


def preprocess_aux(aux: np.ndarray, size, mean, std, modality: str = "thermal",
                   depth_units: float = 0.001) -> np.ndarray:
    """Raw auxiliary frame -> [1, C, h, w] float32, normalised; depth holes become 0."""
    channels = len(mean)
    x, holes = decode_aux(aux, modality, channels, depth_units)
    # Depth: nearest, so that holes and edges are not blended into false depths.
    interpolation = cv2.INTER_NEAREST if modality == "depth" else cv2.INTER_LINEAR
    raw = _resize(x, size, interpolation).reshape(size[0], size[1], channels)
    x = (raw - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    _check_range(modality, x, raw, mean, std, SCALES.get(modality, "the statistics' scale"))
    if holes is not None:
        x[_resize(holes.astype(np.uint8), size, cv2.INTER_NEAREST).astype(bool)] = 0.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _check_rank(name: str, x, ranks: tuple, want: str) -> None:
    if not isinstance(x, np.ndarray):
        got = f"a numpy {x.dtype} scalar" if isinstance(x, np.generic) else type(x).__name__
        raise ValueError(f"{name} must be a numpy array, got {got}")
    if x.ndim not in ranks:
        raise ValueError(f"{name} must be {want}, got a {x.ndim}-d array of shape {x.shape}")


def resize_frames(rgb: np.ndarray, aux: np.ndarray, size, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw frames resized to the model's input, in their own dtypes: RGB linear as
    ``preprocess_rgb``, depth nearest (holes and edges are not blended), other modalities
    linear. Frames already at ``size`` are returned as they are."""
    interpolation = cv2.INTER_NEAREST if modality == "depth" else cv2.INTER_LINEAR
    return _resize(rgb, size, cv2.INTER_LINEAR), _resize(aux, size, interpolation)


def frame_feeds(rgb: np.ndarray, aux: np.ndarray, size, modality: str, channels: int, frame_input: dict,
                color_order: str = "bgr") -> tuple[np.ndarray, np.ndarray]:
    """Feeds of a GoPT graph that preprocesses frames itself (``python -m export.onnx
    --uint8-input``): the frames checked, resized to the model's input when their size differs
    (the one step left outside the graph), RGB in the graph's colour order ->
    ``rgb`` [1, h, w, 3] uint8 and ``aux`` [1, h, w, C] uint8, or for 16-bit sensors the
    frame's little-endian bytes [1, h, w, C, 2] (a view: TensorRT has no 16-bit integer type).

    Same values as ``preprocess_rgb`` / ``preprocess_aux`` give, with one exception: a
    thermal frame of another size is resized in its integer dtype here, in float32 there
    (a difference below one grey level)."""
    rgb = _check_frame("rgb", rgb, 3, (np.uint8,))
    if color_order not in ("bgr", "rgb"):
        raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    name = "depth" if modality == "depth" else modality
    want = np.dtype(frame_input["aux_dtype"])
    if isinstance(aux, np.ndarray) and aux.dtype != want:
        raise ValueError(f"{name} must be {want.name} for this model (it takes the sensor's {want.name} frames "
                         f"and preprocesses them in the graph), got {aux.dtype}; convert the frames or use a model "
                         f"exported for {aux.dtype} (python -m export.onnx --uint8-input --aux-dtype ...)")
    aux = _check_frame(name, aux, channels, (want,))
    if color_order != frame_input["color_order"]:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)  # swaps either way
    rgb, aux = resize_frames(rgb, aux, size, modality)
    aux = np.ascontiguousarray(aux).reshape(size[0], size[1], channels)
    if want == np.uint16:
        aux = aux.astype("<u2", copy=False).view(np.uint8).reshape(size[0], size[1], channels, 2)
    return np.ascontiguousarray(rgb)[None], aux[None]


def check_pair(rgb: np.ndarray, aux: np.ndarray) -> None:
    """Type and rank of both frames first, then equal sizes (one-line ValueErrors)."""
    _check_rank("rgb", rgb, (3,), "an H x W x 3 image")
    _check_rank("aux", aux, (2, 3), "an H x W or H x W x C image")
    if rgb.shape[:2] != aux.shape[:2]:
        raise ValueError(f"rgb and aux frames must have the same size, got rgb {rgb.shape[1]}x{rgb.shape[0]} "
                         f"and aux {aux.shape[1]}x{aux.shape[0]} (W x H); pass resize_aux=True if they "
                         "cover the same field of view")


def check_sensor_kinds(rgb, aux, modality: str, aux_channels: int) -> None:
    """Frames that are the wrong sensor's, with the likely cause: a grey picture given as the
    colour frame, a colour picture as a one-channel sensor (rgb and aux swapped), a 16-bit
    depth image given to a thermal model. Shared by ``Segmenter`` and the frame sources."""
    if isinstance(rgb, np.ndarray) and (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 1)):
        raise ValueError(f"rgb is a one-channel (grey) image of shape {rgb.shape}; expected an H x W x 3 colour "
                         "frame (are rgb and aux swapped?)")
    if not isinstance(aux, np.ndarray) or aux.ndim < 2:
        return
    if aux_channels == 1 and aux.ndim == 3 and aux.shape[2] in (3, 4):
        raise ValueError(f"{modality} is a {aux.shape[2]}-channel colour image of shape {aux.shape}; expected "
                         f"H x W {modality} values (are rgb and aux swapped?)")
    if modality == "thermal" and aux.dtype == np.uint16 and aux.size:
        holes = float((aux == 0).mean())
        if holes > 0.01:
            raise ValueError(f"thermal is uint16 with {100 * holes:.1f}% zero pixels: that is a 16-bit depth image "
                             "(0 = no reading), not thermal; this model takes thermal frames")


def labels_to_frame(labels: np.ndarray, size) -> np.ndarray:
    """[h, w] label map -> [H, W] uint8 at the frame's size (nearest neighbour)."""
    return _resize(labels.astype(np.uint8), size, cv2.INTER_NEAREST)


def preprocess_image(image: np.ndarray, channels: int, side: int, mean, std, scale: str | None = None,
                     color_order: str = "bgr", rgb_first: bool = False, minmax_channels=()) -> np.ndarray:
    """SimCMF: H x W x C image -> [1, C, side, side] float32, stretched to the square input
    (no aspect-preserving padding, as SimCMF trains) and normalised ``(x - mean) / std``.

    uint8 channels are 8-bit values; they are divided by 255 when the model's statistics
    are on 0-1 values (``scale`` starting "0-1" or "RGB 0-1"). float32 is taken as already
    on the statistics' scale. With ``rgb_first`` and BGR colour order, the first three
    channels are reordered to RGB. ``minmax_channels`` (thermal, depth) are stretched per
    image to 0-255 and rounded to 8 bits first, as SimCMF's datasets do.
    """
    image = _check_frame("image", image, channels, (np.uint8, np.float32))
    if channels == 1:
        image = image[..., None]
    if rgb_first and color_order == "bgr":
        image = np.concatenate([image[..., 2::-1], image[..., 3:]], axis=-1)
    x = image.astype(np.float32)
    for c in minmax_channels or ():
        lo, hi = float(x[..., c].min()), float(x[..., c].max())
        x[..., c] = np.round((x[..., c] - lo) / max(hi - lo, 1e-12) * 255.0)
    if (image.dtype == np.uint8 or minmax_channels) and str(scale or "").startswith(("0-1", "RGB 0-1")):
        x /= 255.0
    raw = _resize(x, (side, side), cv2.INTER_LINEAR).reshape(side, side, channels)
    x = (raw - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    _check_range("image", x, raw, mean, std, f"{scale or 'the statistics'} scale")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
