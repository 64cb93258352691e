"""SimCMF checkpoints in the official training code's layout.

A training run saves ``{'epoch', 'model', 'state_dict', 'best_iou', ...}`` where ``model``
is the net name (``sam_lora``, ``sam_mlp_adapter``, ``sam_full_finetune``) and
``state_dict`` holds only the trained parameters: the LoRA (``*lora*``) or adapter
(``*Adapter*``) tensors, or every parameter for full fine-tuning, plus every
``image_encoder.projector.*`` tensor. The rest comes from SAM's ``sam_vit_b_01ec64.pth``
(a plain state dict of 314 tensors). Neither the projector type nor the channel count is
stored: both are read off the key names and shapes.

    python -m models.simcmf_checkpoint DELTA [--base sam_vit_b_01ec64.pth] [--modality rgbt]

prints what a checkpoint holds.
"""
from __future__ import annotations

import argparse

import torch

from runtime.files import atomic_path

from .checkpoint import CheckpointError, read_torch_file, state_dict_problems
from .simcmf import MODALITIES, SAM_VIT_B, SimCMF, SimCMFConfig

PROJECTOR = "image_encoder.projector."
NET_NAMES = {"lora": "sam_lora", "adapter": "sam_mlp_adapter", "full": "sam_full_finetune", "none": "sam_naive"}
UNSUPPORTED_NETS = ("sam_prompt", "sam_prefix")
SAM_SIZES = {1024: "ViT-L", 1280: "ViT-H"}  # other SAM encoders, by width


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _shape(t) -> list:
    return list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def is_addon_key(key: str) -> bool:
    return "lora" in key or "Adapter" in key


def is_sam_key(key: str) -> bool:
    """A key of SAM's own state dict (neither the projector nor a tuning add-on)."""
    return not key.startswith(PROJECTOR) and not is_addon_key(key)


# ---- variant detection ----------------------------------------------------------------------

def _projector_variant(state: dict, source: str) -> tuple[str, int]:
    names = {k[len(PROJECTOR):] for k in state if k.startswith(PROJECTOR)}
    if not names:
        raise CheckpointError(f"{source} has no image_encoder.projector.* keys: not a SimCMF checkpoint "
                              "(the projector is always trained and saved)")
    if "moe.0.weight" in names:
        w = state[PROJECTOR + "moe.0.weight"]
        if w.ndim != 4 or w.shape[0] != 4 * w.shape[1]:
            raise CheckpointError(f"{source}: projector moe.0.weight {_shape(w)} is not the simcmf gate "
                                  "[4C, C, 3, 3]")
        return "simcmf", int(w.shape[1])
    if "zip_proj.0.weight" in names:
        w0, w1 = state[PROJECTOR + "zip_proj.0.weight"], state.get(PROJECTOR + "zip_proj.1.weight")
        layers = sorted({n.split(".")[1] for n in names if n.startswith("zip_proj.")})
        if layers != ["0", "1"] or w0.ndim != 4 or tuple(w0.shape[0:1]) + tuple(w0.shape[2:]) != (64, 3, 3) \
                or w1 is None or tuple(w1.shape) != (3, 64, 1, 1):
            raise CheckpointError(
                f"{source}: projector zip_proj layers {layers} (zip_proj.0.weight {_shape(w0)}) are a preconv "
                "variant other than preconvk3n2d64 (3x3 conv C -> 64, then 1x1 conv 64 -> 3); only that one "
                "and simcmf are supported")
        return "preconvk3n2d64", int(w0.shape[1])
    raise CheckpointError(f"{source}: projector keys ({_listing(names)}) match neither 'simcmf' (moe, zip_rgbx, "
                          "group_patch_embedding, fc) nor 'preconvk3n2d64' (zip_proj.0, zip_proj.1); SimCMF's "
                          "other proj_types are not supported")


def _addon_size(state: dict, suffix: str, source: str) -> int:
    sizes = {k: int(v.shape[0]) for k, v in state.items() if k.endswith(suffix) and v.ndim == 2}
    if len(set(sizes.values())) != 1:
        raise CheckpointError(f"{source}: expected one common size for every *{suffix}, found "
                              f"{_listing(f'{k} {v}' for k, v in sizes.items())}")
    return next(iter(sizes.values()))


def detect_variant(state: dict, source: str = "checkpoint") -> dict:
    """``{'proj_type', 'in_chans', 'tuning', 'lora_rank' | 'adapter_dim'}`` from key names and shapes."""
    proj_type, in_chans = _projector_variant(state, source)
    lora = [k for k in state if "lora" in k]
    adapter = [k for k in state if "Adapter" in k]
    if lora and adapter:
        raise CheckpointError(f"{source} holds both LoRA ({_listing(lora, 2)}) and adapter ({_listing(adapter, 2)}) "
                              "tensors; a SimCMF model has one or the other")
    variant = {"proj_type": proj_type, "in_chans": in_chans}
    if lora:
        variant.update(tuning="lora", lora_rank=_addon_size(state, "lora_q_a.weight", source))
    elif adapter:
        variant.update(tuning="adapter", adapter_dim=_addon_size(state, "Adapter_mlp.down_proj.weight", source))
    else:
        variant["tuning"] = "full" if any(is_sam_key(k) for k in state) else "none"
    return variant


def _check_net_name(obj: dict, tuning: str, source: str) -> None:
    net = obj.get("model")
    if not isinstance(net, str):
        return
    if net in UNSUPPORTED_NETS:
        raise CheckpointError(f"{source} was trained with {net}, which is not supported "
                              "(supported: sam_lora, sam_mlp_adapter, sam_full_finetune)")
    expected = {"sam_lora": "lora", "sam_mlp_adapter": "adapter"}.get(net)
    if expected is not None and expected != tuning:
        raise CheckpointError(f"{source} says model={net!r} but its tensors are a {tuning!r} checkpoint")


# ---- reading --------------------------------------------------------------------------------

def _read(src, trust_pickle: bool, source: str | None = None) -> tuple[dict, str]:
    if isinstance(src, dict):
        return src, source or "checkpoint dict"
    return read_torch_file(src, trust_pickle), str(src)


def _tensors(sd: dict, source: str) -> dict:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state dict values must be tensors; not tensors: {_listing(bad)}")
    return sd


def _delta_state(obj: dict, source: str) -> dict:
    """The ``state_dict`` of a training checkpoint, or the object itself when it is a plain state dict."""
    if "state_dict" in obj:
        if not isinstance(obj["state_dict"], dict):
            raise CheckpointError(f"{source}: 'state_dict' is a {type(obj['state_dict']).__name__}, not a dict")
        return _tensors(obj["state_dict"], source)
    return _tensors(obj, source)


def expected_sam_shapes(arch: dict | None = None) -> dict:
    """Key -> shape of SAM's own state dict for an architecture (314 keys for ViT-B)."""
    cfg = SimCMFConfig(in_chans=1, tuning="none", **_arch(arch))
    with torch.device("meta"):
        model = SimCMF(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if is_sam_key(k)}


def _arch(arch: dict | None) -> dict:
    unknown = sorted(set(arch or {}) - set(SAM_VIT_B))
    if unknown:
        raise ValueError(f"arch takes the fields {list(SAM_VIT_B)}; unknown: {unknown}")
    return {**SAM_VIT_B, **(arch or {})}


def check_sam_base(base: dict, source: str, arch: dict | None = None) -> None:
    """Refuse anything but a SAM state dict of the expected architecture (ViT-B by default)."""
    arch = _arch(arch)
    name = "SAM ViT-B" if arch == SAM_VIT_B else "the expected SAM architecture"
    if "state_dict" in base or "model" in base:
        raise CheckpointError(f"{source} is a training checkpoint, not a {name} state dict; pass SAM's "
                              "sam_vit_b_01ec64.pth as the base")
    _tensors(base, source)
    want = expected_sam_shapes(arch)
    missing, unexpected = want.keys() - base.keys(), base.keys() - want.keys()
    shapes = [f"{k} {_shape(base[k])} (expected {list(want[k])})" for k in want.keys() & base.keys()
              if tuple(base[k].shape) != want[k]]
    if not (missing or unexpected or shapes):
        return
    found = base.get("image_encoder.patch_embed.proj.weight")
    hint = ""
    if isinstance(found, torch.Tensor) and found.ndim == 4 and int(found.shape[0]) in SAM_SIZES:
        hint = f" (it looks like SAM {SAM_SIZES[int(found.shape[0])]})"
    problems = [f"missing {len(missing)} keys: {_listing(missing)}" if missing else "",
                f"unexpected {len(unexpected)} keys: {_listing(unexpected)}" if unexpected else "",
                f"{len(shapes)} shape mismatches: {_listing(shapes)}" if shapes else ""]
    raise CheckpointError(f"{source} is not a {name} state dict{hint}: expected {len(want)} keys; "
                          + "; ".join(p for p in problems if p))


def _check_fits(model: SimCMF, state: dict, source: str) -> None:
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} cannot be placed in {model.config.summary()}: " + "; ".join(problems))


def _describe(config: SimCMFConfig, obj: dict) -> str:
    extra = []
    if isinstance(obj.get("epoch"), int):
        extra.append(f"epoch {obj['epoch']}")
    if isinstance(obj.get("best_iou"), (int, float)):
        extra.append(f"best IoU {float(obj['best_iou']):.4f}")
    return config.summary() + (f" ({', '.join(extra)})" if extra else "")


def load_simcmf(checkpoint, base=None, modality: str | None = None, arch: dict | None = None,
                trust_pickle: bool = False, source: str | None = None) -> tuple[SimCMF, str]:
    """Load a SimCMF checkpoint (path or dict): the trained delta plus SAM's base, or a complete one.

    ``modality`` (a SimCMF ``-modality`` name, e.g. ``'rgbt'``; default: the checkpoint's
    optional ``'modality'`` entry) sets the normalisation constants and is checked against
    the checkpoint's channel count. ``arch`` overrides
    the SAM ViT-B architecture (fields of ``SAM_VIT_B``). Returns the model in eval mode
    and a one-line description of the detected variant.
    """
    arch = _arch(arch)
    obj, source = _read(checkpoint, trust_pickle, source)
    delta = _delta_state(obj, source)
    variant = detect_variant(delta, source)
    _check_net_name(obj, variant["tuning"], source)
    if modality is None and isinstance(obj.get("modality"), str):
        modality = obj["modality"]  # written by save_simcmf(..., modality=...); official runs do not store it
    if modality is not None:
        if modality not in MODALITIES:
            raise CheckpointError(f"unknown modality {modality!r}; SimCMF's are {sorted(MODALITIES)}")
        n = len(MODALITIES[modality].channels)
        if n != variant["in_chans"]:
            raise CheckpointError(f"{source}: the projector takes C={variant['in_chans']} channels, but modality "
                                  f"{modality!r} has {n} ({' '.join(MODALITIES[modality].channels)})")
    untrained = bool(obj.get("untrained", False))
    config = SimCMFConfig(**variant, **arch, modality=modality, untrained=untrained)
    state = {}
    if base is not None:
        base_obj, base_source = _read(base, trust_pickle)
        check_sam_base(base_obj, base_source, arch)
        state.update(base_obj)
        source = f"{source} + {base_source}"
    state.update(delta)
    model = SimCMF(config)
    missing = model.state_dict().keys() - state.keys()
    if base is None and missing and all(is_sam_key(k) for k in missing):
        raise CheckpointError(f"{source} holds only {len(delta)} trained tensors and lacks {len(missing)} SAM "
                              f"tensors ({_listing(missing, 3)}); pass SAM's sam_vit_b_01ec64.pth as the base "
                              "(base= / --base)")
    _check_fits(model, state, source)
    model.load_state_dict(state)
    description = _describe(config, obj)
    model.config = SimCMFConfig.from_dict({**config.to_dict(), "description": description})
    return model.eval(), description


# ---- writing --------------------------------------------------------------------------------

def trained_parameter_names(model: SimCMF) -> list[str]:
    """What a SimCMF training run saves: the tuning's parameters plus the projector's."""
    tuning = model.config.tuning
    if model.config.lora_folded:
        raise CheckpointError("the model's LoRA is folded into its weights; save the checkpoint before fold_lora()")
    keep = {"lora": lambda n: "lora" in n, "adapter": lambda n: "Adapter" in n,
            "full": lambda n: True, "none": lambda n: False}[tuning]
    return [n for n, _ in model.named_parameters() if keep(n) or n.startswith(PROJECTOR)]


def save_simcmf(model: SimCMF, path, epoch: int = 0, best_iou: float = 0.0, **extra) -> None:
    """Write ``model`` as a SimCMF training checkpoint (trained tensors only; SAM is the base)."""
    names = set(trained_parameter_names(model))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}
    with atomic_path(path) as tmp:
        torch.save({"epoch": epoch, "model": NET_NAMES[model.config.tuning], "state_dict": state,
                    "best_iou": best_iou, **extra}, tmp)


def sam_state_dict(model: SimCMF) -> dict:
    """SAM's own tensors of ``model`` (314 for ViT-B), in segment-anything's layout."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if is_sam_key(k)}


def save_sam_base(model: SimCMF, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(sam_state_dict(model), tmp)


def parse_args(argv=None):
    from runtime.cli import ArgumentParser

    ap = ArgumentParser(prog="python -m models.simcmf_checkpoint", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--base", help="SAM's sam_vit_b_01ec64.pth (needed unless the checkpoint is complete)")
    ap.add_argument("--modality", choices=sorted(MODALITIES))
    ap.add_argument("--trust-pickle", action="store_true",
                    help="allow pickled Python objects beyond tensors (only for files you trust)")
    return ap.parse_args(argv)


def describe_command(args) -> int:
    _, description = load_simcmf(args.checkpoint, args.base, args.modality, trust_pickle=args.trust_pickle)
    print(description)
    return 0


def main(argv=None) -> int:
    from runtime.cli import run_tool

    return run_tool(describe_command, parse_args, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
