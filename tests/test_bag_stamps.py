"""Header stamps read in place from serialised messages agree with rosbags' own serialisers
(CDR both byte orders, ROS 1), and BagPair pairs without deserialising a message."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bags need the rosbags package (pip install -e '.[ros]')")

from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from runtime.ros.stamps import cdr_stamp, header_stamp, ros1_stamp, stamp_ns  # noqa: E402
from runtime.ros.bags import BagPair  # noqa: E402
from test_bags import AUX_TOPIC, RGB_TOPIC, mfnet_frames, rgbt_streams, schedule, write_bag  # noqa: E402

STAMPS = [0, 999_999_999, 1_700_000_000 * 10**9 + 123_456_789, (2**31 - 1) * 10**9 + 1]


def messages(store, stamp):
    """An Image and a CompressedImage with ``stamp`` (ns) and a frame_id of odd length."""
    t = store.types
    kw = {"seq": 42} if "seq" in t["std_msgs/msg/Header"].__dataclass_fields__ else {}
    header = t["std_msgs/msg/Header"](**kw, stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                  nanosec=stamp % 10**9),
                                      frame_id="flir_optical_frame_x")
    data = np.arange(24, dtype=np.uint8)
    return [(t["sensor_msgs/msg/Image"](header=header, height=2, width=4, encoding="rgb8", is_bigendian=0, step=12,
                                        data=data), "sensor_msgs/msg/Image"),
            (t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=data),
             "sensor_msgs/msg/CompressedImage")]


@pytest.mark.parametrize("stamp", STAMPS)
def test_stamps_in_place_match_the_serialisers(stamp):
    ros2, ros1 = get_typestore(Stores.ROS2_HUMBLE), get_typestore(Stores.ROS1_NOETIC)
    for msg, typ in messages(ros2, stamp):
        for little in (True, False):
            raw = ros2.serialize_cdr(msg, typ, little_endian=little)
            assert cdr_stamp(raw) == stamp == stamp_ns(ros2.deserialize_cdr(raw, typ).header), (typ, little)
    for msg, typ in messages(ros1, stamp):
        raw = ros1.serialize_ros1(msg, typ)
        assert ros1_stamp(raw) == stamp == stamp_ns(ros1.deserialize_ros1(raw, typ).header), typ


def test_other_layouts_are_left_to_the_deserialiser():
    raw = bytes(get_typestore(Stores.ROS2_HUMBLE).serialize_cdr(*messages(get_typestore(Stores.ROS2_HUMBLE), 5)[0]))
    assert cdr_stamp(b"\x00\x07" + raw[2:]) is None  # another encapsulation (XCDR2)
    assert cdr_stamp(raw[:10]) is None and ros1_stamp(raw[:11]) is None  # too short
    assert cdr_stamp(raw[:8] + (10**9).to_bytes(4, "little") + raw[12:]) is None  # nanosec out of range


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_bag_stamps_without_deserialising(tmp_path, storage, monkeypatch):
    rgb, aux = schedule(5, seconds=0.4)
    bag = write_bag(tmp_path / ("b.bag" if storage == "ros1" else "b"),
                    rgbt_streams(rgb, aux, mfnet_frames(len(rgb)), "rgb8", "png"), storage)
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        for conn, _, raw in reader.messages():
            assert header_stamp(reader, conn, raw) == stamp_ns(reader.deserialize(raw, conn.msgtype).header)
    calls = []
    real = AnyReader.deserialize
    monkeypatch.setattr(AnyReader, "deserialize", lambda self, *a: calls.append(a[1]) or real(self, *a))
    source = BagPair(bag, RGB_TOPIC, AUX_TOPIC)
    assert calls == [] and source.stamps == (rgb, aux)  # pairing read every stamp in place
    got = list(source)
    source.close()
    assert len(calls) == 2 * len(got) == 2 * len(source.pairs)  # then each paired message once
