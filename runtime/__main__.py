"""Segment a paired sensor stream from the command line.

    python -m runtime MODEL --rgb A [--aux B] [--out DIR] [--max-frames N] [--drop-stale]
                      [--device cpu|cuda] [--backend onnxruntime|openvino] [--precision fp32|bf16]
                      [--color-order bgr|rgb] [--resize-aux] [--quiet] [--on-error skip|stop]
    python -m runtime MODEL --bag IN --rgb-topic T --aux-topic T [--max-skew-ms 20]
                      [--out-bag OUT [--storage mcap|sqlite3] [--topic-prefix gopt] [--copy-inputs]]
    python -m runtime SIMCMF.encoder.onnx --rgb IMAGE [--aux IMAGE] --points X,Y[,LABEL] ... [--out DIR]
    python -m runtime SIMCMF.encoder.onnx --bag IN --rgb-topic T --aux-topic T --points X,Y[,LABEL] ...
                      [--out-bag OUT ...] [--out DIR]

A and B: two video files, two image folders (paired by name, or --match timestamp), two
images, two camera indices, or A alone: an MFNet 4-channel PNG file or folder. With --out,
writes NAME_overlay.png (labels over the colour frame) and NAME_labels.png (the label map,
one class index per pixel) per frame. A ROS bag (rosbag2 folder, .db3, .mcap or ROS 1
.bag) is read with --bag and its two image topics, paired by header stamp (runtime/ros/bags.py);
--out-bag writes the masks as a new rosbag2. Prints a line per frame and a summary: frames, fps,
mean / p50 / p90 milliseconds per stage, dropped stale frames, and every frame that was
not segmented (failed, or without a partner) with the reason.

SimCMF models segment one image on clicks: ``--points`` in image pixels, label 1 (the
object, default) or 0 (background). With --out, writes NAME_mask.png (0 / 255) and
NAME_overlay.png (the mask tinted, the clicks drawn); prints the mask's size and the
model's IoU estimate. With --bag, the same clicks on every frame pair (RGB stacked with
the auxiliary frame as the model's modality says); --out-bag writes each mask (mono8 0 / 1)
and its overlay with the RGB message's header.

A frame that cannot be read or segmented (in a bag: a damaged message, sizes that do not
add up, an unsupported encoding) is skipped with one line saying which and why
(--on-error stop: the run stops there instead). Exit status: 0 every frame segmented;
1 some frames failed; 2 bad arguments, inputs, model or output folder (one line);
130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 70 an unexpected error (a bug; one
line, MMSEG_DEBUG=1 prints the traceback). The summary is printed in every case but 2 and 70;
a second signal while the outputs are being finished waits for them.

Outputs (checked before the model loads): --out is a folder (created; images of an earlier
run in it are replaced and counted in the summary); --out-bag must not exist. Two inputs
that would write one output name (a.png and a.tiff) are refused before the first frame.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time

from pathlib import Path

import cv2
import numpy as np

from .cli import (ArgumentParser, count, interrupt_code, output_dir, positive, run_tool, seconds, signals_after,
                  signals_deferred)
from .colors import class_names, mask_overlay, overlay
from .files import write_image_atomic
from .progress import elapsed
from .segmenter import Segmenter
from .sources.streams import STAGES, check_inputs_exist, open_source, read_image, stream, timing_summary

UNTRAINED = "note: this model is marked untrained (seeded random weights); its labels mean nothing"


def parse_args(argv=None):
    ap = ArgumentParser(prog="python -m runtime", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="exported model: .onnx, .engine / .plan, or a .pt checkpoint")
    ap.add_argument("--rgb", help="video, image folder, image, camera index, or MFNet 4-channel PNG(s)")
    ap.add_argument("--aux", help="the auxiliary stream (thermal / depth ...), same kind as --rgb; "
                                  "not needed for MFNet 4-channel PNGs")
    ap.add_argument("--out", help="folder for overlays and label maps")
    ap.add_argument("--max-frames", type=count, help="stop after N frames")
    ap.add_argument("--drop-stale", action="store_true", help="drop queued frames when inference falls behind")
    ap.add_argument("--queue-size", type=count, default=2, help="prepared frames queued ahead of inference")
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--backend", choices=("onnxruntime", "openvino"),
                    help="for a .onnx model: ONNX Runtime (default) or OpenVINO (x86 CPUs)")
    ap.add_argument("--precision", choices=("fp32", "bf16"),
                    help="--backend openvino: compute in the model's precision (default) or the CPU's native bf16")
    ap.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr",
                    help="channel order of the decoded colour frames (OpenCV decodes to bgr)")
    ap.add_argument("--resize-aux", action="store_true", help="accept aux frames of another size (same field of view)")
    ap.add_argument("--depth-units", type=positive,
                    help="depth models: metres per count of 16-bit depth images (default 0.001: millimetres)")
    ap.add_argument("--match", choices=("name", "timestamp"), default="name", help="how two folders are paired")
    ap.add_argument("--max-skew-ms", type=seconds,
                    help="--match timestamp or --bag: largest rgb / aux stamp gap (default 50 for folders, 20 for bags)")
    ap.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), default="ms",
                    help="--match timestamp: the unit of the numbers in the file names")
    ap.add_argument("--quiet", action="store_true", help="no line per frame")
    bag = ap.add_argument_group("ROS bags (pip install -e '.[ros]')")
    bag.add_argument("--bag", help="input bag: rosbag2 folder, .db3 or .mcap, or ROS 1 .bag (instead of --rgb / --aux)")
    bag.add_argument("--rgb-topic", help="--bag: the colour camera's Image or CompressedImage topic")
    bag.add_argument("--aux-topic", help="--bag: the auxiliary camera's (thermal / depth) image topic")
    bag.add_argument("--out-bag", help="write the masks to this new rosbag2 (a folder; must not exist)")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="--out-bag storage format")
    bag.add_argument("--topic-prefix", default="gopt",
                     help="--out-bag: masks go to /PREFIX/raw_segmentation_mask and /PREFIX/colored_segmentation_mask")
    bag.add_argument("--copy-inputs", action="store_true", help="--out-bag: copy the two input topics into it")
    ap.add_argument("--points", nargs="+", type=parse_point, metavar="X,Y[,LABEL]",
                    help="SimCMF: clicks in image pixels; LABEL 1 (object, default) or 0 (background); "
                         "with --bag, on every frame pair")
    ap.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                    help="a frame that cannot be read or segmented: skip it and go on (default), or stop")
    return ap.parse_args(argv)


def parse_point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except (ValueError, IndexError):
        label = -1
    if len(parts) not in (2, 3) or label not in (0, 1):
        raise argparse.ArgumentTypeError(f"{text!r}: expected X,Y or X,Y,LABEL with LABEL 1 (object) or 0 "
                                         "(background)")
    return x, y, label


def frame_line(r) -> str:
    t = r.timing
    return (f"frame {r.frame.index:>5} {r.frame.name}: decode {t['decode']:.1f} ms, preprocess "
            f"{t['preprocess']:.1f} ms, infer {t['infer']:.1f} ms, latency {t['latency']:.1f} ms")


def summary_lines(timings, seconds: float, dropped: int, failed=(), unmatched=()) -> list[str]:
    n = len(timings)
    fps = n / seconds if seconds > 0 else 0.0
    not_paired = sum(u.count for u in unmatched)
    lines = [f"frames {n}, {fps:.2f} fps ({seconds:.2f} s), dropped {dropped} stale, failed {len(failed)}, "
             f"unmatched {not_paired}"]
    stats = timing_summary(timings)
    if stats:
        lines.append(f"{'ms':<12}{'mean':>9}{'p50':>9}{'p90':>9}")
        lines += [f"{s:<12}{stats[s]['mean']:>9.1f}{stats[s]['p50']:>9.1f}{stats[s]['p90']:>9.1f}"
                  for s in STAGES if s in stats]
    if failed:
        lines.append(f"failed frames ({len(failed)}):")
        lines += [f"  {f.line()}" for f in failed]
    if unmatched:
        lines.append(f"not paired ({not_paired}):")
        lines += [f"  {u.line()}" for u in unmatched]
    return lines


class OutputWriter:
    """Writes NAME_overlay.png and NAME_labels.png in a background thread, so that PNG
    encoding overlaps the next frame's inference."""

    def __init__(self, folder: str, config: dict, depth: int = 4):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.error, self.written, self.replaced = folder, None, 0, 0
        self.num_classes, self.names = config["num_classes"], class_names(config)
        self.queue: queue.Queue = queue.Queue(depth)
        self.thread = threading.Thread(target=self._loop, name="output-writer", daemon=True)
        self.thread.start()

    def put(self, result) -> None:
        if self.error:
            raise self.error
        self.queue.put((result.frame.name, result.frame.rgb, result.labels))

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(*item)
                except Exception as e:  # noqa: BLE001 - raised by put() / close() in the main thread
                    self.error = e

    def _write(self, name, rgb, labels) -> None:
        png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        over = overlay(rgb, labels, self.num_classes, self.names)
        for suffix, image in (("overlay", over), ("labels", labels)):
            path = os.path.join(self.folder, f"{name}_{suffix}.png")
            self.replaced += os.path.exists(path)
            write_image_atomic(path, image, png)
            self.written += 1

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def open_bag_writer(args, num_classes: int):
    from .ros.bags import BagWriter

    copy = dict(copy_from=args.bag, copy_topics=(args.rgb_topic, args.aux_topic)) if args.copy_inputs else {}
    return BagWriter(args.out_bag, num_classes, args.storage, args.topic_prefix, **copy)


def print_skip(failure) -> None:
    print(failure.line(), file=sys.stderr, flush=True)


def open_model(args) -> Segmenter:
    """Inputs first (a missing file costs no model load), then the model, then the options
    that depend on its kind."""
    if (args.bag is None) == (args.rgb is None):
        raise ValueError("give --rgb (and --aux), or --bag with --rgb-topic and --aux-topic")
    if args.out_bag and not args.bag:
        raise ValueError("--out-bag writes masks for a --bag input; use --out for other sources")
    check_inputs_exist(args.rgb, args.aux)
    if args.bag is not None:
        check_inputs_exist(args.bag)
    if args.out:
        output_dir(args.out)
    if args.out_bag:
        output_dir(args.out_bag, exist_ok=False)
    options = {}
    if args.backend:
        options["backend"] = args.backend
    if args.precision:
        if args.backend != "openvino":
            raise ValueError("--precision is for --backend openvino; other backends run the model file's own "
                             "precision (export an fp16 model or quantize it instead)")
        options["precision"] = args.precision
    seg = Segmenter(args.model, device=args.device, color_order=args.color_order, resize_aux=args.resize_aux,
                    depth_units=args.depth_units or 0.001, **options)
    modality = seg.config.get("modality")
    if args.depth_units is not None and modality != "depth":
        raise ValueError(f"--depth-units is for depth models; {args.model} takes {modality} frames")
    return seg


def run(args) -> int:
    seg = open_model(args)
    if seg.kind == "simcmf":
        if not args.points:
            every = " (the same clicks on every frame pair of --bag)" if args.bag else ""
            raise ValueError(f"{args.model} is a SimCMF model: it segments on clicks; pass --points X,Y[,LABEL] ..."
                             + every)
        return run_simcmf_bag(seg, args) if args.bag else run_simcmf(seg, args)
    if args.points:
        raise ValueError(f"--points are clicks for SimCMF models; {args.model} is a GoPT model, which labels "
                         "every pixel without clicks")
    cfg = seg.config
    source = open_source(args.rgb, args.aux, cfg.get("modality", "thermal"), args.resize_aux, args.match,
                         args.max_skew_ms, args.time_unit, args.bag, args.rgb_topic, args.aux_topic)
    print(f"{seg!r}; source {type(source).__name__}")
    if seg.info.untrained:
        print(UNTRAINED)
    writer = OutputWriter(args.out, cfg) if args.out else None
    bag_out = open_bag_writer(args, cfg["num_classes"]) if args.out_bag else None
    timings, code = [], 0
    start = time.perf_counter()
    frames = stream(seg, source, args.queue_size, args.drop_stale, on_error=args.on_error, on_skip=print_skip)
    try:
        for r in frames:
            timings.append(r.timing)
            if writer:
                writer.put(r)
            if bag_out:
                with signals_after():  # a frame's two messages are written whole
                    bag_out.write(r.frame, r.labels)
            if not args.quiet:
                print(frame_line(r), flush=True)
            if args.max_frames and len(timings) >= args.max_frames:
                break
    except KeyboardInterrupt as e:
        code = interrupt_code(e)
    except BaseException:
        if bag_out:
            bag_out.abort()
        with signals_deferred():
            frames.close()
            if writer:
                writer.close()
        raise
    # The frames done so far, also after Ctrl-C: complete images and a complete bag. A second
    # signal while they are being finished waits for them.
    with signals_deferred() as deferred:
        frames.close()  # stops the decoding thread, which closes the source
        if writer:
            writer.close()
        if bag_out:
            bag_out.close()
        elapsed_s = time.perf_counter() - start
        print("\n".join(summary_lines(timings, elapsed_s, frames.dropped, frames.failed, frames.unmatched)))
        if writer:
            print(f"wrote {writer.written} images to {args.out}" + replaced_note(writer.replaced))
        if bag_out:
            print(f"wrote {bag_out.written} frames to {args.out_bag} ({args.storage})")
    return code or deferred.exit_code or (1 if frames.failed else 0)


def replaced_note(replaced: int) -> str:
    return f" ({replaced} of them replaced files of an earlier run)" if replaced else ""


def read_simcmf_image(rgb_path, aux_path, config: dict, model) -> np.ndarray:
    """The H x W x C image a SimCMF model takes: one file (e.g. an MFNet 4-channel PNG), or
    --rgb and --aux combined as for a sensor pair (``runtime.ros.messages.simcmf_image``)."""
    from .ros.messages import simcmf_image

    rgb_path = Path(rgb_path)
    if not rgb_path.is_file() or (aux_path is not None and not Path(aux_path).is_file()):
        raise ValueError(f"SimCMF segments one image: --rgb (and --aux) must be image files, got {rgb_path}"
                         + (f" and {aux_path}" if aux_path else ""))
    image = read_image(rgb_path, cv2.IMREAD_UNCHANGED)
    if aux_path is not None:
        image = simcmf_image(config, image, read_image(Path(aux_path), cv2.IMREAD_UNCHANGED))
    channels = int(config["in_chans"])
    got = 1 if image.ndim == 2 else image.shape[2]
    if got != channels:
        given = f"{rgb_path.name}" + (f" + {Path(aux_path).name}" if aux_path else "")
        raise ValueError(f"{model} takes {channels}-channel images; {given} give {got} channels")
    return image[..., 0] if image.ndim == 3 and channels == 1 else image


def display_bgr(image: np.ndarray) -> np.ndarray:
    """A viewable 8-bit BGR picture of a SimCMF input: its colour channels, else its first channel."""
    img = image if image.ndim == 3 else image[..., None]
    if img.shape[2] >= 3:
        view = img[..., :3]
    else:
        view = cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2BGR) if img.dtype == np.uint8 \
            else np.repeat(img[..., :1], 3, axis=2)
    if view.dtype != np.uint8:
        view = cv2.normalize(view.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(view)


def click_points(args) -> tuple[list[tuple[float, float]], list[int]]:
    """--points as (x, y) pixels and their labels."""
    return [(x, y) for x, y, _ in args.points], [label for _, _, label in args.points]


def write_mask_pngs(folder, name: str, image: np.ndarray, mask: np.ndarray, points, labels) -> tuple[Path, Path]:
    """NAME_mask.png (0 / 255) and NAME_overlay.png (the mask tinted over the image, the clicks drawn)."""
    mask_path, over_path = Path(folder) / f"{name}_mask.png", Path(folder) / f"{name}_overlay.png"
    write_image_atomic(mask_path, mask.astype(np.uint8) * 255)
    write_image_atomic(over_path, mask_overlay(display_bgr(image), mask, points, labels))
    return mask_path, over_path


def run_simcmf(seg, args) -> int:
    """One image, the user's clicks: the mask, its overlay, the IoU estimate."""
    cfg = seg.config
    image = read_simcmf_image(args.rgb, args.aux, cfg, args.model)
    print(repr(seg))
    if seg.info.untrained:
        print(UNTRAINED.replace("labels", "masks"))
    points, labels = click_points(args)
    with elapsed(f"encoding the image ({image.shape[1]}x{image.shape[0]} -> {cfg['img_size']}x{cfg['img_size']}, "
                 "once per image)"):
        seg.set_image(image)
    t0 = time.perf_counter()
    mask, iou = seg.run(image, points=points, labels=labels)
    ms = 1e3 * (time.perf_counter() - t0)
    H, W = mask.shape
    print(f"mask: {int(mask.sum())} pixels ({100 * float(mask.mean()):.1f}% of {W}x{H}), IoU estimate {iou:.3f}, "
          f"{len(points)} click(s), decoder {ms:.1f} ms")
    if args.out:
        existed = [(Path(args.out) / f"{Path(args.rgb).stem}_{k}.png").exists() for k in ("mask", "overlay")]
        mask_path, over_path = write_mask_pngs(args.out, Path(args.rgb).stem, image, mask, points, labels)
        print(f"wrote {mask_path} and {over_path}" + (" (replacing an earlier run's)" if any(existed) else ""))
    return 0


def mask_line(frame, mask: np.ndarray, iou: float, ms: float) -> str:
    return (f"frame {frame.index:>5} {frame.name}: mask {int(mask.sum())} pixels ({100 * float(mask.mean()):.1f}%), "
            f"IoU estimate {iou:.3f}, {ms:.1f} ms")


def run_simcmf_bag(seg, args) -> int:
    """The same clicks on every frame pair of a bag (``bags.click_frames``): the masks to
    --out-bag (and --out), a line per frame, the summary; skipped frames as for streams."""
    from .ros.bags import BagPair, click_frames

    points, labels = click_points(args)
    skew = 20.0 if args.max_skew_ms is None else args.max_skew_ms
    source = BagPair(args.bag, args.rgb_topic, args.aux_topic, skew, modality=None)
    print(f"{seg!r}; source BagPair")
    if seg.info.untrained:
        print(UNTRAINED.replace("labels", "masks"))
    failed, timings, code, bag_out = [], [], 0, None

    def skip(failure) -> None:
        failed.append(failure)
        print_skip(failure)

    start = last = time.perf_counter()
    try:
        bag_out = open_bag_writer(args, 2) if args.out_bag else None
        for frame, mask, iou in click_frames(seg, source, points, labels, args.on_error, skip):
            timings.append({"latency": 1e3 * (time.perf_counter() - last)})
            if bag_out:
                with signals_after():
                    bag_out.write(frame, mask)
            if args.out:
                write_mask_pngs(args.out, frame.name, frame.rgb, mask, points, labels)
            if not args.quiet:
                print(mask_line(frame, mask, iou, timings[-1]["latency"]), flush=True)
            if args.max_frames and len(timings) >= args.max_frames:
                break
            last = time.perf_counter()
    except KeyboardInterrupt as e:
        code = interrupt_code(e)
    except BaseException:
        if bag_out:
            bag_out.abort()
        source.close()
        raise
    with signals_deferred() as deferred:  # the frames done so far, also after Ctrl-C: a complete bag
        source.close()
        if bag_out:
            bag_out.close()
        print("\n".join(summary_lines(timings, time.perf_counter() - start, 0, failed, source.unmatched)))
        if args.out:
            print(f"wrote {2 * len(timings)} images to {args.out}")
        if bag_out:
            print(f"wrote {bag_out.written} frames to {args.out_bag} ({args.storage})")
    return code or deferred.exit_code or (1 if failed else 0)


def main(argv=None) -> int:
    """The command: its exit status (runtime/cli.py maps errors to one line)."""
    return run_tool(run, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
