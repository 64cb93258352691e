"""OpenVINO backend: exported ONNX models on x86 CPUs (Intel and AMD), compiled once and
cached on disk.

    seg = Segmenter("gopt_rgbt.onnx", backend="openvino")                    # the model's precision
    seg = Segmenter("gopt_rgbt.onnx", backend="openvino", precision="bf16")  # the CPU's native bf16

Precision: by default the model's own. OpenVINO would pick bf16 by itself on CPUs that have
it (AVX512_BF16, AMX); this backend sets ``INFERENCE_PRECISION_HINT`` to f32 explicitly, so an
fp32 export computes in fp32 (an fp16 export computes in fp32 from its fp16 weights).
``precision="bf16"`` asks for bf16 and is refused in one line on a CPU without native bf16
(``OPTIMIZATION_CAPABILITIES``). The hint covers floating-point layers only.

What runs: GoPT fp32 / fp16 exports, raw-frame exports (``--uint8-input``), SimCMF encoder /
decoder pairs, INT8 models from ``export.quantize``: the Q/DQ model (``--target tensorrt``),
which OpenVINO runs with its own integer kernels, and the dynamic model (``--target
onnxruntime``), which it runs correctly but without integer speed-up (it is ONNX Runtime's).
Graphs exported with ``--fused-kernels`` are refused in one line: their custom nodes exist only
for ONNX Runtime (onnxruntime-extensions) and TensorRT (plugins).

Cache: the compiled model is written to ``CACHE_DIR`` and the next start loads it instead of
compiling (OpenVINO keys it by the model file and the settings; a changed file compiles
anew). Default ``$XDG_CACHE_HOME/mmseg-deploy/openvino`` (``~/.cache/...``); ``cache_dir=""``
turns it off; a folder that cannot be created is a warning and no cache.

Thread safety: like the other backends, ``infer`` may be called from several threads at once.
A compiled model is shared; an ``InferRequest`` is not: each call takes an idle request from a
pool (a new one when every request is busy) and returns it when done.
"""
from __future__ import annotations

import os
import queue
import warnings
from pathlib import Path

import numpy as np

from ..graph_check import check_model
from ..metadata import ModelFileError, TensorSpec, read_onnx_info
from .base import Backend, check_feeds

PRECISIONS = {None: "f32", "fp32": "f32", "bf16": "bf16"}  # the backend's names -> OpenVINO's hint


def default_cache_dir() -> Path:
    """Where compiled models are cached unless told otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmseg-deploy" / "openvino"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ModelFileError("the OpenVINO backend needs openvino: pip install 'mmseg-deploy[openvino]'") from None
    return openvino


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, path, device: str | None = None, precision: str | None = None, threads: int | None = None,
                 cache_dir=None):
        """``device``: None or "cpu" (OpenVINO's CPU plugin). ``precision``: None (the model's
        own), "fp32" or "bf16". ``threads``: inference threads (default: OpenVINO's, the
        physical cores). ``cache_dir``: compiled-model cache (None: ``default_cache_dir()``;
        "": none)."""
        if device not in (None, "cpu"):
            raise ValueError(f"the OpenVINO backend runs on the CPU: device must be None or 'cpu', got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be None (the model's own), 'fp32' or 'bf16', got {precision!r}")
        ov = import_openvino()
        info = read_onnx_info(path)
        if info.plugins:
            raise ModelFileError(f"{path}: OpenVINO cannot run its fused GoPT nodes ({', '.join(info.plugins)}, "
                                 "exported with --fused-kernels); use ONNX Runtime or TensorRT, or an export "
                                 "without --fused-kernels")
        self.core = ov.Core()
        self.hint = PRECISIONS[precision]
        if self.hint == "bf16":
            caps = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in caps:
                raise ValueError(f"precision='bf16' needs a CPU with native bf16 (AVX512_BF16 or AMX); "
                                 f"{self.core.get_property('CPU', 'FULL_DEVICE_NAME')} offers {', '.join(caps)}")
        self.cache_dir = self._cache(cache_dir)
        config = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = self.core.compile_model(os.fspath(path), "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError / its own types
            raise ModelFileError(f"{path}: OpenVINO cannot load it: {str(e).strip().splitlines()[0][:300]}") from None
        super().__init__(info)
        check_model(self.info, str(path), ov_specs(self.compiled.inputs), ov_specs(self.compiled.outputs))
        self.loaded_from_cache = bool(self.cache_dir) and bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def _cache(self, cache_dir) -> Path | None:
        """The cache folder set on the Core, or None (turned off, or not writable: a warning)."""
        if cache_dir == "":
            return None
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"{folder} is not writable")
        except OSError as e:
            warnings.warn(f"OpenVINO compiled-model cache off: {e}", stacklevel=3)
            return None
        self.core.set_property({"CACHE_DIR": str(folder)})
        return folder

    @property
    def compute_precision(self) -> str:
        if self.hint == "bf16":
            return "bf16"
        return "fp32" if self.info.precision == "fp16" else self.info.precision

    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        check_feeds(self.inputs, feeds)
        names = outputs or [t.name for t in self.outputs]
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer(feeds, share_outputs=False)  # outputs copied out of the request
            return {name: result[name] for name in names}
        finally:
            self._idle.put(request)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    def __repr__(self) -> str:
        return f"OpenVINOBackend({self.info.kind}, CPU, {self.hint})"


def ov_specs(ports) -> list[TensorSpec]:
    """OpenVINO model ports as TensorSpecs (dynamic dims as None)."""
    specs = []
    for port in ports:
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        specs.append(TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name))
    return specs
