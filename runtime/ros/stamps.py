"""Header stamps of serialised image messages, read without deserialising the message.

Pairing a bag's topics needs only each message's header stamp. ``sensor_msgs`` Image and
CompressedImage begin with their ``std_msgs/Header``, so the stamp sits at a fixed place:

- CDR (rosbag2): a 4-byte encapsulation header (``00 01`` little endian, ``00 00`` big
  endian), then ``int32 sec``, ``uint32 nanosec``.
- ROS 1: ``uint32 seq``, then ``time`` as ``uint32 sec``, ``uint32 nsec``, little endian.

Any other message type or encapsulation, a buffer too short, or a nanosecond field out of
range is deserialised in full instead (``header_stamp``).
"""
from __future__ import annotations

import struct

STAMP_FIRST_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CDR_STAMP = {b"\x00\x01": struct.Struct("<iI"), b"\x00\x00": struct.Struct(">iI")}  # after the encapsulation
ROS1_STAMP = struct.Struct("<III")  # seq, sec, nsec
NS = 1_000_000_000


def stamp_ns(header) -> int:
    """A deserialised header's stamp in nanoseconds (ROS 2 ``sec`` / ``nanosec``; ROS 1 bags read the same)."""
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def stamp_text(ns: int) -> str:
    return f"{ns // NS}.{ns % NS:09d}"


def _valid(sec: int, nanosec: int) -> int | None:
    return sec * NS + nanosec if 0 <= nanosec < NS else None


def cdr_stamp(raw) -> int | None:
    """The stamp (ns) at the start of a plain-CDR message, or None when ``raw`` is not plain CDR."""
    layout = CDR_STAMP.get(bytes(raw[:2]))
    if layout is None or len(raw) < 4 + layout.size:
        return None
    return _valid(*layout.unpack_from(raw, 4))


def ros1_stamp(raw) -> int | None:
    """The stamp (ns) at the start of a ROS 1 message with a header, or None when ``raw`` is too short."""
    if len(raw) < ROS1_STAMP.size:
        return None
    _, sec, nsec = ROS1_STAMP.unpack_from(raw, 0)
    return _valid(sec, nsec)


def header_stamp(reader, connection, raw) -> int:
    """The header stamp (ns) of one message of an open ``AnyReader``: read in place for
    Image / CompressedImage, else from the deserialised message. A message whose header
    cannot be read is a ``ValueError`` saying why (rosbags raises several kinds)."""
    if connection.msgtype in STAMP_FIRST_TYPES:
        stamp = (cdr_stamp if reader.is2 else ros1_stamp)(raw)
        if stamp is not None:
            return stamp
    try:
        return stamp_ns(reader.deserialize(raw, connection.msgtype).header)
    except Exception as e:  # noqa: BLE001 - a damaged message: the pairing lists it as unreadable
        raise ValueError(f"{connection.msgtype}: {' '.join(str(e).split()) or type(e).__name__}") from None
