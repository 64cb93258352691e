"""Plain PyTorch references for the two fused prompter kernels (GoPT eq. 8-10, 11-14, 3).

These are the inference formulations the model's "torch" backend runs and the ONNX
export traces, and the ground truth the Triton kernels are tested against. Every
function upcasts to float32, so the argmax inputs are always fp32 logits (an fp16 or
bf16 argmax flips assignments at near-ties), and casts the result back to the input
dtype. Assignments are one-hot matrices built as ``idx[..., None] == arange(C)``, which
stays dynamic in C under every ONNX exporter (``F.one_hot`` does not under dynamo).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# Called with every hard-assignment logits tensor when set (export checks use it to find
# near-ties); None in normal use.
assignment_observer = None


def hard_assign(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the last axis, lowest index on ties."""
    if assignment_observer is not None:
        assignment_observer(logits)
    return logits.argmax(-1)


def one_hot(idx: torch.Tensor, num: int, dtype: torch.dtype) -> torch.Tensor:
    """[..] int -> [.., num] one-hot in ``dtype``."""
    return (idx[..., None] == torch.arange(num, device=idx.device)).to(dtype)


def merge_groups(assign, a, c, v_w, v_b, o_w, o_b):
    """Eq. 10 for an assignment matrix ``assign`` [B, S, C] (one-hot in value).

    ``P_j = c_j + o(mean_{i in j} v(a_i))`` with the mean of an empty group being zero.
    v is affine and a group's weights sum to one, so ``mean(v(a)) = v(mean(a))``: the
    merge averages the d-wide tokens first and projects C rows instead of S. For an
    empty group ``v(0)`` would leak v's bias in, so its projection is masked to zero
    and only o's bias remains.
    """
    counts = assign.sum(1)  # [B, C]
    mean = assign.transpose(1, 2) @ a / counts.clamp(min=1)[..., None]
    projected = F.linear(mean, v_w, v_b) * (counts > 0)[..., None].to(a.dtype)
    return c + F.linear(projected, o_w, o_b)


def group_logits(a, c, q_w, q_b, k_w, k_b):
    """Eq. 8: A_ij = q(a_i) . k(c_j), [B, S, C]."""
    return F.linear(a, q_w, q_b) @ F.linear(c, k_w, k_b).transpose(1, 2)


def group_merge_reference(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b):
    """CUP at inference (eq. 8-10): aux tokens a' [B, S, d], group tokens c' [B, C, d] -> P [B, C, d].

    Hard assignment ``g_i = argmax_j A_ij`` (lowest j on ties), computed in fp32.
    """
    dtype = a.dtype
    a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b = (
        t.float() for t in (a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b)
    )
    idx = hard_assign(group_logits(a, c, q_w, q_b, k_w, k_b))
    P = merge_groups(one_hot(idx, c.shape[1], a.dtype), a, c, v_w, v_b, o_w, o_b)
    return P.to(dtype)


def cross_attend(f, P, down_w, down_b):
    """Eq. 12, 14: r_i = softmax(down(f_i) P^T / sqrt(d)) P, [B, S, d]."""
    q = F.linear(f, down_w, down_b)
    attn = torch.softmax(q @ P.transpose(1, 2) / math.sqrt(P.shape[-1]), dim=-1)
    return attn @ P


def prompt_inject_reference(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b):
    """ACP at inference plus injection (eq. 11-14, 3): f [B, S, D], P [B, C, d] -> f * (1 + up(p)).

    ``h_i = argmax_j q(r_i) . k(P_j)`` (fp32, lowest j on ties), ``p_i = r_i + o(v(P_{h_i}))``.
    o(v(P_j)) depends only on the group, so it is computed for the C groups and gathered.
    """
    dtype = f.dtype
    f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b = (
        t.float() for t in (f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b)
    )
    r = cross_attend(f, P, down_w, down_b)
    idx = hard_assign(group_logits(r, P, q_w, q_b, k_w, k_b))
    group_values = F.linear(F.linear(P, v_w, v_b), o_w, o_b)  # [B, C, d]
    p = r + one_hot(idx, P.shape[1], f.dtype) @ group_values
    return (f * (1 + F.linear(p, up_w, up_b))).to(dtype)
