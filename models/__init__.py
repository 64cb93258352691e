"""PyTorch reference networks: GoPT (and SimCMF)."""
from .checkpoint import CheckpointError, load_gopt, save_gopt
from .gopt import MODALITIES, GoPT, GoPTConfig, gopt_vit_b, gopt_vit_l
from .simcmf import MODALITIES as SIMCMF_MODALITIES, SAM_VIT_B, SimCMF, SimCMFConfig
from .simcmf_checkpoint import detect_variant, load_simcmf, save_sam_base, save_simcmf

__all__ = ["GoPT", "GoPTConfig", "gopt_vit_b", "gopt_vit_l", "MODALITIES", "load_gopt", "save_gopt",
           "CheckpointError", "SimCMF", "SimCMFConfig", "SIMCMF_MODALITIES", "SAM_VIT_B", "load_simcmf",
           "save_simcmf", "save_sam_base", "detect_variant"]
