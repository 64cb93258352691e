"""The main job, end to end on the bundled default.

    python demo.py [--modality thermal|depth] [--out demo_out] [--checkpoint PATH] [--runs 5]

1. writes the demo GoPT checkpoint (ViT-B; RGB-Thermal with 9 MFNet classes, or with
   ``--modality depth`` RGB-Depth with 37 SUN RGB-D classes; seeded random weights: it
   exercises the pipeline, its label maps mean nothing);
2. exports it to ONNX and checks the export against PyTorch (`python -m export.onnx`);
3. runs `runtime.Segmenter` on the bundled real MFNet RGB-Thermal night frame (depth: the
   ESANet RGB-D frame) with each backend this machine has, prints a timing table;
4. writes the label map (labels.png: one class index per pixel, uint8) and an overlay with
   a legend of the classes present (overlay.png) to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np

from models.demo_checkpoint import DEFAULT_PATHS, UNTRAINED_NOTE, main as write_demo_checkpoint
from runtime import Segmenter
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=sorted(DEFAULT_PATHS), default="thermal",
                    help="thermal: RGB-T on an MFNet frame; depth: RGB-D on the ESANet frame")
    ap.add_argument("--checkpoint", default=None, help="default: checkpoints/gopt_demo_rgbt.pt (depth: _rgbd.pt)")
    ap.add_argument("--sample", default=SAMPLE, help="MFNet 4-channel PNG (BGR + thermal), for --modality thermal")
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    args.checkpoint = args.checkpoint or DEFAULT_PATHS[args.modality]

    print("== 1. checkpoint")
    if not os.path.exists(args.checkpoint):
        write_demo_checkpoint(["--modality", args.modality, "-o", args.checkpoint])
    else:
        print(f"using {args.checkpoint}")

    print("\n== 2. export to ONNX, checked against PyTorch")
    onnx_path = os.path.splitext(args.checkpoint)[0] + ".onnx"
    from export.onnx import parse_args as export_args, run as export

    if export(export_args([args.checkpoint, "-o", onnx_path])) != 0:
        print("the ONNX export is beyond tolerance", file=sys.stderr)
        return 1

    if args.modality == "depth":
        print("\n== 3. Segmenter on the real RGB-Depth frame")
        bgr, aux = cv2.imread(DEPTH_SAMPLE[0], cv2.IMREAD_COLOR), cv2.imread(DEPTH_SAMPLE[1], cv2.IMREAD_UNCHANGED)
    else:
        print("\n== 3. Segmenter on the real RGB-Thermal frame")
        frame = cv2.imread(args.sample, cv2.IMREAD_UNCHANGED)
        if frame is None or frame.ndim != 3 or frame.shape[2] != 4:
            print(f"{args.sample}: expected an MFNet 4-channel PNG (BGR + thermal)", file=sys.stderr)
            return 2
        bgr, aux = frame[..., :3], frame[..., 3]
    rows, results = [], {}
    for path in (args.checkpoint, onnx_path):
        seg = Segmenter(path)
        print(seg)
        labels, times = time_backend(seg, bgr, aux, max(args.runs, 1))
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
    write_image_atomic(os.path.join(args.out, "labels.png"), labels)
    write_image_atomic(os.path.join(args.out, "overlay.png"), overlay(bgr, labels, cfg["num_classes"], names))
    counts = np.bincount(labels.ravel(), minlength=cfg["num_classes"])
    print("class pixels: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts) if c))
    print(f"wrote {args.out}/labels.png and {args.out}/overlay.png")
    if cfg.get("untrained"):
        print(f"note: {UNTRAINED_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
