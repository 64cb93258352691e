"""A Triton Inference Server model repository for an exported GoPT model.

    python -m export.triton_repo gopt_rgbt.onnx -o model_repository [--max-batch 16] [--instances 1]
        [--max-queue-delay-us 500] [--overwrite]
    tritonserver --model-repository model_repository

For a model on normalised float32 tensors (the default export) the repository holds four
models, served together as the ensemble ``gopt``:

- ``preprocess`` (Python backend, CPU): uint8 ``rgb`` [H, W, 3] + ``aux`` [H, W] frames ->
  model-space tensors and the frame size, with this project's ``Segmenter.prepare``;
- ``gopt_model`` (``onnxruntime_onnx`` or ``tensorrt_plan``, GPU): the graph, with dynamic
  batching across requests and cameras;
- ``postprocess`` (Python backend, CPU): model-size label maps -> label maps at each frame's size;
- ``gopt`` (ensemble): ``rgb`` + ``aux`` -> ``labels`` uint8 [H, W].

A model exported with uint8 frame inputs does its own preprocessing; it is served directly
as ``gopt`` with dynamic batching. ``max_batch_size`` is the engine profile's maximum batch
(TensorRT) or ``--max-batch`` (ONNX with a dynamic batch axis, default 16); a batch-1 export
(``python -m export.onnx`` without ``--dynamic-batch``) is served one frame per call. The
configurations are written with Triton's own protobuf schema (``tritonclient``'s
``model_config_pb2``). Model folders that exist in the repository already are refused
(``--overwrite`` replaces them whole).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from runtime.backends.factory import backend_kind
from runtime.cli import ArgumentParser, count, natural, output_dir, positive, run_tool
from runtime.files import atomic_path, write_text_atomic
from runtime.metadata import ModelFileError, ModelInfo, read_onnx_info, warn_if_unverified
from runtime.backends.plugin_ops import PLUGIN_LIBRARY

SERVING = Path(__file__).resolve().parent.parent / "serving"
PYTHON_MODELS = {"preprocess": SERVING / "triton_preprocess.py", "postprocess": SERVING / "triton_postprocess.py"}
ENSEMBLE, GRAPH = "gopt", "gopt_model"
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16",
          "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
AUX_DTYPES = {"thermal": "uint8", "depth": "uint16", "hha": "uint8", "sar": "uint8"}


def model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError:
        raise ValueError("writing Triton configurations needs tritonclient: "
                         "pip install 'mmseg-deploy[fleet]' (or pip install 'tritonclient[grpc]')") from None
    return pb


# ---- what the model file says ----------------------------------------------------------------


def read_model(path: Path) -> tuple[ModelInfo, str, int | None, int | None]:
    """(metadata, Triton platform, smallest and largest batch the file allows (None: any))."""
    kind = backend_kind(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    warn_if_unverified(path)
    if kind == "onnxruntime":
        info = read_onnx_info(path)
        check_kind(path, info)
        if info.plugins:
            raise ValueError(f"{path}: a fused graph with custom nodes ({', '.join(map(str, info.plugins))}); Triton's "
                             "ONNX Runtime backend cannot run them: serve its TensorRT engine, or export without fusion")
        dim = info.input("rgb").shape[0] if info.kind == "gopt" else None
        lo, hi = (None, None) if isinstance(dim, str) else (dim, dim)
        return info, "onnxruntime_onnx", lo, hi
    if kind == "tensorrt":
        from runtime.backends.trt_backend import max_batch, read_sidecar

        sidecar = read_sidecar(path)
        info = sidecar.model
        check_kind(path, info)
        batch_axes = [(spec.name, axis) for spec in info.inputs for axis, label in spec.dynamic_axes().items()
                      if label == "batch"]
        lo = max((sidecar.profiles[name]["min"][axis] for name, axis in batch_axes), default=None)
        return info, "tensorrt_plan", lo, max_batch(info, sidecar.profiles)
    raise ValueError(f"{path}: Triton serves exported models (.onnx, .engine / .plan); export the checkpoint first")


def check_kind(path: Path, info: ModelInfo) -> None:
    if info.kind != "gopt":
        raise ValueError(f"{path}: a {info.kind} model; the Triton repository serves GoPT (rgb + aux) models")


def batch_limit(path: Path, info: ModelInfo, lo: int | None, hi: int | None, asked: int | None) -> int:
    """Triton's ``max_batch_size``: the batch axis is Triton's, so the file must accept every
    batch from 1 up to it."""
    dim = info.input("rgb").shape[0]
    if isinstance(dim, int):
        if dim == 1 and (asked or 1) == 1:
            return 1
        if dim == 1:
            raise ValueError(f"--max-batch {asked}: {path} takes one frame per call (a fixed batch of 1); export "
                             "it with --dynamic-batch for Triton to batch requests (python -m export.onnx CKPT "
                             "--dynamic-batch), or drop --max-batch")
        raise ValueError(f"{path}: a fixed batch of {dim}; Triton needs a batch axis from 1 up to --max-batch: "
                         "export with --dynamic-batch (or build the engine with --min-batch 1)")
    if lo is not None and lo > 1:
        raise ValueError(f"{path}: its profile's smallest batch is {lo}; Triton sends batches from 1 "
                         "(rebuild with --min-batch 1)")
    if hi is None:  # a dynamic batch axis without a limit: ONNX
        return asked or 16
    if asked and asked > hi:
        raise ValueError(f"--max-batch {asked} is above the engine profile's maximum batch {hi}")
    return asked or hi


def preferred_sizes(max_batch: int) -> list[int]:
    """Powers of two from 4 (or 1) up to ``max_batch``, and ``max_batch`` itself."""
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max_batch and (b >= 4 or max_batch < 4)]
    return sorted(set(sizes + [max_batch]))


def frame_dims(spec_shape) -> list[int]:
    """A metadata shape without its batch axis, dynamic axes as -1."""
    return [-1 if isinstance(d, str) else int(d) for d in spec_shape[1:]]


# ---- configurations ----------------------------------------------------------------------------


def tensor(pb, cls, name: str, dtype: str, dims) -> object:
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name!r}: dtype {dtype} has no Triton type here; expected one of {sorted(DTYPES)}")
    return cls(name=name, data_type=getattr(pb, DTYPES[dtype]), dims=list(dims))


def graph_config(pb, info: ModelInfo, name: str, platform: str, max_batch: int, instances: int,
                 delay_us: int, kind: str):
    cfg = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch,
                         default_model_filename="model.onnx" if platform == "onnxruntime_onnx" else "model.plan")
    cfg.input.extend(tensor(pb, pb.ModelInput, t.name, t.dtype, frame_dims(t.shape)) for t in info.inputs)
    cfg.output.extend(tensor(pb, pb.ModelOutput, t.name, t.dtype, frame_dims(t.shape)) for t in info.outputs)
    cfg.dynamic_batching.preferred_batch_size.extend(preferred_sizes(max_batch))
    cfg.dynamic_batching.max_queue_delay_microseconds = delay_us
    cfg.instance_group.add(count=instances, kind=getattr(pb.ModelInstanceGroup, kind))
    return cfg


def python_config(pb, name: str, max_batch: int, instances: int, inputs, outputs, parameters: dict):
    cfg = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch)
    cfg.input.extend(tensor(pb, pb.ModelInput, *t) for t in inputs)
    cfg.output.extend(tensor(pb, pb.ModelOutput, *t) for t in outputs)
    cfg.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    for key, value in parameters.items():
        cfg.parameters[key].string_value = value
    return cfg


def ensemble_config(pb, max_batch: int, aux_dtype: str, aux_dims, steps):
    cfg = pb.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=max_batch)
    cfg.input.extend([tensor(pb, pb.ModelInput, "rgb", "uint8", [-1, -1, 3]),
                      tensor(pb, pb.ModelInput, "aux", aux_dtype, aux_dims)])
    cfg.output.append(tensor(pb, pb.ModelOutput, "labels", "uint8", [-1, -1]))
    for model, inputs, outputs in steps:
        step = cfg.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return cfg


def repository_configs(info: ModelInfo, platform: str, max_batch: int, instances: int = 1, delay_us: int = 500,
                       kind: str = "KIND_GPU", color_order: str = "rgb", depth_units: float | None = None,
                       aux_dtype: str | None = None) -> dict:
    """{model name: ModelConfig} for the repository."""
    pb = model_config_pb2()
    if info.kind != "gopt":
        raise ValueError(f"a {info.kind} model; the Triton repository serves GoPT (rgb + aux) models")
    if info.input("rgb").dtype == "uint8":  # the graph preprocesses its own frames
        return {ENSEMBLE: graph_config(pb, info, ENSEMBLE, platform, max_batch, instances, delay_us, kind)}
    cfg = info.config
    h, w = cfg["img_size"]
    channels = len(cfg["aux_mean"])
    aux_dtype = aux_dtype or AUX_DTYPES.get(cfg["modality"], "uint8")
    aux_dims = [-1, -1] if channels == 1 else [-1, -1, channels]
    settings = json.dumps({"model": json.loads(info.to_json()), "color_order": color_order, "depth_units": depth_units})
    pre = python_config(pb, "preprocess", max_batch, instances,
                        [("rgb", "uint8", [-1, -1, 3]), ("aux", aux_dtype, aux_dims)],
                        [("rgb_input", "float32", [3, h, w]), ("aux_input", "float32", [channels, h, w]),
                         ("frame_size", "int32", [2])], {"settings": settings})
    post = python_config(pb, "postprocess", max_batch, instances,
                         [("model_labels", "uint8", [h, w]), ("frame_size", "int32", [2])],
                         [("labels", "uint8", [-1, -1])], {})
    graph = graph_config(pb, info, GRAPH, platform, max_batch, instances, delay_us, kind)
    ensemble = ensemble_config(pb, max_batch, aux_dtype, aux_dims, [
        ("preprocess", {"rgb": "rgb", "aux": "aux"},
         {"rgb_input": "rgb_input", "aux_input": "aux_input", "frame_size": "frame_size"}),
        (GRAPH, {"rgb": "rgb_input", "aux": "aux_input"}, {"labels": "model_labels"}),
        ("postprocess", {"model_labels": "model_labels", "frame_size": "frame_size"}, {"labels": "labels"})])
    return {"preprocess": pre, GRAPH: graph, "postprocess": post, ENSEMBLE: ensemble}


# ---- writing -----------------------------------------------------------------------------------


def copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def check_repository(repo: Path, names, overwrite: bool) -> None:
    """Before writing: the repository is a folder (made when missing) and none of the model
    folders to write exists, unless ``overwrite``."""
    output_dir(repo)
    existing = [n for n in names if (repo / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"{repo}: model folders {', '.join(existing)} exist already; choose another repository "
                         "or pass --overwrite to replace them")
    for n in existing:
        if not (repo / n).is_dir():
            raise ValueError(f"{repo / n}: is a file; a model of the repository is a folder")


def write_repository(model: Path, repo: Path, configs: dict, overwrite: bool = False) -> list[Path]:
    from google.protobuf import text_format

    written = []
    for name, cfg in configs.items():
        folder = repo / name
        if overwrite and folder.is_dir():
            shutil.rmtree(folder)  # no file of the earlier model left beside the new one
        write_text_atomic(folder / "config.pbtxt", text_format.MessageToString(cfg))
        written.append(folder / "config.pbtxt")
        if cfg.platform in ("onnxruntime_onnx", "tensorrt_plan"):
            copy_atomic(model, folder / "1" / cfg.default_model_filename)
        elif cfg.backend == "python":
            copy_atomic(PYTHON_MODELS[name], folder / "1" / "model.py")
        else:
            (folder / "1").mkdir(parents=True, exist_ok=True)  # an ensemble has an empty version folder
    return written


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m export.triton_repo", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported GoPT model: .onnx, or .engine / .plan with its .json sidecar")
    p.add_argument("-o", "--output", type=Path, required=True, help="the model repository folder to write")
    p.add_argument("--max-batch", type=count, default=None,
                   help="Triton's max_batch_size (default: the engine profile's maximum; ONNX with a dynamic "
                        "batch: 16; a batch-1 export: 1)")
    p.add_argument("--instances", type=count, default=1, help="model instances (per GPU; Python models on the CPU)")
    p.add_argument("--max-queue-delay-us", type=natural, default=500,
                   help="how long the dynamic batcher waits to fill a batch, microseconds")
    p.add_argument("--overwrite", action="store_true", help="replace model folders that exist in the repository")
    p.add_argument("--cpu", action="store_true", help="run the graph on the CPU (instance_group KIND_CPU)")
    p.add_argument("--color-order", choices=("rgb", "bgr"), default="rgb",
                   help="channel order of the uint8 frames clients send (default rgb)")
    p.add_argument("--aux-dtype", choices=("uint8", "uint16", "float32"), default=None,
                   help="dtype of the aux frames clients send (default: uint16 for depth, else uint8)")
    p.add_argument("--depth-units", type=positive, default=None,
                   help="metres per count of uint16 depth frames (default: the model's, else 0.001)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_tool(write_command, parse_args, argv)


def write_command(args) -> int:
    info, platform, lo, hi = read_model(args.model)
    max_batch = batch_limit(args.model, info, lo, hi, args.max_batch)
    configs = repository_configs(info, platform, max_batch, args.instances, args.max_queue_delay_us,
                                 "KIND_CPU" if args.cpu else "KIND_GPU", args.color_order, args.depth_units,
                                 args.aux_dtype)
    check_repository(args.output, configs, args.overwrite)
    written = write_repository(args.model, args.output, configs, args.overwrite)
    for path in written:
        print(f"wrote {path}")
    print(f"serve it: tritonserver --model-repository {args.output.resolve()}  (model '{ENSEMBLE}', "
          f"max_batch_size {max_batch}, {platform})")
    if platform == "tensorrt_plan":
        print("note: the server's TensorRT must be the version that built the engine (see its .json sidecar)")
        if info.plugins:
            print(f"note: the engine uses this project's TensorRT plugins ({', '.join(map(str, info.plugins))}): "
                  f"start the server with LD_PRELOAD={PLUGIN_LIBRARY} (the path of the library you built)")
    if max_batch == 1 and args.max_batch is None:
        print(f"note: {args.model.name} takes one frame per call (exported without --dynamic-batch): Triton "
              "serves it without batching requests; export with --dynamic-batch to batch them")
    if ENSEMBLE in configs and configs[ENSEMBLE].platform == "ensemble":
        print("note: the Python preprocess / postprocess models import this project: "
              "pip install it into the server's Python (see docs/fleet.md, Triton Inference Server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
