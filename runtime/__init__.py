"""Deployment runtime: preprocessing, backends and the ``Segmenter`` that robots call.

    from runtime import Segmenter
    seg = Segmenter("gopt_rgbt.onnx")     # .engine / .plan -> TensorRT, .onnx -> ONNX Runtime, .pt -> PyTorch
    labels = seg.run(bgr, thermal)

Importing ``runtime`` never imports PyTorch: the ONNX Runtime and TensorRT paths run on
machines without it.

A frame's way: ``segmenter.py`` (``Segmenter.run``) -> ``preprocess.py`` (checks, resize,
normalisation, the label map back at the frame's size) -> a backend. The rooms:

- the core, here: ``segmenter``, ``preprocess``, ``outputs`` (output checks), ``metadata``
  and ``graph_check`` (what a model file promises), ``files`` (atomic writes), ``colors``,
  ``progress``, ``cli`` (every command's errors and exit statuses), ``__main__``
  (``python -m runtime``);
- ``backends/``: ONNX Runtime, TensorRT, OpenVINO and PyTorch behind one interface;
- ``sources/``: frame pairs from folders, videos, cameras, and the pipelined stream loop;
- ``ros/``: ROS 2 messages and bags, and the worker behind the ROS 2 node;
- ``batch/``: whole recordings on a Ray cluster (``python -m runtime.batch``).
"""
from .metadata import ModelFileError, ModelInfo, read_onnx_info
from .outputs import NonFiniteOutputError
from .segmenter import Segmenter
from .sources.streams import open_source, stream

__all__ = ["Segmenter", "ModelInfo", "ModelFileError", "NonFiniteOutputError", "read_onnx_info", "open_source",
           "stream"]
