"""The one interface every inference backend implements.

A backend runs one graph on model-space tensors, by name:
``infer({"rgb": ..., "aux": ...}, outputs=["labels"]) -> {"labels": ...}``. Everything
about frames, resizing and label maps lives above it, in the ``Segmenter``. The choice of
backend by file is ``factory.py``; backends import this module, never the factory.
"""
from __future__ import annotations

import numpy as np

from ..metadata import ModelInfo, TensorSpec


class Backend:
    """Base class: ``info`` (the model's metadata), ``infer``, ``close``."""

    name = "?"
    device = "cpu"

    def __init__(self, info: ModelInfo):
        self.info = info

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.info.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.info.outputs

    @property
    def compute_precision(self) -> str:
        """The precision the backend computes in: the model file's, unless told otherwise."""
        return self.info.precision

    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.kind}, device={self.device})"


def check_feeds(specs: list[TensorSpec], feeds: dict, max_batch: int | None = None) -> None:
    """One-line ValueError for anything the graph would reject: names, ranks, fixed axes,
    dtypes, inconsistent dynamic axes, non-finite values."""
    want = [s.name for s in specs]
    if sorted(feeds) != sorted(want):
        raise ValueError(f"expected inputs {want}, got {sorted(feeds)}")
    seen: dict[str, int] = {}
    for spec in specs:
        x = feeds[spec.name]
        if not isinstance(x, np.ndarray):
            raise ValueError(f"input {spec.name!r} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.dtype(spec.dtype):
            raise ValueError(f"input {spec.name!r} must be {spec.dtype}, got {x.dtype}")
        if x.ndim != len(spec.shape):
            raise ValueError(f"input {spec.name!r} must be {spec.shape}, got shape {list(x.shape)}")
        for axis, (want_dim, got) in enumerate(zip(spec.shape, x.shape)):
            if isinstance(want_dim, str):
                if seen.setdefault(want_dim, got) != got:
                    raise ValueError(f"input {spec.name!r} axis {axis} ({want_dim}) is {got}, "
                                     f"but another input has {want_dim} = {seen[want_dim]}")
            elif want_dim != got:
                raise ValueError(f"input {spec.name!r} must be {spec.shape}, got shape {list(x.shape)}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"input {spec.name!r} contains NaN or infinite values")
    if max_batch is not None and seen.get("batch", 0) > max_batch:
        raise ValueError(f"batch {seen['batch']} is above this model's maximum {max_batch}")
