"""PyTorch reference networks: GoPT (and SimCMF)."""
from .checkpoint import CheckpointError, load_gopt, save_gopt
from .gopt import MODALITIES, GoPT, GoPTConfig, gopt_vit_b, gopt_vit_l

__all__ = ["GoPT", "GoPTConfig", "gopt_vit_b", "gopt_vit_l", "MODALITIES", "load_gopt", "save_gopt",
           "CheckpointError"]
