"""PyTorch backend: the reference models straight from their checkpoints (Triton kernels on CUDA).

The only runtime module that imports torch, and only when a checkpoint is opened.
"""
from __future__ import annotations

import numpy as np
import torch

from ..graph_check import check_model
from ..metadata import gopt_model_info, simcmf_model_infos
from .base import Backend, check_feeds


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


def gopt_backend(path_or_model, device: torch.device, kernel_backend: str = "auto", compile: bool = False,
                 dtype: torch.dtype = torch.float32, source: str | None = None) -> TorchBackend:
    """A GoPT checkpoint (or loaded model) as a backend; ``compile`` wraps it in torch.compile,
    ``dtype`` runs it in half precision (inputs cast on the device, argmax in fp32)."""
    from models import load_gopt

    model = (path_or_model if isinstance(path_or_model, torch.nn.Module)
             else load_gopt(path_or_model, source=source))  # a path or an already-read dict
    model.kernel_backend = kernel_backend
    model = model.to(device=device, dtype=dtype).eval()  # the resized position embedding moves along
    net = torch.compile(model) if compile else model

    from models.gopt import labels_from_logits, nonfinite_label

    flag = nonfinite_label(model.config.num_classes)

    def run(rgb, aux):
        logits = net(rgb.to(dtype), aux.to(dtype)).float()
        return logits, labels_from_logits(logits, flag)

    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    info = gopt_model_info(model.config.to_dict(), "batch", precision, {"torch": torch.__version__}, flag)
    check_model(info, source or "GoPT model")
    backend = TorchBackend(run, info, device)
    backend.model = model
    return backend


def simcmf_backends(path_or_model, device: torch.device, base=None, source: str | None = None) -> dict[str, TorchBackend]:
    """A SimCMF checkpoint (official delta + SAM ``base``, or complete) as encoder / decoder backends."""
    from models.simcmf_checkpoint import load_simcmf

    model = (path_or_model if isinstance(path_or_model, torch.nn.Module)
             else load_simcmf(path_or_model, base=base, source=source)[0])
    model = model.to(device).eval()
    encoder, decoder = simcmf_model_infos(model.config.to_dict(), "batch", "fp32", {"torch": torch.__version__})
    for info in (encoder, decoder):
        check_model(info, source or "SimCMF model")
    return {"encoder": TorchBackend(lambda x: (model.encode(x),), encoder, device),
            "decoder": TorchBackend(model.decode, decoder, device)}


def open_torch_graphs(path, device: str | None = None, base=None) -> dict[str, TorchBackend]:
    """{"gopt": backend} for a gopt/1 file; {"encoder", "decoder"} for a SimCMF checkpoint."""
    from models.checkpoint import read_torch_file

    dev = torch_device(device)
    obj = read_torch_file(path)
    if obj.get("format") == "gopt/1":
        return {"gopt": gopt_backend(obj, dev, source=str(path))}
    return simcmf_backends(obj, dev, base=base, source=str(path))
