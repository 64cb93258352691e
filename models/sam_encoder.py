"""SAM's ViT image encoder (ViTDet style) with SimCMF's projector and tuning add-ons.

Parameter names follow segment-anything (``patch_embed.proj``, ``pos_embed``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, attn.rel_pos_h, attn.rel_pos_w, norm2,
mlp.lin1, mlp.lin2}``, ``neck.{0..3}``) plus SimCMF's ``projector.*``,
``blocks.{i}.attn.lora_{q,v}_{a,b}`` and ``blocks.{i}.Adapter_mlp.{down_proj, up_proj}``.

Blocks attend within 14x14 windows (the token grid zero-padded to a multiple of 14)
except the global blocks. Every attention adds decomposed relative-position terms. The
input size is fixed, so each attention's relative-position gather indices are computed
once at construction and the tables are never resized.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .projector import build_projector

ADAPTER_SCALE = 0.1  # SimCMF's MLP adapter output is scaled by 0.1


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [B, C, H, W] (SAM's neck and decoder layout: [C] parameters)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Adapter(nn.Module):
    """SimCMF's ``Adapter_mlp``: down -> ReLU -> up, times 0.1, added beside a block's MLP."""

    def __init__(self, dim: int, bottleneck: int, scale: float = ADAPTER_SCALE):
        super().__init__()
        self.scale = scale
        self.down_proj = nn.Linear(dim, bottleneck)
        self.up_proj = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(F.relu(self.down_proj(x))) * self.scale


def add_lora(module: nn.Module, in_dim: int, out_dim: int, rank: int) -> None:
    """Low-rank q and v updates ``B A x`` (no scaling), named as in SimCMF's checkpoints."""
    module.lora_q_a = nn.Linear(in_dim, rank, bias=False)
    module.lora_q_b = nn.Linear(rank, out_dim, bias=False)
    module.lora_v_a = nn.Linear(in_dim, rank, bias=False)
    module.lora_v_b = nn.Linear(rank, out_dim, bias=False)


@torch.no_grad()
def merged_lora(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The q and v weight updates ``B @ A`` (computed in float64), and removes the branches."""
    dq = module.lora_q_b.weight.double() @ module.lora_q_a.weight.double()
    dv = module.lora_v_b.weight.double() @ module.lora_v_a.weight.double()
    for name in ("lora_q_a", "lora_q_b", "lora_v_a", "lora_v_b"):
        delattr(module, name)
    module.lora_rank = 0
    return dq, dv


def rel_pos_index(size: int) -> torch.Tensor:
    """Table row for each (query, key) position pair along one axis: q - k + size - 1."""
    pos = torch.arange(size)
    return pos[:, None] - pos[None, :] + (size - 1)


class Attention(nn.Module):
    """Multi-head self-attention on a [B, H, W, D] grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, grid: int, lora_rank: int = 0):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.register_buffer("rel_index", rel_pos_index(grid), persistent=False)
        self.lora_rank = lora_rank
        if lora_rank:
            add_lora(self, dim, dim, lora_rank)

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, H, W, D] -> [B * heads, H * W, D / heads]."""
        B, H, W, D = t.shape
        t = t.reshape(B, H * W, self.num_heads, D // self.num_heads)
        return t.permute(0, 2, 1, 3).reshape(B * self.num_heads, H * W, -1)

    def rel_pos_bias(self, q: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Height and width terms [N, H, W, H] and [N, H, W, W] for queries q [N, H * W, c]."""
        N, _, c = q.shape
        Rh = self.rel_pos_h[self.rel_index]  # [H, H, c]: query row, key row
        Rw = self.rel_pos_w[self.rel_index]  # [W, W, c]
        r_q = q.reshape(N, H, W, c)
        rel_h = torch.matmul(r_q.permute(1, 0, 2, 3).reshape(H, N * W, c), Rh.transpose(1, 2))
        rel_w = torch.matmul(r_q.permute(2, 0, 1, 3).reshape(W, N * H, c), Rw.transpose(1, 2))
        rel_h = rel_h.reshape(H, N, W, H).permute(1, 0, 2, 3)
        rel_w = rel_w.reshape(W, N, H, W).permute(1, 2, 0, 3)
        return rel_h, rel_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, D = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        if self.lora_rank:
            q = q + self.heads(self.lora_q_b(self.lora_q_a(x)))
            v = v + self.heads(self.lora_v_b(self.lora_v_a(x)))
        attn = (q * self.scale) @ k.transpose(-2, -1)
        rel_h, rel_w = self.rel_pos_bias(q, H, W)
        attn = attn.view(-1, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        attn = attn.view(-1, H * W, H * W).softmax(dim=-1)
        out = (attn @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, D)
        return self.proj(out)

    def fold_lora(self) -> None:
        """qkv weight rows of q and v += B A; the LoRA branches are removed."""
        if not self.lora_rank:
            return
        dq, dv = merged_lora(self)
        D = self.proj.weight.shape[0]
        with torch.no_grad():
            w = self.qkv.weight
            w[:D] = (w[:D].double() + dq).to(w.dtype)
            w[2 * D:] = (w[2 * D:].double() + dv).to(w.dtype)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, D] -> [B * nW, window, window, D], zero-padding H and W to multiples of window."""
    B, H, W, D = x.shape
    pad_h, pad_w = -H % window, -W % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, D)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, D)


def window_unpartition(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """Inverse of window_partition, cropping the padding."""
    Hp, Wp = H + (-H % window), W + (-W % window)
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.view(B, Hp // window, Wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W] if (Hp, Wp) != (H, W) else x


class Block(nn.Module):
    """Pre-norm transformer block; window > 0 attends within windows, 0 globally."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int, grid: int,
                 lora_rank: int = 0, adapter_dim: int = 0):
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, window or grid, lora_rank)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        if adapter_dim:
            self.Adapter_mlp = Adapter(dim, adapter_dim)
        self.has_adapter = bool(adapter_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window:
            H, W = x.shape[1], x.shape[2]
            x = window_unpartition(self.attn(window_partition(x, self.window)), self.window, H, W)
        else:
            x = self.attn(x)
        x = shortcut + x
        if self.has_adapter:  # the adapter reads the post-attention residual, beside the MLP
            return x + self.mlp(self.norm2(x)) + self.Adapter_mlp(x)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """16x16 patches of a 3-channel image -> tokens [B, H/16, W/16, D] (channels last)."""

    def __init__(self, embed_dim: int, patch_size: int = 16, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoder(nn.Module):
    """C-channel image [B, C, S, S] -> embeddings [B, out_chans, S/16, S/16]."""

    def __init__(self, in_chans: int, proj_type: str, img_size: int = 1024, patch_size: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 out_chans: int = 256, window_size: int = 14, global_attn_indexes=(2, 5, 8, 11),
                 lora_rank: int = 0, adapter_dim: int = 0):
        super().__init__()
        grid = img_size // patch_size
        self.img_size = img_size
        self.in_chans = in_chans
        self.projector = build_projector(proj_type, in_chans, embed_dim, patch_size)
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, grid,
                  lora_rank, adapter_dim)
            for i in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projector(x, self.patch_embed) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))

    def fold_lora(self) -> None:
        for block in self.blocks:
            block.attn.fold_lora()
