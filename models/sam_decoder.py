"""SAM's prompt encoder, two-way transformer and mask decoder, with SimCMF's add-ons.

Parameter names follow segment-anything (``prompt_encoder.pe_layer``,
``prompt_encoder.point_embeddings.{0..3}``, ``mask_decoder.transformer.layers.{i}.*``,
``mask_decoder.output_hypernetworks_mlps.{i}``, ...). The prompt encoder keeps its
mask-input branch (``mask_downscaling``) so SAM checkpoints load unchanged; SimCMF never
feeds a mask, so every image gets ``no_mask_embed``.

SimCMF prompts with points only: the user's clicks, then a padding point (0, 0) with label
-1 that gets ``not_a_point_embed``. It always reads mask token 0 (single-mask output),
so only that token's hypernetwork runs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sam_encoder import Adapter, LayerNorm2d, MLPBlock, add_lora, merged_lora


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) in [0, 1] through a fixed Gaussian matrix [2, dim / 2]."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [..., 2] normalised to [0, 1] -> [..., dim]."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, grid: int) -> torch.Tensor:
        """Encoding of every cell centre of a grid x grid map: [1, dim, grid, grid]."""
        G = self.positional_encoding_gaussian_matrix
        centres = (torch.arange(grid, device=G.device, dtype=G.dtype) + 0.5) / grid
        xy = torch.stack([centres[None, :].expand(grid, grid), centres[:, None].expand(grid, grid)], dim=-1)
        return self.encode(xy).permute(2, 0, 1)[None]


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int = 256, grid: int = 64, img_size: int = 1024, mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.grid = grid
        self.img_size = img_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2 and 3: box corners (unused by SimCMF)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Clicks [B, N, 2] (x, y in input pixels) and labels [B, N] -> sparse tokens [B, N + 1, dim].

        The padding point (0, 0) with label -1 is appended here. Label -1 tokens are
        ``not_a_point_embed`` alone; 0 and 1 add the negative / positive embedding to the
        position encoding of the pixel centre.
        """
        B = coords.shape[0]
        dtype = self.pe_layer.positional_encoding_gaussian_matrix.dtype
        coords = torch.cat([coords.to(dtype) + 0.5, coords.new_zeros(B, 1, 2, dtype=dtype)], dim=1)
        labels = torch.cat([labels, labels.new_full((B, 1), -1)], dim=1)[..., None]
        pe = self.pe_layer.encode(coords / self.img_size)
        out = torch.where(labels == -1, self.not_a_point_embed.weight, pe)
        out = torch.where(labels == 0, out + self.point_embeddings[0].weight, out)
        return torch.where(labels == 1, out + self.point_embeddings[1].weight, out)

    def dense_pe(self) -> torch.Tensor:
        return self.pe_layer.dense(self.grid)


class Attention(nn.Module):
    """Attention whose q / k / v projections may narrow the width (``downsample``)."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1, lora_rank: int = 0):
        super().__init__()
        self.num_heads = num_heads
        internal = dim // downsample
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)
        self.lora_rank = lora_rank
        if lora_rank:
            add_lora(self, dim, internal, lora_rank)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_in, v_in = q, v
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        if self.lora_rank:
            q = q + self.lora_q_b(self.lora_q_a(q_in))
            v = v + self.lora_v_b(self.lora_v_a(v_in))
        q, k, v = self.heads(q), self.heads(k), self.heads(v)
        attn = q @ k.permute(0, 1, 3, 2)
        attn = torch.softmax(attn / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))

    def fold_lora(self) -> None:
        """q_proj and v_proj weights += B A; the LoRA branches are removed."""
        if not self.lora_rank:
            return
        dq, dv = merged_lora(self)
        with torch.no_grad():
            for proj, delta in ((self.q_proj, dq), (self.v_proj, dv)):
                proj.weight.copy_((proj.weight.double() + delta).to(proj.weight.dtype))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens -> image, token MLP, image -> tokens (post-norm)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool,
                 lora_rank: int = 0, adapter_dim: int = 0, downsample: int = 2):
        super().__init__()
        self.self_attn = Attention(dim, num_heads, 1, lora_rank)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample, lora_rank)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        if adapter_dim:
            self.Adapter_mlp = Adapter(dim, adapter_dim)
        self.has_adapter = bool(adapter_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample, lora_rank)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(queries + query_pe, k, keys)
        adapter_out = self.Adapter_mlp(queries) if self.has_adapter else None  # reads queries before norm2
        queries = self.norm2(queries)
        queries = queries + self.mlp(queries)
        if adapter_out is not None:
            queries = queries + adapter_out
        queries = self.norm3(queries)

        q = queries + query_pe
        keys = keys + self.cross_attn_image_to_token(k, q, queries)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 lora_rank: int = 0, adapter_dim: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, i == 0, lora_rank, adapter_dim) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, 2, lora_rank)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """image [B, C, h, w], image_pe [1, C, h, w], tokens [B, T, C] -> (tokens, image tokens [B, hw, C])."""
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys

    def attentions(self):
        for layer in self.layers:
            yield from (layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token)
        yield self.final_attn_token_to_image


class MLP(nn.Module):
    """``layers.{i}`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """(image embedding, image pe, sparse tokens) -> (mask token 0's low-res logits, its IoU)."""

    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3, depth: int = 2, num_heads: int = 8,
                 mlp_dim: int = 2048, iou_head_hidden_dim: int = 256, iou_head_depth: int = 3,
                 lora_rank: int = 0, adapter_dim: int = 0):
        super().__init__()
        self.transformer = TwoWayTransformer(depth, dim, num_heads, mlp_dim, lora_rank, adapter_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor):
        """image [B, C, h, w], image_pe [1, C, h, w], sparse [B, T, C], dense [1 or B, C, 1 or h, 1 or w]
        -> (logits [B, 1, 4h, 4w], iou [B, 1])."""
        B = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(B, -1, -1), sparse], dim=1)
        src = image + dense
        b, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = self.output_hypernetworks_mlps[0](hs[:, 1])  # mask token 0 only
        _, c8, H, W = upscaled.shape
        logits = (hyper[:, None, :] @ upscaled.reshape(b, c8, H * W)).reshape(b, 1, H, W)
        iou = self.iou_prediction_head(hs[:, 0])[:, :1]
        return logits, iou

    def fold_lora(self) -> None:
        for attn in self.transformer.attentions():
            attn.fold_lora()
