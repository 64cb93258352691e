"""Segmentation metrics from one confusion matrix (numpy only).

    cm = ConfusionMatrix(num_classes=9)            # ground-truth value IGNORE (255) is skipped
    cm.add(truth, predicted)                        # H x W class indices, any number of frames
    cm.iou(), cm.mean_iou(), cm.pixel_accuracy(), cm.kappa()

Rows are the ground truth, columns the prediction (``matrix[t, p]`` counts pixels of class
``t`` predicted as ``p``), as scikit-learn's ``confusion_matrix`` and RTFNet's evaluation
lay it out. Pixels whose ground truth is IGNORE do not enter any metric.

- IoU of class k: ``TP / (TP + FP + FN)``; NaN where the class is neither in the ground
  truth nor predicted (0 / 0). Mean IoU averages the classes that are not NaN (a class
  predicted but absent from the ground truth counts, with IoU 0), as mmsegmentation does.
- Pixel accuracy = overall accuracy (OA): correct pixels / counted pixels.
- Class accuracy (recall) of class k: ``TP / (ground-truth pixels of k)``; NaN for classes
  absent from the ground truth. Average accuracy (AA): their mean over the classes present.
- Cohen's kappa: ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the OA and ``p_e`` the agreement
  expected by chance from the row and column totals.

Not thread-safe: one accumulator per thread, merged with ``+=``.
"""
from __future__ import annotations

import numpy as np

IGNORE = 255  # the ground-truth value that no metric counts (every dataset reader maps its own to it)


class ConfusionMatrix:
    """A K x K int64 pixel count, accumulated with ``np.bincount``."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        if not 1 <= num_classes < 2 ** 16:
            raise ValueError(f"num_classes must be between 1 and 65535, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Count one frame (or any batch of pixels): ``truth`` and ``predicted`` of one shape."""
        truth, predicted = np.asarray(truth), np.asarray(predicted)
        if truth.shape != predicted.shape:
            raise ValueError(f"ground truth {truth.shape} and prediction {predicted.shape} differ in shape")
        K = self.num_classes
        keep = truth != self.ignore_index
        t = truth[keep].astype(np.int64, copy=False)
        p = predicted[keep].astype(np.int64, copy=False)
        for name, x in (("ground truth", t), ("prediction", p)):
            if x.size and (x.min() < 0 or x.max() >= K):
                bad = np.unique(x[(x < 0) | (x >= K)])[:8].tolist()
                raise ValueError(f"{name} holds values {bad} outside the {K} classes 0-{K - 1}"
                                 + (f" (and not the ignore value {self.ignore_index})" if name == "ground truth" else ""))
        self.matrix += np.bincount(t * K + p, minlength=K * K).reshape(K, K)

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class counts")
        self.matrix += other.matrix
        return self

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        num, den = num.astype(np.float64), den.astype(np.float64)
        out = np.full(num.shape, np.nan)
        np.divide(num, den, out=out, where=den > 0)
        return out

    def iou(self) -> np.ndarray:
        """Per-class IoU, NaN where the class is neither in the ground truth nor predicted."""
        tp = np.diag(self.matrix)
        return self._ratio(tp, self.matrix.sum(1) + self.matrix.sum(0) - tp)

    def mean_iou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall, NaN for classes absent from the ground truth."""
        return self._ratio(np.diag(self.matrix), self.matrix.sum(1))

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels: the overall accuracy (OA)."""
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    overall_accuracy = pixel_accuracy

    def average_accuracy(self) -> float:
        """Mean class accuracy over the classes in the ground truth (AA)."""
        acc = self.class_accuracy()
        return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")

    def kappa(self) -> float:
        """Cohen's kappa; NaN when chance agreement is total (a single class everywhere)."""
        n = self.total
        if not n:
            return float("nan")
        m = self.matrix.astype(np.float64)
        p_o = np.trace(m) / n
        p_e = float((m.sum(1) * m.sum(0)).sum()) / (n * n)
        return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")

    def summary(self, class_names: list[str] | None = None) -> dict:
        """Every metric as plain numbers (NaN as None), for JSON reports."""
        names = list(class_names or [str(k) for k in range(self.num_classes)])
        iou, acc = self.iou(), self.class_accuracy()
        return {
            "pixels": self.total,
            "mean_iou": _num(self.mean_iou()),
            "pixel_accuracy": _num(self.pixel_accuracy()),
            "average_accuracy": _num(self.average_accuracy()),
            "kappa": _num(self.kappa()),
            "iou": {n: _num(v) for n, v in zip(names, iou)},
            "class_accuracy": {n: _num(v) for n, v in zip(names, acc)},
            "confusion_matrix": self.matrix.tolist(),
        }


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
