"""Inference backends: one graph file run on model-space tensors, by name.

``base.py`` is the interface (``Backend``, ``check_feeds``); ``factory.py`` picks the backend
for a file (``open_backend``) and imports only that one; each backend is one module:
ONNX Runtime, TensorRT, OpenVINO, PyTorch eager, and ``plugin_ops`` for the fused-kernel
custom ops the ONNX Runtime and TensorRT backends share.
"""
