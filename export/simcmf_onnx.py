"""SimCMF as two ONNX graphs, like segment-anything's deployment: the image encoder, run once
per image, and the prompt decoder, run per set of clicks.

    OUT.encoder.onnx   x [B, C, S, S] (normalised)                  -> embeddings [B, 256, S/16, S/16]
    OUT.decoder.onnx   embeddings, point_coords [B, N, 2] (S-pixel
                       (x, y)), point_labels [B, N] int64 (1 / 0)  -> low_res_logits [B, 1, S/4, S/4], iou [B, 1]

LoRA is folded into the weights before export; the decoder appends SAM's padding point
itself, so a runtime passes only the user's clicks (N dynamic).
"""
from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from runtime.files import unverified_path
from runtime.metadata import simcmf_model_infos
from . import parity
from .exporter import SAMPLES, export_graph, finish, ort_session, versions
from .progress import Progress


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode(x)


class DecoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embeddings, point_coords, point_labels):
        return self.model.decode(embeddings, point_coords, point_labels)


def example_inputs(cfg, batch: int, seed: int, num_points: int = 2):
    rng = np.random.default_rng(seed)
    S = cfg.img_size
    x = rng.standard_normal((batch, cfg.in_chans, S, S), dtype=np.float32)
    coords = rng.uniform(0, S - 1, (batch, num_points, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (batch, num_points)).astype(np.int64)
    labels[:, 0] = 1
    return x, coords, labels


def graph_paths(stem) -> tuple[Path, Path]:
    """``stem.encoder.onnx``, ``stem.decoder.onnx``."""
    return Path(f"{stem}.encoder.onnx"), Path(f"{stem}.decoder.onnx")


def export_simcmf(model, stem: Path, batch: int | str = 1, opset: int = 18, fp16: bool = False,
                  progress: Progress | None = None, unverified: bool = False):
    """Write ``stem.encoder.onnx`` and ``stem.decoder.onnx`` (with ``unverified``: under their
    ``unverified_path`` names, still naming each other by the final names); returns (infos, paths)."""
    progress = progress or Progress(2)
    folded = copy.deepcopy(model).eval().float().fold_lora()
    cfg = folded.config
    enc_path, dec_path = graph_paths(stem)
    enc_info, dec_info = simcmf_model_infos(cfg.to_dict(), batch, "fp16" if fp16 else "fp32", versions(),
                                            enc_path.name, dec_path.name)
    if unverified:
        enc_path, dec_path = unverified_path(enc_path), unverified_path(dec_path)
    example_batch = 2 if isinstance(batch, str) else batch
    x, coords, labels = example_inputs(cfg, example_batch, seed=0)
    with progress(f"exporting the SimCMF encoder ({cfg.img_size}x{cfg.img_size}, C={cfg.in_chans}) to {enc_path}"):
        m = export_graph(EncoderGraph(folded), (torch.from_numpy(x),), enc_path, enc_info.inputs,
                         enc_info.outputs, opset)
        finish(m, enc_info, enc_path, fp16)
    with torch.inference_mode():
        emb = folded.image_encoder(torch.from_numpy(x))
    with progress(f"exporting the SimCMF decoder to {dec_path}"):
        m = export_graph(DecoderGraph(folded), (emb, torch.from_numpy(coords), torch.from_numpy(labels)), dec_path,
                         dec_info.inputs, dec_info.outputs, opset)
        finish(m, dec_info, dec_path, fp16)
    return (enc_info, dec_info), (enc_path, dec_path)


def sample_image(cfg):
    """The bundled MFNet frame as SimCMF's RGB-T (C=4) or thermal (C=1) input, or None."""
    from runtime.preprocess import preprocess_image

    frame = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
    if cfg.in_chans == 4 and cfg.modality in ("rgbt", "rgbt_500"):
        image, rgb_first = frame, True
    elif cfg.in_chans == 1 and cfg.modality in ("t", "t_500"):
        image, rgb_first = frame[..., 3], False
    else:
        return None
    return preprocess_image(image, cfg.in_chans, cfg.img_size, cfg.pixel_mean, cfg.pixel_std, cfg.pixel_scale,
                            "bgr", rgb_first, cfg.minmax_channels)


def check_simcmf(model, paths, batch: int, progress: Progress) -> list[parity.Parity]:
    """ONNX Runtime (folded LoRA) vs the PyTorch model as loaded (unfolded), on random inputs
    and the bundled real frame: embeddings, low-res logits with mask agreement, IoU."""
    cfg = model.config
    encoder, decoder = ort_session(paths[0]), ort_session(paths[1])
    x, _, _ = example_inputs(cfg, batch, seed=1)
    cases = [("random", x)]
    sample = sample_image(cfg)
    if sample is not None:
        cases.append(("real frame", np.repeat(sample, batch, 0)))
    results = []
    for name, image in cases:
        with progress(f"checking the encoder and decoder on {name} inputs (ONNX Runtime vs PyTorch)"):
            (emb,) = encoder.run(["embeddings"], {"x": image})
            with torch.inference_mode():
                ref_emb = model.encode(torch.from_numpy(image))
            results.append(parity.compare(f"{name}: embeddings", emb, ref_emb.numpy()))
            for n in (1, 3):
                _, coords, labels = example_inputs(cfg, batch, seed=2 + n, num_points=n)
                logits, iou = decoder.run(["low_res_logits", "iou"], {
                    "embeddings": ref_emb.numpy(), "point_coords": coords, "point_labels": labels})
                with torch.inference_mode():
                    ref_logits, ref_iou = model.decode(ref_emb, torch.from_numpy(coords), torch.from_numpy(labels))
                results.append(parity.compare(f"{name}: {n}-click logits", logits, ref_logits.numpy(),
                                              (logits > 0, ref_logits.numpy() > 0)))
                results.append(parity.compare(f"{name}: {n}-click iou", iou, ref_iou.numpy()))
    return results
