"""Write the demo checkpoint: a ViT-B GoPT for RGB-Thermal with seeded RANDOM weights.

    python -m models.demo_checkpoint [-o checkpoints/gopt_demo_rgbt.pt] [--seed 0]

The weights are untrained. The demo exercises the pipeline (checkpoint -> export ->
runtime -> benchmark) on real sensor frames; its label maps mean nothing.
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from .checkpoint import save_gopt
from .gopt import GoPT, gopt_vit_b

MFNET_CLASSES = ["unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump"]
# Thermal statistics (0-255) pooled over the two bundled MFNet samples.
MFNET_THERMAL_MEAN, MFNET_THERMAL_STD = [65.6], [22.3]
UNTRAINED_NOTE = ("UNTRAINED: seeded random weights for exercising the pipeline; "
                  "the label maps it produces mean nothing")
DEFAULT_PATH = os.path.join("checkpoints", "gopt_demo_rgbt.pt")


def build_demo_gopt(seed: int = 0, config=None) -> GoPT:
    """A GoPT whose every weight is drawn from a seeded generator (the up-projections too,
    so the prompter visibly acts instead of being the zero-initialised identity)."""
    config = config or gopt_vit_b(
        num_classes=len(MFNET_CLASSES), aux_channels=1, img_size=(480, 640), modality="thermal",
        aux_mean=MFNET_THERMAL_MEAN, aux_std=MFNET_THERMAL_STD, class_names=MFNET_CLASSES,
        untrained=True, description=UNTRAINED_NOTE)
    torch.manual_seed(seed)
    model = GoPT(config)
    with torch.no_grad():
        nn.init.trunc_normal_(model.backbone.pos_embed, std=0.02)
        nn.init.trunc_normal_(model.backbone.cls_token, std=0.02)
        for layer in model.prompter.layers:
            nn.init.trunc_normal_(layer.acp.up.weight, std=0.02)
        model.head.bn.running_mean.normal_(0, 0.1)
        model.head.bn.running_var.uniform_(0.5, 2.0)
    model.backbone.refresh_pos_embed()
    return model.eval()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=DEFAULT_PATH)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = build_demo_gopt(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_gopt(model, args.output)
    cfg = model.config
    print(f"wrote {args.output}: GoPT ViT-B RGB-T, {cfg.num_classes} MFNet classes, "
          f"{cfg.img_size[0]}x{cfg.img_size[1]}, {model.trainable_parameters():,} trainable parameters")
    print(UNTRAINED_NOTE)


if __name__ == "__main__":
    main()
