"""PyTorch backend: the reference models straight from their checkpoints (Triton kernels on CUDA).

The only runtime module that imports torch, and only when a checkpoint is opened.
"""
from __future__ import annotations

import numpy as np
import torch

from .backend import Backend, check_feeds
from .metadata import gopt_model_info


def torch_device(device: str | None) -> torch.device:
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' needs a CUDA GPU and a CUDA build of PyTorch; none is available")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class TorchBackend(Backend):
    """Runs ``fn(**tensors) -> tuple`` with the graph's input and output names."""

    name = "torch"

    def __init__(self, fn, info, device: torch.device):
        super().__init__(info)
        self.fn = fn
        self.torch_device = device
        self.device = device.type

    @torch.inference_mode()
    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        check_feeds(self.inputs, feeds)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.torch_device) for k, v in feeds.items()}
        results = self.fn(**tensors)
        names = [t.name for t in self.outputs]
        wanted = outputs or names
        return {n: r.cpu().numpy() for n, r in zip(names, results) if n in wanted}


def gopt_backend(path, device: torch.device) -> TorchBackend:
    from models import load_gopt

    model = load_gopt(path, kernel_backend="auto").to(device)
    model.backbone.refresh_pos_embed()

    def run(rgb, aux):
        logits = model(rgb, aux).float()
        return logits, logits.argmax(1).to(torch.uint8)

    info = gopt_model_info(model.config.to_dict(), "batch", "fp32", {"torch": torch.__version__})
    return TorchBackend(run, info, device)


def open_torch_graphs(path, device: str | None = None) -> dict[str, TorchBackend]:
    """{"gopt": backend} for a gopt/1 file; {"encoder", "decoder"} for a SimCMF checkpoint."""
    from models.checkpoint import read_torch_file

    dev = torch_device(device)
    obj = read_torch_file(path)
    if obj.get("format") == "gopt/1":
        return {"gopt": gopt_backend(path, dev)}
    from .simcmf_torch import simcmf_backends

    return simcmf_backends(path, dev)
