"""Deployment runtime: preprocessing, backends and the ``Segmenter`` that robots call.

Importing ``runtime`` never imports PyTorch: the ONNX Runtime and TensorRT paths run
on machines without it.
"""
