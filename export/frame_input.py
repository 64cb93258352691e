"""GoPT with the runtime's preprocessing inside the graph (``python -m export.onnx --uint8-input``).

The graph takes the camera's frames as they come, ``rgb`` uint8 [B, H, W, 3] in the colour
order chosen at export (BGR by default, OpenCV's) and ``aux`` in the sensor's integer type,
and does the cast, channel order, normalisation and NCHW layout itself: on a GPU the
host-to-device copy is 4x smaller (2x for 16-bit sensors) and TensorRT fuses these steps
into the first layers. Every step computes what ``runtime/preprocess.py`` computes, in the
same float32 operations and order:

- rgb: float, RGB order, ``(x - mean) / std``;
- thermal and other modalities: uint8 as is, uint16 / 257 onto 0-255;
- depth: uint16 counts x ``depth_units`` metres, 0 is a hole and enters the model as 0
  (the normalisation mean).

16-bit frames enter as their little-endian bytes, ``aux`` uint8 [B, H, W, C, 2] (a free view
of the frame on the host), because TensorRT has no 16-bit integer type. Resizing stays
outside the graph: the runtime resizes frames whose size is not the model's ``img_size``.
"""
from __future__ import annotations

import torch
from torch import nn

AUX_DTYPES = ("uint8", "uint16")
COLOR_ORDERS = ("bgr", "rgb")


def default_frame_input(modality: str, color_order: str = "bgr", aux_dtype: str | None = None,
                        depth_units: float = 0.001) -> dict:
    """The metadata's ``frame_input``: depth frames are uint16, other sensors uint8 unless told."""
    aux_dtype = aux_dtype or ("uint16" if modality == "depth" else "uint8")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"colour order must be one of {COLOR_ORDERS}, got {color_order!r}")
    if aux_dtype not in AUX_DTYPES:
        raise ValueError(f"aux dtype must be one of {AUX_DTYPES}, got {aux_dtype!r}")
    if modality == "depth" and aux_dtype != "uint16":
        raise ValueError("depth frames are uint16 counts of depth_units metres (--aux-dtype uint16)")
    if not depth_units > 0:
        raise ValueError(f"depth units must be positive metres per count, got {depth_units}")
    frame_input = {"color_order": color_order, "aux_dtype": aux_dtype}
    if modality == "depth":
        frame_input["depth_units"] = float(depth_units)
    return frame_input


class FrameInputGraph(nn.Module):
    """``graph(rgb, aux)`` on normalised float32 NCHW tensors, fed from raw frames."""

    def __init__(self, graph: nn.Module, config, frame_input: dict):
        super().__init__()
        self.gopt = graph  # (not "graph": torch.export names its own module graph so)
        self.bgr = frame_input["color_order"] == "bgr"
        self.wide = frame_input["aux_dtype"] == "uint16"
        self.depth = config.modality == "depth"
        f32 = dict(dtype=torch.float32)
        self.register_buffer("rgb_mean", torch.tensor(config.rgb_mean, **f32), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(config.rgb_std, **f32), persistent=False)
        self.register_buffer("aux_mean", torch.tensor(config.aux_mean, **f32), persistent=False)
        self.register_buffer("aux_std", torch.tensor(config.aux_std, **f32), persistent=False)
        self.register_buffer("byte", torch.tensor(256.0, **f32), persistent=False)
        self.register_buffer("to_8bit", torch.tensor(257.0, **f32), persistent=False)
        self.register_buffer("depth_units", torch.tensor(frame_input.get("depth_units", 0.001), **f32),
                             persistent=False)

    def forward(self, rgb, aux):
        x = rgb.to(torch.float32)
        if self.bgr:
            x = x.flip(-1)
        x = ((x - self.rgb_mean) / self.rgb_std).permute(0, 3, 1, 2)
        a = aux.to(torch.float32)
        if self.wide:  # little-endian bytes -> the 16-bit value, exact in float32
            a = a[..., 0] + a[..., 1] * self.byte
        holes = None
        if self.depth:
            a = a * self.depth_units
            holes = a <= 0
        elif self.wide:
            a = a / self.to_8bit
        a = (a - self.aux_mean) / self.aux_std
        if holes is not None:
            a = torch.where(holes, torch.zeros_like(a), a)
        return self.gopt(x, a.permute(0, 3, 1, 2))
