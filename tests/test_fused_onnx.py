"""GoPT -> fused ONNX (--fused-kernels): one custom node per prompter step, in the domain
and with the attributes TensorRT's ONNX parser maps to the gopt plugins, and ONNX Runtime
(onnxruntime-extensions ops computing the PyTorch reference) matching PyTorch on the real
frames."""
import numpy as np
import onnx
import pytest

import factories

from export import graph, parity
from export.fused_onnx import fused_nodes
from export.onnx import check_gopt, parse_args, run
from export.progress import Progress
from models import save_gopt
from runtime.backends import plugin_ops
from runtime.metadata import read_onnx_info
from runtime.backends.ort_backend import OnnxRuntimeBackend


def tiny(modality="thermal"):
    extra = dict(modality="depth", aux_mean=[2.5], aux_std=[1.2]) if modality == "depth" else {}
    return factories.tiny_gopt(3, img_size=(32, 48), class_names=list("abcde"), **extra)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """The thermal and depth tiny models, each exported with --fused-kernels (dynamic batch)."""
    d = tmp_path_factory.mktemp("fused")
    out = {}
    for modality in ("thermal", "depth"):
        model = tiny(modality)
        save_gopt(model, d / f"{modality}.pt")
        path = d / f"{modality}.onnx"
        assert run(parse_args([str(d / f"{modality}.pt"), "-o", str(path), "--fused-kernels", "--dynamic-batch",
                               "--no-check"])) == 0
        out[modality] = model, path
    return out


def test_fused_nodes_types_domain_attributes_and_weights(fused):
    model, path = fused["thermal"]
    m = onnx.load(str(path))
    nodes = fused_nodes(m)
    layers = len(model.config.prompt_layers)
    assert [n.op_type for n in nodes] == ["GoptGroupMerge", "GoptPromptInject"] * layers
    initializers = {t.name for t in m.graph.initializer}
    for n in nodes:
        assert n.domain == "ai.onnx.contrib"
        attrs = {a.name: onnx.helper.get_attribute_value(a).decode() for a in n.attribute}
        assert attrs == {"plugin_namespace": "gopt", "plugin_version": "1"}
        assert len(n.input) == len(plugin_ops.INPUTS[n.op_type]) and len(n.output) == 1
        assert all(name in initializers for name in n.input[2:]), "the weights are initializer inputs"
        assert not any(name in initializers for name in n.input[:2]), "the activations are graph tensors"
    # the reference subgraph (ArgMax over the groups, one-hot Equal) is gone; only the label map's ArgMax stays
    assert sum(n.op_type == "ArgMax" for n in m.graph.node) == 1
    assert "Equal" not in graph.op_types(m)
    assert {(o.domain, o.version) for o in m.opset_import} >= {("ai.onnx.contrib", 1)}
    assert read_onnx_info(path).plugins == ["GoptGroupMerge", "GoptPromptInject"]
    assert graph.tensorrt_problems(m) == []  # the plugins serve the two custom ops


@pytest.mark.parametrize("modality", ["thermal", "depth"])
def test_fused_graph_matches_pytorch_on_the_real_frame(fused, modality):
    model, path = fused[modality]
    info = read_onnx_info(path)
    results = check_gopt(model, path, info, batch=2, progress=Progress(2))
    real = [r for r in results if r.name.startswith("real")]
    assert len(real) == 1, "a bundled real frame exists for this modality"
    for r in results:
        assert r.max_abs <= 1e-4, r.line()  # fp32: accumulation order only
        assert r.label_agreement == 1.0, r.line()


def test_fused_graph_runs_in_the_onnxruntime_backend(fused):
    model, path = fused["thermal"]
    backend = OnnxRuntimeBackend(path, device="cpu")
    rng = np.random.default_rng(5)
    feeds = {"rgb": rng.standard_normal((3, 3, 32, 48), dtype=np.float32),
             "aux": rng.standard_normal((3, 1, 32, 48), dtype=np.float32)}
    out = backend.infer(feeds)
    import torch

    with torch.no_grad():
        ref = model(torch.from_numpy(feeds["rgb"]), torch.from_numpy(feeds["aux"])).numpy()
    assert parity.FP32.passes(parity.compare("logits", out["logits"], ref, (out["labels"], ref.argmax(1))))


def test_fused_fp16_is_refused_with_a_clear_error(tmp_path, capsys):
    save_gopt(tiny(), tmp_path / "m.pt")
    assert run(parse_args([str(tmp_path / "m.pt"), "--fused-kernels", "--fp16", "--no-check"])) == 2
    assert "--fused-kernels" in capsys.readouterr().err


def test_standard_export_has_no_custom_nodes(tmp_path):
    model = tiny()
    save_gopt(model, tmp_path / "m.pt")
    assert run(parse_args([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx"), "--no-check"])) == 0
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert fused_nodes(m) == [] and read_onnx_info(tmp_path / "m.onnx").plugins == []
