"""python -m export.quantize: dynamic INT8 for ONNX Runtime (integer MatMuls, activation scales
per run) and symmetric INT8 Q/DQ (and FP8 E4M3) for TensorRT, with LayerNorm, softmax and every
argmax input chain left fp32, the Q/DQ models calibrated on the bundled real frames through the
runtime's preprocessing, both checked against the fp32 model."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import factories

from export import graph
from export.onnx import export_gopt
from export.progress import Progress
from export.quantize import (QUANTIZED_OPS, bundled_frames, check, choose_target, default_output, nodes_to_keep_fp32,
                             nonzero_zero_points, run)
from runtime import Segmenter
from runtime.metadata import read_onnx_info
from simulated.environment import trt_env  # noqa: F401  (the fixture)

SIZE = (96, 128)


def well_conditioned_gopt(seed=0):
    """A tiny GoPT with weights ~N(0, 0.05^2): deep enough to have every op, small enough that
    INT8 rounding does not flip its hard assignments (the factory's N(0, 0.2^2) weights make a
    chaotic network where any rounding flips some)."""
    model = factories.tiny_gopt(seed, img_size=SIZE, class_names=list("abcde"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.25)
    model.backbone.refresh_pos_embed()
    return model.eval()


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    fp32 = tmp_path_factory.mktemp("quantize") / "tiny.onnx"
    export_gopt(well_conditioned_gopt(), fp32, progress=Progress(1))
    return fp32


@pytest.fixture(scope="module")
def quantized(fp32_model):
    """The static Q/DQ model for TensorRT."""
    assert run([str(fp32_model), "--int8", "--target", "tensorrt", "--no-check"]) == 0
    return fp32_model, fp32_model.with_name("tiny.int8.qdq.onnx")


@pytest.fixture(scope="module")
def dynamic(fp32_model):
    """The dynamic INT8 model for ONNX Runtime (the default target of --int8), checked."""
    assert run([str(fp32_model), "--int8"]) == 0
    return fp32_model, fp32_model.with_name("tiny.int8.onnx")


def test_int8_model_is_symmetric_qdq_with_the_fp32_policy(quantized):
    fp32, int8 = quantized
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert nonzero_zero_points(model) == []  # TensorRT: zero points all 0
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [values[n.input[2]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 for z in zero_points)
    scales = [values[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"
              and n.input[0] in values]  # weights
    assert any(s.size > 1 for s in scales)  # per output channel
    # Dequantized values feed MatMul / Gemm / Conv (through data movement, which TensorRT moves
    # Q/DQ across); LayerNorm, softmax and the argmax chains read fp32.
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    readers = {n.op_type for n in model.graph.node if dq_out & set(n.input)}
    assert readers <= set(QUANTIZED_OPS) | {"Reshape", "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze"}, readers
    keep = nodes_to_keep_fp32(onnx.load(str(fp32)))
    assert keep["LayerNormalization"] and keep["Softmax"] and keep["argmax input chain"]
    kept = {name for names in keep.values() for name in names}
    named = {n.name: n for n in model.graph.node}
    for name in kept & set(named):
        assert not dq_out & set(named[name].input), f"{name} reads a dequantized tensor"
    argmax = [n for n in model.graph.node if n.op_type == "ArgMax"]
    assert len(argmax) >= 2  # the prompter's assignments and the label map


def test_metadata_records_precision_and_calibration(quantized):
    _, int8 = quantized
    info = read_onnx_info(int8)
    assert info.precision == "int8"
    q = info.quantization
    assert q["tool"] == "onnxruntime.quantization.quantize_static" and q["format"] == "QDQ"
    assert q["target"] == "tensorrt"
    assert q["calibration"]["frames"] == ["mfnet_01234N.png", "mfnet_01477D.png"]
    assert q["calibration"]["source"].startswith("bundled samples")
    assert q["fp32"]["LayerNormalization"] > 0


def test_int8_agrees_with_fp32_on_the_real_frames(quantized):
    """ONNX Runtime INT8 vs fp32 on the bundled real frames (through the Segmenter)."""
    fp32, int8 = quantized
    results = check(fp32, int8, bundled_frames(read_onnx_info(fp32)), Progress(2))
    for r in results:
        print(r.line("labels agree"))
        assert r.value >= 0.99 and r.rel <= 0.05
    with Segmenter(int8, device="cpu") as seg:
        assert seg.info.precision == "int8"


def test_fp8_is_e4m3_qdq_at_opset_19(quantized, tmp_path):
    """FP8 can be checked here only for its structure and in ONNX Runtime (no FP8 GPU)."""
    fp32, _ = quantized
    out = tmp_path / "tiny.fp8.onnx"
    assert run([str(fp32), "--fp8", "-o", str(out), "--no-check"]) == 0
    model = onnx.load(str(out))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    values = {t.name: t for t in model.graph.initializer}
    zps = [values[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and {z.data_type for z in zps} == {onnx.TensorProto.FLOAT8E4M3FN}
    assert nonzero_zero_points(model) == []
    assert graph.tensorrt_problems(model) == []
    (r, *_) = check(fp32, out, bundled_frames(read_onnx_info(fp32)), Progress(2))
    print(r.line("labels agree"))
    assert r.value >= 0.99


def test_bad_arguments_are_one_line_errors(quantized, tmp_path, capsys):
    fp32, int8 = quantized
    for argv, says in (([str(fp32)], "one of the arguments --int8 --fp8 is required"),
                       ([str(fp32), "--fp8", "--target", "onnxruntime"], "FP8 is for TensorRT"),
                       ([str(fp32), "--int8", "--target", "openvino"], "invalid choice"),
                       ([str(fp32), "--int8", "--calib", "x"], "--calib is for --target tensorrt"),
                       ([str(tmp_path / "none.onnx"), "--int8"], "no such file"),
                       ([str(int8), "--int8"], "quantize the fp32 export"),
                       ([str(fp32), "--int8", "--calib-frames", "0"], "--calib-frames: expected an integer >= 1"),
                       ([str(fp32), "--int8", "--calib-aux", "x"], "--calib-aux pairs with --calib"),
                       ([str(fp32), "--int8", "-o", str(fp32)], "would replace the input"),
                       ([str(fp32), "--int8", "--target", "tensorrt", "--calib", str(tmp_path / "missing")],
                        "missing")):
        assert run(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err, (argv, err)


@pytest.mark.parametrize("target, name", [("onnxruntime", "tiny.int8.encoder.onnx"),
                                          ("tensorrt", "tiny.int8.qdq.encoder.onnx")])
def test_simcmf_encoder_int8_masks_over_clicks(tmp_path, target, name):
    """SimCMF: the encoder is quantized, the decoder stays fp32 (found through the metadata);
    masks of the INT8 encoder vs the fp32 one over a grid of clicks on the real RGB-T frame."""
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    _, (encoder, _) = export_simcmf(tiny_model(modality="rgbt"), tmp_path / "tiny", batch=1, progress=Progress(2))
    assert run([str(encoder), "--int8", "--target", target, "--no-check"]) == 0
    int8 = tmp_path / name
    info = read_onnx_info(int8)
    assert info.kind == "simcmf_encoder" and info.precision == "int8" and info.companion == "tiny.decoder.onnx"
    assert info.quantization["target"] == target
    results = check(encoder, int8, bundled_frames(info), Progress(2))
    for r in results:
        print(r.line("mask IoU"))
        assert r.value >= 0.9


def test_linear_layers_run_as_integer_kernels_in_onnx_runtime(quantized, tmp_path):
    """A batch-1 export's linear layers are Gemms; quantized as Q/DQ Gemms ONNX Runtime would run
    them as fp32 Gemms on dequantized weights (slower than the fp32 model). They are quantized as
    MatMul + Add, and the runtime's session keeps them integer (MatMulIntegerToFloat)."""
    import onnxruntime as ort

    from export.quantize import gemms_as_matmuls
    from runtime.backends.ort_backend import DISABLED_OPTIMIZERS

    fp32, int8 = quantized
    assert any(n.op_type == "Gemm" for n in onnx.load(str(fp32)).graph.node)
    assert not any(n.op_type == "Gemm" for n in onnx.load(str(int8)).graph.node)
    assert read_onnx_info(int8).quantization["gemms_as_matmuls"] > 0
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") >= 10 and "Gemm" not in ops
    # The rewrite itself is exact in fp32.
    model = onnx.load(str(fp32))
    assert gemms_as_matmuls(model) > 0
    onnx.save(model, str(tmp_path / "matmul.onnx"))
    rng = np.random.default_rng(0)
    feeds = {"rgb": rng.random((1, 3, *SIZE), np.float32), "aux": rng.random((1, 1, *SIZE), np.float32)}
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
            for p in (fp32, tmp_path / "matmul.onnx"))
    assert np.abs(a - b).max() <= 1e-5


def test_int8_model_on_the_tensorrt_path(quantized, trt_env, tmp_path):
    """The Q/DQ model builds as it is (strongly typed: its Q/DQ nodes set the precision) into an
    INT8 engine whose labels are ONNX Runtime's on the same model (simulated: the same graph)."""
    from export.tensorrt import run as build
    from runtime.backends.trt_backend import read_sidecar

    _, int8 = quantized
    engine = tmp_path / "tiny.int8.engine"
    assert build([str(int8), "-o", str(engine)]) == 0
    assert read_sidecar(engine).precision == "int8"
    _, rgb, aux = bundled_frames(read_onnx_info(int8))[0]
    want = Segmenter(int8).run(rgb, aux)
    with Segmenter(engine) as seg:
        assert seg.info.precision == "int8"
        assert (seg.run(rgb, aux) == want).mean() >= (1.0 if trt_env.simulated else 0.95)


# ---- dynamic INT8 for ONNX Runtime ----------------------------------------------------------------

def optimized_ops(path, tmp_path, disabled):
    """Op types of the graph ONNX Runtime's CPU session really runs (all optimizations)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / f"optimized.{len(disabled)}.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def test_dynamic_int8_runs_integer_matmuls_in_onnx_runtime(dynamic, tmp_path):
    """Every linear layer (the batch-1 export's Gemms, rewritten to MatMul + Add) is an integer
    MatMul fused with its activation quantization and its bias; nothing runs as an fp32 Gemm.
    The runtime's session option (MatMulAddFusion off, for the Q/DQ models) changes nothing here."""
    from runtime.backends.ort_backend import DISABLED_OPTIMIZERS

    fp32, int8 = dynamic
    gemms = sum(n.op_type == "Gemm" for n in onnx.load(str(fp32)).graph.node)
    ops = optimized_ops(int8, tmp_path, DISABLED_OPTIMIZERS)
    integer = ops.count("DynamicQuantizeMatMul") + ops.count("MatMulIntegerToFloat")
    assert gemms >= 10 and integer == gemms, (gemms, sorted(set(ops)))
    assert "MatMulInteger" not in ops and "Gemm" not in ops and "QuantizeLinear" not in ops
    assert sorted(optimized_ops(int8, tmp_path, [])) == sorted(ops)


def test_dynamic_int8_metadata_and_precision_policy(dynamic):
    fp32, int8 = dynamic
    info = read_onnx_info(int8)
    q = info.quantization
    assert info.precision == "int8" and q["target"] == "onnxruntime" and q["calibration"] is None
    assert q["tool"] == "onnxruntime.quantization.quantize_dynamic" and q["weights"].startswith("int8 per output")
    model = onnx.load(str(int8))
    matmuls = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert q["integer_matmuls"] == len(matmuls) >= 10
    # Weights int8 per output channel, symmetric (zero points 0)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in matmuls:
        w, zp = values[n.input[1]], values[n.input[3]]
        assert w.dtype == np.int8 and zp.size == w.shape[1] and not zp.any()
    # LayerNorm, softmax and the argmax chains read fp32: no integer MatMul feeds them directly,
    # and every MatMul the policy keeps is still an fp32 MatMul.
    keep = nodes_to_keep_fp32(onnx.load(str(fp32)))
    named = {n.name: n for n in model.graph.node}
    kept = {name for names in keep.values() for name in names}
    assert kept and all(named[k].op_type != "MatMulInteger" for k in kept if k in named)
    integer_out = {n.output[0] for n in matmuls}
    assert not any(integer_out & set(named[k].input) for k in kept if k in named)


def test_dynamic_int8_agrees_with_fp32_on_the_real_frames(dynamic):
    fp32, int8 = dynamic
    for r in check(fp32, int8, bundled_frames(read_onnx_info(fp32)), Progress(2)):
        print(r.line("labels agree"))
        assert r.value >= 0.99 and r.rel <= 0.05
    with Segmenter(int8, device="cpu") as seg:
        assert seg.info.precision == "int8" and seg.backend == "onnxruntime"


def test_the_target_and_its_reason_are_stated(fp32_model, tmp_path, capsys):
    info = read_onnx_info(fp32_model)
    assert choose_target(None, "int8", info)[0] == "onnxruntime"
    assert choose_target(None, "fp8", info)[0] == "tensorrt"
    assert choose_target("tensorrt", "int8", info)[0] == "tensorrt"
    fused = read_onnx_info(fp32_model)
    fused.plugins = ["GoptGroupMerge"]
    assert choose_target(None, "int8", fused) == ("tensorrt", "the default for a graph exported with "
                                                              "--fused-kernels (TensorRT plugins)")
    assert default_output(fp32_model, "int8", "onnxruntime").name == "tiny.int8.onnx"
    assert default_output(fp32_model, "int8", "tensorrt").name == "tiny.int8.qdq.onnx"
    out = tmp_path / "mine.onnx"
    assert run([str(fp32_model), "--int8", "-o", str(out), "--no-check"]) == 0
    text = capsys.readouterr().out
    assert "target: onnxruntime (the default for --int8" in text and "integer MatMuls" in text
    assert "unchecked (--no-check)" in text and out.is_file()


def test_a_model_beyond_tolerance_keeps_its_unverified_name(tmp_path, capsys):
    """The factory's chaotic tiny GoPT (weights N(0, 0.2^2)) flips labels at any rounding: the
    check fails, the file stays NAME.unverified.onnx and no file has the final name."""
    fp32 = tmp_path / "chaotic.onnx"
    export_gopt(factories.tiny_gopt(0, img_size=SIZE), fp32, progress=Progress(1))
    assert run([str(fp32), "--int8"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "beyond tolerance" in captured.err and "kept as" in captured.err
    assert "warning" not in captured.err
    assert (tmp_path / "chaotic.int8.unverified.onnx").is_file() and not (tmp_path / "chaotic.int8.onnx").exists()


def test_output_in_a_missing_folder_is_written_there(quantized, tmp_path, capsys):
    """`-o missing/dir/q.onnx`: the folders are made before the work starts (it was a
    FileNotFoundError traceback after quantizing)."""
    fp32, _ = quantized
    out = tmp_path / "missing" / "dir" / "q.onnx"
    assert run([str(fp32), "--int8", "-o", str(out)]) == 0, capsys.readouterr().err
    assert out.is_file() and read_onnx_info(out).precision == "int8"
    assert sorted(p.name for p in out.parent.iterdir()) == ["q.onnx"]  # no .unverified, no temporary left


def test_a_model_beyond_tolerance_keeps_the_unverified_name(quantized, tmp_path, monkeypatch, capsys):
    """As export.onnx: a quantized model that fails its check is never named OUT; an earlier
    OUT stays as it was."""
    import export.quantize as q

    fp32, _ = quantized
    out = tmp_path / "q.onnx"
    out.write_bytes(b"an earlier model")
    monkeypatch.setitem(q.MIN_LABEL_AGREEMENT, "int8", 1.01)  # no agreement passes
    assert run([str(fp32), "--int8", "-o", str(out)]) == 1
    assert "kept as " in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier model"
    assert read_onnx_info(tmp_path / "q.unverified.onnx").precision == "int8"
