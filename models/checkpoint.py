"""``gopt/1`` checkpoints: ``{"format": "gopt/1", "config": {...}, "state_dict": {...}}``.

A full file holds backbone, prompter and head. A prompts-only file (no ``backbone.``
keys) is loaded beside an MAE pre-training checkpoint (``{"model": ...}``), whose
encoder keys go to ``backbone.`` unchanged and whose decoder keys are dropped.
"""
from __future__ import annotations

import os
import pickle
import re

import torch

from runtime.files import atomic_path

from .gopt import GoPT, GoPTConfig

FORMAT = "gopt/1"
MAE_DROPPED = ("decoder", "mask_token")  # MAE pre-training keys that are not the encoder


class CheckpointError(ValueError):
    """A checkpoint that cannot be placed: wrong format, or keys / shapes that do not fit."""


def read_torch_file(path, trust_pickle: bool = False) -> dict:
    """torch.load with tensors-only unpickling unless the caller trusts the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {'is a folder, not a checkpoint file' if os.path.isdir(path) else 'no such file'}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: cannot be read (permission denied)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or another format)") from None
        raise CheckpointError(f"{path}: holds a pickled Python object ({found.group(1)}) beyond tensors and "
                              "plain containers; pass trust_pickle=True only if you trust its source") from None
    except Exception:  # truncated or not a torch file at all: say what the file is instead of torch's error
        raise CheckpointError(f"{path}: not a PyTorch checkpoint: it is {describe_file(path)}; expected a file "
                              "written by torch.save (a gopt/1 or SimCMF checkpoint)") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def describe_file(path) -> str:
    """What a file that torch.load refused looks like, in words."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive without torch's layout (a truncated or foreign zip file)"
    if head[:1] == b"\x80":
        return "a Python pickle that cannot be unpickled (truncated or written by another program)"
    if str(path).endswith(".onnx"):
        return "an ONNX model (run it with runtime.Segmenter / python -m runtime)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return f"binary data of an unknown format ({len(head)}+ bytes)"


def _listing(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def mae_backbone_state(obj: dict) -> dict:
    """An MAE checkpoint's encoder weights under the ``backbone.`` prefix (decoder dropped)."""
    sd = obj.get("model", obj)
    return {f"backbone.{k}": v for k, v in sd.items() if not k.startswith(MAE_DROPPED)}


def state_dict_problems(expected: dict, state: dict, skip_shape: tuple = ()) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against ``expected``, as phrases."""
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    shapes = [f"{k} {list(getattr(state[k], 'shape', []))} (expected {list(expected[k].shape)})"
              for k in expected.keys() & state.keys()
              if k not in skip_shape and getattr(state[k], "shape", None) != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
    return problems


def check_state_dict(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """One error listing every missing, unexpected or mis-shaped key. The position embedding
    may come at any pre-training grid G: only its layout is checked."""
    problems = state_dict_problems(model.state_dict(), state_dict, skip_shape=("backbone.pos_embed",))
    pos = state_dict.get("backbone.pos_embed")
    D = model.config.embed_dim
    if pos is not None and (pos.ndim != 3 or pos.shape[-1] != D):
        problems.append(f"backbone.pos_embed {list(pos.shape)} (expected [1, 1 + G*G, {D}])")
    if problems:
        raise CheckpointError(f"{source} does not fit the GoPT config: " + "; ".join(problems))


def load_gopt(path, backbone=None, kernel_backend: str = "torch", trust_pickle: bool = False,
              source: str | None = None) -> GoPT:
    """Load a ``gopt/1`` file (or its already-read dict, named ``source`` in messages),
    optionally with an MAE checkpoint as the frozen backbone."""
    if isinstance(path, dict):
        obj, path = path, source or "checkpoint"
    else:
        obj = read_torch_file(path, trust_pickle)
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format={obj.get('format')!r})")
    if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path}: a {FORMAT} file needs a 'config' dict and a 'state_dict' dict")
    config = GoPTConfig.from_dict(obj["config"])
    state = dict(obj["state_dict"])
    source = str(path)
    if backbone is not None:
        overlap = [k for k in state if k.startswith("backbone.")]
        if overlap:
            raise CheckpointError(f"{path} already holds {len(overlap)} backbone keys; "
                                  f"pass backbone= only with a prompts-only {FORMAT} file")
        state.update(mae_backbone_state(read_torch_file(backbone, trust_pickle)))
        source = f"{path} + {backbone}"
    elif not any(k.startswith("backbone.") for k in state):
        raise CheckpointError(f"{path} is a prompts-only {FORMAT} file (no backbone keys); "
                              "pass the MAE backbone checkpoint with backbone=...")
    model = GoPT(config, kernel_backend=kernel_backend)
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model.eval()


def save_gopt(model: GoPT, path, prompts_only: bool = False) -> None:
    """Write ``model`` as ``gopt/1``; ``prompts_only`` leaves the frozen backbone out."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not (prompts_only and k.startswith("backbone."))}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": model.config.to_dict(), "state_dict": state}, tmp)
