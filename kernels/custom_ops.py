"""The two fused prompter steps as PyTorch custom ops, ``torch.ops.gopt.group_merge`` and
``torch.ops.gopt.prompt_inject``.

In eager mode they compute ``reference.group_merge_reference`` / ``prompt_inject_reference``;
their value is that ``torch.export`` keeps each as one node, which the fused ONNX export
(``python -m export.onnx CKPT --fused-kernels``) writes as one custom ONNX node: the TensorRT
plugins GoptGroupMerge / GoptPromptInject (``native/plugins/``) run them inside an engine.
The GoPT model uses them with ``kernel_backend="custom_op"``.
"""
from __future__ import annotations

import torch

from .reference import group_merge_reference, prompt_inject_reference


@torch.library.custom_op("gopt::group_merge", mutates_args=())
def group_merge(a: torch.Tensor, c: torch.Tensor, q_w: torch.Tensor, q_b: torch.Tensor, k_w: torch.Tensor,
                k_b: torch.Tensor, v_w: torch.Tensor, v_b: torch.Tensor, o_w: torch.Tensor,
                o_b: torch.Tensor) -> torch.Tensor:
    """a' [B, S, d], c' [B, C, d] and the CUP weights -> P [B, C, d]."""
    return group_merge_reference(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b)


@group_merge.register_fake
def _group_merge_shape(a, c, *weights):
    return torch.empty(c.shape, dtype=a.dtype, device=a.device)


@torch.library.custom_op("gopt::prompt_inject", mutates_args=())
def prompt_inject(f: torch.Tensor, P: torch.Tensor, down_w: torch.Tensor, down_b: torch.Tensor,
                  q_w: torch.Tensor, q_b: torch.Tensor, k_w: torch.Tensor, k_b: torch.Tensor,
                  v_w: torch.Tensor, v_b: torch.Tensor, o_w: torch.Tensor, o_b: torch.Tensor,
                  up_w: torch.Tensor, up_b: torch.Tensor) -> torch.Tensor:
    """f [B, S, D], P [B, C, d] and the ACP weights -> f * (1 + up(p)) [B, S, D]."""
    return prompt_inject_reference(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b)


@prompt_inject.register_fake
def _prompt_inject_shape(f, P, *weights):
    return torch.empty(f.shape, dtype=f.dtype, device=f.device)
