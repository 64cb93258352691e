"""Checks of what a model returns, on arrays the runtime fetches anyway.

A broken model (a NaN weight, values overflowing fp16) gives NaN or infinite logits; an
argmax turns them into an all-zero label map that looks like a result. Inputs are checked
finite before every run (``backend.check_feeds``), so a non-finite output is the model's.
Cost: GoPT files exported by this project flag such pixels in the label map inside the graph
(one reduction over the K logit planes, see ``ModelInfo.nonfinite_label``), so the runtime
scans only the uint8 label map (one pass, H x W bytes); for files without the flag it
fetches the logits as well and scans them (K planes). SimCMF's embeddings and low-res
logits are fetched anyway and scanned once.
"""
from __future__ import annotations

import numpy as np

from .metadata import ModelFileError, ModelInfo


class NonFiniteOutputError(ValueError):
    """A model produced NaN or infinite values from finite inputs."""


def nonfinite_message(source: str, what: str, bad: int, total: int, where: str = "", unit: str = "values") -> str:
    return (f"{source}: the model's {what} are NaN or infinite at {bad} of {total} {unit}{where}, from finite "
            "inputs (checked): the model file is broken (NaN or huge weights, or values overflowing its precision)")


def check_finite(x: np.ndarray, source: str, what: str, where: str = "") -> None:
    """NonFiniteOutputError unless every value of ``x`` is finite."""
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise NonFiniteOutputError(nonfinite_message(source, what, bad, x.size, where))


def check_gopt_frame(labels: np.ndarray, logits: np.ndarray | None, info: ModelInfo, source: str,
                     where: str = "") -> None:
    """One frame's [h, w] labels (and [K, h, w] logits when fetched): finite logits, labels
    below the class count."""
    if logits is not None:
        check_finite(logits, source, "logits", where)
    K = info.config["num_classes"]
    top = int(labels.max()) if labels.size else 0
    if top < K:
        return
    flag = info.nonfinite_label
    if flag is not None and top == flag and int(labels[labels != flag].max(initial=0)) < K:
        bad = int((labels == flag).sum())
        raise NonFiniteOutputError(nonfinite_message(source, "logits", bad, labels.size, where, "pixels"))
    raise ModelFileError(f"{source}: label {top} from a model whose metadata says num_classes = {K}: "
                         "the metadata does not match the graph")
