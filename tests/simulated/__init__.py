"""Simulated TensorRT and CUDA runtime for the tests of the TensorRT path (test code only).

``cuda_runtime.SimulatedCuda`` stands in for cuda-python's ``cuda.bindings.runtime`` and
``tensorrt_module.make_tensorrt`` for the ``tensorrt`` module of TensorRT 10.3, 10.16 or 11.1,
each offering only the names the project calls and, for TensorRT, only the names that exist
in that version (tests/data/tensorrt_python_api). They follow the documented contracts of
those APIs: device memory is host memory the simulation owns, stream work runs only when the
host waits for it, stream capture records work that only a graph launch replays, and an
"engine" is the ONNX model with its profiles and builder settings, executed by ONNX Runtime
on the CPU at the tensor addresses the caller set.

What a simulated run proves: the project's host code (buffers, copies, call order, profiles,
CUDA graphs, plugin loading, error handling) against those contracts. What it does not prove:
anything about TensorRT's own behaviour (kernels, precision, layer support, timing) or a GPU
(device-side races, memory limits). Everything it prints says "simulated".
"""
