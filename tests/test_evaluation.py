"""evaluation/: metrics against hand-computed values, and each published data set layout read
from small folders written here (class lists, ignore labels, depth units, bad layouts)."""
import cv2
import numpy as np
import pytest

from evaluation import IGNORE, ConfusionMatrix, LayoutError, Sample, Skipped, open_dataset
from evaluation import datasets as ds
from evaluation.datasets import detect_format


# ---- metrics --------------------------------------------------------------------------------------

def test_metrics_match_hand_computed_values():
    cm = ConfusionMatrix(3)
    cm.add(np.array([[0, 0, 1], [1, 2, 2]]), np.array([[0, 1, 1], [1, 2, 0]]))
    # rows = truth, columns = prediction
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: 1 / (2 + 2 - 1), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.mean_iou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    np.testing.assert_allclose(cm.class_accuracy(), [1 / 2, 1, 1 / 2])
    assert cm.average_accuracy() == pytest.approx(2 / 3)
    # p_o = 4/6, p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3 -> kappa = (2/3 - 1/3) / (2/3)
    assert cm.kappa() == pytest.approx(0.5)


def test_kappa_of_a_two_class_table():
    cm = ConfusionMatrix(2)
    truth = np.repeat([0, 0, 1, 1], [20, 5, 10, 15])
    pred = np.repeat([0, 1, 0, 1], [20, 5, 10, 15])
    cm.add(truth, pred)
    # p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 2500 = 0.5 -> kappa 0.4
    assert cm.kappa() == pytest.approx(0.4)
    assert cm.pixel_accuracy() == pytest.approx(0.7)


def test_ignored_pixels_absent_and_false_positive_classes():
    cm = ConfusionMatrix(4)
    truth = np.array([0, 0, 1, IGNORE, IGNORE])
    pred = np.array([0, 0, 2, 3, 1])  # class 2 predicted but absent from the truth; class 3 only where ignored
    cm.add(truth, pred)
    assert cm.total == 3
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 0.0 and iou[2] == 0.0 and np.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx(1 / 3)  # class 3 (0/0) is left out, class 2 (FP only) counts as 0
    assert np.isnan(cm.class_accuracy()[2])  # no ground truth of class 2
    assert cm.average_accuracy() == pytest.approx(0.5)


def test_values_outside_the_classes_are_refused_and_matrices_merge():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"prediction holds values \[7\] outside the 3 classes"):
        cm.add(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match="ground truth holds values"):
        cm.add(np.array([0, 5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="differ in shape"):
        cm.add(np.zeros((2, 2)), np.zeros((2, 3)))
    assert cm.total == 0
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.add(np.array([0, 1]), np.array([0, 1]))
    b.add(np.array([2]), np.array([1]))
    a += b
    assert a.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    s = a.summary(["x", "y", "z"])
    assert s["pixels"] == 3 and s["iou"]["x"] == 1.0 and s["iou"]["z"] == 0.0
    assert ConfusionMatrix(2).summary()["mean_iou"] is None  # NaN becomes null in JSON


# ---- writing small data sets in their published layouts ---------------------------------------------

RNG = np.random.default_rng(0)
H, W = 24, 32


def colour():
    return RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path


def frames_of(frames):
    out = list(frames)
    return [f for f in out if isinstance(f, Sample)], [f for f in out if isinstance(f, Skipped)]


def test_mfnet_layout(tmp_path):
    for name, value in (("00001D", 3), ("00002N", 8)):
        write(tmp_path / "images" / f"{name}.png", np.dstack([colour(), np.full((H, W), 77, np.uint8)]))
        write(tmp_path / "labels" / f"{name}.png", np.full((H, W), value, np.uint8))
    write(tmp_path / "images" / "00003N.png", np.dstack([colour(), colour()[..., 0]]))
    write(tmp_path / "labels" / "00003N.png", np.full((H, W), 9, np.uint8))  # beyond MFNet's 9 classes
    (tmp_path / "test.txt").write_text("00001D\n00002N\n00003N\nlost\n")
    (tmp_path / "train.txt").write_text("00001D\n")
    assert detect_format(tmp_path) == "mfnet"
    frames = open_dataset(tmp_path, "auto", "test", "thermal")
    assert frames.classes == ds.MFNET_CLASSES and len(frames.classes) == 9 and len(frames) == 4
    samples, skipped = frames_of(frames)
    assert [s.name for s in samples] == ["00001D", "00002N"]
    assert samples[0].rgb.shape == (H, W, 3) and samples[0].aux.shape == (H, W) and (samples[0].aux == 77).all()
    assert (samples[0].labels == 3).all() and (samples[1].labels == 8).all()  # 'unlabeled' 0 is a class, not ignored
    assert [s.name for s in skipped] == ["00003N", "lost"]
    assert "label values [9] are not classes 0-8" in skipped[0].reason
    assert "no file lost.png" in skipped[1].reason and skipped[1].sources == ("images/lost.png", "labels/lost.png")
    with pytest.raises(LayoutError, match="no val.txt; this MFNet folder has splits test, train"):
        open_dataset(tmp_path, "mfnet", "val", "thermal")
    with pytest.raises(LayoutError, match="provides thermal frames; this model takes depth"):
        open_dataset(tmp_path, "mfnet", "test", "depth")


def test_pst900_layout_reads_8bit_thermal_and_lists_frames_from_labels(tmp_path):
    d = tmp_path / "test"
    write(d / "rgb" / "a.png", colour())
    write(d / "thermal" / "a.png", np.full((H, W, 3), 40, np.uint8))  # a grey image saved with 3 channels
    write(d / "labels" / "a.png", np.full((H, W), 4, np.uint8))
    write(d / "rgb" / "unlabelled.png", colour())  # no label: not part of the split, as PST900's loader lists labels
    (tmp_path / "train").mkdir()
    assert detect_format(tmp_path) == "pst900"
    frames = open_dataset(tmp_path, "pst900", "test", "thermal")
    samples, skipped = frames_of(frames)
    assert len(samples) == 1 and not skipped
    assert samples[0].aux.shape == (H, W) and (samples[0].aux == 40).all()
    assert (samples[0].labels == 4).all() and frames.classes[4] == "survivor" and len(frames.classes) == 5
    with pytest.raises(LayoutError, match=r"no train/ split; this PST900 folder has test"):
        open_dataset(tmp_path, "pst900", "train", "thermal")


def test_nyuv2_esanet_layout_void_ignored_and_depth_in_metres(tmp_path):
    d = tmp_path / "test"
    write(d / "rgb" / "0001.png", colour())
    depth = np.full((H, W), 2500, np.uint16)
    depth[0, 0] = 0
    write(d / "depth" / "0001.png", depth)
    labels = np.zeros((H, W), np.uint8)
    labels[:, :10], labels[:, 10:20], labels[:, 20:] = 0, 1, 40
    write(d / "labels_40" / "0001.png", labels)
    (tmp_path / "test.txt").write_text("0001\n")
    assert detect_format(tmp_path) == "nyuv2"
    frames = open_dataset(tmp_path, "nyuv2", "test", "depth")
    (s,), _ = frames_of(frames)
    assert len(frames.classes) == 40 and frames.classes[0] == "wall" and frames.classes[39] == "otherprop"
    assert (s.labels[:, :10] == IGNORE).all() and (s.labels[:, 10:20] == 0).all() and (s.labels[:, 20:] == 39).all()
    assert s.aux.dtype == np.float32 and s.aux[1, 1] == pytest.approx(2.5) and s.aux[0, 0] == 0
    with pytest.raises(LayoutError, match="no HHA images"):
        open_dataset(tmp_path, "nyuv2", "test", "hha")


def test_cmx_layout_with_hha_and_listed_paths(tmp_path):
    write(tmp_path / "RGB" / "7.jpg", colour())
    hha = colour()
    write(tmp_path / "HHA" / "7.png", hha)
    write(tmp_path / "Label" / "7.png", np.full((H, W), 37, np.uint8))
    (tmp_path / "test.txt").write_text("RGB/7.jpg Label/7.png\n")
    with pytest.raises(LayoutError, match="--format nyuv2 or --format sunrgbd"):
        detect_format(tmp_path)
    (s,), _ = frames_of(open_dataset(tmp_path, "sunrgbd", "test", "hha"))
    assert (s.aux == hha).all() and (s.labels == 36).all()  # SUN RGB-D: 37 -> 36 ('bag')
    (s,), _ = frames_of(open_dataset(tmp_path, "nyuv2", "test", "hha"))
    assert (s.labels == 36).all()
    with pytest.raises(LayoutError, match="needs Depth/"):
        open_dataset(tmp_path, "nyuv2", "test", "depth")


def test_sunrgbd_esanet_layout_undoes_the_toolbox_depth_encoding(tmp_path):
    scene = "kv2/kinect2data/000002_2014-05-26_14-23-37_260595134347_rgbf000103-resize"
    write(tmp_path / scene / "image" / "0000103.jpg", colour())
    mm = np.full((H, W), 3065, np.uint16)
    mm[0, 0] = 0
    mm[1, 1] = 9000
    stored = ((mm << 3) | (mm >> 13)).astype(np.uint16)  # the toolbox's encoding, undone by read3dPoints.m
    write(tmp_path / scene / "depth_bfx" / "0000103.png", stored)
    labels = np.full((H, W), 5, np.uint8)
    labels[0] = 0
    (tmp_path / scene / "label").mkdir(parents=True)
    np.save(tmp_path / scene / "label" / "label.npy", labels)
    for kind, rel in (("rgb", "image/0000103.jpg"), ("depth", "depth_bfx/0000103.png"), ("label", "label/label.npy")):
        (tmp_path / f"test_{kind}.txt").write_text(f"{scene}/{rel}\n")
    assert detect_format(tmp_path) == "sunrgbd"
    frames = open_dataset(tmp_path, "sunrgbd", "test", "depth")
    (s,), _ = frames_of(frames)
    assert len(frames.classes) == 37 and frames.classes[23] == "fridge"
    assert s.aux[2, 2] == pytest.approx(3.065) and s.aux[1, 1] == pytest.approx(9.0) and s.aux[0, 0] == 0
    assert (s.labels[0] == IGNORE).all() and (s.labels[1:] == 4).all()
    assert s.name == scene.replace("/", "_")


def test_whu_opt_sar_release_is_tiled_and_split_by_its_division_file(tmp_path):
    h, w = 600, 530  # 2 x 2 tiles of 256; the edge strips are not evaluated
    test_name, train_name = ds.WHU_OS_TEST[0], "NH49E004021"
    for name in (test_name, train_name):
        optical = RNG.integers(0, 256, (h, w, 4), dtype=np.uint8)  # RGB + NIR
        write(tmp_path / "optical" / f"{name}.tif", optical)
        write(tmp_path / "sar" / f"{name}.tif", RNG.integers(0, 256, (h, w), dtype=np.uint8))
        labels = np.full((h, w), 50, np.uint8)  # forest
        labels[:256, :256] = 0  # background
        labels[:256, 256:512] = 70  # others
        write(tmp_path / "lbl" / f"{name}.tif", labels)
    assert detect_format(tmp_path) == "whu-os"
    frames = open_dataset(tmp_path, "whu-os", "test", "sar")
    assert [i.name for i in frames.items] == [test_name] and len(frames.classes) == 7
    samples, skipped = frames_of(frames)
    assert not skipped and [s.name for s in samples] == [f"{test_name}_r{r:02d}_c{c:02d}" for r in (0, 1) for c in (0, 1)]
    assert all(s.rgb.shape == (256, 256, 3) and s.aux.shape == (256, 256) for s in samples)
    assert (samples[0].labels == IGNORE).all() and (samples[1].labels == 6).all() and (samples[2].labels == 4).all()
    assert frames.classes[4] == "forest" and frames.classes[6] == "others"
    assert [i.name for i in open_dataset(tmp_path, "whu-os", "train", "sar").items] == [train_name]


def test_whu_opt_sar_tiles_with_converted_labels(tmp_path):
    d = tmp_path / "val"
    write(d / "opt" / "NH49E001013_2.tif", np.dstack([colour(), colour()[..., :1]]))
    write(d / "sar" / "NH49E001013_2.tif", colour()[..., 0])
    labels = np.full((H, W), 3, np.uint8)  # village after SOLC's conversion
    labels[0] = 0
    write(d / "lbl" / "NH49E001013_2.tif", labels)
    write(d / "opt" / "bad.tif", colour())
    write(d / "sar" / "bad.tif", colour()[..., 0])
    write(d / "lbl" / "bad.tif", np.full((H, W), 35, np.uint8))
    samples, skipped = frames_of(open_dataset(tmp_path, "auto", "val", "sar"))
    assert (samples[0].labels[0] == IGNORE).all() and (samples[0].labels[1:] == 2).all()
    assert len(skipped) == 1 and "label values [35]" in skipped[0].reason


def test_folder_layout_ignore_index_missing_files_and_palette_labels(tmp_path):
    from PIL import Image

    for name in ("f1", "f2", "f3"):
        write(tmp_path / "rgb" / f"{name}.png", colour())
    write(tmp_path / "aux" / "f1.png", np.full((H, W), 9, np.uint8))
    write(tmp_path / "aux" / "f2.png", np.full((H, W), 9, np.uint8))
    labels = np.full((H, W), 2, np.uint8)
    labels[0] = 200
    write(tmp_path / "labels" / "f1.png", labels)
    palette = Image.fromarray(np.full((H, W), 1, np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.save(tmp_path / "labels" / "f2.png")  # OpenCV alone would decode this to colours
    write(tmp_path / "labels" / "f3.png", labels)
    assert detect_format(tmp_path) == "folder"
    frames = open_dataset(tmp_path, "folder", modality="thermal", classes=("a", "b", "c"), ignore_index=200)
    samples, skipped = frames_of(frames)
    assert [s.name for s in samples] == ["f1", "f2"]
    assert (samples[0].labels[0] == IGNORE).all() and (samples[0].labels[1:] == 2).all()
    assert (samples[1].labels == 1).all()
    assert skipped[0].name == "f3" and "no file f3.png in" in skipped[0].reason
    skipped = frames_of(open_dataset(tmp_path, "folder", modality="thermal", classes=("a", "b", "c")))[1]
    assert "label values [200] are not classes 0-2 or the ignore value 255" in skipped[0].reason


def test_colour_labels_and_bad_layouts_are_one_line_errors(tmp_path):
    write(tmp_path / "rgb" / "x.png", colour())
    write(tmp_path / "aux" / "x.png", colour()[..., 0])
    write(tmp_path / "labels" / "x.png", colour())  # a colour-coded label picture
    (_, (s,)) = frames_of(open_dataset(tmp_path, "folder", modality="thermal", classes=("a",)))
    assert "labels must be one channel of class indices" in s.reason
    for fmt, expected in (("mfnet", "expected DIR/images/, DIR/labels/"), ("pst900", "expected DIR/SPLIT/rgb/"),
                          ("nyuv2", "expected DIR/SPLIT.txt"), ("sunrgbd", "expected DIR/SPLIT_rgb.txt"),
                          ("whu-os", "expected DIR/optical/")):
        modality = {"mfnet": "thermal", "pst900": "thermal", "nyuv2": "depth", "sunrgbd": "depth", "whu-os": "sar"}[fmt]
        with pytest.raises(LayoutError) as e:
            open_dataset(tmp_path, fmt, "test", modality)
        msg = str(e.value)
        assert expected in msg and "found aux/, labels/, rgb/" in msg and "\n" not in msg, msg
    with pytest.raises(LayoutError, match="no such folder"):
        open_dataset(tmp_path / "nope", "auto")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match="no labelled layout this reads; found an empty folder; expected one of: mfnet"):
        detect_format(empty)
