"""Fused CUP group merge (GoPT eq. 8-10 at inference) in Triton.

``group_merge_triton(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b) -> P`` has the signature
and semantics of ``reference.group_merge_reference``: aux tokens a' [B, S, d], group
tokens c' [B, C, d], the cup.q/k/v/o weights ([d, d] / [d]) -> P [B, C, d] in a's dtype.

Design
------
Grid ``(B, SPLIT)``, ``SPLIT = cdiv(S, TOKENS_PER_PROG)``: program (b, s) owns a fixed,
contiguous range of ``TOKENS_PER_PROG`` tokens of sample b and walks it in blocks of
``BLOCK_S`` tokens, in order. Per program:

* prologue: ``K = k(c')`` [C_PAD, d] (C padded to a power of two >= 16, padded rows
  masked to zero) is computed in-kernel and stays in registers with the q weights;
* per block: ``Q = q(a_blk)`` [BLOCK_S, d], logits ``A = Q K^T`` [BLOCK_S, C_PAD] in fp32
  (padded groups at -inf), ``g = first argmax`` (lowest index on exact ties, as
  ``torch.argmax``), then ``sums += onehot(g)^T a_blk`` [C_PAD, d] and
  ``counts += colsum(onehot)`` [C_PAD] (int32). Both accumulators live in registers.

The logits are computed in the reference's association order, ``(a Wq^T + bq) . k(c')``,
not with q folded into a [d, C] matrix: the fold is one [BLOCK_S, d] x [d, d] product
cheaper, but it re-associates the sums and moves near-tie assignments away from the
reference for no measurable gain in a kernel whose cost is loading a'.

Epilogue (eq. 10). ``v`` is affine and the one-hot weights of a non-empty group sum to
one, so ``mean_i v(a_i) = v(mean_i a_i)`` (linearity): the kernel averages the d-wide
tokens first and projects C rows instead of S, ``P = c' + o(mask * v(sums / max(n, 1)))``,
where ``mask = n > 0`` zeroes an empty group's projection, otherwise ``v(0) = bv`` would
leak v's bias into it: an empty group gets exactly ``c' + o.bias``.

With SPLIT == 1 the epilogue runs in the same launch. Otherwise every program writes
its partial [C_PAD, d] sums and [C_PAD] counts to a small fp32/int32 workspace and a
second, tiny launch, grid ``(B, C_PAD / BLOCK_C)`` (each group row is independent), adds
the SPLIT partials in index order and applies the epilogue to BLOCK_C rows per program.

Tiles (BLOCK_S, TOKENS_PER_PROG, BLOCK_C, warps, stages) come from ``kernels.tiles`` for
the device's target and the dtype.

Layouts: a' and c' may have any strides (CUP hands over views of Z' = [a'; c'], split along
the token axis); weights and biases must be contiguous. P is a new contiguous tensor.

Determinism: no atomics. Every reduction has a fixed order: blocks in token order
inside a program, partials in split order in the epilogue. SPLIT depends on S and the
tile only (not on B), so a sample's result is bitwise reproducible run to run and does not
depend on the batch it is in.

Precision: inputs fp32, fp16 or bf16; everything accumulates in fp32 and every argmax
reads fp32 logits. With 16-bit inputs the two token-sized products (``a Wq^T`` and
``onehot^T a``) run on tensor cores in the input dtype: products of two 16-bit values
are exact in fp32 and accumulation is fp32, which is what the reference computes after
upcasting. Every product with an fp32 operand uses ``input_precision="ieee"``: TF32
would round operands to 10 mantissa bits and flip near-tie assignments against the fp32
reference. On sm_100, Triton 3.7 nevertheless lowers an fp32 product of 64 rows or more
with an operand upcast in the kernel from fp16 / bf16 to TF32 tensor cores (``tcgen05.mma
kind::tf32``), so no fp32 product here has more than 32 rows (for d = 32): ``k(c')`` and
the epilogue's projections are formed transposed (d rows), and ``python -m kernels.aot``
rejects any build whose PTX still contains a TF32 product.

Bytes moved (the lower bound the benchmark reports against):
``B * S * d * elt`` (a') + ``2 * B * C * d * elt`` (c' in, P out) + weights, plus
``2 * B * SPLIT * C_PAD * (d + 1) * 4`` for the workspace when SPLIT > 1.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import torch
import triton
import triton.language as tl

from . import tiles

MAX_GROUPS = tiles.MAX_C_PAD  # C_PAD register tiles beyond this spill; use the torch backend
PROMPT_DIMS = (16, 32, 64, 128)  # tl.dot needs power-of-two dims >= 16
FP32_DOT_PRECISION = "ieee"  # see the module docstring; "tf32x3" is the near-fp32 alternative
# Fused multiply-add contraction, stated rather than left to Triton's default: Triton 3.9 warns
# that its default changes (off from 3.10), and the kernels are checked against the reference
# with it on, as every Triton from 3.6 to 3.9 compiles them by default.
FP_FUSION = True

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ---- input checks shared by both kernels ----------------------------------------------------------

def interpreting() -> bool:
    """Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = (int(v) for v in re.findall(r"\d+", version)[:2])
    return major, minor


def interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run the kernels in this environment, or None.

    Triton 3.6's interpreter turns a scalar it holds as a 1-element array into a Python int
    with ``int(array)`` (the bounds of every ``range`` loop on a runtime value), which NumPy
    refuses from 2.4 on; Triton 3.7 squeezes the array first. Compiled kernels never take
    that path: the compiler lowers such a loop to ``scf.for`` on its own values."""
    if _major_minor(triton.__version__) < (3, 7) and _major_minor(np.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter cannot run with NumPy {np.__version__} (its range "
                "loops call int() on 1-element arrays, which NumPy 2.4 refuses); use numpy<2.4 or triton>=3.7")
    return None


def check_tensors(kernel: str, named: dict[str, torch.Tensor], shapes: dict[str, tuple],
                  strided: tuple[str, ...]) -> torch.dtype:
    """ValueError unless every tensor has its shape, one dtype (fp32/fp16/bf16), one device
    Triton can run on, and a usable layout: the ``strided`` activations may have any strides
    (the kernels take all three), weights and biases must be contiguous."""
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{kernel}: {name} must be a torch.Tensor, got {type(t).__name__}")
    for name, want in shapes.items():
        got = tuple(named[name].shape)
        if got != want:
            raise ValueError(f"{kernel}: {name} must have shape {list(want)}, got {list(got)}")
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) != 1:
        listing = ", ".join(f"{n} {t.dtype}" for n, t in named.items())
        raise ValueError(f"{kernel}: all inputs must share one dtype, got {listing}")
    dtype = dtypes.pop()
    if dtype not in _DTYPES:
        raise ValueError(f"{kernel}: dtype must be float32, float16 or bfloat16, got {dtype}")
    devices = {t.device for t in named.values()}
    if len(devices) != 1:
        listing = ", ".join(f"{n} {t.device}" for n, t in named.items())
        raise ValueError(f"{kernel}: all inputs must be on one device, got {listing}")
    device = devices.pop()
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        raise ValueError(f"{kernel}: inputs are on {device}; the Triton kernel needs CUDA tensors "
                         "(or CPU tensors with TRITON_INTERPRET=1)")
    if interpreting() and interpreter_problem():
        raise ValueError(f"{kernel}: {interpreter_problem()}")
    if interpreting() and dtype == torch.bfloat16:
        raise ValueError(f"{kernel}: bfloat16 is not supported under TRITON_INTERPRET=1 (the interpreter "
                         "computes bf16 tl.dot wrongly); use the torch backend or a CUDA device")
    for name, t in named.items():
        if name not in strided and not t.is_contiguous():
            raise ValueError(f"{kernel}: {name} must be contiguous (strides {list(t.stride())} for shape "
                             f"{list(t.shape)})")
    return dtype


def device_arch(device) -> str:
    """The tile table's target for ``device``: its compute capability on CUDA, the generic
    target under the interpreter."""
    if getattr(device, "type", str(device)) == "cuda":
        return tiles.arch_of_capability(*torch.cuda.get_device_capability(device))
    return tiles.GENERIC_ARCH


def supported(C: int, d: int) -> bool:
    """The kernels tile these sizes (group count C, prompt width d); otherwise use the reference."""
    return d in PROMPT_DIMS and 1 <= C <= MAX_GROUPS


def check_groups(kernel: str, C: int, d: int) -> int:
    """C_PAD, the padded group count, or ValueError for sizes the kernels do not tile."""
    if d not in PROMPT_DIMS:
        raise ValueError(f"{kernel}: prompt width d must be one of {PROMPT_DIMS}, got {d}; "
                         "use the torch backend")
    if not 1 <= C <= MAX_GROUPS:
        raise ValueError(f"{kernel}: the number of groups C must be in [1, {MAX_GROUPS}], got {C}; "
                         "use the torch backend")
    return max(16, triton.next_power_of_2(C))


# ---- kernel ---------------------------------------------------------------------------------------

@triton.jit
def _load_wt(w_ptr, offs_d, DP: tl.constexpr):
    """W^T [d_in, d_out] of an nn.Linear weight W [d_out, d_in] (row-major, contiguous)."""
    return tl.load(w_ptr + offs_d[None, :] * DP + offs_d[:, None])


@triton.jit
def _merge_epilogue(sums, counts, c, v_w, v_b, o_w, o_b, offs_d, DP: tl.constexpr, PREC: tl.constexpr):
    """Eq. 10 from the group sums: P = c' + o(mask * v(sums / max(n, 1))), mask = n > 0.
    The projections are formed transposed, W X^T [d, rows], so they have d rows whatever the
    number of groups (see "Precision")."""
    mean_t = tl.trans(sums / tl.maximum(counts, 1).to(tl.float32)[:, None])  # [d, rows]
    wv = tl.load(v_w + offs_d[:, None] * DP + offs_d[None, :]).to(tl.float32)  # [d_out, d_in]
    wo = tl.load(o_w + offs_d[:, None] * DP + offs_d[None, :]).to(tl.float32)
    bv = tl.load(v_b + offs_d).to(tl.float32)
    bo = tl.load(o_b + offs_d).to(tl.float32)
    # linearity: v(mean of a) == mean of v(a) for a non-empty group; an empty group's
    # v(0) = bv must not enter, so its projection is zeroed before o.
    proj_t = tl.dot(wv, mean_t, input_precision=PREC) + bv[:, None]
    proj_t = tl.where((counts > 0)[None, :], proj_t, 0.0)
    return c + tl.trans(tl.dot(wo, proj_t, input_precision=PREC) + bo[:, None])


@triton.jit
def _group_merge_kernel(
    a_ptr, c_ptr, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b,
    out_ptr, part_sum_ptr, part_cnt_ptr, assign_ptr,
    S, C,
    stride_ab, stride_as, stride_ad, stride_cb, stride_cc, stride_cd,
    DP: tl.constexpr, C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, TOKENS_PER_PROG: tl.constexpr,
    FUSED_EPILOGUE: tl.constexpr, NATIVE_DOT: tl.constexpr, STORE_ASSIGN: tl.constexpr, PREC: tl.constexpr,
):
    b = tl.program_id(0)
    sp = tl.program_id(1)  # this program's token range, of num_programs(1) = SPLIT
    offs_d = tl.arange(0, DP)
    offs_c = tl.arange(0, C_PAD)
    cmask = offs_c < C

    # prologue: k(c') for this sample, [C_PAD, d] fp32, padded rows zero
    c = tl.load(c_ptr + b * stride_cb + offs_c[:, None] * stride_cc + offs_d[None, :] * stride_cd,
                mask=cmask[:, None], other=0.0).to(tl.float32)
    wk = tl.load(k_w + offs_d[:, None] * DP + offs_d[None, :]).to(tl.float32)  # [d_out, d_in]
    bk = tl.load(k_b + offs_d).to(tl.float32)
    k_t = tl.dot(wk, tl.trans(c), input_precision=PREC) + bk[:, None]  # k(c')^T [d, C_PAD], d rows
    bq = tl.load(q_b + offs_d).to(tl.float32)
    if NATIVE_DOT:
        wq_t = _load_wt(q_w, offs_d, DP)  # 16-bit operand for the tensor cores
    else:
        wq_t = _load_wt(q_w, offs_d, DP).to(tl.float32)

    sums = tl.zeros([C_PAD, DP], dtype=tl.float32)
    counts = tl.zeros([C_PAD], dtype=tl.int32)
    start = sp * TOKENS_PER_PROG
    end = tl.minimum(start + TOKENS_PER_PROG, S)
    a_base = a_ptr + b.to(tl.int64) * stride_ab
    for s0 in range(start, end, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        smask = offs_s < end
        a = tl.load(a_base + offs_s[:, None].to(tl.int64) * stride_as + offs_d[None, :] * stride_ad,
                    mask=smask[:, None], other=0.0)
        if NATIVE_DOT:
            q = tl.dot(a, wq_t)  # exact 16-bit products, fp32 accumulation
        else:
            q = tl.dot(a, wq_t, input_precision=PREC)
        q = q + bq[None, :]
        logits = tl.dot(q, k_t, input_precision=PREC)  # eq. 8, fp32 [BLOCK_S, C_PAD]
        logits = tl.where(cmask[None, :], logits, float("-inf"))
        best = tl.max(logits, axis=1)
        # eq. 9 without noise: the lowest index among the exact maxima
        g = tl.min(tl.where(logits == best[:, None], offs_c[None, :], C_PAD), axis=1)
        onehot = (g[:, None] == offs_c[None, :]) & smask[:, None]
        counts += tl.sum(onehot.to(tl.int32), axis=0)
        if NATIVE_DOT:
            sums = tl.dot(tl.trans(onehot.to(a.dtype)), a, sums)  # 0/1 weights: exact products
        else:
            sums = tl.dot(tl.trans(onehot.to(tl.float32)), a, sums, input_precision=PREC)
        if STORE_ASSIGN:
            tl.store(assign_ptr + b * S + offs_s, g, mask=smask)

    if FUSED_EPILOGUE:  # SPLIT == 1: this program saw every token of the sample
        P = _merge_epilogue(sums, counts, c, v_w, v_b, o_w, o_b, offs_d, DP, PREC)
        tl.store(out_ptr + b * C * DP + offs_c[:, None] * DP + offs_d[None, :],
                 P.to(out_ptr.dtype.element_ty), mask=cmask[:, None])
    else:
        part = (b * tl.num_programs(1) + sp) * C_PAD
        tl.store(part_sum_ptr + (part + offs_c[:, None]) * DP + offs_d[None, :], sums)
        tl.store(part_cnt_ptr + part + offs_c, counts)


@triton.jit
def _group_merge_epilogue_kernel(
    c_ptr, v_w, v_b, o_w, o_b, out_ptr, part_sum_ptr, part_cnt_ptr,
    C, split, stride_cb, stride_cc, stride_cd,
    DP: tl.constexpr, C_PAD: tl.constexpr, BLOCK_C: tl.constexpr, PREC: tl.constexpr,
):
    b = tl.program_id(0)
    offs_d = tl.arange(0, DP)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # this program's group rows
    cmask = offs_c < C
    sums = tl.zeros([BLOCK_C, DP], dtype=tl.float32)
    counts = tl.zeros([BLOCK_C], dtype=tl.int32)
    for sp in range(split):  # fixed order: deterministic
        part = (b * split + sp) * C_PAD
        sums += tl.load(part_sum_ptr + (part + offs_c[:, None]) * DP + offs_d[None, :])
        counts += tl.load(part_cnt_ptr + part + offs_c)
    c = tl.load(c_ptr + b * stride_cb + offs_c[:, None] * stride_cc + offs_d[None, :] * stride_cd,
                mask=cmask[:, None], other=0.0).to(tl.float32)
    P = _merge_epilogue(sums, counts, c, v_w, v_b, o_w, o_b, offs_d, DP, PREC)
    tl.store(out_ptr + b * C * DP + offs_c[:, None] * DP + offs_d[None, :],
             P.to(out_ptr.dtype.element_ty), mask=cmask[:, None])


# ---- host side ------------------------------------------------------------------------------------

def _group_merge(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, *, assign_out=None, arch=None, block_s=None,
                 tokens_per_prog=None, fp32_precision=FP32_DOT_PRECISION):
    """The kernel with its knobs: ``assign_out`` (int32 [B, S]) receives the assignments g;
    ``arch`` picks the tile of another target (``kernels.tiles``; default: the device's);
    ``block_s`` / ``tokens_per_prog`` override the tile's blocking (multiples of 16)."""
    kernel = "group_merge"
    if not (isinstance(a, torch.Tensor) and a.ndim == 3 and isinstance(c, torch.Tensor) and c.ndim == 3):
        raise ValueError(f"{kernel}: a must be [B, S, d] and c [B, C, d], got "
                         f"{list(getattr(a, 'shape', []))} and {list(getattr(c, 'shape', []))}")
    B, S, d = a.shape
    C = c.shape[1]
    named = dict(a=a, c=c, q_w=q_w, q_b=q_b, k_w=k_w, k_b=k_b, v_w=v_w, v_b=v_b, o_w=o_w, o_b=o_b)
    shapes = dict(c=(B, C, d), **{f"{n}_w": (d, d) for n in "qkvo"}, **{f"{n}_b": (d,) for n in "qkvo"})
    dtype = check_tensors(kernel, named, shapes, strided=("a", "c"))
    C_PAD = check_groups(kernel, C, d)
    if assign_out is not None and (assign_out.shape != (B, S) or assign_out.dtype != torch.int32
                                   or not assign_out.is_contiguous() or assign_out.device != a.device):
        raise ValueError(f"{kernel}: assign_out must be a contiguous int32 [B, S] tensor on {a.device}")
    out = torch.empty((B, C, d), dtype=dtype, device=a.device)
    if B == 0:
        return out
    arch = arch or device_arch(a.device)
    tile = tiles.merge_tile(arch, tiles.dtype_name(dtype), C_PAD)
    block_s = block_s or tile.constexprs["BLOCK_S"]
    tokens_per_prog = tokens_per_prog or tile.constexprs["TOKENS_PER_PROG"]
    if block_s % 16 or tokens_per_prog % block_s:
        raise ValueError(f"{kernel}: block_s must be a multiple of 16 dividing tokens_per_prog")
    split = max(1, triton.cdiv(S, tokens_per_prog))
    fused = split == 1
    if not fused:
        part_sum = torch.empty((B, split, C_PAD, d), dtype=torch.float32, device=a.device)
        part_cnt = torch.empty((B, split, C_PAD), dtype=torch.int32, device=a.device)
    else:
        part_sum = part_cnt = out  # unused
    _group_merge_kernel[(B, split)](
        a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b,
        out, part_sum, part_cnt, assign_out if assign_out is not None else out,
        S, C, *a.stride(), *c.stride(),
        DP=d, C_PAD=C_PAD, BLOCK_S=block_s, TOKENS_PER_PROG=tokens_per_prog, FUSED_EPILOGUE=fused,
        NATIVE_DOT=dtype != torch.float32, STORE_ASSIGN=assign_out is not None, PREC=fp32_precision,
        num_warps=tile.num_warps, num_stages=tile.num_stages, enable_fp_fusion=FP_FUSION,
    )
    if not fused:
        etile = tiles.epilogue_tile(arch, tiles.dtype_name(dtype), C_PAD)
        block_c = tiles.tile_constexprs(etile, C_PAD)["BLOCK_C"]
        _group_merge_epilogue_kernel[(B, C_PAD // block_c)](
            c, v_w, v_b, o_w, o_b, out, part_sum, part_cnt,
            C, split, *c.stride(),
            DP=d, C_PAD=C_PAD, BLOCK_C=block_c, PREC=fp32_precision,
            num_warps=etile.num_warps, num_stages=etile.num_stages, enable_fp_fusion=FP_FUSION,
        )
    return out


def group_merge_triton(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b):
    """CUP hard group merge (eq. 8-10), fused: see the module docstring and
    ``reference.group_merge_reference`` for the semantics."""
    return _group_merge(a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b)


def group_merge_bytes(B: int, S: int, C: int, d: int, elt: int, arch: str = tiles.GENERIC_ARCH) -> int:
    """Bytes the fused merge must move at least on target ``arch``: a' read, c' read, P written,
    weights read, plus the fp32/int32 partials (written and read back) when S spans several
    programs."""
    C_PAD = max(16, triton.next_power_of_2(C))
    dtype = {4: "fp32", 2: "fp16"}[elt]
    split = max(1, math.ceil(S / tiles.merge_tile(arch, dtype, C_PAD).constexprs["TOKENS_PER_PROG"]))
    work = 2 * B * split * C_PAD * (d + 1) * 4 if split > 1 else 0
    return (B * S * d + 2 * B * C * d + 4 * (d * d + d)) * elt + work
