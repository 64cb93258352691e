"""A fused GoPT graph on the TensorRT path: the builder insists on the plugin library and records
its SHA-256 in the engine's sidecar; the TensorRT backend finds the library (beside the engine,
$GOPT_PLUGIN_LIB) and refuses a missing or different one with a clear error, before TensorRT is
imported. Built and run on the simulated TensorRT (tests/simulated: the plugin layers run as the
project's ONNX Runtime custom ops) and on TensorRT with a GPU and the built library where present."""
import hashlib
import shutil

import numpy as np
import onnxruntime as ort

import pytest

import factories

from export.onnx import parse_args as onnx_args, run as onnx_run
from export.tensorrt import UsageError, builder_settings, make_plan, parse_args, run, sidecar_for
from models import save_gopt
from runtime.backends import plugin_ops
from runtime.metadata import ModelFileError
from runtime.backends.trt_backend import TensorRTBackend, engine_plugin_library, read_sidecar, write_sidecar
from simulated.environment import trt_env  # noqa: F401  (the fixture)


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


def plugin_library(trt_env, folder, content=b"stand-in for libgopt_trt_plugins.so"):
    """The plugin library to build with: on the simulation a file it treats as the library (the
    creators of native/plugins), on a GPU the built one."""
    if not trt_env.simulated:
        built = plugin_ops.find_plugin_library()
        if built is None or not built.is_file():
            pytest.skip(f"no {plugin_ops.PLUGIN_LIBRARY} built; {plugin_ops.missing_library_hint()}")
        return built
    library = folder / plugin_ops.PLUGIN_LIBRARY
    library.parent.mkdir(parents=True, exist_ok=True)
    library.write_bytes(content)
    trt_env.declare_plugin_library(library)
    return library


def test_fused_engine_runs_with_the_library_shipped_beside_it(trt_env, fused_onnx, tmp_path, monkeypatch):
    """Built with the build folder's library, run in the same process with its copy shipped beside
    the engine: one library, loaded once (TensorRT refuses to register the same plugins twice);
    the plugin layers give what ONNX Runtime gives with the project's custom ops."""
    monkeypatch.delenv(plugin_ops.PLUGIN_LIBRARY_ENV, raising=False)
    library = plugin_library(trt_env, tmp_path / "build")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    assert run([str(fused_onnx), "--plugins", str(library), "-o", str(deploy / "m.engine"), "--max-batch", "2"]) == 0
    shutil.copy(library, deploy / plugin_ops.PLUGIN_LIBRARY)
    rng = np.random.default_rng(0)
    feeds = {"rgb": rng.standard_normal((2, 3, 32, 48), dtype=np.float32),
             "aux": rng.standard_normal((2, 1, 32, 48), dtype=np.float32)}
    with TensorRTBackend(deploy / "m.engine") as backend:
        out = backend.infer(feeds)
    opts = ort.SessionOptions()
    plugin_ops.session_options(opts, plugin_ops.PLUGINS)
    ref_logits, ref_labels = ort.InferenceSession(str(fused_onnx), opts, providers=["CPUExecutionProvider"]).run(
        ["logits", "labels"], feeds)
    assert np.abs(out["logits"] - ref_logits).max() <= 1e-3 * max(1.0, np.abs(ref_logits).max())
    assert (out["labels"] == ref_labels).mean() >= 0.99


def test_another_build_of_the_library_in_the_same_process_is_a_clear_error(trt_env, fused_onnx, tmp_path, capsys):
    """TensorRT registers a plugin once per process: a second, different library with the same
    plugins cannot be loaded, and the error says which one is loaded already."""
    if not trt_env.simulated:
        pytest.skip("needs two builds of the plugin library")
    first = plugin_library(trt_env, tmp_path / "a", b"plugin library, one build")
    second = plugin_library(trt_env, tmp_path / "b", b"plugin library, another build")
    assert run([str(fused_onnx), "--plugins", str(first), "-o", str(tmp_path / "a.engine")]) == 0
    capsys.readouterr()
    assert run([str(fused_onnx), "--plugins", str(second), "-o", str(tmp_path / "b.engine")]) == 1
    err = capsys.readouterr().err
    assert f"{first} is already loaded in this process" in err, err


def test_a_library_without_the_graphs_plugins_fails_in_the_parser(trt_env, fused_onnx, tmp_path, capsys):
    """TensorRT's parser names each node it has no plugin for; exit status 1."""
    if not trt_env.simulated:
        pytest.skip("needs a plugin library without the GoPT plugins")
    library = tmp_path / plugin_ops.PLUGIN_LIBRARY
    library.write_bytes(b"a library of other plugins")
    trt_env.libraries.declare(library, [("SomethingElse", "1", "gopt")])
    assert run([str(fused_onnx), "--plugins", str(library), "-o", str(tmp_path / "m.engine")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: TensorRT cannot parse {fused_onnx}"
    nodes = [line for line in err if line.startswith("error: ") and "GoptGroupMerge" in line]
    assert nodes and all(" (node " in line and "op GoptGroupMerge)" in line for line in nodes)
    assert not (tmp_path / "m.engine").exists()
