"""Tile configurations of the fused prompter kernels, per NVIDIA target and dtype.

One table, read by the Triton dispatchers (``group_merge_triton``, ``prompt_inject_triton``),
by the ahead-of-time compiler (``kernels.aot``) and, through ``manifest.json``, by native
launchers. A row is ``Tile(kernel, archs, dtypes, max_c_pad, constexprs, num_warps,
num_stages)``; the tile for (kernel, arch, dtype, C_PAD) is the FIRST row whose ``archs``
and ``dtypes`` contain the target's and whose ``max_c_pad`` >= C_PAD. The prompt width d
and the token width D never change the tile (d sets the ``DP`` constexpr, D only the loop
count), and neither does the batch or the token count S: S only decides the merge's
``FUSED_EPILOGUE`` (one program per sample covers all S tokens).

Today one tile per kernel and C_PAD range fits every target and dtype (``python -m
kernels.aot`` measures it: within shared memory, no spills, no TF32 products, at least
~10 merge and 38 inject programs at batch 1 for S = 1200), so the rows name all of them;
a row for a few targets or dtypes goes above the general row of the same kernel.

Targets are named as Triton compiles them: ``"80"`` (A100), ``"86"`` (RTX 30, A10),
``"87"`` (Jetson Orin), ``"89"`` (RTX 40, L4, L40), ``"90a"`` (H100, H200, GH200),
``"100a"`` (B200, GB200), ``"120a"`` (RTX 50, RTX PRO 6000). ``arch_of_capability`` maps a
device's compute capability to one of them.

The merge's token range per program, ``TOKENS_PER_PROG``, depends on C_PAD only: it
sets how a sample's tokens split over programs (grid ``(B, cdiv(S, tokens_per_prog))``)
and hence the fixed order of the fp32 reduction, so results are independent of the
batch; they are bitwise reproducible for one target, not across targets whose tiles
differ.
"""
from __future__ import annotations

from typing import NamedTuple

# Shared memory one block may use (opt-in maximum, bytes), from the CUDA programming guide's
# compute-capability table: 163 KB on sm_80 / sm_87, 99 KB on sm_86 / sm_89 / sm_120,
# 227 KB on sm_90 / sm_100.
SHARED_LIMIT = {
    "80": 166912, "86": 101376, "87": 166912, "89": 101376,
    "90a": 232448, "100a": 232448, "120a": 101376,
}
ARCHS = tuple(SHARED_LIMIT)
CAPABILITY = {arch: int(arch.rstrip("a")) for arch in ARCHS}
DTYPES = ("fp32", "fp16", "bf16")
KERNELS = ("group_merge", "group_merge_epilogue", "prompt_inject")
GENERIC_ARCH = "80"  # the tile the Triton interpreter runs unless told otherwise

ALL = ARCHS
BIT16 = ("fp16", "bf16")


class Tile(NamedTuple):
    kernel: str
    archs: tuple
    dtypes: tuple
    max_c_pad: int
    constexprs: dict  # the kernel's tile constexprs: BLOCK_S, BLOCK_D, BLOCK_C, TOKENS_PER_PROG
    num_warps: int
    num_stages: int


TILES = (
    # group merge: the [BLOCK_S, C_PAD] logits and the [C_PAD, d] sums stay in registers; short
    # token ranges per program give B * cdiv(S, TOKENS_PER_PROG) programs (19 at batch 1 for
    # S = 1200, C <= 64)
    Tile("group_merge", ALL, DTYPES, 64, dict(BLOCK_S=64, TOKENS_PER_PROG=64), 4, 2),
    Tile("group_merge", ALL, DTYPES, 128, dict(BLOCK_S=32, TOKENS_PER_PROG=64), 8, 2),
    Tile("group_merge", ALL, DTYPES, 256, dict(BLOCK_S=32, TOKENS_PER_PROG=128), 8, 2),
    # the merge's split epilogue: BLOCK_C group rows per program, grid (B, C_PAD / BLOCK_C)
    Tile("group_merge_epilogue", ALL, DTYPES, 256, dict(BLOCK_C=32), 4, 2),
    # prompt inject: one program per BLOCK_S tokens, groups in chunks of BLOCK_C
    Tile("prompt_inject", ALL, DTYPES, 256, dict(BLOCK_S=32, BLOCK_D=64, BLOCK_C=32), 8, 2),
)

MAX_C_PAD = 256


def arch_of_capability(major: int, minor: int) -> str:
    """The table's target for a device of compute capability (major, minor); ValueError below
    sm_80 (the kernels need bf16 and the sm_80 tensor-core instructions)."""
    cc = 10 * major + minor
    if cc < 80:
        raise ValueError(f"the fused kernels need compute capability >= 8.0, got {major}.{minor}")
    if cc >= 120:
        return "120a"
    if cc >= 100:
        return "100a"
    if cc >= 90:
        return "90a"
    if cc in (86, 87, 89):
        return str(cc)
    return "80" if cc < 86 else "86"


def dtype_name(dtype) -> str:
    """"fp32" / "fp16" / "bf16" for a torch dtype or one of those names."""
    name = str(dtype).replace("torch.", "")
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp32": "fp32", "fp16": "fp16",
             "bf16": "bf16"}
    if name not in names:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    return names[name]


def lookup(kernel: str, arch: str, dtype: str, c_pad: int) -> Tile:
    """The first row of TILES for (kernel, arch, dtype, C_PAD); ValueError if none."""
    if arch not in SHARED_LIMIT:
        raise ValueError(f"unknown target {arch!r}; one of {', '.join(ARCHS)}")
    for row in TILES:
        if row.kernel == kernel and arch in row.archs and dtype in row.dtypes and c_pad <= row.max_c_pad:
            return row
    raise ValueError(f"no {kernel} tile for sm_{arch} {dtype} C_PAD={c_pad} (at most {MAX_C_PAD})")


def merge_tile(arch: str, dtype: str, c_pad: int) -> Tile:
    return lookup("group_merge", arch, dtype, c_pad)


def epilogue_tile(arch: str, dtype: str, c_pad: int) -> Tile:
    return lookup("group_merge_epilogue", arch, dtype, c_pad)


def inject_tile(arch: str, dtype: str, c_pad: int) -> Tile:
    return lookup("prompt_inject", arch, dtype, c_pad)


def tile_constexprs(tile: Tile, c_pad: int) -> dict:
    """The tile's constexprs for this C_PAD: a ``BLOCK_C`` (epilogue rows per program) larger
    than C_PAD is clipped to it."""
    out = dict(tile.constexprs)
    if "BLOCK_C" in out:
        out["BLOCK_C"] = min(out["BLOCK_C"], c_pad)
    return out


def as_json() -> list[dict]:
    """TILES as JSON rows (the manifest's ``tiles``)."""
    return [dict(kernel=t.kernel, archs=list(t.archs), dtypes=list(t.dtypes), max_c_pad=t.max_c_pad,
                 constexprs=dict(t.constexprs), num_warps=t.num_warps, num_stages=t.num_stages) for t in TILES]
