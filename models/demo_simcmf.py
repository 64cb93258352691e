"""Write a demo SimCMF checkpoint pair: RGB-T (C=4), LoRA, ``simcmf`` projector, RANDOM weights.

    python -m models.demo_simcmf [-o checkpoints] [--seed 0] [--overwrite]

Two files in the layouts a real SimCMF user has:
  sam_vit_b_random.pth            SAM ViT-B state dict (segment-anything layout, 314 tensors)
  simcmf_rgbt_lora_untrained.pth  {'epoch', 'model': 'sam_lora', 'state_dict', ...} with the
                                  trained tensors only (LoRA and projector)
Every weight is drawn from a seeded generator: the pair is UNTRAINED. It exercises
loading, export and the runtime; its masks mean nothing.
"""
from __future__ import annotations

import argparse
import os

import torch

from .simcmf import SimCMF, SimCMFConfig
from .simcmf_checkpoint import load_simcmf, save_sam_base, save_simcmf, trained_parameter_names

UNTRAINED_NOTE = ("UNTRAINED: seeded random weights for exercising the pipeline; "
                  "the masks it produces mean nothing")
BASE_NAME = "sam_vit_b_random.pth"
DELTA_NAME = "simcmf_rgbt_lora_untrained.pth"
DEFAULT_DIR = "checkpoints"


def build_demo_simcmf(seed: int = 0, config: SimCMFConfig | None = None) -> SimCMF:
    """A SimCMF whose every weight is seeded-random; tensors that start constant (position
    tables, norms) get noise too, so every part of the network visibly acts."""
    config = config or SimCMFConfig(in_chans=4, proj_type="simcmf", tuning="lora", modality="rgbt",
                                    untrained=True, description=UNTRAINED_NOTE)
    torch.manual_seed(seed)
    model = SimCMF(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and float(p.std()) == 0.0:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model.eval()


def write_demo(out_dir: str, seed: int = 0) -> tuple[str, str]:
    """Write the pair into ``out_dir``; returns (base path, checkpoint path)."""
    model = build_demo_simcmf(seed)
    os.makedirs(out_dir, exist_ok=True)
    base, delta = os.path.join(out_dir, BASE_NAME), os.path.join(out_dir, DELTA_NAME)
    save_sam_base(model, base)
    save_simcmf(model, delta, epoch=0, best_iou=0.0, untrained=True, note=UNTRAINED_NOTE,
                modality=model.config.modality, seed=seed)
    return base, delta


def parse_args(argv=None):
    from runtime.cli import ArgumentParser

    ap = ArgumentParser(prog="python -m models.demo_simcmf", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output-dir", default=DEFAULT_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace the two files when they exist")
    return ap.parse_args(argv)


def write_command(args) -> int:
    from runtime.cli import output_dir, output_file

    output_dir(args.output_dir)
    for name in (BASE_NAME, DELTA_NAME):
        output_file(os.path.join(args.output_dir, name), replace=args.overwrite, flag="--overwrite")
    base, delta = write_demo(args.output_dir, args.seed)
    model, description = load_simcmf(delta, base=base)
    n_base = len(torch.load(base, weights_only=True))
    print(f"wrote {base}: SAM ViT-B state dict, {n_base} tensors (seed {args.seed})")
    print(f"wrote {delta}: SimCMF checkpoint ('model': 'sam_lora'), "
          f"{len(trained_parameter_names(model))} trained tensors")
    print(f"loads as: {description}")
    print(UNTRAINED_NOTE)
    return 0


def main(argv=None) -> int:
    from runtime.cli import run_tool

    return run_tool(write_command, parse_args, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
