"""Everything a CUDA GPU can tell about this project, in one command and a fixed time budget.

    python -m benchmarks.gpu_report [--budget-s 480] [--out DIR] [--dry-run] [--stages a,b,...]

Stages, in this order, each given its share of the budget (time a stage leaves unused goes
to the stages after it) and stopped when that is spent:

 1. environment: GPU, compute capability, memory, driver, CUDA, library versions, commit;
 2. kernels: the fused Triton kernels against the PyTorch reference (parity), then timed
    against eager and ``torch.compile`` and the measured copy bandwidth (benchmarks/kernels.py);
 3. native: the C library built with CMake for this GPU, through ctypes against the
    reference, and its launch overhead against the Python-launched Triton kernels;
 4. gopt: GoPT-B end to end (the demo checkpoints, RGB-T 480x640 and RGB-D 416x512) in
    PyTorch fp32 / fp16 / bf16 with and without the Triton kernels, CUDA graphs and
    ``torch.compile``, batch 1 / 8 / 32; the SimCMF ViT-B encoder (benchmarks/latency.py);
 5. streams: 1, 2 and 4 camera pairs at 30 Hz (benchmarks/streams.py);
 6. ort_trt: ONNX Runtime CUDA and TensorRT when installed, else one line each;
 7. gpu_tests: ``pytest -m gpu`` and the kernel tests on the GPU.

After every stage (and every few seconds inside the long ones) ``DIR/report.json`` (every
figure with its command, versions and date), ``DIR/report.md`` (the tables) and the plots
are rewritten, so a run killed at any point leaves what it measured. A stage whose
requirement is missing (no GPU, a package not installed) is one line saying which; a stage
that fails is recorded with its error and the next one runs. ``--dry-run`` prints the plan:
each stage's share of the budget and what it is missing here. Nothing needs installing
beyond PyTorch with CUDA, Triton, ONNX, ONNX Runtime, OpenCV and pytest
(benchmarks/gpu_report.md). Exit status: 0 when every stage ran, 1 when one failed,
2 when there is no GPU (the report says so and holds the environment only).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_report_output as output  # noqa: E402
from benchmarks import gpu_stages as stages  # noqa: E402
from benchmarks.gpu_budget import Budget, Context, OutOfTime  # noqa: E402

DEFAULT_BUDGET_S = 480.0
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_report"


# ---- what a stage needs ---------------------------------------------------------------------------

def need_module(name: str, package: str | None = None) -> Callable[[], str | None]:
    def check():
        return None if importlib.util.find_spec(name) else f"not installed: {package or name}"
    check.__doc__ = f"Python package {package or name}"
    return check


def need_program(*names: str) -> Callable[[], str | None]:
    def check():
        return None if any(shutil.which(n) for n in names) else f"not installed: {' or '.join(names)}"
    check.__doc__ = f"program {' or '.join(names)}"
    return check


def need_gpu() -> str | None:
    """A CUDA GPU that PyTorch sees."""
    if importlib.util.find_spec("torch") is None:
        return "no CUDA GPU: PyTorch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA GPU: torch.cuda.is_available() is False (PyTorch {torch.__version__})"
    return None


@dataclass
class Stage:
    name: str
    title: str
    share: float
    run: Callable  # run(ctx: Context) -> None, filling ctx.result
    needs: tuple = ()
    command: str = ""  # the standalone commands this stage stands for
    optional: Callable | None = None  # () -> lines for optional parts it will report as missing

    def missing(self) -> list[str]:
        """One line per requirement that is not met here."""
        return [why for why in (check() for check in self.needs) if why]


TORCH = need_module("torch")
TRITON = need_module("triton")
CV2 = need_module("cv2", "opencv-python-headless")
PYTEST = need_module("pytest")

STAGES = (
    Stage("environment", "Environment", 0.02, stages.environment, (),
          "nvidia-smi; python -c 'import torch; print(torch.cuda.get_device_properties(0))'"),
    Stage("kernels", "Fused Triton kernels against the reference", 0.24, stages.kernels,
          (TORCH, TRITON, need_gpu), "python benchmarks/kernels.py --batch 1,8,32 --seq 196,1200,4096 "
          "--groups 9,40,150 --kernels group_merge,prompt_inject --warmup-ms 10 --rep-ms 40"),
    Stage("native", "The C library (CMake, AOT kernels for this GPU) through ctypes", 0.12, stages.native,
          (TORCH, TRITON, need_program("cmake"), need_program("ninja", "make"), need_program("cc", "gcc", "clang"),
           need_gpu), "cmake -S . -B build -G Ninja -DGOPT_CUDA_ARCHS=<this GPU> -DGOPT_PTX_ARCH= && "
                      "cmake --build build; kernels.native.NativeKernels"),
    Stage("gopt", "GoPT-B and the SimCMF encoder end to end in PyTorch", 0.33, stages.gopt,
          (TORCH, TRITON, CV2, need_gpu), "python benchmarks/latency.py MODEL --compute-only --backend "
          "torch,triton,compile --precision fp32,fp16,bf16 --batch 1,8,32 [--cuda-graph]"),
    Stage("streams", "Streams at 30 Hz: 1, 2 and 4 camera pairs", 0.13, stages.streams,
          (TORCH, CV2, need_gpu), "python benchmarks/streams.py MODEL --cameras N --duration-s S"),
    Stage("ort_trt", "ONNX Runtime CUDA and TensorRT", 0.04, stages.ort_trt, (need_gpu,),
          "python benchmarks/latency.py MODEL --backend onnxruntime|tensorrt ...",
          lambda: [why for why in (stages.onnxruntime_cuda(), stages.tensorrt_installed(), stages.export_missing())
                   if why]),
    Stage("gpu_tests", "GPU tests", 0.12, stages.gpu_tests, (PYTEST, need_gpu),
          "python -m pytest -q -m gpu; python -m pytest -q tests/test_kernels.py"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
PLOTS = need_module("matplotlib")


# ---- running ------------------------------------------------------------------------------------

def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def run_stage(stage: Stage, allot_s: float, report: dict, shared: dict, save, out_dir: Path) -> dict:
    """Run one stage within ``allot_s`` seconds: its section of ``report`` gets status ok /
    partial / skipped / error with a one-line reason; an unexpected exception is recorded,
    never raised (KeyboardInterrupt is, after the section is written)."""
    result = next(r for r in report["stages"] if r["name"] == stage.name)
    result.update(status="running", allotted_s=round(allot_s, 1), started=_now())
    start = time.monotonic()
    print(f"\n== {stage.name}: {stage.title} ({allot_s:.0f} s)", flush=True)
    try:
        missing = stage.missing()
        if missing:
            result.update(status="skipped", reason=one_line("; ".join(missing)))
        else:
            ctx = Context(deadline=start + allot_s, result=result, shared=shared, save=save, out_dir=out_dir)
            stage.run(ctx)
            if result["status"] == "running":
                result["status"] = "ok"
    except OutOfTime as e:
        result.update(status="partial", reason=one_line(str(e)))
    except KeyboardInterrupt:
        result.update(status="error", reason="interrupted (SIGINT / SIGTERM)")
        raise
    except BaseException as e:  # noqa: BLE001 - one failing stage must not cost the others
        if isinstance(e, SystemExit) and e.code in (0, None):
            result["status"] = "ok"
        else:
            result.update(status="error", reason=one_line(f"{type(e).__name__}: {e}"),
                          traceback=traceback.format_exc(limit=8).splitlines()[-12:])
    finally:
        result["seconds"] = round(time.monotonic() - start, 1)
        if result.get("reason"):
            print(f"  {result['status']}: {result['reason']}", flush=True)
    return result


def new_report(argv: list[str], budget_s: float, plan: list[Stage]) -> dict:
    return {"format": 1, "command": " ".join(["python -m benchmarks.gpu_report", *argv]), "started": _now(),
            "finished": None, "budget_s": budget_s,
            "stages": [{"name": s.name, "title": s.title, "share": s.share, "command": s.command,
                        "status": "pending"} for s in plan]}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run(plan: list[Stage], budget: Budget, out_dir: Path, argv: list[str]) -> dict:
    report = new_report(argv, budget.total_s, plan)
    shared: dict = {}
    plots = PLOTS() is None

    def save(with_plots: bool = False):
        output.write(report, out_dir, plots=plots and with_plots)

    save()
    try:
        for i, stage in enumerate(plan):
            allot = budget.allot([s.share for s in plan[i:]])
            run_stage(stage, allot, report, shared, save, out_dir)
            if stage.name == "environment":
                report["environment"] = shared.get("environment", {})
            save(with_plots=True)
    finally:
        report["finished"] = _now()
        save(with_plots=True)
    return report


def exit_status(report: dict) -> int:
    if any(s["status"] == "error" for s in report["stages"]):
        return 1
    return 2 if not (report.get("environment") or {}).get("gpu") else 0


# ---- plan and command line ------------------------------------------------------------------------

def plan_lines(plan: list[Stage], budget_s: float) -> list[str]:
    total = sum(s.share for s in plan)
    lines = [f"GPU report plan: {budget_s:.0f} s budget, {len(plan)} stages (a stage's unused time goes to "
             "the later ones)", f"{'#':>2}  {'stage':<12}{'share':>6}{'est. s':>8}  ready here?"]
    for i, s in enumerate(plan, 1):
        missing = s.missing()
        state = "ready" if not missing else "missing: " + "; ".join(missing)
        lines.append(f"{i:>2}  {s.name:<12}{s.share / total:>6.0%}{budget_s * s.share / total:>8.0f}  {state}")
        lines += [f"{'':<32}reports as a row: {line}" for line in (s.optional() if s.optional else [])]
    plots = PLOTS()
    lines.append(f"    plots: {'ready' if plots is None else 'missing: ' + plots + ' (tables and JSON are written)'}")
    return lines


def parse_args(argv):
    from runtime.cli import ArgumentParser, positive

    ap = ArgumentParser(prog="python -m benchmarks.gpu_report", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=positive, default=DEFAULT_BUDGET_S,
                    help=f"seconds for all stages together (default {DEFAULT_BUDGET_S:.0f})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for report.json, report.md and the plots")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and what each stage misses here")
    ap.add_argument("--stages", default=",".join(STAGE_NAMES),
                    help=f"comma list, run in the order above; environment always runs (default all: "
                         f"{','.join(STAGE_NAMES)})")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.stages.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown or not names:
        ap.error(f"--stages: unknown {unknown}; choose from {','.join(STAGE_NAMES)}")
    args.plan = [s for s in STAGES if s.name in names or s.name == "environment"]  # later stages read it
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def report_command(args) -> int:
    from runtime.cli import interrupt_code, output_dir

    if args.dry_run:
        print("\n".join(plan_lines(args.plan, args.budget_s)))
        return 0
    output_dir(args.out)
    budget = Budget(args.budget_s)
    try:
        report = run(args.plan, budget, args.out, args.argv)
    except KeyboardInterrupt as e:  # SIGTERM too (the runner raises it in the main thread)
        print(f"\ninterrupted; what was measured is in {args.out}", file=sys.stderr)
        return interrupt_code(e)
    print("\n" + "\n".join(output.summary_lines(report)))
    print(f"\nwrote {args.out / 'report.json'}, {args.out / 'report.md'} and the plots "
          f"({budget.total_s - budget.left():.0f} s; the tables are in report.md)")
    return exit_status(report)


def main(argv=None) -> int:
    """The command; errors are one line and exit statuses as every tool's (runtime/cli.py)."""
    from runtime.cli import run_tool

    return run_tool(report_command, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
