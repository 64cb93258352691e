"""Every command-line entry point, misused as a new user would misuse it: bad arguments and
bad paths (missing, unreadable, a file where a folder goes, a folder where a file goes, an
output under a file, an existing output where the tool refuses one, numbers out of range,
a model of the wrong kind). Each case must end with its exit status, exactly one ``error:``
line naming the problem, no traceback, and no new file anywhere in the work folder.

One row per entry point (``ROWS``); a new tool adds its row. The cases run in-process through
the tool's ``main(argv)`` (fast); the first case of every row runs again as a user runs it,
in a child process, which also proves that nothing escapes to the interpreter's handler.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    what: str
    args: list
    says: str  # a fragment of the one error line
    code: int = 2


@dataclass
class Row:
    name: str  # how a user starts it: "-m export.onnx" or a script path
    module: str  # where its main(argv) lives
    cases: object  # Work -> [Case]
    marks: list = field(default_factory=list)

    def command(self) -> list[str]:
        return [sys.executable, *self.name.split()]


class Work:
    """The paths the cases use: models, junk, a file, a folder, missing names."""

    def __init__(self, root: Path, models: Path, simcmf: Path):
        self.root = root
        self.onnx, self.pt, self.depth_onnx = models / "thermal.onnx", models / "thermal.pt", models / "depth.onnx"
        self.encoder, self.decoder = simcmf / "s.encoder.onnx", simcmf / "s.decoder.onnx"
        self.file = root / "notes.txt"
        self.folder = root / "folder"
        self.junk_onnx, self.junk_pt, self.junk_png = root / "junk.onnx", root / "junk.pt", root / "junk.png"
        self.existing = root / "existing"
        self.frames = ROOT / "data" / "samples" / "mfnet_01234N.png"

    def make(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.file.write_text("not a model, not a folder\n")
        self.folder.mkdir(exist_ok=True)
        for junk in (self.junk_onnx, self.junk_pt, self.junk_png):
            junk.write_bytes(b"\x00\x01 not what the name says " * 40)
        self.existing.mkdir(exist_ok=True)
        (self.existing / "gopt").mkdir(exist_ok=True)
        return self

    def missing(self, name: str) -> Path:
        return self.root / "missing" / name

    def under_file(self, name: str) -> Path:
        return self.file / name

    def folder_named(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path


def export_onnx(w: Work):
    return [
        Case("missing checkpoint", [w.missing("m.pt")], "no such file"),
        Case("folder as the checkpoint", [w.folder], "is a folder"),
        Case("not a checkpoint", [w.junk_pt], "not a readable PyTorch checkpoint"),
        Case("an ONNX file as the checkpoint", [w.onnx], "not a readable PyTorch checkpoint"),
        Case("output under a file", [w.pt, "-o", w.under_file("m.onnx")], "is a file, not a folder"),
        Case("folder where the output goes", [w.pt, "-o", w.folder_named("out.onnx")], "is a folder"),
        Case("batch 0", [w.pt, "--batch", "0"], "--batch: expected an integer >= 1"),
        Case("negative depth units", [w.pt, "--uint8-input", "--depth-units", "-1"], "--depth-units"),
    ]


def export_quantize(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--int8"], "no such file"),
        Case("not an ONNX model", [w.junk_onnx, "--int8"], "not a readable ONNX model"),
        Case("a checkpoint", [w.pt, "--int8"], "not a readable ONNX model"),
        Case("a SimCMF decoder", [w.decoder, "--int8"], "simcmf_decoder graph"),
        Case("an INT8 model", [w.int8, "--int8"], "quantize the fp32 export"),
        Case("output under a file", [w.onnx, "--int8", "-o", w.under_file("q.onnx")], "is a file, not a folder"),
        Case("folder where the output goes", [w.onnx, "--int8", "-o", w.folder_named("q.onnx")], "is a folder"),
        Case("0 calibration frames", [w.onnx, "--int8", "--calib-frames", "0"], "expected an integer >= 1"),
        Case("missing calibration frames", [w.onnx, "--int8", "--target", "tensorrt", "--calib", w.missing("calib"),
                                            "-o", w.root / "c.onnx"], "no such file"),
        Case("calibration frames for the dynamic target", [w.onnx, "--int8", "--target", "onnxruntime", "--calib",
                                                           w.root], "--calib is for --target tensorrt"),
        Case("FP8 for ONNX Runtime", [w.onnx, "--fp8", "--target", "onnxruntime"], "FP8 is for TensorRT"),
        Case("an unknown target", [w.onnx, "--int8", "--target", "openvino"], "invalid choice"),
    ]


def export_tensorrt(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx")], "no such file"),
        Case("not an ONNX model", [w.junk_onnx], "not a readable ONNX model"),
        Case("engine under a file", [w.onnx, "-o", w.under_file("m.engine")], "is a file, not a folder"),
        Case("folder where the engine goes", [w.onnx, "-o", w.folder_named("m.engine")], "is a folder"),
        Case("workspace 0", [w.onnx, "--workspace", "0"], "--workspace"),
        Case("batch range on a fixed batch", [w.onnx, "--max-batch", "8"], "batch is fixed"),
        Case("fp16 from an INT8 Q/DQ model", [w.int8_qdq, "--fp16"], "int8 Q/DQ model"),
        Case("a dynamic INT8 model", [w.int8, "--fp16"], "dynamic INT8 for ONNX Runtime"),
    ]


def export_triton_repo(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "-o", w.root / "repo"], "no such file"),
        Case("not an ONNX model", [w.junk_onnx, "-o", w.root / "repo"], "not a readable ONNX model"),
        Case("a SimCMF decoder", [w.decoder, "-o", w.root / "repo"], "serves GoPT"),
        Case("a checkpoint", [w.pt, "-o", w.root / "repo"], "export the checkpoint first"),
        Case("repository is a file", [w.onnx, "-o", w.file], "is a file; the output is a folder"),
        Case("repository under a file", [w.onnx, "-o", w.under_file("repo")], "is a file, not a folder"),
        Case("existing repository", [w.onnx, "-o", w.existing], "--overwrite"),
        Case("0 instances", [w.onnx, "-o", w.root / "repo", "--instances", "0"], "expected an integer >= 1"),
        Case("batch 16 from a batch-1 export", [w.onnx, "-o", w.root / "repo", "--max-batch", "16"], "--dynamic-batch"),
    ]


def kernels_aot(w: Work):
    return [
        Case("output folder is a file", ["--out", w.file, "--arch", "90a"], "is a file; the output is a folder"),
        Case("output folder under a file", ["--out", w.under_file("aot"), "--arch", "90a"], "is a file, not a folder"),
        Case("0 jobs", ["--jobs", "0"], "expected an integer >= 1"),
        Case("unknown target", ["--arch", "75"], "--arch must be among"),
    ]


def runtime_main(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--rgb", w.frames], "no such file"),
        Case("missing frames", [w.onnx, "--rgb", w.missing("frames")], "no such file"),
        Case("not a model", [w.junk_onnx, "--rgb", w.frames], "ONNX Runtime cannot load it"),
        Case("unreadable frames", [w.onnx, "--rgb", w.junk_png, "--out", w.root / "o"], "not a readable image"),
        Case("output folder is a file", [w.onnx, "--rgb", w.frames, "--out", w.file], "is a file"),
        Case("output under a file", [w.onnx, "--rgb", w.frames, "--out", w.under_file("o")], "is a file, not a folder"),
        Case("existing output bag", [w.onnx, "--bag", w.folder, "--rgb-topic", "/a", "--aux-topic", "/b", "--out-bag",
                                     w.existing], "exists already"),
        Case("max frames 0", [w.onnx, "--rgb", w.frames, "--max-frames", "0"], "expected an integer >= 1"),
        Case("negative skew", [w.onnx, "--rgb", w.frames, "--max-skew-ms", "-5"], "expected a number >= 0"),
        Case("SimCMF without clicks", [w.encoder, "--rgb", w.frames], "segments on clicks"),
        Case("GoPT with clicks", [w.onnx, "--rgb", w.frames, "--points", "3,4"], "clicks for SimCMF"),
        Case("depth units for a thermal model", [w.onnx, "--rgb", w.frames, "--depth-units", "0.001"],
             "for depth models"),
        Case("bf16 without OpenVINO", [w.onnx, "--rgb", w.frames, "--precision", "bf16"],
             "--precision is for --backend openvino"),
        Case("an unknown backend", [w.onnx, "--rgb", w.frames, "--backend", "tvm"], "invalid choice"),
    ]


def runtime_batch(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--rgb", w.frames, "--out", w.root / "o"], "no such file"),
        Case("a checkpoint", [w.pt, "--rgb", w.frames, "--out", w.root / "o"], "export the checkpoint first"),
        Case("a SimCMF encoder", [w.encoder, "--rgb", w.frames, "--out", w.root / "o"], "segments GoPT"),
        Case("missing frames", [w.onnx, "--rgb", w.missing("frames"), "--out", w.root / "o"], "no such file"),
        Case("output folder is a file", [w.onnx, "--rgb", w.frames, "--out", w.file], "is a file"),
        Case("output under a file", [w.onnx, "--rgb", w.frames, "--out", w.under_file("o")], "is a file, not a folder"),
        Case("batch size 0", [w.onnx, "--rgb", w.frames, "--out", w.root / "o", "--batch-size", "0"],
             "expected an integer >= 1"),
        Case("0 workers", [w.onnx, "--rgb", w.frames, "--out", w.root / "o", "--workers", "0"],
             "expected an integer >= 1"),
    ]


def benchmarks_latency(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--quick"], "no such file"),
        Case("results under a file", [w.onnx, "--quick", "--json", w.under_file("r.json")], "is a file, not a folder"),
        Case("folder where the results go", [w.onnx, "--quick", "--json", w.folder], "is a folder"),
        Case("plot of an unknown format", [w.onnx, "--quick", "--plot", w.root / "p.txt"], "a plot is written as"),
        Case("0 iterations", [w.onnx, "--min-iters", "0"], "expected an integer >= 1"),
        Case("negative warm-up", [w.onnx, "--warmup-s", "-1"], "expected a number >= 0"),
        Case("a SimCMF decoder", [w.decoder, "--quick", "--backend", "onnxruntime"], "a SimCMF decoder"),
        Case("not a model", [w.file, "--quick"], "unknown model file type"),
    ]


def benchmarks_accuracy(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--data", w.folder], "no such file"),
        Case("missing data set", [w.onnx, "--data", w.missing("d")], "no such folder"),
        Case("data set is a file", [w.onnx, "--data", w.file], "is a file"),
        Case("results under a file", [w.onnx, "--data", w.folder, "--json", w.under_file("a.json")],
             "is a file, not a folder"),
        Case("plot of an unknown format", [w.onnx, "--data", w.folder, "--plot", w.root / "p.txt"],
             "a plot is written as"),
        Case("0 frames", [w.onnx, "--data", w.folder, "--limit", "0"], "expected an integer >= 1"),
        Case("unknown backend", [w.onnx, "--data", w.folder, "--backend", "cuda"], "unknown backends"),
        Case("a SimCMF encoder", [w.encoder, "--data", w.folder], "a SimCMF model"),
        Case("no recognisable layout", [w.onnx, "--data", w.folder], "expected"),
    ]


def benchmarks_gpu_report(w: Work):
    return [
        Case("budget 0", ["--budget-s", "0"], "expected a number > 0"),
        Case("unknown stage", ["--stages", "kernels,warp"], "--stages: unknown"),
        Case("report folder is a file", ["--out", w.file], "is a file; the output is a folder"),
        Case("report folder under a file", ["--out", w.under_file("r")], "is a file, not a folder"),
    ]


def benchmarks_streams(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx"), "--quick"], "no such file"),
        Case("results under a file", [w.onnx, "--quick", "--json", w.under_file("r.json")], "is a file, not a folder"),
        Case("plot of an unknown format", [w.onnx, "--quick", "--plot", w.root / "p.txt"], "a plot is written as"),
        Case("0 cameras", [w.onnx, "--cameras", "0"], "expected an integer >= 1"),
        Case("0 s of capture", [w.onnx, "--duration-s", "0"], "expected a number > 0"),
        Case("missing recording", [w.onnx, "--source", w.missing("rgb")], "no such file"),
        Case("a SimCMF model", [w.encoder, "--quick"], "segments on clicks"),
    ]


def benchmarks_kernels(w: Work):
    return [
        Case("results under a file", ["--json", w.under_file("k.json")], "is a file, not a folder"),
        Case("batch 0", ["--batch", "0"], "expected an integer >= 1"),
        Case("0 ms of repetitions", ["--rep-ms", "0"], "expected an integer >= 1"),
    ]


def benchmarks_ort_profile(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx")], "no such file"),
        Case("results under a file", [w.onnx, "--json", w.under_file("p.json")], "is a file, not a folder"),
        Case("0 runs", [w.onnx, "--runs", "0"], "expected an integer >= 1"),
        Case("a checkpoint", [w.pt], "profiles .onnx models"),
        Case("not an ONNX model", [w.junk_onnx], "not a readable ONNX model"),
    ]


def benchmarks_batch_workers(w: Work):
    return [
        Case("missing model", [w.missing("m.onnx")], "no such file"),
        Case("results under a file", [w.onnx, "--json", w.under_file("b.json")], "is a file, not a folder"),
        Case("0 frames", [w.onnx, "--frames", "0"], "expected an integer >= 1"),
        Case("an RGB-D model", [w.depth_onnx, "--frames", "2"], "need an RGB-thermal one"),
    ]


def serving_triton_client(w: Work):
    return [
        Case("missing frame", ["--frame", w.missing("f.png")], "no such file"),
        Case("missing model to compare", ["--compare", w.missing("m.onnx")], "no such file"),
        Case("label map under a file", ["--out", w.under_file("l.png")], "is a file, not a folder"),
        Case("folder where the label map goes", ["--out", w.folder_named("l.png")], "is a folder"),
        Case("no server", ["--url", "127.0.0.1:9"], "cannot reach the server"),
        Case("rgb without aux", ["--rgb", w.frames], "--rgb and --aux go together"),
    ]


def demo(w: Work):
    return [
        Case("pictures folder is a file", ["--out", w.file, "--checkpoint", w.pt], "is a file"),
        Case("checkpoint under a file", ["--checkpoint", w.under_file("c.pt")], "is a file, not a folder"),
        Case("0 runs", ["--runs", "0"], "expected an integer >= 1"),
        Case("missing sample", ["--sample", w.missing("s.png"), "--checkpoint", w.pt], "no such file"),
        Case("not a checkpoint", ["--checkpoint", w.junk_pt, "--out", w.root / "d"], "not a readable PyTorch checkpoint"),
    ]


def models_demo_checkpoint(w: Work):
    return [
        Case("existing checkpoint", ["--tiny", "-o", w.pt], "--overwrite"),
        Case("checkpoint under a file", ["--tiny", "-o", w.under_file("c.pt")], "is a file, not a folder"),
        Case("folder where the checkpoint goes", ["--tiny", "-o", w.folder], "is a folder"),
    ]


def models_demo_simcmf(w: Work):
    return [
        Case("output folder is a file", ["-o", w.file], "is a file; the output is a folder"),
        Case("output folder under a file", ["-o", w.under_file("ck")], "is a file, not a folder"),
        Case("existing pair", ["-o", w.existing_pair], "--overwrite"),
    ]


def models_simcmf_checkpoint(w: Work):
    return [
        Case("missing checkpoint", [w.missing("s.pth")], "no such file"),
        Case("not a checkpoint", [w.junk_pt], "not a readable PyTorch checkpoint"),
        Case("a GoPT checkpoint", [w.pt], "SimCMF"),
    ]


ROWS = [
    Row("-m export.onnx", "export.onnx", export_onnx),
    Row("-m export.quantize", "export.quantize", export_quantize),
    Row("-m export.tensorrt", "export.tensorrt", export_tensorrt),
    Row("-m export.triton_repo", "export.triton_repo", export_triton_repo),
    Row("-m kernels.aot", "kernels.aot", kernels_aot),
    Row("-m runtime", "runtime.__main__", runtime_main),
    Row("-m runtime.batch", "runtime.batch.__main__", runtime_batch),
    Row("benchmarks/latency.py", "benchmarks.latency", benchmarks_latency),
    Row("benchmarks/streams.py", "benchmarks.streams", benchmarks_streams),
    Row("-m benchmarks.accuracy", "benchmarks.accuracy", benchmarks_accuracy),
    Row("-m benchmarks.gpu_report", "benchmarks.gpu_report", benchmarks_gpu_report),
    Row("benchmarks/kernels.py", "benchmarks.kernels", benchmarks_kernels),
    Row("benchmarks/ort_profile.py", "benchmarks.ort_profile", benchmarks_ort_profile),
    Row("benchmarks/batch_workers.py", "benchmarks.batch_workers", benchmarks_batch_workers),
    Row("-m serving.triton_client", "serving.triton_client", serving_triton_client),
    Row("demo.py", "demo", demo),
    Row("-m models.demo_checkpoint", "models.demo_checkpoint", models_demo_checkpoint),
    Row("-m models.demo_simcmf", "models.demo_simcmf", models_demo_simcmf),
    Row("-m models.simcmf_checkpoint", "models.simcmf_checkpoint", models_simcmf_checkpoint),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_gopt_models):
    from export.progress import Progress
    from export.simcmf_onnx import export_simcmf
    from test_simcmf import tiny_model

    simcmf = tmp_path_factory.mktemp("simcmf")
    export_simcmf(tiny_model(modality="rgbt"), simcmf / "s", 1, progress=Progress(2))
    from export.quantize import run as quantize

    for target, name in (("onnxruntime", "int8.onnx"), ("tensorrt", "int8.qdq.onnx")):
        assert quantize([str(tiny_gopt_models / "thermal.onnx"), "--int8", "--target", target, "--no-check", "-o",
                         str(simcmf / name)]) == 0
    w = Work(tmp_path_factory.mktemp("misuse"), tiny_gopt_models, simcmf).make()
    w.int8, w.int8_qdq = simcmf / "int8.onnx", simcmf / "int8.qdq.onnx"
    w.existing_pair = w.root / "pair"
    w.existing_pair.mkdir()
    from models.demo_simcmf import BASE_NAME

    (w.existing_pair / BASE_NAME).write_bytes(b"an earlier base checkpoint")
    return w


def files_under(root: Path) -> dict:
    """Every file below ``root`` with its size and time: a case may add none, nor change one."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def check_one_error_line(err: str, case: Case) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{case.what}: expected one error line, got:\n{err}"
    assert case.says in errors[0], f"{case.what}: {errors[0]!r} does not say {case.says!r}"


def cases() -> list:
    return [pytest.param(row, id=row.name.replace("-m ", ""), marks=row.marks) for row in ROWS]


@pytest.mark.parametrize("row", cases())
def test_misuse_gives_one_error_line(row, work, capsys, monkeypatch):
    monkeypatch.chdir(work.root)  # a tool's default outputs (demo_out/, checkpoints/) land in the work folder
    main = importlib.import_module(row.module).main
    for case in row.cases(work):
        before = files_under(work.root)
        code = main([str(a) for a in case.args])
        captured = capsys.readouterr()
        assert code == case.code, f"{row.name} {case.what}: exit status {code}\n{captured.err[-2000:]}"
        check_one_error_line(captured.err, case)
        assert files_under(work.root) == before, f"{row.name} {case.what}: a file was written or changed"


@pytest.mark.parametrize("row", cases())
def test_misuse_from_the_shell(row, work):
    """The first case of each row as a user runs it: a child process, its own interpreter."""
    case = row.cases(work)[0]
    before = files_under(work.root)
    r = subprocess.run([*row.command(), *map(str, case.args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == case.code, r.stderr[-2000:]
    check_one_error_line(r.stderr, case)
    assert files_under(work.root) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes files whatever their permissions")
def test_unreadable_input_and_unwritable_output(work, capsys):
    from runtime.__main__ import main

    locked = work.root / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o500)
    secret = work.root / "secret.onnx"
    secret.write_bytes(work.onnx.read_bytes())
    secret.chmod(0)
    try:
        assert main([str(work.onnx), "--rgb", str(work.frames), "--out", str(locked / "o")]) == 2
        check_one_error_line(capsys.readouterr().err, Case("", [], "permission denied"))
        assert main([str(secret), "--rgb", str(work.frames)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
        secret.chmod(0o600)


def test_a_bug_is_one_line_and_its_traceback_is_one_variable_away(capsys, monkeypatch):
    """An unexpected exception is a bug: exit status 70 and one line naming it; MMSEG_DEBUG=1
    prints its traceback too."""
    from runtime.cli import DEBUG_ENV, run_tool

    def broken(args):
        return {}["no such key"]

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_tool(broken, None, []) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unexpected KeyError at test_entry_points.py:")
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_tool(broken, None, []) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("error: unexpected KeyError")
    assert run_tool(lambda args: int("x"), None, []) == 2  # an expected error: still one line, with its traceback
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_and_termination_exit_codes(capsys):
    from runtime.cli import Terminated, run_tool

    def interrupted(args):
        raise KeyboardInterrupt

    def terminated(args):
        raise Terminated

    assert run_tool(interrupted, None, []) == 130 and capsys.readouterr().err == "interrupted\n"
    assert run_tool(terminated, None, []) == 143 and capsys.readouterr().err == "terminated\n"


def test_models_that_failed_their_check_are_warned_about(work, tmp_path, capsys):
    """NAME.unverified.onnx (a failed or unfinished export check) loads with a loud one-line
    warning in every tool that loads it, and a Python warning from Segmenter; an engine built
    from one says so too."""
    import json
    import shutil

    from runtime import Segmenter
    from runtime.metadata import UnverifiedModelWarning, unverified_reason

    tools = {"runtime.__main__": lambda m: [m, "--rgb", work.frames, "--quiet"],
             "export.triton_repo": lambda m: [m, "-o", tmp_path / "repo"],
             "benchmarks.ort_profile": lambda m: [m, "--runs", "1"],
             "export.quantize": lambda m: [m, "--int8", "--no-check", "-o", tmp_path / "q.onnx"]}
    for i, (module, argv) in enumerate(tools.items()):
        model = tmp_path / f"m{i}.unverified.onnx"
        shutil.copy(work.onnx, model)
        assert importlib.import_module(module).main([str(a) for a in argv(model)]) == 0
        warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
        assert len(warned) == 1 and "has not passed its export check" in warned[0], (module, warned)
    model = tmp_path / "api.unverified.onnx"
    shutil.copy(work.onnx, model)
    with pytest.warns(UnverifiedModelWarning, match="has not passed its export check"):
        Segmenter(model).close()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    (tmp_path / "m.engine.json").write_text(json.dumps({"onnx": {"file": "m.unverified.onnx"}}))
    assert "built from m.unverified.onnx" in unverified_reason(engine)
    assert unverified_reason(work.onnx) is None


def test_one_output_policy(tmp_path):
    """runtime/cli.py: missing parents are made; an output under a file, a folder where a file
    goes (and the reverse) and an existing file without the tool's rule are refused."""
    from runtime.cli import UsageError, output_dir, output_file

    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert output_file(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert (tmp_path / "new" / "deeper").is_dir() and not (tmp_path / "new" / "deeper" / "out.json").exists()
    for call, says in ((lambda: output_file(a_file / "x.json"), "is a file, not a folder"),
                       (lambda: output_file(a_file / "a" / "b.json"), "is a file, not a folder"),
                       (lambda: output_file(tmp_path), "is a folder"),
                       (lambda: output_file(a_file), "exists already"),
                       (lambda: output_file(a_file, flag="--overwrite"), "or pass --overwrite"),
                       (lambda: output_dir(a_file), "is a file; the output is a folder"),
                       (lambda: output_dir(a_file / "d"), "is a file, not a folder"),
                       (lambda: output_dir(tmp_path / "new", exist_ok=False), "exists already")):
        with pytest.raises(UsageError, match=says):
            call()
    assert output_file(a_file, replace=True) == a_file and a_file.read_text() == "x"  # checked, not touched
    assert output_dir(tmp_path / "made" / "out") == tmp_path / "made" / "out"
    assert (tmp_path / "made").is_dir() and not (tmp_path / "made" / "out").exists()


def test_two_inputs_with_one_output_name_are_refused_before_the_first_frame(work, tmp_path, capsys):
    """`python -m runtime --rgb DIR --out OUT` with a.png and a.tiff in DIR wrote 4 images and
    left 2; two folders paired by name with a.png and a.tiff on one side guessed a partner."""
    import cv2

    from runtime.__main__ import main

    frames = tmp_path / "frames"
    frames.mkdir()
    img = cv2.imread(str(work.frames), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(frames / "a.png"), img)
    cv2.imwrite(str(frames / "a.tiff"), np.roll(img, 7, axis=1))
    cv2.imwrite(str(frames / "b.png"), img)
    assert main([str(work.onnx), "--rgb", str(frames), "--out", str(tmp_path / "out")]) == 2
    check_one_error_line(capsys.readouterr().err, Case("", [], "a.tiff map to one output name 'a'"))
    assert not (tmp_path / "out").exists()
    rgb, aux = tmp_path / "rgb", tmp_path / "aux"
    rgb.mkdir(), aux.mkdir()
    cv2.imwrite(str(rgb / "a.png"), img[..., :3])
    cv2.imwrite(str(aux / "a.png"), img[..., 3])
    cv2.imwrite(str(aux / "a.jpg"), img[..., 3])
    assert main([str(work.onnx), "--rgb", str(rgb), "--aux", str(aux)]) == 2
    check_one_error_line(capsys.readouterr().err, Case("", [], "map to one pairing name 'a'"))
