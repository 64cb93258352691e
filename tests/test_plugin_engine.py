"""A fused GoPT graph on the TensorRT path, as far as it goes without TensorRT: the builder
insists on the plugin library and records its SHA-256 in the engine's sidecar; the TensorRT
backend finds the library (beside the engine, $GOPT_PLUGIN_LIB) and refuses a missing or
different one with a clear error, before TensorRT is imported."""
import hashlib

import pytest

import factories

from export.onnx import parse_args as onnx_args, run as onnx_run
from export.tensorrt import UsageError, builder_settings, make_plan, parse_args, run, sidecar_for
from models import save_gopt
from runtime import plugin_ops
from runtime.metadata import ModelFileError
from runtime.trt_backend import TensorRTBackend, engine_plugin_library, read_sidecar, write_sidecar


@pytest.fixture(scope="module")
def fused_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("fused_trt")
    save_gopt(factories.tiny_gopt(1, img_size=(32, 48)), d / "tiny.pt")
    assert onnx_run(onnx_args([str(d / "tiny.pt"), "-o", str(d / "tiny.onnx"), "--fused-kernels",
                               "--dynamic-batch", "--no-check"])) == 0
    return d / "tiny.onnx"


def test_build_without_the_plugin_library_is_a_one_line_error(fused_onnx, tmp_path, capsys):
    missing = tmp_path / "libgopt_trt_plugins.so"
    with pytest.raises(UsageError, match="GoptGroupMerge, GoptPromptInject nodes run as TensorRT plugins"):
        make_plan(parse_args([str(fused_onnx), "--plugins", str(missing)]))
    assert run([str(fused_onnx), "--plugins", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file" in err and "--plugins LIB" in err and len(err.splitlines()) == 1


def fake_engine(fused_onnx, folder, library_bytes):
    """An engine file (bytes TensorRT never reads here) with the sidecar the builder writes for
    a plan that names a plugin library of ``library_bytes``."""
    library = folder / "built" / plugin_ops.PLUGIN_LIBRARY
    library.parent.mkdir(exist_ok=True)
    library.write_bytes(library_bytes)
    plan = make_plan(parse_args([str(fused_onnx), "--plugins", str(library), "-o", str(folder / "m.engine")]))
    assert plan.plugins == library and plan.warnings == []
    engine = folder / "m.engine"
    engine.write_bytes(b"serialized engine")
    settings = builder_settings(plan, timing_cache_reused=False, seconds=1.0)
    write_sidecar(engine, sidecar_for(plan, "10.3.0", "NVIDIA Jetson AGX Orin", (8, 7), b"serialized engine",
                                      settings))
    return engine, library


def test_sidecar_records_the_plugin_library(fused_onnx, tmp_path):
    engine, library = fake_engine(fused_onnx, tmp_path, b"plugin library v1")
    sidecar = read_sidecar(engine)
    assert sidecar.plugins == {"file": plugin_ops.PLUGIN_LIBRARY, "ops": ["GoptGroupMerge", "GoptPromptInject"],
                               "sha256": hashlib.sha256(b"plugin library v1").hexdigest()}


def test_backend_finds_checks_and_explains_the_plugin_library(fused_onnx, tmp_path, monkeypatch):
    engine, library = fake_engine(fused_onnx, tmp_path, b"plugin library v1")
    sidecar = read_sidecar(engine)
    monkeypatch.setenv(plugin_ops.PLUGIN_LIBRARY_ENV, str(library))
    assert engine_plugin_library(engine, sidecar) == library
    monkeypatch.setenv(plugin_ops.PLUGIN_LIBRARY_ENV, str(tmp_path / "elsewhere.so"))
    with pytest.raises(ModelFileError, match="need the TensorRT plugin library libgopt_trt_plugins.so"):
        engine_plugin_library(engine, sidecar)
    with pytest.raises(ModelFileError, match="elsewhere.so: no such file"):
        TensorRTBackend(engine)  # refused before TensorRT is imported
    monkeypatch.delenv(plugin_ops.PLUGIN_LIBRARY_ENV)
    (tmp_path / plugin_ops.PLUGIN_LIBRARY).write_bytes(b"plugin library v2")  # beside the engine
    with pytest.raises(ModelFileError, match="not the plugin library the engine was built with"):
        engine_plugin_library(engine, sidecar)
    (tmp_path / plugin_ops.PLUGIN_LIBRARY).write_bytes(b"plugin library v1")
    assert engine_plugin_library(engine, sidecar) == tmp_path / plugin_ops.PLUGIN_LIBRARY


def test_plugins_flag_on_a_standard_graph_is_only_a_warning(tmp_path):
    save_gopt(factories.tiny_gopt(1, img_size=(32, 48)), tmp_path / "m.pt")
    assert onnx_run(onnx_args([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx"), "--no-check"])) == 0
    plan = make_plan(parse_args([str(tmp_path / "m.onnx"), "--plugins", str(tmp_path / "lib.so")]))
    assert plan.plugins is None and any("no custom nodes" in w for w in plan.warnings)
