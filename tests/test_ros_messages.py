"""sensor_msgs Image / CompressedImage <-> numpy on the bundled real frames."""
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from runtime.ros.messages import (ENCODINGS, aux_frame, compressed_fields, compressed_to_numpy, image_fields,
                                  image_to_numpy, message_to_numpy, rgb_frame)

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "samples")


def sample(name):
    return cv2.imread(os.path.join(SAMPLES, name), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def frames():
    """One real frame per encoding, cropped to an odd width so that rows are not aligned."""
    mfnet = sample("mfnet_01234N.png")[:101, :67]
    bgr, thermal = np.ascontiguousarray(mfnet[..., :3]), np.ascontiguousarray(mfnet[..., 3])
    depth = np.ascontiguousarray(sample("esanet_depth.png")[:101, :67])
    metres = depth.astype(np.float32) * 1e-4
    metres[depth == 0] = np.nan
    return {"bgr8": bgr, "rgb8": bgr[..., ::-1].copy(), "bgra8": mfnet.copy(), "rgba8": mfnet[..., [2, 1, 0, 3]].copy(),
            "mono8": thermal, "8UC1": thermal, "8UC3": bgr, "mono16": depth, "16UC1": depth, "32FC1": metres}


def msg(**fields):
    return SimpleNamespace(**fields)


def test_every_encoding_round_trips(frames):
    assert set(frames) == set(ENCODINGS)
    for enc, array in frames.items():
        fields = image_fields(array, enc)
        assert fields["step"] == array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
        back = image_to_numpy(msg(**fields))
        assert back.dtype == array.dtype and back.shape == array.shape, enc
        np.testing.assert_array_equal(back, array, err_msg=enc)  # NaN holes compare equal


def test_step_padding_is_skipped(frames):
    for enc in ("bgr8", "mono16", "32FC1"):
        array = frames[enc]
        fields = image_fields(array, enc)
        h, row = array.shape[0], fields["step"]
        padded = np.full((h, row + 13), 0xAB, np.uint8)
        padded[:, :row] = fields["data"].reshape(h, row)
        back = image_to_numpy(msg(**{**fields, "step": row + 13, "data": padded.tobytes()}))
        np.testing.assert_array_equal(back, array, err_msg=enc)


def test_big_endian_mono16_and_32fc1(frames):
    for enc in ("mono16", "16UC1", "32FC1"):
        array = frames[enc]
        big = array.astype(array.dtype.newbyteorder(">"))
        fields = {**image_fields(array, enc), "is_bigendian": 1, "data": big.tobytes()}
        back = image_to_numpy(msg(**fields))
        assert back.dtype.isnative
        np.testing.assert_array_equal(back, array, err_msg=enc)
        # the same bytes read as little-endian are a different image: the flag is honoured
        assert not np.array_equal(image_to_numpy(msg(**{**fields, "is_bigendian": 0})), array)


def test_data_as_bytes_list_and_array_module(frames):
    import array as pyarray

    fields = image_fields(frames["mono8"], "mono8")
    for data in (fields["data"].tobytes(), list(fields["data"]), pyarray.array("B", fields["data"].tobytes())):
        np.testing.assert_array_equal(image_to_numpy(msg(**{**fields, "data": data})), frames["mono8"])


@pytest.mark.parametrize("change, words", [
    ({"encoding": "bayer_rggb8"}, ["'bayer_rggb8'", "not supported", "bgr8"]),
    ({"step": 10}, ["step 10", "smaller than a row"]),
    ({"data": b"\0" * 100}, ["data has 100 bytes", "expected"]),
    ({"height": 0}, ["at least one row"]),
])
def test_bad_messages_one_line_error(frames, change, words):
    fields = {**image_fields(frames["bgr8"], "bgr8"), **change}
    with pytest.raises(ValueError) as e:
        image_to_numpy(msg(**fields))
    text = str(e.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_image_fields_refuses_wrong_array(frames):
    with pytest.raises(ValueError, match="mono16 needs a H x W uint16 array"):
        image_fields(frames["mono8"], "mono16")
    with pytest.raises(ValueError, match="bgr8 needs a H x W x 3 uint8"):
        image_fields(frames["bgra8"], "bgr8")


def test_compressed_jpeg_png(frames):
    bgr, depth = frames["bgr8"], frames["16UC1"]
    jpg = msg(**compressed_fields(bgr, "jpeg"))
    assert jpg.format == "bgr8; jpeg compressed bgr8"
    decoded = compressed_to_numpy(jpg)
    assert decoded.shape == bgr.shape and np.abs(decoded.astype(int) - bgr).mean() < 6  # lossy
    np.testing.assert_array_equal(compressed_to_numpy(msg(**compressed_fields(bgr, "png"))), bgr)
    np.testing.assert_array_equal(compressed_to_numpy(msg(**compressed_fields(depth, "png"))), depth)
    # plain format strings, as older drivers write them
    np.testing.assert_array_equal(compressed_to_numpy(msg(format="png", data=cv2.imencode(".png", bgr)[1])), bgr)


def test_compressed_depth(frames):
    depth = frames["16UC1"]
    m = msg(**compressed_fields(depth, "compressedDepth"))
    assert m.format == "16UC1; compressedDepth png"
    np.testing.assert_array_equal(compressed_to_numpy(m), depth)
    metres = frames["32FC1"]
    m = msg(**compressed_fields(metres, "compressedDepth", max_depth=8.0))
    back = compressed_to_numpy(m)
    holes = ~np.isfinite(metres) | (metres >= 8.0)
    assert (np.isnan(back) == holes).all()
    # quantised inverse depth: the step at depth z is about z^2 / quant_a
    err = np.abs(back[~holes] - metres[~holes])
    assert (err <= metres[~holes] ** 2 / (100 * 101) + 1e-4).all(), err.max()


@pytest.mark.parametrize("m, words", [
    (msg(format="tiff", data=b"12"), ["'tiff'", "not supported"]),
    (msg(format="jpeg", data=b"not a jpeg"), ["10 bytes", "cannot decode"]),
    (msg(format="16UC1; compressedDepth png", data=b"short"), ["too short"]),
    (msg(format="16UC1; compressedDepth rvl", data=b"\0" * 40), ["rvl is not supported"]),
    (msg(format="8UC3; compressedDepth png", data=b"\0" * 40), ["'8UC3'", "16UC1 or 32FC1"]),
])
def test_bad_compressed_one_line_error(m, words):
    with pytest.raises(ValueError) as e:
        compressed_to_numpy(m)
    text = str(e.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_frames_for_the_segmenter(frames):
    bgr = frames["bgr8"]
    for enc in ("bgr8", "rgb8", "bgra8", "rgba8", "8UC3"):
        np.testing.assert_array_equal(rgb_frame(msg(**image_fields(frames[enc], enc))), bgr, err_msg=enc)
    np.testing.assert_array_equal(rgb_frame(msg(**compressed_fields(bgr, "png"))), bgr)
    assert rgb_frame(msg(**image_fields(frames["mono8"], "mono8"))).shape == bgr.shape
    with pytest.raises(ValueError, match="'16UC1' is not a colour image"):
        rgb_frame(msg(**image_fields(frames["16UC1"], "16UC1")))
    # depth holes: NaN in 32FC1 (REP 117) becomes 0, the runtime's hole; thermal keeps its values
    depth = aux_frame(msg(**image_fields(frames["32FC1"], "32FC1")), "depth")
    assert np.isfinite(depth).all() and (depth == 0).sum() == np.isnan(frames["32FC1"]).sum()
    assert np.isnan(aux_frame(msg(**image_fields(frames["32FC1"], "32FC1")), "thermal")).any()
    np.testing.assert_array_equal(aux_frame(msg(**image_fields(frames["rgb8"], "rgb8"))), bgr)  # HHA: BGR order
    np.testing.assert_array_equal(message_to_numpy(msg(**image_fields(frames["mono16"], "mono16"))), frames["mono16"])
