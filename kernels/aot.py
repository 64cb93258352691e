"""Ahead-of-time compilation of the fused prompter kernels for NVIDIA targets, without a GPU.

    python -m kernels.aot [--arch 80,86,87,89,90a,100a,120a] [--dtype fp32,fp16,bf16]
        [--groups 16,32,64,128,256] [--prompt-dim 32] [--kernels group_merge,group_merge_epilogue,prompt_inject]
        [--extra ARCHS:DTYPES:GROUPS[:KERNELS] ...] [--out build/aot] [--jobs 1]

Compiles every kernel in every configuration the Triton dispatchers can choose for the GoPT
presets (ViT-B / ViT-L: d = 32, C up to 256, batch 1 to 32, S from 0 tokens (a dynamic
shape's lower end; 196 at 224x224) to 4096 (1024x1024)) with
``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", cc, 32))``,
which needs no driver and no GPU; ptxas comes with the triton wheel. ``--extra`` adds
narrower sets to the same folder (one more target for one dtype, say), each as
comma-separated targets, dtypes, group counts and optionally kernels. The tiles come from
``kernels.tiles``, the same table the dispatchers read.
Line info is left out (``TRITON_DISABLE_LINE_INFO=1``); fused multiply-add contraction is on
(``enable_fp_fusion``, as the Triton launches state it too). Set ``TRITON_CACHE_DIR`` to reuse
compiled kernels between runs.

Exit status 1, naming the build, when a build cannot compile, needs more shared memory
than its target allows (``tiles.SHARED_LIMIT``) or rounds fp32 products to TF32 (Triton 3.7
does that on sm_100 for an fp32 ``tl.dot`` of 64 rows or more with an operand upcast in the
kernel from 16 bits, ``input_precision="ieee"`` notwithstanding); the manifest is still written,
with the failed builds under ``rejected``.

Output folder
-------------
``<kernel>_sm<arch>_<dtype>_d<DP>_c<C_PAD>[_fused|_split].{ptx,cubin}`` and ``manifest.json``
(format 1, stable; fields are only ever added)::

    {"format": 1, "triton_version": "3.7.1",
     "targets": {"90a": {"capability": 90, "shared_limit": 232448}, ...},
     "tiles": [ {kernel, archs, dtypes, max_c_pad, constexprs, num_warps, num_stages}, ...],
     "kernels": {"<kernel>": {"grid": [...], "workspace": ...}, ...},
     "builds": [record, ...], "rejected": [record + "problem", ...]}

A build ``record``:

- ``kernel``: the table's kernel name (``group_merge``, ``group_merge_epilogue``,
  ``prompt_inject``); ``name``: the cubin's entry symbol (the Triton function's name);
- ``arch`` (``"90a"``), ``capability`` (90), ``dtype`` (``fp32`` / ``fp16`` / ``bf16``: the
  activations' and weights' element type);
- ``constexprs``: every constexpr of the build, by name (``DP``, ``C_PAD``, ``BLOCK_S``, ...);
  a native launcher selects a build by exact match with the tile row's constexprs plus
  ``DP`` = d, ``C_PAD`` = max(16, next power of two of C) and, for ``group_merge``,
  ``FUSED_EPILOGUE`` = (cdiv(S, TOKENS_PER_PROG) == 1);
- ``signature``: the kernel parameters in the order the cubin expects, as ``{"name",
  "type"}`` with Triton types (``*fp16`` pointer, ``i32``, ``fp32``). The last two entries,
  ``global_scratch`` and ``profile_scratch`` (``*i8``), are the scratch pointers Triton
  appends to every kernel: pass NULL (the builds need no scratch: ``global_scratch_size``
  and ``profile_scratch_size`` are 0, else the build is rejected);
- ``grid``: three expressions in ``B`` and ``S`` (integer division, ``cdiv(x, y)`` =
  ceil(x / y)); ``block``: [num_warps * 32, 1, 1]; ``num_warps``, ``num_stages``;
- ``shared_bytes``: dynamic shared memory to launch with (above 48 KB it needs
  ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES``); ``shared_limit``: the target's;
- ``registers``, ``spill_store_bytes``, ``spill_load_bytes``, ``stack_bytes`` (ptxas ``-v``);
- ``tf32_mma``: tensor-core instructions in the PTX that round operands to TF32 (fp32
  builds must have none);
- ``ptx``, ``cubin``: file names relative to the manifest's folder; ``ptx_sha256``,
  ``cubin_sha256``; ``ptx_version`` (the PTX ISA, e.g. ``"8.0"``: the sm_80 builds use PTX
  8.0 so that drivers from CUDA 12.0 on can JIT their PTX for a device with no cubin here);
- ``triton_version``, ``compile_seconds``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMAT = 1
# The GoPT presets the sweep covers: S in tokens (up to 1024x1024 inputs at patch 16; from 0,
# since an engine's dynamic shapes and short token sets need the one-program merge too) and
# the prompter width d; D (768 / 1024) never changes a build.
TOKENS_RANGE = (0, 4096)
PROMPT_DIM = 32
GROUPS = (16, 32, 64, 128, 256)

SCRATCH = [{"name": "global_scratch", "type": "*i8"}, {"name": "profile_scratch", "type": "*i8"}]

# Runtime parameters in kernel order; "*T" is the build's dtype. Checked against the
# kernels' own argument lists at compile time.
SIGNATURES = {
    "group_merge": [
        ("a_ptr", "*T"), ("c_ptr", "*T"), ("q_w", "*T"), ("q_b", "*T"), ("k_w", "*T"), ("k_b", "*T"),
        ("v_w", "*T"), ("v_b", "*T"), ("o_w", "*T"), ("o_b", "*T"), ("out_ptr", "*T"),
        ("part_sum_ptr", "*fp32"), ("part_cnt_ptr", "*i32"), ("assign_ptr", "*i32"),
        ("S", "i32"), ("C", "i32"),
        ("stride_ab", "i32"), ("stride_as", "i32"), ("stride_ad", "i32"),
        ("stride_cb", "i32"), ("stride_cc", "i32"), ("stride_cd", "i32"),
    ],
    "group_merge_epilogue": [
        ("c_ptr", "*T"), ("v_w", "*T"), ("v_b", "*T"), ("o_w", "*T"), ("o_b", "*T"), ("out_ptr", "*T"),
        ("part_sum_ptr", "*fp32"), ("part_cnt_ptr", "*i32"),
        ("C", "i32"), ("split", "i32"), ("stride_cb", "i32"), ("stride_cc", "i32"), ("stride_cd", "i32"),
    ],
    "prompt_inject": [
        ("f_ptr", "*T"), ("P_ptr", "*T"), ("down_w", "*T"), ("down_b", "*T"), ("q_w", "*T"), ("q_b", "*T"),
        ("k_w", "*T"), ("k_b", "*T"), ("v_w", "*T"), ("v_b", "*T"), ("o_w", "*T"), ("o_b", "*T"),
        ("up_w", "*T"), ("up_b", "*T"), ("out_ptr", "*T"), ("assign_ptr", "*i32"),
        ("S", "i32"), ("C", "i32"), ("D", "i32"), ("inv_sqrt_d", "fp32"),
        ("stride_fb", "i32"), ("stride_fs", "i32"), ("stride_fd", "i32"),
        ("stride_pb", "i32"), ("stride_pc", "i32"), ("stride_pd", "i32"),
    ],
}

# How each kernel is launched (documentation for native launchers; also in the manifest).
KERNEL_NOTES = {
    "group_merge": {
        "grid": ["B", "cdiv(S, TOKENS_PER_PROG)", "1"],
        "args": "a' [B,S,d] and c' [B,C,d] any strides (element strides); weights/biases contiguous; "
                "out P [B,C,d] contiguous; assign_ptr unused (STORE_ASSIGN=0): pass out_ptr",
        "workspace": "split = max(1, cdiv(S, TOKENS_PER_PROG)) (S = 0: evaluate the grid at S = 1; each sample's "
                     "program then writes P = c' + o.bias); FUSED_EPILOGUE=1 when split == 1 (part_* unused: pass "
                     "out_ptr); else part_sum fp32 [B, split, C_PAD, DP] and part_cnt int32 [B, split, C_PAD], "
                     "then group_merge_epilogue with split",
    },
    "group_merge_epilogue": {
        "grid": ["B", "C_PAD / BLOCK_C", "1"],
        "args": "after group_merge with FUSED_EPILOGUE=0, on the same stream, same workspace and split",
    },
    "prompt_inject": {
        "grid": ["cdiv(S, BLOCK_S)", "B", "1"],
        "args": "f [B,S,D] and P [B,C,d] any strides; weights/biases contiguous; out [B,S,D] contiguous; "
                "inv_sqrt_d = 1/sqrt(d); assign_ptr unused (STORE_ASSIGN=0): pass out_ptr",
    },
}

_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_TF32_MMA = re.compile(r"^\s*(?:tcgen05\.mma|wgmma\.mma_async|mma\.sync)\S*tf32", re.MULTILINE)


class AotError(RuntimeError):
    """A build that cannot compile or does not fit its target."""


def kernel_function(kernel: str):
    """The @triton.jit function of a table kernel."""
    from .group_merge_triton import _group_merge_epilogue_kernel, _group_merge_kernel
    from .prompt_inject_triton import _prompt_inject_kernel

    return {"group_merge": _group_merge_kernel, "group_merge_epilogue": _group_merge_epilogue_kernel,
            "prompt_inject": _prompt_inject_kernel}[kernel]


def signature(kernel: str, dtype: str) -> list[dict]:
    """The runtime parameters of ``kernel`` for ``dtype`` as the cubin takes them, scratch included."""
    return [{"name": n, "type": t.replace("T", dtype)} for n, t in SIGNATURES[kernel]] + SCRATCH


def plan(archs, dtypes, groups=GROUPS, d=PROMPT_DIM, tokens=TOKENS_RANGE, kernels=None) -> list[dict]:
    """Every (kernel, arch, dtype, constexprs) the dispatchers can choose for these sizes
    (only the ``kernels`` named, when given)."""
    from . import tiles

    c_pads = sorted({max(16, 1 << (int(c) - 1).bit_length()) for c in groups})
    jobs = []
    for arch in archs:
        for dtype in dtypes:
            for c_pad in c_pads:
                common = dict(DP=d, C_PAD=c_pad, PREC="ieee")
                native = dtype != "fp32"
                merge = tiles.merge_tile(arch, dtype, c_pad)
                tpp = merge.constexprs["TOKENS_PER_PROG"]
                splits = [max(1, -(-s // tpp)) for s in tokens]  # programs per sample at the fewest / most tokens
                fused_cases = sorted({split == 1 for split in splits}, reverse=True)
                for fused in fused_cases:
                    jobs.append(_job("group_merge", arch, dtype, merge, c_pad, dict(
                        common, FUSED_EPILOGUE=fused, NATIVE_DOT=native, STORE_ASSIGN=False)))
                if False in fused_cases:
                    jobs.append(_job("group_merge_epilogue", arch, dtype, tiles.epilogue_tile(arch, dtype, c_pad),
                                     c_pad, common))
                jobs.append(_job("prompt_inject", arch, dtype, tiles.inject_tile(arch, dtype, c_pad), c_pad,
                                 dict(common, NATIVE_DOT=native, STORE_ASSIGN=False)))
    return [j for j in jobs if kernels is None or j["kernel"] in kernels]


def _job(kernel, arch, dtype, tile, c_pad, constexprs) -> dict:
    from . import tiles

    return dict(kernel=kernel, arch=arch, dtype=dtype, num_warps=tile.num_warps, num_stages=tile.num_stages,
                constexprs={**constexprs, **tiles.tile_constexprs(tile, c_pad)})


def build_stem(job: dict) -> str:
    """The build's file name without suffix, also how messages name it."""
    c = job["constexprs"]
    stem = f"{job['kernel']}_sm{job['arch']}_{job['dtype']}_d{c['DP']}_c{c['C_PAD']}"
    if "FUSED_EPILOGUE" in c:
        stem += "_fused" if c["FUSED_EPILOGUE"] else "_split"
    return stem


def grid(kernel: str, constexprs: dict) -> list[str]:
    """The launch grid of a build as expressions in B and S, constexprs substituted."""
    out = []
    for expr in KERNEL_NOTES[kernel]["grid"]:
        for name, value in constexprs.items():
            expr = re.sub(rf"\b{name}\b", str(value), expr)
        if re.fullmatch(r"\d+ / \d+", expr):
            num, den = (int(v) for v in expr.split(" / "))
            expr = str(num // den)
        out.append(expr)
    return out


def grid_size(record: dict, B: int, S: int) -> int:
    """Programs a build launches for batch B and S tokens (its ``grid`` evaluated)."""
    names = {"B": B, "S": S, "cdiv": lambda x, y: -(-x // y)}
    size = 1
    for expr in record["grid"]:
        size *= eval(expr.replace(" / ", " // "), {"__builtins__": {}}, names)  # our own expressions
    return size


def ptxas_resources(ptx: str, arch: str) -> dict:
    """Registers, spill and stack bytes of ``ptx`` from ptxas -v, run as Triton runs it."""
    from triton.backends.nvidia.compiler import get_ptxas

    from . import tiles

    ptxas = get_ptxas(tiles.CAPABILITY[arch]).path
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        run = subprocess.run([ptxas, "-v", "--regAllocOptLevel=2", f"--gpu-name=sm_{arch}", str(src),
                              "-o", str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    if run.returncode != 0:
        raise AotError(f"ptxas -v failed: {run.stderr.strip()[-500:]}")
    regs, spills = _PTXAS_REGS.search(run.stderr), _PTXAS_SPILLS.search(run.stderr)
    if not regs or not spills:
        raise AotError(f"cannot read ptxas -v output: {run.stderr.strip()[-500:]}")
    stack, stores, loads = (int(v) for v in spills.groups())
    return dict(registers=int(regs.group(1)), spill_store_bytes=stores, spill_load_bytes=loads, stack_bytes=stack)


def _compiler_process() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")


def compile_build(job: dict, out_dir: str) -> dict:
    """Compile one build, write its PTX and cubin into ``out_dir`` and return its record;
    the record has a ``problem`` when it must not be shipped."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from runtime.files import write_bytes_atomic, write_text_atomic

    from . import tiles
    from .group_merge_triton import FP_FUSION

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise AotError("compile_build needs the Triton compiler: unset TRITON_INTERPRET (run() does)")
    kernel, arch, dtype, constexprs = job["kernel"], job["arch"], job["dtype"], job["constexprs"]
    record = dict(kernel=kernel, arch=arch, capability=tiles.CAPABILITY[arch], dtype=dtype,
                  constexprs=constexprs, signature=signature(kernel, dtype), grid=grid(kernel, constexprs),
                  block=[job["num_warps"] * 32, 1, 1], num_warps=job["num_warps"], num_stages=job["num_stages"],
                  shared_limit=tiles.SHARED_LIMIT[arch], triton_version=triton.__version__)
    fn = kernel_function(kernel)
    runtime_args = [a for a in fn.arg_names if a not in constexprs]
    if runtime_args != [n for n, _ in SIGNATURES[kernel]] or set(constexprs) - set(fn.arg_names):
        raise AotError(f"{kernel}: kernel arguments {fn.arg_names} do not match kernels.aot.SIGNATURES")
    sig = {n: t for n, t in ((s["name"], s["type"]) for s in record["signature"][:-2])}
    sig.update({n: "constexpr" for n in constexprs})
    sig = {n: sig[n] for n in fn.arg_names}
    options = dict(num_warps=job["num_warps"], num_stages=job["num_stages"], enable_fp_fusion=FP_FUSION)
    if arch == "80":
        options["ptx_version"] = 80
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(fn, sig, constexprs),
                                  target=GPUTarget("cuda", tiles.CAPABILITY[arch], 32), options=options)
    except Exception as exc:  # noqa: BLE001 - any compiler failure is reported as this build's problem
        record["problem"] = f"does not compile: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        return record
    record["compile_seconds"] = round(time.perf_counter() - start, 2)
    meta = compiled.metadata
    ptx, cubin = compiled.asm["ptx"], compiled.asm["cubin"]
    record.update(name=meta.name, shared_bytes=meta.shared,
                  ptx_version=re.search(r"^\.version (\S+)", ptx, re.MULTILINE).group(1))
    record.update(ptxas_resources(ptx, arch))
    record["tf32_mma"] = len(_TF32_MMA.findall(ptx))
    stem = build_stem(job)
    out = Path(out_dir)
    write_text_atomic(out / f"{stem}.ptx", ptx)
    write_bytes_atomic(out / f"{stem}.cubin", cubin)
    record.update(ptx=f"{stem}.ptx", cubin=f"{stem}.cubin", ptx_sha256=hashlib.sha256(ptx.encode()).hexdigest(),
                  cubin_sha256=hashlib.sha256(cubin).hexdigest())
    problems = []
    if meta.shared > tiles.SHARED_LIMIT[arch]:
        problems.append(f"needs {meta.shared} B of shared memory, sm_{arch} allows {tiles.SHARED_LIMIT[arch]} B")
    if record["tf32_mma"]:
        problems.append(f"{record['tf32_mma']} TF32 tensor-core products: fp32 operands would be rounded")
    if meta.global_scratch_size or meta.profile_scratch_size or meta.num_ctas != 1 or meta.launch_pdl \
            or meta.launch_cooperative_grid:
        problems.append("needs scratch memory, clusters, PDL or a cooperative launch")
    if problems:
        record["problem"] = "; ".join(problems)
    return record


def plan_all(archs, dtypes, groups=GROUPS, d=PROMPT_DIM, kernels=None, extra=()) -> list[dict]:
    """The sweep plus each ``extra`` set ``(archs, dtypes, groups, kernels or None)``, every
    build once."""
    jobs = {}
    for a, t, g, k in [(archs, dtypes, groups, kernels), *extra]:
        for job in plan(a, t, g, d, kernels=k):
            jobs.setdefault(build_stem(job), job)
    return list(jobs.values())


def run(archs, dtypes, out_dir, groups=GROUPS, d=PROMPT_DIM, jobs=1, kernels=None, log=sys.stderr,
        extra=()) -> dict:
    """Compile the sweep (and the ``extra`` sets, see ``plan_all``) into ``out_dir``; returns
    the manifest (also written there)."""
    import triton

    from runtime.files import write_text_atomic

    from . import tiles

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = plan_all(archs, dtypes, groups, d, kernels, extra)
    archs = list(dict.fromkeys(j["arch"] for j in todo))
    records = []
    start = time.perf_counter()
    # compiler processes of their own: Triton's interpreter (TRITON_INTERPRET=1, as the tests
    # run) replaces @triton.jit functions by Python ones the compiler cannot take
    pool = concurrent.futures.ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"),
                                                  initializer=_compiler_process)
    with pool:
        for i, record in enumerate(pool.map(compile_build, todo, [str(out)] * len(todo)), 1):
            records.append(record)
            status = record.get("problem") or (
                f"{record['registers']} registers, spills {record['spill_store_bytes']}/"
                f"{record['spill_load_bytes']} B, {record['shared_bytes']} B shared, {record['compile_seconds']} s")
            print(f"[{i}/{len(todo)}] {build_stem(record)}: {status}", file=log, flush=True)
    manifest = {
        "format": FORMAT,
        "triton_version": triton.__version__,
        "targets": {a: {"capability": tiles.CAPABILITY[a], "shared_limit": tiles.SHARED_LIMIT[a]} for a in archs},
        "tiles": tiles.as_json(),
        "kernels": KERNEL_NOTES,
        "builds": [r for r in records if "problem" not in r],
        "rejected": [r for r in records if "problem" in r],
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _names(value: str, allowed, what: str) -> list[str]:
    names = [v.strip().removeprefix("sm_") for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{what} must be among {','.join(allowed)}, got {value!r}")
    return names


def _groups(value: str) -> list[int]:
    try:
        return [int(c) for c in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {value!r}") from None


def _extra(value: str, tiles) -> tuple:
    """``ARCHS:DTYPES:GROUPS[:KERNELS]`` -> (archs, dtypes, groups, kernels or None)."""
    parts = value.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"--extra must be ARCHS:DTYPES:GROUPS[:KERNELS], got {value!r}")
    kernels = _names(parts[3], tiles.KERNELS, "--extra kernels") if len(parts) == 4 else None
    return (_names(parts[0], tiles.ARCHS, "--extra targets"), _names(parts[1], tiles.DTYPES, "--extra dtypes"),
            _groups(parts[2]), kernels)


def parse_args(argv=None) -> argparse.Namespace:
    from runtime.cli import ArgumentParser, count

    from . import tiles

    p = ArgumentParser(prog="python -m kernels.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=lambda v: _names(v, tiles.ARCHS, "--arch"), default=list(tiles.ARCHS))
    p.add_argument("--dtype", type=lambda v: _names(v, tiles.DTYPES, "--dtype"), default=list(tiles.DTYPES))
    p.add_argument("--groups", type=_groups, default=list(GROUPS),
                   help="group counts C to cover (each gives C_PAD = max(16, next power of two))")
    p.add_argument("--kernels", type=lambda v: _names(v, tiles.KERNELS, "--kernels"), default=list(tiles.KERNELS))
    p.add_argument("--extra", type=lambda v: _extra(v, tiles), action="append", default=[],
                   metavar="ARCHS:DTYPES:GROUPS[:KERNELS]",
                   help="a further, narrower set of builds (repeatable), e.g. 86:fp16:16")
    p.add_argument("--prompt-dim", type=int, default=PROMPT_DIM, help="prompter width d")
    p.add_argument("--out", type=Path, default=Path("build/aot"),
                   help="output folder (made when missing; a rebuild replaces the files of the same builds)")
    p.add_argument("--jobs", type=count, default=1, help="compiler processes (default 1)")
    args = p.parse_args(argv)
    if not all(1 <= c <= tiles.MAX_C_PAD for c in args.groups + [c for e in args.extra for c in e[2]]):
        p.error(f"--groups must be in [1, {tiles.MAX_C_PAD}], got {args.groups}")
    if args.prompt_dim not in (16, 32, 64, 128):
        p.error(f"--prompt-dim must be 16, 32, 64 or 128, got {args.prompt_dim}")
    return args


def compile_command(args) -> int:
    from runtime.cli import output_dir

    output_dir(args.out)
    n = len(plan_all(args.arch, args.dtype, args.groups, args.prompt_dim, args.kernels, args.extra))
    archs = sorted({a for a in args.arch + [a for e in args.extra for a in e[0]]})
    print(f"kernels.aot: {n} builds for sm_{', sm_'.join(archs)} into {args.out}", file=sys.stderr)
    manifest = run(args.arch, args.dtype, args.out, args.groups, args.prompt_dim, args.jobs, args.kernels,
                   extra=args.extra)
    for record in manifest["rejected"]:
        print(f"kernels.aot: {build_stem(record)}: {record['problem']}", file=sys.stderr)
    print(f"kernels.aot: {len(manifest['builds'])} builds, {len(manifest['rejected'])} rejected, "
          f"{manifest['seconds']} s; manifest {args.out / 'manifest.json'}", file=sys.stderr)
    return 1 if manifest["rejected"] else 0


def main(argv=None) -> int:
    from runtime.cli import run_tool

    return run_tool(compile_command, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
