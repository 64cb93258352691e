"""Property-based tests (hypothesis) of the code that decodes bytes from outside the project:
ROS Image and CompressedImage messages, header stamps read in place from serialised
messages, the model metadata in ONNX files, the engine sidecar JSON. Random and mutated
inputs must give the project's own one-line errors (``ValueError`` / ``ModelFileError``) or
correct results, never another exception.

Every test runs a bounded number of examples with no per-example deadline (the machines are
shared), so the file's time stays a few seconds to a minute; ``derandomize`` makes a CI run
repeatable (a failure names its example).
"""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from runtime.metadata import KINDS, ModelFileError, ModelInfo, gopt_model_info, simcmf_model_infos  # noqa: E402
from runtime.ros.messages import (ENCODINGS, compressed_fields, compressed_to_numpy, image_fields,  # noqa: E402
                                  image_to_numpy)

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHORT = settings(SETTINGS, max_examples=60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


# ---- sensor_msgs/Image -----------------------------------------------------------------------


def image_message(**fields):
    return SimpleNamespace(**{"height": 2, "width": 2, "encoding": "mono8", "is_bigendian": 0, "step": 2,
                              "data": b"\0" * 4, **fields})


@st.composite
def images(draw):
    """A valid message of any encoding, with row padding and either byte order, and its array."""
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    dtype, channels = np.dtype(ENCODINGS[encoding][0]), ENCODINGS[encoding][1]
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    shape = (h, w) if channels == 1 else (h, w, channels)
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize))
    array = np.frombuffer(raw, dtype).reshape(shape)
    pad, big = draw(st.integers(0, 5)), draw(st.booleans())
    row = w * channels * dtype.itemsize
    body = np.ascontiguousarray(array, dtype.newbyteorder(">" if big else "<")).view(np.uint8).reshape(h, row)
    data = np.concatenate([body, np.zeros((h, pad), np.uint8)], axis=1).reshape(-1)
    return image_message(height=h, width=w, encoding=encoding, is_bigendian=int(big), step=row + pad,
                         data=data.tobytes()), array


@SETTINGS
@given(images())
def test_image_messages_decode_to_their_array(case):
    msg, array = case
    got = image_to_numpy(msg)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.tobytes() == np.ascontiguousarray(array, array.dtype.newbyteorder("=")).tobytes()  # NaN bits too
    again = image_fields(got, msg.encoding)  # and back: the same bytes, little-endian, unpadded
    assert image_to_numpy(image_message(**again)).tobytes() == got.tobytes()


@SETTINGS
@given(st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=8)), st.integers(-3, 40),
       st.integers(-3, 40), st.integers(-8, 200), st.integers(0, 1), st.binary(max_size=300))
def test_random_image_messages_decode_or_say_why(encoding, height, width, step, big, data):
    msg = image_message(height=height, width=width, encoding=encoding, is_bigendian=big, step=step, data=data)
    try:
        got = image_to_numpy(msg)
    except ValueError as e:
        assert str(e).startswith("sensor_msgs/Image") and "\n" not in str(e)
        return
    assert got.shape[:2] == (height, width) and got.dtype == np.dtype(ENCODINGS[encoding][0])


# ---- sensor_msgs/CompressedImage ---------------------------------------------------------------


def _frames():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    depth_mm = rng.integers(0, 5000, (6, 8), dtype=np.uint16)
    return [("jpeg", bgr), ("png", bgr), ("png", depth_mm), ("compressedDepth", depth_mm),
            ("compressedDepth", depth_mm.astype(np.float32) / 1000)]


VALID_COMPRESSED = [compressed_fields(array, fmt) for fmt, array in _frames()]
FORMATS = sorted({f["format"] for f in VALID_COMPRESSED}) + ["", ";", "bgr8;", "jpeg;", "rvl", "16UC1; compressedDepth",
                                                             "32FC1; compressedDepth rvl", "8UC1; compressedDepth png"]


def check_compressed(msg):
    try:
        img = compressed_to_numpy(msg)
    except ValueError as e:
        assert str(e).startswith("sensor_msgs/CompressedImage") and "\n" not in str(e)
        return None
    assert isinstance(img, np.ndarray) and img.ndim in (2, 3) and img.size > 0
    return img


@SETTINGS
@given(st.sampled_from(range(len(VALID_COMPRESSED))), st.data())
def test_mutated_compressed_images_decode_or_say_why(which, data):
    fields = VALID_COMPRESSED[which]
    raw = bytearray(fields["data"].tobytes())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    fmt = data.draw(st.sampled_from([fields["format"]] + FORMATS))
    check_compressed(SimpleNamespace(format=fmt, data=np.frombuffer(bytes(raw), np.uint8)))


@SHORT
@given(st.sampled_from(FORMATS) | st.text(max_size=20), st.binary(max_size=200))
def test_random_compressed_images_decode_or_say_why(fmt, data):
    check_compressed(SimpleNamespace(format=fmt, data=data))


def test_valid_compressed_images_decode_to_their_frame():
    for (fmt, array), fields in zip(_frames(), VALID_COMPRESSED):
        got = check_compressed(SimpleNamespace(**fields))
        assert got is not None and got.shape == array.shape
        if fmt == "png" or (fmt == "compressedDepth" and array.dtype == np.uint16):
            assert (got == array).all()


# ---- header stamps read in place ---------------------------------------------------------------


rosbags = pytest.importorskip("rosbags", reason="serialised messages need rosbags (pip install -e '.[ros]')")
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from runtime.ros.stamps import NS, cdr_stamp, header_stamp, ros1_stamp  # noqa: E402

ROS2, ROS1 = get_typestore(Stores.ROS2_HUMBLE), get_typestore(Stores.ROS1_NOETIC)
TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def serialised(store, typ, sec, nanosec, frame_id, payload, little=True):
    t = store.types
    kw = {"seq": 7} if "seq" in t["std_msgs/msg/Header"].__dataclass_fields__ else {}
    header = t["std_msgs/msg/Header"](**kw, stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                      frame_id=frame_id)
    data = np.frombuffer(payload, np.uint8)
    if typ == TYPES[0]:
        msg = t[typ](header=header, height=1, width=len(payload), encoding="mono8", is_bigendian=0,
                     step=len(payload), data=data)
    else:
        msg = t[typ](header=header, format="png", data=data)
    if store is ROS1:
        return bytes(store.serialize_ros1(msg, typ))
    return bytes(store.serialize_cdr(msg, typ, little_endian=little))


class Reader:
    """What ``header_stamp`` needs of rosbags' ``AnyReader``: the format and its deserialiser."""

    def __init__(self, store):
        self.store, self.is2 = store, store is ROS2

    def deserialize(self, raw, typ):
        return self.store.deserialize_cdr(raw, typ) if self.is2 else self.store.deserialize_ros1(raw, typ)


@SETTINGS
@given(st.sampled_from(TYPES), st.sampled_from(["cdr-le", "cdr-be", "ros1"]), st.integers(0, 2**31 - 1),
       st.integers(0, NS - 1), st.text(max_size=20), st.binary(max_size=40))
def test_stamps_read_in_place_equal_the_serialised_ones(typ, layout, sec, nanosec, frame_id, payload):
    store = ROS1 if layout == "ros1" else ROS2
    raw = serialised(store, typ, sec, nanosec, frame_id, payload, layout != "cdr-be")
    assert (ros1_stamp if layout == "ros1" else cdr_stamp)(raw) == sec * NS + nanosec
    assert header_stamp(Reader(store), SimpleNamespace(msgtype=typ), raw) == sec * NS + nanosec


@SETTINGS
@given(st.sampled_from(TYPES), st.sampled_from(["cdr-le", "ros1"]), st.data())
def test_mutated_messages_give_a_stamp_or_a_one_line_error(typ, layout, data):
    store = ROS1 if layout == "ros1" else ROS2
    raw = bytearray(serialised(store, typ, 1_700_000_000, 5, "cam", b"\x01\x02\x03"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] ^= data.draw(st.integers(1, 255))
        else:
            del raw[at:]
            if not raw:
                break
    raw = bytes(raw)
    for fast in (cdr_stamp, ros1_stamp):  # never raise: a stamp in range, or None
        stamp = fast(raw)
        assert stamp is None or (isinstance(stamp, int) and stamp % NS < NS)
    for msgtype in (typ, "sensor_msgs/msg/CameraInfo"):  # read in place, and deserialised
        try:
            stamp = header_stamp(Reader(store), SimpleNamespace(msgtype=msgtype), raw)
        except ValueError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(stamp, int)


# ---- model metadata and the engine sidecar -------------------------------------------------------


def valid_infos() -> list[dict]:
    config = {"embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 5, "aux_channels": 1, "img_size": [48, 64],
              "modality": "thermal", "rgb_mean": [1.0, 2.0, 3.0], "rgb_std": [1.0, 1.0, 1.0], "aux_mean": [65.6],
              "aux_std": [22.3], "class_names": list("abcde")}
    gopt = gopt_model_info(config, "batch", "fp32", {"torch": "2.13.0"}, 255)
    frames = gopt_model_info(config, 1, "fp32", {}, 255, {"color_order": "bgr", "aux_dtype": "uint16"})
    encoder, decoder = simcmf_model_infos({"img_size": 64, "in_chans": 4, "patch_size": 16, "prompt_embed_dim": 8},
                                          "batch", encoder_name="s.encoder.onnx", decoder_name="s.decoder.onnx")
    return [json.loads(i.to_json()) for i in (gopt, frames, encoder, decoder)]


VALID_INFOS = valid_infos()


def check_info(text: str):
    try:
        info = ModelInfo.from_json(text, "m.onnx")
    except ModelFileError as e:
        assert str(e).startswith("m.onnx: ") and "\n" not in str(e)
        return None
    # what the runtime reads from it has the types it needs
    assert info.kind in KINDS and isinstance(info.config, dict) and isinstance(info.untrained, bool)
    for spec in info.inputs + info.outputs:
        assert isinstance(spec.name, str) and np.dtype(spec.dtype) is not None
        assert all(isinstance(d, (int, str)) for d in spec.shape) and isinstance(spec.dynamic_axes(), dict)
    assert ModelInfo.from_json(info.to_json()) == info
    return info


def test_valid_metadata_reads_back_equal():
    for d in VALID_INFOS:
        assert check_info(json.dumps(d)).to_json() == json.dumps(d, sort_keys=True)


@SETTINGS
@given(json_values)
def test_random_json_metadata_is_refused_in_one_line(value):
    check_info(json.dumps(value))


@SETTINGS
@given(st.sampled_from(range(len(VALID_INFOS))), st.data())
def test_mutated_metadata_reads_or_is_refused_in_one_line(which, data):
    d = copy.deepcopy(VALID_INFOS[which])
    for _ in range(data.draw(st.integers(1, 3))):
        target = d
        path = data.draw(st.lists(st.integers(0, 5), max_size=3))
        for step in path:  # walk into the document, then replace, delete or add a field there
            children = list(target.items()) if isinstance(target, dict) else list(enumerate(target)) \
                if isinstance(target, list) else []
            if not children or not isinstance(children[step % len(children)][1], (dict, list)):
                break
            target = children[step % len(children)][1]
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not keys:
            if isinstance(target, dict):
                target[data.draw(st.text(max_size=8))] = data.draw(json_values)
            else:
                target.append(data.draw(json_values))
        elif action == "delete":
            del target[data.draw(st.sampled_from(keys))]
        else:
            target[data.draw(st.sampled_from(keys))] = data.draw(json_values)
    check_info(json.dumps(d))


@SHORT
@given(st.binary(max_size=120))
def test_metadata_bytes_that_are_not_json_are_refused(raw):
    check_info(raw.decode("utf-8", "replace"))


SIDECAR = {"format": "mmseg-deploy-engine/1", "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
           "precision": "fp16", "builder": {"strongly_typed": True}, "onnx": {"file": "m.onnx", "sha256": "0" * 64},
           "engine_sha256": "1" * 64, "built": "2026-01-01T00:00:00+00:00", "plugins": None, "model": VALID_INFOS[0],
           "profiles": {"rgb": {"min": [1, 3, 48, 64], "opt": [1, 3, 48, 64], "max": [4, 3, 48, 64]},
                        "aux": {"min": [1, 1, 48, 64], "opt": [1, 1, 48, 64], "max": [4, 1, 48, 64]}}}


def check_sidecar(text: str):
    from runtime.backends.trt_backend import EngineSidecar, max_batch

    try:
        sidecar = EngineSidecar.from_json(text, "m.engine.json")
    except ModelFileError as e:
        assert str(e).startswith("m.engine.json: ") and "\n" not in str(e)
        return None
    assert isinstance(sidecar.model, ModelInfo) and isinstance(sidecar.rebuild_hint(), str)
    limit = max_batch(sidecar.model, sidecar.profiles)  # what the runtime and triton_repo read of it
    assert limit is None or isinstance(limit, int)
    return sidecar


def test_a_valid_sidecar_reads():
    assert check_sidecar(json.dumps(SIDECAR)).precision == "fp16"


@SETTINGS
@given(st.sampled_from(sorted(SIDECAR)), json_values, st.booleans())
def test_mutated_sidecars_read_or_are_refused_in_one_line(field, value, delete):
    d = copy.deepcopy(SIDECAR)
    if delete:
        del d[field]
    else:
        d[field] = value
    check_sidecar(json.dumps(d))


@SHORT
@given(json_values)
def test_random_sidecars_are_refused_in_one_line(value):
    check_sidecar(json.dumps(value))
