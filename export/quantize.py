"""INT8 (and FP8) models for the runtime that will run them: dynamic INT8 for ONNX Runtime on
CPUs, explicit static Q/DQ for TensorRT (10.3 to 11.x, built strongly typed).

    python -m export.quantize MODEL.onnx --int8 [--target onnxruntime|tensorrt] [-o OUT] [--no-check]
    python -m export.quantize MODEL.onnx --int8 --target tensorrt [--calib PATH [--calib-aux PATH]] [--calib-frames N]
    python -m export.quantize MODEL.onnx --fp8 ...                 (TensorRT only)
        [--eval DIR [--eval-format F] [--eval-split S] [--eval-tolerance POINTS]]

MODEL.onnx: a GoPT graph or a SimCMF encoder (``OUT.encoder.onnx``; its decoder stays fp32)
from ``python -m export.onnx``. Both targets use ONNX Runtime's own quantizer, which
installs everywhere the project does:

- ``--target onnxruntime`` (``quantize_dynamic``): the linear layers' MatMuls become integer
  MatMuls (ONNX Runtime fuses them into ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``)
  with int8 weights per output channel (symmetric) and uint8 activations whose scale and
  zero point are computed on every run from the tensor itself: no calibration, nothing to
  clip on an unseen scene. Default output ``MODEL.int8.onnx``.
- ``--target tensorrt`` (``quantize_static``, QDQ format): INT8 symmetric for activations
  (per tensor, calibrated min / max) and weights (per output channel), every zero point 0 as
  TensorRT requires; Q/DQ in front of the MatMul / Gemm / Conv layers. Calibrated on real
  frames through the runtime's own preprocessing: the bundled samples (data/samples) by
  default, or --calib: a folder of MFNet 4-channel PNGs, an image, or --calib with
  --calib-aux: two folders / images / videos (as ``python -m runtime --rgb --aux`` reads
  them). ``--fp8``: E4M3 Q/DQ (opset 19, the first with float8 types) for Hopper and later
  GPUs. Default output ``MODEL.int8.qdq.onnx`` / ``MODEL.fp8.onnx``. OpenVINO runs the INT8
  Q/DQ model with its own integer kernels too.

The default target: tensorrt for --fp8 and for graphs exported with --fused-kernels (their
custom nodes are TensorRT plugins), onnxruntime otherwise; the output says which and why.
Both keep the precision policy: LayerNorm, softmax (and the MatMul reading attention
probabilities) and every argmax input chain (GoPT's prompter assignments and the label
argmax, export/graph.py) stay fp32. Dynamic quantization only touches MatMuls with a
constant weight; the MatMuls the policy keeps read two activations, so they stay fp32 there
in any case (quantizing every activation x activation MatMul as well, without the policy,
costs the demo checkpoint 6% of the night frame's labels; see docs/quantization.md).

The result is checked against the fp32 model in ONNX Runtime on the bundled real frames:
GoPT label agreement and logit error, SimCMF mask IoU over clicks; with --eval, also the
mean IoU of both models on a labelled data set (any layout ``python -m benchmarks.accuracy``
reads), failing when the quantized model's is more than --eval-tolerance points (default
1) below the fp32 model's. Until the check passes the file is ``OUT.unverified.onnx``; it
gets its final name (replacing an earlier OUT) only within tolerance (``--no-check`` writes the final name directly and
says it is unchecked). The metadata records the precision, the target, the quantizer
settings and the calibration set. Exit status: 0 written and within tolerance, 1 beyond
tolerance, 2 bad arguments or model file.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from evaluation.datasets import FORMATS
from runtime.files import atomic_path, promote, unverified_path
from runtime.metadata import ModelFileError, ModelInfo, read_onnx_info, warn_if_unverified
from . import graph
from .cli import ArgumentParser, UsageError, count, error_text, input_file, output_file, run_tool
from .progress import Progress

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")  # static Q/DQ (TensorRT)
# Dynamic INT8 (ONNX Runtime): MatMuls with a constant weight. Gemm has no integer kernel (Gemms
# become MatMul + Add first); ConvInteger on the patch embedding and the head cost the demo model
# 35% of its day-frame labels and saved no time.
DYNAMIC_OPS = ("MatMul",)
TARGETS = ("onnxruntime", "tensorrt")
FP8_OPSET = 19
# Tolerances of the export's check (INT8 rounds every MatMul input: judged by labels / masks).
MIN_LABEL_AGREEMENT = {"int8": 0.99, "fp8": 0.99}
MIN_MASK_IOU = {"int8": 0.9, "fp8": 0.9}


# ---- what stays fp32 ------------------------------------------------------------------------------

def nodes_to_keep_fp32(model: onnx.ModelProto) -> dict[str, list[str]]:
    """The nodes left unquantized, by reason: LayerNorm, softmax and the MatMuls that read
    attention probabilities, every argmax input chain."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    after_softmax = []
    for s in softmax:  # the probabilities' MatMul (through Cast / Reshape / Transpose / ...)
        stack = list(s.output)
        while stack:
            for c in consumers.get(stack.pop(), []):
                if c.op_type in QUANTIZED_OPS:
                    after_softmax.append(c.name)
                elif c.op_type in ("Cast", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Dropout"):
                    stack.extend(c.output)
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    keep = {
        "LayerNormalization": [n.name for n in model.graph.node if n.op_type == "LayerNormalization"],
        # A MatMul with a constant of rank > 2 (SimCMF's relative-position terms): ONNX Runtime has
        # no per-channel kernel for it; small, left fp32.
        "batched constant MatMul": [n.name for n in model.graph.node if n.op_type == "MatMul"
                                    and any(ranks.get(i, 0) > 2 for i in n.input)],
        "Softmax": [n.name for n in softmax] + after_softmax,
        "argmax input chain": sorted(graph.argmax_input_chain(model)),
    }
    return keep


def gemms_as_matmuls(model: onnx.ModelProto) -> int:
    """Every Gemm with a constant weight (``alpha = beta = 1``, no ``transA``; the layout a
    batch-1 export has) becomes MatMul + Add, in place; returns how many. ONNX Runtime runs a
    Q/DQ MatMul as an integer kernel (MatMulIntegerToFloat) but a Q/DQ Gemm whose output is
    not quantized as a dequantized fp32 Gemm, slower than the fp32 model; TensorRT reads both."""
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    transposed: dict[str, str] = {}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0)):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            if weight not in transposed:
                transposed[weight] = f"{weight}.T"
                w = numpy_helper.to_array(weights[weight]).T.copy()
                model.graph.initializer.append(numpy_helper.from_array(w, transposed[weight]))
            weight = transposed[weight]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out = node.output[0]
        product = f"{out}.matmul" if bias else out
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}.matmul"))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [out], name=f"{node.name}.bias"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for t in unused:
        model.graph.initializer.remove(t)
    return count


def name_nodes(model: onnx.ModelProto) -> None:
    """Every node gets a name (the quantizer excludes nodes by name)."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


# ---- calibration frames ---------------------------------------------------------------------------

def bundled_frames(info: ModelInfo, purpose: str = "; give calibration frames with --calib"
                   ) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, first frame, second frame or None) from data/samples for the model's modality:
    GoPT (rgb, aux) pairs; SimCMF (image, None)."""
    import cv2

    mfnet = [SAMPLES / "mfnet_01234N.png", SAMPLES / "mfnet_01477D.png"]
    cfg = info.config
    if info.kind == "gopt":
        if cfg["modality"] == "thermal" and cfg["aux_channels"] == 1:
            frames = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in mfnet]
            return [(p.name, f[..., :3], f[..., 3]) for p, f in zip(mfnet, frames)]
        if cfg["modality"] == "depth" and cfg["aux_channels"] == 1:
            return [("esanet_rgb.png + esanet_depth.png", cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR),
                     cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED))]
    else:
        modality = cfg.get("modality") or ""
        frames = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in mfnet]
        if cfg["in_chans"] == 4 and modality.startswith("rgbt"):
            return [(p.name, f, None) for p, f in zip(mfnet, frames)]
        if cfg["in_chans"] == 1 and modality.startswith("t"):
            return [(p.name, f[..., 3], None) for p, f in zip(mfnet, frames)]
    raise UsageError(f"no bundled sample frames for this model ({info.variant}){purpose}")


def source_frames(info: ModelInfo, calib: str, calib_aux: str | None, limit: int):
    """Frames from the user's source (read as ``python -m runtime`` reads them)."""
    from runtime.sources.streams import open_source

    if info.kind == "gopt":
        source = open_source(calib, calib_aux, modality=info.config["modality"])
        frames = []
        for pair in source:
            frames.append((pair.name, pair.rgb, pair.aux))
            if len(frames) >= limit:
                break
        return frames
    import cv2  # SimCMF: images with the model's channels

    paths = sorted(p for p in Path(calib).iterdir() if p.is_file()) if Path(calib).is_dir() else [Path(calib)]
    frames = []
    for p in paths[:limit]:
        image = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if image is not None:
            frames.append((p.name, image if info.config["in_chans"] > 1 or image.ndim == 2 else image[..., -1], None))
    return frames


def calibration_feeds(path: Path, frames) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each frame, made by the runtime's own preprocessing (``Segmenter``)."""
    from runtime import Segmenter

    feeds = []
    with Segmenter(path, device="cpu") as seg:
        for name, first, second in frames:
            try:
                if seg.kind == "gopt":
                    p = seg.prepare(first, second)
                    feeds.append({"rgb": p.rgb, "aux": p.aux})
                else:
                    feeds.append({"x": seg.encoder_input(first)})
            except ValueError as e:
                raise UsageError(f"calibration frame {name}: {e}") from None
    return feeds


class FeedReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over prepared feeds, with progress."""

    def __init__(self, feeds: list[dict], progress: Progress | None = None):
        self.feeds, self.i, self.progress = feeds, 0, progress

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        if self.progress is not None:
            self.progress.note(f"    calibration frame {self.i}/{len(self.feeds)}")
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0


# ---- quantization ---------------------------------------------------------------------------------

def quantize(path: Path, out: Path, precision: str, feeds: list[dict], calibration: dict,
             progress: Progress | None = None) -> ModelInfo:
    """Write the Q/DQ model ``out`` (atomically) from the fp32 model ``path``; returns its metadata."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    info = read_onnx_info(path)
    model = onnx.load(str(path))
    gemms = gemms_as_matmuls(model)
    name_nodes(model)
    keep = nodes_to_keep_fp32(model)
    quant_type = QuantType.QInt8 if precision == "int8" else QuantType.QFLOAT8E4M3FN
    if precision == "fp8" and graph_opset(model) < FP8_OPSET:
        model = onnx.version_converter.convert_version(model, FP8_OPSET)
    excluded = sorted({n for names in keep.values() for n in names})
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out.parent) as tmp, quiet_quantizer():
        tmp_in, tmp_out = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, str(tmp_in))
        quantize_static(
            str(tmp_in), str(tmp_out), FeedReader(feeds, progress), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, reduce_range=False,
            activation_type=quant_type, weight_type=quant_type, nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax if precision == "int8" else CalibrationMethod.Distribution,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "AddQDQPairToWeight": False,
                           # Q/DQ on the quantized layers' inputs only (TensorRT's placement): their
                           # outputs, read by LayerNorm / softmax / the argmax chains too, stay fp32
                           "DedicatedQDQPair": True, "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                           "QuantizeBias": False})  # TensorRT dequantizes INT8 / FP8 only, no int32 biases
        qdq = onnx.load(str(tmp_out))
    settings = {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "target": "tensorrt", "type": precision,
        "activations": "per tensor, symmetric", "weights": "per output channel, symmetric",
        "quantized_ops": list(QUANTIZED_OPS), "fp32": {k: len(v) for k, v in keep.items()},
        "gemms_as_matmuls": gemms, "calibration": calibration,
    }
    qinfo = dataclasses.replace(info, precision=precision, quantization=settings)
    graph.set_metadata(qdq, qinfo)
    with atomic_path(out) as tmp:
        onnx.save(qdq, str(tmp))
    return qinfo


def quantize_dynamic_int8(path: Path, out: Path) -> ModelInfo:
    """Write the dynamic INT8 model ``out`` (atomically) from the fp32 model ``path`` for ONNX
    Runtime on CPUs; returns its metadata."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    info = read_onnx_info(path)
    model = onnx.load(str(path))
    gemms = gemms_as_matmuls(model)  # Gemm has no integer kernel; MatMul has
    name_nodes(model)
    keep = nodes_to_keep_fp32(model)
    excluded = sorted({n for names in keep.values() for n in names})
    with tempfile.TemporaryDirectory(prefix="quantize.", dir=out.parent) as tmp, quiet_quantizer():
        tmp_in, tmp_out = Path(tmp) / "fp32.onnx", Path(tmp) / "dynamic.onnx"
        onnx.save(model, str(tmp_in))
        quantize_dynamic(str(tmp_in), str(tmp_out), op_types_to_quantize=list(DYNAMIC_OPS), per_channel=True,
                         reduce_range=False, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                         extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True})
        quantized = onnx.load(str(tmp_out))
    settings = {
        "tool": "onnxruntime.quantization.quantize_dynamic", "format": "IntegerOps", "target": "onnxruntime",
        "type": "int8", "activations": "uint8 per tensor, scale and zero point computed on every run",
        "weights": "int8 per output channel, symmetric", "quantized_ops": [f"{op} with a constant weight"
                                                                          for op in DYNAMIC_OPS],
        "integer_matmuls": sum(n.op_type == "MatMulInteger" for n in quantized.graph.node),
        "fp32": {k: len(v) for k, v in keep.items()}, "gemms_as_matmuls": gemms, "calibration": None,
    }
    qinfo = dataclasses.replace(info, precision="int8", quantization=settings)
    graph.set_metadata(quantized, qinfo)
    with atomic_path(out) as tmp:
        onnx.save(quantized, str(tmp))
    return qinfo


@contextlib.contextmanager
def quiet_quantizer():
    """ONNX Runtime's quantizer logs advice (pre-processing) that does not apply here."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger().setLevel(level)


def graph_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def nonzero_zero_points(model: onnx.ModelProto) -> list[str]:
    """Names of Q / DQ zero points that are not all zero (TensorRT refuses them)."""
    from onnx import numpy_helper

    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = node.attribute[0].t
    bad = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = values.get(node.input[2])
            if zp is None or np.any(numpy_helper.to_array(zp).astype(np.float32) != 0):
                bad.append(node.input[2])
    return bad


# ---- the check ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Agreement:
    name: str
    value: float  # label agreement (GoPT) or mask IoU (SimCMF)
    max_abs: float  # logit (embedding) error vs fp32
    rel: float

    def line(self, what: str) -> str:
        return f"{self.name:<34} {what} {100 * self.value:.3f}%  max-abs {self.max_abs:.3g}  rel {self.rel:.3g}"


def open_for_check(path: Path):
    """A CPU Segmenter on the model being checked: its ``.unverified`` name is what the check is
    about to settle, so the runtime's warning about unchecked models is not shown for it."""
    import warnings

    from runtime import Segmenter
    from runtime.metadata import UnverifiedModelWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedModelWarning)
        return Segmenter(path, device="cpu")


def check(fp32: Path, quantized: Path, frames, progress: Progress) -> list[Agreement]:
    """The quantized model vs the fp32 one, both in ONNX Runtime through the runtime's Segmenter."""
    from runtime import Segmenter

    out = []
    with Segmenter(fp32, device="cpu") as ref, open_for_check(quantized) as q:
        for name, first, second in frames:
            with progress(f"checking on {name} (ONNX Runtime: quantized vs fp32)"):
                if ref.kind == "gopt":
                    la, ga = ref.run(first, second, return_logits=True)
                    lb, gb = q.run(first, second, return_logits=True)
                    err = np.abs(ga - gb)
                    out.append(Agreement(name, float((la == lb).mean()), float(err.max()),
                                         float(err.max() / max(np.abs(ga).max(), 1e-12))))
                else:
                    out.append(mask_iou(ref, q, name, first))
    return out


def mask_iou(ref, q, name: str, image) -> Agreement:
    """SimCMF: mean mask IoU over clicks on a grid, and the embedding error."""
    H, W = image.shape[:2]
    clicks = [(int(W * fx), int(H * fy)) for fy in (0.25, 0.5, 0.75) for fx in (0.25, 0.5, 0.75)]
    ious = []
    for click in clicks:
        ma, _ = ref.run(image, points=[click])
        mb, _ = q.run(image, points=[click])
        union = np.logical_or(ma, mb).sum()
        ious.append(1.0 if union == 0 else np.logical_and(ma, mb).sum() / union)
    ref_emb, q_emb = ref._embed(image)[0], q._embed(image)[0]  # the cached embeddings of this image
    err = np.abs(ref_emb - q_emb)
    return Agreement(f"{name}: masks over {len(clicks)} clicks", float(np.mean(ious)), float(err.max()),
                     float(err.max() / max(np.abs(ref_emb).max(), 1e-12)))


def open_eval(args, info: ModelInfo):
    """The labelled frames of --eval (layout errors before any work: exit status 2)."""
    from evaluation import LayoutError, open_dataset
    from runtime.colors import class_names

    if args.no_check:
        raise UsageError("--eval is part of the check; it cannot be combined with --no-check")
    if info.kind != "gopt":
        raise UsageError("--eval measures GoPT label maps; a SimCMF encoder is checked by mask IoU over clicks")
    if not args.eval_tolerance >= 0:
        raise UsageError(f"--eval-tolerance is points of mean IoU, >= 0; got {args.eval_tolerance}")
    try:
        frames = open_dataset(args.eval, args.eval_format, args.eval_split, info.config["modality"],
                              tuple(class_names(info.config)))
    except (LayoutError, ValueError, OSError) as e:
        raise UsageError(f"--eval: {e}") from None
    if len(frames.classes) != info.config["num_classes"]:
        raise UsageError(f"--eval: {frames.spec.title} has {len(frames.classes)} classes, the model "
                         f"{info.config['num_classes']}")
    return frames


def eval_miou(fp32: Path, quantized: Path, frames, precision: str, tolerance: float, progress: Progress) -> bool:
    """Prints the quantized model's mean IoU on labelled frames beside the fp32 model's; False
    when it is more than ``tolerance`` points lower (or nothing could be evaluated)."""
    from evaluation import Entry, evaluate
    from runtime import Segmenter

    with Segmenter(fp32, device="cpu") as a, open_for_check(quantized) as b:
        base, quant = Entry("fp32", a), Entry(precision, b)
        with progress(f"evaluating the {precision} and fp32 models on the labelled frames in {frames.root}"):
            records = evaluate([quant], frames, reference=base, progress=progress)
    skipped = sum(r["status"] != "evaluated" or bool(r.get("failed")) for r in records)
    where = f"{frames.root} ({quant.frames} frames" + (f", {skipped} skipped" if skipped else "") + ")"
    m0, m1 = base.matrix.mean_iou(), quant.matrix.mean_iou()
    if not quant.frames or not base.frames or np.isnan(m0) or np.isnan(m1):
        print(f"  FAIL mean IoU on {where}: no labelled pixel could be evaluated")
        return False
    change = 100 * (m1 - m0)
    ok = change >= -tolerance
    print(("  ok   " if ok else "  FAIL ") + f"mean IoU on {where}: fp32 {100 * m0:.2f}%, {precision} {100 * m1:.2f}% "
          f"({change:+.2f} points, tolerance -{tolerance:g}); labels agree {100 * quant.agreement:.3f}%")
    return ok


# ---- command line ---------------------------------------------------------------------------------

def parse_args(argv):
    ap = ArgumentParser(prog="python -m export.quantize", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, help="an fp32 GoPT graph or SimCMF encoder from python -m export.onnx")
    kind = ap.add_mutually_exclusive_group(required=True)
    kind.add_argument("--int8", action="store_true", help="INT8 (dynamic for ONNX Runtime, Q/DQ for TensorRT)")
    kind.add_argument("--fp8", action="store_true", help="E4M3 FP8 Q/DQ (opset 19; TensorRT on Hopper and later)")
    ap.add_argument("--target", choices=TARGETS,
                    help="the runtime that will run the model: onnxruntime (dynamic INT8, CPUs) or tensorrt "
                         "(static symmetric Q/DQ; OpenVINO runs it too). Default: tensorrt for --fp8 and for "
                         "--fused-kernels graphs, else onnxruntime")
    ap.add_argument("--calib", help="calibration frames for --target tensorrt: an MFNet PNG folder or file, an image, "
                                    "a folder or a video (default: the bundled samples)")
    ap.add_argument("--calib-aux", help="the auxiliary frames paired with --calib (folder, image or video)")
    ap.add_argument("--calib-frames", type=count, default=64, metavar="N",
                    help="at most N calibration frames (default 64)")
    ap.add_argument("-o", "--output", type=Path,
                    help="output path (default MODEL.int8.onnx, MODEL.int8.qdq.onnx for tensorrt, MODEL.fp8.onnx); "
                         "written as OUT.unverified.onnx until its check passes, then renamed (replacing an earlier OUT)")
    ap.add_argument("--no-check", action="store_true", help="skip the comparison with the fp32 model")
    ap.add_argument("--eval", type=Path, metavar="DIR",
                    help="the check also compares the mean IoU of the two models on this labelled data set "
                         "(the layouts of python -m benchmarks.accuracy)")
    ap.add_argument("--eval-format", default="auto", choices=("auto", *FORMATS), help="its layout (default: recognised)")
    ap.add_argument("--eval-split", default="test", help="its split (default test)")
    ap.add_argument("--eval-tolerance", type=float, default=1.0, metavar="POINTS",
                    help="fail when the mean IoU is more than this many points (of 100) below the fp32 model's "
                         "(default 1)")
    return ap.parse_args(argv)


def choose_target(asked: str | None, precision: str, info: ModelInfo) -> tuple[str, str]:
    """(target, why): the runtime the quantized model is made for."""
    if precision == "fp8":
        if asked == "onnxruntime":
            raise UsageError("FP8 is for TensorRT (Hopper and later GPUs); for ONNX Runtime on a CPU use --int8")
        return "tensorrt", "FP8 runs on TensorRT only"
    if asked:
        return asked, "--target"
    if info.plugins:
        return "tensorrt", "the default for a graph exported with --fused-kernels (TensorRT plugins)"
    return "onnxruntime", "the default for --int8; --target tensorrt makes the Q/DQ model TensorRT builds"


def default_output(path: Path, precision: str, target: str = "tensorrt") -> Path:
    tag = f"{precision}.qdq" if precision == "int8" and target == "tensorrt" else precision
    name = path.name
    if name.endswith(".encoder.onnx"):  # keep SimCMF's .encoder.onnx ending (the runtime's pairing)
        return path.with_name(f"{name[:-len('.encoder.onnx')]}.{tag}.encoder.onnx")
    return path.with_name(f"{path.stem}.{tag}.onnx")


def write_static(args, info: ModelInfo, precision: str, out: Path, progress: Progress) -> ModelInfo:
    """Calibration frames, preprocessing, ``quantize_static``: the Q/DQ model for TensorRT."""
    with progress("reading the calibration frames"):
        if args.calib:
            try:
                frames = source_frames(info, args.calib, args.calib_aux, args.calib_frames)
            except (ValueError, OSError) as e:
                raise UsageError(f"--calib: {error_text(e)}") from None
            where = str(args.calib) + (f" + {args.calib_aux}" if args.calib_aux else "")
        else:
            frames = bundled_frames(info)[:args.calib_frames]
            where = "bundled samples (data/samples)"
        if not frames:
            raise UsageError(f"no calibration frames found in {args.calib}")
    with progress(f"preprocessing {len(frames)} calibration frame(s) as the runtime does"):
        feeds = calibration_feeds(args.onnx, frames)
    method = "MinMax" if precision == "int8" else "Distribution"
    calibration = {"source": where, "frames": [name for name, _, _ in frames], "method": method}
    if len(frames) < 16:
        print(f"note: {len(frames)} calibration frame(s); ranges from a few frames may clip on other scenes: "
              "give a few hundred of the robot's own frames with --calib")
    with progress(f"quantizing to {precision} Q/DQ ({method} calibration, ONNX Runtime's quantize_static)"):
        return quantize(args.onnx, out, precision, feeds, calibration, progress)


def describe(out: Path, qinfo: ModelInfo) -> str:
    """One line: what was written."""
    model = onnx.load(str(out), load_external_data=False)
    q = qinfo.quantization
    if q["target"] == "onnxruntime":
        what = f"{q['integer_matmuls']} integer MatMuls, activation scales computed per run"
    else:
        counts = {op: sum(n.op_type == op for n in model.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
        what = f"{counts['QuantizeLinear']} Q / {counts['DequantizeLinear']} DQ nodes"
    return (f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {qinfo.precision} for {q['target']}, {what}; "
            "fp32 kept: " + ", ".join(f"{v} {k}" for k, v in q["fp32"].items()) + ")")


def run(argv=None) -> int:
    """The command (exit status: module docstring); errors are one line (runtime/cli.py)."""
    return run_tool(quantize_command, parse_args, argv)


def check_model(path: Path) -> ModelInfo:
    """The input's metadata, or a one-line UsageError naming what it is and what is needed."""
    input_file(path, "an fp32 ONNX model from python -m export.onnx")
    try:
        info = read_onnx_info(path)
    except ModelFileError as e:
        raise UsageError(str(e)) from None
    if info.kind not in ("gopt", "simcmf_encoder"):
        raise UsageError(f"{path} is a {info.kind} graph; quantize a GoPT graph or a SimCMF encoder "
                         "(the SimCMF decoder stays fp32)")
    if info.precision != "fp32":
        raise UsageError(f"{path} is {info.precision}; quantize the fp32 export")
    warn_if_unverified(path)
    return info


def quantize_command(args) -> int:
    """Check everything, quantize for the target into ``OUT.unverified.onnx``, check it against
    the fp32 model and only then name it ``OUT`` (replacing an earlier file of that name); a
    model that fails its check keeps the ``.unverified`` name. ``--no-check`` writes ``OUT``
    directly."""
    precision = "int8" if args.int8 else "fp8"
    info = check_model(args.onnx)
    target, why = choose_target(args.target, precision, info)
    if args.calib_aux and not args.calib:
        raise UsageError("--calib-aux pairs with --calib")
    if args.calib and target == "onnxruntime":
        raise UsageError("--calib is for --target tensorrt: dynamic INT8 for ONNX Runtime computes its "
                         "activation scales on every frame and needs no calibration")
    labelled = open_eval(args, info) if args.eval else None
    final = args.output or default_output(args.onnx, precision, target)
    if final.suffix != ".onnx":
        raise UsageError(f"{final}: the output must end with .onnx")
    out = final if args.no_check else unverified_path(final)
    if final.resolve() == args.onnx.resolve() or out.resolve() == args.onnx.resolve():
        raise UsageError(f"{final}: the output would replace the input model")
    output_file(final, replace=True)
    output_file(out, replace=True)
    check_frames = [] if args.no_check else bundled_frames(info, " to check it on (pass --no-check)")
    print(f"target: {target} ({why})")
    progress = Progress((1 if target == "onnxruntime" else 3) + len(check_frames) + bool(args.eval))
    if target == "onnxruntime":
        with progress("quantizing to dynamic int8 (ONNX Runtime's quantize_dynamic)"):
            qinfo = quantize_dynamic_int8(args.onnx, out)
    else:
        qinfo = write_static(args, info, precision, out, progress)
    print(describe(out, qinfo))
    if target == "tensorrt":
        bad = nonzero_zero_points(onnx.load(str(out), load_external_data=False))
        if bad:
            print(f"error: {len(bad)} zero points are not 0 (TensorRT needs symmetric quantization): {bad[:5]}",
                  file=sys.stderr)
            return not_promoted(out, final)
    if args.no_check:
        print(f"unchecked (--no-check): {final} not compared with the fp32 model")
        return 0
    advice = ("deploy the fp32 model" if target == "onnxruntime"
              else "calibrate on more of the robot's frames (--calib), or deploy fp16")
    return verify(args.onnx, out, final, info, precision, check_frames, progress, advice, labelled,
                  args.eval_tolerance)


def verify(fp32: Path, out: Path, final: Path, info: ModelInfo, precision: str, frames, progress: Progress,
           advice: str, labelled=None, eval_tolerance: float = 1.0) -> int:
    """The check on the bundled frames (and with ``labelled``, the mean IoU on labelled frames);
    the file gets its final name only within tolerance."""
    results = check(fp32, out, frames, progress)
    what = "labels agree" if info.kind == "gopt" else "mask IoU"
    need = (MIN_LABEL_AGREEMENT if info.kind == "gopt" else MIN_MASK_IOU)[precision]
    print()
    for r in results:
        print(("  ok   " if r.value >= need else "  FAIL ") + r.line(what))
    within = all(r.value >= need for r in results)
    if labelled is not None:
        within = eval_miou(fp32, out, labelled, precision, eval_tolerance, progress) and within
    if within:
        print(f"within tolerance ({what} >= {100 * need:.0f}% with the fp32 model"
              + (f"; mean IoU at most {eval_tolerance:g} points below it)" if labelled is not None else ")"))
        promote(out, final)
        print(f"checked: {final}")
        return 0
    print(f"beyond tolerance: {advice}", file=sys.stderr)
    return not_promoted(out, final)


def not_promoted(written: Path, out: Path) -> int:
    if written == out:  # --no-check: nothing was judged, the file keeps its name
        return 1
    print(f"kept as {written} (failed its check; no file is named {out})", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
