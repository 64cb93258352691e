"""python -m benchmarks.accuracy: the arithmetic on the bundled real frames with label maps the
PyTorch model made itself (IoU 1 against its own labels, the known value against a perturbed
copy), backends side by side, the report, and one-line errors."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import factories
from benchmarks import accuracy
from evaluation.datasets import MFNET_CLASSES
from models import save_gopt
from runtime import Segmenter

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
FRAMES = ("mfnet_01234N", "mfnet_01477D")


def write_mfnet(root: Path, labels: dict, extra=()):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in FRAMES:
        cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.imread(str(SAMPLES / f"{name}.png"), cv2.IMREAD_UNCHANGED))
        cv2.imwrite(str(root / "labels" / f"{name}.png"), labels[name])
    (root / "test.txt").write_text("\n".join([*FRAMES, *extra]) + "\n")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 9-class tiny GoPT, its labels on the two bundled MFNet frames (PyTorch, as deployed),
    and MFNet-layout folders with those labels and with a perturbed copy."""
    d = tmp_path_factory.mktemp("accuracy")
    ckpt = d / "tiny9.pt"
    save_gopt(factories.tiny_gopt(num_classes=9, class_names=list(MFNET_CLASSES)), ckpt)
    own = {}
    with Segmenter(ckpt, device="cpu") as seg:
        for name in FRAMES:
            f = cv2.imread(str(SAMPLES / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            own[name] = seg.run(f[..., :3], f[..., 3])
    write_mfnet(d / "own", own, extra=["not_in_the_folder"])
    # Perturbed: half of the night frame's pixels of its most frequent class c relabelled d.
    counts = sum(np.bincount(own[n].ravel(), minlength=9) for n in FRAMES)
    c = int(counts.argmax())
    dd = (c + 1) % 9
    perturbed = {n: own[n].copy() for n in FRAMES}
    flat = perturbed[FRAMES[0]].reshape(-1)
    where = np.flatnonzero(flat == c)
    s = len(where) // 2
    flat[where[:s]] = dd
    write_mfnet(d / "perturbed", perturbed)
    return {"dir": d, "ckpt": ckpt, "counts": counts, "c": c, "d": dd, "s": s,
            "pixels": sum(own[n].size for n in FRAMES)}


def report(tmp_path, argv):
    out = tmp_path / "r.json"
    rc = accuracy.run([*argv, "--json", str(out)])
    return rc, json.loads(out.read_text())


def test_a_model_scores_1_against_its_own_labels(labelled, tmp_path, capsys):
    rc, r = report(tmp_path, [str(labelled["ckpt"]), "--data", str(labelled["dir"] / "own")])
    assert rc == 0
    (row,) = r["results"]
    assert (row["backend"], row["precision"], row["status"], row["frames"]) == ("torch", "fp32", "ok", 2)
    assert row["mean_iou"] == 1.0 and row["pixel_accuracy"] == 1.0 and row["label_agreement"] == 1.0
    assert row["mean_iou_change"] == 0.0 and row["pixels"] == labelled["pixels"]
    present = [k for k in range(9) if labelled["counts"][k]]
    assert [k for k, v in enumerate(row["iou"].values()) if v is not None] == present  # absent classes: no IoU
    # Every frame of the split is in the report: the two evaluated, the missing one with why.
    assert [(f["name"], f["status"]) for f in r["frames"]] == [
        (FRAMES[0], "evaluated"), (FRAMES[1], "evaluated"), ("not_in_the_folder", "skipped")]
    assert "no file not_in_the_folder.png" in r["frames"][2]["reason"]
    assert r["dataset"]["format"] == "mfnet" and r["dataset"]["classes"] == list(MFNET_CLASSES)
    out = capsys.readouterr().out
    assert "frames: 2 evaluated, 1 skipped" in out and "skipped not_in_the_folder" in out
    assert "car" in out and "mIoU %" in out


def test_a_perturbed_label_map_gives_the_known_scores(labelled, tmp_path):
    rc, r = report(tmp_path, [str(labelled["ckpt"]), "--data", str(labelled["dir"] / "perturbed")])
    assert rc == 0
    (row,) = r["results"]
    n, c, d, s, N = labelled["counts"], labelled["c"], labelled["d"], labelled["s"], labelled["pixels"]
    assert s > 0
    # Predicted c where the labels say d on s pixels: for c those are false positives, for d misses.
    want = {k: 1.0 for k in range(9) if n[k]}
    want[c] = (n[c] - s) / n[c]
    want[d] = n[d] / (n[d] + s)
    iou = list(row["iou"].values())
    for k in range(9):
        assert (iou[k] is None) == (k not in want)
        if k in want:
            assert iou[k] == pytest.approx(want[k], abs=1e-12)
    assert row["mean_iou"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)
    assert row["pixel_accuracy"] == pytest.approx(1 - s / N, abs=1e-12)
    assert row["confusion_matrix"][d][c] == s
    assert row["label_agreement"] == 1.0  # the reference is the same model: labels agree everywhere


def test_backends_side_by_side_with_unavailable_rows_and_a_plot(labelled, tmp_path, capsys):
    argv = [str(labelled["ckpt"]), "--data", str(labelled["dir"] / "own"), "--backend", "torch,onnxruntime,tensorrt",
            "--upsample", "logits", "--work-dir", str(tmp_path / "work"), "--plot", str(tmp_path / "cm.png")]
    rc, r = report(tmp_path, argv)
    assert rc == 0
    rows = {x["backend"]: x for x in r["results"]}
    assert rows["tensorrt"]["status"].startswith("unavailable: ")  # listed with why, never faked
    ort = rows["onnxruntime"]
    assert ort["status"] == "ok" and ort["frames"] == 2
    # ONNX Runtime against PyTorch fp32 on the same frames: labels agree on >= 99% of the pixels
    # (fp32 rounding may flip a few near-tied pixels of this random model). Each differing pixel
    # moves one count of the confusion matrix; the mIoU may still move a lot, as small classes weigh
    # as much as large ones.
    assert ort["label_agreement"] >= 0.99
    differing = round((1 - ort["label_agreement"]) * ort["pixels"])
    moved = np.abs(np.array(ort["confusion_matrix"]) - np.array(rows["torch"]["confusion_matrix"])).sum()
    assert moved <= 2 * differing
    assert r["settings"]["upsample"] == "logits" and r["settings"]["reference"].startswith("reference: tiny9.pt")
    # Logits resized bilinearly then argmax: close to, not the same as, the labels the runtime returns.
    assert 0.9 <= rows["torch"]["pixel_accuracy"] <= 1.0
    png = cv2.imread(str(tmp_path / "cm.png"))
    assert png is not None and png.shape[0] > 100
    out = capsys.readouterr().out
    assert "not evaluated: tiny9.pt tensorrt fp32: unavailable" in out and "onnxruntime" in out


def test_bad_layout_and_class_mismatch_are_one_line_errors(labelled, tmp_path, capsys):
    rc = accuracy.run([str(labelled["ckpt"]), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path}: no labelled layout this reads; found an empty folder")
    five = tmp_path / "tiny5.pt"
    save_gopt(factories.tiny_gopt(), five)  # 5 classes
    rc = accuracy.run([str(five), "--data", str(labelled["dir"] / "own")])
    err = capsys.readouterr().err
    assert rc == 2 and "the reference tiny5.pt has 5 classes, mfnet has 9" in err
    rc = accuracy.run([str(five), "--data", str(labelled["dir"] / "own"), "--no-reference"])
    out = capsys.readouterr().out
    assert rc == 1 and "tiny5.pt torch fp32: failed: has 5 classes, mfnet has 9" in out
    rc = accuracy.run([str(labelled["ckpt"]), "--data", str(labelled["dir"] / "own"), "--format", "nyuv2"])
    err = capsys.readouterr().err
    assert rc == 2 and "provides depth or hha frames; this model takes thermal" in err
    rc = accuracy.run([str(tmp_path / "missing.onnx"), "--data", str(tmp_path)])
    assert rc == 2 and "missing.onnx: no such file" in capsys.readouterr().err
