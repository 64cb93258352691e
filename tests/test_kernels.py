"""The fused Triton prompter kernels against their PyTorch references (kernels/reference.py).

Runs on a CUDA GPU, or on the CPU under the Triton interpreter (TRITON_INTERPRET=1; the
interpreter is ~1000x slower than PyTorch, so the shapes here are small but cover: ragged S,
C = 2 and 150, empty groups, exact ties, batch > 1, every d in {16, 32, 64}, every D in
{384, 768, 1024}, strided inputs, the split reduction of the merge, and GoPT end to end).

How outputs are compared. Both kernels contain an argmax. Assignments are read back from
the kernels and checked on their own: exactly equal to the reference's wherever the fp32
top-2 margin exceeds ``TIE_MARGIN`` (relative), and equal on >= 99% of tokens overall (a
different fp32 summation order may legitimately flip a true near-tie). The outputs are then
compared with the reference computed *for the kernel's assignments*, which is the plain
reference whenever the assignments agree (they do for every seed used here).
"""
import importlib
import math
import os
import re

import pytest
import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs a CUDA GPU or TRITON_INTERPRET=1", allow_module_level=True)
pytest.importorskip("triton", reason="Triton is not installed")
if os.environ.get("TRITON_INTERPRET") == "1":
    from kernels.group_merge_triton import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem(), allow_module_level=True)

import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels import tiles  # noqa: E402
from kernels.group_merge_triton import _group_merge, group_merge_triton  # noqa: E402
from kernels.prompt_inject_triton import _prompt_inject, prompt_inject_triton  # noqa: E402
from kernels.reference import (cross_attend, group_logits, group_merge_reference, merge_groups,  # noqa: E402
                               one_hot, prompt_inject_reference)
from models import GoPT, GoPTConfig  # noqa: E402
from tolerances import assert_outputs_close  # noqa: E402

gm_mod = importlib.import_module("kernels.group_merge_triton")
pi_mod = importlib.import_module("kernels.prompt_inject_triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_gpu_bf16 = pytest.mark.skipif(
    not torch.cuda.is_available() or INTERPRETED,
    reason="bf16 Triton needs a CUDA GPU: the interpreter computes bf16 tl.dot wrongly")
DTYPES = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=needs_gpu_bf16)]

# Assignments must match exactly where the reference's top-2 logit margin exceeds this
# fraction of the row's largest |logit|: the kernels' fp32 logits differ from the
# reference's by a few ulps of that scale (~1e-6 relative), so 1e-4 is a wide bound.
TIE_MARGIN = 1e-4
MIN_AGREEMENT = 0.99


def assert_assignments(got, logits):
    """``got`` [B, S] against the fp32 reference logits [B, S, C] (see the module docstring)."""
    ref = logits.argmax(-1)
    top2 = logits.topk(min(2, logits.shape[-1]), dim=-1).values
    margin = top2[..., 0] - top2[..., -1]
    sure = margin > TIE_MARGIN * logits.abs().amax(-1)
    got = got.long()
    assert torch.equal(got[sure], ref[sure]), f"{int((got[sure] != ref[sure]).sum())} clear assignments differ"
    agreement = (got == ref).float().mean().item()
    assert agreement >= MIN_AGREEMENT, f"assignments agree on {agreement:.2%} of tokens"


def linear_params(out_dim, in_dim, gen, scale=0.3):
    return [torch.randn(out_dim, in_dim, generator=gen) * scale, torch.randn(out_dim, generator=gen) * scale]


def to(ts, dtype):
    return [t.to(device=DEVICE, dtype=dtype) for t in ts]


def upcast(ts):
    return [t.float() for t in ts]


# ---- group merge (CUP eq. 8-10) ---------------------------------------------------------------------

def merge_inputs(B, S, C, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, S, d, generator=g)
    c = torch.randn(B, C, d, generator=g)
    weights = [t for _ in "qkvo" for t in linear_params(d, d, g)]
    return to([a, c, *weights], dtype)


def merge_logits(a, c, q_w, q_b, k_w, k_b, *_):
    """The reference's fp32 eq. 8 logits [B, S, C]."""
    return group_logits(*upcast([a, c, q_w, q_b, k_w, k_b]))


def merge_given(idx, a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b):
    """The reference's eq. 10 for given assignments ``idx`` [B, S]."""
    a, c, v_w, v_b, o_w, o_b = upcast([a, c, v_w, v_b, o_w, o_b])
    return merge_groups(one_hot(idx.long(), c.shape[1], torch.float32), a, c, v_w, v_b, o_w, o_b)


def run_merge(args, **knobs):
    B, S = args[0].shape[:2]
    assign = torch.full((B, S), -1, dtype=torch.int32, device=DEVICE)
    return _group_merge(*args, assign_out=assign, **knobs), assign


# (B, S, C, d, knobs): ragged S against the block, several programs per sample (the split
# reduction plus epilogue launch) and one (the fused epilogue), C = 2 and 150, each d.
MERGE_CASES = [
    (2, 37, 5, 16, dict(block_s=16, tokens_per_prog=32)),  # 2 programs per sample, last one ragged
    (3, 70, 2, 32, dict()),  # one program per sample, one ragged block
    (2, 45, 150, 64, dict(block_s=16, tokens_per_prog=16)),  # 3 programs, most groups empty
    (2, 300, 40, 32, dict()),  # the shipped blocking: 2 programs of 256 tokens, blocks of 64
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,S,C,d,knobs", MERGE_CASES)
def test_group_merge_matches_reference(B, S, C, d, knobs, dtype):
    args = merge_inputs(B, S, C, d, dtype, seed=S + C)
    P, assign = run_merge(args, **knobs)
    assert_assignments(assign, merge_logits(*args))
    assert_outputs_close(P, merge_given(assign, *args).to(dtype), dtype)
    if torch.equal(assign.long(), merge_logits(*args).argmax(-1)):
        assert_outputs_close(P, group_merge_reference(*args), dtype)
    # the public entry point and the dispatcher run the same kernel
    if not knobs:
        assert torch.equal(group_merge_triton(*args), P)
    assert torch.equal(kernels.group_merge(*args, backend="triton"), group_merge_triton(*args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_group_merge_empty_groups_get_only_o_bias(dtype):
    """20 tokens over 150 groups: most groups are empty and must come out as c' + o.bias, with
    no trace of v's bias (which is made large so a leak could not hide)."""
    args = merge_inputs(2, 20, 150, 32, dtype, seed=7)
    args[7] = args[7] + 4.0  # v bias
    P, assign = run_merge(args)
    counts = one_hot(assign.long(), 150, torch.float32).sum(1)  # [B, C]
    empty = counts == 0
    assert empty.sum() >= 2 * 130
    c, o_b = args[1].float(), args[9].float()
    expected_empty = (c + o_b).to(dtype)
    assert torch.equal(P[empty], expected_empty[empty])  # both round the same fp32 sum c' + o.bias
    assert_outputs_close(P, group_merge_reference(*args), dtype)


def test_group_merge_projects_after_the_mean():
    """The kernel averages a' per group and projects once (v is affine, a group's weights sum
    to one); eq. 10 as written projects every token and then averages. Same answer, empty
    groups included, checked against the as-written form in float64."""
    args = merge_inputs(2, 41, 9, 16, torch.float32, seed=11)
    a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b = [t.double().cpu() for t in args]
    P, assign = run_merge(args, block_s=16, tokens_per_prog=16)
    g = assign.long().cpu()
    expected = torch.empty_like(c)
    for b in range(c.shape[0]):
        for j in range(c.shape[1]):
            members = (g[b] == j).nonzero().flatten()
            mean_v = (F.linear(a[b, members], v_w, v_b).mean(0) if len(members)
                      else torch.zeros(c.shape[-1], dtype=torch.float64))
            expected[b, j] = c[b, j] + F.linear(mean_v, o_w, o_b)
    assert (g[..., None] == torch.arange(9)).sum(1).eq(0).any(), "the case needs an empty group"
    assert (P.double().cpu() - expected).abs().max() <= 1e-5 * expected.abs().max()


def dyadic(shape, gen, lo=-4, hi=5, denom=4):
    """Small multiples of 1/4: every product and sum below stays exact in fp32 (and fp16), so
    equal logits are exactly equal whatever the summation order."""
    return torch.randint(lo, hi, shape, generator=gen).float() / denom


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_group_merge_ties_go_to_the_lowest_group(dtype):
    g = torch.Generator().manual_seed(3)
    B, S, C, d = 2, 40, 6, 16
    a, c = dyadic((B, S, d), g), dyadic((B, C, d), g)
    c[:, 3] = c[:, 1]  # duplicated group tokens: groups 1 and 3 tie for every token
    c[:, 5] = c[:, 0]
    weights = [dyadic((d, d), g, -2, 3) if i % 2 == 0 else dyadic((d,), g) for i in range(8)]
    args = to([a, c, *weights], dtype)
    logits = merge_logits(*args)
    top = logits.amax(-1, keepdim=True)
    tied = (logits == top).sum(-1) > 1
    assert tied.float().mean() > 0.2, "the case needs many exact ties at the top"
    lowest = (logits == top).float().argmax(-1)  # first maximal index
    highest = C - 1 - (logits == top).flip(-1).float().argmax(-1)
    P, assign = run_merge(args, block_s=16, tokens_per_prog=16)
    assert torch.equal(assign.long(), lowest)
    assert_outputs_close(P, group_merge_reference(*args), dtype)
    # the tie-break is visible in P: taking the highest tied group would change it
    wrong = merge_given(highest, *args).to(dtype)
    assert (P.float() - wrong.float()).abs().max() > 0.1


def test_group_merge_is_deterministic_and_batch_invariant():
    args = merge_inputs(4, 100, 40, 32, torch.float32, seed=5)
    P1 = _group_merge(*args, block_s=16, tokens_per_prog=32)
    P2 = _group_merge(*args, block_s=16, tokens_per_prog=32)
    assert torch.equal(P1, P2)
    alone = _group_merge(args[0][2:3], args[1][2:3], *args[2:], block_s=16, tokens_per_prog=32)
    assert torch.equal(alone, P1[2:3])


def test_group_merge_strided_inputs_as_cup_passes_them():
    """CUP splits Z' = [a'; c'] along the token axis, so a' and c' arrive as non-contiguous views."""
    args = merge_inputs(2, 30, 7, 16, torch.float32, seed=9)
    z = torch.cat([args[0], args[1]], dim=1)
    a_view, c_view = z[:, :30], z[:, 30:]
    assert not a_view.is_contiguous() and not c_view.is_contiguous()
    P = group_merge_triton(*args)
    assert torch.equal(group_merge_triton(a_view, c_view, *args[2:]), P)
    a_t = args[0].transpose(1, 2).contiguous().transpose(1, 2)  # unit stride along tokens
    assert torch.equal(group_merge_triton(a_t, *args[1:]), P)
    expanded = args[1][:1].expand(2, -1, -1)
    assert_outputs_close(group_merge_triton(args[0], expanded, *args[2:]),
                         group_merge_reference(args[0], expanded, *args[2:]), torch.float32)


def test_group_merge_zero_tokens():
    args = merge_inputs(2, 0, 5, 16, torch.float32)
    assert_outputs_close(group_merge_triton(*args), (args[1] + args[9]), torch.float32)


# ---- prompt cross-attention + injection (ACP eq. 11-14, eq. 3) --------------------------------------

def inject_inputs(B, S, C, d, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, S, D, generator=g)
    P = torch.randn(B, C, d, generator=g)
    down = linear_params(d, D, g, scale=1 / math.sqrt(D))
    small = [t for _ in "qkvo" for t in linear_params(d, d, g)]
    up = linear_params(D, d, g, scale=0.1)
    return to([f, P, *down, *small, *up], dtype)


def inject_logits(f, P, down_w, down_b, q_w, q_b, k_w, k_b, *_):
    """The reference's fp32 eq. 11 logits q(r_i) . k(P_j), [B, S, C]."""
    f, P, down_w, down_b, q_w, q_b, k_w, k_b = upcast([f, P, down_w, down_b, q_w, q_b, k_w, k_b])
    return group_logits(cross_attend(f, P, down_w, down_b), P, q_w, q_b, k_w, k_b)


def inject_given(idx, f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b):
    """The reference's eq. 12-14 and 3 for given group-to-token assignments ``idx`` [B, S]."""
    dtype = f.dtype
    f, P, down_w, down_b, v_w, v_b, o_w, o_b, up_w, up_b = upcast([f, P, down_w, down_b, v_w, v_b, o_w, o_b,
                                                                   up_w, up_b])
    r = cross_attend(f, P, down_w, down_b)
    p = r + one_hot(idx.long(), P.shape[1], torch.float32) @ F.linear(F.linear(P, v_w, v_b), o_w, o_b)
    return (f * (1 + F.linear(p, up_w, up_b))).to(dtype)


def run_inject(args, **knobs):
    B, S = args[0].shape[:2]
    assign = torch.full((B, S), -1, dtype=torch.int32, device=DEVICE)
    return _prompt_inject(*args, assign_out=assign, **knobs), assign


# (B, S, C, d, D, knobs): ragged S against BLOCK_S, ragged D against BLOCK_D (384 = 256 + 128
# masked), C = 2 and 150, every d and every D.
INJECT_CASES = [
    (2, 19, 5, 16, 384, dict(block_s=16, block_d=256)),
    (1, 33, 2, 32, 768, dict()),
    (2, 10, 150, 64, 1024, dict()),
    (3, 70, 9, 32, 768, dict()),  # the shipped blocking: 2 blocks of 64 tokens, chunks of 128
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,S,C,d,D,knobs", INJECT_CASES)
def test_prompt_inject_matches_reference(B, S, C, d, D, knobs, dtype):
    args = inject_inputs(B, S, C, d, D, dtype, seed=S + C)
    out, assign = run_inject(args, **knobs)
    logits = inject_logits(*args)
    assert_assignments(assign, logits)
    assert_outputs_close(out, inject_given(assign, *args), dtype)
    if torch.equal(assign.long(), logits.argmax(-1)):
        assert_outputs_close(out, prompt_inject_reference(*args), dtype)
    assert torch.equal(kernels.prompt_inject(*args, backend="triton"), prompt_inject_triton(*args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("C,knobs", [(4, dict()), (40, dict(block_c=16))])
def test_prompt_inject_ties_go_to_the_lowest_group(dtype, C, knobs):
    """k ignores P's last coordinate (zero column), and group j + C/2 differs from group j only
    there: their k(P) rows, hence their logits, are exactly equal, while their o(v(P)) differ,
    so the tie-break shows in the output. With C = 40 in chunks of 16 groups the two members of
    every tie sit in different chunks."""
    g = torch.Generator().manual_seed(4)
    B, S, d, D = 2, 24, 16, 384
    f = torch.randn(B, S, D, generator=g)
    P = dyadic((B, C, d), g)
    half = C // 2
    P[:, half:] = P[:, :half].clone()
    P[:, half:, -1] += 1.0
    down = linear_params(d, D, g, scale=1 / math.sqrt(D))
    q = linear_params(d, d, g)
    k = [dyadic((d, d), g, -2, 3), dyadic((d,), g)]
    k[0][:, -1] = 0
    v, o = linear_params(d, d, g), linear_params(d, d, g)
    up = linear_params(D, d, g, scale=0.1)
    args = to([f, P, *down, *q, *k, *v, *o, *up], dtype)
    logits = inject_logits(*args)
    top = logits.amax(-1, keepdim=True)
    assert ((logits == top).sum(-1) > 1).all(), "every token's best group must be an exact tie"
    lowest = (logits == top).float().argmax(-1)
    highest = C - 1 - (logits == top).flip(-1).float().argmax(-1)
    out, assign = run_inject(args, **knobs)
    assert torch.equal(assign.long(), lowest)
    assert_outputs_close(out, prompt_inject_reference(*args), dtype)
    wrong = inject_given(highest, *args)
    assert (out.float() - wrong.float()).abs().max() > 0.05


def test_prompt_inject_untrained_up_projection_is_identity():
    """acp.up zero-initialised: f * (1 + 0) == f exactly, in every dtype the test can run."""
    args = inject_inputs(2, 21, 9, 32, 384, torch.float16, seed=2)
    args[-2], args[-1] = torch.zeros_like(args[-2]), torch.zeros_like(args[-1])
    assert torch.equal(prompt_inject_triton(*args), args[0])


def test_prompt_inject_strided_tokens_and_determinism():
    args = inject_inputs(2, 18, 7, 16, 384, torch.float32, seed=6)
    out = prompt_inject_triton(*args)
    wide = torch.cat([args[0], args[0]], dim=-1)[..., :384]  # token stride 768
    assert not wide.is_contiguous()
    assert torch.equal(prompt_inject_triton(wide, *args[1:]), out)
    # the layout the first prompter receives: patch_embed(x).flatten(2).transpose(1, 2)
    transposed = args[0].transpose(1, 2).contiguous().transpose(1, 2)
    assert transposed.stride() == (18 * 384, 1, 18)
    assert torch.equal(prompt_inject_triton(transposed, *args[1:]), out)
    assert torch.equal(prompt_inject_triton(*args), out)
    alone = prompt_inject_triton(args[0][1:], args[1][1:], *args[2:])
    assert torch.equal(alone, out[1:])


# ---- every tile of kernels/tiles.py ------------------------------------------------------------------

def table_tiles(*kernels):
    """One (arch, dtype, C_PAD) for each distinct combination of tiles the table gives ``kernels``
    (fp32 / fp16: the interpreter cannot run bf16), as pytest params."""
    seen = {}
    for arch in tiles.ARCHS:
        for dtype in ("fp32", "fp16"):
            for c_pad in (16, 32, 64, 128, 256):
                key = [dtype]
                for kernel in kernels:
                    tile = tiles.lookup(kernel, arch, dtype, c_pad)
                    key += [tile.num_warps, tile.num_stages, *sorted(tiles.tile_constexprs(tile, c_pad).items())]
                seen.setdefault(tuple(key), (arch, dtype, c_pad))
    return [pytest.param(*v, id=f"sm{v[0]}-{v[1]}-cpad{v[2]}") for v in seen.values()]


TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@pytest.mark.parametrize("arch,dtype,c_pad", table_tiles("group_merge", "group_merge_epilogue"))
def test_group_merge_every_tile_matches_reference_and_is_batch_invariant(arch, dtype, c_pad):
    """The target's tile at a ragged S of several programs per sample (the split reduction and the
    row-blocked epilogue): reference parity, bitwise repeatability, a sample alone == in a batch."""
    tile = tiles.merge_tile(arch, dtype, c_pad)
    C, S = c_pad // 2 + 3, 2 * tile.constexprs["TOKENS_PER_PROG"] + 21
    args = merge_inputs(3, S, C, 32, TORCH_DTYPES[dtype], seed=c_pad)
    P, assign = run_merge(args, arch=arch)
    assert_assignments(assign, merge_logits(*args))
    assert_outputs_close(P, merge_given(assign, *args).to(args[0].dtype), args[0].dtype)
    assert torch.equal(_group_merge(*args, arch=arch), P)
    alone = _group_merge(args[0][1:2], args[1][1:2], *args[2:], arch=arch)
    assert torch.equal(alone, P[1:2])


@pytest.mark.parametrize("arch,dtype,c_pad", table_tiles("prompt_inject"))
def test_prompt_inject_every_tile_matches_reference_and_is_batch_invariant(arch, dtype, c_pad):
    """The target's tile with ragged S, several D chunks and (C_PAD > 16) several group chunks:
    reference parity, bitwise repeatability, a sample alone == in a batch."""
    tile = tiles.inject_tile(arch, dtype, c_pad)
    C = 11 if c_pad == 16 else 2 * tiles.tile_constexprs(tile, c_pad)["BLOCK_C"] + 5
    S = 2 * tile.constexprs["BLOCK_S"] + 7
    args = inject_inputs(2, S, C, 32, 384, TORCH_DTYPES[dtype], seed=c_pad + 1)
    out, assign = run_inject(args, arch=arch)
    assert_assignments(assign, inject_logits(*args))
    assert_outputs_close(out, inject_given(assign, *args), args[0].dtype)
    assert torch.equal(_prompt_inject(*args, arch=arch), out)
    alone = _prompt_inject(args[0][1:], args[1][1:], *args[2:], arch=arch)
    assert torch.equal(alone, out[1:])


# ---- input validation -------------------------------------------------------------------------------

def test_invalid_inputs_raise_clear_errors():
    m = merge_inputs(2, 10, 5, 16, torch.float32)
    with pytest.raises(ValueError, match=r"c must have shape \[2, 5, 16\]"):
        group_merge_triton(m[0], m[1][:, :, :8], *m[2:])
    with pytest.raises(ValueError, match="k_w must have shape"):
        group_merge_triton(*m[:4], m[4][:, :8], *m[5:])
    with pytest.raises(ValueError, match="share one dtype"):
        group_merge_triton(m[0].half(), *m[1:])
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        group_merge_triton(*[t.double() for t in m])
    with pytest.raises(ValueError, match="v_w must be contiguous"):
        group_merge_triton(*m[:6], m[6].t(), *m[7:])
    with pytest.raises(ValueError, match="prompt width d"):
        group_merge_triton(*merge_inputs(1, 4, 3, 24, torch.float32))
    with pytest.raises(ValueError, match="number of groups C"):
        group_merge_triton(*merge_inputs(1, 4, 300, 16, torch.float32))
    with pytest.raises(ValueError, match=r"a must be \[B, S, d\]"):
        group_merge_triton(m[0][0], *m[1:])
    p = inject_inputs(1, 5, 3, 16, 384, torch.float32)
    with pytest.raises(ValueError, match=r"up_w must have shape \[384, 16\]"):
        prompt_inject_triton(*p[:12], p[12][:100], p[13])
    with pytest.raises(ValueError, match=r"down_w must have shape"):
        prompt_inject_triton(p[0], p[1], p[2][:, :10], *p[3:])
    if DEVICE == "cuda":
        with pytest.raises(ValueError, match="one device"):
            prompt_inject_triton(p[0].cpu(), *p[1:])
    if INTERPRETED:
        with pytest.raises(ValueError, match="bfloat16 is not supported under TRITON_INTERPRET"):
            prompt_inject_triton(*[t.bfloat16() for t in p])


def test_an_interpreter_that_cannot_run_the_kernels_says_why(monkeypatch):
    """Triton 3.6's interpreter with NumPy >= 2.4 stops at the first range loop with a TypeError
    about 0-dimensional arrays; the kernels refuse that combination first, naming the fix."""
    import numpy as np
    import triton

    m = merge_inputs(1, 8, 3, 16, torch.float32)
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(np, "__version__", "2.4.1")
    message = "Triton 3.6.0's interpreter cannot run with NumPy 2.4.1 .* use numpy<2.4 or triton>=3.7"
    assert re.fullmatch(message, gm_mod.interpreter_problem())
    if INTERPRETED:
        with pytest.raises(ValueError, match="group_merge: " + message):
            group_merge_triton(*m)
    for triton_version, numpy_version in (("3.7.1", "2.4.1"), ("3.6.0", "2.3.5"), ("3.9.0", "2.5.2")):
        monkeypatch.setattr(triton, "__version__", triton_version)
        monkeypatch.setattr(np, "__version__", numpy_version)
        assert gm_mod.interpreter_problem() is None


# ---- GoPT end to end ---------------------------------------------------------------------------------

def tiny_gopt(dtype):
    cfg = GoPTConfig(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(32, 48),
                     prompt_dim=16)
    model = GoPT(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random values everywhere, the zero-initialised up-projections included
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.backbone.refresh_pos_embed()
    return model.eval().to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gopt_triton_backend_matches_torch(dtype, monkeypatch):
    model = tiny_gopt(dtype)
    g = torch.Generator().manual_seed(1)
    rgb, aux = (torch.randn(2, ch, 32, 48, generator=g).to(DEVICE, dtype) for ch in (3, 1))
    with torch.no_grad():
        model.kernel_backend = "torch"
        ref = model(rgb, aux).float()
        calls = {"merge": 0, "inject": 0}

        def counted(fn, key):
            def wrapper(*args):
                calls[key] += 1
                return fn(*args)
            return wrapper

        monkeypatch.setattr(gm_mod, "group_merge_triton", counted(gm_mod.group_merge_triton, "merge"))
        monkeypatch.setattr(pi_mod, "prompt_inject_triton", counted(pi_mod.prompt_inject_triton, "inject"))
        model.kernel_backend = "triton"
        out = model(rgb, aux).float()
    assert calls == {"merge": 2, "inject": 2}, "the triton backend must run both kernels at every prompter"
    # logits: the prompters' differences (fp32 rounding; fp16 adds one-ulp flips of 16-bit
    # activations, 2^-10 relative) pass through two blocks and the head: allow 1e-4 (fp32) /
    # 4e-3 (fp16, a few fp16 ulps) of max |logit|
    scale = ref.abs().max()
    tol = {torch.float32: 1e-4, torch.float16: 4e-3}[dtype]
    assert (out - ref).abs().max() <= tol * scale
    # label maps: identical wherever the reference's top-2 margin exceeds the logit tolerance
    labels, ref_labels = out.argmax(1), ref.argmax(1)
    top2 = ref.topk(2, dim=1).values
    sure = (top2[:, 0] - top2[:, 1]) > 2 * tol * scale
    assert sure.float().mean() > 0.9
    assert torch.equal(labels[sure], ref_labels[sure])
    assert (labels == ref_labels).float().mean() >= 0.999
    if dtype == torch.float32:
        assert torch.equal(labels, ref_labels)


def test_dispatchers_survive_repeated_triton_calls():
    """The kernel modules must not shadow the package's dispatch functions after first use."""
    import types

    torch.manual_seed(0)
    a, c = torch.randn(1, 5, 16), torch.randn(1, 3, 16)
    w = [torch.randn(16, 16), torch.randn(16)] * 4
    for _ in range(2):
        kernels.group_merge(a, c, *w, backend="triton")
    assert not isinstance(kernels.group_merge, types.ModuleType)
    assert not isinstance(kernels.prompt_inject, types.ModuleType)
