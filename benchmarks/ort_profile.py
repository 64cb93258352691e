"""Where ONNX Runtime spends a model's time on the CPU, by operator type, from ONNX Runtime's
own profiler (``SessionOptions.enable_profiling``), with the session settings the runtime uses.

    python benchmarks/ort_profile.py MODEL.onnx [--runs 3] [--top 15] [--threads N] [--json OUT]

MODEL.onnx: any model from ``python -m export.onnx`` or ``python -m export.quantize``
(fp32, int8, uint8-input); its inputs are filled from the metadata's shapes and dtypes
(random values; a dynamic batch axis is 1). Prints per operator type the time per run and
its share, after one untimed warm-up run. Profiling adds overhead of its own: compare
shares between models, and take end-to-end times from benchmarks/latency.py.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.cli import ArgumentParser, check_result_outputs, count, input_file, natural, run_tool  # noqa: E402
from runtime.files import write_text_atomic  # noqa: E402  (after the path insert)
from runtime.metadata import read_onnx_info, warn_if_unverified  # noqa: E402


def random_feeds(info, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in info.inputs:
        shape = [1 if isinstance(d, str) else d for d in spec.shape]
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "ui":
            feeds[spec.name] = rng.integers(0, min(np.iinfo(dtype).max, 255) + 1, shape).astype(dtype)
        else:
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def op_times(path: Path, runs: int, threads: int = 0) -> dict[str, float]:
    """Milliseconds per run by operator type (kernel time of every node, summed)."""
    import onnxruntime as ort

    from runtime.backends import plugin_ops
    from runtime.backends.ort_backend import DISABLED_OPTIMIZERS

    info = read_onnx_info(path)
    feeds = random_feeds(info)
    with tempfile.TemporaryDirectory(prefix="ort_profile.") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        plugin_ops.session_options(opts, info.plugins)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        session.run(None, feeds)  # warm-up, not profiled
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        for _ in range(runs + 1):  # the first profiled run is the new session's own warm-up
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_run = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_run[event["args"]["op_name"]].append(event["dur"])
    # Every run records the same nodes in the same order: drop the first run's share, average the rest.
    totals = {op: sum(d[len(d) // (runs + 1):]) / runs / 1000 for op, d in per_run.items()}
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def parse_args(argv=None):
    ap = ArgumentParser(prog="python benchmarks/ort_profile.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=count, default=3, help="profiled runs after the warm-up (default 3)")
    ap.add_argument("--top", type=count, default=15, help="operator types to print (default 15)")
    ap.add_argument("--threads", type=natural, default=0, help="intra-op threads (default 0: ONNX Runtime's choice)")
    ap.add_argument("--json", type=Path, help="write the full table as JSON (replaces an earlier file)")
    args = ap.parse_args(argv)
    input_file(args.model, "an ONNX model")
    check_result_outputs(args.json)
    return args


def profile_command(args) -> int:
    if args.model.suffix.lower() != ".onnx":
        raise ValueError(f"{args.model}: ONNX Runtime profiles .onnx models (python -m export.onnx writes them)")
    read_onnx_info(args.model)  # a file without the project's metadata is refused before any work
    warn_if_unverified(args.model)
    times = op_times(args.model, args.runs, args.threads)
    total = sum(times.values())
    print(f"{args.model.name}: {total:.1f} ms of kernel time per run ({args.runs} profiled runs)")
    for op, ms in list(times.items())[:args.top]:
        print(f"  {op:<28} {ms:9.1f} ms  {100 * ms / total:5.1f}%")
    if args.json:
        write_text_atomic(args.json, json.dumps({"model": str(args.model), "runs": args.runs,
                                                 "ms_per_run": times}, indent=1))
    return 0


def main(argv=None) -> int:
    return run_tool(profile_command, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
