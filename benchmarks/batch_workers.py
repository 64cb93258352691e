"""Frames per second of ``python -m runtime.batch`` with 1 and 2 inference workers, side by side.

    python benchmarks/batch_workers.py MODEL.onnx [--frames 240] [--repeats 3] [--batch-size 4]
        [--cpus N] [--json OUT]

A local Ray (``--cpus``, default all of this machine's) segments ``--frames`` copies of the
bundled MFNet frames (640x480 BGR + thermal) once per worker count, interleaved
``--repeats`` times, each into a fresh output folder. Frames/s is the whole run's: listing,
actor start (model load), decoding, preprocessing, inference and writing the label PNGs.
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.cli import ArgumentParser, check_result_outputs, count, input_file, run_tool  # noqa: E402

SAMPLES = [ROOT / "data" / "samples" / f for f in ("mfnet_01234N.png", "mfnet_01477D.png")]


def parse_args(argv=None):
    p = ArgumentParser(prog="python benchmarks/batch_workers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="an exported GoPT RGB-thermal .onnx")
    p.add_argument("--frames", type=count, default=240)
    p.add_argument("--repeats", type=count, default=3)
    p.add_argument("--batch-size", type=count, default=4)
    p.add_argument("--cpus", type=count, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (replaces an earlier file)")
    args = p.parse_args(argv)
    input_file(args.model, "an exported GoPT model")
    check_result_outputs(args.json)
    return args


def main(argv=None) -> int:
    return run_tool(lambda args: benchmark_command(args, argv), parse_args, argv)


def benchmark_command(args, argv) -> int:
    from runtime.batch.job import model_info, segment_recording
    from runtime.files import write_text_atomic

    info = model_info(args.model)  # an exported GoPT model, read before Ray starts
    if info.config.get("modality") != "thermal" or info.config.get("aux_channels") != 1:
        raise ValueError(f"{args.model}: an RGB-{info.config.get('modality')} model; the bundled MFNet frames this "
                         "benchmark segments need an RGB-thermal one")
    try:
        import ray
    except ImportError:
        raise ValueError("Ray Data is needed: pip install 'mmseg-deploy[fleet]'") from None

    work = Path(tempfile.mkdtemp(prefix="batch_workers_"))
    try:
        frames = work / "frames"
        frames.mkdir()
        for i in range(args.frames):
            shutil.copy(SAMPLES[i % 2], frames / f"frame_{i:05d}.png")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        fps = {1: [], 2: []}
        try:
            for r in range(args.repeats):
                for workers in (1, 2):
                    report = segment_recording(args.model, work / f"out_{r}_{workers}", rgb=frames, workers=workers,
                                               batch_size=args.batch_size)
                    if report.segmented != args.frames:
                        raise RuntimeError(f"{report.segmented} of {args.frames} frames segmented: {report}")
                    fps[workers].append(report.fps)
                    print(f"repeat {r}: {workers} worker(s): {report.fps:.1f} frames/s ({report.seconds:.1f} s)",
                          flush=True)
            cpus = ray.cluster_resources().get("CPU")
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {w: statistics.median(v) for w, v in fps.items()}
    ratio = median[2] / median[1]
    print(f"median: 1 worker {median[1]:.1f} frames/s, 2 workers {median[2]:.1f} frames/s, ratio {ratio:.2f}")
    if args.json:
        write_text_atomic(args.json, json.dumps({
            "command": "python benchmarks/batch_workers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ray_cpus": cpus,
            "frames": args.frames, "batch_size": args.batch_size, "fps": fps,
            "median_fps": median, "ratio_2_over_1": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
