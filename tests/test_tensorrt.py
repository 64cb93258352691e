"""TensorRT: the engine builder's command line, profiles from metadata, the sidecar JSON and
its checks, the half-precision model --fp16 / --bf16 write before a strongly typed build, and the
backend's errors before TensorRT runs. Engine builds and inference run on the simulated TensorRT
10.3 / 10.16 / 11.1 and CUDA runtime (tests/simulated: host code only, no GPU) and, where they are
installed, on TensorRT and a CUDA GPU; each test's id says which."""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.graph import set_metadata
from export.progress import Progress
from export.tensorrt import (builder_settings, default_engine_path, make_plan, parse_args, profiles_from_info, run,
                             sidecar_for, write_half_onnx)
from runtime.backends.factory import open_backend
from runtime.metadata import ModelFileError, ModelInfo, TensorSpec, gopt_model_info, read_onnx_info
from runtime.backends.trt_backend import (TENSORRT_MISSING, tensorrt_version_supported, BackendUnavailable,
                                          EngineSidecar, TensorRTBackend, check_profile_shapes, check_sidecar,
                                          cuda_device, import_cudart, import_tensorrt, max_batch, read_engine,
                                          read_sidecar, sidecar_path, write_sidecar)
from simulated.environment import trt_env  # noqa: F401  (the fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def what_is_missing() -> str | None:
    """None where engines can be built and run here, else what is missing."""
    try:
        import_tensorrt()
        cuda_device(import_cudart(), 0)
    except (BackendUnavailable, RuntimeError) as e:
        return str(e)
    return None


MISSING = what_is_missing()

H, W, K = 8, 12, 3


def gopt_info(batch="batch", precision="fp32") -> ModelInfo:
    cfg = dict(img_size=[H, W], num_classes=K, aux_channels=1, embed_dim=8, depth=1, modality="thermal",
               class_names=["road", "car", "person"], rgb_mean=[0.485, 0.456, 0.406], rgb_std=[0.229, 0.224, 0.225],
               aux_mean=[0.5], aux_std=[0.25])
    return gopt_model_info(cfg, batch, precision, versions={"onnx": onnx.__version__})


def tiny_gopt_onnx(path, batch="batch", graph_batch=None, info=None, metadata=True, seed=0):
    """A GoPT-shaped graph by hand: concat(rgb, aux) -> 1x1 conv -> logits, argmax -> uint8 labels.
    ``graph_batch`` sets the graph's own batch dim (default: the metadata's)."""
    rng = np.random.default_rng(seed)
    dim = batch if graph_batch is None else graph_batch
    inputs = [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [dim, 3, H, W]),
              helper.make_tensor_value_info("aux", TensorProto.FLOAT, [dim, 1, H, W])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim, K, H, W]),
               helper.make_tensor_value_info("labels", TensorProto.UINT8, [dim, H, W])]
    weights = [numpy_helper.from_array(rng.standard_normal((K, 4, 1, 1)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(K).astype(np.float32), "b")]
    nodes = [helper.make_node("Concat", ["rgb", "aux"], ["x"], axis=1),
             helper.make_node("Conv", ["x", "w", "b"], ["logits"]),
             helper.make_node("ArgMax", ["logits"], ["index"], axis=1, keepdims=0),
             helper.make_node("Cast", ["index"], ["labels"], to=TensorProto.UINT8)]
    model = helper.make_model(helper.make_graph(nodes, "tiny_gopt", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    if metadata:
        set_metadata(model, info or gopt_info(batch))
    onnx.save(model, str(path))
    return path


def decoder_info(extra_axis=None) -> ModelInfo:
    """A SimCMF-decoder-like description: embeddings + clicks with a dynamic number of points."""
    emb = ["batch", 8, 4, 4] if extra_axis is None else ["batch", 8, extra_axis, 4]
    return ModelInfo(kind="simcmf_decoder", config={}, inputs=[
        TensorSpec("embeddings", emb, "float32"),
        TensorSpec("points", ["batch", "num_points", 2], "float32"),
        TensorSpec("point_labels", ["batch", "num_points"], "float32")],
        outputs=[TensorSpec("masks", ["batch", 1, 16, 16], "float32")])


@pytest.fixture
def gopt_onnx(tmp_path):
    return tiny_gopt_onnx(tmp_path / "tiny.onnx")


def test_tiny_model_is_a_real_gopt_graph(gopt_onnx):
    """The hand-built graph runs in ONNX Runtime and carries readable metadata."""
    assert read_onnx_info(gopt_onnx) == gopt_info()
    rng = np.random.default_rng(1)
    rgb = rng.standard_normal((2, 3, H, W), dtype=np.float32)
    aux = rng.standard_normal((2, 1, H, W), dtype=np.float32)
    logits, labels = ort.InferenceSession(str(gopt_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"rgb": rgb, "aux": aux})
    assert logits.shape == (2, K, H, W) and labels.dtype == np.uint8
    assert (labels == logits.argmax(1)).all()


# ---- command line ---------------------------------------------------------------------------------

def one_line_error(capsys, argv) -> str:
    assert run([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.out + captured.err
    return captured.err


def test_missing_file_from_the_shell():
    r = subprocess.run([sys.executable, "-m", "export.tensorrt", "missing.onnx"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == "error: missing.onnx: no such file\n"


def test_without_tensorrt_or_gpu_the_build_says_which(tmp_path):
    """What this machine lacks, in one line and exit status 2, after the arguments were checked."""
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    r = subprocess.run([sys.executable, "-m", "export.tensorrt", str(model)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    if MISSING is None:
        pytest.skip("TensorRT and a CUDA GPU are present: building is covered by the GPU tests")
    assert r.returncode == 2
    if not HAVE_TENSORRT:
        assert r.stderr == f"error: {TENSORRT_MISSING}\n"
        assert r.stderr.startswith("error: TensorRT is not installed (pip install ")
    else:
        assert r.stderr == f"error: {MISSING}\n"
    assert not (tmp_path / "tiny.engine").exists() and not (tmp_path / "tiny.engine.json").exists()


def test_importing_the_tensorrt_modules_needs_no_torch():
    code = ("import sys, runtime.backends.trt_backend, export.tensorrt; "
            "print(sorted(m for m in ('torch', 'tensorrt', 'cuda') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_bad_arguments_are_one_line_errors(tmp_path, capsys, gopt_onnx):
    fixed = tiny_gopt_onnx(tmp_path / "fixed.onnx", batch=1)
    bare = tiny_gopt_onnx(tmp_path / "bare.onnx", metadata=False)
    half = tiny_gopt_onnx(tmp_path / "half.onnx", info=gopt_info(precision="fp16"))
    quantized = tiny_gopt_onnx(tmp_path / "int8.onnx", info=gopt_info(precision="int8"))
    dynamic_info = gopt_info(precision="int8")
    dynamic_info.quantization = {"target": "onnxruntime", "tool": "onnxruntime.quantization.quantize_dynamic"}
    dynamic = tiny_gopt_onnx(tmp_path / "dynamic.int8.onnx", info=dynamic_info)
    mismatch = tiny_gopt_onnx(tmp_path / "mismatch.onnx", graph_batch=1)  # metadata: dynamic; graph: 1
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model" * 10)
    folder_engine = tmp_path / "folder.engine"
    folder_engine.mkdir()
    cases = [
        ([gopt_onnx, "--fp16", "--bf16"], "not allowed with"),
        ([tmp_path / "nope.onnx"], "no such file"),
        ([bare], "no 'mmseg_deploy' metadata"),
        ([garbage], "not a readable ONNX model"),
        ([gopt_onnx, "--min-batch", 4, "--opt-batch", 2], "min 4, opt 2"),
        ([gopt_onnx, "--opt-batch", 8, "--max-batch", 4], "opt 8, max 4"),
        ([gopt_onnx, "--min-batch", 0], "need 1 <= min"),
        ([fixed, "--max-batch", 8], "batch is fixed"),
        ([gopt_onnx, "--shape", "num_points=1,2,4"], "no dynamic axis 'num_points'"),
        ([gopt_onnx, "--shape", "batch=1,2,4"], "--max-batch"),
        ([gopt_onnx, "--shape", "height=1,2"], "NAME=MIN,OPT,MAX"),
        ([gopt_onnx, "--strongly-typed"], "unrecognized arguments"),
        ([half, "--bf16"], "fp16 ONNX model"),
        ([quantized, "--fp16"], "int8 Q/DQ model"),
        ([dynamic], "dynamic INT8 for ONNX Runtime"),
        ([gopt_onnx, "-o", tmp_path / "x.onnx"], ".engine or .plan"),
        ([gopt_onnx, "-o", fixed / "x.engine"], "fixed.onnx is a file, not a folder"),
        ([gopt_onnx, "-o", folder_engine], "is a folder; the output is a file"),
        ([gopt_onnx, "--workspace", 0], "--workspace"),
        ([gopt_onnx, "--opt-level", 6], "--opt-level"),
        ([gopt_onnx, "--max-batch", "many"], "invalid int"),
        ([mismatch], "fixed at 1 in the graph"),
    ]
    for argv, says in cases:
        err = one_line_error(capsys, argv)
        assert says in err, (argv, err)


# ---- profiles --------------------------------------------------------------------------------------

def test_batch_profile_from_metadata():
    info = gopt_info()
    p = profiles_from_info(info, None, None, None, {})
    assert p == {"rgb": ((1, 3, H, W), (1, 3, H, W), (4, 3, H, W)),
                 "aux": ((1, 1, H, W), (1, 1, H, W), (4, 1, H, W))}
    assert profiles_from_info(info, 2, 4, 16, {})["rgb"] == ((2, 3, H, W), (4, 3, H, W), (16, 3, H, W))
    assert profiles_from_info(info, max_batch=8)["aux"] == ((1, 1, H, W), (1, 1, H, W), (8, 1, H, W))
    assert profiles_from_info(info, min_batch=2)["aux"][0][0] == 2  # 2 / 2 / 4
    assert [s[0] for s in profiles_from_info(info, min_batch=2)["aux"]] == [2, 2, 4]
    assert [s[0] for s in profiles_from_info(info, opt_batch=6)["aux"]] == [1, 6, 6]
    with pytest.raises(ValueError, match="min 3, opt 2, max 4"):
        profiles_from_info(info, 3, 2, 4)


def test_fixed_batch_profile_is_the_shape():
    p = profiles_from_info(gopt_info(batch=2))
    assert p["rgb"] == ((2, 3, H, W),) * 3
    with pytest.raises(ValueError, match="batch is fixed"):
        profiles_from_info(gopt_info(batch=2), max_batch=4)


def test_named_axes_have_defaults_and_overrides():
    info = decoder_info()
    p = profiles_from_info(info)
    assert p["points"] == ((1, 1, 2), (1, 1, 2), (4, 16, 2))
    assert p["point_labels"] == ((1, 1), (1, 1), (4, 16))
    assert p["embeddings"] == ((1, 8, 4, 4), (1, 8, 4, 4), (4, 8, 4, 4))
    p = profiles_from_info(info, 1, 1, 2, {"num_points": (1, 4, 32)})
    assert p["points"] == ((1, 1, 2), (1, 4, 2), (2, 32, 2))
    with pytest.raises(ValueError, match="num_points: min 5, opt 4"):
        profiles_from_info(info, shapes={"num_points": (5, 4, 32)})
    with pytest.raises(ValueError, match="--shape height=MIN,OPT,MAX"):
        profiles_from_info(decoder_info(extra_axis="height"))
    p = profiles_from_info(decoder_info(extra_axis="height"), shapes={"height": (2, 4, 8)})
    assert p["embeddings"] == ((1, 8, 2, 4), (1, 8, 4, 4), (4, 8, 8, 4))


def test_plan_reads_the_profile_from_the_onnx_file(tmp_path, gopt_onnx):
    plan = make_plan(parse_args([str(gopt_onnx), "--max-batch", "8", "--fp16", "--timing-cache",
                                 str(tmp_path / "cache.bin"), "--workspace", "2", "--opt-level", "5"]))
    assert plan.profiles == profiles_from_info(read_onnx_info(gopt_onnx), max_batch=8)
    assert plan.precision == "fp16" and plan.source == gopt_onnx and plan.onnx == tmp_path / "tiny.fp16.onnx"
    assert plan.engine == tmp_path / "tiny.fp16.engine"
    assert (plan.workspace_gib, plan.optimization_level) == (2.0, 5)
    assert plan.warnings == []  # Concat / Conv / ArgMax / Cast: all in TensorRT's ONNX op set
    assert make_plan(parse_args([str(gopt_onnx)])).engine == tmp_path / "tiny.engine"
    half = tiny_gopt_onnx(tmp_path / "tiny.fp16.onnx", info=gopt_info(precision="fp16"))
    for extra in ([], ["--fp16"]):  # an fp16 model builds as it is
        plan = make_plan(parse_args([str(half), *extra]))
        assert plan.precision == "fp16" and plan.engine == tmp_path / "tiny.fp16.engine"
        assert plan.onnx == half and plan.source is None
    plan = make_plan(parse_args([str(gopt_onnx), "--bf16"]))
    assert (plan.precision, plan.onnx, plan.engine) == ("bf16", tmp_path / "tiny.bf16.onnx", tmp_path / "tiny.bf16.engine")
    assert default_engine_path(tmp_path / "m.onnx", gopt_info(), "bf16") == tmp_path / "m.bf16.engine"


# ---- sidecar -----------------------------------------------------------------------------------------

def make_sidecar(tmp_path, engine_bytes=b"serialized engine", version="10.3.0", capability=(8, 6)):
    """The sidecar the builder would write for ``engine_bytes`` built from the tiny model."""
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    plan = make_plan(parse_args([str(model), "--fp16", "--max-batch", "2"]))
    write_half_onnx(plan, Progress(1))  # the model TensorRT would parse
    settings = builder_settings(plan, timing_cache_reused=False, seconds=1.0)
    engine = tmp_path / "tiny.fp16.engine"
    engine.write_bytes(engine_bytes)
    sidecar = sidecar_for(plan, version, "NVIDIA RTX A4000", capability, engine_bytes, settings)
    write_sidecar(engine, sidecar)
    return engine, sidecar


def test_sidecar_round_trip(tmp_path):
    engine, sidecar = make_sidecar(tmp_path)
    assert sidecar_path(engine) == tmp_path / "tiny.fp16.engine.json"
    back = read_sidecar(engine)
    assert back == sidecar
    assert back.tensorrt == "10.3.0" and back.compute_capability == "8.6" and back.precision == "fp16"
    assert back.profiles["rgb"] == {"min": [1, 3, H, W], "opt": [1, 3, H, W], "max": [2, 3, H, W]}
    assert back.builder["strongly_typed"] and back.builder["written_from"] == "tiny.onnx"
    onnx_sha = hashlib.sha256((tmp_path / "tiny.fp16.onnx").read_bytes()).hexdigest()
    assert back.onnx == {"file": "tiny.fp16.onnx", "sha256": onnx_sha}  # the model TensorRT parsed
    assert back.engine_sha256 == hashlib.sha256(b"serialized engine").hexdigest()
    # the full metadata of the ONNX model, with the engine's precision
    original = read_onnx_info(tmp_path / "tiny.onnx")
    assert back.model.precision == "fp16" and original.precision == "fp32"
    assert back.model.inputs == original.inputs and back.model.config == original.config
    assert back.model.versions == {**original.versions, "tensorrt": "10.3.0"}
    raw = json.loads(sidecar_path(engine).read_text())
    assert raw["format"] == "mmseg-deploy-engine/1" and raw["built"][:2] == "20"
    assert max_batch(back.model, back.profiles) == 2
    assert read_engine(engine, back) == b"serialized engine"


def test_version_and_capability_checks():
    sidecar = EngineSidecar(tensorrt="10.3.0", gpu="NVIDIA RTX A4000", compute_capability="8.6", precision="fp32",
                            profiles={"rgb": {"min": [1, 3, H, W], "opt": [1, 3, H, W], "max": [1, 3, H, W]},
                                      "aux": {"min": [1, 1, H, W], "opt": [1, 1, H, W], "max": [1, 1, H, W]}},
                            builder={}, onnx={"file": "tiny.onnx", "sha256": "0" * 64}, engine_sha256="0" * 64,
                            model=gopt_info(batch=1), built="2025-01-01T00:00:00+00:00")
    check_sidecar(sidecar, "10.3.0", (8, 6))
    check_sidecar(sidecar, "10.3.0", "8.6")
    with pytest.raises(ModelFileError) as e:
        check_sidecar(sidecar, "10.7.0", (8, 6))
    assert "TensorRT 10.3.0" in str(e.value) and "TensorRT 10.7.0 is installed" in str(e.value)
    assert "python -m export.tensorrt tiny.onnx" in str(e.value)
    with pytest.raises(ModelFileError) as e:
        check_sidecar(sidecar, "10.3.0", (9, 0), "NVIDIA H100 80GB HBM3")
    assert "compute capability 8.6 (NVIDIA RTX A4000)" in str(e.value)
    assert "NVIDIA H100 80GB HBM3 has compute capability 9.0" in str(e.value)


def test_sidecar_errors(tmp_path):
    engine, sidecar = make_sidecar(tmp_path)
    path = sidecar_path(engine)
    good = json.loads(path.read_text())

    def broken(text):
        path.write_text(text)
        with pytest.raises(ModelFileError) as e:
            read_sidecar(engine)
        return str(e.value)

    assert "not valid JSON" in broken("{ truncated")
    assert "format" in broken(json.dumps({**good, "format": "other/2"}))
    assert "malformed" in broken(json.dumps({k: v for k, v in good.items() if k != "tensorrt"}))
    assert "metadata schema" in broken(json.dumps({**good, "model": {**good["model"], "schema": "x"}}))
    bad_profile = {**good["profiles"], "rgb": {"min": [4, 3, H, W], "opt": [1, 3, H, W], "max": [2, 3, H, W]}}
    assert "inconsistent" in broken(json.dumps({**good, "profiles": bad_profile}))
    assert "profiles for" in broken(json.dumps({**good, "profiles": {"rgb": good["profiles"]["rgb"]}}))
    path.unlink()
    with pytest.raises(ModelFileError, match=r"no tiny\.fp16\.engine\.json beside it"):
        read_sidecar(engine)
    path.write_text(json.dumps(good))
    engine.write_bytes(b"another engine")
    with pytest.raises(ModelFileError, match="sha256 differs"):
        read_engine(engine, read_sidecar(engine))


def test_profile_shape_check():
    info = decoder_info()
    profiles = {k: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                for k, (lo, opt, hi) in profiles_from_info(info).items()}
    feeds = {"embeddings": np.zeros((2, 8, 4, 4), np.float32), "points": np.zeros((2, 16, 2), np.float32),
             "point_labels": np.zeros((2, 16), np.float32)}
    check_profile_shapes(profiles, feeds)
    with pytest.raises(ValueError, match=r"'points' has shape \[2, 17, 2\], outside"):
        check_profile_shapes(profiles, {**feeds, "points": np.zeros((2, 17, 2), np.float32)})
    assert max_batch(info, profiles) == 4


# ---- precision: the half-precision ONNX a strongly typed build parses ----------------------------

def test_version_range():
    assert [tensorrt_version_supported(v) for v in ("10.3.0", "10.16.1", "11.1.0", "11.4.0.11")] == [True] * 4
    assert not any(tensorrt_version_supported(v) for v in ("10.2.0", "9.3.0", "12.0.0", "8.6.1", "dev"))


def test_fp16_and_bf16_write_the_export_policy_model(tmp_path):
    """--fp16 / --bf16 on an fp32 model write MODEL.fp16.onnx / MODEL.bf16.onnx with the export's
    policy: the argmax chain (here the Conv computing the scores) stays fp32, everything else is
    half; ONNX Runtime runs the fp16 one with the fp32 labels."""
    from onnx import TensorProto as T

    source = tiny_gopt_onnx(tmp_path / "tiny.onnx", batch=1)
    rng = np.random.default_rng(3)
    feeds = {"rgb": rng.standard_normal((1, 3, H, W), dtype=np.float32),
             "aux": rng.standard_normal((1, 1, H, W), dtype=np.float32)}
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)
    for precision, half_type in (("fp16", T.FLOAT16), ("bf16", T.BFLOAT16)):
        plan = make_plan(parse_args([str(source), f"--{precision}"]))
        write_half_onnx(plan, Progress(1))
        model = onnx.load(str(plan.onnx))
        onnx.checker.check_model(model)
        assert read_onnx_info(plan.onnx).precision == precision
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        weights = {t.name: t.data_type for t in model.graph.initializer}
        assert weights[conv.input[1]] == T.FLOAT  # on the argmax chain: fp32
        assert {i.type.tensor_type.elem_type for i in model.graph.input} == {T.FLOAT}  # fp32 I/O kept
        if precision == "fp16":
            logits, labels = ort.InferenceSession(str(plan.onnx), providers=["CPUExecutionProvider"]).run(None, feeds)
            assert (labels == ref[1]).all() and np.abs(logits - ref[0]).max() < 1e-2
    # a graph with a half-precision part: the non-argmax MatMul goes to bf16 weights
    from export.graph import to_bf16
    x = helper.make_tensor_value_info("x", T.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", T.FLOAT, [2, 4])
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]),
                                                 helper.make_node("Relu", ["m"], ["y"])], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 18)])
    half = to_bf16(model)
    assert {t.data_type for t in half.graph.initializer} == {T.BFLOAT16}
    assert {onnx.helper.get_attribute_value(a) for n in half.graph.node if n.op_type == "Cast"
            for a in n.attribute} == {T.BFLOAT16, T.FLOAT}
    assert not any(v.type.tensor_type.elem_type == T.FLOAT16 for v in half.graph.value_info)


# ---- backend, before TensorRT runs -------------------------------------------------------------------

def test_backend_refuses_engine_without_sidecar(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    with pytest.raises(ModelFileError, match=r"no model\.engine\.json beside it"):
        TensorRTBackend(engine)
    with pytest.raises(ModelFileError, match="no such file"):
        TensorRTBackend(tmp_path / "absent.engine")


def test_backend_refuses_corrupt_sidecar(tmp_path):
    engine, _ = make_sidecar(tmp_path)
    sidecar_path(engine).write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ModelFileError, match="engine.json"):
        TensorRTBackend(engine)
    sidecar_path(engine).write_text("[]")
    with pytest.raises(ModelFileError, match="format"):
        TensorRTBackend(engine)


def test_backend_refuses_engine_that_is_not_the_sidecars(tmp_path):
    engine, _ = make_sidecar(tmp_path)
    engine.write_bytes(b"an engine from another build")
    with pytest.raises(ModelFileError, match="sha256 differs"):
        TensorRTBackend(engine)


def test_backend_on_this_machine(tmp_path):
    """Sidecar and engine bytes agree: what is missing here is reported (TensorRT first)."""
    if MISSING is None:
        pytest.skip("TensorRT and a CUDA GPU are present: test_backend_refuses_bytes_that_are_not_an_engine runs there")
    engine, _ = make_sidecar(tmp_path)
    with pytest.raises(ValueError) as e:
        TensorRTBackend(engine)
    assert isinstance(e.value, BackendUnavailable)
    assert str(e.value) == (TENSORRT_MISSING if not HAVE_TENSORRT else MISSING)
    with pytest.raises(BackendUnavailable):  # the runtime's entry point picks this backend by extension
        open_backend(engine)
    with pytest.raises(ValueError, match="device must be None, 'cuda' or 'cuda:N'"):
        TensorRTBackend(engine, device="cpu")


# ---- on TensorRT: simulated (every machine) and on a GPU (where TensorRT and a GPU are) ------------------
# ``trt_env`` runs each test on the simulated TensorRT 10.3 / 10.16 / 11.1 and CUDA runtime
# (tests/simulated: the engine is the ONNX model run by ONNX Runtime on the CPU, device memory is
# host memory) and on the real TensorRT with a GPU when both are installed; the test id says which.


def build_engine(onnx_path, engine, *extra):
    assert run([str(onnx_path), "-o", str(engine), *map(str, extra)]) == 0
    return engine


def test_backend_refuses_bytes_that_are_not_an_engine(trt_env, tmp_path):
    """Sidecar and engine bytes agree, but the bytes are not an engine: TensorRT says so."""
    _, capability = cuda_device(import_cudart(), 0)
    engine, _ = make_sidecar(tmp_path, version=trt_env.trt.__version__, capability=capability)
    with pytest.raises(ModelFileError, match="corrupt engine"):
        TensorRTBackend(engine)
    if trt_env.simulated:  # nothing stays allocated after the failed constructor
        assert trt_env.cuda.live() == [] and sorted(trt_env.cuda.streams) == [0, 1]


@pytest.fixture(scope="module")
def exported_tiny_gopt(tmp_path_factory):
    """A tiny GoPT through the real exporter (dynamic batch), once for the module."""
    import torch

    from export.onnx import parse_args as onnx_args
    from export.onnx import run as export_onnx
    from models import GoPT, GoPTConfig, save_gopt

    folder = tmp_path_factory.mktemp("tiny_gopt_trt")
    cfg = GoPTConfig(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(32, 48),
                     prompt_dim=16, class_names=list("abcde"))
    model = GoPT(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.backbone.refresh_pos_embed()
    save_gopt(model.eval(), folder / "tiny.pt")
    onnx_path = folder / "tiny.onnx"
    assert export_onnx(onnx_args([str(folder / "tiny.pt"), "-o", str(onnx_path), "--dynamic-batch",
                                  "--no-check"])) == 0
    return onnx_path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_matches_onnxruntime_on_tiny_gopt(trt_env, exported_tiny_gopt, precision, tmp_path):
    """The tiny GoPT built fp32 / fp16 / bf16 (strongly typed) vs ONNX Runtime fp32."""
    if precision == "bf16" and trt_env.simulated:
        pytest.skip("simulated engines run in ONNX Runtime on the CPU, which has no bf16 convolution")
    session = ort.InferenceSession(str(exported_tiny_gopt), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    extra = [] if precision == "fp32" else [f"--{precision}"]
    shutil.copy(exported_tiny_gopt, tmp_path / "tiny.onnx")  # --fp16 writes its model beside the source
    engine = build_engine(tmp_path / "tiny.onnx", tmp_path / f"tiny.{precision}.engine", "--max-batch", 4, *extra)
    with TensorRTBackend(engine) as backend:
        assert backend.info.precision == precision and backend.max_batch == 4
        for batch in (1, 3):
            feeds = {"rgb": rng.standard_normal((batch, 3, 32, 48), dtype=np.float32),
                     "aux": rng.standard_normal((batch, 1, 32, 48), dtype=np.float32)}
            ref_logits, ref_labels = session.run(["logits", "labels"], feeds)
            out = backend.infer(feeds)
            assert out["logits"].shape == ref_logits.shape and out["labels"].dtype == np.uint8
            agreement = (out["labels"] == ref_labels).mean()
            if precision == "fp32":  # TF32 matmuls: close, not bit-equal
                assert np.abs(out["logits"] - ref_logits).max() <= 1e-2 * max(1.0, np.abs(ref_logits).max())
                assert agreement >= 0.995
            else:
                assert agreement >= (0.99 if precision == "fp16" else 0.97)  # bf16: 8-bit mantissa


def test_backend_io_cuda_graph_and_limits(trt_env, tmp_path):
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    cache = tmp_path / "timing.cache"
    engine = build_engine(model, tmp_path / "tiny.engine", "--max-batch", 4, "--timing-cache", cache)
    assert cache.is_file() and cache.stat().st_size > 0
    sidecar = read_sidecar(engine)
    trt = import_tensorrt()
    name, capability = cuda_device(import_cudart(), 0)
    assert sidecar.tensorrt == trt.__version__ and sidecar.gpu == name
    check_sidecar(sidecar, trt.__version__, capability)
    assert build_engine(model, tmp_path / "again.engine", "--max-batch", 4, "--timing-cache", cache)
    assert read_sidecar(tmp_path / "again.engine").builder["timing_cache_reused"]

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    def feeds(batch):
        return {"rgb": rng.standard_normal((batch, 3, H, W), dtype=np.float32),
                "aux": rng.standard_normal((batch, 1, H, W), dtype=np.float32)}

    with TensorRTBackend(engine, cuda_graph=True) as backend:
        assert (backend.name, backend.device) == ("tensorrt", "cuda")
        x = feeds(2)
        first = backend.infer(x)
        assert backend.graph is None  # new shapes: run directly
        second = backend.infer(x, ["labels"])
        assert list(second) == ["labels"] and backend.graph is not None  # same shapes: captured
        third = backend.infer(x)  # replayed
        ref_logits, ref_labels = session.run(["logits", "labels"], x)
        for out in (first, third):
            assert np.abs(out["logits"] - ref_logits).max() <= 1e-3
            assert (out["labels"] == ref_labels).all()
        assert (second["labels"] == ref_labels).all()
        z = feeds(2)  # same shapes, new values: the replayed graph reads the new inputs
        assert (backend.infer(z)["labels"] == session.run(["labels"], z)[0]).all()
        y = feeds(3)
        assert (backend.infer(y)["labels"] == session.run(["labels"], y)[0]).all()
        assert backend.graph is None  # new shape: graph dropped
        with pytest.raises(ValueError, match="above this model's maximum 4"):
            backend.infer(feeds(5))
        with pytest.raises(ValueError, match="unknown outputs"):
            backend.infer(x, ["masks"])
    with pytest.raises(ValueError, match="closed"):
        backend.infer(x)
    with TensorRTBackend(engine, cuda_graph=False) as backend:
        backend.infer(x)
        backend.infer(x)
        assert backend.graph is None
    if trt_env.simulated:  # everything the backends allocated is back
        cuda = trt_env.cuda
        assert cuda.live() == [] and sorted(cuda.streams) == [0, 1] and not cuda.graphs and not cuda.execs


def test_engine_refused_by_another_tensorrt_version(trt_env, tmp_path):
    model = tiny_gopt_onnx(tmp_path / "tiny.onnx")
    engine = build_engine(model, tmp_path / "tiny.engine")
    path = sidecar_path(engine)
    d = json.loads(path.read_text())
    path.write_text(json.dumps({**d, "tensorrt": "10.0.0" if d["tensorrt"] != "10.0.0" else "10.1.0"}))
    with pytest.raises(ModelFileError, match="an engine runs only under the TensorRT version that built it"):
        TensorRTBackend(engine)
