"""GoPT's grouping prompter: auxiliary embedding, class tokens, CUP and ACP (eq. 3-15).

At inference every assignment is a hard argmax (lowest index on ties) and the two
heavy steps run through ``kernels.group_merge`` / ``kernels.prompt_inject`` (PyTorch
reference or fused Triton). In training mode the assignments are Gumbel straight-through
one-hots (tau 1): one-hot in value, the soft assignment's gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.reference import cross_attend, group_logits, merge_groups, one_hot


def straight_through_assign(logits: torch.Tensor, noise: torch.Tensor | None = None,
                            tau: float = 1.0) -> torch.Tensor:
    """Training assignment (eq. 8-9): ``soft = softmax((logits + g) / tau)`` with Gumbel(0, 1)
    noise g; the value is the one-hot of its argmax, the gradient is the soft one's."""
    if noise is None:
        noise = -torch.empty_like(logits, dtype=torch.float32).exponential_().log()
    soft = torch.softmax((logits.float() + noise) / tau, dim=-1)
    hard = one_hot(soft.argmax(-1), soft.shape[-1], soft.dtype)
    return (hard - soft.detach() + soft).to(logits.dtype)


def _weights(*linears: nn.Linear):
    return [t for lin in linears for t in (lin.weight, lin.bias)]


class CUP(nn.Module):
    """Class-aware uni-modal prompter (eq. 4-10)."""

    def __init__(self, prompt_dim: int):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(prompt_dim, prompt_dim) for _ in range(4))

    def forward(self, a: torch.Tensor, c: torch.Tensor, backend: str):
        S = a.shape[1]
        z = torch.cat([a, c], dim=1)[:, None]  # one head of width d
        z = F.scaled_dot_product_attention(z, z, z)[:, 0]  # eq. 4-6, parameter-free
        a, c = z[:, :S], z[:, S:]
        if self.training:
            assign = straight_through_assign(group_logits(a, c, *_weights(self.q, self.k)))
            P = merge_groups(assign, a, c, *_weights(self.v, self.o))
        else:
            P = kernels.group_merge(a, c, *_weights(self.q, self.k, self.v, self.o), backend=backend)
        return a, P


class ACP(nn.Module):
    """Alignment-induced cross-modal prompter (eq. 11-14) with the injection of eq. 3."""

    def __init__(self, embed_dim: int, prompt_dim: int):
        super().__init__()
        self.down = nn.Linear(embed_dim, prompt_dim)
        self.q, self.k, self.v, self.o = (nn.Linear(prompt_dim, prompt_dim) for _ in range(4))
        self.up = nn.Linear(prompt_dim, embed_dim)
        nn.init.zeros_(self.up.weight)  # untrained prompter = plain foundation model
        nn.init.zeros_(self.up.bias)

    def forward(self, f: torch.Tensor, P: torch.Tensor, backend: str) -> torch.Tensor:
        if self.training:
            r = cross_attend(f, P, self.down.weight, self.down.bias)
            assign = straight_through_assign(group_logits(r, P, *_weights(self.q, self.k)))
            p = r + assign @ self.o(self.v(P))
            return f * (1 + self.up(p))
        return kernels.prompt_inject(
            f, P, *_weights(self.down, self.q, self.k, self.v, self.o, self.up), backend=backend)


class PrompterLayer(nn.Module):
    def __init__(self, embed_dim: int, prompt_dim: int):
        super().__init__()
        self.cup = CUP(prompt_dim)
        self.acp = ACP(embed_dim, prompt_dim)

    def forward(self, f, a, c, backend: str = "torch"):
        """(f, a, c) -> (f prompted, a' and P for the next prompter: eq. 15)."""
        a, P = self.cup(a, c, backend)
        return self.acp(f, P, backend), a, P


class Prompter(nn.Module):
    def __init__(self, embed_dim: int, prompt_dim: int, num_classes: int, aux_channels: int,
                 num_layers: int, patch_size: int = 16):
        super().__init__()
        self.aux_embed = nn.Conv2d(aux_channels, prompt_dim, patch_size, stride=patch_size)
        self.class_tokens = nn.Parameter(torch.empty(num_classes, prompt_dim))
        nn.init.trunc_normal_(self.class_tokens, std=0.02)
        self.layers = nn.ModuleList(PrompterLayer(embed_dim, prompt_dim) for _ in range(num_layers))

    def embed(self, aux: torch.Tensor):
        """Aux tokens a [B, S, d] (no position embedding) and group tokens c [B, C, d]."""
        a = self.aux_embed(aux).flatten(2).transpose(1, 2)
        c = self.class_tokens[None].expand(aux.shape[0], -1, -1).to(a.dtype)
        return a, c
