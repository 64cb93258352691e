"""GPU benchmark of the fused prompter kernels against PyTorch eager and torch.compile.

    python benchmarks/kernels.py [--batch 1,8,32] [--seq 1200,4096] [--groups 9,40]
        [--prompt-dim 32] [--width 768] [--dtypes fp32,fp16,bf16]
        [--kernels group_merge,prompt_inject,cup_attention] [--no-compile]
        [--fp32-precision ieee[,tf32x3]] [--warmup-ms 25] [--rep-ms 100] [--json OUT]

For every kernel, dtype, batch B, token count S (1200 = 480x640 / 16^2) and group count C:

1. parity: the Triton kernel against the PyTorch reference (kernels/reference.py) on fresh
   random inputs. Its argmax assignments are read back and compared with the reference's
   fp32 ones (exact wherever the top-2 margin exceeds 1e-4 of the row's scale, >= 99%
   overall), then its output with the reference computed for those assignments, within the
   test suite's tolerances (fp32 1e-5 of max |ref|; fp16 / bf16 one output ulp + 1e-5 / 1e-4);
2. timing: ``triton.testing.do_bench`` (warm-up, then the median of repeated runs, L2 flushed
   before each) of the Triton kernel, the eager reference and ``torch.compile`` of the
   reference (same shapes, static);
3. bandwidth: the bytes each kernel must move at least (its inputs read once, its output
   written once; see ``group_merge_bytes`` / ``prompt_inject_bytes``) over the median time,
   next to the device's copy bandwidth, measured the same way on a device-to-device copy of
   a 1 GiB tensor (read + write counted).

``cup_attention`` (informational) times the CUP parameter-free self-attention over the S + C
tokens of width d as the model runs it, ``F.scaled_dot_product_attention``, against the same
copy bandwidth: a fused kernel would only be worth writing if this were far from it.

Targets (reported, never assumed): Triton >= 3x faster than eager, and prompt_inject at
>= 70% of the copy bandwidth. Results go to ``--json`` (default
``benchmarks/results/kernels_<gpu>.json``) with the device, library versions, date and
command, and a table is printed. Without a CUDA GPU the script exits with one line.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.cli import ArgumentParser, check_result_outputs, count, output_dir, run_tool  # noqa: E402

DTYPE_NAMES = ("fp32", "fp16", "bf16")
KERNELS = ("group_merge", "prompt_inject", "cup_attention")
SPEEDUP_TARGET = 3.0
BANDWIDTH_TARGET = 0.70  # of the measured copy bandwidth, prompt_inject
TIE_MARGIN = 1e-4
MIN_AGREEMENT = 0.99
DEVICE = "cuda"


def fail(msg: str) -> None:
    """What this machine lacks: one line, exit status 2 (runtime/cli.py)."""
    raise ValueError(msg)


def counts(text: str) -> list[int]:
    """argparse type: a comma list of integers >= 1."""
    return [count(v) for v in text.split(",") if v] or count(text)


def parse_args(argv):
    names = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    ints = counts
    p = ArgumentParser(prog="python benchmarks/kernels.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=ints, default=[1, 8, 32])
    p.add_argument("--seq", type=ints, default=[1200, 4096], help="token counts S")
    p.add_argument("--groups", type=ints, default=[9, 40], help="group counts C")
    p.add_argument("--prompt-dim", type=count, default=32, help="prompter width d")
    p.add_argument("--width", type=count, default=768, help="backbone width D")
    p.add_argument("--dtypes", type=names, default=list(DTYPE_NAMES))
    p.add_argument("--kernels", type=names, default=list(KERNELS))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--fp32-precision", type=names, default=["ieee"],
                   help="tl.dot input precision(s) for fp32 inputs: ieee (default), tf32x3")
    p.add_argument("--warmup-ms", type=count, default=25)
    p.add_argument("--rep-ms", type=count, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None,
                   help="output file (default benchmarks/results/kernels_<gpu>.json; replaces an earlier file)")
    args = p.parse_args(argv)
    check_result_outputs(args.json)
    output_dir(ROOT / "benchmarks" / "results")
    for name, allowed in (("dtypes", DTYPE_NAMES), ("kernels", KERNELS), ("fp32_precision", ("ieee", "tf32x3"))):
        bad = sorted(set(getattr(args, name)) - set(allowed))
        if bad:
            p.error(f"--{name.replace('_', '-')}: unknown {bad}, choose from {list(allowed)}")
    return args


# ---- inputs and parity -----------------------------------------------------------------------------

def make_inputs(kernel, B, S, C, d, D, dtype, seed, device=DEVICE):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    rnd = lambda *shape, scale=1.0: torch.randn(*shape, generator=g, device=device) * scale  # noqa: E731
    lin = lambda o, i, scale=0.3: [rnd(o, i, scale=scale), rnd(o, scale=scale)]  # noqa: E731
    if kernel == "group_merge":
        ts = [rnd(B, S, d), rnd(B, C, d), *[t for _ in "qkvo" for t in lin(d, d)]]
    elif kernel == "prompt_inject":
        ts = [rnd(B, S, D), rnd(B, C, d), *lin(d, D, 1 / math.sqrt(D)), *[t for _ in "qkvo" for t in lin(d, d)],
              *lin(D, d, 0.1)]
    else:  # cup_attention: Z = [a; c], one head of width d
        ts = [rnd(B, 1, S + C, d)]
    return [t.to(dtype) for t in ts]


def tolerance_ok(out, ref, dtype):
    """(ok, max error / max |ref|) with the test suite's tolerances."""
    import torch

    out, ref = out.float(), ref.float()
    scale = ref.abs().max().clamp(min=1.0)
    err = (out - ref).abs()
    if dtype == torch.float32:
        ok = bool(err.max() <= 1e-5 * scale)
    else:
        ulp, atol = {torch.float16: (2.0 ** -10, 1e-5), torch.bfloat16: (2.0 ** -7, 1e-4)}[dtype]
        ok = bool((err <= ulp * ref.abs() + atol * scale).all())
    return ok, float(err.max() / scale)


def assignment_check(got, logits):
    """(ok, agreement): exact where the fp32 top-2 margin is clear, >= 99% overall."""
    import torch

    ref = logits.argmax(-1)
    top2 = logits.topk(min(2, logits.shape[-1]), dim=-1).values
    sure = (top2[..., 0] - top2[..., -1]) > TIE_MARGIN * logits.abs().amax(-1)
    clear_ok = torch.equal(got.long()[sure], ref[sure])
    agreement = float((got.long() == ref).float().mean())
    return clear_ok and agreement >= MIN_AGREEMENT, agreement


def parity(kernel, args, precision):
    """Kernel output vs reference, assignment-aware. Returns a dict for the JSON."""
    import torch
    import torch.nn.functional as F

    from kernels.group_merge_triton import _group_merge
    from kernels.prompt_inject_triton import _prompt_inject
    from kernels.reference import (cross_attend, group_logits, group_merge_reference, merge_groups, one_hot,
                                   prompt_inject_reference)

    dtype = args[0].dtype
    B, S = args[0].shape[:2]
    assign = torch.full((B, S), -1, dtype=torch.int32, device=args[0].device)
    up = [t.float() for t in args]
    if kernel == "group_merge":
        out = _group_merge(*args, assign_out=assign, fp32_precision=precision)
        a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b = up
        logits = group_logits(a, c, q_w, q_b, k_w, k_b)
        given = merge_groups(one_hot(assign.long(), c.shape[1], torch.float32), a, c, v_w, v_b, o_w, o_b)
        plain = group_merge_reference(*args)
    else:
        out = _prompt_inject(*args, assign_out=assign, fp32_precision=precision)
        f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b = up
        r = cross_attend(f, P, down_w, down_b)
        logits = group_logits(r, P, q_w, q_b, k_w, k_b)
        p = r + one_hot(assign.long(), P.shape[1], torch.float32) @ F.linear(F.linear(P, v_w, v_b), o_w, o_b)
        given = f * (1 + F.linear(p, up_w, up_b))
        del r, p
        plain = prompt_inject_reference(*args)
    assign_ok, agreement = assignment_check(assign, logits)
    out_ok, err_given = tolerance_ok(out, given.to(dtype), dtype)
    _, err_plain = tolerance_ok(out, plain, dtype)
    return {"ok": assign_ok and out_ok, "assignment_agreement": agreement,
            "max_rel_err_given_assignments": err_given, "max_rel_err_vs_reference": err_plain}


# ---- timing ----------------------------------------------------------------------------------------

def bench(fn, args):
    from triton.testing import do_bench

    return do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median")


def copy_bandwidth(args) -> float:
    """GB/s of a device-to-device copy of 1 GiB (read + write), timed like the kernels."""
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), args)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9


def environment(argv) -> dict:
    import torch
    import triton

    props = torch.cuda.get_device_properties(0)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/kernels.py", *argv]),
            "device": torch.cuda.get_device_name(0),
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2 ** 30, 1),
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "driver": _driver_version(), "python": platform.python_version(), "platform": platform.platform()}


def _driver_version():
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, Exception):  # noqa: BLE001 - informational only
        return None


def compiled(fn):
    import torch

    return torch.compile(fn, dynamic=False)


def baselines(no_compile: bool):
    """(eager references, their torch.compile versions or {}) by kernel name."""
    import torch
    import torch._dynamo
    import torch.nn.functional as F

    from kernels.reference import group_merge_reference, prompt_inject_reference

    # one compiled graph per (shape, dtype): lift the recompile limit so dynamo never falls
    # back to eager silently after a few shapes
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 1024)
    refs = {"group_merge": group_merge_reference, "prompt_inject": prompt_inject_reference,
            "cup_attention": lambda z: F.scaled_dot_product_attention(z, z, z)}
    return refs, ({} if no_compile else {k: compiled(v) for k, v in refs.items()})


def measure_config(kernel, dname, B, S, C, args, copy_gbs, refs, compiled_refs, timing=True,
                   device=DEVICE) -> list[dict]:
    """The rows of one configuration: parity of the Triton kernel (each fp32 precision), then,
    with ``timing``, its median time against the eager and compiled references and its
    bandwidth against ``copy_gbs``. Parity alone also runs on the CPU under the interpreter."""
    import torch

    from kernels.group_merge_triton import _group_merge, device_arch, group_merge_bytes
    from kernels.prompt_inject_triton import _prompt_inject, prompt_inject_bytes

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dname]
    d, D = args.prompt_dim, args.width
    elt = torch.tensor([], dtype=dtype).element_size()
    if dtype == torch.bfloat16 and device == "cuda" and not torch.cuda.is_bf16_supported():
        return [{"kernel": kernel, "dtype": dname, "B": B, "S": S, "C": C, "skipped": "bf16 not supported on this GPU"}]
    inputs = make_inputs(kernel, B, S, C, d, D, dtype, args.seed, device)
    base = {"kernel": kernel, "dtype": dname, "B": B, "S": S, "C": C, "d": d}
    if kernel == "cup_attention":
        nbytes = 2 * B * (S + C) * d * elt
    elif kernel == "group_merge":
        nbytes = group_merge_bytes(B, S, C, d, elt, device_arch(device))
    else:
        base["D"] = D
        nbytes = prompt_inject_bytes(B, S, C, d, D, elt)
    base["bytes"] = nbytes
    times = {}
    if timing:
        try:
            times["eager"] = bench(lambda: refs[kernel](*inputs), args)
        except torch.cuda.OutOfMemoryError:
            times["eager"] = None
            base["eager_error"] = "out of memory"
        if compiled_refs:
            try:
                times["compile"] = bench(lambda: compiled_refs[kernel](*inputs), args)
            except Exception as e:  # noqa: BLE001 - a failing baseline is reported, not fatal
                times["compile"] = None
                base["compile_error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    precisions = args.fp32_precision if dtype == torch.float32 else ["ieee"]
    variants = [None] if kernel == "cup_attention" else precisions
    rows = []
    for prec in variants:
        row = dict(base)
        row["copy_GBps"] = copy_gbs
        ms = None
        if prec is not None:
            row["impl"] = "triton" + (f"-{prec}" if dtype == torch.float32 else "")
            row["parity"] = parity(kernel, inputs, prec)
            fn = _group_merge if kernel == "group_merge" else _prompt_inject
            if timing:
                ms = bench(lambda: fn(*inputs, fp32_precision=prec), args)
        else:
            row["impl"] = "sdpa"
            ms = times.get("eager")
        row["ms"] = ms
        row["eager_ms"] = times.get("eager")
        row["compile_ms"] = times.get("compile")
        if ms:
            row["GBps"] = nbytes / (ms * 1e-3) / 1e9
            row["frac_copy_bw"] = row["GBps"] / copy_gbs
            if prec is not None:
                if row["eager_ms"]:
                    row["speedup_vs_eager"] = row["eager_ms"] / ms
                    row["meets_3x_eager"] = row["speedup_vs_eager"] >= SPEEDUP_TARGET
                if row["compile_ms"]:
                    row["speedup_vs_compile"] = row["compile_ms"] / ms
                if kernel == "prompt_inject":
                    row["meets_70pct_bw"] = row["frac_copy_bw"] >= BANDWIDTH_TARGET
        rows.append(row)
    del inputs
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def run(args, argv) -> dict:
    env = environment(argv)
    copy_gbs = copy_bandwidth(args)
    print(f"{env['device']}: copy bandwidth {copy_gbs:.0f} GB/s (1 GiB device-to-device, read + write)")
    refs, compiled_refs = baselines(args.no_compile)
    rows = []
    for kernel in args.kernels:
        for dname in args.dtypes:
            for B, S, C in [(B, S, C) for B in args.batch for S in args.seq for C in args.groups]:
                config_rows = measure_config(kernel, dname, B, S, C, args, copy_gbs, refs, compiled_refs)
                rows += config_rows
                if "skipped" in config_rows[0]:
                    break
                for row in config_rows:
                    print_row(row)
    return {"environment": env, "copy_bandwidth_GBps": copy_gbs,
            "targets": {"speedup_vs_eager": SPEEDUP_TARGET, "prompt_inject_frac_copy_bw": BANDWIDTH_TARGET},
            "results": rows}


HEADER = (f"{'kernel':<14}{'impl':<14}{'dtype':<6}{'B':>4}{'S':>6}{'C':>4} {'parity':<7}"
          f"{'ms':>9}{'eager':>9}{'compile':>10}{'x eager':>8}{'x comp':>8}{'GB/s':>8}{'%copy':>7}")
_printed_header = False


def _cell(value, width: int, decimals: int) -> str:
    return f"{value:>{width}.{decimals}f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def print_row(row):
    global _printed_header
    if not _printed_header:
        print(HEADER)
        print("-" * len(HEADER))
        _printed_header = True
    par = row.get("parity")
    par = "-" if par is None else ("ok" if par["ok"] else "FAIL")
    pct = 100 * row["frac_copy_bw"] if "frac_copy_bw" in row else None
    print(f"{row['kernel']:<14}{row['impl']:<14}{row['dtype']:<6}{row['B']:>4}{row['S']:>6}{row['C']:>4} {par:<7}"
          f"{_cell(row.get('ms'), 9, 4)}{_cell(row.get('eager_ms'), 9, 4)}{_cell(row.get('compile_ms'), 10, 4)}"
          f"{_cell(row.get('speedup_vs_eager'), 8, 2)}{_cell(row.get('speedup_vs_compile'), 8, 2)}"
          f"{_cell(row.get('GBps'), 8, 0)}{_cell(pct, 7, 1)}")


def summary(result) -> list[str]:
    lines = []
    rows = [r for r in result["results"] if r.get("impl", "").startswith("triton")]
    failed = [r for r in rows if not r["parity"]["ok"]]
    lines.append(f"parity: {len(rows) - len(failed)}/{len(rows)} configurations within tolerance")
    for kernel in ("group_merge", "prompt_inject"):
        ks = [r for r in rows if r["kernel"] == kernel and "speedup_vs_eager" in r]
        if not ks:
            continue
        met = sum(r["meets_3x_eager"] for r in ks)
        lines.append(f"{kernel}: >= {SPEEDUP_TARGET:g}x over eager in {met}/{len(ks)} configurations "
                     f"(min {min(r['speedup_vs_eager'] for r in ks):.2f}x, "
                     f"max {max(r['speedup_vs_eager'] for r in ks):.2f}x)")
        if kernel == "prompt_inject":
            bw = [r for r in ks if "meets_70pct_bw" in r]
            lines.append(f"prompt_inject: >= {BANDWIDTH_TARGET:.0%} of copy bandwidth in "
                         f"{sum(r['meets_70pct_bw'] for r in bw)}/{len(bw)} configurations "
                         f"(best {max(r['frac_copy_bw'] for r in bw):.0%})")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_tool(lambda args: benchmark_command(args, argv), parse_args, argv)


def benchmark_command(args, argv) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        fail("TRITON_INTERPRET=1 is set: the interpreter cannot be timed; unset it and run on a CUDA GPU")
    try:
        import torch
    except ImportError:
        fail("PyTorch is not installed")
    if not torch.cuda.is_available():
        fail("no CUDA GPU available (torch.cuda.is_available() is False); these benchmarks need one")
    try:
        import triton  # noqa: F401
    except ImportError:
        fail("Triton is not installed")
    result = run(args, argv)
    lines = summary(result)
    result["summary"] = lines
    print()
    print("\n".join(lines))
    out = args.json
    if out is None:
        gpu = re.sub(r"[^a-z0-9]+", "_", result["environment"]["device"].lower()).strip("_")
        out = ROOT / "benchmarks" / "results" / f"kernels_{gpu}.json"
    from runtime.files import write_text_atomic

    write_text_atomic(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["parity"]["ok"] for r in result["results"] if "parity" in r) else 1


if __name__ == "__main__":
    sys.exit(main())
