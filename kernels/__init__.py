"""Fused GoPT prompter kernels (Triton) and the PyTorch references they must match.

``group_merge`` and ``prompt_inject`` dispatch on ``backend``:
"torch" runs the reference, "triton" the fused kernel, "auto" Triton when the tensors
are on a CUDA device and Triton is importable, else the reference; "custom_op" calls the
reference through ``torch.ops.gopt`` (``custom_ops.py``), which an export keeps as one node.
"""
from __future__ import annotations

import importlib.util
import os

from .reference import group_merge_reference, prompt_inject_reference

BACKENDS = ("torch", "triton", "auto", "custom_op")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_usable(device) -> bool:
    """Triton can run on ``device``: a CUDA device, or any device under TRITON_INTERPRET=1."""
    if not triton_available():
        return False
    return getattr(device, "type", str(device)) == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"kernel_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        cuda = getattr(device, "type", str(device)) == "cuda"
        return "triton" if cuda and triton_available() else "torch"
    if backend == "triton" and not triton_usable(device):
        why = "triton is not installed" if not triton_available() else (
            f"tensors are on {device}, and Triton needs a CUDA device (or TRITON_INTERPRET=1)")
        raise ValueError(f"kernel_backend='triton' cannot run here: {why}")
    return backend


def _use_triton(backend: str, device, C: int, d: int) -> bool:
    """Triton when asked or chosen by "auto"; "auto" keeps the reference for sizes the
    kernels do not tile, "triton" lets the kernel refuse them with its own error."""
    if resolve_backend(backend, device) != "triton":
        return False
    if backend == "auto":
        from .group_merge_triton import supported

        return supported(C, d)
    return True


def group_merge(*args, backend: str = "torch"):
    """CUP hard group merge (eq. 8-10); see ``reference.group_merge_reference``."""
    a, c = args[0], args[1]
    if backend == "custom_op":
        from . import custom_ops

        return custom_ops.group_merge(*args)
    if _use_triton(backend, a.device, c.shape[1], c.shape[2]):
        from .group_merge_triton import group_merge_triton

        return group_merge_triton(*args)
    return group_merge_reference(*args)


def prompt_inject(*args, backend: str = "torch"):
    """ACP cross-attention + injection (eq. 11-14, 3); see ``reference.prompt_inject_reference``."""
    P = args[1]
    if backend == "custom_op":
        from . import custom_ops

        return custom_ops.prompt_inject(*args)
    if _use_triton(backend, args[0].device, P.shape[1], P.shape[2]):
        from .prompt_inject_triton import prompt_inject_triton

        return prompt_inject_triton(*args)
    return prompt_inject_reference(*args)
