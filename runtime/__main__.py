"""Segment a paired sensor stream from the command line.

    python -m runtime MODEL --rgb A [--aux B] [--out DIR] [--max-frames N] [--drop-stale]
                      [--device cpu|cuda] [--color-order bgr|rgb] [--resize-aux] [--quiet]

A and B: two video files, two image folders (paired by name, or --match timestamp), two
images, two camera indices, or A alone: an MFNet 4-channel PNG file or folder. With --out,
writes NAME_overlay.png (labels over the colour frame) and NAME_labels.png (the label map,
one class index per pixel) per frame. Prints a line per frame and a summary: frames, fps,
mean / p50 / p90 milliseconds per stage, dropped and skipped frames.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time

import cv2

from .preprocess import overlay
from .segmenter import Segmenter
from .streams import STAGES, open_source, stream, timing_summary

UNTRAINED = "note: this model is marked untrained (seeded random weights); its labels mean nothing"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="exported model: .onnx, .engine / .plan, or a .pt checkpoint")
    ap.add_argument("--rgb", required=True, help="video, image folder, image, camera index, or MFNet 4-channel PNG(s)")
    ap.add_argument("--aux", help="the auxiliary stream (thermal / depth ...), same kind as --rgb; "
                                  "not needed for MFNet 4-channel PNGs")
    ap.add_argument("--out", help="folder for overlays and label maps")
    ap.add_argument("--max-frames", type=int, help="stop after N frames")
    ap.add_argument("--drop-stale", action="store_true", help="drop queued frames when inference falls behind")
    ap.add_argument("--queue-size", type=int, default=2, help="prepared frames queued ahead of inference")
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr",
                    help="channel order of the decoded colour frames (OpenCV decodes to bgr)")
    ap.add_argument("--resize-aux", action="store_true", help="accept aux frames of another size (same field of view)")
    ap.add_argument("--depth-units", type=float, default=0.001,
                    help="metres per count of 16-bit depth images (default 0.001: millimetres)")
    ap.add_argument("--match", choices=("name", "timestamp"), default="name", help="how two folders are paired")
    ap.add_argument("--max-skew-ms", type=float, default=50.0, help="--match timestamp: largest rgb / aux gap")
    ap.add_argument("--time-unit", choices=("s", "ms", "us", "ns"), default="ms",
                    help="--match timestamp: the unit of the numbers in the file names")
    ap.add_argument("--quiet", action="store_true", help="no line per frame")
    return ap.parse_args(argv)


def frame_line(r) -> str:
    t = r.timing
    return (f"frame {r.frame.index:>5} {r.frame.name}: decode {t['decode']:.1f} ms, preprocess "
            f"{t['preprocess']:.1f} ms, infer {t['infer']:.1f} ms, latency {t['latency']:.1f} ms")


def summary_lines(timings, seconds: float, dropped: int, skipped: int) -> list[str]:
    n = len(timings)
    fps = n / seconds if seconds > 0 else 0.0
    lines = [f"frames {n}, {fps:.2f} fps ({seconds:.2f} s), dropped {dropped} stale, skipped {skipped} unmatched"]
    stats = timing_summary(timings)
    if stats:
        lines.append(f"{'ms':<12}{'mean':>9}{'p50':>9}{'p90':>9}")
        lines += [f"{s:<12}{stats[s]['mean']:>9.1f}{stats[s]['p50']:>9.1f}{stats[s]['p90']:>9.1f}"
                  for s in STAGES if s in stats]
    return lines


class OutputWriter:
    """Writes NAME_overlay.png and NAME_labels.png in a background thread, so that PNG
    encoding overlaps the next frame's inference."""

    def __init__(self, folder: str, num_classes: int, depth: int = 4):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.num_classes, self.error, self.written = folder, num_classes, None, 0
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
        for suffix, image in (("overlay", overlay(rgb, labels, self.num_classes)), ("labels", labels)):
            path = os.path.join(self.folder, f"{name}_{suffix}.png")
            if not cv2.imwrite(path, image, png):
                raise ValueError(f"{path}: cannot be written")
            self.written += 1

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def run(args) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    seg = Segmenter(args.model, device=args.device, color_order=args.color_order, resize_aux=args.resize_aux,
                    depth_units=args.depth_units)
    cfg = seg.config
    source = open_source(args.rgb, args.aux, cfg.get("modality", "thermal"), args.resize_aux, args.match,
                         args.max_skew_ms, args.time_unit)
    print(f"{seg!r}; source {type(source).__name__}")
    if seg.info.untrained:
        print(UNTRAINED)
    writer = OutputWriter(args.out, cfg["num_classes"]) if args.out else None
    timings, dropped, code = [], 0, 0
    start = time.perf_counter()
    frames = stream(seg, source, args.queue_size, args.drop_stale)
    try:
        for r in frames:
            timings.append(r.timing)
            dropped = r.dropped
            if writer:
                writer.put(r)
            if not args.quiet:
                print(frame_line(r), flush=True)
            if args.max_frames and len(timings) >= args.max_frames:
                break
    except KeyboardInterrupt:
        code = 130
    finally:
        frames.close()  # stops the decoding thread, which closes the source
        if writer:
            writer.close()
    seconds = time.perf_counter() - start
    print("\n".join(summary_lines(timings, seconds, dropped, source.skipped)))
    if writer:
        print(f"wrote {writer.written} images to {args.out}")
    return code


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as e:  # bad paths, frames, models, outputs: one line, no traceback
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
