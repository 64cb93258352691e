"""Write a demo checkpoint: a ViT-B GoPT with seeded RANDOM weights, RGB-Thermal or RGB-Depth.

    python -m models.demo_checkpoint [--modality thermal|depth] [--tiny] [-o PATH] [--seed 0] [--overwrite]

thermal (default, ``checkpoints/gopt_demo_rgbt.pt``): MFNet's 9 classes, thermal statistics
of the bundled MFNet frames (0-255 values).
depth (``checkpoints/gopt_demo_rgbd.pt``): SUN RGB-D's 37 classes (the bundled ESANet
frame is a 512x424 Kinect v2 frame, SUN RGB-D's kind), depth statistics in metres (the
values the depth decoder yields: uint16 counts x ``depth_units``) over the valid pixels of
that frame as the runtime reads it by default (1 mm per count, the unit upstream lists;
data/samples/README.md discusses it); holes (0) enter the model as the mean.

``--tiny``: the same classes and statistics on a 2-block, width-64 ViT at 96x128 (for
stream and batching benchmarks where the model must keep up with 30 Hz cameras on a CPU).

The weights are untrained. The demo exercises the pipeline (checkpoint -> export ->
runtime -> benchmark) on real sensor frames; its label maps mean nothing.
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from .checkpoint import save_gopt
from .gopt import GoPT, GoPTConfig, gopt_vit_b

MFNET_CLASSES = ["unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump"]
# Thermal statistics (0-255) pooled over the two bundled MFNet samples.
MFNET_THERMAL_MEAN, MFNET_THERMAL_STD = [65.6], [22.3]
SUNRGBD_CLASSES = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                   "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
                   "floor_mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel", "shower_curtain",
                   "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp", "bathtub", "bag"]
# Depth statistics in metres over the valid pixels of the bundled ESANet frame at 1 mm per count.
ESANET_DEPTH_MEAN, ESANET_DEPTH_STD = [25.6], [6.33]
UNTRAINED_NOTE = ("UNTRAINED: seeded random weights for exercising the pipeline; "
                  "the label maps it produces mean nothing")
DEFAULT_PATHS = {"thermal": os.path.join("checkpoints", "gopt_demo_rgbt.pt"),
                 "depth": os.path.join("checkpoints", "gopt_demo_rgbd.pt")}
DEFAULT_PATH = DEFAULT_PATHS["thermal"]
# An untrained GoPT's group tokens, drawn as GoPT draws them (std 0.02), are so small that
# the parameter-free attention of every prompter averages them into one vector: the hard
# assignments then tie exactly, PyTorch and ONNX Runtime round the ties apart, and part of
# the label map flips between them. The RGB-D demo draws its group tokens with std 3 so
# that the groups stay distinct (std 5 and above makes the prompter's softmax so sharp that
# fp32 rounding alone moves the logits by 2e-4 to 6e-4, beyond the export check's 1e-4);
# with seed 2 the export check's logits agree within 6e-6, labels 100%. The RGB-T demo
# keeps GoPT's own draw.
DEFAULT_SEEDS = {"thermal": 0, "depth": 2}
CLASS_TOKEN_STD = {"thermal": None, "depth": 3.0}


def demo_config(modality: str = "thermal", tiny: bool = False):
    """The GoPT configuration of the demo checkpoint of ``modality`` (thermal, depth):
    ViT-B, or with ``tiny`` a 2-block width-64 ViT at 96x128."""
    if modality == "thermal":
        kw = dict(num_classes=len(MFNET_CLASSES), img_size=(480, 640), modality="thermal",
                  aux_mean=MFNET_THERMAL_MEAN, aux_std=MFNET_THERMAL_STD, class_names=MFNET_CLASSES)
    elif modality == "depth":
        # 416 x 512: the ESANet frame's 424 x 512 rounded down to multiples of 16.
        kw = dict(num_classes=len(SUNRGBD_CLASSES), img_size=(416, 512), modality="depth",
                  aux_mean=ESANET_DEPTH_MEAN, aux_std=ESANET_DEPTH_STD, class_names=SUNRGBD_CLASSES)
    else:
        raise ValueError(f"demo checkpoints exist for modality 'thermal' or 'depth', got {modality!r}")
    kw.update(aux_channels=1, untrained=True, description=UNTRAINED_NOTE)
    if tiny:
        return GoPTConfig(**{**kw, "img_size": (96, 128)}, embed_dim=64, depth=2, num_heads=2, prompt_dim=16)
    return gopt_vit_b(**kw)


def build_demo_gopt(seed: int = 0, config=None, class_token_std: float | None = None) -> GoPT:
    """A GoPT whose every weight is drawn from a seeded generator (the up-projections too,
    so the prompter visibly acts instead of being the zero-initialised identity).
    ``class_token_std``: draw the group tokens from N(0, std) instead of GoPT's default."""
    config = config or demo_config("thermal")
    torch.manual_seed(seed)
    model = GoPT(config)
    with torch.no_grad():
        nn.init.trunc_normal_(model.backbone.pos_embed, std=0.02)
        nn.init.trunc_normal_(model.backbone.cls_token, std=0.02)
        for layer in model.prompter.layers:
            nn.init.trunc_normal_(layer.acp.up.weight, std=0.02)
        model.head.bn.running_mean.normal_(0, 0.1)
        model.head.bn.running_var.uniform_(0.5, 2.0)
        if class_token_std is not None:
            nn.init.normal_(model.prompter.class_tokens, std=class_token_std)
    model.backbone.refresh_pos_embed()
    return model.eval()


def parse_args(argv=None):
    from runtime.cli import ArgumentParser

    ap = ArgumentParser(prog="python -m models.demo_checkpoint", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=sorted(DEFAULT_PATHS), default="thermal")
    ap.add_argument("--tiny", action="store_true", help="a 2-block width-64 ViT at 96x128 instead of ViT-B")
    ap.add_argument("-o", "--output", default=None,
                    help="default: checkpoints/gopt_demo_rgbt.pt or _rgbd.pt (--tiny: gopt_tiny_rgbt.pt / _rgbd.pt)")
    ap.add_argument("--seed", type=int, default=None, help="default: 0 (thermal), 2 (depth)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing file at the output path")
    return ap.parse_args(argv)


def default_output(modality: str, tiny: bool = False) -> str:
    return DEFAULT_PATHS[modality].replace("_demo_", "_tiny_" if tiny else "_demo_")


def write_demo_checkpoint(output: str, modality: str = "thermal", tiny: bool = False, seed: int | None = None) -> None:
    """Write the demo checkpoint of ``modality`` to ``output`` (atomically) and say what it is."""
    seed = DEFAULT_SEEDS[modality] if seed is None else seed
    model = build_demo_gopt(seed, demo_config(modality, tiny), CLASS_TOKEN_STD[modality])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    save_gopt(model, output)
    cfg = model.config
    what = "RGB-T, MFNet" if modality == "thermal" else "RGB-D, SUN RGB-D"
    print(f"wrote {output}: GoPT {'tiny' if tiny else 'ViT-B'} {what} ({cfg.num_classes} classes), "
          f"{cfg.img_size[0]}x{cfg.img_size[1]}, {model.trainable_parameters():,} trainable parameters")
    print(UNTRAINED_NOTE)


def write_command(args) -> int:
    from runtime.cli import output_file

    output = args.output or default_output(args.modality, args.tiny)
    output_file(output, replace=args.overwrite, flag="--overwrite")
    write_demo_checkpoint(output, args.modality, args.tiny, args.seed)
    return 0


def main(argv=None) -> int:
    from runtime.cli import run_tool

    return run_tool(write_command, parse_args, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
