"""ROS image messages <-> numpy, with no ROS installation.

Works on any object with the fields of ``sensor_msgs/msg/Image`` (``height``, ``width``,
``encoding``, ``is_bigendian``, ``step``, ``data``) or ``sensor_msgs/msg/CompressedImage``
(``format``, ``data``): messages read from bags by ``rosbags``, and the node's ``rclpy``
messages alike.

    frame = image_to_numpy(msg)                   # H x W or H x W x C, the encoding's dtype and order
    bgr = rgb_frame(msg)                          # a colour / mono message -> H x W x 3 uint8 BGR
    fields = image_fields(labels, "mono8")        # keyword arguments for an Image message

Encodings: bgr8, rgb8, bgra8, rgba8, mono8, mono16, 16UC1 (depth, millimetres), 32FC1
(depth, metres; NaN is a hole), 8UC1, 8UC3. Rows may be padded (``step`` larger than a
row) and multi-byte values big-endian (``is_bigendian``). Compressed images: jpeg and png
(``compressed`` transport; colour decodes to BGR), and ``compressedDepth`` png (16UC1 as
is, 32FC1 from its quantised inverse depth). Anything else, or a message whose sizes do
not add up, is a one-line ``ValueError`` naming what came and what was expected.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

# encoding -> (dtype, channels)
ENCODINGS = {
    "bgr8": (np.uint8, 3), "rgb8": (np.uint8, 3), "bgra8": (np.uint8, 4), "rgba8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1),
}
# colour encodings -> OpenCV conversion to BGR (None: already BGR)
TO_BGR = {"bgr8": None, "8UC3": None, "rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR,
          "rgba8": cv2.COLOR_RGBA2BGR, "mono8": cv2.COLOR_GRAY2BGR, "8UC1": cv2.COLOR_GRAY2BGR}
DEPTH_HEADER = struct.Struct("<iff")  # compressed_depth_image_transport's ConfigHeader: format, depthParam[2]


def is_compressed(msg) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _bytes(data) -> np.ndarray:
    """A message's data field (bytes, array.array, numpy or a list of ints) as uint8."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1) if data.dtype.itemsize == 1 else data.astype(np.uint8)
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:
        return np.asarray(data, np.uint8)


def image_to_numpy(msg) -> np.ndarray:
    """An Image message as H x W (one channel) or H x W x C, in the encoding's dtype and
    channel order, native byte order, a copy of the message's data."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ValueError(f"sensor_msgs/Image encoding {enc!r} is not supported; expected one of "
                         f"{', '.join(ENCODINGS)}")
    dtype, channels = np.dtype(ENCODINGS[enc][0]), ENCODINGS[enc][1]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1:
        raise ValueError(f"sensor_msgs/Image ({enc}) is {w}x{h}: expected at least one row and column")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ValueError(f"sensor_msgs/Image ({enc}, {w}x{h}): step {step} is smaller than a row of "
                         f"{row} bytes (width x channels x bytes per value)")
    data = _bytes(msg.data)
    if data.size != step * h:
        raise ValueError(f"sensor_msgs/Image ({enc}, {w}x{h}, step {step}): data has {data.size} bytes, "
                         f"expected step x height = {step * h}")
    rows = np.ascontiguousarray(data.reshape(h, step)[:, :row])
    if dtype.itemsize > 1:
        order = ">" if msg.is_bigendian else "<"
        values = rows.view(dtype.newbyteorder(order)).astype(dtype)
    else:
        values = rows
    return values.reshape(h, w) if channels == 1 else values.reshape(h, w, channels)


def image_fields(array: np.ndarray, encoding: str) -> dict:
    """Keyword arguments for an Image message holding ``array`` (little-endian, unpadded
    rows): height, width, encoding, is_bigendian, step, data (uint8 numpy)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not supported; expected one of {', '.join(ENCODINGS)}")
    dtype, channels = np.dtype(ENCODINGS[encoding][0]), ENCODINGS[encoding][1]
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{encoding} image must be a numpy array, got {type(array).__name__}")
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    shape_ok = array.ndim == 2 if channels == 1 else (array.ndim == 3 and array.shape[2] == channels)
    if array.dtype != dtype or not shape_ok:
        want = "H x W" if channels == 1 else f"H x W x {channels}"
        raise ValueError(f"{encoding} needs a {want} {dtype.name} array, got {array.shape} {array.dtype}")
    h, w = array.shape[:2]
    data = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).view(np.uint8).reshape(-1)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * channels * dtype.itemsize, "data": data}


# ---- compressed ------------------------------------------------------------------------------


def _imdecode(data: np.ndarray, what: str) -> np.ndarray:
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        img = None
    if img is None:
        raise ValueError(f"sensor_msgs/CompressedImage ({what}): {data.size} bytes that OpenCV cannot decode")
    return img


def compressed_to_numpy(msg) -> np.ndarray:
    """A CompressedImage as numpy: jpeg / png (colour as BGR, grey as H x W, 16-bit png as
    uint16), or ``compressedDepth`` png (16UC1 -> uint16 millimetres, 32FC1 -> float32
    metres with NaN holes)."""
    fmt = str(msg.format).strip()
    data = _bytes(msg.data)
    if "compressedDepth" not in fmt:
        words = fmt.split(";")[-1].split()
        kind = words[0].lower() if words else ""
        if kind not in ("jpeg", "jpg", "png"):
            raise ValueError(f"sensor_msgs/CompressedImage format {fmt!r} is not supported; expected jpeg or png "
                             "(e.g. 'bgr8; jpeg compressed bgr8') or '16UC1; compressedDepth png'")
        return _imdecode(data, fmt)
    encoding = fmt.split(";")[0].strip()
    if "rvl" in fmt.lower():
        raise ValueError(f"sensor_msgs/CompressedImage format {fmt!r}: compressedDepth rvl is not supported; "
                         "record depth with compressedDepth png")
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise ValueError(f"sensor_msgs/CompressedImage format {fmt!r}: compressedDepth of {encoding!r} is not "
                         "supported; expected 16UC1 or 32FC1")
    if data.size <= DEPTH_HEADER.size:
        raise ValueError(f"sensor_msgs/CompressedImage ({fmt}): {data.size} bytes, too short for the "
                         f"{DEPTH_HEADER.size}-byte compressedDepth header and a png")
    _, quant_a, quant_b = DEPTH_HEADER.unpack(data[:DEPTH_HEADER.size].tobytes())
    img = _imdecode(data[DEPTH_HEADER.size:], fmt)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise ValueError(f"sensor_msgs/CompressedImage ({fmt}): the png is {img.shape} {img.dtype}, "
                         "expected one 16-bit channel")
    if encoding != "32FC1":
        return img
    depth = np.full(img.shape, np.nan, np.float32)
    valid = img != 0
    depth[valid] = np.float32(quant_a) / (img[valid].astype(np.float32) - np.float32(quant_b))
    return depth


def compressed_fields(array: np.ndarray, fmt: str = "jpeg", depth_quantization: float = 100.0,
                      max_depth: float = 10.0) -> dict:
    """Keyword arguments (``format``, ``data``) for a CompressedImage of ``array``, encoded as
    ROS's image transports do: ``"jpeg"`` / ``"png"`` (colour given in BGR), or
    ``"compressedDepth"`` (uint16 -> 16UC1 png; float32 metres -> 32FC1 quantised inverse
    depth, NaN, zero and beyond ``max_depth`` as holes)."""
    if fmt in ("jpeg", "png"):
        if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
            encoding = "bgr8"
        elif array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
            encoding = "mono8" if array.dtype == np.uint8 else "mono16"
        else:
            raise ValueError(f"{fmt}: expected H x W x 3 uint8 BGR or H x W uint8 / uint16, got {array.shape} "
                             f"{array.dtype}")
        if fmt == "jpeg" and array.dtype != np.uint8:
            raise ValueError("jpeg holds 8-bit images; use png for 16-bit")
        ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", array)
        return {"format": f"{encoding}; {fmt} compressed {encoding}", "data": _encoded(ok, buf, fmt)}
    if fmt != "compressedDepth":
        raise ValueError(f"format must be 'jpeg', 'png' or 'compressedDepth', got {fmt!r}")
    if array.ndim != 2 or array.dtype not in (np.uint16, np.float32):
        raise ValueError(f"compressedDepth: expected H x W uint16 (mm) or float32 (m), got {array.shape} {array.dtype}")
    if array.dtype == np.uint16:
        header, png, encoding = DEPTH_HEADER.pack(0, 0.0, 0.0), array, "16UC1"
    else:
        quant_a = depth_quantization * (depth_quantization + 1.0)
        quant_b = 1.0 - quant_a / max_depth
        valid = np.isfinite(array) & (array > 0) & (array < max_depth)
        png = np.zeros(array.shape, np.uint16)
        png[valid] = np.clip(quant_a / array[valid] + quant_b, 1, 65535).astype(np.uint16)
        header, encoding = DEPTH_HEADER.pack(0, quant_a, quant_b), "32FC1"
    ok, buf = cv2.imencode(".png", png)
    data = np.concatenate([np.frombuffer(header, np.uint8), _encoded(ok, buf, fmt)])
    return {"format": f"{encoding}; compressedDepth png", "data": data}


def _encoded(ok: bool, buf, fmt: str) -> np.ndarray:
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {fmt}")
    return buf.reshape(-1)


# ---- frames for the Segmenter ----------------------------------------------------------------


def message_to_numpy(msg) -> np.ndarray:
    """An Image or a CompressedImage as numpy (``image_to_numpy`` / ``compressed_to_numpy``)."""
    return compressed_to_numpy(msg) if is_compressed(msg) else image_to_numpy(msg)


def rgb_frame(msg) -> np.ndarray:
    """A colour (or mono8) message as H x W x 3 uint8 BGR, what ``Segmenter.run`` takes."""
    img = message_to_numpy(msg)
    if not is_compressed(msg):
        code = TO_BGR.get(msg.encoding, "?")
        if code == "?":
            raise ValueError(f"sensor_msgs/Image encoding {msg.encoding!r} is not a colour image; expected one of "
                             f"{', '.join(TO_BGR)}")
        return img if code is None else cv2.cvtColor(img, code)
    if img.dtype != np.uint8:
        raise ValueError(f"sensor_msgs/CompressedImage ({msg.format}): a {img.dtype} image is not an 8-bit colour image")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img if img.shape[2] == 3 else cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)


def aux_frame(msg, modality: str = "thermal") -> np.ndarray:
    """An auxiliary message (thermal, depth, HHA ...) in the sensor's own dtype, colour
    encodings in BGR order. Depth's float holes (NaN, +-inf, as REP 117 marks them) become
    0, the runtime's hole; other modalities keep their values (and NaN is refused later)."""
    img = message_to_numpy(msg)
    code = None if is_compressed(msg) else TO_BGR.get(msg.encoding)
    if code is not None and img.ndim == 3:
        img = cv2.cvtColor(img, code)
    if modality == "depth" and img.dtype == np.float32:
        img = np.where(np.isfinite(img), img, np.float32(0))
    return img


def frame_pair(rgb_msg, aux_msg, modality: str | None = "thermal", resize_aux: bool = False, name: str = "frame"):
    """(BGR uint8, auxiliary frame with the model's channels) from two messages, checked as
    the stream sources check their frames. ``modality`` None: the auxiliary frame as it came
    (SimCMF builds its input with ``simcmf_image``)."""
    from ..sources.frames import check_sizes

    rgb, aux = rgb_frame(rgb_msg), model_aux(aux_msg, modality)
    if modality is not None:
        check_sizes(name, rgb, aux, resize_aux)
    return rgb, aux


def model_aux(msg, modality: str | None = "thermal") -> np.ndarray:
    """An auxiliary message with the channels a GoPT model of ``modality`` takes (``aux_frame``
    then ``streams.to_aux``); ``modality`` None: the frame as it came."""
    from ..sources.frames import aux_channels, to_aux

    if modality is None:
        return aux_frame(msg)
    return to_aux(aux_frame(msg, modality), aux_channels(modality))


def mask_images(bgr: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The two images published per frame: class ids (mono8; a SimCMF mask as 0 / 1) and
    the classes' colours over the frame (bgr8)."""
    from ..colors import overlay

    labels = labels.astype(np.uint8)
    return labels, overlay(bgr, labels, num_classes)



def simcmf_image(config: dict, bgr: np.ndarray, aux: np.ndarray) -> np.ndarray:
    """SimCMF's H x W x C input from a pair's frames (``rgb_frame``, ``aux_frame``): the
    colour frame stacked with the auxiliary channels for RGB-first modalities (rgbt, rgbd,
    rgbnir ...), the auxiliary frame alone for the others (t, d, nir, hha)."""
    from ..sources.frames import check_sizes, to_aux

    modality, in_chans = config.get("modality") or "", int(config["in_chans"])
    rgb_first = modality.startswith(("rgb", "pgsnet_rgb"))
    aux = to_aux(aux, in_chans - 3 if rgb_first else in_chans)
    check_sizes("SimCMF pair", bgr, aux, False)
    if aux.dtype != np.uint8:
        if not config.get("minmax_channels"):
            raise ValueError(f"SimCMF ({modality or 'unknown modality'}) takes 8-bit auxiliary images, got {aux.dtype}")
        # stretched per image to 0-255 by the preprocessing; float holes (NaN) count as 0
        aux = np.nan_to_num(aux.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if not rgb_first:
        return aux
    aux = aux[..., None] if aux.ndim == 2 else aux
    return np.concatenate([bgr.astype(aux.dtype), aux], axis=-1)
