"""The frozen MAE ViT backbone in timm's parameter layout.

An MAE pre-training checkpoint's encoder keys (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}``, ``norm``) load into this module unchanged. The
position embedding is stored in MAE's layout, ``[1, 1 + G*G, D]`` for the pre-training
grid G, and resized to the model's own token grid once, when weights are loaded or the
input size changes, never per frame.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping 16x16 patches -> tokens [B, S, D] (row-major over the grid)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        qkv = self.qkv(x).reshape(B, S, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, S, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU, as MAE
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """MAE layout [1, 1 + G*G, D] -> [1, gh*gw, D] for the target grid (cls dropped).

    Bicubic, align_corners=False, no antialias: what MAE's ``interpolate_pos_embed``
    does. Identity when the grid already matches.
    """
    tokens = pos_embed[:, 1:]
    g = math.isqrt(tokens.shape[1])
    if g * g != tokens.shape[1]:
        raise ValueError(
            f"pos_embed has {tokens.shape[1]} patch positions, not a square grid; "
            "expected the MAE layout [1, 1 + G*G, D]"
        )
    if (g, g) == tuple(grid):
        return tokens.clone()
    D = tokens.shape[-1]
    img = tokens.reshape(1, g, g, D).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False)
    return img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], D).to(pos_embed.dtype)


class VisionTransformer(nn.Module):
    """MAE ViT encoder without the cls token in the sequence (GoPT step 1)."""

    def __init__(
        self,
        img_size: tuple[int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        pretrain_grid: int = 14,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(3, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # MAE compatibility only
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid**2, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.register_buffer("pos_embed_grid", torch.zeros(1, self.grid[0] * self.grid[1], embed_dim),
                             persistent=False)
        self._register_load_state_dict_pre_hook(self._adopt_pos_embed_shape)
        self.register_load_state_dict_post_hook(lambda module, keys: module.refresh_pos_embed())

    def _adopt_pos_embed_shape(self, state_dict, prefix, *args):
        # A checkpoint pre-trained at another resolution has another G: take its shape.
        saved = state_dict.get(prefix + "pos_embed")
        if saved is not None and saved.shape != self.pos_embed.shape and saved.shape[-1] == self.embed_dim:
            self.pos_embed = nn.Parameter(torch.empty_like(saved), requires_grad=self.pos_embed.requires_grad)

    @torch.no_grad()
    def refresh_pos_embed(self) -> None:
        """Recompute the position embedding for the current grid (load or resize time)."""
        self.pos_embed_grid = resize_pos_embed(self.pos_embed.detach(), self.grid).to(self.pos_embed.device)

    def set_grid(self, grid: tuple[int, int]) -> None:
        self.grid = tuple(grid)
        self.refresh_pos_embed()

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(rgb) + self.pos_embed_grid.to(rgb.dtype)
