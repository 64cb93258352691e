"""Deployment runtime: preprocessing, backends and the ``Segmenter`` that robots call.

    from runtime import Segmenter
    seg = Segmenter("gopt_rgbt.onnx")     # .engine / .plan -> TensorRT, .onnx -> ONNX Runtime, .pt -> PyTorch
    labels = seg.run(bgr, thermal)

Importing ``runtime`` never imports PyTorch: the ONNX Runtime and TensorRT paths run on
machines without it.
"""
from .metadata import ModelFileError, ModelInfo, read_onnx_info
from .outputs import NonFiniteOutputError
from .segmenter import Segmenter
from .streams import open_source, stream

__all__ = ["Segmenter", "ModelInfo", "ModelFileError", "NonFiniteOutputError", "read_onnx_info", "open_source", "stream"]
