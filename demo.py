"""The main job, end to end on the bundled default.

    python demo.py [--modality thermal|depth] [--out demo_out] [--checkpoint PATH] [--runs 5]

1. writes the demo GoPT checkpoint (ViT-B; RGB-Thermal with 9 MFNet classes, or with
   ``--modality depth`` RGB-Depth with 37 SUN RGB-D classes; seeded random weights: it
   exercises the pipeline, its label maps mean nothing);
2. exports it to ONNX and checks the export against PyTorch (`python -m export.onnx`);
3. runs `runtime.Segmenter` on the bundled real MFNet RGB-Thermal night frame (depth: the
   ESANet RGB-D frame) with each backend this machine has, prints a timing table;
4. writes the label map (labels.png: one class index per pixel, uint8) and an overlay with
   a legend of the classes present (overlay.png) to ``--out`` (RGB-D: labels_rgbd.png and
   overlay_rgbd.png, so that the two demos keep their own pictures).

A second run reuses the checkpoint, and the ONNX export when it was written from this
checkpoint (it is checked again, not exported again).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

from models.demo_checkpoint import DEFAULT_PATHS, UNTRAINED_NOTE, write_demo_checkpoint
from runtime import Segmenter
from runtime.cli import ArgumentParser, count, input_file, output_dir, output_file, run_tool
from runtime.colors import class_names, overlay
from runtime.files import write_image_atomic

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "samples")
SAMPLE = os.path.join(SAMPLES, "mfnet_01234N.png")
DEPTH_SAMPLE = (os.path.join(SAMPLES, "esanet_rgb.png"), os.path.join(SAMPLES, "esanet_depth.png"))


def time_backend(seg: Segmenter, bgr, aux, runs: int):
    """Warm-up, then ``runs`` timed runs; prints each run's time as it ends."""
    print(f"  {seg.backend}: warm-up", end="", flush=True)
    t0 = time.perf_counter()
    seg.run(bgr, aux)  # first-call allocations and graph initialisation
    print(f" {time.perf_counter() - t0:.1f} s; runs", end="", flush=True)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        labels = seg.run(bgr, aux)
        times.append(time.perf_counter() - t0)
        print(f" {i + 1}/{runs} {times[-1]:.2f} s", end="," if i + 1 < runs else "\n", flush=True)
    return labels, times


PICTURES = {"thermal": ("labels.png", "overlay.png"), "depth": ("labels_rgbd.png", "overlay_rgbd.png")}


def parse_args(argv=None):
    ap = ArgumentParser(prog="python demo.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=sorted(DEFAULT_PATHS), default="thermal",
                    help="thermal: RGB-T on an MFNet frame; depth: RGB-D on the ESANet frame")
    ap.add_argument("--checkpoint", default=None, help="default: checkpoints/gopt_demo_rgbt.pt (depth: _rgbd.pt); "
                    "written when missing")
    ap.add_argument("--sample", default=SAMPLE, help="MFNet 4-channel PNG (BGR + thermal), for --modality thermal")
    ap.add_argument("--out", default="demo_out", help="folder for the pictures (RGB-T: labels.png, overlay.png; "
                    "RGB-D: labels_rgbd.png, overlay_rgbd.png), replaced on every run")
    ap.add_argument("--runs", type=count, default=5)
    args = ap.parse_args(argv)
    args.checkpoint = args.checkpoint or DEFAULT_PATHS[args.modality]
    if args.modality == "thermal":
        input_file(args.sample, "an MFNet 4-channel PNG")
    if not os.path.exists(args.checkpoint):
        output_file(args.checkpoint)
    else:
        input_file(args.checkpoint, "a gopt/1 checkpoint")
    output_dir(args.out)
    output_file(onnx_path_of(args.checkpoint), replace=True)
    return args


def onnx_path_of(checkpoint: str) -> str:
    return os.path.splitext(checkpoint)[0] + ".onnx"


def exported_from(checkpoint: str, onnx_path: str) -> bool:
    """Whether ``onnx_path`` is this demo's export of ``checkpoint`` as it is now: written
    after the checkpoint, fp32 on float inputs with batch 1 and standard ops, and carrying
    the checkpoint's configuration. Then the demo checks it again instead of exporting."""
    from models.checkpoint import read_torch_file
    from runtime.metadata import ModelFileError, read_onnx_info

    if not os.path.isfile(onnx_path) or os.path.getmtime(onnx_path) < os.path.getmtime(checkpoint):
        return False
    try:
        info = read_onnx_info(onnx_path)
    except ModelFileError:
        return False
    plain = (info.kind == "gopt" and info.precision == "fp32" and info.frame_input is None and not info.plugins
             and info.inputs[0].shape[0] == 1)
    if not plain:
        return False
    import json

    from models.gopt import GoPTConfig

    config = read_torch_file(checkpoint).get("config", {})
    try:
        return json.loads(json.dumps(GoPTConfig(**config).to_dict())) == info.config
    except (TypeError, ValueError):
        return False


def main(argv=None) -> int:
    return run_tool(demo, parse_args, argv)


def demo(args) -> int:
    print("== 1. checkpoint")
    if not os.path.exists(args.checkpoint):
        write_demo_checkpoint(args.checkpoint, args.modality)
    else:
        print(f"using {args.checkpoint}")

    print("\n== 2. export to ONNX, checked against PyTorch")
    onnx_path = onnx_path_of(args.checkpoint)
    from export.onnx import parse_args as export_args, run as export

    flags = []
    if exported_from(args.checkpoint, onnx_path):
        print(f"{onnx_path} was exported from this checkpoint: checking it again instead of exporting "
              "(delete it to export anew)")
        flags = ["--check-only"]
    status = export(export_args([args.checkpoint, "-o", onnx_path, *flags]))
    if status != 0:  # 1: beyond tolerance (said above), 2: a bad checkpoint (one line above)
        return status

    if args.modality == "depth":
        print("\n== 3. Segmenter on the real RGB-Depth frame")
        bgr, aux = cv2.imread(DEPTH_SAMPLE[0], cv2.IMREAD_COLOR), cv2.imread(DEPTH_SAMPLE[1], cv2.IMREAD_UNCHANGED)
    else:
        print("\n== 3. Segmenter on the real RGB-Thermal frame")
        frame = cv2.imread(args.sample, cv2.IMREAD_UNCHANGED)
        if frame is None or frame.ndim != 3 or frame.shape[2] != 4:
            raise ValueError(f"{args.sample}: expected an MFNet 4-channel PNG (BGR + thermal)")
        bgr, aux = frame[..., :3], frame[..., 3]
    rows, results = [], {}
    for path in (args.checkpoint, onnx_path):
        seg = Segmenter(path)
        print(seg)
        labels, times = time_backend(seg, bgr, aux, args.runs)
        results[seg.backend] = labels
        rows.append((seg.backend, seg.device, seg.info.precision, times))
    reference = results["torch"]
    cfg = seg.config
    print(f"\n{'backend':<14}{'device':<8}{'precision':<11}{'runs':>5}{'min ms':>10}{'median ms':>11}"
          f"{'labels = torch':>16}")
    for backend, device, precision, times in rows:
        agree = 100 * float((results[backend] == reference).mean())
        print(f"{backend:<14}{device:<8}{precision:<11}{len(times):>5}{1e3 * min(times):>10.1f}"
              f"{1e3 * float(np.median(times)):>11.1f}{agree:>15.2f}%")
    print(f"(end to end: {bgr.shape[1]}x{bgr.shape[0]} uint8 frames in, label map out; "
          f"model input {cfg['img_size'][0]}x{cfg['img_size'][1]})")

    print("\n== 4. pictures")
    labels = results["onnxruntime"]
    names = class_names(cfg)
    labels_png, overlay_png = (os.path.join(args.out, name) for name in PICTURES[args.modality])
    write_image_atomic(labels_png, labels)
    write_image_atomic(overlay_png, overlay(bgr, labels, cfg["num_classes"], names))
    counts = np.bincount(labels.ravel(), minlength=cfg["num_classes"])
    print("class pixels: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts) if c))
    print(f"wrote {labels_png} and {overlay_png}")
    if cfg.get("untrained"):
        print(f"note: {UNTRAINED_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
