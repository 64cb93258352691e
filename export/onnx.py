"""Export a trained checkpoint to ONNX and check it against PyTorch with ONNX Runtime.

    python -m export.onnx CKPT [--base BASE] [-o OUT] [--img-size H W] [--opset N]
                          [--batch N | --dynamic-batch] [--fp16] [--fused-kernels]
                          [--no-check | --check-only | --check-separately]
                          [--uint8-input [--color-order bgr|rgb] [--aux-dtype uint8|uint16]
                           [--depth-units M]]

GoPT (``gopt/1``): one graph, ``rgb`` [B, 3, H, W] + ``aux`` [B, C_m, H, W] (normalised
float32) -> ``logits`` [B, K, H, W] and ``labels`` [B, H, W] uint8. With --uint8-input the
graph takes the camera's frames (``rgb`` uint8 [B, H, W, 3], ``aux`` in the sensor's type)
and normalises them itself (export/frame_input.py).
SimCMF (official delta + ``--base`` SAM checkpoint, or a full state dict): two graphs,
``OUT.encoder.onnx`` (x -> embeddings) and ``OUT.decoder.onnx`` (embeddings, clicks ->
low-res logits, IoU), LoRA folded, the padding point added inside the decoder.
GoPT with ``--fused-kernels``: each prompter's group merge and prompt injection is one custom
node (``GoptGroupMerge`` / ``GoptPromptInject``, run by the TensorRT plugins of
``libgopt_trt_plugins.so``; ONNX Runtime checks them with onnxruntime-extensions ops).
Everything a runtime needs travels in the files' metadata. Exit status: 0 exported and
within tolerance, 1 beyond tolerance, 2 bad arguments or checkpoint.

Until the check passes, a file lives as ``OUT.unverified.onnx``; it is renamed to
``OUT.onnx`` only when ONNX Runtime agrees with PyTorch within tolerance. A failed or
interrupted check leaves ``OUT.unverified.onnx``. ``--no-check`` writes ``OUT.onnx``
directly and says that it is unchecked.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from runtime.files import promote, unverified_path
from runtime.metadata import ModelFileError, ModelInfo, TensorSpec, gopt_model_info, read_onnx_info
from . import graph, parity
from .cli import ArgumentParser, UsageError, count, error_text, output_file, positive, run_tool
from .exporter import SAMPLES, export_graph, finish, ort_session, versions
from .progress import Progress

DEFAULT_OPSET = 18


def detect_checkpoint(path: str, base: str | None, modality: str | None = None):
    """(kind, payload): "gopt" with a loaded model, or "simcmf" with its loader's result."""
    from models.checkpoint import CheckpointError, load_gopt, read_torch_file

    obj = read_torch_file(path)
    if obj.get("format") == "gopt/1":
        return "gopt", load_gopt(obj, source=path)
    if "state_dict" in obj or any(k.startswith(("image_encoder.", "mask_decoder.")) for k in obj):
        from models.simcmf_checkpoint import is_sam_key, load_simcmf

        delta = obj.get("state_dict")
        if base is None and isinstance(delta, dict) and delta and not any(is_sam_key(k) for k in delta):
            raise CheckpointError(f"{path} is a SimCMF delta ({len(delta)} trained tensors); pass SAM's ViT-B "
                                  "checkpoint with --base sam_vit_b_01ec64.pth")
        return "simcmf", load_simcmf(obj, base=base, modality=modality, source=path)
    raise CheckpointError(f"{path}: unknown checkpoint kind (neither gopt/1 nor a SimCMF checkpoint); "
                          f"top-level keys: {sorted(obj)[:10]}")


# ---- GoPT ---------------------------------------------------------------------------------------

class GoPTGraph(nn.Module):
    """The exported GoPT: logits and the uint8 label map, argmax inside the graph in fp32;
    pixels whose logits are not finite get ``nonfinite_label`` (models.gopt.nonfinite_label)."""

    def __init__(self, model, nonfinite_label: int | None = None):
        super().__init__()
        self.model = model
        self.nonfinite_label = nonfinite_label

    def forward(self, rgb, aux):
        from models.gopt import labels_from_logits

        logits = self.model(rgb, aux)
        return logits, labels_from_logits(logits, self.nonfinite_label)


def export_gopt(model, out: Path, batch: int | str = 1, opset: int = DEFAULT_OPSET, fp16: bool = False,
                progress: Progress | None = None, fused: bool = False,
                frame_input: dict | None = None) -> ModelInfo:
    """Write ``out`` (one graph). ``batch``: a fixed size, or "batch" for a dynamic axis.
    ``fused``: the prompters' merge and injection as custom nodes for the TensorRT plugins.
    ``frame_input`` (``frame_input.default_frame_input``): the graph takes raw frames."""
    from runtime.backends import plugin_ops

    progress = progress or Progress(2)
    cfg = model.config
    if cfg.num_classes > 256:
        raise ValueError(f"the labels output is uint8: at most 256 classes, the model has {cfg.num_classes}")
    model = model.eval().float()
    from models.gopt import nonfinite_label

    flag = nonfinite_label(cfg.num_classes)
    info = gopt_model_info(cfg.to_dict(), batch, "fp16" if fp16 else "fp32", versions(), flag, frame_input)
    translations = None
    if fused:
        from .fused_onnx import translation_table

        info.plugins = list(plugin_ops.PLUGINS)
        translations = translation_table()
    example_batch = 2 if isinstance(batch, str) else batch
    module = GoPTGraph(model, flag)
    if frame_input:
        from .frame_input import FrameInputGraph

        module = FrameInputGraph(module, cfg, frame_input)
        rgb, aux = gopt_random_frames(cfg, frame_input, example_batch, seed=0)
    else:
        rgb, aux = gopt_random_inputs(cfg, example_batch, seed=0)
    # "torch": the PyTorch formulation as standard ONNX ops; "custom_op": one node per fused step
    model.kernel_backend = "custom_op" if fused else "torch"
    try:
        with progress(f"exporting GoPT {cfg.img_size[0]}x{cfg.img_size[1]}{' (fused kernels)' if fused else ''} "
                      f"to {out}"):
            onnx_model = export_graph(module, (torch.from_numpy(rgb), torch.from_numpy(aux)), out,
                                      info.inputs, info.outputs, opset, translations)
            finish(onnx_model, info, out, fp16)
    finally:
        model.kernel_backend = "torch"
    return info


def gopt_random_inputs(cfg, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    H, W = cfg.img_size
    return (rng.standard_normal((batch, 3, H, W), dtype=np.float32),
            rng.standard_normal((batch, cfg.aux_channels, H, W), dtype=np.float32))


def gopt_random_frames(cfg, frame_input: dict, batch: int, seed: int):
    """Random raw frames over the sensors' whole range for a --uint8-input graph: its feeds
    (depth with holes). Every pixel independent and uniform: what the preprocessing check
    covers (``check_frame_preprocessing``), not what a network sees."""
    from runtime.preprocess import frame_feeds

    rng = np.random.default_rng(seed)
    H, W = cfg.img_size
    feeds = []
    for _ in range(batch):
        bgr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        top = 65536 if frame_input["aux_dtype"] == "uint16" else 256
        top = 8000 if cfg.modality == "depth" else top  # millimetres, 0-8 m
        aux = rng.integers(0, top, (H, W, cfg.aux_channels), dtype=np.dtype(frame_input["aux_dtype"]))
        feeds.append(frame_feeds(bgr, aux, cfg.img_size, cfg.modality, cfg.aux_channels, frame_input, "bgr"))
    return np.concatenate([f[0] for f in feeds]), np.concatenate([f[1] for f in feeds])


def gopt_model_like_frames(cfg, frame_input: dict, batch: int, seed: int):
    """Random raw frames for a --uint8-input graph whose normalised values follow the float
    check's random inputs (``gopt_random_inputs``: N(0, 1) in model space), rounded to the
    sensor's integer type and clipped to its range: its feeds."""
    from runtime.preprocess import frame_feeds

    rng = np.random.default_rng(seed)
    H, W = cfg.img_size
    wide = frame_input["aux_dtype"] == "uint16"
    feeds = []
    for _ in range(batch):
        z = rng.standard_normal((H, W, 3), dtype=np.float32)
        rgb = np.float32(cfg.rgb_mean) + np.float32(cfg.rgb_std) * z
        bgr = np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)[..., ::-1])
        value = np.float32(cfg.aux_mean) + np.float32(cfg.aux_std) * rng.standard_normal(
            (H, W, cfg.aux_channels), dtype=np.float32)
        if cfg.modality == "depth":  # metres -> counts of depth_units (0 stays a hole)
            aux = np.clip(np.rint(value / np.float32(frame_input["depth_units"])), 0, 65535).astype(np.uint16)
        elif wide:  # 8-bit statistics, 16-bit sensor: x 257
            aux = np.clip(np.rint(value * 257.0), 0, 65535).astype(np.uint16)
        else:
            aux = np.clip(np.rint(value), 0, 255).astype(np.uint8)
        feeds.append(frame_feeds(bgr, aux, cfg.img_size, cfg.modality, cfg.aux_channels, frame_input, "bgr"))
    return np.concatenate([f[0] for f in feeds]), np.concatenate([f[1] for f in feeds])


class ModelInputs(nn.Module):
    """The network's two inputs as they are: wrapped in ``FrameInputGraph``, a graph of the
    preprocessing alone."""

    def forward(self, rgb, aux):
        return rgb, aux


def check_frame_preprocessing(cfg, frame_input: dict, batch: int, folder: Path, opset: int) -> parity.Parity:
    """The in-graph preprocessing (``FrameInputGraph`` exported around ``ModelInputs``) in
    ONNX Runtime against the runtime's own (``runtime/preprocess.py``) on uniform random
    frames over the sensors' whole range, depth holes included. Judged apart from the
    network: through an untrained network such frames meet near-tied hard assignments,
    where a rounding difference flips a group and says nothing about the preprocessing."""
    import tempfile

    from .frame_input import FrameInputGraph

    rgb, aux = gopt_random_frames(cfg, frame_input, batch, seed=2)
    H, W = cfg.img_size
    inputs = [TensorSpec("rgb", list(rgb.shape), "uint8"), TensorSpec("aux", list(aux.shape), "uint8")]
    outputs = [TensorSpec("rgb_input", [batch, 3, H, W], "float32"),
               TensorSpec("aux_input", [batch, cfg.aux_channels, H, W], "float32")]
    with tempfile.TemporaryDirectory(prefix=".preprocessing.", dir=folder) as tmp:
        path = Path(tmp) / "preprocessing.onnx"
        model = export_graph(FrameInputGraph(ModelInputs(), cfg, frame_input).eval(),
                             (torch.from_numpy(rgb), torch.from_numpy(aux)), path, inputs, outputs, opset)
        onnx.save(model, str(path))
        x, a = ort_session(path).run(["rgb_input", "aux_input"], {"rgb": rgb, "aux": aux})
    ref_x, ref_a = preprocess_frames(cfg, rgb, aux, frame_input)
    both = np.concatenate([x.ravel(), a.ravel()])
    result = parity.compare("preprocessing, full sensor range", both, np.concatenate([ref_x.ravel(), ref_a.ravel()]))
    result.max_abs_limit = parity.PREPROCESSING_MAX_ABS
    return result


def gopt_sample_frames(cfg):
    """The bundled real frame pair of the model's modality (BGR uint8, sensor dtype), or None."""
    import cv2

    if cfg.modality == "thermal" and cfg.aux_channels == 1:
        frame = cv2.imread(str(SAMPLES / "mfnet_01234N.png"), cv2.IMREAD_UNCHANGED)
        return frame[..., :3], frame[..., 3]
    if cfg.modality == "depth" and cfg.aux_channels == 1:
        bgr = cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR)
        return bgr, cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    return None


def gopt_sample_inputs(cfg):
    """The bundled real frame of the model's modality, preprocessed as the runtime does."""
    from runtime.preprocess import preprocess_aux, preprocess_rgb

    frames = gopt_sample_frames(cfg)
    if frames is None:
        return None
    bgr, aux = frames
    return (preprocess_rgb(bgr, cfg.img_size, cfg.rgb_mean, cfg.rgb_std),
            preprocess_aux(aux, cfg.img_size, cfg.aux_mean, cfg.aux_std, cfg.modality))


def unpack_frames(rgb: np.ndarray, aux: np.ndarray, frame_input: dict):
    """One frame pair back from a --uint8-input graph's feeds: (BGR uint8, aux in its dtype)."""
    bgr = rgb[..., ::-1] if frame_input["color_order"] == "rgb" else rgb
    if frame_input["aux_dtype"] == "uint16":
        aux = np.ascontiguousarray(aux).view("<u2")[..., 0]
    return np.ascontiguousarray(bgr), np.ascontiguousarray(aux)


def preprocess_frames(cfg, rgb: np.ndarray, aux: np.ndarray, frame_input: dict):
    """The float32 model inputs the runtime's preprocessing makes of a --uint8-input graph's
    feeds (frames already at the model's size): the reference the graph is checked against."""
    from runtime.preprocess import preprocess_aux, preprocess_rgb

    xs, auxs = [], []
    for r, a in zip(rgb, aux):
        bgr, a = unpack_frames(r, a, frame_input)
        xs.append(preprocess_rgb(bgr, cfg.img_size, cfg.rgb_mean, cfg.rgb_std))
        auxs.append(preprocess_aux(a, cfg.img_size, cfg.aux_mean, cfg.aux_std, cfg.modality,
                                   frame_input.get("depth_units", 0.001)))
    return np.concatenate(xs), np.concatenate(auxs)


def check_gopt(model, path: Path, info: ModelInfo, batch: int, progress: Progress) -> list[parity.Parity]:
    """ONNX Runtime vs PyTorch fp32 on random inputs and on the bundled real frame."""
    cfg = model.config
    session = ort_session(path, info.plugins)
    frame_input = info.frame_input
    if frame_input:
        from runtime.preprocess import frame_feeds

        # Random frames as the float check's inputs; the sensors' whole range is judged on
        # the preprocessing alone (check_frame_preprocessing)
        cases = [("random", gopt_model_like_frames(cfg, frame_input, batch, seed=1))]
        frames = gopt_sample_frames(cfg)
        sample = None
        if frames is not None:
            bgr, aux = frames
            if frame_input["aux_dtype"] == "uint16" and aux.dtype == np.uint8:
                aux = aux.astype(np.uint16) * 257  # the 16-bit reading of the same temperatures
            sample = frame_feeds(bgr, aux, cfg.img_size, cfg.modality, cfg.aux_channels, frame_input, "bgr")
    else:
        cases = [("random", gopt_random_inputs(cfg, batch, seed=1))]
        sample = gopt_sample_inputs(cfg)
    if sample is not None:
        cases.append((f"real {cfg.modality} frame", sample))
    else:
        print(f"(no bundled {cfg.modality} sample with {cfg.aux_channels} channels: random inputs only)")
    results = []
    for name, (rgb, aux) in cases:
        with progress(f"checking on {name} inputs (ONNX Runtime vs PyTorch)"):
            logits, labels = session.run(["logits", "labels"], {"rgb": rgb, "aux": aux})
            if frame_input:  # the reference: the runtime's preprocessing of the same frames, then PyTorch
                rgb, aux = preprocess_frames(cfg, rgb, aux, frame_input)
            with torch.inference_mode(), parity.closest_assignment() as margin:
                ref = model(torch.from_numpy(rgb), torch.from_numpy(aux)).float()
            ref_labels = ref.argmax(1).numpy()
            result = parity.compare(f"{name}: logits", logits, ref.numpy(), (labels, ref_labels))
            result.note = parity.near_tie_note(margin)
            results.append(result)
    if frame_input:
        with progress("checking the in-graph preprocessing against the runtime's on full-range frames"):
            results.append(check_frame_preprocessing(cfg, frame_input, batch, path.parent, info_opset(path)))
    return results


def info_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=DEFAULT_OPSET)


# ---- command line -------------------------------------------------------------------------------

def default_output(ckpt: str, fp16: bool, frames: bool = False) -> Path:
    stem = Path(ckpt).with_suffix("")
    return Path(f"{stem}{'.frames' if frames else ''}{'.fp16' if fp16 else ''}.onnx")


def parse_args(argv):
    ap = ArgumentParser(prog="python -m export.onnx", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--base", help="SAM ViT-B checkpoint (sam_vit_b_01ec64.pth) for a SimCMF delta")
    ap.add_argument("--modality", help="SimCMF modality (rgbt, rgbd, t, d, hha, ...): its normalisation "
                    "constants go into the model file (official checkpoints do not store it)")
    ap.add_argument("-o", "--output", help="output .onnx path (SimCMF: OUT.encoder.onnx / OUT.decoder.onnx)")
    ap.add_argument("--img-size", nargs=2, type=count, metavar=("H", "W"),
                    help="GoPT input size (default: the checkpoint's img_size)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--batch", type=count, default=1)
    group.add_argument("--dynamic-batch", action="store_true")
    ap.add_argument("--fp16", action="store_true", help="fp16 model; LayerNorm, softmax, argmax inputs stay fp32")
    ap.add_argument("--fused-kernels", action="store_true",
                    help="GoPT: each prompter's merge and injection as one custom node (GoptGroupMerge, "
                    "GoptPromptInject) for the TensorRT plugins of libgopt_trt_plugins.so")
    check = ap.add_mutually_exclusive_group()
    check.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    check.add_argument("--check-only", action="store_true",
                       help="no export: check the files an earlier run wrote (OUT.unverified.onnx, or OUT.onnx "
                            "from --no-check) against the checkpoint, and name them OUT.onnx if they pass")
    check.add_argument("--check-separately", action="store_true",
                       help="export in a child process, then check in this one: the export's and the check's "
                            "memory are never held at once (SimCMF on a machine with less than ~12 GiB free)")
    check.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)  # the child's half
    frames = ap.add_argument_group("preprocessing inside the graph (GoPT)")
    frames.add_argument("--uint8-input", action="store_true",
                        help="the graph takes the camera's frames: rgb uint8 [B, H, W, 3], aux in the sensor's "
                             "type, and normalises them itself (default output CKPT.frames.onnx)")
    frames.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr",
                        help="colour order of the rgb frames (default bgr, OpenCV's)")
    frames.add_argument("--aux-dtype", choices=("uint8", "uint16"),
                        help="the auxiliary sensor's frames (default: uint16 for depth, uint8 otherwise; "
                             "uint16 thermal is scaled by 1/257)")
    frames.add_argument("--depth-units", type=positive, default=0.001,
                        help="metres per count of the uint16 depth frames (default 0.001: millimetres)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 14 <= args.opset <= 20:
        ap.error(f"--opset must be between 14 and 20 (TensorRT 10 reads up to 20), got {args.opset}")
    return args


def run(args) -> int:
    from models.checkpoint import CheckpointError

    if args.check_separately:
        from .memory import run_separately

        status = run_separately(args.argv)
        if status != 0:
            return status
        args.check_separately, args.check_only = False, True
    progress = Progress(0)
    try:
        with progress.unnumbered(f"loading {args.checkpoint}"):
            kind, loaded = detect_checkpoint(args.checkpoint, args.base, args.modality)
    except (CheckpointError, ModelFileError, ValueError) as e:
        print(f"error: {error_text(e)}", file=sys.stderr)
        return 2
    checking = not (args.no_check or args.export_only)
    progress.total = (0 if args.check_only else 1 if kind == "gopt" else 2) + (2 if checking else 0)
    batch = "batch" if args.dynamic_batch else args.batch
    if kind == "gopt":
        model = loaded
        print(f"found gopt/1: {model.config.description or 'GoPT'} "
              f"(D={model.config.embed_dim}, depth {model.config.depth}, {model.config.num_classes} classes, "
              f"RGB-{model.config.modality})")
        if model.config.untrained:
            print("note: this checkpoint is marked UNTRAINED (seeded random weights)")
        if args.fused_kernels and args.fp16:
            print("error: --fused-kernels exports fp32 graphs only (the fused nodes compute in fp32; an fp16 "
                  "graph around them is not supported yet); drop --fp16", file=sys.stderr)
            return 2
        try:
            if args.img_size:
                model.set_img_size(args.img_size)
            final = (Path(args.output) if args.output
                     else default_output(args.checkpoint, args.fp16, args.uint8_input))
            check_outputs([final])
            if args.check_only:
                out = exported_file(final)
                info = read_onnx_info(out)
            else:
                frame_input = None
                if args.uint8_input:
                    from .frame_input import default_frame_input

                    frame_input = default_frame_input(model.config.modality, args.color_order, args.aux_dtype,
                                                      args.depth_units)
                out = final if args.no_check else unverified_path(final)
                info = export_gopt(model, out, batch, args.opset, args.fp16, progress, args.fused_kernels,
                                   frame_input)
        except (ValueError, ModelFileError) as e:
            print(f"error: {error_text(e)}", file=sys.stderr)
            return 2
        report(info, out, args.check_only)
        if checking and info.frame_input:
            progress.total += 1  # the preprocessing's own check
        finals, written = [final], [out]
        if not checking:
            return unchecked(written, finals)
        try:
            results = check_gopt(model, out, info, check_batch(info), progress)
        except ModelFileError as e:
            print(f"error: {error_text(e)}", file=sys.stderr)
            return not_promoted(written, finals)
    else:
        from .simcmf_onnx import check_simcmf, export_simcmf, graph_paths

        if args.fused_kernels:
            print("error: --fused-kernels is for GoPT checkpoints (SimCMF has no fused kernels)", file=sys.stderr)
            return 2
        if args.uint8_input:
            print("error: --uint8-input is for GoPT; SimCMF's encoder takes the normalised image", file=sys.stderr)
            return 2
        model, description = loaded
        print(f"found SimCMF: {description}")
        if model.config.pixel_mean is None:
            print("warning: no modality given or stored: the model files will carry no normalisation "
                  "constants (pass --modality)", file=sys.stderr)
        stem = Path(args.output).with_suffix("") if args.output else Path(args.checkpoint).with_suffix("")
        if str(stem).endswith((".encoder", ".decoder")):
            stem = Path(str(stem).rsplit(".", 1)[0])
        finals = list(graph_paths(stem))
        try:
            check_outputs(finals)
        except UsageError as e:
            print(f"error: {error_text(e)}", file=sys.stderr)
            return 2
        if args.check_only:
            try:
                paths = [exported_file(f) for f in finals]
                infos = [read_onnx_info(p) for p in paths]
            except ModelFileError as e:
                print(f"error: {error_text(e)}", file=sys.stderr)
                return 2
        else:
            if checking:
                from .memory import available_bytes, memory_warning

                warning = memory_warning(sum(p.numel() for p in model.parameters()), available_bytes())
                if warning:
                    print(warning, file=sys.stderr)
            infos, paths = export_simcmf(model, stem, batch, args.opset, args.fp16, progress,
                                         unverified=not args.no_check)
        for info, path in zip(infos, paths):
            report(info, path, args.check_only)
        written = list(paths)
        if not checking:
            return unchecked(written, finals)
        results = check_simcmf(model, paths, check_batch(infos[0]), progress)
        info = infos[0]
    tol = parity.FP16 if info.precision == "fp16" else parity.FP32
    print()
    for r in results:
        print(("  ok   " if tol.passes(r) else "  FAIL ") + r.line())
        if not tol.passes(r) and r.note:
            print(f"         {r.note}")
    if all(tol.passes(r) for r in results):
        rule = "fp16: label agreement >= 99.5%" if tol is parity.FP16 else "fp32: max-abs <= 1e-4"
        print(f"within tolerance ({rule})")
        for path, final in zip(written, finals):
            promote(path, final)
        print("checked: " + ", ".join(str(f) for f in finals))
        return 0
    print("beyond tolerance: do not deploy this export", file=sys.stderr)
    return not_promoted(written, finals)


def check_outputs(finals) -> None:
    """Before the export: each final name and its ``.unverified`` companion must be writable
    file paths. An earlier export under a final name is replaced only when the new one passes
    its check (``promote``); a failed check leaves it as it was."""
    for final in finals:
        if final.suffix != ".onnx":
            raise UsageError(f"{final}: the output must end with .onnx")
        output_file(final, replace=True)
        output_file(unverified_path(final), replace=True)


def exported_file(final: Path) -> Path:
    """--check-only: the file an earlier export wrote for ``final``, unchecked (its
    ``unverified_path``) or written under its final name by --no-check."""
    for path in (unverified_path(final), final):
        if path.is_file():
            return path
    raise ModelFileError(f"{final}: no such file (nor {unverified_path(final).name}); export it first")


def check_batch(info: ModelInfo) -> int:
    """The batch the check runs: 3 for a dynamic batch axis, else the file's fixed batch."""
    first = info.inputs[0].shape[0]
    return 3 if isinstance(first, str) else int(first)


def unchecked(written, finals) -> int:
    if written == finals:  # --no-check
        print(f"unchecked (--no-check): {', '.join(str(f) for f in finals)} not compared with PyTorch")
    else:  # the first half of --check-separately
        print(f"exported, not yet checked: {', '.join(str(w) for w in written)}")
    return 0


def not_promoted(written, finals) -> int:
    kept = []
    for path, final in zip(written, finals):
        if Path(path) == Path(final):  # --check-only of a --no-check export: it loses its final name
            path = unverified_path(final)
            os.replace(final, path)
        kept.append(str(path))
    print(f"kept as {', '.join(kept)} (failed its check; no file is named "
          f"{', '.join(str(f) for f in finals)})", file=sys.stderr)
    return 1


def report(info: ModelInfo, path: Path, existing: bool = False) -> None:
    mb = os.path.getsize(path) / 2**20
    ops = sorted(graph.op_types(onnx.load(str(path), load_external_data=False)))
    print(f"{'checking' if existing else 'wrote'} {path} ({mb:.1f} MiB, {info.precision}, {len(ops)} op types, "
          f"inputs {', '.join(f'{t.name}{t.shape}' for t in info.inputs)})")


def main(argv=None) -> int:
    return run_tool(run, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
