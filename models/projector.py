"""SimCMF's cross-modal projectors: a C-channel image -> SAM's frozen 3-channel patch embedding.

Both variants end in the encoder's own ``patch_embed`` (passed in, never copied), so the
projector's output is patch tokens ``[B, H/16, W/16, D]``. Parameter names follow the
official checkpoints (``image_encoder.projector.*``).

``simcmf`` (the default): a per-channel gate ``w = sigmoid(moe(x))`` of shape [B, C, 1, 1]
splits the input. ``x * w`` is squeezed to 3 channels (``zip_rgbx``) and embedded by the
frozen ``patch_embed``; ``x * (1 - w)`` is embedded channel by channel
(``group_patch_embedding.{i}``, 1 -> D) and the C embeddings are mixed by ``fc``
(C -> 1, no bias). The output is the sum of the two.

``preconvk3n2d64``: ``zip_proj`` = 3x3 conv C -> 64, then 1x1 conv 64 -> 3, no activation
between them, then the frozen ``patch_embed``.
"""
from __future__ import annotations

import torch
from torch import nn

PROJECTORS = ("simcmf", "preconvk3n2d64")
GATE_EXPANSION = 4  # the gate's hidden width is 4 * C


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of [B, C, H, W]; affine parameters stored as [1, C, 1, 1]."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias


class SimCMFProjector(nn.Module):
    """The gated two-branch projector (``proj_type='simcmf'``)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16):
        super().__init__()
        hidden = in_chans * GATE_EXPANSION
        # Sequential indices are part of the checkpoint keys: moe.0, moe.1, moe.3.
        self.moe = nn.Sequential(
            nn.Conv2d(in_chans, hidden, 3, padding=1),
            ChannelNorm(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, in_chans, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
        )
        self.zip_rgbx = nn.Conv2d(in_chans, 3, 1)
        self.group_patch_embedding = nn.ModuleList(
            nn.Conv2d(1, embed_dim, patch_size, stride=patch_size) for _ in range(in_chans))
        self.fc = nn.Linear(in_chans, 1, bias=False)

    def forward(self, x: torch.Tensor, patch_embed: nn.Module) -> torch.Tensor:
        gate = torch.sigmoid(self.moe(x))  # [B, C, 1, 1]
        kept = patch_embed(self.zip_rgbx(x * gate))  # [B, h, w, D]
        novel = x * (1 - gate)
        per_channel = [embed(novel[:, i:i + 1]) for i, embed in enumerate(self.group_patch_embedding)]
        mixed = self.fc(torch.stack(per_channel, dim=-1).permute(0, 2, 3, 1, 4))  # [B, h, w, D, 1]
        return kept + mixed[..., 0]


class PreConvProjector(nn.Module):
    """Two plain convolutions in front of the patch embedding (``proj_type='preconvk3n2d64'``)."""

    def __init__(self, in_chans: int, kernel_size: int = 3, width: int = 64):
        super().__init__()
        self.zip_proj = nn.Sequential(
            nn.Conv2d(in_chans, width, kernel_size, padding=kernel_size // 2),
            nn.Conv2d(width, 3, 1),
        )

    def forward(self, x: torch.Tensor, patch_embed: nn.Module) -> torch.Tensor:
        return patch_embed(self.zip_proj(x))


def build_projector(proj_type: str, in_chans: int, embed_dim: int, patch_size: int = 16) -> nn.Module:
    if proj_type == "simcmf":
        return SimCMFProjector(in_chans, embed_dim, patch_size)
    if proj_type == "preconvk3n2d64":
        return PreConvProjector(in_chans, kernel_size=3, width=64)
    raise ValueError(f"proj_type must be one of {PROJECTORS}, got {proj_type!r}")
