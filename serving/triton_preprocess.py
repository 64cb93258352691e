"""Triton Python-backend model ``preprocess``: uint8 frames -> GoPT model inputs.

``python -m export.triton_repo`` copies this file to ``REPO/preprocess/1/model.py``. It runs
inside the server's Python, which must have this project installed: frames are prepared by
``Segmenter.prepare`` (``runtime.batch.prepare.frame_preparer``, built from the model's metadata),
the same code ``Segmenter.run`` uses. The settings (the model's metadata, colour order,
depth units) come from the ``settings`` parameter of its ``config.pbtxt``.

Request: ``rgb`` [B, H, W, 3] uint8, ``aux`` [B, H, W] (or [B, H, W, 3] for HHA).
Response: ``rgb_input`` [B, 3, h, w] and ``aux_input`` [B, C, h, w] float32 at the
model's size, ``frame_size`` [B, 2] int32 (H, W) for the postprocessing model.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.metadata import ModelInfo
from runtime.batch.prepare import frame_preparer


def load_settings(model_config: dict) -> dict:
    """The ``settings`` parameter of a model's configuration (the JSON Triton passes)."""
    try:
        return json.loads(model_config["parameters"]["settings"]["string_value"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"the preprocess model's config.pbtxt has no valid 'settings' parameter ({e})") from None


def make_preparer(settings: dict):
    """The model's frame preparer (a ``Segmenter`` without a graph) from the settings."""
    info = ModelInfo.from_json(json.dumps(settings["model"]), "the preprocess model's settings")
    return frame_preparer(info, settings.get("color_order", "rgb"), depth_units=settings.get("depth_units"))


def prepare_frames(preparer, rgb: np.ndarray, aux: np.ndarray):
    """A request's frames -> (rgb_input, aux_input, frame_size), with ``Segmenter.prepare``."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 4:
        raise ValueError(f"rgb must be [batch, H, W, 3] uint8, got shape {getattr(rgb, 'shape', None)}")
    if not isinstance(aux, np.ndarray) or len(aux) != len(rgb):
        raise ValueError(f"aux must hold one frame per rgb frame ({len(rgb)}), got shape {getattr(aux, 'shape', None)}")
    xs, auxs, sizes = [], [], []
    for frame, aux_frame in zip(rgb, aux):
        prepared = preparer.prepare(frame, aux_frame)
        xs.append(prepared.rgb)
        auxs.append(prepared.aux)
        sizes.append(frame.shape[:2])
    return np.concatenate(xs), np.concatenate(auxs), np.asarray(sizes, np.int32)


class TritonPythonModel:
    def initialize(self, args):
        self.preparer = make_preparer(load_settings(json.loads(args["model_config"])))

    def execute(self, requests):
        responses = []
        for request in requests:
            rgb = pb_utils.get_input_tensor_by_name(request, "rgb").as_numpy()
            aux = pb_utils.get_input_tensor_by_name(request, "aux").as_numpy()
            try:
                x, a, sizes = prepare_frames(self.preparer, rgb, aux)
            except ValueError as e:  # a bad frame fails its own request, not the batch
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("rgb_input", x), pb_utils.Tensor("aux_input", a),
                pb_utils.Tensor("frame_size", sizes)]))
        return responses
