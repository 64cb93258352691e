"""ONNX graph hygiene after export: shape folding, metadata, the TensorRT op check, and the
precision policy of half-precision models (fp16 / bf16) and of quantized ones: which nodes
must stay fp32."""
from __future__ import annotations

import warnings

import onnx

from runtime.metadata import META_KEY, ModelInfo
from runtime.backends.plugin_ops import PLUGINS
from .trt_ops import TRT10_MAX_OPSET, TRT10_RESIZE_MODES, TRT10_SUPPORTED_OPS

# Ops whose inputs and outputs stay fp32 in an fp16 model: normalisation and softmax
# overflow or lose too much in fp16, and every argmax must see fp32 scores.
FP32_OPS = ("LayerNormalization", "Softmax", "ArgMax", "ReduceMean", "Erf", "Pow", "Sqrt",
            "IsInf", "IsNaN")  # ONNX Runtime has no fp16 IsInf / IsNaN
# Between a producing MatMul / Conv and an ArgMax, these only move or rescale values: the
# whole chain is kept in fp32 so that the argmax input is computed in fp32.
_PASS_THROUGH = {"Add", "Sub", "Mul", "Div", "Resize", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                 "Slice", "Cast", "Identity", "Relu"}
_PRODUCERS = {"MatMul", "Gemm", "Conv"}


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold shape arithmetic and drop dead nodes (onnxslim), keeping the model valid;
    GELU's factors in the order ONNX Runtime fuses (``gelu_in_fusable_order``)."""
    import onnxslim

    slim = onnxslim.slim(model)
    gelu_in_fusable_order(slim)
    onnx.checker.check_model(slim)
    return slim


def _scalar(model: onnx.ModelProto, name: str) -> float | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            value = numpy_helper.to_array(t)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def gelu_in_fusable_order(model: onnx.ModelProto) -> int:
    """Exact GELU exports as ``x * (0.5 * (1 + erf(x / sqrt 2)))``; ONNX Runtime's GeluFusion
    matches ``(x * (1 + erf(x / sqrt 2))) * 0.5`` and leaves the first as five kernels (80 ms of
    a GoPT-B frame on a 2-core CPU). Swaps the two Muls in place; bit-identical, since scaling
    by 0.5 commutes with rounding. Returns how many GELUs were reordered."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only_consumer(name, op_type):
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    count = 0
    for erf in [n for n in model.graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        add = only_consumer(erf.output[0], "Add")
        half = add and only_consumer(add.output[0], "Mul")
        final = half and only_consumer(half.output[0], "Mul")
        if not (div is not None and div.op_type == "Div" and final):
            continue
        x = div.input[0]
        half_const = [i for i in half.input if i != add.output[0]]
        x_side = [i for i in final.input if i != half.output[0]]
        if len(half_const) != 1 or _scalar(model, half_const[0]) != 0.5 or x_side != [x]:
            continue
        # half: (1 + erf) * x;  final: half * 0.5
        half.input[:] = [add.output[0], x]
        final.input[:] = [half.output[0], half_const[0]]
        count += 1
    return count


def set_metadata(model: onnx.ModelProto, info: ModelInfo) -> None:
    for prop in list(model.metadata_props):
        if prop.key == META_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=META_KEY, value=info.to_json())
    model.producer_name = "mmseg-deploy"


def op_types(model: onnx.ModelProto) -> set[str]:
    ops = set()

    def visit(graph):
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)

    visit(model.graph)
    return ops


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Everything in the graph that TensorRT 10's ONNX parser would reject."""
    unsupported = op_types(model) - TRT10_SUPPORTED_OPS - set(PLUGINS)
    problems = [f"op {op} is not supported by TensorRT 10" for op in sorted(unsupported)]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > TRT10_MAX_OPSET:
        problems.append(f"opset {opset} is above TensorRT 10's {TRT10_MAX_OPSET}")
    for node in model.graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in TRT10_RESIZE_MODES:
                problems.append(f"Resize {node.name} uses mode {mode!r} (TensorRT: nearest, linear)")
            if attrs.get("antialias", 0):
                problems.append(f"Resize {node.name} uses antialiasing")
    return problems


def argmax_input_chain(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that compute an ArgMax's input: back from every ArgMax through
    value-moving ops to (and including) the MatMul / Gemm / Conv that computes the scores.
    Half-precision and quantized models keep this chain in fp32 so that a hard assignment
    sees fp32 scores."""
    producer = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name for t in model.graph.initializer}
    keep, stack = set(), [n.input[0] for n in model.graph.node if n.op_type == "ArgMax"]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep:
            continue
        keep.add(node.name)
        if node.op_type in _PASS_THROUGH:
            stack.extend(i for i in node.input if i and i not in initializers)
        elif node.op_type not in _PRODUCERS:
            continue
    return keep


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations, fp32 inputs / outputs, LayerNorm, softmax and every argmax
    input (with the MatMul / Conv that computes it) kept in fp32."""
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # stale float32 annotations would shadow the converter's own
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    keep = argmax_input_chain(model)
    # An explicit Cast to float32 (an upcast written in the model) is kept as it is; the
    # converter then casts its result down, which it does not do for unblocked Casts.
    keep |= {n.name for n in model.graph.node if n.op_type == "Cast" and
             onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.FLOAT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "float32 number ... will be truncated": tiny weights to fp16
        model = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(FP32_OPS), node_block_list=sorted(keep))
    _restore_fp32_outputs(model)
    _feed_fp32(model, keep)
    return model


def to_half(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """``to_fp16`` or ``to_bf16`` by name ("fp16" / "bf16")."""
    if precision == "fp16":
        return to_fp16(model)
    if precision == "bf16":
        return to_bf16(model)
    raise ValueError(f"half precision is fp16 or bf16, got {precision!r}")


def to_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 policy of ``to_fp16`` with bfloat16 in place of float16: the same nodes stay
    fp32, every half-precision tensor is bf16, and the weights are rounded to bf16 from their
    fp32 values (not through fp16, whose range is smaller)."""
    import ml_dtypes
    from onnx import numpy_helper

    FLOAT16, BFLOAT16 = onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16
    originals = {t.name: t for t in model.graph.initializer}

    def bf16_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
        source = originals.get(t.name) or originals.get(t.name.removesuffix("_fp16")) or t
        values = numpy_helper.to_array(source).astype("float32")
        out = numpy_helper.from_array(values.astype(ml_dtypes.bfloat16), t.name)
        return out

    half = to_fp16(model)
    for i, t in enumerate(half.graph.initializer):
        if t.data_type == FLOAT16:
            half.graph.initializer[i].CopyFrom(bf16_tensor(t))
    for v in (*half.graph.value_info, *half.graph.input, *half.graph.output):
        if v.type.tensor_type.elem_type == FLOAT16:
            v.type.tensor_type.elem_type = BFLOAT16
    for node in half.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.INT and attr.name == "to" and attr.i == FLOAT16:
                attr.i = BFLOAT16
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT16:
                attr.t.CopyFrom(bf16_tensor(attr.t))
    onnx.checker.check_model(half)
    return half


def _feed_fp32(model: onnx.ModelProto, keep: set[str]) -> None:
    """Make the mixed-precision graph type-consistent the way the policy intends.

    Every kept node reads fp32: a Cast-to-fp16 in front of it is bypassed (its fp32 source
    is used directly, so no fp16 rounding reaches an argmax), any other fp16 input is
    upcast. Every other node reads fp16: an fp32 initializer it shares with a kept node
    (weights deduplicated by the graph optimiser) gets an fp16 copy.
    """
    from onnx import numpy_helper

    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    initializers = {t.name: t for t in model.graph.initializer}
    types.update({name: t.data_type for name, t in initializers.items()})
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes, copies = [], {}
    for node in model.graph.node:
        kept = node.name in keep or node.op_type in FP32_OPS
        for i, name in enumerate(node.input):
            if kept and types.get(name) == FLOAT16:
                src = producer.get(name)
                if src is not None and src.op_type == "Cast" and types.get(src.input[0]) == FLOAT:
                    node.input[i] = src.input[0]
                else:
                    up = f"{node.name}_fp32_in{i}"
                    nodes.append(onnx.helper.make_node("Cast", [name], [up], to=FLOAT, name=up))
                    node.input[i] = up
            elif (not kept and name in initializers and types[name] == FLOAT and node.op_type != "Cast"
                  and any(types.get(other) == FLOAT16 for other in node.input)):
                if name not in copies:
                    half = numpy_helper.to_array(initializers[name]).astype("float16")
                    copies[name] = numpy_helper.from_array(half, name + "_fp16")
                node.input[i] = name + "_fp16"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(copies.values())
    onnx.checker.check_model(model)


def _restore_fp32_outputs(model: onnx.ModelProto) -> None:
    """Graph outputs the converter left in fp16 (those shared with a kept fp32 chain) are cast back."""
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        inner = out.name + "_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], to=onnx.TensorProto.FLOAT,
                                                      name=out.name + "_to_fp32"))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
