"""Offline segmentation of recorded frames with Ray Data, on one machine or a cluster.

    python -m runtime.batch gopt_rgbt.onnx --rgb recordings/rgb --aux recordings/thermal --out seg/
    python -m runtime.batch gopt_rgbt.engine --rgb mfnet_pngs/ --out seg/ --address auto --gpus-per-worker 1

The command line of the job in ``job.py`` (the pipeline, its shards, workers and index):
the model, the inputs and the output folder are checked before Ray starts.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import ArgumentParser, count, interrupt_code, output_dir, positive, run_tool, seconds, sigterm_as_interrupt
from .job import _install_hint, list_shards, model_info, segment_recording


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime.batch", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exported GoPT model: .onnx, or .engine / .plan with its .json sidecar")
    p.add_argument("--rgb", help="RGB frames: a folder of images or videos, an image, a video; or a folder / file "
                                 "of MFNet 4-channel PNGs (BGR + thermal) without --aux")
    p.add_argument("--aux", help="auxiliary frames (thermal / depth / ...) paired with --rgb by file name")
    p.add_argument("--bag", help="a ROS bag (or a folder of bags) instead of --rgb / --aux")
    p.add_argument("--rgb-topic", help="the RGB image topic in --bag")
    p.add_argument("--aux-topic", help="the auxiliary image topic in --bag")
    p.add_argument("--out", required=True, help="output folder: labels/NAME.png and index.parquet (resumed when it "
                                                "exists: frames whose label map exists are skipped)")
    p.add_argument("--workers", type=count, default=None,
                   help="inference actors (default: one per GPU with --gpus-per-worker, else 1)")
    p.add_argument("--gpus-per-worker", type=seconds, default=None, metavar="GPUS",
                   help="GPUs each actor reserves (default: 1 when the cluster has GPUs, else 0: CPU)")
    p.add_argument("--batch-size", type=count, default=8, help="frames per inference call")
    p.add_argument("--threads", type=count, default=None,
                   help="ONNX Runtime CPU threads per actor (default: the CPUs the actor reserves)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto': the cluster this node belongs to); "
                                                   "default: a local Ray on this machine")
    p.add_argument("--overwrite", action="store_true", help="segment frames whose label map exists again")
    p.add_argument("--match", choices=("name", "timestamp"), default="name",
                   help="pairing of two image folders: by file name or by the timestamp in the names")
    p.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr")
    p.add_argument("--depth-units", type=positive, default=None,
                   help="metres per count of uint16 depth frames (default: the model's, else 0.001)")
    p.add_argument("--resize-aux", action="store_true", help="accept aux frames of another size than the RGB frames")
    args = p.parse_args(argv)
    if args.bag and not (args.rgb_topic and args.aux_topic):
        p.error("--bag needs --rgb-topic and --aux-topic")
    if not args.bag and not args.rgb:
        p.error("pass --rgb (and --aux) or --bag")
    return args


def run(args) -> int:
    """The command: the model, the inputs and the output folder are checked before Ray starts."""
    model_info(args.model)
    list_shards(args.rgb, args.aux, args.bag, args.match)
    output_dir(args.out)
    try:
        import ray
    except ImportError:
        raise ValueError(_install_hint()) from None
    connected = ray.is_initialized()
    if not connected:
        ray.init(address=args.address, include_dashboard=False if args.address is None else None,
                 log_to_driver=False)
    try:
        with sigterm_as_interrupt():  # ray.init installs its own SIGTERM handler (sys.exit)
            gpus = ray.cluster_resources().get("GPU", 0.0)
            gpus_per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
            workers = args.workers or (max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1)
            report = segment_recording(args.model, args.out, args.rgb, args.aux, args.bag, args.rgb_topic,
                                       args.aux_topic, workers, gpus_per_worker, args.batch_size, args.overwrite,
                                       args.match, args.color_order, args.depth_units, args.resize_aux, args.threads)
        code = 0
    except KeyboardInterrupt as e:
        if not hasattr(e, "report"):
            raise
        report, code = e.report, interrupt_code(e)
        print("interrupted: the index lists the frames done; the same command resumes", file=sys.stderr)
    finally:
        if not connected:
            ray.shutdown()
    print(f"{report.segmented} frames segmented, {report.skipped} skipped, {report.unpaired} without a partner "
          f"(see index.parquet), {report.existing} already done; {report.fps:.1f} frames/s over "
          f"{report.seconds:.1f} s -> {args.out}")
    return code


def main(argv=None) -> int:
    return run_tool(run, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
