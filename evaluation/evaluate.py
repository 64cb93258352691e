"""Models over a labelled data set, frame by frame: a confusion matrix each, and label agreement
with a reference model.

    entries = [Entry("fp32", Segmenter("m.onnx")), Entry("int8", Segmenter("m.int8.onnx"))]
    frames = evaluate(entries, open_dataset("data/MFNet", "mfnet"), reference=entries[0])
    entries[1].matrix.mean_iou(), entries[1].agreement

Every model sees each frame as a robot's would reach it: ``Segmenter.prepare`` (the
deployed checks, resizing to the model's input and normalisation), inference, and the
prediction brought back to the resolution of the ground-truth labels, so that every
labelled pixel counts once and no label is resampled:

- ``upsample="labels"`` (default): the model's label map resized with nearest neighbour,
  exactly the map ``Segmenter.run`` returns;
- ``upsample="logits"``: the logits resized bilinearly (half-pixel centres), then the
  argmax, as mmsegmentation-based evaluations compute it (costs K x H x W floats a frame).

Label agreement counts every pixel of the frame (labelled or not): it compares two models,
not a model with the ground truth. A frame that a model cannot segment is recorded with the
reason and left out of that model's counts; every frame appears in the returned records.
Not thread-safe: entries accumulate in place.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from .datasets import LabelledFrames, Sample, Skipped
from .metrics import ConfusionMatrix

UPSAMPLE = ("labels", "logits")
NOTE_EVERY_S = 5.0


@dataclass(eq=False)
class Entry:
    """One model (file, backend, precision) under evaluation, and what it scored."""

    name: str
    segmenter: object | None  # a runtime.Segmenter; None when ``status`` says why it cannot run
    status: str = "ok"
    matrix: ConfusionMatrix | None = None
    frames: int = 0  # frames counted in ``matrix``
    agree: int = 0  # pixels with the reference's label
    compared: int = 0  # pixels compared with the reference
    failed: list = field(default_factory=list)  # (frame name, reason)
    info: dict = field(default_factory=dict)  # file, backend, precision, ...

    @property
    def agreement(self) -> float | None:
        return self.agree / self.compared if self.compared else None

    def summary(self, class_names, reference: "Entry | None" = None) -> dict:
        out = {"name": self.name, **self.info, "status": self.status}
        if self.matrix is None or self.status != "ok":
            return out
        out.update(frames=self.frames, **self.matrix.summary(class_names))
        out["label_agreement"] = self.agreement
        if reference is not None and reference.matrix is not None and reference.frames:
            out["mean_iou_change"] = _delta(self.matrix.mean_iou(), reference.matrix.mean_iou())
        out["failed"] = [{"frame": f, "reason": r} for f, r in self.failed]
        return out


def _delta(a: float, b: float) -> float | None:
    d = a - b
    return None if np.isnan(d) else float(d)


def frame_aux(segmenter, aux: np.ndarray) -> np.ndarray:
    """Depth in float32 metres as a graph that takes raw 16-bit frames needs it: counts in the
    depth units fixed at its export."""
    fi = getattr(segmenter.info, "frame_input", None)
    if fi and fi.get("aux_dtype") == "uint16" and aux.dtype == np.float32 and segmenter.config.get("modality") == "depth":
        units = fi.get("depth_units") or segmenter.depth_units
        return np.clip(np.round(aux / units), 0, 65535).astype(np.uint16)
    return aux


def predict(segmenter, sample: Sample, upsample: str = "labels") -> np.ndarray:
    """The segmenter's labels for ``sample`` at the size of its ground-truth labels."""
    prepared = segmenter.prepare(sample.rgb, frame_aux(segmenter, sample.aux))
    prepared = dataclasses.replace(prepared, size=tuple(sample.labels.shape))
    if upsample == "labels":
        return segmenter.run_prepared([prepared])[0]
    if upsample != "logits":
        raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
    _, logits = segmenter.run_prepared([prepared], return_logits=True)[0]
    return logits.argmax(0).astype(np.uint8)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {text}"


def evaluate(entries: list[Entry], frames: LabelledFrames, reference: Entry | None = None,
             upsample: str = "labels", limit: int | None = None, progress=None) -> list[dict]:
    """Run every entry that can run (and ``reference``) on each frame; returns one record a
    frame: ``{"name", "status": "evaluated" | "skipped", "reason", "failed": {entry: reason}}``.
    ``progress``: a ``runtime.progress.Progress`` whose ``note`` gets skipped frames and a
    count every few seconds."""
    if upsample not in UPSAMPLE:
        raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
    K = len(frames.classes)
    running = [e for e in entries if e.segmenter is not None and e.status == "ok"]
    if reference is not None and reference not in running:
        running = [reference] + running
    for e in running:
        e.matrix = e.matrix or ConfusionMatrix(K)
    note = progress.note if progress is not None else (lambda line: None)
    records, last_note, t0 = [], time.perf_counter(), time.perf_counter()
    for index, frame in enumerate(frames):
        if limit is not None and index >= limit:
            break
        if isinstance(frame, Skipped):
            records.append({"name": frame.name, "status": "skipped", "reason": frame.reason,
                            "sources": list(frame.sources)})
            note(f"  {frame.line()}")
            continue
        predictions: dict[int, tuple] = {}  # one run per segmenter object, shared by entries that share it
        for e in running:
            key = id(e.segmenter)
            if key not in predictions:
                try:
                    predictions[key] = (predict(e.segmenter, frame, upsample), None)
                except Exception as err:  # one frame, one model: reported, the run goes on
                    predictions[key] = (None, one_line(err))
        ref = predictions[id(reference.segmenter)][0] if reference is not None else None
        failed = {}
        for e in running:
            pred, why = predictions[id(e.segmenter)]
            if pred is None:
                e.failed.append((frame.name, why))
                failed[e.name] = why
                continue
            try:
                e.matrix.add(frame.labels, pred)
            except ValueError as err:
                e.failed.append((frame.name, one_line(err)))
                failed[e.name] = one_line(err)
                continue
            e.frames += 1
            if ref is not None and e is not reference:
                e.agree += int(np.count_nonzero(pred == ref))
                e.compared += pred.size
        records.append({"name": frame.name, "status": "evaluated", "sources": list(frame.sources),
                        **({"failed": failed} if failed else {})})
        for name, why in failed.items():
            note(f"  {frame.name}: {name} could not segment it: {why}")
        now = time.perf_counter()
        if now - last_note >= NOTE_EVERY_S:
            note(f"  {len(records)} frames ({now - t0:.0f} s)")
            last_note = now
    return records
