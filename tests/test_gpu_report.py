"""python -m benchmarks.gpu_report without a GPU: the plan, every stage's one-line reason, the
budget, the files, and the measuring cores of the stages on the CPU (the tiny GoPT, the
Triton interpreter), so that a first run on a GPU does not die on code never executed.
Numbers measured here only check the code paths; no stage puts a CPU number in a report."""
import ast
import json
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_report, gpu_report_output, gpu_stages
from benchmarks.gpu_budget import Budget, Context, OutOfTime

ROOT = Path(__file__).resolve().parents[1]


def has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


no_gpu = pytest.mark.skipif(has_gpu(), reason="this machine has a CUDA GPU: the stages run for real there")


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def run_one(stage, tmp_path, allot=30.0, shared=None):
    report = gpu_report.new_report([], 60, [stage])
    result = gpu_report.run_stage(stage, allot, report, {} if shared is None else shared, lambda *a: None, tmp_path)
    return report, result


# ---- the plan ----------------------------------------------------------------------------------

def test_dry_run_lists_every_stage_with_its_share_and_what_it_misses():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_report", "--dry-run", "--budget-s", "480"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "480 s budget, 7 stages" in lines[0]
    for stage in gpu_report.STAGES:
        row = next(l for l in lines if l.split()[1:2] == [stage.name])
        share = round(100 * stage.share / sum(s.share for s in gpu_report.STAGES))
        assert f"{share}%" in row and ("ready" in row or "missing:" in row), row
        if stage.needs and not has_gpu():
            assert "missing: no CUDA GPU" in row, row


def test_shares_add_up_and_every_stage_has_a_formatter():
    assert abs(sum(s.share for s in gpu_report.STAGES) - 1.0) < 1e-9
    assert set(gpu_report.STAGE_NAMES) == set(gpu_report_output.FORMATTERS)


def test_stages_can_be_chosen_and_the_environment_always_runs():
    assert [s.name for s in gpu_report.parse_args(["--stages", "streams,kernels"]).plan] == [
        "environment", "kernels", "streams"]


def test_command_line_errors_are_one_line(capsys):
    for argv, text in ((["--stages", "kernels,warp"], "unknown ['warp']"), (["--budget-s", "0"], "a number > 0")):
        assert gpu_report.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and text in err, err


# ---- the budget --------------------------------------------------------------------------------

def test_budget_gives_unused_time_to_the_later_stages():
    clock = Clock()
    budget = Budget(100, clock)
    assert budget.allot([0.5, 0.25, 0.25]) == pytest.approx(50)
    clock.t += 10  # the first stage used 10 of its 50 s
    assert budget.allot([0.25, 0.25]) == pytest.approx(45)  # half of the 90 s left
    clock.t += 200
    assert budget.left() == 0 and budget.allot([1.0]) == 0


def test_context_stops_a_stage_between_units_of_work_and_saves_now_and_then():
    clock, saves = Clock(), []
    ctx = Context(deadline=110, result={}, shared={}, save=lambda: saves.append(clock.t), out_dir=Path("."),
                  clock=clock)
    ctx.check_time("anything")
    with pytest.raises(OutOfTime, match="budget spent before the compile .needs about 20 s."):
        ctx.check_time("the compile", need_s=20)
    ctx.checkpoint()
    ctx.checkpoint()  # too soon
    clock.t += 11
    ctx.checkpoint()
    assert saves == [100, 111]
    clock.t = 111
    with pytest.raises(OutOfTime, match="budget spent before batch 32"):
        ctx.check_time("batch 32")


# ---- running stages ----------------------------------------------------------------------------

@no_gpu
@pytest.mark.parametrize("stage", gpu_report.STAGES, ids=gpu_report.STAGE_NAMES)
def test_each_stage_without_a_gpu_is_one_line(stage, tmp_path):
    shared = {}
    report, result = run_one(stage, tmp_path, shared=shared)
    if stage.name == "environment":
        assert result["status"] == "ok"
        assert result["environment"]["gpu"] is None
        assert result["notes"] == [f"no CUDA GPU: {shared['environment']['no_gpu']}"]
        assert "\n" not in result["notes"][0]
    else:
        assert result["status"] == "skipped"
        assert result["reason"].startswith("no CUDA GPU: torch.cuda.is_available() is False")
        assert "\n" not in result["reason"] and "Traceback" not in json.dumps(result)


def test_a_missing_package_is_one_line_per_stage(tmp_path, monkeypatch):
    real = gpu_report.importlib.util.find_spec
    monkeypatch.setattr(gpu_report.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("cv2", "pytest", "triton") else real(name, *a))
    monkeypatch.setattr(gpu_report.shutil, "which", lambda name: None if name == "cmake" else "/usr/bin/" + name)
    for stage, missing in (("streams", "not installed: opencv-python-headless"),
                           ("gpu_tests", "not installed: pytest"),
                           ("native", "not installed: triton; not installed: cmake")):
        _, result = run_one(next(s for s in gpu_report.STAGES if s.name == stage), tmp_path)
        assert result["status"] == "skipped" and result["reason"].startswith(missing), result["reason"]


def test_an_unexpected_failure_is_recorded_and_the_next_stage_runs(tmp_path):
    def broken(ctx):
        ctx.rows().append({"what": "first half"})
        raise KeyError("no such preset")

    def partial(ctx):
        ctx.rows().append({"what": "one"})
        ctx.check_time("the second configuration", need_s=1e9)

    def fine(ctx):
        ctx.rows().append({"what": "done"})

    plan = [gpu_report.Stage("environment", "Environment", 0.2, lambda ctx: ctx.shared.update(environment={})),
            gpu_report.Stage("broken", "Broken", 0.3, broken), gpu_report.Stage("partial", "Partial", 0.3, partial),
            gpu_report.Stage("fine", "Fine", 0.2, fine)]
    report = gpu_report.run(plan, Budget(60), tmp_path, ["--budget-s", "60"])
    status = {s["name"]: s for s in report["stages"]}
    assert status["broken"]["status"] == "error" and status["broken"]["reason"] == "KeyError: 'no such preset'"
    assert status["broken"]["rows"] == [{"what": "first half"}] and "raise KeyError" in "\n".join(
        status["broken"]["traceback"])
    assert status["partial"]["status"] == "partial"
    assert status["partial"]["reason"].startswith("budget spent before the second configuration")
    assert status["fine"]["status"] == "ok" and status["fine"]["rows"] == [{"what": "done"}]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert [s["status"] for s in on_disk["stages"]] == ["ok", "error", "partial", "ok"] and on_disk["finished"]
    assert gpu_report.exit_status(report) == 1
    md = (tmp_path / "report.md").read_text()
    assert "**error**: KeyError: 'no such preset'" in md and "## 4. Fine (`fine`)" in md


@no_gpu
def test_the_command_without_a_gpu_writes_the_environment_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_report", "--budget-s", "60", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["environment"]["gpu"] is None and report["environment"]["libraries"]["torch"]
    assert [s["status"] for s in report["stages"]] == ["ok"] + ["skipped"] * 6
    assert "No CUDA GPU: nothing was measured." in (tmp_path / "report.md").read_text()


# ---- the files -------------------------------------------------------------------------------------

def test_the_writers_never_fail_on_partial_rows(tmp_path):
    report = gpu_report.new_report([], 60, list(gpu_report.STAGES))
    stages = {s["name"]: s for s in report["stages"]}
    stages["kernels"].update(status="partial", copy_bandwidth_GBps=4000.0, rows=[
        {"kernel": "group_merge", "dtype": "fp16", "B": 1, "S": 1200, "C": 9, "error": "OutOfMemoryError: x"},
        {"kernel": "prompt_inject", "dtype": "bf16", "B": 1, "S": 1200, "C": 9, "skipped": "bf16 not supported"},
        {"kernel": "group_merge", "dtype": "fp32", "B": 8, "S": 196, "C": 40, "parity": {"ok": True}, "ms": None}])
    stages["gopt"]["rows"] = [{"model": "GoPT-B RGB-T", "backend": "torch", "precision": "fp16", "cuda_graph": False,
                               "status": "unavailable: no"}, {"status": "ok"}]
    stages["streams"]["results"] = {"1": {"runs": [{"config": "sequential", "cameras": []}]}}
    stages["native"].update(build={"commands": ["cmake"], "seconds": 3})
    gpu_report_output.write(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "OutOfMemoryError: x" in md and "bf16 not supported" in md and "unavailable: no" in md
    assert json.loads((tmp_path / "report.json").read_text())["stages"][1]["status"] == "partial"
    assert report["plots"] == []  # nothing timed, nothing to draw


def test_plots_of_measured_rows(tmp_path):
    pytest.importorskip("matplotlib")
    lat = {"p50": 2.0, "p90": 2.5, "p99": 3.0}
    report = gpu_report.new_report([], 60, list(gpu_report.STAGES))
    stages = {s["name"]: s for s in report["stages"]}
    stages["kernels"]["rows"] = [{"kernel": "group_merge", "dtype": "fp16", "B": b, "S": 1200, "C": 9,
                                  "parity": {"ok": True}, "ms": 0.01 * b, "speedup_vs_eager": 4.0,
                                  "frac_copy_bw": 0.5} for b in (1, 8)]
    stages["gopt"]["rows"] = [{"model": "GoPT-B RGB-T", "backend": "triton", "precision": "fp16", "cuda_graph": False,
                               "batch": b, "status": "ok", "latency_ms": lat} for b in (1, 8)]
    stages["streams"]["results"] = {"2": {"runs": [{"config": "batched", "cameras": [
        {"fps": 29.0, "latency_ms": lat}, {"fps": 28.0, "latency_ms": lat}]}]}}
    assert gpu_report_output.write_plots(report, tmp_path) == ["kernels.png", "gopt.png", "streams.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("kernels.png", "gopt.png", "streams.png"))


# ---- the stages' cores on the CPU ---------------------------------------------------------------

def test_kernel_configurations_cover_the_presets_most_telling_first():
    configs = gpu_stages.kernel_configs()
    assert len(configs) == len(set(configs)) == 2 * 3 ** 4
    assert configs[:2] == [("group_merge", "fp16", 1, 1200, 9), ("prompt_inject", "fp16", 1, 1200, 9)]
    assert configs[-1] == ("prompt_inject", "fp32", 32, 196, 150)


def test_kernel_parity_arithmetic_through_the_interpreter(monkeypatch):
    """benchmarks/kernels.py's parity (assignment-aware) on tiny CPU inputs, as the stage uses it."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs TRITON_INTERPRET=1 (set by conftest.py without a GPU)")
    from kernels.group_merge_triton import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem())
    import torch

    from benchmarks import kernels as kb

    rows = []
    for kernel in gpu_stages.KERNELS:
        for dtype in (torch.float32, torch.float16):
            inputs = kb.make_inputs(kernel, 2, 40, 5, 16, 64, dtype, seed=0, device="cpu")
            rows.append(kb.parity(kernel, inputs, "ieee"))
    assert all(r["ok"] and r["assignment_agreement"] == 1.0 for r in rows), rows
    assert all(r["max_rel_err_given_assignments"] <= 1e-5 for r in rows)
    # the parity catches a wrong output: the reference against a perturbed copy of itself
    out = torch.ones(4, 4)
    assert kb.tolerance_ok(out, out, torch.float32)[0] and not kb.tolerance_ok(out * 1.001, out, torch.float32)[0]


def test_parallel_ordered_keeps_the_order_and_stops_at_the_deadline():
    got = list(gpu_stages.parallel_ordered(abs, [-3, -1, -2], 2, deadline=time.monotonic() + 120))
    assert got == [(-3, 3), (-1, 1), (-2, 2)]
    assert list(gpu_stages.parallel_ordered(abs, [-3, -1], 2, deadline=0.0)) == []


def test_parity_workers_through_the_interpreter():
    """The kernel stage's parity pass as it runs (fresh worker processes, benchmarks/kernels.py's
    measure_config without timing), on the CPU through the interpreter at tiny sizes."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs TRITON_INTERPRET=1 (set by conftest.py without a GPU)")
    from kernels.group_merge_triton import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem())
    import functools

    from benchmarks import kernels as kb

    args = kb.parse_args(["--prompt-dim", "16", "--width", "64"])
    configs = [("group_merge", "fp16", 2, 40, 5), ("prompt_inject", "fp32", 1, 20, 3)]
    worker = functools.partial(gpu_stages.parity_rows, args=args, copy_gbs=1.0, device="cpu")
    got = dict(gpu_stages.parallel_ordered(worker, configs, 2, time.monotonic() + 300))
    assert list(got) == configs
    for config, rows in got.items():
        (row,) = rows
        assert row["parity"]["ok"] and row["ms"] is None and "error" not in row, row
        assert (row["kernel"], row["dtype"], row["B"], row["S"], row["C"]) == config
    md = "\n".join(gpu_report_output.kernels_md({"rows": [r for rows in got.values() for r in rows]}))
    assert "| group_merge | fp16 | 2 | 40 | 5 | ok 100.00% | - |" in md


def test_cmake_builds_only_the_gpus_own_target():
    configure, build = gpu_stages.cmake_commands("90a", Path("/b"), "/py", 16, ninja=True)
    assert configure[:7] == ["cmake", "-S", str(ROOT), "-B", "/b", "-G", "Ninja"]
    assert {"-DGOPT_CUDA_ARCHS=90a", "-DGOPT_PTX_ARCH=", "-DGOPT_DTYPES=fp32;fp16;bf16", "-DGOPT_AOT_JOBS=16",
            "-DPython3_EXECUTABLE=/py", "-DGOPT_GROUPS=9;40;150"} <= set(configure)
    assert build == ["cmake", "--build", "/b", "--parallel", "16"]
    assert "-G" not in gpu_stages.cmake_commands("87", Path("/b"), "/py", 2, ninja=False)[0]


def test_a_build_folder_of_another_checkout_or_generator_is_not_reused(tmp_path):
    assert gpu_stages.reusable_build(tmp_path / "none", ninja=True)
    (tmp_path / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={ROOT}\nCMAKE_GENERATOR:INTERNAL=Ninja\n")
    assert gpu_stages.reusable_build(tmp_path, ninja=True)
    assert not gpu_stages.reusable_build(tmp_path, ninja=False)
    (tmp_path / "CMakeCache.txt").write_text("CMAKE_HOME_DIRECTORY:INTERNAL=/elsewhere\nCMAKE_GENERATOR:INTERNAL=Ninja\n")
    assert not gpu_stages.reusable_build(tmp_path, ninja=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    shared = {"work_dir": str(tmp_path_factory.mktemp("gpu_report"))}
    return gpu_stages.demo_checkpoints(shared, ("thermal",), tiny=True)["thermal"], shared


def test_gopt_rows_on_the_cpu_with_the_tiny_model(tiny_checkpoint):
    path, shared = tiny_checkpoint
    model = gpu_stages.GoptModel(path, "tiny RGB-T", Path(shared["work_dir"]))
    assert model.size == (96, 128) and len(model.reference) == 2
    rows = gpu_stages.gopt_config_rows(model, "torch", "fp32", False, [1, 2], lambda what, need_s=0: None)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["status"] == "ok" for r in rows), rows
    assert rows[0]["label_agreement"] == 1.0 and rows[0]["device"] == "cpu"
    assert rows[1]["latency_ms"]["p50"] > 0 and rows[1]["throughput_fps"] > 0 and rows[1]["gpu_peak_mb"] is None
    for backend, precision, why in (("torch", "fp16", "on a CUDA GPU only"), ("triton", "fp16", "need a CUDA GPU")):
        (row,) = gpu_stages.gopt_config_rows(model, backend, precision, False, [1], lambda *a: None)
        assert row["status"].startswith("unavailable:") and why in row["status"]

    def stop_at_batch_2(what, need_s=0):
        if "batch 2" in what:
            raise OutOfTime(what)

    kept = []
    with pytest.raises(OutOfTime):
        gpu_stages.gopt_config_rows(model, "torch", "fp32", False, [1, 2], stop_at_batch_2, kept)
    assert [r["batch"] for r in kept] == [1]  # what was measured before the budget ran out stays
    md = "\n".join(gpu_report_output.gopt_md({"rows": rows}))
    assert "| tiny RGB-T | 96x128 | torch | fp32 |  | 1 |" in md and "100.00%" in md


def test_simcmf_rows_on_the_cpu_with_a_tiny_encoder(tiny_checkpoint):
    from models.simcmf import SAM_VIT_B, SimCMFConfig

    path, shared = tiny_checkpoint
    config = SimCMFConfig(in_chans=4, **dict(SAM_VIT_B, img_size=64, encoder_embed_dim=32, encoder_depth=2,
                                             encoder_num_heads=2, encoder_global_attn_indexes=[1], window_size=2,
                                             prompt_embed_dim=16, decoder_num_heads=2, decoder_mlp_dim=32,
                                             mask_in_chans=8, iou_head_hidden_dim=16))
    state = gpu_stages.simcmf_state(gpu_stages.latency_args(path, Path(shared["work_dir"])), "cpu", config,
                                    (1, 4, 64, 64))
    fp32, = gpu_stages.simcmf_rows(state, "fp32", False, lambda *a: None)
    bf16, = gpu_stages.simcmf_rows(state, "bf16", False, lambda *a: None)
    assert fp32["status"] == "ok" and fp32["embedding_rel_err_vs_fp32"] == 0.0 and fp32["input"] == "64x64x4"
    assert 0 < bf16["embedding_rel_err_vs_fp32"] < 0.05 and bf16["latency_ms"]["p50"] > 0


def test_streams_on_the_cpu_with_the_tiny_model(tiny_checkpoint):
    path, _ = tiny_checkpoint
    got = {}
    gpu_stages.stream_runs(path, [1, 2], 1.0, lambda *a: None, lambda n, result: got.update({n: result}))
    assert sorted(got) == [1, 2]
    assert [r["config"] for r in got[1]["runs"]] == ["sequential", "pipelined", "pipelined+drop_stale"]
    assert [r["config"] for r in got[2]["runs"]] == ["batched", "separate"]
    for result in got.values():
        for run in result["runs"]:
            assert "series" not in run
            for cam in run["cameras"]:
                assert cam["processed"] + sum(cam["dropped"].values()) == cam["offered"] > 0
    md = "\n".join(gpu_report_output.streams_md({"results": {str(n): r for n, r in got.items()}, "duration_s": 1.0}))
    assert md.count("| 2 | batched |") == 2 and "| 1 | sequential | 0 |" in md


def test_kernel_stage_checks_parity_first_then_times_in_order(monkeypatch):
    """The stage's control flow with benchmarks/kernels.py's measuring replaced by stand-ins
    (1 s of a fake clock per timed configuration): parity for all, timing until the deadline."""
    from benchmarks import kernels as kb

    clock = Clock()
    calls = []

    def fake_measure(kernel, dname, B, S, C, args, copy_gbs, refs, compiled_refs, timing=True, device="cuda"):
        calls.append(((kernel, dname, B, S, C), timing))
        if timing:
            clock.t += 1.0
        return [{"kernel": kernel, "dtype": dname, "B": B, "S": S, "C": C, "impl": "triton",
                 "parity": {"ok": True, "assignment_agreement": 1.0}, "ms": 0.1 if timing else None}]

    monkeypatch.setattr(kb, "copy_bandwidth", lambda args: 1000.0)
    monkeypatch.setattr(kb, "baselines", lambda no_compile: ({}, {}))
    monkeypatch.setattr(kb, "measure_config", fake_measure)
    monkeypatch.setattr(gpu_stages, "compile_timed_variant", lambda config, args, device: None)
    monkeypatch.setattr(gpu_stages, "parallel_ordered",
                        lambda fn, items, processes, deadline, clock: ((i, fn(i)) for i in items))
    ctx = Context(deadline=clock.t + 10.5, result={}, shared={}, save=lambda: None, out_dir=Path("."), clock=clock)
    with pytest.raises(OutOfTime, match="budget spent before timing configuration 12 of 162 .parity: 162 of 162."):
        gpu_stages.kernels(ctx)
    configs = gpu_stages.kernel_configs()
    assert [c for c, timing in calls if not timing] == configs
    assert [c for c, timing in calls if timing] == configs[:11]
    rows = ctx.result["rows"]
    assert len(rows) == 162 and [r["ms"] for r in rows[:12]] == [0.1] * 11 + [None]
    assert ctx.result["summary"][0] == "parity: 162/162 configurations within tolerance"


def test_gopt_stage_skips_a_compile_that_does_not_fit_and_goes_on(monkeypatch, tmp_path):
    clock = Clock()
    order = []

    class Model:
        def __init__(self, path, label, work_dir):
            self.label = label

    def fake_rows(model, backend, precision, graph, batches, check_time, rows):
        check_time(f"{model.label} {backend}", gpu_stages.COMPILE_S if backend == "compile" else 0)
        order.append((model.label, backend, precision, graph))
        rows += [{"model": model.label, "backend": backend, "precision": precision, "cuda_graph": graph,
                  "batch": b, "status": "unavailable: stand-in"} for b in batches]
        clock.t += 1.0
        return rows

    def fake_simcmf(state, precision, compiled, check_time):
        check_time("SimCMF", gpu_stages.COMPILE_S if compiled else 0)
        order.append(("SimCMF", precision, compiled))
        return [{"model": "SimCMF", "backend": "torch", "precision": precision, "status": "unavailable: stand-in"}]

    monkeypatch.setattr(gpu_stages, "demo_checkpoints", lambda shared, *a: {"thermal": "t.pt", "depth": "d.pt"})
    monkeypatch.setattr(gpu_stages, "GoptModel", Model)
    monkeypatch.setattr(gpu_stages, "latency_args", lambda path, work: None)
    monkeypatch.setattr(gpu_stages, "gopt_config_rows", fake_rows)
    monkeypatch.setattr(gpu_stages, "simcmf_rows", fake_simcmf)
    ctx = Context(deadline=clock.t + 30, result={}, shared={"work_dir": str(tmp_path)}, save=lambda: None,
                  out_dir=tmp_path, clock=clock)
    gpu_stages.gopt(ctx)
    assert [o[1] for o in order if o[0] == "GoPT-B RGB-T"] == ["torch", "triton", "torch", "triton", "torch",
                                                                "triton", "triton", "torch"]
    assert ("SimCMF", "bf16", True) not in order and ("SimCMF", "fp32", False) in order
    assert not any(o[1] == "compile" for o in order)  # 60 s needed, at most 30 left
    assert sum(o[0] == "GoPT-B RGB-D" for o in order) == 8
    skipped = [n for n in ctx.result["notes"] if n.startswith("skipped:")]
    assert len(skipped) == 3 and all("needs about 60 s" in n for n in skipped)
    assert len(ctx.result["rows"]) == 16 * 3 + 2


def test_native_stage_flow(monkeypatch, tmp_path):
    import kernels.native

    def ctx_for(env):
        return Context(deadline=time.monotonic() + 60, result={}, shared={"environment": env}, save=lambda: None,
                       out_dir=tmp_path)

    ctx = ctx_for({"gpu": {"arch": None, "arch_problem": "the fused kernels need compute capability >= 8.0"}})
    gpu_stages.native(ctx)
    assert ctx.result == {"status": "skipped", "reason": "the fused kernels need compute capability >= 8.0"}
    monkeypatch.setattr(gpu_stages, "build_native", lambda ctx, arch: tmp_path / f"lib_{arch}.so")
    monkeypatch.setattr(kernels.native, "NativeKernels", lambda path: path)
    monkeypatch.setattr(gpu_stages, "native_parity", lambda lib, dname, C: [{"lib": lib.name, "dtype": dname, "C": C}])
    monkeypatch.setattr(gpu_stages, "launch_overhead", lambda lib: [{"lib": lib.name}])
    ctx = ctx_for({"gpu": {"arch": "90a"}})
    gpu_stages.native(ctx)
    assert [(r["dtype"], r["C"]) for r in ctx.result["parity"]] == [(d, c) for d in ("fp16", "bf16", "fp32")
                                                                    for c in (9, 150)]
    assert ctx.result["launch_overhead"] == [{"lib": "lib_90a.so"}]
    assert ctx.shared["native_build"] == gpu_stages.NATIVE_BUILD


def test_gpu_tests_stage_flow(monkeypatch, tmp_path):
    seen = []

    def fake_run(cmd, timeout_s, env=None, cwd=None):
        seen.append((cmd, env.get("GOPT_BUILD_DIR"), "TRITON_INTERPRET" in env))
        out = "1 failed, 5 passed in 3.0s" if "-m" in cmd[3:] else "=== 55 passed in 40.1s ==="
        return {"command": " ".join(cmd), "rc": 1 if "failed" in out else 0, "timed_out": False, "seconds": 3.0,
                "output": "F....\n" + out}

    monkeypatch.setattr(gpu_stages, "run_command", fake_run)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ctx = Context(deadline=time.monotonic() + 60, result={}, shared={"native_build": tmp_path}, save=lambda: None,
                  out_dir=tmp_path)
    gpu_stages.gpu_tests(ctx)
    assert [r["summary"] for r in ctx.result["rows"]] == ["1 failed, 5 passed in 3.0s", "55 passed in 40.1s"]
    assert ctx.result["rows"][0]["output_tail"][-1] == "1 failed, 5 passed in 3.0s"
    assert "output_tail" not in ctx.result["rows"][1]
    assert all(build == str(tmp_path) and not interpret for _, build, interpret in seen)
    assert seen[1][0][-1] == "tests/test_kernels.py" and "-m" not in seen[1][0][3:]


def test_streams_stage_flow(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_stages, "demo_checkpoints", lambda shared, *a: {"thermal": tmp_path / "t.pt"})
    cam = {"camera": 0, "fps": 30.0, "latency_ms": {"p50": 20.0}, "drop_rate": 0.0}

    def fake_runs(path, cameras, duration_s, check_time, on_result):
        for n in cameras:
            check_time(f"{n} camera pairs")
            on_result(n, {"runs": [{"config": "batched", "cameras": [cam] * n}]})

    monkeypatch.setattr(gpu_stages, "stream_runs", fake_runs)
    ctx = Context(deadline=time.monotonic() + 100, result={}, shared={}, save=lambda: None, out_dir=tmp_path)
    gpu_stages.streams(ctx)
    assert sorted(ctx.result["results"]) == ["1", "2", "4"] and 2 <= ctx.result["duration_s"] <= 10
    assert len(ctx.result["notes"]) == 1 + 2 + 4


def test_stream_seconds_fit_the_time_left():
    assert gpu_stages.stream_seconds(1000) == gpu_stages.STREAM_SECONDS[1]
    assert gpu_stages.stream_seconds(10) == gpu_stages.STREAM_SECONDS[0]
    mid = gpu_stages.stream_seconds(60)
    assert 2 <= mid <= 10 and 7 * mid + 3 * (1 + 3 + 5) <= 60 + 1e-9


@no_gpu
def test_onnxruntime_and_tensorrt_say_they_are_not_installed():
    assert gpu_stages.onnxruntime_cuda().startswith("not installed: onnxruntime-gpu (onnxruntime ")
    assert gpu_stages.tensorrt_installed() == "not installed: tensorrt"


def test_the_tensorrt_and_onnxruntime_commands_parse(tmp_path):
    """Every command the ort_trt stage would run is accepted by its program's own parser."""
    from benchmarks import latency
    from export import onnx as export_onnx
    from export import quantize, tensorrt

    ckpt = tmp_path / "gopt.pt"
    ckpt.write_bytes(b"")
    for name in ("gopt.onnx", "gopt_uint8.onnx", "gopt.int8.onnx", "gopt_fused.onnx"):
        (tmp_path / name).write_bytes(b"")
    plugins = tmp_path / "libgopt_trt_plugins.so"
    cmds = gpu_stages.ort_commands(ckpt, tmp_path) + gpu_stages.trt_commands(ckpt, tmp_path, plugins)
    assert len(cmds) == 1 + 8 + 4
    for what, cmd in cmds:
        module = cmd[2] if cmd[1] == "-m" else cmd[1]
        args = cmd[3:] if cmd[1] == "-m" else cmd[2:]
        if module == "benchmarks/latency.py":
            Path(args[0]).touch()
            parsed = latency.parse_args(args)
            assert parsed.modes == ["compute-only"], what
        else:
            parser = {"export.onnx": export_onnx, "export.quantize": quantize, "export.tensorrt": tensorrt}[module]
            parser.parse_args(args)


def test_pytest_summary_line():
    out = "....\n=== 6 passed, 2 skipped, 320 deselected in 12.3s ===\n"
    assert gpu_stages.pytest_summary(out) == "6 passed, 2 skipped, 320 deselected in 12.3s"
    assert gpu_stages.pytest_summary("collected 0 items\nno tests ran in 0.1s") == "no tests ran in 0.1s"
    assert gpu_stages.pytest_summary("Traceback ...") is None


# ---- imports on the GPU machine -----------------------------------------------------------------

def report_imports() -> set[str]:
    """Every project and third-party module the report's files import, at the top or inside a stage."""
    names = set()
    for file in ("gpu_report.py", "gpu_stages.py", "gpu_report_output.py", "gpu_budget.py", "kernels.py",
                 "latency.py", "streams.py"):
        for node in ast.walk(ast.parse((ROOT / "benchmarks" / file).read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                names.add(node.module)
    return names


# each asked for inside a try, the missing one is a row (latency.py's OpenVINO backend, which
# the report does not use, too)
OPTIONAL = {"tensorrt", "onnxruntime", "openvino", "runtime.backends.openvino_backend"}
# what the stages reach inside functions of those modules (latency.py's backends, the C
# library, the demo checkpoints, the Segmenter of the streams)
REACHED = {"kernels.group_merge_triton", "kernels.prompt_inject_triton", "kernels.reference", "kernels.tiles",
           "kernels.native", "kernels.aot", "models.checkpoint", "models.demo_checkpoint", "models.demo_simcmf",
           "models.gopt", "models.simcmf", "runtime.segmenter", "runtime.backends.torch_backend",
           "runtime.backends.ort_backend", "runtime.sources.multicamera", "runtime.sources.replay",
           "runtime.sources.streams", "runtime.metadata", "triton.testing",
           "torch._dynamo", "torch.nn.functional", "matplotlib.pyplot"}


def test_every_module_the_report_imports_is_importable_here():
    """The import sweep the GPU machine must pass (run it in a copy of that environment):
    each module the report uses imports, bar the optional ones it reports as missing."""
    import importlib

    failed = {}
    for name in sorted((report_imports() | REACHED) - OPTIONAL):
        try:
            importlib.import_module(name)
        except ImportError as e:
            failed[name] = str(e)
    assert not failed, failed
