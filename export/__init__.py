"""Export to ONNX (`python -m export.onnx`) and TensorRT (`python -m export.tensorrt`)."""
