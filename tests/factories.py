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
