"""The stages of ``python -m benchmarks.gpu_report``: what each measures on a CUDA GPU.

Every stage is ``stage(ctx)``: it fills ``ctx.result`` (``rows``, ``notes`` and figures of
its own), checks ``ctx.check_time(what)`` between units of work (``OutOfTime`` ends it as
partial) and calls ``ctx.checkpoint()`` so that the report on disk follows it. Stages call
the benchmarks' own functions (benchmarks/kernels.py, latency.py, streams.py) with the
presets below; the measuring cores (``stream_runs``, ``gopt_config_rows``, ...) also run on
a CPU for the tests, but the stages themselves only run where ``need_gpu`` found a GPU, so
nothing measured on a CPU ever enters a report.

This module imports the standard library only (and the budget); each stage imports what it needs.
"""
from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_budget import OutOfTime

ROOT = Path(__file__).resolve().parents[1]

LIBRARIES = ("torch", "triton", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
             "opencv-python-headless", "opencv-python", "onnxscript", "onnxslim", "onnxconverter-common",
             "onnxruntime-extensions", "matplotlib", "pytest", "cuda-bindings", "cupy-cuda13x", "rosbags")
PROGRAMS = {"nvcc": ["nvcc", "--version"], "cmake": ["cmake", "--version"], "ninja": ["ninja", "--version"],
            "cc": ["cc", "--version"], "nvidia-smi": ["nvidia-smi", "--version"]}
SOURCE_FOLDERS = ("kernels", "models", "runtime", "export", "benchmarks", "native")

# fused kernels: the GoPT presets, each list most telling first (d = 32, D = 768)
KERNELS = ("group_merge", "prompt_inject")
KERNEL_DTYPES = ("fp16", "bf16", "fp32")
KERNEL_BATCHES = (1, 8, 32)
KERNEL_TOKENS = (1200, 4096, 196)  # 480x640, 1024x1024, 224x224 at patch 16
KERNEL_GROUPS = (9, 40, 150)  # MFNet, NYUDv2, ADE20K classes
KERNEL_ARGS = ["--prompt-dim", "32", "--width", "768", "--warmup-ms", "10", "--rep-ms", "40"]
PARITY_SHARE = 0.45  # of the kernel stage: parity of every configuration first, then timing
PARITY_PROCESSES = 8  # Triton compiles each kernel variant on one CPU core: compile them side by side

# GoPT-B and SimCMF in PyTorch
GOPT_MODELS = (("thermal", "GoPT-B RGB-T"), ("depth", "GoPT-B RGB-D"))
GOPT_EAGER = (("torch", "fp32", False), ("triton", "fp16", False), ("torch", "fp16", False),
              ("triton", "bf16", False), ("torch", "bf16", False), ("triton", "fp32", False))
GOPT_GRAPHS = (("triton", "fp16", True), ("torch", "fp16", True))
GOPT_COMPILE = (("compile", "fp16", False),)
GOPT_BATCHES = (1, 8, 32)
LATENCY_ARGS = ["--compute-only", "--warmup-s", "0.3", "--min-iters", "10", "--min-time-s", "0.3",
                "--max-time-s", "2"]
SIMCMF_IMAGE = (1, 4, 1024, 1024)
COMPILE_S = 60.0  # torch.compile of a ViT-B starts only with this much of the stage left

# streams
STREAM_CAMERAS = (1, 2, 4)
STREAM_SECONDS = (2.0, 10.0)  # capture time per configuration, at least / at most
STREAM_OPEN_S = 3.0  # opening and warming one Segmenter of GoPT-B, about

NATIVE_BUILD = ROOT / "build" / "gpu-report-native"
NATIVE_GROUPS = "9;40;150"
PYTEST_SUITES = (("pytest -m gpu", ["-m", "gpu"]), ("kernel tests on the GPU", ["tests/test_kernels.py"]))


# ---- small helpers ------------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in (out.stdout or out.stderr).splitlines() if l.strip()]
    if not lines:
        return None
    return lines[-1] if cmd[0] == "nvcc" else lines[0]


def run_command(cmd: list[str], timeout_s: float, env=None, cwd=ROOT) -> dict:
    """Run ``cmd`` (its own process group, killed whole at the timeout): rc, seconds, output."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout_s))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        timed_out = True
    except BaseException:  # interrupted: the command's process group goes with us
        os.killpg(proc.pid, 9)
        raise
    return {"command": " ".join(cmd), "rc": proc.returncode, "timed_out": timed_out,
            "seconds": round(time.monotonic() - start, 1), "output": out or ""}


def tail(text: str, lines: int = 25) -> list[str]:
    return text.splitlines()[-lines:]


def _error_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


# ---- 1. environment -------------------------------------------------------------------------------

def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def source_state() -> dict:
    """The commit (with a flag for local changes) when there is a git checkout, and a SHA-256
    over the project's sources either way, so that a copy without .git is identified too."""
    state = {"commit": None, "local_changes": None}
    if shutil.which("git") and (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        if head.returncode == 0:
            state.update(commit=head.stdout.strip(), local_changes=bool(dirty.stdout.strip()))
    digest = hashlib.sha256()
    files = sorted(p for folder in SOURCE_FOLDERS for p in (ROOT / folder).rglob("*")
                   if p.is_file() and p.suffix in (".py", ".c", ".h", ".cpp", ".map"))
    for path in files + [ROOT / "CMakeLists.txt"]:
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    state["source_sha256"] = digest.hexdigest()
    return state


def gpu_properties() -> tuple[dict | None, str | None]:
    """(the GPU's properties, None) or (None, why there is none)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"torch.cuda.is_available() is False (PyTorch {torch.__version__}, CUDA {torch.version.cuda})"
    from kernels import tiles

    props = torch.cuda.get_device_properties(0)
    gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
           "memory_gib": round(props.total_memory / 2**30, 1), "sm_count": props.multi_processor_count,
           "l2_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1) or None,
           "bf16": torch.cuda.is_bf16_supported()}
    try:
        gpu["arch"] = tiles.arch_of_capability(props.major, props.minor)
    except ValueError as e:
        gpu["arch"], gpu["arch_problem"] = None, str(e)
    return gpu, None


def collect_environment() -> dict:
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "platform": platform.platform(), "cpu_cores": os.cpu_count(),
           "libraries": library_versions(), **source_state()}
    try:
        env["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    env["programs"] = {name: _first_line(cmd) if shutil.which(cmd[0]) else "not installed"
                       for name, cmd in PROGRAMS.items()}
    env["gpu"], env["no_gpu"] = gpu_properties()
    if env["gpu"]:
        import torch

        env["cuda"] = torch.version.cuda
        env["driver"] = _first_line(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        env["gpu_clocks"] = _first_line(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,power.limit",
                                         "--format=csv,noheader"])
    try:
        env["load_average_1min"] = os.getloadavg()[0]
    except OSError:
        env["load_average_1min"] = None
    return env


def environment(ctx) -> None:
    env = collect_environment()
    ctx.shared["environment"] = env
    ctx.result["environment"] = env
    gpu = env["gpu"]
    if gpu:
        ctx.note(f"{gpu['name']} (sm_{gpu['arch']}), {gpu['memory_gib']} GiB, CUDA {env['cuda']}, "
                 f"driver {env['driver']}; torch {env['libraries']['torch']}, triton {env['libraries']['triton']}")
    else:
        ctx.note(f"no CUDA GPU: {env['no_gpu']}")


# ---- 2. fused kernels -----------------------------------------------------------------------------

def kernel_configs() -> list[tuple]:
    """Every preset (kernel, dtype, B, S, C), those nearest the first of each list first."""
    keyed = []
    for ki, kernel in enumerate(KERNELS):
        for di, dtype in enumerate(KERNEL_DTYPES):
            for bi, B in enumerate(KERNEL_BATCHES):
                for si, S in enumerate(KERNEL_TOKENS):
                    for ci, C in enumerate(KERNEL_GROUPS):
                        keyed.append(((di + bi + si + ci, di, bi, si, ci, ki), (kernel, dtype, B, S, C)))
    return [config for _, config in sorted(keyed)]


def kernels(ctx) -> None:
    from benchmarks import kernels as kb

    args = kb.parse_args(KERNEL_ARGS)
    configs = kernel_configs()
    ctx.result["command"] = "python benchmarks/kernels.py " + " ".join(KERNEL_ARGS)
    ctx.result["copy_bandwidth_GBps"] = kb.copy_bandwidth(args)
    ctx.note(f"copy bandwidth {ctx.result['copy_bandwidth_GBps']:.0f} GB/s (1 GiB device-to-device, read + write)")
    refs, compiled_refs = kb.baselines(no_compile=False)
    done: dict[tuple, list] = {}

    def record(config, rows):
        kernel, dtype, B, S, C = config
        for row in rows:
            row["command"] = (f"python benchmarks/kernels.py --kernels {kernel} --dtypes {dtype} --batch {B} "
                              f"--seq {S} --groups {C} " + " ".join(KERNEL_ARGS))
        done[config] = rows
        ctx.result["rows"] = [r for c in configs if c in done for r in done[c]]
        ctx.result["summary"] = kb.summary({"results": [r for r in ctx.result["rows"] if "parity" in r]})
        ctx.checkpoint()

    parity_end = ctx.clock() + PARITY_SHARE * ctx.left()
    worker = functools.partial(parity_rows, args=args, copy_gbs=ctx.result["copy_bandwidth_GBps"])
    processes = min(PARITY_PROCESSES, os.cpu_count() or 1)
    for config, rows in parallel_ordered(worker, configs, processes, parity_end, ctx.clock):
        record(config, rows)
    ctx.note(f"parity of {len(done)} of {len(configs)} configurations in {processes} processes"
             + ("" if len(done) == len(configs) else " (the rest: budget)"))
    for i, config in enumerate(configs):
        ctx.check_time(f"timing configuration {i + 1} of {len(configs)} (parity: {len(done)} of {len(configs)})")
        try:
            rows = kb.measure_config(*config, args, ctx.result["copy_bandwidth_GBps"], refs, compiled_refs)
        except Exception as e:  # noqa: BLE001 - one configuration's failure is its row
            rows = error_rows(config, e)
        record(config, rows)
        if i < 12 or i % 20 == 0:
            ctx.note(kernel_line(config, rows[0]))


def error_rows(config: tuple, e: BaseException) -> list[dict]:
    _empty_cuda_cache()
    kernel, dtype, B, S, C = config
    return [{"kernel": kernel, "dtype": dtype, "B": B, "S": S, "C": C, "error": _error_line(e)}]


def parity_rows(config: tuple, args, copy_gbs: float, device: str = "cuda") -> list[dict]:
    """One configuration's parity rows (a worker process's job); the kernel variant the timing
    pass launches is compiled here too, into Triton's cache on disk, so that pass finds it."""
    from benchmarks import kernels as kb

    try:
        rows = kb.measure_config(*config, args, copy_gbs, {}, {}, timing=False, device=device)
    except Exception as e:  # noqa: BLE001 - the row carries it back to the stage
        return error_rows(config, e)
    if "skipped" not in rows[0]:
        try:
            compile_timed_variant(config, args, device)
        except Exception as e:  # noqa: BLE001 - the timing pass will meet it again and say so
            rows[0]["warm_up_error"] = _error_line(e)
    return rows


def compile_timed_variant(config: tuple, args, device: str) -> None:
    """Launch the kernel once as the timing pass will (no assignments written)."""
    import torch

    from benchmarks import kernels as kb
    from kernels.group_merge_triton import _group_merge
    from kernels.prompt_inject_triton import _prompt_inject

    kernel, dtype, B, S, C = config
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    inputs = kb.make_inputs(kernel, B, S, C, args.prompt_dim, args.width, torch_dtype, args.seed, device)
    (_group_merge if kernel == "group_merge" else _prompt_inject)(*inputs)


def parallel_ordered(fn, items: list, processes: int, deadline: float, clock=time.monotonic):
    """(item, fn(item)) in the order of ``items``, computed by ``processes`` fresh processes,
    until ``deadline``; then the workers still busy are stopped."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(processes)
    try:
        results = pool.imap(fn, items)
        for item in items:
            left = deadline - clock()
            if left <= 0:
                return
            try:
                yield item, results.next(timeout=min(left, 86400.0))
            except multiprocessing.TimeoutError:
                return
    finally:
        pool.terminate()
        pool.join()


def kernel_line(config: tuple, row: dict) -> str:
    what = " ".join(map(str, config))
    if "parity" not in row or not row.get("ms"):
        return f"{what}: {row.get('error') or row.get('skipped') or 'not timed'}"
    line = f"{what}: parity {'ok' if row['parity']['ok'] else 'FAIL'}, {row['ms']:.4f} ms"
    for key, name in (("speedup_vs_eager", "eager"), ("speedup_vs_compile", "torch.compile")):
        if row.get(key):
            line += f", {row[key]:.2f}x {name}"
    return line


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort after a failure
        pass


# ---- 3. the C library ----------------------------------------------------------------------------

def cmake_commands(arch: str, build_dir: Path, python: str, jobs: int, ninja: bool) -> list[list[str]]:
    """Configure and build libgopt_kernels.so with the AOT kernels of ``arch`` only (every
    dtype, the GoPT group counts, no PTX)."""
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), *(["-G", "Ninja"] if ninja else []),
                 f"-DPython3_EXECUTABLE={python}", f"-DGOPT_CUDA_ARCHS={arch}", "-DGOPT_PTX_ARCH=",
                 "-DGOPT_DTYPES=fp32;fp16;bf16", f"-DGOPT_GROUPS={NATIVE_GROUPS}", f"-DGOPT_AOT_JOBS={jobs}"]
    return [configure, ["cmake", "--build", str(build_dir), "--parallel", str(jobs)]]


def reusable_build(build_dir: Path, ninja: bool) -> bool:
    """False when ``build_dir`` holds a CMake build of another source folder or generator."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return True
    text = cache.read_text(errors="replace")
    home = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", text, re.MULTILINE)
    generator = re.search(r"^CMAKE_GENERATOR:INTERNAL=(.*)$", text, re.MULTILINE)
    return (home is not None and Path(home.group(1)) == ROOT and generator is not None
            and (generator.group(1) == "Ninja") == ninja)


def build_native(ctx, arch: str) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmds = cmake_commands(arch, NATIVE_BUILD, sys.executable, os.cpu_count() or 1, bool(shutil.which("ninja")))
    if not reusable_build(NATIVE_BUILD, bool(shutil.which("ninja"))):
        shutil.rmtree(NATIVE_BUILD)  # carried from another checkout or made with another generator
    build = {"commands": [" ".join(c) for c in cmds]}
    ctx.result["build"] = build
    for cmd in cmds:
        ctx.check_time("building the C library")
        run = run_command(cmd, 0.7 * ctx.left(), env=env)
        build.setdefault("seconds", 0.0)
        build["seconds"] += run["seconds"]
        if run["rc"] != 0:
            build["output_tail"] = tail(run["output"])
            why = f"rc {run['rc']}" + (", timed out" if run["timed_out"] else "")
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({why}): {(tail(run['output'], 1) or [''])[0]}")
    manifest = NATIVE_BUILD / "aot" / "manifest.json"
    if manifest.is_file():
        import json

        m = json.loads(manifest.read_text())
        build.update(builds=len(m["builds"]), rejected=[r.get("problem") for r in m["rejected"]],
                     triton_version=m["triton_version"])
    ctx.note(f"built {NATIVE_BUILD / 'libgopt_kernels.so'} in {build['seconds']:.0f} s "
             f"({build.get('builds', '?')} kernels for sm_{arch})")
    return NATIVE_BUILD / "libgopt_kernels.so"


def native_parity(lib, dname: str, C: int, seed: int = 0) -> list[dict]:
    """The C library's two kernels against the reference and the Python-launched Triton kernels
    (the same Triton source and tile: the outputs should be bitwise equal)."""
    import torch

    from benchmarks import kernels as kb
    from kernels.group_merge_triton import _group_merge
    from kernels.prompt_inject_triton import _prompt_inject
    from kernels.reference import group_merge_reference, prompt_inject_reference

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dname]
    B, S, d, D = 2, 1200, 32, 768
    rows = []
    for kernel, native_fn, triton_fn, ref_fn in (
            ("group_merge", lib.group_merge, _group_merge, group_merge_reference),
            ("prompt_inject", lib.prompt_inject, _prompt_inject, prompt_inject_reference)):
        inputs = kb.make_inputs(kernel, B, S, C, d, D, dtype, seed)
        out, via_triton, ref = native_fn(*inputs), triton_fn(*inputs), ref_fn(*inputs)
        torch.cuda.synchronize()
        ok, err = kb.tolerance_ok(out, ref, dtype)
        rows.append({"kernel": kernel, "dtype": dname, "B": B, "S": S, "C": C, "d": d, "D": D,
                     "within_tolerance_of_reference": ok, "max_rel_err_vs_reference": err,
                     "bitwise_equal_to_triton_launch": bool(torch.equal(out, via_triton)),
                     "max_abs_diff_to_triton_launch": float((out.float() - via_triton.float()).abs().max())})
    return rows


def launch_overhead(lib, calls: int = 300) -> list[dict]:
    """Host time per back-to-back call (launch cost: a small problem) and device time, for the
    C library through ctypes and for Triton's Python launcher."""
    import torch
    from triton.testing import do_bench

    from benchmarks import kernels as kb
    from kernels.group_merge_triton import _group_merge
    from kernels.prompt_inject_triton import _prompt_inject

    rows = []
    for kernel, native_fn, triton_fn in (("group_merge", lib.group_merge, _group_merge),
                                         ("prompt_inject", lib.prompt_inject, _prompt_inject)):
        inputs = kb.make_inputs(kernel, 1, 196, 9, 32, 768, torch.float16, 0)
        for launcher, fn in (("C library (ctypes)", native_fn), ("Triton (Python)", triton_fn)):
            fn(*inputs)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                fn(*inputs)
            torch.cuda.synchronize()
            host_us = (time.perf_counter() - start) / calls * 1e6
            gpu_ms = do_bench(lambda: fn(*inputs), warmup=10, rep=40, return_mode="median")
            rows.append({"kernel": kernel, "launcher": launcher, "shape": "B 1, S 196, C 9, d 32, D 768, fp16",
                         "host_us_per_call": host_us, "device_us": gpu_ms * 1e3, "calls": calls})
    return rows


def native(ctx) -> None:
    env = ctx.shared.get("environment") or {}
    arch = (env.get("gpu") or {}).get("arch")
    if not arch:
        ctx.result.update(status="skipped", reason=(env.get("gpu") or {}).get("arch_problem",
                                                                           "no target for this GPU"))
        return
    from kernels.native import NativeKernels

    path = build_native(ctx, arch)
    ctx.shared["native_build"] = NATIVE_BUILD
    lib = NativeKernels(path)
    rows = ctx.result.setdefault("parity", [])
    for dname in ("fp16", "bf16", "fp32"):
        for C in (9, 150):
            ctx.check_time(f"the C library's {dname} C={C} parity")
            rows += native_parity(lib, dname, C)
            ctx.checkpoint()
    ctx.check_time("the launch overhead")
    ctx.result["launch_overhead"] = launch_overhead(lib)


# ---- 4. GoPT-B and SimCMF end to end ------------------------------------------------------------

def demo_checkpoints(shared: dict, modalities=("thermal", "depth"), tiny: bool = False) -> dict:
    """The demo checkpoints (written once per run into a temporary folder): modality -> path."""
    from models.checkpoint import save_gopt
    from models.demo_checkpoint import CLASS_TOKEN_STD, DEFAULT_PATHS, DEFAULT_SEEDS, build_demo_gopt, demo_config

    paths = shared.setdefault("checkpoints", {})
    folder = Path(shared.setdefault("work_dir", tempfile.mkdtemp(prefix="gpu-report-")))
    for modality in modalities:
        if modality not in paths:
            # the names python -m models.demo_checkpoint [--modality depth] [--tiny] gives them
            path = folder / Path(DEFAULT_PATHS[modality]).name.replace("_demo_", "_tiny_" if tiny else "_demo_")
            save_gopt(build_demo_gopt(DEFAULT_SEEDS[modality], demo_config(modality, tiny),
                                      CLASS_TOKEN_STD[modality]), path)
            paths[modality] = path
    return paths


def latency_args(model_path: Path, work_dir: Path):
    from benchmarks import latency

    return latency.parse_args([str(model_path), *LATENCY_ARGS, "--work-dir", str(work_dir)])


class GoptModel:
    """One checkpoint's frames, fp32 eager reference labels and latency.py arguments."""

    def __init__(self, path: Path, label: str, work_dir: Path):
        from benchmarks import latency
        from models.checkpoint import read_torch_file

        cfg = read_torch_file(path)["config"]
        self.path, self.label = path, label
        self.size = tuple(cfg["img_size"])
        self.args = latency_args(path, work_dir)
        self.frames = latency.real_frames(cfg["modality"], self.size)
        self.reference = latency.reference_labels(path, self.frames, self.args, None)


def gopt_config_rows(model: GoptModel, backend: str, precision: str, cuda_graph: bool, batches, check_time,
                     rows: list | None = None) -> list[dict]:
    """Rows of one backend / precision / CUDA graph setting of ``model``, one per batch size
    (``check_time(what)`` before each), or one row saying why it cannot run; appended to
    ``rows`` as they are measured, so that those before an OutOfTime stay."""
    rows = [] if rows is None else rows
    from benchmarks import latency

    base = {"model": model.label, "input": f"{model.size[0]}x{model.size[1]}", "backend": backend,
            "precision": precision, "cuda_graph": cuda_graph, "mode": "compute-only",
            "command": " ".join(["python benchmarks/latency.py", model.path.name, "--backend", backend, "--precision",
                                 precision, "--batch", ",".join(map(str, batches)), *LATENCY_ARGS]
                                + (["--cuda-graph"] if cuda_graph else []))}
    args = copy.copy(model.args)
    args.cuda_graph = cuda_graph
    try:
        b = latency.make_backend(model.path, backend, precision, args)
    except latency.Unavailable as why:
        rows.append({**base, "status": f"{why.status}: {why}"})
        return rows
    try:
        agreement = latency.label_agreement(b, model.reference, model.frames)
        for batch in batches:
            check_time(f"{model.label} {backend} {precision}{' CUDA graph' if cuda_graph else ''} batch {batch}",
                       COMPILE_S if backend == "compile" else 0)  # each new batch size compiles again
            row = {**base, "batch": batch, "device": b.device, "label_agreement": agreement}
            try:
                measured = latency.bench_one(b, "compute-only", batch, model.frames, args)
                row.update(status="ok", latency_ms=measured["latency_ms"], throughput_fps=measured["throughput_fps"],
                           iters=measured["iters"], cv=measured["cv"],
                           gpu_peak_mb=measured["memory"].get("gpu_allocator_peak_mb"))
            except latency.Unavailable as why:
                row["status"] = f"{why.status}: {why}"
            except Exception as e:  # noqa: BLE001 - out of memory at batch 32, say: the row says so
                _empty_cuda_cache()
                row["status"] = f"error: {_error_line(e)}"
            rows.append(row)
    finally:
        b.close()
    return rows


def simcmf_state(args, device: str = "cuda", config=None, image=SIMCMF_IMAGE) -> dict:
    """What ``simcmf_rows`` keeps between calls: latency.py's settings, the device, the model's
    config (None: the demo's SAM ViT-B, RGB-T) and the image shape [B, C, S, S]."""
    return {"args": args, "device": device, "config": config, "image": image}


def simcmf_rows(state: dict, precision: str, compiled: bool, check_time) -> list[dict]:
    """The SimCMF image encoder in PyTorch on ``state["device"]``: one row, with the relative
    error of its embedding against fp32 eager on the same input (once that has run)."""
    import torch

    from benchmarks import latency
    from models.demo_simcmf import build_demo_simcmf

    check_time(f"SimCMF encoder {precision}{' torch.compile' if compiled else ''}", COMPILE_S if compiled else 0)
    device, cuda = state["device"], state["device"] == "cuda"
    if "cpu_model" not in state:
        state["cpu_model"] = build_demo_simcmf(0, state["config"])
        state["x"] = torch.randn(*state["image"], generator=torch.Generator().manual_seed(0))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = copy.deepcopy(state["cpu_model"]).to(device=device, dtype=dtype).eval()
    x = state["x"].to(device=device, dtype=dtype)
    encode = torch.compile(model.encode) if compiled else model.encode
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    args = state["args"]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        first = time.perf_counter()
        embedding = encode(x).float()
        sync()
        first_s = time.perf_counter() - first
        if "fp32_embedding" not in state and precision == "fp32" and not compiled:
            state["fp32_embedding"] = embedding
        samples = latency.measure(lambda i: encode(x), sync, args.warmup_s, args.min_iters, args.min_time_s,
                                  args.max_time_s)
    stats = latency.summarize(samples, state["image"][0])
    ref = state.get("fp32_embedding")
    B, C, H, W = state["image"]
    row = {"model": "SimCMF encoder" if state["config"] else "SimCMF ViT-B encoder", "input": f"{H}x{W}x{C}",
           "backend": "compile" if compiled else "torch", "precision": precision, "batch": B, "device": device,
           "status": "ok", "latency_ms": stats["latency_ms"], "throughput_fps": stats["throughput_fps"],
           "iters": stats["iters"], "cv": stats["cv"], "first_call_s": first_s,
           "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
           "embedding_rel_err_vs_fp32": float((embedding - ref).norm() / ref.norm()) if ref is not None else None}
    del model, x
    _empty_cuda_cache()
    return [row]


def gopt(ctx) -> None:
    paths = demo_checkpoints(ctx.shared)
    work = Path(ctx.shared["work_dir"])
    models = {}

    def model(modality):
        if modality not in models:
            ctx.check_time(f"loading the {modality} demo checkpoint")
            models[modality] = GoptModel(paths[modality], dict(GOPT_MODELS)[modality], work)
        return models[modality]

    simcmf = simcmf_state(latency_args(paths["thermal"], work))
    rows = ctx.rows()
    items = ([("gopt", "thermal", c) for c in GOPT_EAGER + GOPT_GRAPHS + GOPT_COMPILE]
             + [("simcmf", "fp32", False), ("simcmf", "bf16", False)]
             + [("gopt", "depth", c) for c in GOPT_EAGER]
             + [("simcmf", "bf16", True)]
             + [("gopt", "depth", c) for c in GOPT_GRAPHS + GOPT_COMPILE])
    for kind, what, setting in items:
        first = len(rows)
        try:
            if kind == "gopt":
                backend, precision, graph = setting
                gopt_config_rows(model(what), backend, precision, graph, GOPT_BATCHES, ctx.check_time, rows)
            else:
                rows += simcmf_rows(simcmf, what, setting, ctx.check_time)
        except OutOfTime as e:
            if ctx.expired():
                raise
            ctx.note(f"skipped: {e}")  # a torch.compile that would not fit; cheaper items may
        finally:
            for r in rows[first:]:
                ctx.note(gopt_line(r))
            ctx.checkpoint()


def gopt_line(r: dict) -> str:
    what = f"{r['model']} {r['backend']} {r['precision']}{' +graph' if r.get('cuda_graph') else ''}"
    if r.get("status") != "ok":
        return f"{what}: {r.get('status')}"
    lat = r["latency_ms"]
    agree = r.get("label_agreement")
    return (f"{what} batch {r['batch']}: p50 {lat['p50']:.2f} ms, {r['throughput_fps']:.1f} frames/s"
            + (f", labels {100 * agree:.2f}%" if agree is not None else ""))


# ---- 5. streams ---------------------------------------------------------------------------------

def stream_seconds(left_s: float, cameras=STREAM_CAMERAS) -> float:
    """Capture seconds per configuration that fit ``left_s`` for all camera counts."""
    from benchmarks import streams

    configs = sum(len(streams.SINGLE_CONFIGS) if n == 1 else len(streams.MULTI_CONFIGS) for n in cameras)
    opening = sum(STREAM_OPEN_S * (1 + (n if n > 1 else 0)) for n in cameras)
    lo, hi = STREAM_SECONDS
    return max(lo, min(hi, (left_s - opening) / configs))


def stream_runs(model_path: Path, cameras, duration_s: float, check_time, on_result) -> None:
    """benchmarks/streams.py for each camera count in turn; ``on_result(n, result)`` after each."""
    from benchmarks import streams

    for n in cameras:
        check_time(f"{n} camera pair{'s' if n > 1 else ''}")
        argv = [str(model_path), "--cameras", str(n), "--duration-s", f"{duration_s:g}"]
        result = streams.run_benchmark(streams.parse_args(argv), ["benchmarks/streams.py", *argv])
        for run in result["runs"]:
            run.pop("series", None)  # per-frame records: the summary and drop events stay
        on_result(n, result)


def streams(ctx) -> None:
    path = demo_checkpoints(ctx.shared, ("thermal",))["thermal"]
    duration = stream_seconds(ctx.left())
    ctx.result.update(duration_s=duration, model="GoPT-B RGB-T demo checkpoint (PyTorch, Segmenter defaults)")
    results = ctx.result.setdefault("results", {})

    def keep(n, result):
        results[str(n)] = result
        for run in result["runs"]:
            for cam in run["cameras"]:
                lat = cam["latency_ms"]
                ctx.note(f"{n} camera pair(s) {run['config']} cam {cam['camera']}: {cam['fps']:.1f} frames/s, "
                         f"latency p50 {lat.get('p50', float('nan')):.0f} ms, dropped {100 * cam['drop_rate']:.0f}%")
        ctx.checkpoint()

    stream_runs(path, STREAM_CAMERAS, duration, ctx.check_time, keep)


# ---- 6. ONNX Runtime CUDA and TensorRT ---------------------------------------------------------

def onnxruntime_cuda() -> str | None:
    """None when ONNX Runtime has its CUDA provider, else the one-line reason."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "not installed: onnxruntime-gpu (no onnxruntime at all)"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (f"not installed: onnxruntime-gpu (onnxruntime {ort.__version__} has "
                f"{', '.join(providers)} only)")
    return None


def tensorrt_installed() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "not installed: tensorrt"
    return None


EXPORT_PACKAGES = (("onnxscript", "onnxscript"), ("onnxslim", "onnxslim"),
                   ("onnxconverter_common", "onnxconverter-common"))


def export_missing() -> str | None:
    """None when the ONNX export (which the ONNX Runtime and TensorRT rows start from) can run."""
    import importlib.util

    missing = [package for module, package in EXPORT_PACKAGES if importlib.util.find_spec(module) is None]
    if missing:
        return (f"not installed: {', '.join(missing)} (the ONNX export these rows start from needs "
                "them; benchmarks/gpu_report.md says how to carry them)")
    return None


def ort_commands(ckpt: Path, work: Path) -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [("ONNX Runtime CUDA: fp32, fp16, fp32 raw-frame input, INT8",
             [py, "benchmarks/latency.py", str(ckpt), "--backend", "onnxruntime", "--precision",
              "fp32,fp16,fp32:uint8-input,int8", "--batch", "1,8", *LATENCY_ARGS, "--work-dir", str(work),
              "--json", str(work / "ort.json")])]


def trt_commands(ckpt: Path, work: Path, plugins: Path | None) -> list[tuple[str, list[str]]]:
    """(what, command) in order: the exports, the engines (fp16, INT8 from the Q/DQ model,
    raw-frame input, the fused-kernel graph with the plugin library) and their timing."""
    py = sys.executable
    onnx, raw = work / "gopt.onnx", work / "gopt_uint8.onnx"
    engines = {"fp16": work / "gopt_fp16.engine", "int8": work / "gopt_int8.engine",
               "fp16:uint8-input": work / "gopt_uint8_fp16.engine"}
    cmds = [("export", [py, "-m", "export.onnx", str(ckpt), "-o", str(onnx), "--dynamic-batch"]),
            ("export raw-frame input", [py, "-m", "export.onnx", str(ckpt), "-o", str(raw), "--dynamic-batch",
                                        "--uint8-input"]),
            ("INT8 Q/DQ model", [py, "-m", "export.quantize", str(onnx), "--int8", "--target", "tensorrt", "-o",
                                 str(work / "gopt.int8.onnx")]),
            ("engine fp16", [py, "-m", "export.tensorrt", str(onnx), "-o", str(engines["fp16"]), "--fp16",
                             "--max-batch", "8"]),
            ("engine INT8", [py, "-m", "export.tensorrt", str(work / "gopt.int8.onnx"), "-o", str(engines["int8"]),
                             "--max-batch", "8"]),
            ("engine raw-frame input fp16", [py, "-m", "export.tensorrt", str(raw), "-o",
                                             str(engines["fp16:uint8-input"]), "--fp16", "--max-batch", "8"])]
    if plugins is not None:
        fused = work / "gopt_fused.onnx"
        engines["fp16 fused kernels"] = work / "gopt_fused_fp16.engine"
        cmds += [("export fused kernels", [py, "-m", "export.onnx", str(ckpt), "-o", str(fused), "--dynamic-batch",
                                           "--fused-kernels"]),
                 ("engine fused kernels fp16", [py, "-m", "export.tensorrt", str(fused), "-o",
                                                str(engines["fp16 fused kernels"]), "--fp16", "--max-batch", "8",
                                                "--plugins", str(plugins)])]
    for i, (what, engine) in enumerate(engines.items()):
        precision = what.split()[0]  # latency.py names what it cannot time on TensorRT in its row
        cmds.append((f"TensorRT {what}", [py, "benchmarks/latency.py", str(engine), "--backend", "tensorrt",
                                          "--precision", precision, "--batch", "1,8", *LATENCY_ARGS,
                                          "--json", str(work / f"trt_{i}.json")]))
    return cmds


def run_pipeline(ctx, label: str, cmds) -> None:
    """Run ``cmds`` in order within the stage's time; rows from the latency JSON each writes."""
    import json

    for what, cmd in cmds:
        ctx.check_time(f"{label}: {what}")
        run = run_command(cmd, ctx.left())
        row = {"what": f"{label}: {what}", "command": run["command"], "rc": run["rc"], "seconds": run["seconds"]}
        if run["rc"] != 0:
            row["status"] = f"failed (rc {run['rc']}{', timed out' if run['timed_out'] else ''})"
            row["output_tail"] = tail(run["output"])
            ctx.rows().append(row)
            ctx.note(f"{row['what']}: {row['status']}")
            return
        json_path = Path(cmd[cmd.index("--json") + 1]) if "--json" in cmd else None
        if json_path and json_path.is_file():
            row["status"] = "ok"
            row["results"] = json.loads(json_path.read_text())["results"]
        else:
            row["status"] = "ok"
        ctx.rows().append(row)
        ctx.checkpoint()


def ort_trt(ctx) -> None:
    ort_missing, trt_missing = onnxruntime_cuda(), tensorrt_installed()
    rows = ctx.rows()
    if ort_missing:
        rows.append({"what": "ONNX Runtime CUDA", "status": ort_missing})
    if trt_missing:
        rows.append({"what": "TensorRT (fp16, INT8, raw-frame input, fused-kernel engine with the plugins)",
                     "status": trt_missing})
    if ort_missing and trt_missing:
        ctx.result.update(status="skipped", reason=f"{ort_missing}; {trt_missing}")
        return
    if export_missing():
        rows.append({"what": "ONNX export", "status": export_missing()})
        ctx.result.update(status="skipped", reason=export_missing())
        return
    ckpt = demo_checkpoints(ctx.shared, ("thermal",))["thermal"]
    work = Path(ctx.shared["work_dir"]) / "exports"
    work.mkdir(parents=True, exist_ok=True)
    if not ort_missing:
        run_pipeline(ctx, "ONNX Runtime CUDA", ort_commands(ckpt, work))
    if not trt_missing:
        build = ctx.shared.get("native_build")
        plugins = build / "libgopt_trt_plugins.so" if build and (build / "libgopt_trt_plugins.so").is_file() else None
        if plugins is None:
            rows.append({"what": "TensorRT fused-kernel engine", "status": "needs libgopt_trt_plugins.so, which CMake "
                         "builds only where TensorRT's headers are (-DTENSORRT_ROOT)"})
        run_pipeline(ctx, "TensorRT", trt_commands(ckpt, work, plugins))


# ---- 7. the GPU tests ---------------------------------------------------------------------------

_SUMMARY = re.compile(r"\b\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b")


def pytest_summary(output: str) -> str | None:
    """pytest's closing line ("3 passed, 1 skipped in 2.1s"), without the ===."""
    for line in reversed(output.splitlines()):
        if _SUMMARY.search(line) or "no tests ran" in line:
            return line.strip(" =")
    return None


def xdist_args() -> list[str]:
    """Tests in parallel processes when pytest-xdist is there: the kernel tests spend most of
    their time compiling kernel variants, one CPU core each."""
    import importlib.util

    return ["-n", str(min(8, os.cpu_count() or 1))] if importlib.util.find_spec("xdist") else []


def gpu_tests(ctx) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    build = ctx.shared.get("native_build")
    if build:
        env["GOPT_BUILD_DIR"] = str(build)
    rows = ctx.rows()
    for i, (label, extra) in enumerate(PYTEST_SUITES):
        ctx.check_time(label)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist_args(), *extra]
        share = 1.0 if i == len(PYTEST_SUITES) - 1 else 0.4
        run = run_command(cmd, share * ctx.left(), env=env)
        row = {"suite": label, "command": " ".join(["python", *cmd[1:]]), "rc": run["rc"], "seconds": run["seconds"],
               "summary": pytest_summary(run["output"]) or ("timed out" if run["timed_out"] else "no summary line"),
               "native_library": str(build) if build else "not built (the C library's tests skip)"}
        if run["rc"] not in (0, 5):  # 5: no test selected
            row["output_tail"] = tail(run["output"], 40)
        rows.append(row)
        ctx.note(f"{label}: {row['summary']} ({run['seconds']:.0f} s)")
        ctx.checkpoint()
