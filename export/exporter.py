"""What every ONNX export shares, GoPT's (``onnx.py``) and SimCMF's (``simcmf_onnx.py``):
torch.onnx (dynamo) with named dynamic axes, the finished file (fp16, TensorRT's graph
rules, metadata, written atomically), the CPU session that checks it, the library
versions recorded in it, and the bundled sample frames the checks run on."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from runtime.files import atomic_path
from runtime.metadata import ModelFileError, ModelInfo, TensorSpec
from . import graph

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def versions() -> dict:
    import onnxruntime

    from importlib.metadata import PackageNotFoundError, version

    try:
        project = version("mmseg-deploy")
    except PackageNotFoundError:
        project = "source"
    return {"mmseg_deploy": project, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "exporter": "torch.onnx (dynamo)"}


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[TensorSpec],
                 outputs: list[TensorSpec], opset: int, translations: dict | None = None) -> onnx.ModelProto:
    """torch.onnx (dynamo) with the named dynamic axes of ``inputs``; returns the slimmed model.
    ``translations``: torch op -> ONNX function, for ops kept as custom nodes."""
    dims = {}
    dynamic_shapes = {}
    for spec in inputs:
        axes = spec.dynamic_axes()
        dynamic_shapes[spec.name] = {
            i: dims.setdefault(label, torch.export.Dim(label, min=1, max=4096)) for i, label in axes.items()
        } or None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
            dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, external_data=False,
            verbose=False, custom_translation_table=translations)
    model = program.model_proto
    return graph.simplify(model)


def finish(model: onnx.ModelProto, info: ModelInfo, path: Path, fp16: bool) -> onnx.ModelProto:
    if fp16:
        model = graph.to_fp16(model)
    problems = graph.tensorrt_problems(model)
    if problems:
        print("warning: TensorRT 10 would reject this graph: " + "; ".join(problems), file=sys.stderr)
    graph.set_metadata(model, info)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return model


def ort_session(path: Path, plugins=()):
    """A CPU session; ``plugins``: the fused nodes the graph has (their ONNX Runtime ops are registered)."""
    import onnxruntime as ort

    from runtime.backends import plugin_ops

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # No memory arena: a check runs each graph a few times, and the arena's power-of-two
    # growth held 6.7 GB after two SimCMF encoder runs where 3.7 GB is in use without it.
    opts.enable_cpu_mem_arena = False
    plugin_ops.session_options(opts, plugins)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # an export bug: say so in one line instead of ORT's trace
        raise ModelFileError(f"{path}: ONNX Runtime cannot load the exported graph: "
                             f"{str(e).splitlines()[0][:300]}") from None
