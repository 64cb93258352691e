"""Triton Python-backend model ``preprocess``: uint8 frames -> GoPT model inputs.

``python -m export.triton_repo`` copies this file to ``REPO/preprocess/1/model.py``. It runs
inside the server's Python, which must have this project installed (it calls
``runtime.preprocess.preprocess_pair``, the function ``Segmenter`` uses). The model's
settings (the GoPT config, colour order, depth units) come from the ``settings``
parameter of its ``config.pbtxt``.

Request: ``rgb`` [B, H, W, 3] uint8, ``aux`` [B, H, W] (or [B, H, W, 3] for HHA).
Response: ``rgb_input`` [B, 3, h, w] and ``aux_input`` [B, C, h, w] float32 at the
model's size, ``frame_size`` [B, 2] int32 (H, W) for the postprocessing model.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.preprocess import preprocess_pair


def load_settings(model_config: dict) -> dict:
    """The ``settings`` parameter of a model's configuration (the JSON Triton passes)."""
    try:
        return json.loads(model_config["parameters"]["settings"]["string_value"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"the preprocess model's config.pbtxt has no valid 'settings' parameter ({e})") from None


def prepare_frames(rgb: np.ndarray, aux: np.ndarray, settings: dict):
    """A request's frames -> (rgb_input, aux_input, frame_size), as ``Segmenter.prepare`` does."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 4:
        raise ValueError(f"rgb must be [batch, H, W, 3] uint8, got shape {getattr(rgb, 'shape', None)}")
    if not isinstance(aux, np.ndarray) or len(aux) != len(rgb):
        raise ValueError(f"aux must hold one frame per rgb frame ({len(rgb)}), got shape {getattr(aux, 'shape', None)}")
    xs, auxs, sizes = [], [], []
    for frame, aux_frame in zip(rgb, aux):
        x, a = preprocess_pair(frame, aux_frame, settings["gopt"], settings.get("color_order", "rgb"),
                               settings.get("depth_units", 0.001))
        xs.append(x)
        auxs.append(a)
        sizes.append(frame.shape[:2])
    return np.concatenate(xs), np.concatenate(auxs), np.asarray(sizes, np.int32)


class TritonPythonModel:
    def initialize(self, args):
        self.settings = load_settings(json.loads(args["model_config"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            rgb = pb_utils.get_input_tensor_by_name(request, "rgb").as_numpy()
            aux = pb_utils.get_input_tensor_by_name(request, "aux").as_numpy()
            try:
                x, a, sizes = prepare_frames(rgb, aux, self.settings)
            except ValueError as e:  # a bad frame fails its own request, not the batch
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("rgb_input", x), pb_utils.Tensor("aux_input", a),
                pb_utils.Tensor("frame_size", sizes)]))
        return responses
