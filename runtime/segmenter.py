"""``Segmenter``: sensor frames in, label maps (GoPT) or click masks (SimCMF) out.

    seg = Segmenter("gopt_rgbt.onnx")            # or .engine / .plan, or a checkpoint .pt
    labels = seg.run(bgr, thermal)               # H x W uint8 at the frame's own size

The path of a frame: ``run`` -> ``preprocess`` (resize, normalise: preprocess.py) ->
``backend.infer`` (the model file's backend, chosen by backends/factory.py:
backends/ort_backend.py, trt_backend.py, openvino_backend.py, torch_backend.py) -> label
map resized back to the frame.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .backends.base import Backend
from .backends.factory import backend_kind, open_backend
from .metadata import ModelFileError, warn_if_unverified
from .outputs import check_finite, check_gopt_frame
from .preprocess import (check_pair, check_sensor_kinds, frame_feeds, labels_to_frame, preprocess_aux,
                         preprocess_image, preprocess_rgb)


def open_graphs(path, device=None, providers=None, backend: str | None = None, **options) -> dict[str, Backend]:
    """{"gopt": backend}, or {"encoder": ..., "decoder": ...} for SimCMF's two graphs."""
    path = Path(path)
    if backend_kind(path, backend) == "torch":
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        from .backends.torch_backend import open_torch_graphs

        return open_torch_graphs(path, device, base=options.get("base"))
    first = open_backend(path, device, providers, backend, **options)
    if first.info.kind == "gopt":
        return {"gopt": first}
    if not first.info.companion:
        raise ModelFileError(f"{path}: a {first.info.kind} graph without the name of its companion graph")
    other = open_backend(path.parent / first.info.companion, device, providers, backend, **options)
    pair = {first.info.kind: first, other.info.kind: other}
    if set(pair) != {"simcmf_encoder", "simcmf_decoder"}:
        raise ModelFileError(f"{path} and {first.info.companion} are not a SimCMF encoder / decoder pair")
    return {"encoder": pair["simcmf_encoder"], "decoder": pair["simcmf_decoder"]}


@dataclass
class Prepared:
    """A preprocessed GoPT frame pair: model-space tensors and the frame's own size."""

    rgb: np.ndarray  # [1, 3, h, w] float32
    aux: np.ndarray  # [1, C_m, h, w] float32
    size: tuple[int, int]  # (H, W) of the original frame


class Segmenter:
    """Frames in, label maps (GoPT) or click masks (SimCMF) out, on the model file's backend.

    Thread safety: every public method may be called from several threads at once on one
    Segmenter, and each call returns what it would return alone. GoPT calls run concurrently
    (ONNX Runtime and PyTorch sessions are re-entrant, OpenVINO gives each call its own infer
    request; a TensorRT backend runs one ``infer`` at a time, as its buffers and stream are its own). SimCMF keeps the last image's
    embedding as one (fingerprint, embedding, size) record, replaced whole; encoder runs are
    serialised per Segmenter (a new image is encoded once even when several threads click on
    it), decoder runs are concurrent. ``close`` must not race with calls in flight.
    """

    def __init__(self, path, device: str | None = None, providers=None, color_order: str = "bgr",
                 resize_aux: bool = False, depth_units: float | None = None, **options):
        """``path``: .engine / .plan (TensorRT), .onnx (ONNX Runtime), .pt / .pth (PyTorch).
        ``device``: None (the GPU when the backend gets one), "cuda" or "cpu".
        ``resize_aux``: accept an auxiliary frame of another size than the RGB frame (both are
        resized to the model's input; only right when the two sensors see the same field).
        ``depth_units``: metres per count of uint16 depth frames (default 0.001: millimetres;
        RealSense and Kinect cameras report millimetres, other sensors and datasets differ; a
        model exported with --uint8-input has its own, and the default is that).
        ``base=``: SAM's checkpoint, for a SimCMF delta checkpoint run with PyTorch."""
        self.path = Path(path)
        warn_if_unverified(path)
        self._attach(open_graphs(path, device, providers, **options), color_order, resize_aux, depth_units)

    @classmethod
    def from_backends(cls, graphs: dict[str, Backend], name: str = "model", color_order: str = "bgr",
                      resize_aux: bool = False, depth_units: float | None = None) -> "Segmenter":
        """A Segmenter over backends built elsewhere ({"gopt": b} or {"encoder": e, "decoder": d})."""
        self = cls.__new__(cls)
        self.path = Path(name)
        self._attach(graphs, color_order, resize_aux, depth_units)
        return self

    def _attach(self, graphs, color_order, resize_aux, depth_units=None) -> None:
        depth_units = frame_depth_units(graphs, depth_units)
        if not depth_units > 0:
            raise ValueError(f"depth_units must be positive metres per count, got {depth_units}")
        self.depth_units = float(depth_units)
        if color_order not in ("bgr", "rgb"):
            raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
        self.graphs = graphs
        main = self.graphs.get("gopt") or self.graphs["encoder"]
        self.kind = "gopt" if "gopt" in self.graphs else "simcmf"
        self.info = main.info
        self.config = main.info.config
        self.backend = main.name
        self.device = main.device
        self.compute_precision = main.compute_precision
        self.color_order = color_order
        self.resize_aux = resize_aux
        # SimCMF: the last image's embedding as one (fingerprint, embedding, size) tuple, replaced
        # whole, so that a reader never pairs one image's key with another's embedding.
        self._cache = None
        self._encoder_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Segmenter({self.path.name}: {self.info.variant or self.kind}, backend={self.backend}, "
                f"device={self.device}, precision={self.compute_precision})")

    def close(self) -> None:
        for g in self.graphs.values():
            g.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- GoPT ---------------------------------------------------------------------------------

    def _batch_limits(self) -> int | None:
        """The graph's fixed batch size, or None when the batch axis is dynamic."""
        dim = self.info.input("rgb").shape[0]
        return None if isinstance(dim, str) else dim

    def _gopt_feeds(self, rgb, aux, color_order):
        cfg = self.config
        check_sensor_kinds(rgb, aux, cfg["modality"], len(cfg["aux_mean"]))  # the likely cause first
        if not self.resize_aux:
            check_pair(rgb, aux)
        if self.info.frame_input:  # the graph preprocesses raw frames itself
            return frame_feeds(rgb, aux, cfg["img_size"], cfg["modality"], cfg["aux_channels"], self.info.frame_input,
                               color_order or self.color_order)
        x = preprocess_rgb(rgb, cfg["img_size"], cfg["rgb_mean"], cfg["rgb_std"], color_order or self.color_order)
        a = preprocess_aux(aux, cfg["img_size"], cfg["aux_mean"], cfg["aux_std"], cfg["modality"], self.depth_units)
        return x, a

    def _infer_gopt(self, rgbs: list[np.ndarray], auxs: list[np.ndarray], want_logits: bool):
        fixed = self._batch_limits()
        n = len(rgbs)
        graph = self.graphs["gopt"]
        # A fixed batch, else the engine profile's maximum (TensorRT), else everything at once;
        # fewer frames than the graph takes (a fixed batch, the profile's minimum) are padded.
        step = fixed or getattr(graph, "max_batch", None) or n
        least = fixed or getattr(graph, "min_batch", None) or 1
        # Files that do not flag non-finite logits in their labels: fetch the logits to check them.
        fetch_logits = want_logits or self.info.nonfinite_label is None
        labels, logits = [], []
        for start in range(0, n, step):
            x, a = np.concatenate(rgbs[start:start + step]), np.concatenate(auxs[start:start + step])
            used = len(x)
            if used < least:  # pad with copies of the last frame
                x = np.concatenate([x, np.repeat(x[-1:], least - used, 0)])
                a = np.concatenate([a, np.repeat(a[-1:], least - used, 0)])
            out = graph.infer({"rgb": x, "aux": a}, ["labels", "logits"] if fetch_logits else ["labels"])
            for i in range(used):
                where = f" (frame {start + i} of the batch)" if n > 1 else ""
                check_gopt_frame(out["labels"][i], out["logits"][i] if fetch_logits else None, self.info,
                                 self.path.name, where)
            labels.append(out["labels"][:used])
            if want_logits:
                logits.append(out["logits"][:used])
        return np.concatenate(labels), (np.concatenate(logits) if want_logits else None)

    def run(self, image, aux=None, points=None, labels=None, return_logits: bool = False, color_order=None):
        """GoPT: ``run(rgb, aux) -> labels`` (H x W uint8), ``(labels, logits [K, H, W])`` with
        ``return_logits``. SimCMF: ``run(image, points=[(x, y), ...]) -> (mask, iou)``."""
        if self.kind == "simcmf":
            if aux is not None:
                raise ValueError("SimCMF takes one H x W x C image; pass clicks with points=[(x, y), ...]")
            return self._run_simcmf(image, points, labels, return_logits)
        if aux is None or points is not None or labels is not None:
            raise ValueError("GoPT takes run(rgb, aux): an RGB frame and its auxiliary frame, no points")
        out = self.run_batch([(image, aux)], return_logits, color_order)
        return out[0]

    def run_batch(self, pairs, return_logits: bool = False, color_order=None):
        """GoPT on a list of (rgb, aux) pairs, batched as the graph allows; one result per pair."""
        return self.run_prepared([self.prepare(rgb, aux, color_order) for rgb, aux in pairs], return_logits)

    def prepare(self, rgb, aux, color_order=None) -> "Prepared":
        """Check and preprocess one GoPT frame pair (CPU work a pipeline can overlap with inference)."""
        if self.kind != "gopt":
            raise ValueError("prepare / run_batch are for GoPT models")
        x, a = self._gopt_feeds(rgb, aux, color_order)
        return Prepared(x, a, rgb.shape[:2])

    def run_prepared(self, prepared: list["Prepared"], return_logits: bool = False):
        """Inference and postprocessing for prepared frames; one result per frame."""
        if not prepared:
            return []
        lab, logits = self._infer_gopt([p.rgb for p in prepared], [p.aux for p in prepared], return_logits)
        results = []
        for i, p in enumerate(prepared):
            frame_labels = labels_to_frame(lab[i], p.size)
            results.append((frame_labels, resize_planes(logits[i], p.size)) if return_logits else frame_labels)
        return results

    # ---- SimCMF -------------------------------------------------------------------------------

    def set_image(self, image) -> None:
        """Run the encoder on ``image`` (H x W x C) once; clicks on it then cost one decoder run."""
        self._embed(image)

    def _embed(self, image):
        """(embedding, (H, W)) of ``image``: the cached one when it is the last image encoded."""
        key = _fingerprint(image)
        cache = self._cache
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        with self._encoder_lock:  # one encoder run per new image, even when threads click on it at once
            cache = self._cache
            if cache is not None and cache[0] == key:
                return cache[1], cache[2]
            x = self.encoder_input(image)
            embedding = self.graphs["encoder"].infer({"x": x})["embeddings"]
            check_finite(embedding, self.path.name, "image embeddings")
            self._cache = (key, embedding, image.shape[:2])
            return embedding, image.shape[:2]

    def encoder_input(self, image) -> np.ndarray:
        """SimCMF: the encoder's input [1, C, S, S] float32 for ``image`` (H x W x C)."""
        cfg = self.config
        if cfg.get("pixel_mean") is None:
            raise ValueError("this SimCMF model has no normalisation constants: its modality is unknown; "
                             "export it with --modality (e.g. rgbt, rgbd, t)")
        rgb_first = (cfg.get("modality") or "").startswith(("rgb", "pgsnet_rgb"))
        return preprocess_image(image, cfg["in_chans"], cfg["img_size"], cfg["pixel_mean"], cfg["pixel_std"],
                                cfg.get("pixel_scale"), self.color_order, rgb_first, cfg.get("minmax_channels"))

    def _run_simcmf(self, image, points, labels, return_logits):
        if points is None or len(points) == 0:
            raise ValueError("SimCMF needs at least one click: points=[(x, y), ...] in image pixels")
        embedding, (H, W) = self._embed(image)
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        if not np.isfinite(pts).all() or (pts < 0).any() or (pts[:, 0] >= W).any() or (pts[:, 1] >= H).any():
            raise ValueError(f"points must lie inside the {W}x{H} image as (x, y) pixels, got {pts.tolist()}")
        lab = np.ones(len(pts), np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
        if lab.shape != (len(pts),) or not np.isin(lab, (0, 1)).all():
            raise ValueError(f"labels must be one 0 (background) or 1 (foreground) per point, got {lab.tolist()}")
        side = self.config["img_size"]
        coords = pts * np.array([side / W, side / H], np.float32)  # stretched to the square input
        out = self.graphs["decoder"].infer({"embeddings": embedding, "point_coords": coords[None],
                                            "point_labels": lab[None]})
        decoder = self.graphs["encoder"].info.companion or f"the decoder of {self.path.name}"
        check_finite(out["low_res_logits"], decoder, "mask logits")
        check_finite(out["iou"], decoder, "IoU estimates")
        logits = resize_planes(out["low_res_logits"][0], (H, W))[0]
        mask, iou = logits > 0, float(out["iou"][0, 0])
        return (mask, iou, logits) if return_logits else (mask, iou)


def frame_depth_units(graphs: dict, asked: float | None) -> float:
    """The depth units of a GoPT graph taking raw frames (fixed at export), else ``asked``
    (default 0.001); a ValueError when the two differ."""
    fixed = (getattr(graphs.get("gopt"), "info", None) and graphs["gopt"].info.frame_input or {}).get("depth_units")
    if fixed is None or graphs["gopt"].info.config.get("modality") != "depth":
        return 0.001 if asked is None else asked
    if asked is not None and not np.isclose(asked, fixed, rtol=1e-6, atol=0):
        raise ValueError(f"this model converts depth counts inside its graph at {fixed} metres per count; "
                         f"depth_units={asked} asks for another (export again with --depth-units {asked})")
    return fixed


def resize_planes(planes: np.ndarray, size) -> np.ndarray:
    """[K, h, w] float -> [K, H, W] bilinear (half-pixel centres, as align_corners=False)."""
    if planes.shape[1:] == tuple(size):
        return planes
    K = planes.shape[0]
    out = np.empty((K, *size), np.float32)
    for start in range(0, K, 512):  # OpenCV resizes at most 512 channels at once
        chunk = planes[start:start + 512].transpose(1, 2, 0).astype(np.float32)
        r = cv2.resize(chunk, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out[start:start + 512] = r.reshape(*size, -1).transpose(2, 0, 1)
    return out


def _fingerprint(image) -> tuple:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    return image.shape, image.dtype.str, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
