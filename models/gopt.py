"""GoPT: a frozen MAE ViT prompted by an auxiliary modality through semantic grouping.

The definition this file implements is the project's GoPT spec (eq. numbers are the
paper's): ``f = patch_embed(rgb) + pos``; ``a = aux_embed(aux)``; ``c = class_tokens``;
before every prompted block the prompter updates (f, a, c); then the SETR-naive head.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kernels import BACKENDS
from .prompter import Prompter
from .vit import VisionTransformer

# Auxiliary modalities and their channel counts (thermal, depth and SAR: 1; HHA: 3).
MODALITIES = {"thermal": 1, "depth": 1, "hha": 3, "sar": 1}
IMAGENET_MEAN = [123.675, 116.28, 103.53]  # on 0-255 RGB values, as MAE was trained
IMAGENET_STD = [58.395, 57.12, 57.375]


@dataclass
class GoPTConfig:
    """The ``config`` of a ``gopt/1`` checkpoint. Validated on construction."""

    embed_dim: int
    depth: int
    num_heads: int
    num_classes: int
    aux_channels: int
    img_size: tuple[int, int]
    mlp_ratio: float = 4.0
    patch_size: int = 16
    prompt_dim: int = 32
    prompt_layers: list[int] | None = None  # None: a prompter before every block
    head_channels: int = 256
    rgb_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    rgb_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    aux_mean: list[float] | None = None  # None: 0 for every aux channel
    aux_std: list[float] | None = None  # None: 1 for every aux channel
    modality: str = "thermal"
    class_names: list[str] | None = None
    untrained: bool = False  # True for seeded random weights (demo checkpoints)
    description: str = ""

    REQUIRED = ("embed_dim", "depth", "num_heads", "num_classes", "aux_channels", "img_size")

    def __post_init__(self):
        self.img_size = tuple(int(s) for s in self.img_size)
        if self.prompt_layers is None:
            self.prompt_layers = list(range(self.depth))
        self.prompt_layers = [int(i) for i in self.prompt_layers]
        if self.aux_mean is None:
            self.aux_mean = [0.0] * self.aux_channels
        if self.aux_std is None:
            self.aux_std = [1.0] * self.aux_channels
        self.validate()

    def validate(self) -> None:
        def bad(msg):
            raise ValueError(f"invalid GoPT config: {msg}")

        for name in ("embed_dim", "depth", "num_heads", "num_classes", "aux_channels", "prompt_dim",
                     "patch_size", "head_channels"):
            if int(getattr(self, name)) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            bad(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.img_size) != 2 or any(s < self.patch_size or s % self.patch_size for s in self.img_size):
            bad(f"img_size must be [H, W], both positive multiples of patch_size {self.patch_size}; "
                f"got {list(self.img_size)}")
        if sorted(set(self.prompt_layers)) != self.prompt_layers or any(
                not 0 <= i < self.depth for i in self.prompt_layers):
            bad(f"prompt_layers must be sorted, unique block indices in [0, {self.depth}); "
                f"got {self.prompt_layers}")
        if self.modality not in MODALITIES:
            bad(f"modality must be one of {sorted(MODALITIES)}, got {self.modality!r}")
        for name, n in (("rgb_mean", 3), ("rgb_std", 3), ("aux_mean", self.aux_channels),
                        ("aux_std", self.aux_channels)):
            if len(getattr(self, name)) != n:
                bad(f"{name} needs {n} values, got {len(getattr(self, name))}")
        if any(s <= 0 for s in (*self.rgb_std, *self.aux_std)):
            bad("rgb_std and aux_std must be positive")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            bad(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")

    @classmethod
    def from_dict(cls, d: dict) -> "GoPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in cls.REQUIRED if k not in d]
        unknown = sorted(set(d) - known)
        if missing or unknown:
            raise ValueError(f"invalid GoPT config: missing keys {missing}, unknown keys {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        return d


def gopt_vit_b(num_classes: int, aux_channels: int = 1, img_size=(480, 640), **kw) -> GoPTConfig:
    """ViT-B/16 with the paper's settings: prompt width 32, a prompter before every block."""
    return GoPTConfig(embed_dim=768, depth=12, num_heads=12, num_classes=num_classes,
                      aux_channels=aux_channels, img_size=img_size, **kw)


def gopt_vit_l(num_classes: int, aux_channels: int = 1, img_size=(480, 640), **kw) -> GoPTConfig:
    """ViT-L/16, same prompter settings."""
    return GoPTConfig(embed_dim=1024, depth=24, num_heads=16, num_classes=num_classes,
                      aux_channels=aux_channels, img_size=img_size, **kw)


NONFINITE_LABEL = 255  # the label an exported graph writes where a pixel's logits are NaN or infinite


def nonfinite_label(num_classes: int) -> int | None:
    """NONFINITE_LABEL when it is not a class id (at most 255 classes), else None (no flag)."""
    return NONFINITE_LABEL if num_classes <= NONFINITE_LABEL else None


def labels_from_logits(logits: torch.Tensor, nonfinite_label: int | None = None) -> torch.Tensor:
    """[B, K, H, W] logits -> [B, H, W] uint8 labels (argmax in fp32, lowest index on ties).
    With ``nonfinite_label``, pixels whose K logits are not all finite get that label, so a
    runtime that fetches only labels still sees a broken model (one K-plane reduction)."""
    f = logits.float()
    labels = f.argmax(1).to(torch.uint8)
    if nonfinite_label is None:
        return labels
    return torch.where(torch.isfinite(f).all(1), labels, torch.full_like(labels, nonfinite_label))


class SETRNaiveHead(nn.Module):
    """tokens -> 1x1 conv (no bias) -> BN -> ReLU -> 1x1 conv -> bilinear to the input size."""

    def __init__(self, embed_dim: int, head_channels: int, num_classes: int):
        super().__init__()
        self.proj = nn.Conv2d(embed_dim, head_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(head_channels, eps=1e-5)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
        x = self.classifier(F.relu(self.bn(self.proj(x))))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class GoPT(nn.Module):
    """``forward(rgb [B, 3, H, W], aux [B, C_m, H, W]) -> logits [B, K, H, W]`` (normalised inputs)."""

    def __init__(self, config: GoPTConfig, kernel_backend: str = "torch"):
        super().__init__()
        self.config = config
        self.kernel_backend = kernel_backend
        self.backbone = VisionTransformer(config.img_size, config.embed_dim, config.depth, config.num_heads,
                                          config.mlp_ratio, config.patch_size)
        self.prompter = Prompter(config.embed_dim, config.prompt_dim, config.num_classes,
                                 config.aux_channels, len(config.prompt_layers), config.patch_size)
        self.head = SETRNaiveHead(config.embed_dim, config.head_channels, config.num_classes)
        self.backbone.requires_grad_(False)  # the foundation model stays frozen
        self._prompt_slot = {block: i for i, block in enumerate(config.prompt_layers)}

    @property
    def kernel_backend(self) -> str:
        return self._kernel_backend

    @kernel_backend.setter
    def kernel_backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"kernel_backend must be one of {BACKENDS}, got {value!r}")
        self._kernel_backend = value

    def set_img_size(self, img_size) -> None:
        """Rebuild the resolution-dependent position embedding for another input size, once."""
        cfg = dataclasses.replace(self.config, img_size=tuple(img_size))  # validates
        self.config = cfg
        self.backbone.set_grid((cfg.img_size[0] // cfg.patch_size, cfg.img_size[1] // cfg.patch_size))

    def check_inputs(self, rgb: torch.Tensor, aux: torch.Tensor) -> None:
        cfg = self.config
        for name, x, ch in (("rgb", rgb, 3), ("aux", aux, cfg.aux_channels)):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.ndim != 4 or x.shape[1] != ch:
                raise ValueError(f"{name} must be [B, {ch}, H, W] ({cfg.modality if name == 'aux' else 'RGB'}), "
                                 f"got shape {list(x.shape)}")
            if not x.is_floating_point():
                raise ValueError(f"{name} must be a normalised floating-point tensor, got {x.dtype}")
        if rgb.shape[0] != aux.shape[0] or rgb.shape[2:] != aux.shape[2:]:
            raise ValueError(f"rgb and aux must have the same batch and size, got rgb {list(rgb.shape)} "
                             f"and aux {list(aux.shape)}")
        H, W = rgb.shape[2:]
        p = cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        if (H, W) != cfg.img_size:
            raise ValueError(f"model is built for {cfg.img_size[0]}x{cfg.img_size[1]} inputs, got {H}x{W}; "
                             "resize the frame or call set_img_size((H, W)) once")

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        self.check_inputs(rgb, aux)
        f = self.backbone.embed(rgb)
        a, c = self.prompter.embed(aux)
        for i, block in enumerate(self.backbone.blocks):
            slot = self._prompt_slot.get(i)
            if slot is not None:
                f, a, c = self.prompter.layers[slot](f, a, c, self.kernel_backend)
            f = block(f)
        return self.head(self.backbone.norm(f), self.backbone.grid, rgb.shape[2:])

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Label map [B, H, W] (argmax over K in fp32, lowest index on ties)."""
        return self(rgb, aux).float().argmax(1)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
