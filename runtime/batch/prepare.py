"""Frame preprocessing apart from inference: ``Segmenter.prepare`` from a model's metadata alone.

Pipelines that decode and preprocess on other processes or machines than the one running
the model (Ray Data reading tasks, Triton's Python-backend preprocessing model) build a
``frame_preparer`` from the model's metadata, with no session and no GPU, and get exactly
the tensors ``Segmenter.run`` would feed the graph.
"""
from __future__ import annotations

from ..backends.base import Backend
from ..metadata import ModelInfo
from ..segmenter import Segmenter


def frame_preparer(info: ModelInfo, color_order: str = "bgr", resize_aux: bool = False,
                   depth_units: float | None = None) -> Segmenter:
    """A GoPT ``Segmenter`` without a graph: ``prepare(rgb, aux)`` -> ``Prepared``. Running
    inference on it raises ``NotImplementedError``. ``depth_units`` None: the Segmenter's default."""
    if info.kind != "gopt":
        raise ValueError(f"a {info.kind} model; frames are prepared for GoPT (rgb + aux) models")
    options = {} if depth_units is None else {"depth_units": depth_units}
    return Segmenter.from_backends({"gopt": Backend(info)}, name=info.variant or "model", color_order=color_order,
                                   resize_aux=resize_aux, **options)
