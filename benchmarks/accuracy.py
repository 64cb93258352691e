"""Accuracy on labelled frames: mean IoU, per-class IoU, pixel accuracy and the confusion matrix of
every model / backend / precision side by side, and their label agreement with PyTorch fp32.

    python -m benchmarks.accuracy MODEL [MODEL ...] --data DIR [--format auto|mfnet|pst900|nyuv2|sunrgbd|whu-os|folder]
        [--split test] [--backend B[,B]] [--precision P[,P]] [--reference CKPT | --no-reference]
        [--upsample labels|logits] [--limit N] [--json OUT] [--plot OUT.png] [--ignore-index 255]

MODEL: a ``gopt/1`` checkpoint, an exported ``.onnx`` or a TensorRT ``.engine``. Each runs on
its own backend and precision unless ``--backend`` / ``--precision`` ask for others (a
checkpoint is then exported to ONNX, or quantized to INT8, once and cached in --work-dir, as
benchmarks/latency.py does). Every model runs through ``runtime.Segmenter``: the deployed
checks, resizing to the model's input and normalisation.

The data set's ground-truth labels are the reference for IoU and accuracy; they are never
resampled. Predictions are brought to the labels' resolution: the model's label map resized
with nearest neighbour (``--upsample labels``, what ``Segmenter.run`` returns), or its logits
resized bilinearly and then the argmax (``--upsample logits``, as mmsegmentation-based
evaluations do). Pixels the data set marks as unlabelled (its ignore label) are not counted;
``evaluation/datasets.py`` documents each layout, class list and ignore label with its source.

Label agreement: the share of pixels on which a model's labels equal those of the PyTorch
fp32 reference (``--reference CKPT``, by default the first checkpoint among the models), and
its mean IoU change. For WHU-OPT-SAR (RGB-SAR) the table adds the average accuracy and
Cohen's kappa that the remote-sensing literature reports beside the overall (pixel) accuracy.

Exit status: 0 evaluated, 1 no model could be evaluated on any frame, 2 bad arguments,
model files or data set layout (one line on stderr), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluation import FORMATS, Entry, evaluate, open_dataset  # noqa: E402
from evaluation.metrics import IGNORE  # noqa: E402
from runtime.cli import (ArgumentParser, UsageError, check_result_outputs, count, interrupt_code,  # noqa: E402
                         output_dir, run_tool)
from runtime.files import write_figure_atomic, write_text_atomic  # noqa: E402
from runtime.progress import Progress  # noqa: E402

from benchmarks import latency  # noqa: E402

BACKENDS = latency.BACKENDS
SAR_METRICS = ("whu-os",)  # data sets whose literature reports OA, AA and kappa


# ---- models -------------------------------------------------------------------------------------

def own_backend(path: Path) -> str:
    from runtime.backends.factory import backend_kind

    kind = backend_kind(path)
    return {"torch": "torch", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[kind]


def own_precision(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "fp32"
    if suffix == ".onnx":
        from runtime.metadata import read_onnx_info

        return latency.file_precision(read_onnx_info(path))
    from runtime.backends.trt_backend import read_sidecar

    return read_sidecar(path).model.precision


def open_entry(path: Path, backend: str, precision: str, args) -> Entry:
    """The model as an Entry: its Segmenter, or the reason it cannot run here."""
    from runtime import Segmenter

    info = {"file": path.name, "backend": backend, "precision": precision}
    name = f"{path.name} {backend} {precision}"
    try:
        b = latency.make_backend(path, backend, precision, args.latency)
    except latency.Unavailable as e:
        return Entry(name, None, f"{e.status}: {e}", info=info)
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        return Entry(name, None, f"failed: {' '.join(str(e).split())}", info=info)
    seg = Segmenter.from_backends({"gopt": b}, name=path.name, resize_aux=args.resize_aux)
    return Entry(name, seg, info=info)


def open_entries(args) -> list[Entry]:
    entries = []
    for path in args.models:
        if latency.model_kind(path) != "gopt":
            raise UsageError(f"{path}: a SimCMF model; accuracy on labelled frames is measured for GoPT label maps")
        backends = args.backends or [own_backend(path)]
        for backend in backends:
            for precision in args.precisions or [own_precision(path)]:
                entries.append(open_entry(path, backend, precision, args))
    return entries


def reference_entry(args, entries: list[Entry]) -> Entry | None:
    """PyTorch fp32 on the reference checkpoint: shared with that row when it is one of the models."""
    if args.no_reference:
        return None
    ref = args.reference or next((m for m in args.models if m.suffix.lower() in (".pt", ".pth")), None)
    if ref is None:
        return None
    for e in entries:
        if e.segmenter is not None and e.info == {"file": ref.name, "backend": "torch", "precision": "fp32"} \
                and Path(e.segmenter.path).name == ref.name:
            return Entry(f"reference: {ref.name} torch fp32", e.segmenter, info=dict(e.info))
    entry = open_entry(ref, "torch", "fp32", args)
    if entry.segmenter is None:
        raise UsageError(f"--reference {ref}: PyTorch fp32 cannot run it: {entry.status}")
    entry.name = f"reference: {entry.name}"
    return entry


def check_models(entries: list[Entry], reference: Entry | None) -> str:
    """The auxiliary modality the models share; models of another one are marked failed."""
    running = [e for e in ([reference] if reference else []) + entries if e.segmenter is not None]
    if not running:
        raise UsageError("none of the models can run here: " + "; ".join(f"{e.name}: {e.status}" for e in entries))
    modality = running[0].segmenter.config["modality"]
    for e in running:
        m = e.segmenter.config["modality"]
        if m != modality:
            if e is reference:
                raise UsageError(f"the reference {e.info['file']} takes RGB-{m} frames, the models RGB-{modality}")
            e.segmenter, e.status = None, f"failed: takes RGB-{m} frames; the first model takes RGB-{modality}"
    return modality


def check_classes(entries: list[Entry], reference: Entry | None, classes: tuple, dataset: str) -> list[str]:
    """Models whose class count differs from the data set's are marked failed; returns notes
    on class names that differ (the order of classes matters, their spelling varies)."""
    from runtime.colors import class_names

    notes = []
    for e in ([reference] if reference else []) + entries:
        if e.segmenter is None:
            continue
        cfg = e.segmenter.config
        if cfg["num_classes"] != len(classes):
            why = f"has {cfg['num_classes']} classes, {dataset} has {len(classes)}"
            if e is reference:
                raise UsageError(f"the reference {e.info['file']} {why}")
            e.segmenter, e.status = None, f"failed: {why}"
            continue
        names = class_names(cfg)
        differ = [i for i, (a, b) in enumerate(zip(names, classes)) if _norm(a) != _norm(b)]
        if cfg.get("class_names") and differ:
            i = differ[0]
            notes.append(f"{e.info['file']}: class names differ from {dataset}'s at {len(differ)} of {len(classes)} "
                         f"indices (first: {i} {names[i]!r} vs {classes[i]!r}); check the class order")
        if cfg.get("untrained"):
            notes.append(f"{e.info['file']} is UNTRAINED (seeded random weights): its scores against real labels "
                         "mean nothing; only agreement between backends does")
    return sorted(set(notes))


def _norm(name: str) -> str:
    return "".join(c for c in str(name).lower() if c.isalnum())


# ---- report -------------------------------------------------------------------------------------

def pct(x, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.{digits}f}"


def table(results: list[dict], dataset: str) -> list[str]:
    sar = dataset in SAR_METRICS
    head = ["model", "backend", "precision", "frames", "mIoU %", "pixel acc %"]
    head += ["AA %", "kappa"] if sar else []
    head += ["labels = ref %", "mIoU change"]
    rows = []
    for r in results:
        if r["status"] != "ok":
            continue
        row = [r["file"], r["backend"], r["precision"], str(r["frames"]), pct(r["mean_iou"]), pct(r["pixel_accuracy"])]
        if sar:
            row += [pct(r["average_accuracy"]), "-" if r["kappa"] is None else f"{r['kappa']:.4f}"]
        change = r.get("mean_iou_change")
        row += [pct(r.get("label_agreement"), 4), "-" if change is None else f"{100 * change:+.2f}"]
        rows.append(row)
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)] if rows else [len(h) for h in head]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(x, widths)) for x in rows]
    return lines


def class_table(results: list[dict], classes: tuple) -> list[str]:
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return []
    heads = [f"{r['file']} {r['backend']} {r['precision']}" for r in ok]
    name_w = max(len("class IoU %"), *(len(c) for c in classes))
    lines = ["class IoU %".ljust(name_w) + "  " + "  ".join(heads)]
    for c in classes:
        cells = [pct(r["iou"][c]).rjust(len(h)) for r, h in zip(ok, heads)]
        lines.append(c.ljust(name_w) + "  " + "  ".join(cells))
    return lines


def plot(results: list[dict], classes: tuple, path: Path) -> None:
    """Each model's confusion matrix, rows normalised (ground truth), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r["status"] == "ok"]
    n, K = len(ok), len(classes)
    side = min(3.0 + 0.22 * K, 12.0)
    fig, axes = plt.subplots(1, max(n, 1), figsize=(side * max(n, 1), side), squeeze=False)
    for ax, r in zip(axes[0], ok):
        m = np.asarray(r["confusion_matrix"], np.float64)
        rows = m.sum(1, keepdims=True)
        norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="viridis")
        ticks = np.arange(K)
        size = 8 if K <= 12 else 5
        ax.set_xticks(ticks, classes, rotation=90, fontsize=size)
        ax.set_yticks(ticks, classes, fontsize=size)
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth")
        ax.set_title(f"{r['file']} {r['backend']} {r['precision']}\nmIoU {pct(r['mean_iou'])} %", fontsize=9)
        if K <= 12:
            for i in range(K):
                for j in range(K):
                    if m[i, j]:
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if norm[i, j] < 0.6 else "black")
    for ax in axes[0][len(ok):]:
        ax.axis("off")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---- command line -------------------------------------------------------------------------------

def parse_args(argv):
    ap = ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="checkpoints (.pt), ONNX exports, TensorRT engines")
    ap.add_argument("--data", type=Path, required=True, help="the labelled data set's folder")
    ap.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                    help="its layout (default: recognised from the folder)")
    ap.add_argument("--split", default="test", help="the split to evaluate (default test; the folder layout has one)")
    ap.add_argument("--backend", help=f"comma list of {','.join(BACKENDS)} (default: each model file's own)")
    ap.add_argument("--precision", help="comma list of fp32, fp16, bf16, int8 (default: each model file's own)")
    ref = ap.add_mutually_exclusive_group()
    ref.add_argument("--reference", type=Path, help="the checkpoint whose PyTorch fp32 labels the models are compared "
                                                    "with (default: the first checkpoint among the models)")
    ref.add_argument("--no-reference", action="store_true", help="no label agreement")
    ap.add_argument("--upsample", choices=("labels", "logits"), default="labels",
                    help="bring predictions to the labels' resolution by resizing the label map (nearest, as "
                         "deployed; default) or the logits (bilinear, then argmax)")
    ap.add_argument("--ignore-index", type=int, default=IGNORE,
                    help="folder layout: the label value of unlabelled pixels (default 255)")
    ap.add_argument("--resize-aux", action="store_true",
                    help="folder layout: accept auxiliary frames of another size (same field of view)")
    ap.add_argument("--limit", type=count, metavar="N", help="evaluate the first N frames only")
    ap.add_argument("--json", type=Path, help="write the full report (every frame, every matrix) here")
    ap.add_argument("--plot", type=Path, help="write the confusion matrices as a picture (PNG)")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "mmseg-deploy-bench",
                    help="where exports of a checkpoint for other backends are cached")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()] if args.backend else None
    if args.backends and set(args.backends) - set(BACKENDS):
        raise UsageError(f"unknown backends {sorted(set(args.backends) - set(BACKENDS))}; choose from "
                         f"{','.join(BACKENDS)}")
    args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()] if args.precision else None
    if args.precisions and any(p.split(":")[0] not in latency.PRECISIONS for p in args.precisions):
        raise UsageError(f"--precision takes {', '.join(latency.PRECISIONS)}")
    if not args.data.is_dir():
        raise UsageError(f"{args.data}: " + ("is a file; --data is the data set's folder" if args.data.exists()
                                             else "no such folder (--data)"))
    for m in args.models + ([args.reference] if args.reference else []):
        if not m.is_file():
            raise UsageError(f"{m}: no such file")
    if not 0 <= args.ignore_index <= 255:
        raise UsageError(f"--ignore-index must be 0-255 (labels are 8-bit), got {args.ignore_index}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.latency = SimpleNamespace(size=None, work_dir=args.work_dir, quick=False, backend_given=True,
                                   cuda_graph=False)
    return args


def run(argv=None) -> int:
    """The command; errors are one line and exit statuses as every tool's (runtime/cli.py)."""
    return run_tool(accuracy_command, parse_args, argv)


def accuracy_command(args) -> int:
    check_result_outputs(args.json, args.plot)
    output_dir(args.work_dir)
    progress = Progress(3)
    with progress(f"opening {len(args.models)} model(s)"):
        entries = open_entries(args)
        reference = reference_entry(args, entries)
        modality = check_models(entries, reference)
    with progress(f"reading {args.data}"):
        first = next(e for e in ([reference] if reference else []) + entries if e.segmenter is not None)
        from runtime.colors import class_names

        frames = open_dataset(args.data, args.format, args.split, modality, tuple(class_names(first.segmenter.config)),
                              args.ignore_index)
        notes = check_classes(entries, reference, frames.classes, frames.spec.name)
    spec = frames.spec
    print(f"{spec.title}, {frames.layout}: split {frames.split}, {len(frames)} "
          f"{'images' if spec.name == 'whu-os' and 'tiles' in frames.layout else 'frames'}; "
          f"not counted: {spec.ignored}")
    how = "label maps nearest-neighbour" if args.upsample == "labels" else "logits bilinear, then argmax"
    print(f"frames resized to each model's input as deployed; predictions resized back to the labels' resolution "
          f"({how}); labels never resampled")
    for line in notes + [f"note: {n}" for n in frames.notes]:
        print(line if line.startswith("note:") else f"note: {line}")
    with progress(f"evaluating {sum(e.segmenter is not None for e in entries)} model(s)"
                  + (" and the PyTorch fp32 reference" if reference and not any(
                      e.segmenter is reference.segmenter for e in entries) else "")):
        try:
            records = evaluate(entries, frames, reference, args.upsample, args.limit, progress)
        except KeyboardInterrupt as e:
            print("\ninterrupted: no report (the counts so far cover part of the split)", file=sys.stderr)
            return interrupt_code(e)
    results = [e.summary(frames.classes, reference) for e in entries]
    evaluated = sum(r["status"] == "evaluated" for r in records)
    print()
    for line in table(results, spec.name):
        print(line)
    not_run = [f"{r['file']} {r['backend']} {r['precision']}: {r['status']}" for r in results if r["status"] != "ok"]
    if not_run:
        print("not evaluated: " + "; ".join(not_run))
    if reference is not None:
        print(f"labels = ref: share of pixels with the labels of {reference.name.split(': ', 1)[1]}")
    print()
    for line in class_table(results, frames.classes):
        print(line)
    skipped = [r for r in records if r["status"] == "skipped"]
    failed = sum(bool(r.get("failed")) for r in records)
    print(f"\nframes: {evaluated} evaluated, {len(skipped)} skipped"
          + (f", {failed} that some model could not segment" if failed else "")
          + (" (each listed above and in --json)" if skipped or failed else ""))
    report = {"dataset": {"format": spec.name, "title": spec.title, "layout": frames.layout, "root": str(args.data),
                          "split": frames.split, "classes": list(frames.classes), "ignored": spec.ignored,
                          "notes": frames.notes},
              "settings": {"upsample": args.upsample, "limit": args.limit,
                           "reference": reference.name if reference else None},
              "environment": latency.environment(["-m benchmarks.accuracy", *args.argv]),
              "notes": notes, "results": results,
              "reference": reference.summary(frames.classes) if reference is not None else None,
              "frames": records}
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, frames.classes, args.plot)
        print(f"wrote {args.plot}")
    return 0 if any(r.get("frames") for r in results) else 1


def main(argv=None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
