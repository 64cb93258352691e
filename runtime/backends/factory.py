"""The one interface every inference backend implements, and the choice of backend by file.

A backend runs one graph on model-space tensors, by name:
``infer({"rgb": ..., "aux": ...}, outputs=["labels"]) -> {"labels": ...}``. Everything
about frames, resizing and label maps lives above it, in the ``Segmenter``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .metadata import ModelInfo, TensorSpec


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


# Each backend and the model files it runs.
BACKENDS = {"onnxruntime": ".onnx", "openvino": ".onnx", "tensorrt": ".engine / .plan", "torch": ".pt / .pth"}


def backend_kind(path, backend: str | None = None) -> str:
    """"tensorrt", "onnxruntime" or "torch", from the file's extension; or ``backend`` when
    given and it runs that kind of file ("openvino" runs .onnx files)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".engine", ".plan"):
        kind = "tensorrt"
    elif suffix == ".onnx":
        kind = "onnxruntime"
    elif suffix in (".pt", ".pth"):
        kind = "torch"
    else:
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected .engine / .plan (TensorRT), "
                         ".onnx (ONNX Runtime, OpenVINO) or .pt / .pth (a PyTorch checkpoint)")
    if backend is None or backend == kind:
        return kind
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openvino" and kind == "onnxruntime":
        return "openvino"
    raise ValueError(f"{path}: the {backend} backend runs {BACKENDS[backend]} files, not {suffix}")


def open_backend(path, device: str | None = None, providers=None, backend: str | None = None, **kw) -> Backend:
    """The backend for one graph file (by its extension, or ``backend``); imports only what
    that backend needs."""
    kind = backend_kind(path, backend)
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    if kind == "tensorrt":
        from .trt_backend import TensorRTBackend

        return TensorRTBackend(path, device=device, **kw)
    if kind == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, providers=providers, **kw)
    if kind == "openvino":
        from .openvino_backend import OpenVINOBackend

        if providers is not None:
            raise ValueError("providers= are ONNX Runtime's; the OpenVINO backend takes device, precision, threads, "
                             "cache_dir")
        return OpenVINOBackend(path, device=device, **kw)
    from .torch_backend import open_torch_backends

    return open_torch_backends(path, device=device, **kw)
