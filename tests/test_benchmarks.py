"""benchmarks/latency.py --quick: the table, JSON and plot a user gets, with finite positive numbers."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import torch

from models import GoPT, GoPTConfig, save_gopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def positive_finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_benchmark_json(tmp_path):
    cfg = GoPTConfig(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(48, 64),
                     prompt_dim=16)
    torch.manual_seed(0)
    save_gopt(GoPT(cfg), tmp_path / "tiny.pt")
    cmd = [sys.executable, "benchmarks/latency.py", str(tmp_path / "tiny.pt"), "--quick", "--batch", "1,2",
           "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--markdown",
           "--work-dir", str(tmp_path / "work")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| backend |" in out.stdout  # the Markdown table
    result = json.loads((tmp_path / "r.json").read_text())
    env = result["environment"]
    assert env["cpu_cores"] >= 1 and "torch" in env["libraries"] and "latency.py" in env["command"]
    rows = result["results"]
    # Every requested backend appears: measured, or with the reason it could not run.
    assert {r["backend"] for r in rows} == {"torch", "triton", "compile", "onnxruntime", "openvino", "tensorrt"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["mode"], r["batch"]) for r in ok} >= {
        (b, m, n) for b in ("torch", "onnxruntime") for m in ("end-to-end", "compute-only") for n in (1, 2)}
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith(("unavailable: ", "skipped")), r["status"]
    for r in ok:
        lat = r["latency_ms"]
        assert all(positive_finite(lat[k]) for k in ("min", "p50", "p90", "p95", "p99", "max", "mean"))
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert positive_finite(r["throughput_fps"]) and r["iters"] >= 3
        assert positive_finite(r["speedup_vs_eager"])
        assert 0.99 <= r["label_agreement"] <= 1.0
        assert positive_finite(r["memory"]["peak_rss_mb"])
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_quick_benchmark_simcmf_encoder(tmp_path):
    from pathlib import Path

    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    export_simcmf(tiny_model(modality="rgbt"), Path(tmp_path / "tiny"), "batch", progress=Progress(2))
    cmd = [sys.executable, "benchmarks/latency.py", str(tmp_path / "tiny.encoder.onnx"), "--quick", "--batch",
           "1,2", "--backend", "onnxruntime,openvino,triton", "--json", str(tmp_path / "r.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    ok = {(r["backend"], r["mode"], r["batch"]): r for r in rows if r["status"] == "ok"}
    backends = ("onnxruntime", "openvino") if importlib.util.find_spec("openvino") else ("onnxruntime",)
    assert set(ok) == {(b, m, n) for b in backends for m, n in (("compute-only", 1), ("compute-only", 2),
                                                                  ("end-to-end", 1))}
    for r in ok.values():
        assert r["input_size"] == [128, 128]
        assert all(positive_finite(r["latency_ms"][k]) for k in ("p50", "p99", "mean"))
    statuses = {r["status"] for r in rows if r["status"] != "ok"}
    assert "unavailable: SimCMF end to end segments one image per call" in statuses
    assert any("Triton kernels are GoPT's prompter" in s for s in statuses)


def test_quick_prints_only_rows_that_ran_and_one_line_for_the_rest(tmp_path):
    cfg = GoPTConfig(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(48, 64),
                     prompt_dim=16)
    torch.manual_seed(0)
    save_gopt(GoPT(cfg), tmp_path / "tiny.pt")
    cmd = [sys.executable, "benchmarks/latency.py", str(tmp_path / "tiny.pt"), "--quick", "--json",
           str(tmp_path / "r.json"), "--work-dir", str(tmp_path / "work")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("\nbackend ")[1].splitlines()
    rows = [line for line in table[1:] if line.startswith(("torch ", "onnxruntime "))]
    assert len(rows) == 4 and all(" 1 " in r for r in rows)  # 2 backends x 2 modes, batch 1 only
    not_run = [line for line in table if line.startswith("not run: ")]
    assert len(not_run) == 1 and "unavailable" not in "\n".join(table[1:]).replace(not_run[0], "")
    for backend in ("triton fp32: unavailable", "compile fp32: skipped in --quick", "tensorrt fp32: unavailable"):
        assert backend in not_run[0], not_run[0]
    assert {r["batch"] for r in json.loads((tmp_path / "r.json").read_text())["results"]} == {1}


def test_quick_skips_exporting_a_large_checkpoint(tmp_path, monkeypatch):
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("latency", os.path.join(ROOT, "benchmarks", "latency.py"))
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    ckpt = tmp_path / "big.pt"
    ckpt.write_bytes(b"\0" * (2 << 20))
    monkeypatch.setattr(latency, "QUICK_EXPORT_MAX_MB", 1)
    quick = SimpleNamespace(quick=True, backend_given=False)
    try:
        latency.quick_check_export(ckpt, tmp_path / "cached.onnx", quick)
        raise AssertionError("a 2 MB checkpoint above the 1 MB limit was exported in --quick")
    except latency.SkippedInQuick as e:
        assert "run once without --quick" in str(e)
    (tmp_path / "cached.onnx").write_bytes(b"x")  # a cached export is used
    latency.quick_check_export(ckpt, tmp_path / "cached.onnx", quick)
    latency.quick_check_export(ckpt, tmp_path / "none.onnx", SimpleNamespace(quick=True, backend_given=True))


def interleaved_tiny_run(tmp_path, backends: str, precisions: str, mode: str) -> subprocess.CompletedProcess:
    """latency.py --quick --interleave on a tiny GoPT checkpoint, results in tmp_path/r.json."""
    cfg = GoPTConfig(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(48, 64),
                     prompt_dim=16)
    torch.manual_seed(0)
    save_gopt(GoPT(cfg), tmp_path / "tiny.pt")
    cmd = [sys.executable, "benchmarks/latency.py", str(tmp_path / "tiny.pt"), "--quick", "--batch", "1",
           "--backend", backends, "--precision", precisions, "--interleave", mode,
           "--json", str(tmp_path / "r.json"), "--work-dir", str(tmp_path / "work")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_interleaved_int8_and_uint8_input(tmp_path):
    """--interleave with --precision int8 and fp32:uint8-input: ONNX Runtime's INT8 Q/DQ model and
    the raw-frame export, timed in turns with PyTorch eager, each with its ratio and labels."""
    interleaved_tiny_run(tmp_path, "torch,onnxruntime", "fp32,int8,fp32:uint8-input", "--compute-only")
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    ok = {(r["backend"], r["precision"]): r for r in rows if r["status"] == "ok"}
    assert set(ok) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                       ("onnxruntime", "fp32:uint8-input")}
    for r in ok.values():
        assert r["iters"] >= 3 and positive_finite(r["speedup_vs_eager"])
        assert 0.0 <= r["label_agreement"] <= 1.0
    assert ok[("onnxruntime", "fp32:uint8-input")]["label_agreement"] == 1.0
    unavailable = [r for r in rows if r["status"] != "ok"]
    assert all(r["status"].startswith("unavailable: ") for r in unavailable)  # torch int8, torch uint8-input
    assert list((tmp_path / "work").glob("*.int8.onnx"))


def test_ort_profile_shares_add_up(tmp_path):
    """benchmarks/ort_profile.py: ONNX Runtime's own profiler, by operator type, on an exported GoPT."""
    from export.onnx import export_gopt
    from factories import tiny_gopt

    export_gopt(tiny_gopt(), tmp_path / "tiny.onnx", 1)
    cmd = [sys.executable, "benchmarks/ort_profile.py", str(tmp_path / "tiny.onnx"), "--runs", "2",
           "--json", str(tmp_path / "p.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    times = json.loads((tmp_path / "p.json").read_text())["ms_per_run"]
    assert {"LayerNormalization", "Softmax", "ArgMax"} <= set(times)  # the graph's own operators
    assert all(positive_finite(ms) or ms == 0 for ms in times.values()) and sum(times.values()) > 0
    assert "ms of kernel time per run" in out.stdout.splitlines()[0]
    bad = subprocess.run([sys.executable, "benchmarks/ort_profile.py", str(tmp_path / "none.onnx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "none.onnx: no such file" in bad.stderr


def test_interleaved_cpu_precisions_onnx_runtime_and_openvino(tmp_path):
    """The CPU table of docs/benchmarks.md in small: fp32 / bf16 / INT8 on ONNX Runtime and OpenVINO, timed in
    turns with PyTorch eager. INT8 is the model made for each backend (ONNX Runtime: dynamic;
    OpenVINO: Q/DQ); ONNX Runtime bf16 is listed as unavailable with its reason."""
    import pytest

    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[openvino]')")
    import openvino as ov

    interleaved_tiny_run(tmp_path, "torch,onnxruntime,openvino", "fp32,bf16,int8", "--end-to-end")
    result = json.loads((tmp_path / "r.json").read_text())
    rows = result["results"]
    ok = {(r["backend"], r["precision"]): r for r in rows if r["status"] == "ok"}
    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
                ("openvino", "int8")} | ({("openvino", "bf16")} if bf16 else set())
    assert set(ok) == expected
    for r in ok.values():
        assert r["iters"] >= 3 and positive_finite(r["speedup_vs_eager"])
        assert set(r["label_agreement_frames"]) == {"mfnet_01234N.png (night)", "mfnet_01477D.png (day)"}
    assert ok[("onnxruntime", "int8")]["quantized_for"] == "onnxruntime"
    assert ok[("openvino", "int8")]["quantized_for"] == "tensorrt"
    assert ok[("openvino", "fp32")]["compute_precision"] == "f32"
    assert ok[("openvino", "fp32")]["label_agreement"] >= 0.99
    status = {(r["backend"], r["precision"]): r["status"] for r in rows if r["status"] != "ok"}
    assert "no bf16 MatMul / Gemm kernels" in status[("onnxruntime", "bf16")]
    assert "load_average_start" in result["environment"] and "openvino" in result["environment"]["libraries"]
    assert list((tmp_path / "work").glob("*.int8.onnx")) and list((tmp_path / "work").glob("*.int8.qdq.onnx"))
