"""SimCMF: SAM ViT-B behind a cross-modal projector, tuned with LoRA or an MLP adapter.

The network computes exactly what SimCMF's official code computes at validation time:
a normalised C-channel image stretched to S x S (1024), the user's clicks in S-pixel
space plus SAM's padding point (0, 0) / -1, single-mask output (mask token 0), and the
low-resolution logits [B, 1, S/4, S/4] with the IoU prediction [B, 1].

Inputs are normalised by the caller with the modality's constants (``pixel_mean`` /
``pixel_std`` in the config, on the scale ``pixel_scale`` says); the model does not
normalise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from .projector import PROJECTORS
from .sam_decoder import MaskDecoder, PromptEncoder
from .sam_encoder import ImageEncoder

TUNINGS = ("lora", "adapter", "full", "none")
LORA_RANK = 100  # SimCMF's LORA_R
ADAPTER_DIM = 200  # SimCMF's ADAPTER_R
POINT_LABELS = (-1, 0, 1)  # padding (ignored), negative click, positive click

_RGB_MEAN = [123.675 / 255, 116.28 / 255, 103.53 / 255]  # ImageNet statistics on 0-1 values
_RGB_STD = [58.395 / 255, 57.12 / 255, 57.375 / 255]
_GREY_MEAN = [sum([123.675, 116.28, 103.53]) / 3 / 255]
_GREY_STD = [sum([58.395, 57.12, 57.375]) / 3 / 255]
_GLASS_RGBT_MEAN = [0.37960503, 0.39143142, 0.3845801, 0.35632825]
_GLASS_RGBT_STD = [0.22783901, 0.2329615, 0.2352449, 0.21658015]
_PGSNET_MEAN = [0.20545432, 0.21862635, 0.15604725, 0.47199312, 0.4637443, 0.48603472, 0.102636375,
                0.10431647, 0.11925355]
_PGSNET_STD = [0.19210099, 0.20711783, 0.18405455, 0.28202084, 0.28334478, 0.25937688, 0.11682395,
               0.118849464, 0.12313089]
_UNIT = "0-1 (8-bit values / 255)"
_MINMAX = "per image min-max to 0-255, rounded to 8 bits, then / 255"
_THERMAL = f"0-1; thermal = temperature {_MINMAX}"
_DEPTH = f"0-1; depth = metric depth {_MINMAX}"


@dataclass(frozen=True)
class Modality:
    """Channel order and the official dataset's normalisation, ``(x - mean) / std`` on ``scale``."""

    channels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: str


def _modality(channels: str, mean, std, scale: str) -> Modality:
    return Modality(tuple(channels.split()), tuple(mean), tuple(std), scale)


# Names are SimCMF's ``-modality`` values; constants are its dataset classes'.
MODALITIES = {
    "rgbd": _modality("R G B depth", _RGB_MEAN + _GREY_MEAN, _RGB_STD + _GREY_STD, f"RGB {_UNIT}; {_DEPTH}"),
    "d": _modality("depth", _GREY_MEAN, _GREY_STD, _DEPTH),
    "rgbhha": _modality("R G B H H A", _RGB_MEAN * 2, _RGB_STD * 2, f"{_UNIT}; HHA images as 8-bit RGB"),
    "hha": _modality("H H A", _RGB_MEAN, _RGB_STD, f"{_UNIT}; HHA images as 8-bit RGB"),
    "nir": _modality("NIR", [0.5038126], [0.20589863], f"{_UNIT}; NIR as 8-bit grey"),
    "rgbnir": _modality("R G B NIR", [0.43030727, 0.43242943, 0.41996416, 0.5038126],
                        [0.25075516, 0.24733004, 0.26631436, 0.20589863], f"{_UNIT}; NIR as 8-bit grey"),
    "rgbt": _modality("R G B thermal", _GLASS_RGBT_MEAN, _GLASS_RGBT_STD, f"RGB {_UNIT}; {_THERMAL}"),
    "rgbt_500": _modality("R G B thermal", _GLASS_RGBT_MEAN, _GLASS_RGBT_STD, f"RGB {_UNIT}; {_THERMAL}"),
    "t": _modality("thermal", _GLASS_RGBT_MEAN[3:], _GLASS_RGBT_STD[3:], _THERMAL),
    "t_500": _modality("thermal", _GLASS_RGBT_MEAN[3:], _GLASS_RGBT_STD[3:], _THERMAL),
    "pgsnet_rgbp": _modality("R G B AoLP AoLP AoLP DoLP DoLP DoLP", _PGSNET_MEAN, _PGSNET_STD,
                             "PGSNet rgb / aolp / dolp TIFF values as tensors (about 0-1)"),
    "pgsnet_p": _modality("AoLP AoLP AoLP DoLP DoLP DoLP", _PGSNET_MEAN[3:], _PGSNET_STD[3:],
                          "PGSNet aolp / dolp TIFF values as tensors (about 0-1)"),
    "zju-rgbp": _modality(
        "I I I AoLP AoLP AoLP DoLP DoLP DoLP",
        [141.1251, 141.37535, 138.99559, -0.01452719, -0.014152956, -0.016532706, 0.15173349, 0.1489902,
         0.17018148],
        [139.9553, 140.5757, 141.13524, 0.38503787, 0.38248295, 0.3834839, 0.13344945, 0.13081141, 0.14260896],
        "unscaled: I = half the sum of the four 8-bit polariser images (0-510), AoLP in radians, DoLP 0-1"),
}

# SAM ViT-B as SimCMF builds it (segment-anything's vit_b at 1024 x 1024).
SAM_VIT_B = {
    "img_size": 1024, "patch_size": 16, "encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
    "encoder_global_attn_indexes": [2, 5, 8, 11], "window_size": 14, "mlp_ratio": 4.0, "prompt_embed_dim": 256,
    "decoder_depth": 2, "decoder_num_heads": 8, "decoder_mlp_dim": 2048, "mask_in_chans": 16,
    "iou_head_hidden_dim": 256, "num_multimask_outputs": 3,
}
ARCH_FIELDS = tuple(SAM_VIT_B)


@dataclass
class SimCMFConfig:
    """Everything needed to rebuild the network; ``to_dict()`` is plain JSON (ONNX metadata)."""

    in_chans: int
    proj_type: str = "simcmf"
    tuning: str = "lora"
    lora_rank: int = LORA_RANK  # used when tuning == "lora"
    adapter_dim: int = ADAPTER_DIM  # used when tuning == "adapter"
    lora_folded: bool = False  # True once B A is merged into the q / v weights
    modality: str | None = None  # a SimCMF ``-modality`` name; None when unknown
    pixel_mean: list[float] | None = None  # None: taken from the modality (None if unknown)
    pixel_std: list[float] | None = None
    pixel_scale: str | None = None  # the values pixel_mean / pixel_std apply to
    minmax_channels: list[int] | None = None  # channels SimCMF min-max normalises per image (thermal, depth)
    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: list[int] = field(default_factory=lambda: [2, 5, 8, 11])
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    mask_in_chans: int = 16
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    untrained: bool = False  # True for seeded random weights (demo checkpoints)
    description: str = ""

    def __post_init__(self):
        self.encoder_global_attn_indexes = [int(i) for i in self.encoder_global_attn_indexes]
        known = MODALITIES.get(self.modality)
        if known is not None:
            if self.pixel_mean is None and self.pixel_std is None:
                self.pixel_mean, self.pixel_std = list(known.mean), list(known.std)
            if self.pixel_scale is None:
                self.pixel_scale = known.scale
            if self.minmax_channels is None and "min-max" in known.scale:
                self.minmax_channels = [i for i, c in enumerate(known.channels) if c in ("thermal", "depth")]
        self.validate()

    def validate(self) -> None:
        def bad(msg):
            raise ValueError(f"invalid SimCMF config: {msg}")

        if self.proj_type not in PROJECTORS:
            bad(f"proj_type must be one of {PROJECTORS}, got {self.proj_type!r}")
        if self.tuning not in TUNINGS:
            bad(f"tuning must be one of {TUNINGS}, got {self.tuning!r}")
        for name in ("in_chans", "lora_rank", "adapter_dim", "img_size", "patch_size", "encoder_embed_dim",
                     "encoder_depth", "encoder_num_heads", "window_size", "prompt_embed_dim", "decoder_depth",
                     "decoder_num_heads", "decoder_mlp_dim", "mask_in_chans", "iou_head_hidden_dim",
                     "num_multimask_outputs"):
            if int(getattr(self, name)) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mask_in_chans % 4:
            bad(f"mask_in_chans must be a multiple of 4, got {self.mask_in_chans}")
        if self.lora_folded and self.tuning != "lora":
            bad(f"lora_folded needs tuning 'lora', got {self.tuning!r}")
        if self.img_size % self.patch_size:
            bad(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            bad(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by {self.encoder_num_heads} heads")
        if self.prompt_embed_dim % (2 * self.decoder_num_heads) or self.prompt_embed_dim % 8:
            bad(f"prompt_embed_dim {self.prompt_embed_dim} must be divisible by 8 and by 2 x "
                f"{self.decoder_num_heads} heads (the cross-attentions run at half width)")
        g = self.encoder_global_attn_indexes
        if sorted(set(g)) != g or any(not 0 <= i < self.encoder_depth for i in g) or \
                self.encoder_depth - 1 not in g:
            bad(f"encoder_global_attn_indexes must be sorted unique block indices in [0, {self.encoder_depth}) "
                f"ending with the last block {self.encoder_depth - 1} (the encoder's output block); got {g}")
        if self.modality is not None and self.modality not in MODALITIES:
            bad(f"modality must be one of {sorted(MODALITIES)} or None, got {self.modality!r}")
        if self.modality is not None and len(MODALITIES[self.modality].channels) != self.in_chans:
            m = MODALITIES[self.modality]
            bad(f"modality {self.modality!r} has {len(m.channels)} channels ({' '.join(m.channels)}), "
                f"in_chans is {self.in_chans}")
        if (self.pixel_mean is None) != (self.pixel_std is None):
            bad("pixel_mean and pixel_std must both be given or both be None")
        for name in ("pixel_mean", "pixel_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.in_chans:
                bad(f"{name} needs {self.in_chans} values (one per channel), got {len(values)}")
        if self.pixel_std is not None and any(s <= 0 for s in self.pixel_std):
            bad("pixel_std must be positive")

    @property
    def grid(self) -> int:
        """Side of the token grid and of the image embedding (64 for 1024 inputs)."""
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the output logits (256 for 1024 inputs)."""
        return 4 * self.grid

    @property
    def active_lora_rank(self) -> int:
        return self.lora_rank if self.tuning == "lora" and not self.lora_folded else 0

    @property
    def active_adapter_dim(self) -> int:
        return self.adapter_dim if self.tuning == "adapter" else 0

    def arch(self) -> dict:
        return {k: getattr(self, k) for k in ARCH_FIELDS}

    def is_vit_b(self) -> bool:
        return self.arch() == SAM_VIT_B

    def summary(self) -> str:
        """One line: architecture, projector, channels, tuning."""
        arch = "SAM ViT-B" if self.is_vit_b() else (
            f"SAM ViT (width {self.encoder_embed_dim}, depth {self.encoder_depth})")
        modality = self.modality or "modality unknown"
        tuning = {"lora": f"lora r={self.lora_rank}" + (" (folded)" if self.lora_folded else ""),
                  "adapter": f"adapter d={self.adapter_dim}", "full": "full fine-tuning",
                  "none": "no tuning add-ons"}[self.tuning]
        line = (f"SimCMF {arch} {self.img_size}x{self.img_size}, projector {self.proj_type}, "
                f"C={self.in_chans} ({modality}), tuning {tuning}")
        return line + (" [UNTRAINED]" if self.untrained else "")

    @classmethod
    def from_dict(cls, d: dict) -> "SimCMFConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if "in_chans" not in d or unknown:
            raise ValueError(f"invalid SimCMF config: missing keys {[] if 'in_chans' in d else ['in_chans']}, "
                             f"unknown keys {unknown}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _tracing() -> bool:
    """Value checks read tensor data, which graph capture cannot; shape checks always run."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting()


def _shape(t) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


class SimCMF(nn.Module):
    """``forward(x [B, C, S, S], point_coords [B, N, 2], point_labels [B, N])
    -> (low_res_logits [B, 1, S/4, S/4], iou [B, 1])``; S = img_size (1024)."""

    def __init__(self, config: SimCMFConfig):
        super().__init__()
        self.config = config
        c = config
        self.image_encoder = ImageEncoder(
            c.in_chans, c.proj_type, c.img_size, c.patch_size, c.encoder_embed_dim, c.encoder_depth,
            c.encoder_num_heads, c.mlp_ratio, c.prompt_embed_dim, c.window_size, c.encoder_global_attn_indexes,
            c.active_lora_rank, c.active_adapter_dim)
        self.prompt_encoder = PromptEncoder(c.prompt_embed_dim, c.grid, c.img_size, c.mask_in_chans)
        self.mask_decoder = MaskDecoder(
            c.prompt_embed_dim, c.num_multimask_outputs, c.decoder_depth, c.decoder_num_heads, c.decoder_mlp_dim,
            c.iou_head_hidden_dim, 3, c.active_lora_rank, c.active_adapter_dim)

    # ---- input checks -------------------------------------------------------------------------

    def check_image(self, x) -> None:
        c = self.config
        S = c.img_size
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a [B, {c.in_chans}, {S}, {S}] tensor, got {_shape(x)}")
        if x.shape[1] != c.in_chans:
            raise ValueError(f"x must have {c.in_chans} channels ({c.modality or 'the checkpoint'}'s C), "
                             f"got {x.shape[1]} (shape {_shape(x)})")
        if tuple(x.shape[2:]) != (S, S):
            raise ValueError(f"x must be {S}x{S} (stretch the frame to it), got {x.shape[2]}x{x.shape[3]}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a normalised floating-point tensor, got {x.dtype}")

    def check_points(self, coords, labels, batch: int | None = None) -> None:
        S = self.config.img_size
        if not isinstance(coords, torch.Tensor) or coords.ndim != 3 or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be a [B, N, 2] tensor of (x, y), got {_shape(coords)}")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 2:
            raise ValueError(f"point_labels must be a [B, N] tensor, got {_shape(labels)}")
        if tuple(labels.shape) != tuple(coords.shape[:2]):
            raise ValueError(f"point_labels {_shape(labels)} must be [B, N] for point_coords {_shape(coords)}")
        if coords.shape[1] < 1:
            raise ValueError("at least one point is needed per image, got N = 0")
        if batch is not None and coords.shape[0] != batch:
            raise ValueError(f"point batch {coords.shape[0]} does not match the image batch {batch}")
        if not coords.is_floating_point():
            raise ValueError(f"point_coords must be floating point, got {coords.dtype}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"point_labels must be an integer tensor, got {labels.dtype}")
        if _tracing():
            return
        if not bool(((coords >= 0) & (coords < S)).all()):
            bad = coords[~((coords >= 0) & (coords < S)).all(-1)][0].tolist()
            raise ValueError(f"point_coords must be (x, y) in [0, {S}) pixels of the {S}x{S} input, "
                             f"got {bad}")
        unknown = set(labels.unique().tolist()) - set(POINT_LABELS)
        if unknown:
            raise ValueError(f"point_labels must be 1 (positive), 0 (negative) or -1 (ignored), "
                             f"got {sorted(unknown)}")

    def check_embeddings(self, emb) -> None:
        c = self.config
        want = (c.prompt_embed_dim, c.grid, c.grid)
        if not isinstance(emb, torch.Tensor) or emb.ndim != 4 or tuple(emb.shape[1:]) != want:
            raise ValueError(f"embeddings must be [B, {want[0]}, {want[1]}, {want[2]}] (encode's output), "
                             f"got {_shape(emb)}")

    # ---- network ------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image [B, C, S, S] -> image embeddings [B, 256, S/16, S/16]."""
        self.check_image(x)
        return self.image_encoder(x)

    def decode(self, embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        """Embeddings and the user's clicks (the padding point is appended here)
        -> (low_res_logits [B, 1, S/4, S/4], iou [B, 1])."""
        self.check_embeddings(embeddings)
        self.check_points(point_coords, point_labels, embeddings.shape[0])
        return self._decode(embeddings, point_coords, point_labels)

    def _decode(self, embeddings, point_coords, point_labels):
        pe = self.prompt_encoder
        sparse = pe.embed_points(point_coords, point_labels)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder(embeddings, pe.dense_pe(), sparse, dense)

    def forward(self, x: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        self.check_image(x)
        self.check_points(point_coords, point_labels, x.shape[0])
        return self._decode(self.image_encoder(x), point_coords, point_labels)

    def fold_lora(self) -> "SimCMF":
        """Merge every LoRA branch into its weights (W + B A): same outputs, no LoRA ops."""
        if self.config.active_lora_rank:
            self.image_encoder.fold_lora()
            self.mask_decoder.fold_lora()
            self.config = dataclasses.replace(self.config, lora_folded=True)
        return self
