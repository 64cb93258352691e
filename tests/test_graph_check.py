"""Model metadata checked against the graph when a model is loaded: one ModelFileError naming
the field, never a failure at the first frame or a label above the class count."""
import json

import onnx
import pytest
from onnx import TensorProto, helper

from factories import tiny_gopt
from export.onnx import parse_args, run
from models import save_gopt
from runtime import ModelFileError, Segmenter
from runtime.graph_check import check_graph, check_model
from runtime.metadata import META_KEY, TensorSpec, gopt_model_info, read_onnx_info


@pytest.fixture(scope="module")
def gopt_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("graph_check")
    save_gopt(tiny_gopt(), d / "tiny.pt")
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "tiny.onnx"), "--no-check"])) == 0
    return d / "tiny.onnx"


def with_metadata(src, dst, edit):
    """A copy of ``src`` whose metadata JSON went through ``edit(dict)``."""
    model = onnx.load(str(src))
    prop = next(p for p in model.metadata_props if p.key == META_KEY)
    d = json.loads(prop.value)
    edit(d)
    prop.value = json.dumps(d)
    onnx.save(model, str(dst))
    return dst


def load_error(path) -> str:
    with pytest.raises(ModelFileError) as e:
        Segmenter(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_untouched_file_loads(gopt_onnx):
    assert Segmenter(gopt_onnx).kind == "gopt"


def test_edited_num_classes(gopt_onnx, tmp_path):
    path = with_metadata(gopt_onnx, tmp_path / "k.onnx", lambda d: d["config"].update(num_classes=3))
    assert "config.num_classes gives 'logits' axis 1 = 3" in load_error(path)
    # Edited in the specs too: the graph still has 5 classes.
    def both(d):
        d["config"]["num_classes"] = 3
        d["outputs"][0]["shape"][1] = 3
    path = with_metadata(gopt_onnx, tmp_path / "k2.onnx", both)
    assert "'logits' axis 1 is 5 in the graph, 3 in the metadata" in load_error(path)


def test_wrong_img_size(gopt_onnx, tmp_path):
    path = with_metadata(gopt_onnx, tmp_path / "s.onnx", lambda d: d["config"].update(img_size=[96, 128]))
    assert "config.img_size" in load_error(path)


@pytest.mark.parametrize("key", ["rgb_mean", "aux_std", "modality", "num_classes", "img_size", "aux_channels"])
def test_missing_config_key(gopt_onnx, tmp_path, key):
    path = with_metadata(gopt_onnx, tmp_path / "m.onnx", lambda d: d["config"].pop(key))
    assert f"config.{key} must be" in load_error(path) and "found missing" in load_error(path)


def test_malformed_config_value(gopt_onnx, tmp_path):
    path = with_metadata(gopt_onnx, tmp_path / "v.onnx", lambda d: d["config"].update(rgb_std=[1, 0, 1]))
    assert "config.rgb_std must be 3 positive numbers, found [1, 0, 1]" in load_error(path)


def test_foreign_graph_with_gopt_metadata(gopt_onnx, tmp_path):
    """Another model's graph carrying a copied GoPT metadata block."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {META_KEY: read_onnx_info(gopt_onnx).to_json()})
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    assert "the graph's inputs are ['x'], its metadata says ['rgb', 'aux']" in load_error(tmp_path / "foreign.onnx")


def test_wrong_dtype_in_metadata(gopt_onnx, tmp_path):
    path = with_metadata(gopt_onnx, tmp_path / "t.onnx", lambda d: d["outputs"][1].update(dtype="int64"))
    assert "'labels' is uint8 in the graph, int64 in the metadata" in load_error(path)


def test_simcmf_encoder_metadata_checked(tmp_path):
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    _, (enc, _) = export_simcmf(tiny_model(modality="rgbt"), tmp_path / "tiny", batch=1, progress=Progress(2))
    with_metadata(enc, enc, lambda d: d["config"].update(in_chans=3, pixel_mean=None, pixel_std=None,
                                                         minmax_channels=None))
    assert "config.in_chans gives 'x' axis 1 = 3" in load_error(enc)


# ---- the comparison the TensorRT backend runs on an engine's I/O tensors (dims -1: dynamic) ----

CFG = dict(tiny_gopt().config.to_dict())


def engine_io(batch=-1, classes=5, label_dtype="uint8"):
    H, W = CFG["img_size"]
    return ([TensorSpec("rgb", [batch, 3, H, W], "float32"), TensorSpec("aux", [batch, 1, H, W], "float32")],
            [TensorSpec("logits", [batch, classes, H, W], "float32"), TensorSpec("labels", [batch, H, W], label_dtype)])


def test_engine_io_comparison():
    dynamic = gopt_model_info(CFG, "batch")
    check_model(dynamic, "e.engine", *engine_io())
    check_model(gopt_model_info(CFG, 2), "e.engine", *engine_io(batch=-1))  # a dynamic engine runs batch 2
    with pytest.raises(ModelFileError, match="'rgb' axis 0 is fixed at 1 in the graph, dynamic"):
        check_graph(dynamic, *engine_io(batch=1), "e.engine")
    with pytest.raises(ModelFileError, match="'logits' axis 1 is 7 in the graph, 5 in the metadata"):
        check_graph(dynamic, *engine_io(classes=7), "e.engine")
    with pytest.raises(ModelFileError, match="'labels' is int32 in the graph, uint8"):
        check_graph(dynamic, *engine_io(label_dtype="int32"), "e.engine")
    inputs, outputs = engine_io()
    with pytest.raises(ModelFileError, match="'labels' has rank 2"):
        check_graph(dynamic, inputs, [outputs[0], TensorSpec("labels", [-1, 48], "uint8")], "e.engine")
    with pytest.raises(ModelFileError, match="the graph's outputs are \\['logits'\\]"):
        check_graph(dynamic, inputs, outputs[:1], "e.engine")
