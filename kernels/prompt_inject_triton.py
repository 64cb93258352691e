"""Fused ACP cross-attention + prompt injection (GoPT eq. 11-14 and eq. 3) in Triton.

``prompt_inject_triton(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b)``
has the signature and semantics of ``reference.prompt_inject_reference``: RGB tokens
f [B, S, D], group prompts P [B, C, d] -> ``f * (1 + up(p))`` [B, S, D] in f's dtype.

Design
------
Grid ``(cdiv(S, BLOCK_S), B)``: one program per block of BLOCK_S tokens of one sample.
Every token is independent, so there is no cross-program reduction at all: results are
deterministic and do not depend on the batch or the blocking of other tokens.

* Pass 1 over D in chunks of BLOCK_D: ``q = down(f_blk)`` [BLOCK_S, d] accumulates in fp32.
* Groups in chunks of BLOCK_C (so registers and shared memory do not grow with C, up to
  256): ``r = softmax(q P^T / sqrt(d)) P`` as an online softmax (running max and sum,
  chunks in index order), then per chunk ``k(P_c)`` and ``o(v(P_c))`` [BLOCK_C, d], fp32
  logits ``q(r) . k(P_j)`` (groups >= C at -inf), the chunk's first argmax and its group's
  value (a one-hot product: an exact gather); a later chunk replaces the running best only
  if strictly greater, so ``h`` is the lowest index among exact ties, as ``torch.argmax``.
  ``p = r + o(v(P_h))``. Recomputing the group projections per token block costs
  ``3 C d^2`` FMAs, a few percent of the block's ``2 BLOCK_S D d``, and saves a launch.
* Pass 2 over D: ``u = up(p)`` chunk by chunk, ``out = f * (1 + u)``, stored once.

Layouts: f and P may have any strides (all three are kernel arguments). The first prompter
gets f straight from the patch embedding, ``flatten(2).transpose(1, 2)``, i.e. strides
(S D, 1, S), and reads it in place without a copy; every later block hands over a contiguous f.
The output is a new contiguous [B, S, D] tensor.

Tiles (BLOCK_S, BLOCK_D, BLOCK_C, warps, stages) come from ``kernels.tiles`` for the device's
target and the dtype.

Memory traffic: f is read from DRAM once and written once. Pass 2 re-reads the block's
[BLOCK_S, D] tile that pass 1 loaded a moment earlier; the first load is marked
``evict_last`` and the second ``evict_first`` so the re-read is served by L2 (a resident
[BLOCK_S, D] register tile would need D padded to a power of two, 768 -> 1024, and would
cost occupancy). Bytes per call: ``2 * B * S * D * elt`` (f in, out) + ``B * C * d * elt``
(P) + weights ``(2 D d + D + d + 4 (d^2 + d)) * elt``.

Precision: fp32 accumulation everywhere and fp32 logits for the argmax. With 16-bit
inputs the down-projection runs on tensor cores in the input dtype (16-bit x 16-bit
products are exact in fp32, accumulation fp32: what the reference computes after
upcasting); the up-projection multiplies the fp32 p by 16-bit weights, so p is split as
``p = p_hi + p_lo`` (both in the input dtype) and ``u = p_hi W + p_lo W`` on tensor cores,
which keeps ~2x the input dtype's mantissa, far below the output's own rounding (a
prompt |p| beyond the 16-bit range, 65504 in fp16, would overflow p_hi; the fp32 reference
would then still overflow f * (1 + u) for any f of that model's scale). Every
product with fp32 operands uses ``input_precision="ieee"``: TF32 would round operands
to 10 mantissa bits, flip near-tie assignments and break fp32 parity ("tf32x3" is the
near-fp32 alternative, selectable through ``_prompt_inject(fp32_precision=...)``).
On sm_100, Triton 3.7 lowers an fp32 product of 64 rows or more with an operand upcast
in the kernel from fp16 / bf16 to TF32 tensor cores despite ``"ieee"``; so no fp32 product here has
more than 32 rows: the group projections are formed transposed (d rows), and the token
products have BLOCK_S rows, at most 32 on sm_100a (``kernels.tiles``). The online softmax
differs from the reference's one-pass softmax by fp32 rounding only. ``python -m
kernels.aot`` rejects any build whose PTX still has a TF32 product.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import tiles
from .group_merge_triton import FP32_DOT_PRECISION, FP_FUSION, check_groups, check_tensors, device_arch


@triton.jit
def _load_wt(w_ptr, offs_d, DP: tl.constexpr):
    """W^T [d_in, d_out] of an nn.Linear weight W [d_out, d_in] (row-major, contiguous)."""
    return tl.load(w_ptr + offs_d[None, :] * DP + offs_d[:, None])


@triton.jit
def _load_w(w_ptr, offs_d, DP: tl.constexpr):
    """An nn.Linear weight W [d_out, d_in] (row-major, contiguous)."""
    return tl.load(w_ptr + offs_d[:, None] * DP + offs_d[None, :])


@triton.jit
def _load_groups(P_rows, offs_c, offs_d, C, stride_pc, stride_pd):
    """P rows ``offs_c`` [BLOCK_C, d] in fp32, rows >= C zero."""
    return tl.load(P_rows + offs_c[:, None] * stride_pc + offs_d[None, :] * stride_pd,
                   mask=(offs_c < C)[:, None], other=0.0).to(tl.float32)


@triton.jit
def _prompt_inject_kernel(
    f_ptr, P_ptr, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b,
    out_ptr, assign_ptr,
    S, C, D, inv_sqrt_d,
    stride_fb, stride_fs, stride_fd, stride_pb, stride_pc, stride_pd,
    DP: tl.constexpr, C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_C: tl.constexpr, NATIVE_DOT: tl.constexpr, STORE_ASSIGN: tl.constexpr, PREC: tl.constexpr,
):
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    smask = offs_s < S
    offs_d = tl.arange(0, DP)
    P_rows = P_ptr + b * stride_pb

    # pass 1: q = down(f), [BLOCK_S, d]
    f_rows = f_ptr + b.to(tl.int64) * stride_fb + offs_s[:, None].to(tl.int64) * stride_fs
    acc = tl.zeros([BLOCK_S, DP], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_D):
        offs_k = k0 + tl.arange(0, BLOCK_D)
        kmask = offs_k < D
        x = tl.load(f_rows + offs_k[None, :] * stride_fd, mask=smask[:, None] & kmask[None, :], other=0.0,
                    eviction_policy="evict_last")
        w = tl.load(down_w + offs_d[None, :] * D + offs_k[:, None], mask=kmask[:, None], other=0.0)  # [BLOCK_D, d]
        if NATIVE_DOT:
            acc = tl.dot(x, w, acc)  # exact 16-bit products, fp32 accumulation
        else:
            acc = tl.dot(x, w, acc, input_precision=PREC)
    q = acc + tl.load(down_b + offs_d).to(tl.float32)[None, :]

    # eq. 12, 14: r = softmax(q P^T / sqrt(d)) P, online over chunks of BLOCK_C groups
    m = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    den = tl.zeros([BLOCK_S], dtype=tl.float32)
    r = tl.zeros([BLOCK_S, DP], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        Pc = _load_groups(P_rows, offs_c, offs_d, C, stride_pc, stride_pd)
        scores = tl.dot(q, tl.trans(Pc), input_precision=PREC) * inv_sqrt_d
        scores = tl.where((offs_c < C)[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        scale = tl.exp(m - m_new)  # 0 at the first chunk
        e = tl.exp(scores - m_new[:, None])
        den = den * scale + tl.sum(e, axis=1)
        r = r * scale[:, None] + tl.dot(e, Pc, input_precision=PREC)
        m = m_new
    r = r / den[:, None]

    # eq. 11: h = argmax_j q(r) . k(P_j), fp32, lowest index on exact ties; with it the gathered
    # group value o(v(P_h)). Group projections are formed transposed, W P_c^T [d, BLOCK_C], so
    # no fp32 product has more than max(d, BLOCK_S) rows (see "Precision").
    qr = (tl.dot(r, _load_wt(q_w, offs_d, DP).to(tl.float32), input_precision=PREC)
          + tl.load(q_b + offs_d).to(tl.float32)[None, :])
    wk = _load_w(k_w, offs_d, DP).to(tl.float32)
    wv = _load_w(v_w, offs_d, DP).to(tl.float32)
    wo = _load_w(o_w, offs_d, DP).to(tl.float32)
    bk = tl.load(k_b + offs_d).to(tl.float32)
    bv = tl.load(v_b + offs_d).to(tl.float32)
    bo = tl.load(o_b + offs_d).to(tl.float32)
    best = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    h = tl.zeros([BLOCK_S], dtype=tl.int32)
    value = tl.zeros([BLOCK_S, DP], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        Pc_t = tl.trans(_load_groups(P_rows, offs_c, offs_d, C, stride_pc, stride_pd))  # [d, BLOCK_C]
        k_t = tl.dot(wk, Pc_t, input_precision=PREC) + bk[:, None]  # k(P_c)^T
        logits = tl.dot(qr, k_t, input_precision=PREC)
        logits = tl.where((offs_c < C)[None, :], logits, float("-inf"))
        chunk_best = tl.max(logits, axis=1)
        chunk_h = tl.min(tl.where(logits == chunk_best[:, None], offs_c[None, :], C_PAD), axis=1)
        values_t = tl.dot(wo, tl.dot(wv, Pc_t, input_precision=PREC) + bv[:, None],
                          input_precision=PREC) + bo[:, None]  # o(v(P_c))^T [d, BLOCK_C]
        onehot = (chunk_h[:, None] == offs_c[None, :]).to(tl.float32)
        chunk_value = tl.dot(onehot, tl.trans(values_t), input_precision=PREC)  # exact gather
        better = chunk_best > best  # strictly: an equal maximum in a later chunk has a higher index
        best = tl.where(better, chunk_best, best)
        h = tl.where(better, chunk_h, h)
        value = tl.where(better[:, None], chunk_value, value)
    if STORE_ASSIGN:
        tl.store(assign_ptr + b * S + offs_s, h, mask=smask)
    p = r + value
    if NATIVE_DOT:
        p_hi = p.to(f_ptr.dtype.element_ty)
        p_lo = (p - p_hi.to(tl.float32)).to(f_ptr.dtype.element_ty)

    # pass 2 (eq. 3): out = f * (1 + up(p))
    o_rows = out_ptr + b.to(tl.int64) * S * D + offs_s[:, None].to(tl.int64) * D
    for k0 in range(0, D, BLOCK_D):
        offs_k = k0 + tl.arange(0, BLOCK_D)
        kmask = offs_k < D
        m2 = smask[:, None] & kmask[None, :]
        x = tl.load(f_rows + offs_k[None, :] * stride_fd, mask=m2, other=0.0, eviction_policy="evict_first")
        w = tl.load(up_w + offs_k[None, :] * DP + offs_d[:, None], mask=kmask[None, :], other=0.0)  # [d, BLOCK_D]
        if NATIVE_DOT:
            u = tl.dot(p_lo, w, tl.dot(p_hi, w))
        else:
            u = tl.dot(p, w, input_precision=PREC)
        u = u + tl.load(up_b + offs_k, mask=kmask, other=0.0).to(tl.float32)[None, :]
        y = x.to(tl.float32) * (1 + u)
        tl.store(o_rows + offs_k[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)


def _prompt_inject(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b, *,
                   assign_out=None, arch=None, block_s=None, block_d=None, block_c=None,
                   fp32_precision=FP32_DOT_PRECISION):
    """The kernel with its knobs: ``assign_out`` (int32 [B, S]) receives the assignments h;
    ``arch`` picks the tile of another target (``kernels.tiles``; default: the device's);
    ``block_s`` / ``block_d`` / ``block_c`` override the tile's blocking (powers of two >= 16)."""
    kernel = "prompt_inject"
    if not (isinstance(f, torch.Tensor) and f.ndim == 3 and isinstance(P, torch.Tensor) and P.ndim == 3):
        raise ValueError(f"{kernel}: f must be [B, S, D] and P [B, C, d], got "
                         f"{list(getattr(f, 'shape', []))} and {list(getattr(P, 'shape', []))}")
    B, S, D = f.shape
    C, d = P.shape[1], P.shape[2]
    named = dict(f=f, P=P, down_w=down_w, down_b=down_b, q_w=q_w, q_b=q_b, k_w=k_w, k_b=k_b,
                 v_w=v_w, v_b=v_b, o_w=o_w, o_b=o_b, up_w=up_w, up_b=up_b)
    shapes = dict(P=(B, C, d), down_w=(d, D), down_b=(d,), up_w=(D, d), up_b=(D,),
                  **{f"{n}_w": (d, d) for n in "qkvo"}, **{f"{n}_b": (d,) for n in "qkvo"})
    dtype = check_tensors(kernel, named, shapes, strided=("f", "P"))
    C_PAD = check_groups(kernel, C, d)
    if D < 1:
        raise ValueError(f"{kernel}: token width D must be >= 1, got {D}")
    if assign_out is not None and (assign_out.shape != (B, S) or assign_out.dtype != torch.int32
                                   or not assign_out.is_contiguous() or assign_out.device != f.device):
        raise ValueError(f"{kernel}: assign_out must be a contiguous int32 [B, S] tensor on {f.device}")
    out = torch.empty((B, S, D), dtype=dtype, device=f.device)
    if B == 0 or S == 0:
        return out
    tile = tiles.inject_tile(arch or device_arch(f.device), tiles.dtype_name(dtype), C_PAD)
    block_s = block_s or tile.constexprs["BLOCK_S"]
    block_d = block_d or tile.constexprs["BLOCK_D"]
    block_c = block_c or tiles.tile_constexprs(tile, C_PAD)["BLOCK_C"]
    grid = (triton.cdiv(S, block_s), B)
    _prompt_inject_kernel[grid](
        f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b,
        out, assign_out if assign_out is not None else out,
        S, C, D, 1.0 / d ** 0.5,
        *f.stride(), *P.stride(),
        DP=d, C_PAD=C_PAD, BLOCK_S=block_s, BLOCK_D=block_d, BLOCK_C=block_c,
        NATIVE_DOT=dtype != torch.float32, STORE_ASSIGN=assign_out is not None, PREC=fp32_precision,
        num_warps=tile.num_warps, num_stages=tile.num_stages, enable_fp_fusion=FP_FUSION,
    )
    return out


def prompt_inject_triton(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b):
    """ACP cross-attention + injection (eq. 11-14, 3), fused: see the module docstring and
    ``reference.prompt_inject_reference`` for the semantics."""
    return _prompt_inject(f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b)


def prompt_inject_bytes(B: int, S: int, C: int, d: int, D: int, elt: int) -> int:
    """Bytes the fused kernel must move at least: f read once, the output written once, P and
    the weights read."""
    return (2 * B * S * D + B * C * d + 2 * D * d + D + d + 4 * (d * d + d)) * elt
