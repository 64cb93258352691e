"""``python -m export.triton_repo``: the model repository's configurations and the Python-backend
models' pre- and postprocessing.

No Triton Inference Server runs here (it needs NVIDIA's container): these tests check what can be
checked without one. Every ``config.pbtxt`` is parsed with Triton's own schema, the ensemble's
wiring is checked model against model, and the preprocessing / postprocessing functions of the
Python-backend models are compared with ``Segmenter``. Importing those modules needs the name
``triton_python_backend_utils`` (the server provides it); the tests put an empty module under
that name only to import the files, and call their plain functions, never ``execute``.
"""
import dataclasses
import importlib
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is not installed")
from google.protobuf import json_format, text_format  # noqa: E402

from factories import tiny_gopt  # noqa: E402
from export.onnx import parse_args, run  # noqa: E402
from export.triton_repo import main, preferred_sizes, read_model, repository_configs  # noqa: E402
from models import save_gopt  # noqa: E402
from runtime import Segmenter  # noqa: E402
from runtime.metadata import read_onnx_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [ROOT / "data" / "samples" / f for f in ("mfnet_01234N.png", "mfnet_01477D.png")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("triton_models")
    save_gopt(tiny_gopt(untrained=True), d / "tiny.pt")
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "dynamic.onnx"), "--dynamic-batch", "--no-check"])) == 0
    assert run(parse_args([str(d / "tiny.pt"), "-o", str(d / "fixed2.onnx"), "--batch", "2", "--no-check"])) == 0
    return d


@pytest.fixture(scope="module")
def frames():
    """[(bgr, thermal)] for the two bundled MFNet frames."""
    out = []
    for path in SAMPLES:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        out.append((np.ascontiguousarray(img[..., :3]), np.ascontiguousarray(img[..., 3])))
    return out


def parse_repository(repo: Path) -> dict:
    configs = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = text_format.Parse(path.read_text(), pb.ModelConfig())
        assert cfg.name == path.parent.name
        configs[cfg.name] = cfg
    return configs


def io_types(cfg, which: str) -> dict:
    return {t.name: (t.data_type, list(t.dims)) for t in getattr(cfg, which)}


def test_repository_configs_parse_and_wire_up(models, tmp_path):
    repo = tmp_path / "repo"
    assert main([str(models / "dynamic.onnx"), "-o", str(repo), "--max-batch", "8", "--instances", "2",
                 "--max-queue-delay-us", "300"]) == 0
    configs = parse_repository(repo)
    assert sorted(configs) == ["gopt", "gopt_model", "postprocess", "preprocess"]

    graph = configs["gopt_model"]
    assert graph.platform == "onnxruntime_onnx" and graph.max_batch_size == 8
    assert list(graph.dynamic_batching.preferred_batch_size) == [4, 8]
    assert graph.dynamic_batching.max_queue_delay_microseconds == 300
    assert [(g.count, g.kind) for g in graph.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]
    assert io_types(graph, "input") == {"rgb": (pb.TYPE_FP32, [3, 48, 64]), "aux": (pb.TYPE_FP32, [1, 48, 64])}
    assert io_types(graph, "output")["labels"] == (pb.TYPE_UINT8, [48, 64])
    assert (repo / "gopt_model" / "1" / "model.onnx").read_bytes() == (models / "dynamic.onnx").read_bytes()

    for name in ("preprocess", "postprocess"):
        cfg = configs[name]
        assert cfg.backend == "python" and cfg.max_batch_size == 8
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
        assert (repo / name / "1" / "model.py").read_text() == (ROOT / "serving" / f"triton_{name}.py").read_text()

    ensemble = configs["gopt"]
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 8
    assert io_types(ensemble, "input") == {"rgb": (pb.TYPE_UINT8, [-1, -1, 3]), "aux": (pb.TYPE_UINT8, [-1, -1])}
    assert io_types(ensemble, "output") == {"labels": (pb.TYPE_UINT8, [-1, -1])}
    # every ensemble tensor: produced once (by the ensemble's inputs or a step), consumed with the same type
    produced = dict(io_types(ensemble, "input"))
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs, outputs = io_types(model, "input"), io_types(model, "output")
        for model_input, tensor in step.input_map.items():
            assert produced[tensor] == inputs[model_input], f"{step.model_name}.{model_input} <- {tensor}"
        for model_output, tensor in step.output_map.items():
            assert tensor not in produced
            produced[tensor] = outputs[model_output]
    assert produced["labels"] == io_types(ensemble, "output")["labels"]
    assert (repo / "gopt" / "1").is_dir()


def test_batch_limits(models, tmp_path, capsys):
    info, platform, lo, hi = read_model(models / "dynamic.onnx")
    assert (platform, lo, hi) == ("onnxruntime_onnx", None, None)
    assert main([str(models / "dynamic.onnx"), "-o", str(tmp_path / "default")]) == 0
    assert parse_repository(tmp_path / "default")["gopt_model"].max_batch_size == 16
    assert main([str(models / "fixed2.onnx"), "-o", str(tmp_path / "fixed")]) == 2
    assert "fixed batch of 2" in capsys.readouterr().err
    assert preferred_sizes(16) == [4, 8, 16] and preferred_sizes(1) == [1] and preferred_sizes(12) == [4, 8, 12]


def _engine(models, tmp_path, profile_batches, plugins=()):
    """An engine file and the sidecar ``export.tensorrt`` writes beside it. The configuration
    reads only the sidecar (the engine's bytes are not parsed here), so the file is a placeholder."""
    import hashlib

    from runtime.backends.trt_backend import EngineSidecar, write_sidecar

    info = dataclasses.replace(read_onnx_info(models / "dynamic.onnx"), plugins=list(plugins))
    lo, opt, hi = profile_batches
    profiles = {t.name: {k: [b, *t.shape[1:]] for k, b in (("min", lo), ("opt", opt), ("max", hi))}
                for t in info.inputs}
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"engine")
    write_sidecar(engine, EngineSidecar(
        tensorrt="10.3.0", gpu="test", compute_capability="8.6", precision="fp16", profiles=profiles, builder={},
        onnx={"file": "dynamic.onnx", "sha256": ""}, engine_sha256=hashlib.sha256(b"engine").hexdigest(),
        model=info, built="2026-01-01T00:00:00+00:00"))
    return engine


def test_engine_max_batch_from_profile(models, tmp_path, capsys):
    engine = _engine(models, tmp_path, (1, 4, 8))
    assert main([str(engine), "-o", str(tmp_path / "repo")]) == 0
    graph = parse_repository(tmp_path / "repo")["gopt_model"]
    assert graph.platform == "tensorrt_plan" and graph.max_batch_size == 8
    assert graph.default_model_filename == "model.plan"
    assert (tmp_path / "repo" / "gopt_model" / "1" / "model.plan").read_bytes() == b"engine"
    assert main([str(engine), "-o", str(tmp_path / "too_big"), "--max-batch", "16"]) == 2
    assert "profile's maximum batch 8" in capsys.readouterr().err
    engine = _engine(models, tmp_path, (2, 4, 8))
    assert main([str(engine), "-o", str(tmp_path / "min2")]) == 2
    assert "smallest batch is 2" in capsys.readouterr().err
    engine = _engine(models, tmp_path, (1, 4, 8), plugins=["GoptGroupMerge", "GoptPromptInject"])
    assert main([str(engine), "-o", str(tmp_path / "fused")]) == 0
    assert "LD_PRELOAD=libgopt_trt_plugins.so" in capsys.readouterr().out


def test_fused_onnx_is_refused(models, tmp_path, capsys):
    import onnx

    model = onnx.load(str(models / "dynamic.onnx"))
    for prop in model.metadata_props:
        if prop.key == "mmseg_deploy":
            meta = json.loads(prop.value)
            meta["plugins"] = ["GoptGroupMerge"]
            prop.value = json.dumps(meta)
    onnx.save(model, str(tmp_path / "fused.onnx"))
    assert main([str(tmp_path / "fused.onnx"), "-o", str(tmp_path / "repo")]) == 2
    assert "custom nodes (GoptGroupMerge)" in capsys.readouterr().err


def test_uint8_input_model_is_served_directly(models):
    info = read_onnx_info(models / "dynamic.onnx")
    uint8 = dataclasses.replace(info, inputs=[dataclasses.replace(info.input("rgb"), shape=["batch", 48, 64, 3],
                                                                  dtype="uint8"),
                                              dataclasses.replace(info.input("aux"), shape=["batch", 48, 64],
                                                                  dtype="uint8")])
    configs = repository_configs(uint8, "tensorrt_plan", 16)
    assert list(configs) == ["gopt"]
    cfg = text_format.Parse(text_format.MessageToString(configs["gopt"]), pb.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert io_types(cfg, "input") == {"rgb": (pb.TYPE_UINT8, [48, 64, 3]), "aux": (pb.TYPE_UINT8, [48, 64])}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16]


@pytest.fixture
def python_models(monkeypatch):
    """The two Python-backend model files, imported with an empty module standing in for the
    server's ``triton_python_backend_utils`` (only their plain functions are called)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    mods = {}
    for name in ("triton_preprocess", "triton_postprocess"):
        sys.modules.pop(f"serving.{name}", None)
        mods[name] = importlib.import_module(f"serving.{name}")
    yield mods
    for name in mods:
        sys.modules.pop(f"serving.{name}", None)


def test_python_models_match_segmenter(models, frames, python_models, tmp_path):
    pre, post = python_models["triton_preprocess"], python_models["triton_postprocess"]
    assert main([str(models / "dynamic.onnx"), "-o", str(tmp_path / "repo")]) == 0
    cfg = parse_repository(tmp_path / "repo")["preprocess"]
    # the configuration as the server hands it to initialize(): the ModelConfig as JSON
    settings = pre.load_settings(json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True)))
    assert settings["color_order"] == "rgb"
    preparer = pre.make_preparer(settings)

    seg = Segmenter(models / "dynamic.onnx")
    session = ort.InferenceSession(str(models / "dynamic.onnx"), providers=["CPUExecutionProvider"])
    for bgr, thermal in frames:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # what a client of the repository sends
        x, a, size = pre.prepare_frames(preparer, rgb[None], thermal[None])
        want = seg.prepare(bgr, thermal)
        assert np.array_equal(x, want.rgb) and np.array_equal(a, want.aux)
        assert size.dtype == np.int32 and size.tolist() == [list(bgr.shape[:2])]
        model_labels = session.run(["labels"], {"rgb": x, "aux": a})[0]
        labels = post.restore_labels(model_labels, size)
        assert labels.dtype == np.uint8 and labels.shape == (1, *bgr.shape[:2])
        assert np.array_equal(labels[0], seg.run(bgr, thermal))

    # a request of two frames of one size
    rgb = np.stack([cv2.cvtColor(f[0], cv2.COLOR_BGR2RGB) for f in frames])
    x, a, size = pre.prepare_frames(preparer, rgb, np.stack([f[1] for f in frames]))
    labels = post.restore_labels(session.run(["labels"], {"rgb": x, "aux": a})[0], size)
    for got, (bgr, thermal) in zip(labels, frames):
        assert np.array_equal(got, seg.run(bgr, thermal))


def test_python_models_reject_bad_requests(models, frames, python_models, tmp_path):
    pre, post = python_models["triton_preprocess"], python_models["triton_postprocess"]
    info = read_onnx_info(models / "dynamic.onnx")
    preparer = pre.make_preparer({"model": json.loads(info.to_json()), "color_order": "rgb"})
    bgr, thermal = frames[0]
    with pytest.raises(ValueError, match=r"rgb must be \[batch, H, W, 3\]"):
        pre.prepare_frames(preparer, bgr, thermal)
    with pytest.raises(ValueError, match="same size"):
        pre.prepare_frames(preparer, bgr[None], thermal[None, :100])
    with pytest.raises(ValueError, match="uint8"):
        pre.prepare_frames(preparer, bgr[None].astype(np.float32), thermal[None])
    with pytest.raises(ValueError, match="one frame size per label map"):
        post.restore_labels(np.zeros((2, 48, 64), np.uint8), np.array([[480, 640], [240, 320]], np.int32))
    with pytest.raises(ValueError, match="settings"):
        pre.load_settings({"parameters": {}})


def test_client_request_inputs(frames):
    http = pytest.importorskip("tritonclient.http")
    from serving.triton_client import request_inputs

    bgr, thermal = frames[0]
    rgb_in, aux_in = request_inputs(http, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), thermal)
    assert (rgb_in.name(), rgb_in.shape(), rgb_in.datatype()) == ("rgb", [1, 480, 640, 3], "UINT8")
    assert (aux_in.name(), aux_in.shape(), aux_in.datatype()) == ("aux", [1, 480, 640], "UINT8")


def test_an_existing_repository_is_refused_unless_overwrite(models, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main([str(models / "dynamic.onnx"), "-o", str(repo)]) == 0
    stale = repo / "gopt_model" / "1" / "model.plan"
    stale.write_bytes(b"an earlier engine")
    capsys.readouterr()
    assert main([str(models / "dynamic.onnx"), "-o", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exist already" in err and "--overwrite" in err
    assert stale.exists()
    assert main([str(models / "dynamic.onnx"), "-o", str(repo), "--overwrite"]) == 0
    assert not stale.exists() and (repo / "gopt_model" / "1" / "model.onnx").is_file()


def test_a_batch_one_export_says_it_is_not_batched(models, tmp_path, capsys):
    """The demo export of docs/fleet.md has a fixed batch of 1: without --max-batch the repository
    serves it one frame per call and says so; --max-batch 16 names the fix in one line."""
    assert run(parse_args([str(models / "tiny.pt"), "-o", str(models / "fixed1.onnx"), "--no-check"])) == 0
    capsys.readouterr()
    assert main([str(models / "fixed1.onnx"), "-o", str(tmp_path / "one")]) == 0
    assert "one frame per call" in capsys.readouterr().out
    assert parse_repository(tmp_path / "one")["gopt_model"].max_batch_size == 1
    assert main([str(models / "fixed1.onnx"), "-o", str(tmp_path / "sixteen"), "--max-batch", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dynamic-batch" in err and "one frame per call" in err
    assert not (tmp_path / "sixteen").exists()


def test_a_simcmf_model_is_refused_in_one_line(tmp_path, capsys):
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    _, (encoder, decoder) = export_simcmf(tiny_model(modality="rgbt"), tmp_path / "s", 1, progress=Progress(2))
    for model in (encoder, decoder):
        assert main([str(model), "-o", str(tmp_path / "repo")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "serves GoPT" in err
