"""Frame preprocessing: model-space tensors from real sensor frames, and clear errors."""
import os

import cv2
import numpy as np
import pytest

from runtime.preprocess import (check_pair, colorize, labels_to_frame, preprocess_aux, preprocess_rgb)

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "data", "samples")


def test_rgb_normalisation_and_channel_order():
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    x = preprocess_rgb(bgr, (4, 6), [10, 20, 30], [2, 4, 5])
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [-5, -5, (200 - 30) / 5])  # RGB order: blue last
    x = preprocess_rgb(bgr, (4, 6), [10, 20, 30], [2, 4, 5], color_order="rgb")
    np.testing.assert_allclose(x[0, :, 0, 0], [(200 - 10) / 2, -5, -6])


def test_thermal_bit_depths_agree():
    t8 = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    a = preprocess_aux(t8, (8, 8), [60.0], [20.0], "thermal")
    b = preprocess_aux(t8.astype(np.uint16) * 257, (8, 8), [60.0], [20.0], "thermal")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_depth_holes_enter_as_zero():
    depth = cv2.imread(os.path.join(SAMPLES, "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and (depth == 0).mean() > 0.05
    x = preprocess_aux(depth, depth.shape, [3.0], [1.5], "depth")[0, 0]
    np.testing.assert_array_equal(x[depth == 0], 0.0)
    np.testing.assert_allclose(x[depth > 0], (depth[depth > 0] / 1000.0 - 3.0) / 1.5, rtol=1e-5)
    metres = preprocess_aux(depth.astype(np.float32) / 1000, depth.shape, [3.0], [1.5], "depth")
    np.testing.assert_allclose(metres[0, 0], x, atol=1e-5)
    tenths = preprocess_aux(depth, depth.shape, [3.0], [1.5], "depth", depth_units=1e-4)[0, 0]
    np.testing.assert_allclose(tenths[depth > 0], (depth[depth > 0] / 1e4 - 3.0) / 1.5, atol=1e-6)


def test_resize_to_model_size_and_back():
    frame = cv2.imread(os.path.join(SAMPLES, "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    x = preprocess_rgb(frame[..., :3], (240, 320), [0, 0, 0], [1, 1, 1])
    assert x.shape == (1, 3, 240, 320)
    labels = np.arange(240 * 320).reshape(240, 320) % 7
    back = labels_to_frame(labels, (480, 640))
    assert back.shape == (480, 640) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[::2, ::2], labels)
    assert colorize(back, 7).shape == (480, 640, 3)


@pytest.mark.parametrize("call, message", [
    (lambda: preprocess_rgb(np.zeros((4, 4), np.uint8), (4, 4), [0] * 3, [1] * 3), r"rgb must be H x W x 3"),
    (lambda: preprocess_rgb(np.zeros((4, 4, 3), np.float32), (4, 4), [0] * 3, [1] * 3), "rgb must be uint8"),
    (lambda: preprocess_rgb([[1]], (4, 4), [0] * 3, [1] * 3), "rgb must be a numpy array"),
    (lambda: preprocess_aux(np.full((4, 4), np.nan, np.float32), (4, 4), [0], [1], "thermal"), "NaN"),
    (lambda: preprocess_aux(np.full((4, 4), np.nan, np.float32), (4, 4), [0], [1], "depth"), "mark depth holes"),
    (lambda: preprocess_aux(np.zeros((4, 4), np.uint8), (4, 4), [0], [1], "depth"), "depth must be uint16"),
    (lambda: preprocess_aux(np.zeros((4, 4, 2), np.uint8), (4, 4), [0], [1], "thermal"), "thermal must be H x W"),
    (lambda: preprocess_aux(np.zeros((4, 4), np.uint8), (4, 4), [0] * 3, [1] * 3, "hha"), "hha must be H x W x 3"),
    (lambda: check_pair(np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5), np.uint8)), "same size"),
    (lambda: preprocess_rgb(np.zeros((0, 4, 3), np.uint8), (4, 4), [0] * 3, [1] * 3), "empty"),
    (lambda: preprocess_rgb(np.zeros((1, 1, 3), np.uint8), (4, 4), [0] * 3, [1] * 3), "single pixel"),
])
def test_bad_frames(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_simcmf_image_minmax_and_channel_order():
    from runtime.preprocess import preprocess_image

    img = np.zeros((4, 4, 4), np.uint8)
    img[..., 0] = 10  # B
    img[..., 2] = 200  # R
    img[..., 3] = np.arange(16, dtype=np.uint8).reshape(4, 4) + 50  # thermal 50..65
    x = preprocess_image(img, 4, 4, [0] * 4, [1] * 4, "RGB 0-1", "bgr", rgb_first=True, minmax_channels=[3])
    np.testing.assert_allclose(x[0, 0], 200 / 255, rtol=1e-6)  # R first
    np.testing.assert_allclose(x[0, 2], 10 / 255, rtol=1e-6)
    assert x[0, 3].min() == 0 and x[0, 3].max() == 1  # thermal stretched per image
    np.testing.assert_allclose(x[0, 3], np.round((img[..., 3] - 50) / 15 * 255) / 255, rtol=1e-6)


@pytest.mark.parametrize("rgb, aux, message", [
    (np.array(3, np.uint8), np.zeros((4, 4), np.uint8), r"rgb must be an H x W x 3 image, got a 0-d array of shape \(\)"),
    (np.uint8(3), np.zeros((4, 4), np.uint8), r"rgb must be a numpy array, got a numpy uint8 scalar"),
    (np.zeros(12, np.uint8), np.zeros((4, 4), np.uint8), r"rgb must be an H x W x 3 image, got a 1-d array"),
    (np.zeros((1, 4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8),
     r"rgb must be an H x W x 3 image, got a 4-d array of shape \(1, 4, 4, 3\)"),
    (np.zeros((4, 4, 3), np.uint8), np.array(1, np.float32), r"aux must be an H x W or H x W x C image, got a 0-d"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros(4, np.uint8), r"aux must be an H x W or H x W x C image, got a 1-d"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4, 1), np.uint8), r"aux must be .* got a 4-d array"),
    (np.zeros((4, 4, 3), np.uint8), [[1, 2], [3, 4]], "aux must be a numpy array, got list"),
])
def test_check_pair_checks_type_and_rank_first(rgb, aux, message):
    with pytest.raises(ValueError, match=message) as e:
        check_pair(rgb, aux)
    assert "\n" not in str(e.value)
