"""ONNX Runtime backend: CUDA when a session actually gets it, else the CPU."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from ..graph_check import check_model, ort_specs
from ..metadata import ModelFileError, info_from_metadata_map
from . import plugin_ops
from .base import Backend, check_feeds


# MatMulAddFusion turns a 2-D MatMul + Add into Gemm before the Q/DQ kernels are chosen: in an
# INT8 model from export.quantize (a batch-1 export's linear layers are 2-D) the dequantized
# weights then run as an fp32 Gemm, 1.6 s instead of 0.68 s a frame for GoPT-B on a 2-core
# CPU. fp32 models run as fast without it (1228-1300 ms either way, same machine). Dynamic INT8
# models (export.quantize --target onnxruntime) get the same optimized graph with it or without.
DISABLED_OPTIMIZERS = ["MatMulAddFusion"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path, device: str | None = None, providers=None, threads: int | None = None,
                 optimization: str = "all"):
        """``device``: None (CUDA if available), "cuda" (required) or "cpu". ``providers``
        overrides the choice with an explicit ONNX Runtime provider list."""
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
        available = ort.get_available_providers()
        if providers is None:
            cuda = "CUDAExecutionProvider" in available and device != "cpu"
            providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ValueError(f"device='cuda' needs onnxruntime-gpu with CUDA; this onnxruntime has {available}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (physical cores)
        try:
            self.session = self._load(path, opts, providers)
        except ImportError as e:
            raise ModelFileError(f"{path}: {e}") from None
        except Exception as e:
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0][:300]}") from None
        super().__init__(info_from_metadata_map(self.session.get_modelmeta().custom_metadata_map, str(path)))
        check_model(self.info, str(path), ort_specs(self.session.get_inputs()), ort_specs(self.session.get_outputs()))
        # What the session really runs on, not what was asked for.
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        if device == "cuda" and self.device != "cuda":
            raise ValueError(f"{path}: asked for CUDA, but the session runs on {self.providers}")
        self._bind = self.device == "cuda"

    @staticmethod
    def _load(path, opts, providers):
        """The session; a graph exported with --fused-kernels gets the custom ops of its
        GoptGroupMerge / GoptPromptInject nodes (ONNX Runtime names the op it lacks)."""
        try:
            return ort.InferenceSession(os.fspath(path), opts, providers=providers,
                                        disabled_optimizers=DISABLED_OPTIMIZERS)
        except Exception as e:
            if not any(op in str(e) for op in plugin_ops.PLUGINS):
                raise
        plugin_ops.session_options(opts, plugin_ops.PLUGINS)
        return ort.InferenceSession(os.fspath(path), opts, providers=providers, disabled_optimizers=DISABLED_OPTIMIZERS)

    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        check_feeds(self.inputs, feeds)
        names = outputs or [t.name for t in self.outputs]
        if not self._bind:
            return dict(zip(names, self.session.run(names, feeds)))
        # CUDA: inputs copied to the device once, only the requested outputs copied back. One
        # binding per call: sessions are re-entrant, a shared binding is not.
        io = self.session.io_binding()
        for name, x in feeds.items():
            io.bind_cpu_input(name, np.ascontiguousarray(x))
        for name in names:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        return dict(zip(names, io.copy_outputs_to_cpu()))

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.info.kind}, providers={self.providers})"
