"""The fused GoPT ONNX graph: ``torch.ops.gopt`` custom ops -> one custom ONNX node each.

``torch.onnx.export`` (dynamo) keeps every ``kernels.custom_ops`` call as one node and
translates it with the functions below into ``GoptGroupMerge`` / ``GoptPromptInject`` in the
domain ``ai.onnx.contrib`` with ``plugin_namespace`` / ``plugin_version`` attributes (see
``runtime.backends.plugin_ops``). The schemas registered here let onnx's checker and onnxscript
build and validate those nodes.
"""
from __future__ import annotations

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema

from runtime.backends import plugin_ops

_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_DOCS = {plugin_ops.GROUP_MERGE: "GoPT CUP hard group merge (eq. 8-10), fused; TensorRT plugin gopt::GoptGroupMerge",
         plugin_ops.PROMPT_INJECT: "GoPT ACP cross-attention + injection (eq. 11-14, 3), fused; TensorRT plugin "
                                   "gopt::GoptPromptInject"}


def _schema(op_type: str) -> OpSchema:
    param = OpSchema.FormalParameter
    return OpSchema(
        op_type, plugin_ops.DOMAIN, int(plugin_ops.VERSION), doc=_DOCS[op_type],
        inputs=[param(name, "T") for name in plugin_ops.INPUTS[op_type]],
        outputs=[param(name, "T") for name in plugin_ops.OUTPUTS[op_type]],
        type_constraints=[("T", _TYPES, "fp32, fp16 or bf16; every input the same type")],
        attributes=[OpSchema.Attribute(name, OpSchema.AttrType.STRING, f"TensorRT plugin {name[7:]}")
                    for name in plugin_ops.ATTRIBUTES])


def register_schemas() -> None:
    """Once per process: onnx's schema registry refuses a second registration."""
    for op_type in plugin_ops.PLUGINS:
        if not onnx.defs.has(op_type, plugin_ops.DOMAIN):
            onnx.defs.register_schema(_schema(op_type))


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``."""
    import kernels.custom_ops  # noqa: F401  (defines torch.ops.gopt)

    register_schemas()
    contrib = onnxscript.values.Opset(plugin_ops.DOMAIN, int(plugin_ops.VERSION))

    def group_merge(*inputs):
        return contrib.GoptGroupMerge(*inputs, **plugin_ops.ATTRIBUTES)

    def prompt_inject(*inputs):
        return contrib.GoptPromptInject(*inputs, **plugin_ops.ATTRIBUTES)

    return {torch.ops.gopt.group_merge.default: group_merge, torch.ops.gopt.prompt_inject.default: prompt_inject}


def fused_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == plugin_ops.DOMAIN and n.op_type in plugin_ops.PLUGINS]
