"""Small models the tests build: fast to export, random enough that every part acts."""
import torch

from models import GoPT, GoPTConfig


def tiny_gopt(seed=0, **overrides):
    """A depth-2, width-64 GoPT at 48x64 with every parameter random (the zero-initialised
    up-projections included) and MFNet thermal statistics."""
    kw = dict(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(48, 64),
              prompt_dim=16, aux_mean=[65.6], aux_std=[22.3])
    model = GoPT(GoPTConfig(**{**kw, **overrides}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.backbone.refresh_pos_embed()
    return model.eval()


def export_tiny_gopts(folder):
    """``thermal.onnx`` (marked untrained) and ``depth.onnx`` in ``folder``: the tiny GoPTs
    that the stream and bag tests run through ONNX Runtime."""
    from export.onnx import parse_args, run
    from models import save_gopt

    save_gopt(tiny_gopt(untrained=True), folder / "thermal.pt")
    save_gopt(tiny_gopt(1, modality="depth", aux_mean=[3.0], aux_std=[1.5]), folder / "depth.pt")
    for name in ("thermal", "depth"):
        if run(parse_args([str(folder / f"{name}.pt"), "-o", str(folder / f"{name}.onnx"), "--no-check"])) != 0:
            raise RuntimeError(f"exporting the tiny {name} GoPT failed")
    return folder
