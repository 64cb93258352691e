"""The choice of backend by model file: ``open_backend(path)`` imports only the backend that
file needs (``base.py`` holds the interface they share)."""
from __future__ import annotations

from pathlib import Path

from .base import Backend

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
