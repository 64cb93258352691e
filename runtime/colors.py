"""Colours for label maps and masks: one palette, overlays with a legend, click markers.
Shared by ``python -m runtime`` and ``demo.py``; label PNGs themselves stay class ids. The
legend is a strip beside the frame, so that it hides no pixel of it.

    over = overlay(bgr, labels, num_classes, class_names)   # labels tinted, legend of the classes present
    over = mask_overlay(bgr, mask, points, point_labels)     # SimCMF: the mask tinted, clicks drawn
"""
from __future__ import annotations

import cv2
import numpy as np

MASK_BGR = (255, 144, 30)  # the tint of a SimCMF mask
CLICK_BGR = {1: (0, 220, 0), 0: (0, 0, 230)}  # foreground green, background red


def palette(num_classes: int) -> np.ndarray:
    """A fixed, distinct BGR colour per class (class 0 black)."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(max(num_classes, 1), 3), dtype=np.uint8)
    colours[0] = 0
    return colours


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return palette(num_classes)[labels]


def class_names(config: dict) -> list[str]:
    """The model's class names, or the class indices when it has none."""
    k = config["num_classes"]
    names = list(config.get("class_names") or [])
    return names + [str(i) for i in range(len(names), k)]


def legend(image: np.ndarray, entries: list[tuple[str, tuple]]) -> np.ndarray:
    """``image`` with a legend strip beside it, on the right: a colour swatch and a name per
    entry, in as many columns as the frame's height needs. The frame itself is not covered
    (its pixels keep their coordinates: a click at (x, y) is drawn at (x, y)), and every entry
    is shown. The text scales with the frame's height."""
    h, w = image.shape[:2]
    scale = float(np.clip(h / 700, 0.38, 0.9))
    row = int(round(26 * scale)) + 4
    swatch = row - 6
    per_column = max(1, (h - 8) // row)
    columns = [entries[i:i + per_column] for i in range(0, len(entries), per_column)] or [[]]
    widths = [max([cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for name, _ in col] or [0])
              + swatch + 18 for col in columns]
    strip = np.full((h, sum(widths) + 4, 3), 32, image.dtype)
    x0 = 4
    for col, width in zip(columns, widths):
        for i, (name, colour) in enumerate(col):
            y = 4 + i * row
            cv2.rectangle(strip, (x0, y), (x0 + swatch, y + swatch), tuple(int(c) for c in colour), cv2.FILLED)
            cv2.rectangle(strip, (x0, y), (x0 + swatch, y + swatch), (255, 255, 255), 1)
            cv2.putText(strip, name, (x0 + swatch + 6, y + swatch - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)
        x0 += width
    return np.ascontiguousarray(np.concatenate([image, strip], axis=1))


def overlay(bgr: np.ndarray, labels: np.ndarray, num_classes: int, names: list[str] | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Labels tinted over the frame; with ``names``, a legend of every class present in a
    strip beside it (the picture is wider than the frame; the frame's pixels stay where they are)."""
    colours = palette(num_classes)
    out = cv2.addWeighted(bgr, 1 - alpha, colours[labels], alpha, 0)
    if names is None:
        return out
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=num_classes))
    return legend(out, [(names[k] if k < len(names) else str(k), colours[k]) for k in present])


def mask_overlay(bgr: np.ndarray, mask: np.ndarray, points, point_labels, alpha: float = 0.5) -> np.ndarray:
    """A SimCMF mask tinted over the frame, its outline, and each click (green foreground,
    red background) drawn last, above the mask; the legend in a strip beside the frame."""
    out = bgr.copy()
    tint = np.empty_like(out)
    tint[:] = MASK_BGR
    out[mask] = cv2.addWeighted(out, 1 - alpha, tint, alpha, 0)[mask]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, MASK_BGR, 2)
    radius = max(4, min(out.shape[:2]) // 80)
    for (x, y), lab in zip(points, point_labels):
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, radius + 2, (255, 255, 255), cv2.FILLED)
        cv2.circle(out, centre, radius, CLICK_BGR[int(lab)], cv2.FILLED)
    entries = [("mask", MASK_BGR)]
    entries += [(name, CLICK_BGR[lab]) for lab, name in ((1, "click (object)"), (0, "click (background)"))
                if lab in {int(v) for v in point_labels}]
    return legend(out, entries)
