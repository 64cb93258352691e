"""Triton Python-backend model ``postprocess``: model-size label maps -> label maps at each
frame's own size, with ``runtime.preprocess.labels_to_frame`` (what ``Segmenter`` does).

``python -m export.triton_repo`` copies this file to ``REPO/postprocess/1/model.py``; the
server's Python must have this project installed.

Request: ``model_labels`` [B, h, w] uint8, ``frame_size`` [B, 2] int32 (one size per request:
the frames of one request share it). Response: ``labels`` [B, H, W] uint8.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.preprocess import labels_to_frame


def restore_labels(labels: np.ndarray, frame_size: np.ndarray) -> np.ndarray:
    """[B, h, w] labels -> [B, H, W] uint8 at the frames' size."""
    sizes = {tuple(int(v) for v in s) for s in np.asarray(frame_size).reshape(-1, 2)}
    if len(sizes) != 1 or len(frame_size) != len(labels):
        raise ValueError(f"expected one frame size per label map, all equal; got {sorted(sizes)} for "
                         f"{len(labels)} label maps")
    (size,) = sizes
    return np.stack([labels_to_frame(lab, size) for lab in labels])


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            labels = pb_utils.get_input_tensor_by_name(request, "model_labels").as_numpy()
            sizes = pb_utils.get_input_tensor_by_name(request, "frame_size").as_numpy()
            try:
                out = restore_labels(labels, sizes)
            except ValueError as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("labels", out)]))
        return responses
