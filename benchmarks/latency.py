"""Latency and throughput of GoPT and SimCMF across backends, side by side, with an accuracy column.

    python benchmarks/latency.py MODEL [MODEL ...] [--backend torch,triton,compile,onnxruntime,openvino,tensorrt]
        [--batch 1,4,16,32] [--size 480x640] [--precision fp32,fp16,bf16,int8] [--warmup-s 2]
        [--min-iters 50] [--min-time-s 2] [--cuda-graph] [--end-to-end | --compute-only]
        [--interleave] [--json OUT] [--plot OUT.png] [--markdown] [--quick]

MODEL: a ``gopt/1`` checkpoint or a SimCMF checkpoint (with ``--base`` for a delta; every
backend; ONNX exports are made and cached in ``--work-dir``), an exported ``.onnx``
(onnxruntime; SimCMF: its encoder file) or a TensorRT ``.engine``. For SimCMF,
compute-only times the image encoder at its input size (1024x1024) and end-to-end one
image and one click per call; the accuracy column is mask agreement for a centre click.

End-to-end is what a robot pays: uint8 frames in, label maps at the frame size out,
preprocessing included (``Segmenter.run_batch``). Compute-only is the model alone on
model-space tensors already on its device. Every timed region is closed by a device
synchronisation; several input sets are rotated; each row states its speed relative to
PyTorch eager fp32 measured in the same run, and the label-map agreement of that backend
with PyTorch fp32 on the bundled real frames. Backends that cannot run here are listed
as "unavailable: <why>".

--precision int8: the INT8 model ``python -m export.quantize`` makes of the export for the
backend (cached): ONNX Runtime runs the dynamic one (``--target onnxruntime``), OpenVINO the
Q/DQ one (``--target tensorrt``, which it runs with its integer kernels). OpenVINO fp32
computes in fp32, bf16 in the CPU's native bf16 (runtime/backends/openvino_backend.py); ONNX Runtime's
CPU provider has no bf16 kernels. A precision with ``:uint8-input`` (``fp32:uint8-input``):
the export that takes raw frames (``python -m export.onnx --uint8-input``). --interleave: every
configuration of a model is timed in turns, one call each per round, so that a shared
machine's load falls on all of them alike; exported .onnx files given after a checkpoint
join its run (ratios and label agreement against its PyTorch fp32).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.cli import (ArgumentParser, check_result_outputs, count, input_file, output_dir,  # noqa: E402
                         positive, run_tool, seconds)
from runtime.files import write_figure_atomic, write_text_atomic  # noqa: E402  (after the path insert)
from runtime.metadata import warn_if_unverified  # noqa: E402

BACKENDS = ("torch", "triton", "compile", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MODES = ("end-to-end", "compute-only")
SAMPLES = ROOT / "data" / "samples"
N_SETS = 4  # input sets rotated through the timed iterations


class Unavailable(Exception):
    """This backend / precision cannot run on this machine: the message says why."""

    status = "unavailable"


class SkippedInQuick(Unavailable):
    """Runs here, but takes too long for --quick: the message says why."""

    status = "skipped in --quick"


QUICK_EXPORT_MAX_MB = 50  # --quick exports a checkpoint to ONNX only below this size (ViT-B: 330 MB, ~30 s)


# ---- environment --------------------------------------------------------------------------------

def _run(cmd) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(argv) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    libs = {}
    for name in ("numpy", "opencv-python-headless", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch",
                 "triton", "tensorrt"):
        with contextlib.suppress(PackageNotFoundError):
            libs[name] = version(name)
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python", *argv]), "cpu": cpu, "cpu_cores": os.cpu_count(),
           "platform": platform.platform(), "python": platform.python_version(), "libraries": libs}
    with contextlib.suppress(OSError):
        env["load_average_1min"] = os.getloadavg()[0]
    with contextlib.suppress(OSError):
        env["cpu_governor"] = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    try:
        import torch

        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name()
            env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
            env["cuda"] = torch.version.cuda
            env["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
            env["gpu_clocks"] = _run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,"
                                      "persistence_mode,power.limit", "--format=csv"])
    except ImportError:
        pass
    return env


# ---- statistics ---------------------------------------------------------------------------------

def summarize(samples_ms: list[float], batch: int) -> dict:
    a = np.asarray(samples_ms)
    mean, std = float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
    pct = {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 95, 99)}
    return {"latency_ms": {"min": float(a.min()), **pct, "max": float(a.max()), "mean": mean, "std": std},
            "throughput_fps": batch * 1000.0 / mean, "iters": len(a), "cv": std / mean if mean else 0.0}


def measure(step, sync, warmup_s: float, min_iters: int, min_time_s: float, max_time_s: float) -> list[float]:
    """Warm up by time, then time ``step`` (closed by ``sync``) at least ``min_iters`` times and
    ``min_time_s`` seconds, stopping at ``max_time_s``."""
    t_end = time.perf_counter() + warmup_s
    i = 0
    while True:
        step(i)
        sync()
        i += 1
        if time.perf_counter() >= t_end:
            break
    samples, start = [], time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step(i)
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
        i += 1
        elapsed = time.perf_counter() - start
        if (len(samples) >= min_iters and elapsed >= min_time_s) or (elapsed >= max_time_s and len(samples) >= 3):
            return samples


def memory(device: str) -> dict:
    out = {}
    with contextlib.suppress(OSError):
        status = Path("/proc/self/status").read_text()
        for key, name in (("VmRSS", "rss_mb"), ("VmHWM", "peak_rss_mb")):
            kb = next(int(l.split()[1]) for l in status.splitlines() if l.startswith(key + ":"))
            out[name] = kb / 1024
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        out["gpu_allocator_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_device_used_mb"] = (total - free) / 2**20
    return out


# ---- inputs -------------------------------------------------------------------------------------

def real_frames(modality: str, size) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bundled real frames of the modality at ``size``, plus mirrored copies (N_SETS pairs)."""
    if modality == "depth":
        pairs = [(cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR),
                  cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED))]
    else:
        pairs = []
        for name in ("mfnet_01234N.png", "mfnet_01477D.png"):
            f = cv2.imread(str(SAMPLES / name), cv2.IMREAD_UNCHANGED)
            pairs.append((f[..., :3], f[..., 3]))
    h, w = size
    interp = cv2.INTER_NEAREST if modality == "depth" else cv2.INTER_LINEAR
    pairs = [(cv2.resize(r, (w, h)), cv2.resize(a, (w, h), interpolation=interp)) for r, a in pairs]
    pairs += [(r[:, ::-1].copy(), a[:, ::-1].copy()) for r, a in pairs]
    return (pairs * N_SETS)[:N_SETS]


def simcmf_images(cfg: dict) -> list[np.ndarray]:
    """N_SETS images for SimCMF at the MFNet frame size: the real RGB-T frame (C=4) or its
    thermal channel (C=1) and mirrored copies; seeded random uint8 images for other C."""
    f = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    C = cfg["in_chans"]
    if C == 4:
        base = [f, f[:, ::-1]]
    elif C == 1:
        base = [f[..., 3], f[:, ::-1, 3]]
    else:
        rng = np.random.default_rng(0)
        base = [rng.integers(0, 256, (480, 640, C), dtype=np.uint8) for _ in range(2)]
    images = [np.ascontiguousarray(b) for b in base]
    images += [np.ascontiguousarray(b[::-1]) for b in images]
    return images[:N_SETS]


def model_kind(path: Path) -> str:
    """"gopt" or "simcmf", from the checkpoint, the ONNX metadata or the engine's sidecar."""
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        from models.checkpoint import read_torch_file

        return "gopt" if read_torch_file(path).get("format") == "gopt/1" else "simcmf"
    if suffix == ".onnx":
        from runtime.metadata import read_onnx_info

        kind = read_onnx_info(path).kind
    elif suffix in (".engine", ".plan"):
        from runtime.backends.trt_backend import read_sidecar

        kind = read_sidecar(path).model.kind
    else:
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected a checkpoint (.pt / .pth), an "
                         ".onnx export or a TensorRT engine (.engine / .plan)")
    if kind == "simcmf_decoder":
        raise ValueError(f"{path}: a SimCMF decoder; time its encoder (NAME.encoder.onnx), which finds the decoder")
    return "gopt" if kind == "gopt" else "simcmf"


# ---- backends -----------------------------------------------------------------------------------

def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checkpoint_model(path, size):
    from models import load_gopt

    model = load_gopt(path)
    if size and tuple(size) != model.config.img_size:
        model.set_img_size(size)
    return model


def cached_stem(ckpt: Path, work_dir: Path, *settings) -> Path:
    """Where an export of ``ckpt`` with ``settings`` is cached (keyed by its head, size, settings)."""
    h = hashlib.sha1()
    with open(ckpt, "rb") as f:
        h.update(f.read(1 << 20))
    h.update(" ".join(map(str, (os.path.getsize(ckpt), *settings))).encode())
    return work_dir / f"{ckpt.stem}.{h.hexdigest()[:12]}.{settings[-1]}"


def onnx_cache_path(ckpt: Path, size, precision: str, work_dir: Path) -> Path:
    return Path(f"{cached_stem(ckpt, work_dir, size, precision)}.onnx")


def quick_check_export(ckpt: Path, cached: Path, args) -> None:
    """--quick (backends not chosen): no ONNX export of a large checkpoint unless one is cached."""
    mb = os.path.getsize(ckpt) / 2**20
    if args.quick and not args.backend_given and not cached.exists() and mb > QUICK_EXPORT_MAX_MB:
        raise SkippedInQuick(f"needs an ONNX export of the {mb:.0f} MB checkpoint (about 30 s for ViT-B); pass "
                             "the exported .onnx, or run once without --quick to cache it in --work-dir")


def model_precisions(path: Path, args) -> list[str]:
    """--precision, or for an exported file without it the file's own precision (an INT8 or
    raw-frame export is timed as what it is, not refused as "not fp32")."""
    if args.precision_given or path.suffix.lower() in (".pt", ".pth"):
        return args.precisions
    if path.suffix.lower() == ".onnx":
        from runtime.metadata import read_onnx_info

        return [file_precision(read_onnx_info(path))]
    from runtime.backends.trt_backend import read_sidecar

    return [file_precision(read_sidecar(path).model)]


def file_precision(info) -> str:
    """A model file's precision as --precision names it: "int8", "fp32:uint8-input", ..."""
    return info.precision + (":uint8-input" if info.frame_input else "")


def onnx_for(ckpt: Path, size, precision: str, work_dir: Path, target: str = "onnxruntime") -> Path:
    """Export (once, cached by checkpoint contents and settings) a dynamic-batch ONNX model;
    "int8" is the model export.quantize makes of the fp32 export for ``target``."""
    from export.onnx import export_gopt
    from export.progress import Progress

    base, _, variant = precision.partition(":")
    if base == "int8":
        return int8_for(onnx_for(ckpt, size, "fp32" + (f":{variant}" if variant else ""), work_dir), target)
    out = onnx_cache_path(ckpt, size, precision, work_dir)
    if not out.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        print(f"  exporting {ckpt.name} to ONNX ({precision}) for onnxruntime ...", flush=True)
        model = load_checkpoint_model(ckpt, size)
        frame_input = None
        if variant == "uint8-input":
            from export.frame_input import default_frame_input

            frame_input = default_frame_input(model.config.modality)
        with contextlib.redirect_stdout(io.StringIO()):
            export_gopt(model, out, "batch", fp16=base == "fp16", progress=Progress(1), frame_input=frame_input)
    return out


def int8_for(fp32: Path, target: str = "onnxruntime") -> Path:
    """The INT8 model of an fp32 export for ``target`` (cached beside it): dynamic for
    "onnxruntime", Q/DQ calibrated on the bundled frames for "tensorrt" (OpenVINO runs that one)."""
    from export.quantize import bundled_frames, calibration_feeds, default_output, quantize, quantize_dynamic_int8
    from runtime.metadata import read_onnx_info

    out = default_output(fp32, "int8", target)
    if not out.exists():
        print(f"  quantizing {fp32.name} to INT8 for {target} ...", flush=True)
        if target == "onnxruntime":
            quantize_dynamic_int8(fp32, out)
        else:
            frames = bundled_frames(read_onnx_info(fp32))
            quantize(fp32, out, "int8", calibration_feeds(fp32, frames),
                     {"source": "bundled samples (data/samples)", "frames": [f[0] for f in frames], "method": "MinMax"})
    return out


def simcmf_onnx_for(ckpt: Path, base, precision: str, work_dir: Path) -> Path:
    """The SimCMF encoder / decoder pair exported once (cached), dynamic batch."""
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from models.simcmf_checkpoint import load_simcmf

    stem = cached_stem(ckpt, work_dir, base, precision)
    if not Path(f"{stem}.encoder.onnx").exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        print(f"  exporting {ckpt.name} to ONNX ({precision}) for onnxruntime ...", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):
            export_simcmf(load_simcmf(ckpt, base=base)[0], stem, "batch", fp16=precision == "fp16",
                          progress=Progress(2))
    return Path(f"{stem}.encoder.onnx")


def make_graphs(model_path: Path, kind: str, backend: str, precision: str, args) -> dict:
    """The runtime backends of a model ({"gopt": b} or {"encoder": e, "decoder": d}), or
    Unavailable with the reason."""
    if kind == "gopt":
        return {"gopt": make_backend(model_path, backend, precision, args)}
    from runtime.segmenter import open_graphs

    suffix = model_path.suffix.lower()
    if backend == "triton":
        raise Unavailable("the fused Triton kernels are GoPT's prompter; SimCMF has none")
    if backend == "compile":
        raise Unavailable("torch.compile is measured for GoPT")
    if backend == "torch":
        if suffix not in (".pt", ".pth"):
            raise Unavailable(f"needs the PyTorch checkpoint, got {suffix}")
        if precision != "fp32":
            raise Unavailable("SimCMF in PyTorch is measured in fp32")
        from runtime.backends.torch_backend import simcmf_backends

        return simcmf_backends(model_path, torch_device(), base=args.base)
    if backend == "openvino":
        if precision not in ("fp32", "bf16"):
            raise Unavailable("SimCMF with OpenVINO is measured in fp32 and bf16")
        if suffix not in (".pt", ".pth", ".onnx"):
            raise Unavailable(f"needs a .onnx model or a checkpoint, got {suffix}")
        openvino_available()
        path = simcmf_onnx_for(model_path, args.base, "fp32", args.work_dir) if suffix in (".pt", ".pth") \
            else model_path
        try:
            return open_graphs(path, backend="openvino", precision=precision)
        except ValueError as e:  # bf16 on a CPU without it
            raise Unavailable(str(e)) from None
    if backend == "onnxruntime":
        if precision == "bf16":
            raise Unavailable("the ONNX export has fp32 and fp16 variants, no bf16")
        if suffix in (".pt", ".pth"):
            return open_graphs(simcmf_onnx_for(model_path, args.base, precision, args.work_dir))
        if suffix != ".onnx":
            raise Unavailable(f"needs a .onnx model or a checkpoint, got {suffix}")
        graphs = open_graphs(model_path)
        if graphs["encoder"].info.precision != precision:
            raise Unavailable(f"{model_path.name} is {graphs['encoder'].info.precision}")
        return graphs
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Unavailable("TensorRT is not installed") from None
    if suffix not in (".engine", ".plan"):
        raise Unavailable("needs engines built with `python -m export.tensorrt`")
    return open_graphs(model_path)


def make_backend(model_path: Path, backend: str, precision: str, args):
    """A runtime backend for the GoPT graph, or Unavailable with the reason."""
    suffix = model_path.suffix.lower()
    if backend not in ("onnxruntime", "openvino") and ":" in precision:
        raise Unavailable("raw-frame (uint8-input) models are measured with ONNX Runtime and OpenVINO")
    if backend not in ("onnxruntime", "openvino") and precision == "int8":
        raise Unavailable("INT8 is measured with ONNX Runtime and OpenVINO on the CPU (TensorRT: build the Q/DQ "
                          "model)")
    if backend in ("torch", "triton", "compile"):
        if suffix not in (".pt", ".pth"):
            raise Unavailable(f"needs the PyTorch checkpoint, got {suffix}")
        import torch

        from runtime.backends.torch_backend import gopt_backend

        device = torch_device()
        if backend == "triton":
            from kernels import triton_available

            if device.type != "cuda":
                raise Unavailable("Triton kernels need a CUDA GPU")
            if not triton_available():
                raise Unavailable("triton is not installed")
        if precision != "fp32" and device.type != "cuda":
            raise Unavailable(f"PyTorch {precision} is benchmarked on a CUDA GPU only")
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        return gopt_backend(load_checkpoint_model(model_path, args.size), device,
                            kernel_backend="triton" if backend == "triton" else "torch",
                            compile=backend == "compile", dtype=dtype)
    if backend == "onnxruntime":
        from runtime.backends.ort_backend import OnnxRuntimeBackend

        if precision.split(":")[0] == "bf16":
            raise Unavailable("ONNX Runtime's CPU provider has no bf16 MatMul / Gemm kernels (its bf16 fast-math GEMM "
                              "is for ARM64), and the export has fp32 and fp16 variants, no bf16")
        if suffix in (".pt", ".pth"):
            quick_check_export(model_path, onnx_cache_path(model_path, args.size, precision, args.work_dir), args)
            path = onnx_for(model_path, args.size, precision, args.work_dir)
        elif suffix == ".onnx":
            path = model_path
        else:
            raise Unavailable(f"needs a .onnx model or a checkpoint, got {suffix}")
        b = OnnxRuntimeBackend(path)
        if suffix == ".onnx" and file_precision(b.info) != precision:
            raise Unavailable(f"{path.name} is {file_precision(b.info)}")
        return b
    if backend == "openvino":
        return openvino_backend(model_path, precision, args)
    if backend == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise Unavailable("TensorRT is not installed") from None
        if suffix not in (".engine", ".plan"):
            raise Unavailable("needs an engine built with `python -m export.tensorrt`")
        from runtime.backends.trt_backend import TensorRTBackend

        return TensorRTBackend(model_path, cuda_graph=args.cuda_graph)
    raise ValueError(f"unknown backend {backend!r}")


def openvino_available() -> None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise Unavailable("openvino is not installed (pip install -e '.[openvino]')") from None


def openvino_backend(model_path: Path, precision: str, args):
    """OpenVINO on the fp32 export (fp32, or bf16 computed natively), on its raw-frame export,
    or on the INT8 Q/DQ model; or Unavailable with the reason."""
    openvino_available()
    from runtime.backends.openvino_backend import OpenVINOBackend

    base, _, variant = precision.partition(":")
    if base == "fp16":
        raise Unavailable("OpenVINO on a CPU is measured in fp32, bf16 and INT8 (an fp16 export computes in fp32)")
    suffix = model_path.suffix.lower()
    if suffix in (".pt", ".pth"):
        export = "int8" if base == "int8" else "fp32"
        export += f":{variant}" if variant else ""
        quick_check_export(model_path, onnx_cache_path(model_path, args.size, export.replace("int8", "fp32"),
                                                       args.work_dir), args)
        path = onnx_for(model_path, args.size, export, args.work_dir, target="tensorrt")
    elif suffix == ".onnx":
        path = model_path
    else:
        raise Unavailable(f"needs a .onnx model or a checkpoint, got {suffix}")
    try:
        b = OpenVINOBackend(path, precision="bf16" if base == "bf16" else None)
    except ValueError as e:
        raise Unavailable(str(e)) from None
    own = file_precision(b.info).replace("fp32", base, 1) if base == "bf16" else file_precision(b.info)
    if suffix == ".onnx" and own != precision:
        raise Unavailable(f"{path.name} is {file_precision(b.info)}")
    return b


def max_batch_of(b) -> int | None:
    dim = b.info.input("rgb").shape[0]
    return None if isinstance(dim, str) else dim


def compute_only_step(b, feeds_list, args):
    """(step, sync, split) on model-space tensors already where the backend computes."""
    if b.name == "torch":
        import torch

        tensors = [{k: torch.from_numpy(v).to(b.torch_device) for k, v in f.items()} for f in feeds_list]
        sync = torch.cuda.synchronize if b.device == "cuda" else (lambda: None)
        if args.cuda_graph and b.device == "cuda":
            static = {k: v.clone() for k, v in tensors[0].items()}
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        b.fn(**static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    b.fn(**static)

            def step(i):
                for k, v in tensors[i % len(tensors)].items():
                    static[k].copy_(v)
                graph.replay()
            return step, sync

        def step(i):
            with torch.inference_mode():
                b.fn(**tensors[i % len(tensors)])
        return step, sync
    if args.cuda_graph and b.name != "tensorrt":
        raise Unavailable("CUDA graphs are measured for the PyTorch and TensorRT backends")

    def step(i):
        b.infer(feeds_list[i % len(feeds_list)], ["labels"])
    return step, (lambda: None)


def end_to_end_split(b, pairs, batch) -> dict | None:
    """Host-to-device, compute and device-to-host of one batch, for PyTorch on CUDA (CUDA events)."""
    if b.name != "torch" or b.device != "cuda":
        return None
    import torch

    from runtime.segmenter import Segmenter

    seg = Segmenter.from_backends({"gopt": b})
    prepared = [seg.prepare(r, a) for r, a in pairs[:batch]]
    x = np.concatenate([p.rgb for p in prepared])
    a = np.concatenate([p.aux for p in prepared])
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    times = []
    with torch.inference_mode():
        for _ in range(10):
            ev[0].record()
            xt, at = torch.from_numpy(x).cuda(non_blocking=True), torch.from_numpy(a).cuda(non_blocking=True)
            ev[1].record()
            _, labels = b.fn(rgb=xt, aux=at)
            ev[2].record()
            labels.cpu()
            ev[3].record()
            torch.cuda.synchronize()
            times.append([ev[i].elapsed_time(ev[i + 1]) for i in range(3)])
    h2d, compute, d2h = np.median(np.asarray(times), axis=0)
    return {"h2d_ms": float(h2d), "compute_ms": float(compute), "d2h_ms": float(d2h)}


def bench_one(b, mode, batch, frames, args) -> dict:
    if b.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    step, sync, split = gopt_step(b, mode, batch, frames, args)
    samples = measure(step, sync, args.warmup_s, args.min_iters, args.min_time_s, args.max_time_s)
    row = summarize(samples, batch)
    row["memory"] = memory(b.device)
    row["split"] = split
    return row


def gopt_step(b, mode, batch, frames, args):
    """(step, sync, split) of one GoPT configuration: ``step(i)`` runs call i."""
    from runtime.segmenter import Segmenter

    fixed = max_batch_of(b)
    if fixed is not None and fixed != batch:
        raise Unavailable(f"the model file has a fixed batch of {fixed}")
    seg = Segmenter.from_backends({"gopt": b})
    batches = [[frames[(i + j) % len(frames)] for j in range(batch)] for i in range(N_SETS)]
    if mode == "end-to-end":
        def step(i):
            seg.run_batch(batches[i % N_SETS])
        sync = (lambda: None)  # run_batch returns host label maps: the device work is finished
        split = end_to_end_split(b, frames * batch, batch)
    else:
        feeds = []
        for pairs in batches:
            prepared = [seg.prepare(r, a) for r, a in pairs]
            feeds.append({"rgb": np.concatenate([p.rgb for p in prepared]),
                          "aux": np.concatenate([p.aux for p in prepared])})
        step, sync = compute_only_step(b, feeds, args)
        split = None
    return step, sync, split


def run_interleaved(args, argv) -> dict:
    """GoPT: every backend x precision of the checkpoint, and the exported .onnx files given
    with it, timed in turns: each round calls every configuration once, so that the load of a
    shared machine falls on all alike. Ratios and label agreement against the checkpoint's
    PyTorch fp32 eager."""
    from runtime.backends.ort_backend import OnnxRuntimeBackend

    env = environment(argv)
    with contextlib.suppress(OSError):
        env["load_average_start"] = list(os.getloadavg())
    checkpoints = [Path(m) for m in args.models if Path(m).suffix.lower() in (".pt", ".pth")]
    if len(checkpoints) > 1 or any(model_kind(Path(m)) != "gopt" for m in args.models):
        raise ValueError("--interleave: one GoPT checkpoint and / or GoPT .onnx exports of it")
    name = checkpoints[0].name if checkpoints else Path(args.models[0]).name
    rows, entries = [], []
    for model_path in map(Path, args.models):
        if model_path.suffix.lower() == ".onnx":
            b = OnnxRuntimeBackend(model_path)
            entries.append(({"model": name, "file": model_path.name, "backend": "onnxruntime",
                             "precision": file_precision(b.info)}, b))
            continue
        for backend in args.backends:
            for precision in args.precisions:
                base = {"model": name, "file": model_path.name, "backend": backend, "precision": precision}
                try:
                    entries.append((base, make_backend(model_path, backend, precision, args)))
                except Unavailable as why:
                    rows += [{**base, "mode": m, "batch": n, "status": f"unavailable: {why}"}
                             for m in args.modes for n in args.batches]
    cfg = entries[0][1].info.config
    frames = real_frames(cfg["modality"], tuple(cfg["img_size"]))
    reference = reference_labels(checkpoints[0], frames, args, None) if checkpoints else None
    per_frame = [label_agreements(b, reference, frames) if reference else None for _, b in entries]
    names = frame_names(cfg["modality"])
    for mode in args.modes:
        for batch in args.batches:
            live = []
            for (base, b), agree in zip(entries, per_frame):
                row = {**base, "mode": mode, "batch": batch, "device": b.device, "input_size": cfg["img_size"],
                       "label_agreement": float(np.mean(agree)) if agree else None,
                       "label_agreement_frames": dict(zip(names, agree)) if agree else None,
                       "compute_precision": getattr(b, "hint", None),
                       "quantized_for": (b.info.quantization or {}).get("target")}
                try:
                    live.append((row, *gopt_step(b, mode, batch, frames, args)))
                except Unavailable as why:
                    rows.append({**row, "status": f"unavailable: {why}"})
            print(f"{mode}, batch {batch}: {len(live)} configurations in turns", flush=True)
            samples = interleave([(step, sync) for _, step, sync, _ in live], args)
            for (row, _, _, split), times in zip(live, samples):
                row.update(summarize(times, batch), status="ok", split=split, memory=memory(row["device"]))
                print(f"  {row['backend']:<12} {row['precision']:<18} p50 {row['latency_ms']['p50']:9.2f} ms",
                      flush=True)
                rows.append(row)
    for _, b in entries:
        b.close()
    with contextlib.suppress(OSError):
        env["load_average_end"] = list(os.getloadavg())
    add_ratios(rows)
    return {"environment": env, "settings": settings(args), "results": rows}


def interleave(steps, args) -> list[list[float]]:
    """Warm every step up (by time), then rounds of one timed call each, until ``min_iters``
    rounds and ``min_time_s`` have passed (stopping at ``max_time_s``)."""
    t_end = time.perf_counter() + args.warmup_s
    i = 0
    while True:
        for step, sync in steps:
            step(i)
            sync()
        i += 1
        if time.perf_counter() >= t_end:
            break
    samples = [[] for _ in steps]
    start = time.perf_counter()
    while True:
        for k, (step, sync) in enumerate(steps):
            t0 = time.perf_counter()
            step(i)
            sync()
            samples[k].append((time.perf_counter() - t0) * 1e3)
        i += 1
        elapsed = time.perf_counter() - start
        if (len(samples[0]) >= args.min_iters and elapsed >= args.min_time_s) or elapsed >= args.max_time_s:
            return samples


def bench_simcmf(graphs, mode, batch, images, args) -> dict:
    """Compute-only: the encoder on [batch, C, S, S] tensors (the expensive graph). End-to-end:
    one new image and one click per call, the encoder included (its cache never hits)."""
    from runtime.preprocess import preprocess_image
    from runtime.segmenter import Segmenter

    encoder = graphs["encoder"]
    cfg = encoder.info.config
    if encoder.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    if mode == "end-to-end":
        if batch != 1:
            raise Unavailable("SimCMF end to end segments one image per call")
        seg = Segmenter.from_backends(graphs)
        H, W = images[0].shape[:2]

        def step(i):
            seg.run(images[i % len(images)], points=[(W // 2, H // 2)])
        sync = (lambda: None)
    else:
        fixed = encoder.info.input("x").shape[0]
        if not isinstance(fixed, str) and fixed != batch:
            raise Unavailable(f"the encoder has a fixed batch of {fixed}")
        rgb_first = (cfg.get("modality") or "").startswith("rgb")
        xs = [preprocess_image(im, cfg["in_chans"], cfg["img_size"], cfg["pixel_mean"], cfg["pixel_std"],
                               cfg.get("pixel_scale"), "bgr", rgb_first, cfg.get("minmax_channels"))
              for im in images]
        feeds = [{"x": np.concatenate([xs[(i + j) % len(xs)] for j in range(batch)])} for i in range(N_SETS)]
        if encoder.name == "torch":
            import torch

            tensors = [torch.from_numpy(f["x"]).to(encoder.torch_device) for f in feeds]
            sync = torch.cuda.synchronize if encoder.device == "cuda" else (lambda: None)

            def step(i):
                with torch.inference_mode():
                    encoder.fn(tensors[i % len(tensors)])
        else:
            def step(i):
                encoder.infer(feeds[i % len(feeds)])
            sync = (lambda: None)
    samples = measure(step, sync, args.warmup_s, args.min_iters, args.min_time_s, args.max_time_s)
    row = summarize(samples, batch)
    row["memory"] = memory(encoder.device)
    row["split"] = None
    return row


def mask_agreement(graphs, reference: list[np.ndarray], images) -> float:
    from runtime.segmenter import Segmenter

    seg = Segmenter.from_backends(graphs)
    H, W = images[0].shape[:2]
    ours = [seg.run(im, points=[(W // 2, H // 2)])[0] for im in images[:2]]
    return float(np.mean([(o == r).mean() for o, r in zip(ours, reference)]))


def simcmf_reference(model_path: Path, images, args) -> list[np.ndarray] | None:
    """PyTorch fp32 masks for one centre click on the first two images (checkpoints only)."""
    if model_path.suffix.lower() not in (".pt", ".pth"):
        return None
    from runtime.segmenter import Segmenter
    from runtime.backends.torch_backend import simcmf_backends

    seg = Segmenter.from_backends(simcmf_backends(model_path, torch_device(), base=args.base))
    H, W = images[0].shape[:2]
    return [seg.run(im, points=[(W // 2, H // 2)])[0] for im in images[:2]]


def label_agreement(b, reference: list[np.ndarray], frames) -> float:
    return float(np.mean(label_agreements(b, reference, frames)))


def frame_names(modality: str) -> list[str]:
    """The first two of ``real_frames``, named (the label agreement is given for each)."""
    if modality == "depth":
        return ["esanet_rgb.png + esanet_depth.png", "the same, mirrored"]
    return ["mfnet_01234N.png (night)", "mfnet_01477D.png (day)"]


def label_agreements(b, reference: list[np.ndarray], frames) -> list[float]:
    """Label agreement with the reference on each of the first two frames."""
    from runtime.segmenter import Segmenter

    seg = Segmenter.from_backends({"gopt": b})
    fixed = max_batch_of(b)
    ours = []
    for r, a in frames[:2]:
        if fixed and fixed > 1:
            ours.append(seg.run_batch([(r, a)] * fixed)[0])
        else:
            ours.append(seg.run(r, a))
    return [float((o == ref).mean()) for o, ref in zip(ours, reference)]


# ---- the run ------------------------------------------------------------------------------------

def run_benchmarks(args, argv) -> dict:
    env = environment(argv)
    if env.get("load_average_1min", 0) > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: the machine is busy (load average {env['load_average_1min']:.1f} on "
              f"{os.cpu_count()} cores): CPU timings will be unreliable", flush=True)
    rows = []
    for model_path in args.models:
        model_path = Path(model_path)
        kind = model_kind(model_path)
        reference, frames = None, None
        for backend in args.backends:
            for precision in model_precisions(model_path, args):
                label = f"{backend} {precision}"
                print(f"{model_path.name}: {label}", flush=True)
                base = {"model": model_path.name, "backend": backend, "precision": precision}
                if backend == "compile" and args.quick and not args.backend_given:
                    for mode in args.modes:
                        for batch in args.batches:
                            rows.append({**base, "mode": mode, "batch": batch,
                                         "status": "skipped in --quick: compilation takes minutes"})
                    continue
                try:
                    graphs = make_graphs(model_path, kind, backend, precision, args)
                except Unavailable as why:
                    for mode in args.modes:
                        for batch in args.batches:
                            rows.append({**base, "mode": mode, "batch": batch, "status": f"{why.status}: {why}"})
                    print(f"  {why.status}: {why}")
                    continue
                b = graphs.get("gopt") or graphs["encoder"]
                cfg = b.info.config
                size = tuple(cfg["img_size"]) if kind == "gopt" else (cfg["img_size"], cfg["img_size"])
                if frames is None:
                    frames = real_frames(cfg["modality"], size) if kind == "gopt" else simcmf_images(cfg)
                if reference is None:
                    reference = (reference_labels(model_path, frames, args, b) if kind == "gopt"
                                 else simcmf_reference(model_path, frames, args))
                agreement = None
                if reference:
                    agreement = (label_agreement(b, reference, frames) if kind == "gopt"
                                 else mask_agreement(graphs, reference, frames))
                for mode in args.modes:
                    for batch in args.batches:
                        row = {**base, "mode": mode, "batch": batch, "device": b.device,
                               "input_size": list(size), "label_agreement": agreement}
                        try:
                            bench = bench_one if kind == "gopt" else bench_simcmf
                            row.update(bench(b if kind == "gopt" else graphs, mode, batch, frames, args),
                                       status="ok")
                            lat = row["latency_ms"]
                            warn = "  WARNING: coefficient of variation above 5%" if row["cv"] > 0.05 else ""
                            print(f"  {mode:<12} batch {batch:<3} p50 {lat['p50']:9.2f} ms  "
                                  f"{row['throughput_fps']:9.1f} frames/s{warn}", flush=True)
                        except Unavailable as why:
                            row["status"] = f"unavailable: {why}"
                            print(f"  {mode:<12} batch {batch:<3} unavailable: {why}")
                        rows.append(row)
                for g in graphs.values():
                    g.close()
    add_ratios(rows)
    return {"environment": env, "settings": settings(args), "results": rows}


def reference_labels(model_path: Path, frames, args, backend) -> list[np.ndarray] | None:
    """PyTorch fp32 eager label maps of the real frames (None when no checkpoint is given)."""
    if model_path.suffix.lower() not in (".pt", ".pth"):
        return None

    from runtime.segmenter import Segmenter
    from runtime.backends.torch_backend import gopt_backend

    ref = gopt_backend(load_checkpoint_model(model_path, args.size), torch_device(), kernel_backend="torch")
    seg = Segmenter.from_backends({"gopt": ref})
    return [seg.run(r, a) for r, a in frames[:2]]


def add_ratios(rows) -> None:
    """speedup = PyTorch eager fp32 p50 / this row's p50, same model, mode and batch."""
    eager = {(r["model"], r["mode"], r["batch"]): r["latency_ms"]["p50"] for r in rows
             if r["status"] == "ok" and r["backend"] == "torch" and r["precision"] == "fp32"}
    for r in rows:
        key = (r["model"], r["mode"], r["batch"])
        if r["status"] == "ok" and key in eager:
            r["speedup_vs_eager"] = eager[key] / r["latency_ms"]["p50"]


def settings(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "models"}


# ---- output -------------------------------------------------------------------------------------

COLUMNS = ("backend", "precision", "mode", "batch", "p50 ms", "p90 ms", "p99 ms", "mean+-std ms", "frames/s",
           "vs eager", "labels vs fp32")


def table_rows(result) -> list[list[str]]:
    out = []
    for r in result["results"]:
        head = [r["backend"], r["precision"], r["mode"], str(r["batch"])]
        if r["status"] != "ok":
            out.append(head + [r["status"]] + [""] * (len(COLUMNS) - 5))
            continue
        lat = r["latency_ms"]
        ratio = f"{r['speedup_vs_eager']:.2f}x" if "speedup_vs_eager" in r else "n/a"
        agree = f"{100 * r['label_agreement']:.2f}%" if r.get("label_agreement") is not None else "n/a"
        out.append(head + [f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}",
                           f"{lat['mean']:.2f}+-{lat['std']:.2f}", f"{r['throughput_fps']:.1f}", ratio, agree])
    return out


def not_run_line(result) -> str | None:
    """One line: each backend / precision / mode that did not run, and why (deduplicated)."""
    why = {}
    for r in result["results"]:
        if r["status"] != "ok":
            why.setdefault(f"{r['backend']} {r['precision']}", {}).setdefault(r["status"], []).append(r["mode"])
    if not why:
        return None
    parts = []
    for what, statuses in why.items():
        for status, modes in statuses.items():
            modes = sorted(set(modes))
            scope = "" if set(modes) == set(MODES) or len(statuses) == 1 else f" ({', '.join(modes)})"
            parts.append(f"{what}{scope}: {status}")
    return "not run: " + "; ".join(parts)


def print_table(result) -> None:
    """The rows that ran, then one line saying what did not run and why."""
    measured = [r for r in table_rows(result) if r[4][:1].isdigit()]  # status rows have text there
    widths = [max([len(c)] + [len(r[i]) for r in measured]) for i, c in enumerate(COLUMNS)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    for r in measured:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    line = not_run_line(result)
    if line:
        print(line)
    env = result["environment"]
    print(f"\n{env.get('gpu') or env['cpu']} ({env['cpu_cores']} CPU cores), {env['date']}")


def markdown(result) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table_rows(result):
        lines.append("| " + " | ".join(r + [""] * (len(COLUMNS) - len(r))) + " |")
    env = result["environment"]
    lines.append(f"\nMeasured on {env.get('gpu') or env['cpu']} ({env['cpu_cores']} cores), {env['date']}, "
                 f"`{env['command']}`.")
    return "\n".join(lines)


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result["results"] if r["status"] == "ok"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels, stats = [], []
    for r in ok:
        if r["batch"] == min(x["batch"] for x in ok):
            labels.append(f"{r['backend']}\n{r['precision']}\n{r['mode']}")
            stats.append([r["latency_ms"][k] for k in ("p50", "p90", "p99")])
    x = np.arange(len(labels))
    for j, (name, alpha) in enumerate((("p50", 1.0), ("p90", 0.6), ("p99", 0.35))):
        ax1.bar(x + (j - 1) * 0.27, [s[j] for s in stats], 0.27, label=name, alpha=alpha, color="C0")
    ax1.set_xticks(x, labels, fontsize=7)
    spread = max((max(s) for s in stats), default=1) / max(min((min(s) for s in stats), default=1), 1e-9)
    if spread > 20:  # backends orders of magnitude apart
        ax1.set_yscale("log")
    ax1.set_ylabel("latency (ms" + (", log scale)" if spread > 20 else ")"))
    ax1.set_title(f"latency percentiles, batch {min((r['batch'] for r in ok), default=1)}")
    ax1.legend()
    for key in sorted({(r["backend"], r["precision"], r["mode"]) for r in ok}):
        pts = sorted((r["batch"], r["throughput_fps"]) for r in ok if (r["backend"], r["precision"], r["mode"]) == key)
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=" ".join(key))
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("frames / s")
    ax2.set_title("throughput")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=7)
    env = result["environment"]
    fig.suptitle(f"{env.get('gpu') or env['cpu']}  {env['date']}", fontsize=9)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)


# ---- command line -------------------------------------------------------------------------------

def parse_args(argv):
    ap = ArgumentParser(prog="python benchmarks/latency.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--base", help="SAM ViT-B checkpoint for a SimCMF delta checkpoint")
    ap.add_argument("--backend", default=None, help=f"comma list (default: {','.join(BACKENDS)})")
    ap.add_argument("--batch", default=None, help="comma list (default 1,4; with --quick 1)")
    ap.add_argument("--size", default=None, help="model input size HxW (default: the checkpoint's)")
    ap.add_argument("--precision", default=None,
                    help="comma list (default fp32; an exported file: its own precision, e.g. int8)")
    ap.add_argument("--warmup-s", type=seconds, default=2.0)
    ap.add_argument("--min-iters", type=count, default=50)
    ap.add_argument("--min-time-s", type=seconds, default=2.0)
    ap.add_argument("--max-time-s", type=positive, default=120.0, help="stop a configuration after this long")
    ap.add_argument("--cuda-graph", action="store_true", help="replay compute-only PyTorch / TensorRT as CUDA graphs")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--end-to-end", action="store_true")
    mode.add_argument("--compute-only", action="store_true")
    ap.add_argument("--json", type=Path, help="write the results here (replaces an earlier result file)")
    ap.add_argument("--plot", type=Path, help="plot the results here (.png, .svg or .pdf; replaces an earlier plot)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--interleave", action="store_true",
                    help="time every configuration of a model in turns (one call each per round)")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (well under a minute on a CPU)")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mmseg-deploy-bench")
    args = ap.parse_args(argv)
    args.backend_given = args.backend is not None
    args.backends = [b.strip() for b in (args.backend or ",".join(BACKENDS)).split(",") if b.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown backends {unknown}; choose from {','.join(BACKENDS)}")
    args.batch = args.batch or ("1" if args.quick else "1,4")
    try:
        args.batches = [int(b) for b in args.batch.split(",")]
        args.size = tuple(int(s) for s in args.size.lower().split("x")) if args.size else None
    except ValueError:
        ap.error("--batch is a comma list of integers and --size is HxW, e.g. --batch 1,4 --size 480x640")
    if any(b < 1 for b in args.batches) or (args.size and len(args.size) != 2):
        ap.error("batch sizes must be >= 1 and --size must be HxW")
    args.precision_given = args.precision is not None
    args.precisions = [p.strip() for p in (args.precision or "fp32").split(",")]
    if any(p.split(":")[0] not in PRECISIONS or p.partition(":")[2] not in ("", "uint8-input")
           for p in args.precisions):
        ap.error(f"--precision takes {', '.join(PRECISIONS)}, each optionally with :uint8-input (fp32:uint8-input)")
    args.modes = ["end-to-end"] if args.end_to_end else ["compute-only"] if args.compute_only else list(MODES)
    for m in args.models:
        input_file(m, "a model")
    check_result_outputs(args.json, args.plot)
    if args.quick:
        args.warmup_s, args.min_iters, args.min_time_s, args.max_time_s = 0.2, 3, 0.0, 10.0
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_tool(lambda args: benchmark_command(args, argv), parse_args, argv)


def benchmark_command(args, argv) -> int:
    for m in args.models:
        warn_if_unverified(m)
        model_kind(m)  # a file the benchmark cannot time is refused before any timing
    output_dir(args.work_dir)
    result = (run_interleaved if args.interleave else run_benchmarks)(args, ["benchmarks/latency.py", *argv])
    print_table(result)
    if args.markdown:
        print("\n" + markdown(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1, default=_json_default))
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
