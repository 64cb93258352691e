"""Build a TensorRT engine (TensorRT 10.3 to 11.x) from an exported ONNX model, on the GPU
that will run it.

    python -m export.tensorrt MODEL.onnx [-o ENGINE] [--fp16 | --bf16]
                              [--min-batch N] [--opt-batch N] [--max-batch N]
                              [--shape NAME=MIN,OPT,MAX] [--timing-cache FILE]
                              [--workspace GIB] [--opt-level 0-5] [--plugins LIB]

Every network is built strongly typed: each layer runs in the precision of its ONNX
tensors, on TensorRT 10.3 (Jetson Orin, JetPack 6) as on TensorRT 11, which has no other
kind of network. An fp16 / bf16 ONNX model (``python -m export.onnx --fp16``) builds an
fp16 / bf16 engine; a Q/DQ model (``python -m export.quantize``) an INT8 / FP8 one.
--fp16 / --bf16 on an fp32 model first write MODEL.fp16.onnx / MODEL.bf16.onnx with the
export's precision policy (LayerNorm, softmax, every argmax and the layers computing its
input stay fp32: export/graph.py), then build that file.

The optimisation profile comes from the model's metadata (``mmseg_deploy``): the "batch"
axis ranges over --min/--opt/--max-batch (default 1/1/4), other named axes over their
defaults ("num_points": 1/1/16) or --shape.

Writes ENGINE (default: MODEL.engine, or MODEL.fp16.engine when the precision changes)
and ENGINE.json beside it: the TensorRT version and the GPU / compute capability the
engine is bound to, the profile, the builder settings, the ONNX file's sha256 and its
metadata. The runtime refuses an engine without that file.
A graph exported with ``--fused-kernels`` needs the GoPT plugins: --plugins LIB (default:
$GOPT_PLUGIN_LIB, else build/libgopt_trt_plugins.so) is loaded before parsing, and
ENGINE.json records the library's file name and SHA-256.
Exit status: 0 built, 1 TensorRT could not parse or build the model, 2 bad arguments or
model file, or TensorRT / cuda-python / a CUDA GPU missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
import onnx

from .cli import ArgumentParser, UsageError, output_file, run_tool
from .progress import Progress
from runtime.backends import plugin_ops
from runtime.files import atomic_path, file_sha256, write_bytes_atomic
from runtime.metadata import ModelFileError, ModelInfo, info_from_metadata_map, warn_if_unverified
from runtime.backends.trt_backend import (BackendUnavailable, EngineSidecar, capability_string, cuda_device,
                                          import_cudart, import_tensorrt, sidecar_path, write_sidecar)
from . import graph

DEFAULT_BATCH = (1, 1, 4)
DEFAULT_AXES = {"num_points": (1, 1, 16)}  # SimCMF clicks per prompt
HALF = ("fp16", "bf16")
QUANTIZED = ("int8", "fp8")  # Q/DQ models: built as they are
ENGINE_SUFFIXES = (".engine", ".plan")


# ---- the optimisation profile ----------------------------------------------------------------------

def check_range(label: str, r) -> tuple[int, int, int]:
    lo, opt, hi = r
    if not 1 <= lo <= opt <= hi:
        raise UsageError(f"{label}: min {lo}, opt {opt}, max {hi}: need 1 <= min <= opt <= max")
    return lo, opt, hi


def batch_range(min_batch: int | None, opt_batch: int | None, max_batch: int | None) -> tuple[int, int, int]:
    """Missing values follow the given ones: only --max-batch 8 -> 1/1/8, only --min-batch 2 -> 2/2/4."""
    lo = DEFAULT_BATCH[0] if min_batch is None else min_batch
    opt = lo if opt_batch is None else opt_batch
    hi = max(opt, DEFAULT_BATCH[2]) if max_batch is None else max_batch
    return check_range("batch", (lo, opt, hi))


def profiles_from_info(info: ModelInfo, min_batch: int | None = None, opt_batch: int | None = None,
                       max_batch: int | None = None, shapes: dict | None = None) -> dict[str, tuple]:
    """{input name: (min shape, opt shape, max shape)} for every input of the model, from the
    named dynamic axes of its metadata. Fixed axes (and inputs) have min = opt = max."""
    shapes = dict(shapes or {})
    labels = {label for spec in info.inputs for label in spec.dynamic_axes().values()}
    if "batch" in shapes:
        raise UsageError("give the batch range with --min-batch / --opt-batch / --max-batch, not --shape batch=...")
    if "batch" not in labels and any(v is not None for v in (min_batch, opt_batch, max_batch)):
        raise UsageError(f"this model's batch is fixed ({info.inputs[0].name} is {info.inputs[0].shape}); "
                         "--min/--opt/--max-batch need an export with a dynamic batch "
                         "(python -m export.onnx --dynamic-batch)")
    for label in shapes:
        if label not in labels:
            raise UsageError(f"--shape {label}=...: the model has no dynamic axis {label!r} "
                             f"(its dynamic axes: {', '.join(sorted(labels)) or 'none'})")
    ranges = {}
    for label in sorted(labels):
        if label == "batch":
            ranges[label] = batch_range(min_batch, opt_batch, max_batch)
        elif label in shapes:
            ranges[label] = check_range(label, shapes[label])
        elif label in DEFAULT_AXES:
            ranges[label] = DEFAULT_AXES[label]
        else:
            raise UsageError(f"the model's axis {label!r} is dynamic and has no default range; "
                             f"give --shape {label}=MIN,OPT,MAX")
    profiles = {}
    for spec in info.inputs:
        dims = [(d, d, d) if isinstance(d, int) else ranges[d] for d in spec.shape]
        profiles[spec.name] = tuple(tuple(int(d[k]) for d in dims) for k in range(3))
    return profiles


def profiles_json(profiles: dict[str, tuple]) -> dict:
    return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in profiles.items()}


def parse_shape(text: str) -> tuple[str, tuple[int, int, int]]:
    """"num_points=1,4,16" -> ("num_points", (1, 4, 16))."""
    name, _, values = text.partition("=")
    try:
        lo, opt, hi = (int(v) for v in values.split(","))
    except ValueError:
        raise UsageError(f"--shape {text!r}: expected NAME=MIN,OPT,MAX with integers, "
                         "e.g. num_points=1,4,16") from None
    if not name:
        raise UsageError(f"--shape {text!r}: expected NAME=MIN,OPT,MAX")
    return name, (lo, opt, hi)


# ---- the ONNX model ----------------------------------------------------------------------------------

def load_onnx(path: Path) -> tuple[onnx.ModelProto, ModelInfo]:
    """The graph (weights left on disk) and its metadata."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UsageError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    try:
        info = info_from_metadata_map({p.key: p.value for p in model.metadata_props}, str(path))
    except ModelFileError as e:
        raise UsageError(str(e)) from None
    return model, info


def graph_input_problems(model: onnx.ModelProto, info: ModelInfo) -> list[str]:
    """Where the graph's inputs disagree with the metadata the profile is derived from."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
    want = [t.name for t in info.inputs]
    if sorted(inputs) != sorted(want):
        return [f"the graph's inputs are {sorted(inputs)}, its metadata says {want}"]
    problems = []
    for spec in info.inputs:
        dims = inputs[spec.name].type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            problems.append(f"input {spec.name!r} has rank {len(dims)} in the graph, "
                            f"{len(spec.shape)} in the metadata")
            continue
        for axis, (meta, dim) in enumerate(zip(spec.shape, dims)):
            fixed = dim.dim_value if dim.HasField("dim_value") else None
            if isinstance(meta, str) and fixed is not None:
                problems.append(f"input {spec.name!r} axis {axis} is dynamic ({meta}) in the metadata but fixed at "
                                f"{fixed} in the graph")
            elif isinstance(meta, int) and fixed is not None and fixed != meta:
                problems.append(f"input {spec.name!r} axis {axis} is {meta} in the metadata, {fixed} in the graph")
    return problems




# ---- the command line --------------------------------------------------------------------------------

def parse_args(argv):
    ap = ArgumentParser(prog="python -m export.tensorrt", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, help="an ONNX model written by python -m export.onnx")
    ap.add_argument("-o", "--output", type=Path, help="engine path (.engine or .plan); ENGINE.json goes beside it")
    precision = ap.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="fp16 engine: an fp32 model is first written as MODEL.fp16.onnx (LayerNorm, "
                                "softmax, argmax inputs stay fp32)")
    precision.add_argument("--bf16", action="store_true",
                           help="bf16 engine: an fp32 model is first written as MODEL.bf16.onnx (same policy)")
    ap.add_argument("--min-batch", type=int, metavar="N", help=f"smallest batch (default {DEFAULT_BATCH[0]})")
    ap.add_argument("--opt-batch", type=int, metavar="N", help="the batch TensorRT tunes for (default: min)")
    ap.add_argument("--max-batch", type=int, metavar="N", help=f"largest batch (default {DEFAULT_BATCH[2]})")
    ap.add_argument("--shape", action="append", default=[], metavar="NAME=MIN,OPT,MAX",
                    help="range of another dynamic axis, e.g. num_points=1,4,16 (default num_points=1,1,16)")
    ap.add_argument("--timing-cache", type=Path, metavar="FILE",
                    help="TensorRT timing cache: read if it exists, written after the build")
    ap.add_argument("--workspace", type=float, metavar="GIB",
                    help="builder workspace limit in GiB (default: TensorRT's)")
    ap.add_argument("--opt-level", type=int, default=3, metavar="0-5",
                    help="builder optimisation level 0-5 (default 3)")
    ap.add_argument("--plugins", type=Path, metavar="LIB",
                    help="libgopt_trt_plugins.so for a graph exported with --fused-kernels (default: "
                    "$GOPT_PLUGIN_LIB, else build/libgopt_trt_plugins.so)")
    return ap.parse_args(argv)


@dataclasses.dataclass
class BuildPlan:
    """Everything checked before TensorRT is imported."""

    onnx: Path  # the model TensorRT parses (the half-precision copy when one is written)
    engine: Path
    info: ModelInfo  # the ONNX model's metadata
    precision: str  # the engine's: fp32 / fp16 / bf16 / int8 / fp8, from the ONNX types
    profiles: dict[str, tuple]
    workspace_gib: float | None
    optimization_level: int
    timing_cache: Path | None
    warnings: list[str]
    plugins: Path | None = None  # the plugin library the graph's custom nodes need
    source: Path | None = None  # the fp32 model ``onnx`` is written from (--fp16 / --bf16), else None


def engine_precision(info: ModelInfo, fp16: bool, bf16: bool) -> str:
    """The engine's precision: the model's own, or fp16 / bf16 asked for on an fp32 model."""
    asked = "fp16" if fp16 else "bf16" if bf16 else None
    if asked is None or asked == info.precision:
        return info.precision
    if info.precision in QUANTIZED:
        raise UsageError(f"this is an {info.precision} Q/DQ model: it builds as it is (drop --{asked}); its "
                         "unquantized layers keep their ONNX types")
    if info.precision != "fp32":
        raise UsageError(f"this is an {info.precision} ONNX model: build it without --{asked} (its own types) "
                         f"or from the fp32 model with --{asked}")
    return asked


def half_onnx_path(onnx_path: Path, precision: str) -> Path:
    """MODEL.onnx -> MODEL.fp16.onnx (the file --fp16 writes and builds)."""
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.onnx")


def default_engine_path(onnx_path: Path, info: ModelInfo, precision: str) -> Path:
    stem = onnx_path.with_suffix("")
    tag = f".{precision}" if precision != info.precision and not stem.name.endswith(f".{precision}") else ""
    return Path(f"{stem}{tag}.engine")


def make_plan(args) -> BuildPlan:
    """The checked build: raises UsageError on anything that would make the build fail or lie."""
    model, info = load_onnx(args.onnx)
    problems = graph_input_problems(model, info)
    if problems:
        raise UsageError(f"{args.onnx}: " + "; ".join(problems))
    if (info.quantization or {}).get("target") == "onnxruntime":
        raise UsageError(f"{args.onnx} is dynamic INT8 for ONNX Runtime (integer MatMuls TensorRT does not build); "
                         "make TensorRT's Q/DQ model with python -m export.quantize FP32.onnx --int8 --target tensorrt")
    precision = engine_precision(info, args.fp16, args.bf16)
    shapes = dict(parse_shape(s) for s in args.shape)
    profiles = profiles_from_info(info, args.min_batch, args.opt_batch, args.max_batch, shapes)
    engine = args.output or default_engine_path(args.onnx, info, precision)
    if engine.suffix.lower() not in ENGINE_SUFFIXES:
        raise UsageError(f"{engine}: an engine's name must end with .engine or .plan (the runtime picks its backend "
                         "by the extension)")
    if args.workspace is not None and not args.workspace > 0:
        raise UsageError(f"--workspace must be a positive number of GiB, got {args.workspace}")
    if not 0 <= args.opt_level <= 5:
        raise UsageError(f"--opt-level must be between 0 and 5, got {args.opt_level}")
    if args.timing_cache is not None and args.timing_cache.exists() and not args.timing_cache.is_file():
        raise UsageError(f"--timing-cache {args.timing_cache}: not a file")
    # A rebuild replaces an earlier engine and its JSON (written once the build succeeded).
    output_file(engine, replace=True)
    output_file(sidecar_path(engine), replace=True)
    if args.timing_cache is not None:
        output_file(args.timing_cache, replace=True)  # read if it exists, then updated
    warn_if_unverified(args.onnx)
    warnings = [f"warning: TensorRT 10 would reject this graph: {p}" for p in graph.tensorrt_problems(model)]
    plugins = plugin_library(info, getattr(args, "plugins", None), warnings)
    source, parsed = None, args.onnx
    if precision != info.precision:
        source, parsed = args.onnx, output_file(half_onnx_path(args.onnx, precision), replace=True)
    return BuildPlan(parsed, engine, info, precision, profiles, args.workspace, args.opt_level, args.timing_cache,
                     warnings, plugins, source)


def plugin_library(info: ModelInfo, explicit: Path | None, warnings: list[str]) -> Path | None:
    """The plugin library a graph with custom nodes needs (UsageError when there is none)."""
    if not info.plugins:
        if explicit:
            warnings.append(f"warning: {explicit}: this graph has no custom nodes; the plugin library is not used")
        return None
    path = plugin_ops.find_plugin_library(explicit)
    if path is None or not path.is_file():
        where = f"{path}: no such file; " if path else ""
        raise UsageError(f"the graph's {', '.join(info.plugins)} nodes run as TensorRT plugins: {where}"
                         f"{plugin_ops.missing_library_hint()}")
    return path


def write_half_onnx(plan: BuildPlan, progress: Progress) -> None:
    """--fp16 / --bf16 on an fp32 model: ``plan.onnx`` written from ``plan.source`` with the
    export's precision policy (export/graph.py), metadata precision updated."""
    with progress(f"writing the {plan.precision} model {plan.onnx} (LayerNorm, softmax, argmax inputs stay fp32)"):
        model = graph.to_half(onnx.load(str(plan.source)), plan.precision)
        graph.set_metadata(model, dataclasses.replace(plan.info, precision=plan.precision))
        with atomic_path(plan.onnx) as tmp:
            onnx.save(model, str(tmp))


# ---- TensorRT ----------------------------------------------------------------------------------------

def progress_monitor(trt, progress: Progress):
    """A trt.IProgressMonitor printing the builder's phases (two levels deep), or None where
    this TensorRT has no progress monitor."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class BuildMonitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.depth, self.started = {}, {}
            self.lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                depth = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
                self.depth[phase_name], self.started[phase_name] = depth, time.perf_counter()
            if depth < 2:
                progress.note(f"    {'  ' * depth}{phase_name} ({num_steps} step{'s' * (num_steps != 1)})")

        def step_complete(self, phase_name, step):
            return True  # never cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                depth = self.depth.pop(phase_name, 0)
                dt = time.perf_counter() - self.started.pop(phase_name, time.perf_counter())
            if depth < 2 and dt >= 0.1:
                progress.note(f"    {'  ' * depth}{phase_name}: {dt:.1f} s")

    return BuildMonitor()


def parser_error_line(error) -> str:
    where = []
    if error.node() >= 0:
        where.append(f"node {error.node()}")
    if error.node_name():
        where.append(repr(error.node_name()))
    if error.node_operator():
        where.append(f"op {error.node_operator()}")
    return f"error: {error.desc()}" + (f" ({' '.join(where)})" if where else "")


def set_timing_cache(config, path: Path | None, progress: Progress) -> bool:
    """Give the builder the cache at ``path`` (or a new one); True when an existing one was used."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if data and (cache is None or not config.set_timing_cache(cache, ignore_mismatch=False)):
        progress.note(f"note: {path} is from another TensorRT version or GPU; starting a new timing cache")
        data, cache = b"", config.create_timing_cache(b"")
    if not data:
        config.set_timing_cache(cache, ignore_mismatch=False)
    return bool(data)


def build(plan: BuildPlan, progress: Progress) -> int:
    """Parse, configure, build, write. Raises BackendUnavailable before any work without
    TensorRT, cuda-python or a GPU; returns 1 when TensorRT fails."""
    trt = import_tensorrt()
    gpu, capability = cuda_device(import_cudart(), 0)
    cc = capability_string(capability)
    print(f"TensorRT {trt.__version__} on {gpu} (compute capability {cc})")
    if plan.source is not None:
        write_half_onnx(plan, progress)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if plan.plugins is not None:
        with progress(f"loading the plugins of {plan.plugins}"):
            try:
                plugin_ops.load_plugin_library(trt, plan.plugins)
            except (OSError, RuntimeError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    # Strongly typed on every version: the flag exists from 10.3 on; TensorRT 11 has no other kind.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    with progress(f"parsing {plan.onnx}"):
        parsed = parser.parse_from_file(str(plan.onnx))
    if not parsed:
        for i in range(parser.num_errors):
            print(parser_error_line(parser.get_error(i)), file=sys.stderr)
        print(f"error: TensorRT cannot parse {plan.onnx}", file=sys.stderr)
        return 1

    inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs[tensor.name] = tuple(tensor.shape)
    if sorted(inputs) != sorted(plan.profiles):
        print(f"error: TensorRT sees inputs {sorted(inputs)}, the metadata {sorted(plan.profiles)}", file=sys.stderr)
        return 1
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    dynamic = [name for name, shape in inputs.items() if any(d < 0 for d in shape)]
    for name in dynamic:
        profile.set_shape(name, *plan.profiles[name])
    if dynamic and config.add_optimization_profile(profile) < 0:
        print("error: TensorRT rejects the optimisation profile (see its message above)", file=sys.stderr)
        return 1
    if plan.workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.workspace_gib * 2**30))
    config.builder_optimization_level = plan.optimization_level
    cache_used = set_timing_cache(config, plan.timing_cache, progress)
    monitor = progress_monitor(trt, progress)
    if monitor is not None:
        config.progress_monitor = monitor

    t0 = time.perf_counter()
    with progress(f"building the {plan.precision} engine (TensorRT times its kernels: minutes for ViT-B)"):
        serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        print("error: TensorRT could not build the engine (see its messages above)", file=sys.stderr)
        return 1

    with progress(f"writing {plan.engine} and {sidecar_path(plan.engine).name}"):
        data = bytes(serialized)
        del serialized
        if plan.timing_cache is not None:
            cache = config.get_timing_cache()
            write_bytes_atomic(plan.timing_cache, bytes(cache.serialize()))
        settings = builder_settings(plan, cache_used, build_seconds)
        sidecar = sidecar_for(plan, trt.__version__, gpu, capability, data, settings)
        sidecar_path(plan.engine).unlink(missing_ok=True)  # never an old JSON beside a new engine
        write_bytes_atomic(plan.engine, data)
        write_sidecar(plan.engine, sidecar)
    print(f"wrote {plan.engine} ({len(data) / 2**20:.1f} MiB, {plan.precision}, TensorRT {trt.__version__}, "
          f"compute capability {cc}, profile {describe_profiles(plan.profiles)})")
    return 0


def builder_settings(plan: BuildPlan, timing_cache_reused: bool, seconds: float) -> dict:
    return {"strongly_typed": True, "written_from": plan.source.name if plan.source else None,
            "workspace_gib": plan.workspace_gib,
            "optimization_level": plan.optimization_level,
            "timing_cache": str(plan.timing_cache) if plan.timing_cache else None,
            "timing_cache_reused": timing_cache_reused, "build_seconds": round(seconds, 1)}


def sidecar_for(plan: BuildPlan, tensorrt_version: str, gpu: str, capability, engine: bytes,
                settings: dict) -> EngineSidecar:
    """What ENGINE.json says about an engine built from ``plan``: the ONNX metadata with the
    engine's precision, the TensorRT version and GPU it is bound to, the profile, the settings."""
    info = dataclasses.replace(plan.info, precision=plan.precision,
                               versions={**plan.info.versions, "tensorrt": tensorrt_version})
    return EngineSidecar(
        tensorrt=tensorrt_version, gpu=gpu, compute_capability=capability_string(capability),
        precision=plan.precision, profiles=profiles_json(plan.profiles), builder=settings,
        onnx={"file": plan.onnx.name, "sha256": file_sha256(plan.onnx)},
        engine_sha256=hashlib.sha256(engine).hexdigest(), model=info,
        built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        plugins=None if plan.plugins is None else {
            "file": plan.plugins.name, "sha256": file_sha256(plan.plugins), "ops": list(plan.info.plugins)})


def describe_profiles(profiles: dict[str, tuple]) -> str:
    dynamic = {name: r for name, r in profiles.items() if r[0] != r[2]}
    if not dynamic:
        return "fixed shapes"
    return "; ".join(f"{name} {list(lo)}..{list(hi)} (opt {list(opt)})" for name, (lo, opt, hi) in dynamic.items())


def build_command(args) -> int:
    plan = make_plan(args)
    for line in plan.warnings:
        print(line, file=sys.stderr)
    return build(plan, Progress(3))


def run(argv=None) -> int:
    """The command: 0 built, 1 TensorRT failed, 2 bad arguments / model / missing TensorRT or GPU
    (one line, runtime/cli.py)."""
    return run_tool(build_command, parse_args, argv)


def main(argv=None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
