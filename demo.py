"""The main job, end to end on the bundled default.

    python demo.py [--out demo_out] [--checkpoint checkpoints/gopt_demo_rgbt.pt]

Writes the demo GoPT checkpoint (seeded random weights: the pipeline, not a trained
model), runs it on the bundled real MFNet RGB-Thermal pair, prints the timing and
writes a colourised label map and an overlay.
"""
from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from models import load_gopt
from models.demo_checkpoint import DEFAULT_PATH, UNTRAINED_NOTE, main as write_demo_checkpoint
from runtime.preprocess import colorize, labels_to_frame, overlay, preprocess_aux, preprocess_rgb

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "samples", "mfnet_01234N.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=DEFAULT_PATH)
    ap.add_argument("--sample", default=SAMPLE, help="MFNet 4-channel PNG (BGR + thermal)")
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    if not os.path.exists(args.checkpoint):
        write_demo_checkpoint(["-o", args.checkpoint])
    model = load_gopt(args.checkpoint)
    cfg = model.config
    if cfg.untrained:
        print(f"note: {UNTRAINED_NOTE}")

    frame = cv2.imread(args.sample, cv2.IMREAD_UNCHANGED)
    if frame is None or frame.ndim != 3 or frame.shape[2] != 4:
        raise SystemExit(f"{args.sample}: expected an MFNet 4-channel PNG (BGR + thermal)")
    bgr, thermal = frame[..., :3], frame[..., 3]
    rgb_t = torch.from_numpy(preprocess_rgb(bgr, cfg.img_size, cfg.rgb_mean, cfg.rgb_std))
    aux_t = torch.from_numpy(preprocess_aux(thermal, cfg.img_size, cfg.aux_mean, cfg.aux_std, cfg.modality))

    times = []
    with torch.inference_mode():
        for _ in range(max(args.runs, 1)):
            t0 = time.perf_counter()
            labels = model.predict(rgb_t, aux_t)[0].numpy()
            times.append(time.perf_counter() - t0)
    labels = labels_to_frame(labels, bgr.shape[:2])

    print(f"\n{'backend':<18}{'device':<8}{'input':<12}{'runs':>5}{'min ms':>10}{'median ms':>11}")
    print(f"{'pytorch eager':<18}{'cpu':<8}{'%dx%d' % cfg.img_size:<12}{len(times):>5}"
          f"{1e3 * min(times):>10.1f}{1e3 * float(np.median(times)):>11.1f}")

    os.makedirs(args.out, exist_ok=True)
    cv2.imwrite(os.path.join(args.out, "labels.png"), colorize(labels, cfg.num_classes))
    cv2.imwrite(os.path.join(args.out, "overlay.png"), overlay(bgr, labels, cfg.num_classes))
    counts = np.bincount(labels.ravel(), minlength=cfg.num_classes)
    names = cfg.class_names or [str(i) for i in range(cfg.num_classes)]
    print("\nclass pixels: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts) if c))
    print(f"wrote {args.out}/labels.png and {args.out}/overlay.png")


if __name__ == "__main__":
    main()
