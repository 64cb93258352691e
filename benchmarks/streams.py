"""GoPT on paired sensor streams at camera rates: latency from capture, drops, batching.

    python benchmarks/streams.py MODEL [--source RGB [AUX] | --rgb-hz 30 --aux-hz 8.7 --jitter-ms 2]
        [--cameras N] [--duration-s 20] [--drop-stale] [--no-pipeline] [--max-batch N]
        [--buffers 2] [--json OUT] [--plot OUT.png] [--markdown] [--quick]

MODEL: anything ``runtime.Segmenter`` opens (``.onnx``, ``.engine``, a ``gopt/1`` ``.pt``).
Frames come from two free-running sensors over the bundled real frames (MFNet RGB-T or
ESANet RGB-D, by the model's modality): RGB at ``--rgb-hz``, the auxiliary sensor at
``--aux-hz`` (default 8.7 Hz for thermal, a FLIR core; 30 Hz for depth), each with
``--jitter-ms`` of timing jitter; every RGB frame pairs with the newest auxiliary frame
(``runtime.sources.replay.SensorRates``). ``--source`` replays a recording instead (two folders,
two videos, an MFNet PNG folder: ``runtime.sources.streams.open_source``) at its recorded
timestamps (``runtime.sources.replay.Replay``). Cameras never wait: each holds ``--buffers``
unread frames and overwrites the oldest when the pipeline falls behind.

One camera: three configurations side by side, each ``--duration-s`` of capture time:
``sequential`` (read, preprocess, infer, one frame at a time), ``pipelined``
(``runtime.stream``: preprocessing overlaps inference) and ``pipelined+drop_stale``
(the newest frame first). ``--no-pipeline`` / ``--drop-stale`` run only those.
``--cameras N``: N camera pairs (independent clocks) share the model, ``batched``
(``runtime.sources.multicamera.multi_stream``: one ``run_batch`` of the newest pending pair of
each camera; batch sizes reported) against ``separate`` (N Segmenters, one stream each,
in parallel threads).

Reported per configuration and camera: frames offered, processed and sustained frames/s;
capture-to-result latency min / p50 / p90 / p99 / max; time queued (prepared, waiting for
inference); time in the sensor buffer; inference time; frames dropped by reason (stale:
discarded by drop_stale; overrun: overwritten in the sensor buffer; no_partner: no
auxiliary frame in time; error: a frame the runtime refused, skipped by the sequential and
batched loops; ``runtime.stream`` stops at such a frame, so the benchmark stops with its
message); pairing skew; this process's
CPU use, the whole machine's, and the GPU's (nvidia-smi) when there is one.
processed + dropped = offered, for every camera.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import _json_default, environment  # noqa: E402
from runtime import Segmenter  # noqa: E402
from runtime.cli import ArgumentParser, check_result_outputs, count, input_file, positive, run_tool, seconds  # noqa: E402,E501
from runtime.sources.streams import check_inputs_exist  # noqa: E402
from runtime.files import atomic_path, write_text_atomic  # noqa: E402
from runtime.sources.multicamera import multi_stream  # noqa: E402
from runtime.sources.replay import Replay, SensorRates  # noqa: E402
from runtime.sources.streams import open_source, stream  # noqa: E402

SAMPLES = ROOT / "data" / "samples"
DROP_REASONS = ("stale", "overrun", "no_partner", "error")
SINGLE_CONFIGS = ("sequential", "pipelined", "pipelined+drop_stale")
MULTI_CONFIGS = ("batched", "separate")


# ---- inputs -------------------------------------------------------------------------------------

def bundled_frames(modality: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bundled real pairs: MFNet RGB-T (two frames) or ESANet RGB-D (one frame)."""
    if modality == "depth":
        return [(cv2.imread(str(SAMPLES / "esanet_rgb.png"), cv2.IMREAD_COLOR),
                 cv2.imread(str(SAMPLES / "esanet_depth.png"), cv2.IMREAD_UNCHANGED))]
    if modality != "thermal":
        raise ValueError(f"the bundled frames are RGB-thermal and RGB-depth; a {modality} model needs --source")
    pairs = []
    for name in ("mfnet_01234N.png", "mfnet_01477D.png"):
        f = cv2.imread(str(SAMPLES / name), cv2.IMREAD_UNCHANGED)
        pairs.append((np.ascontiguousarray(f[..., :3]), np.ascontiguousarray(f[..., 3])))
    return pairs


def make_replay(args, modality: str, camera: int):
    """Camera ``camera``'s frame source for one configuration (a fresh clock each time)."""
    if args.source:
        src = open_source(args.source[0], args.source[1] if len(args.source) > 1 else None, modality=modality,
                          match=args.match)
        return Replay(src, args.duration_s, args.rgb_hz, args.buffers)
    return SensorRates(args.frames, args.rgb_hz, args.aux_hz, args.jitter_ms, args.duration_s, args.max_skew_ms,
                       args.buffers, seed=camera, name=f"cam{camera}")


def open_segmenter(args) -> Segmenter:
    seg = Segmenter(args.model, depth_units=args.depth_units)
    if seg.kind != "gopt":
        seg.close()
        raise ValueError(f"{args.model}: a SimCMF model segments on clicks; streams at camera rates run GoPT "
                         "models (rgb + aux frames)")
    return seg


# ---- utilisation --------------------------------------------------------------------------------

def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class GpuSampler:
    """GPU utilisation and memory sampled by ``nvidia-smi -lms`` while a run lasts."""

    def __init__(self, period_ms: int = 200):
        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", f"-lms={period_ms}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                util, mem = (float(x) for x in line.split(",")[:2])
                self.samples.append((util, mem))

    def stop(self) -> dict:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        self.thread.join(timeout=2)
        if not self.samples:
            return {}
        a = np.asarray(self.samples)
        return {"gpu_util_pct_mean": float(a[:, 0].mean()), "gpu_util_pct_max": float(a[:, 0].max()),
                "gpu_memory_mb_max": float(a[:, 1].max())}


class Utilisation:
    """CPU use of this process and of the whole machine (and the GPU's) over a run."""

    def __init__(self):
        self.t0, self.ru0, self.m0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), _machine_jiffies()
        self.gpu = GpuSampler() if shutil.which("nvidia-smi") else None

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        ru, m1 = resource.getrusage(resource.RUSAGE_SELF), _machine_jiffies()
        cpu_s = (ru.ru_utime - self.ru0.ru_utime) + (ru.ru_stime - self.ru0.ru_stime)
        cores = os.cpu_count() or 1
        out = {"wall_s": wall, "process_cpu_cores": cpu_s / wall, "process_cpu_pct": 100 * cpu_s / wall / cores}
        if self.m0 and m1 and m1[1] > self.m0[1]:
            out["machine_cpu_pct"] = 100 * (m1[0] - self.m0[0]) / (m1[1] - self.m0[1])
        if self.gpu:
            out.update(self.gpu.stop())
        return out


# ---- runs ---------------------------------------------------------------------------------------

def record(camera: int, r, batch: int = 1) -> dict:
    """One processed frame: capture time, stages (ms), cumulative stale drops of its camera."""
    t = r.timing
    queued = t.get("queued", t["latency"] - t["decode"] - t["preprocess"] - t["infer"])
    return {"camera": camera, "index": r.frame.index, "t_capture_s": r.frame.timestamp / 1e3,
            "latency": t["latency"], "infer": t["infer"], "queued": max(queued, 0.0), "read": t["decode"],
            "preprocess": t["preprocess"], "batch": batch, "stale": r.dropped, "errors": getattr(r, "errors", 0)}


def run_sequential(seg, replay) -> list[dict]:
    """Read, preprocess, infer: one frame at a time, no overlap, no queue. A frame the
    Segmenter refuses is counted and skipped."""
    out, errors = [], 0
    try:
        for frame in replay:
            read = time.perf_counter()
            try:
                prepared = seg.prepare(frame.rgb, frame.aux)
            except ValueError as e:
                errors += 1
                print(f"    frame {frame.name} skipped: {e}", file=sys.stderr)
                continue
            done = time.perf_counter()
            seg.run_prepared([prepared])
            t1 = time.perf_counter()
            out.append({"camera": 0, "index": frame.index, "t_capture_s": frame.timestamp / 1e3,
                        "latency": 1e3 * (t1 - frame.captured), "infer": 1e3 * (t1 - done), "queued": 0.0,
                        "read": 1e3 * (read - frame.captured), "preprocess": 1e3 * (done - read), "batch": 1,
                        "stale": 0, "errors": errors})
    finally:
        replay.close()
    return out


def run_separate(segs, replays) -> list[dict]:
    """One Segmenter and one pipelined stream per camera, all at once in threads."""
    records: list[list[dict]] = [[] for _ in replays]
    errors: list[BaseException] = []

    def one(i):
        try:
            for r in stream(segs[i], replays[i], drop_stale=True):
                records[i].append(record(i, r))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(replays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [x for rs in records for x in rs]


def run_config(name: str, args, modality: str, seg) -> dict:
    replays = [make_replay(args, modality, i) for i in range(args.cameras)]
    print(f"  {name}: {args.cameras} camera(s), {args.duration_s:g} s ...", flush=True)
    separate = [open_segmenter(args) for _ in replays] if name == "separate" else []
    for s in separate:
        warm_up(s, args.frames_for_warmup)
    use = Utilisation()
    if name == "sequential":
        records = run_sequential(seg, replays[0])
    elif name.startswith("pipelined"):
        records = [record(0, r) for r in stream(seg, replays[0], drop_stale=name.endswith("drop_stale"))]
    elif name == "batched":
        records = [record(r.camera, r, r.batch) for r in multi_stream(seg, replays, max_batch=args.max_batch)]
    else:
        records = run_separate(separate, replays)
    utilisation = use.stop()
    for s in separate:
        s.close()
    cams = [camera_summary(i, [x for x in records if x["camera"] == i], replays[i].stats, utilisation["wall_s"])
            for i in range(args.cameras)]
    batches = np.bincount([x["batch"] for x in records]) if records else np.zeros(1, int)
    # A batch of n frames yields n records: count calls, not frames.
    calls = {int(n): int(c) // int(n) for n, c in enumerate(batches) if n and c}
    return {"config": name, "cameras": cams, "batch_sizes": calls, "utilisation": utilisation,
            "series": [{k: x[k] for k in ("camera", "index", "t_capture_s", "latency", "infer", "stale")} for x in records],
            "drop_events": [{"camera": i, "t_s": t / 1e3, "reason": why}
                            for i, rp in enumerate(replays) for t, why in rp.stats.drops]}


def pct(values, qs=(50, 90, 99)) -> dict:
    a = np.asarray(values, np.float64)
    if not len(a):
        return {}
    return {"min": float(a.min()), **{f"p{q}": float(np.percentile(a, q)) for q in qs}, "max": float(a.max()),
            "mean": float(a.mean())}


def camera_summary(camera: int, records: list[dict], stats, wall_s: float) -> dict:
    dropped = {"stale": max((x["stale"] for x in records), default=0), "overrun": stats.overrun,
               "no_partner": stats.no_partner, "error": max((x["errors"] for x in records), default=0)}
    skew = np.asarray(stats.skews_ms, np.float64)
    return {"camera": camera, "offered": stats.offered, "processed": len(records), "dropped": dropped,
            "drop_rate": sum(dropped.values()) / stats.offered if stats.offered else 0.0,
            "fps": len(records) / wall_s,
            "latency_ms": pct([x["latency"] for x in records]), "queued_ms": pct([x["queued"] for x in records]),
            "sensor_buffer_ms": pct([x["read"] for x in records]), "infer_ms": pct([x["infer"] for x in records]),
            "preprocess_ms": pct([x["preprocess"] for x in records]),
            "skew_ms": pct(skew) if len(skew) else {"min": 0.0, "p50": 0.0, "max": 0.0}}


def warm_up(seg, frames) -> None:
    """First-call allocations and graph initialisation, outside the timed runs."""
    for rgb, aux in frames[:1] * 2:
        seg.run(rgb, aux)


def run_benchmark(args, argv) -> dict:
    seg = open_segmenter(args)
    modality = seg.config["modality"]
    args.frames = bundled_frames(modality) if not args.source else None
    if args.aux_hz is None:
        args.aux_hz = 8.7 if modality == "thermal" else 30.0
    args.frames_for_warmup = args.frames or [(f.rgb, f.aux) for f in _first(make_replay(args, modality, 0).source)]
    warm_up(seg, args.frames_for_warmup)
    dim = seg.info.input("rgb").shape[0]
    print(f"{seg}  batch axis: {'dynamic' if isinstance(dim, str) else dim}")
    configs = choose_configs(args)
    runs = [run_config(name, args, modality, seg) for name in configs]
    seg.close()
    cfg = seg.config
    return {"environment": environment(argv),
            "model": {"path": str(args.model), "backend": seg.backend, "device": seg.device,
                      "precision": seg.info.precision, "modality": modality, "variant": seg.info.variant,
                      "input_size": list(cfg["img_size"]), "batch_axis": dim if not isinstance(dim, str) else "dynamic",
                      "classes": cfg["num_classes"]},
            "settings": {"source": args.source or f"bundled {modality} frames", "rgb_hz": args.rgb_hz,
                         "aux_hz": args.aux_hz, "jitter_ms": args.jitter_ms, "duration_s": args.duration_s,
                         "cameras": args.cameras, "buffers": args.buffers, "max_batch": args.max_batch,
                         "depth_units": args.depth_units},
            "runs": runs}


def _first(source):
    try:
        return [next(iter(source))]
    finally:
        source.close()


def choose_configs(args) -> list[str]:
    if args.cameras > 1:
        return list(MULTI_CONFIGS)
    picked = [c for c, on in (("sequential", args.no_pipeline), ("pipelined+drop_stale", args.drop_stale)) if on]
    return picked or list(SINGLE_CONFIGS)


# ---- reports ------------------------------------------------------------------------------------

def table_rows(result) -> list[list[str]]:
    rows = []
    m = result["model"]
    for run in result["runs"]:
        cpu = run["utilisation"]
        util = f"{cpu['process_cpu_pct']:.0f}/{cpu.get('machine_cpu_pct', float('nan')):.0f}"
        if "gpu_util_pct_mean" in cpu:
            util += f" gpu {cpu['gpu_util_pct_mean']:.0f}"
        batches = ",".join(f"{n}x{c}" for n, c in sorted(run["batch_sizes"].items()))
        for c in run["cameras"]:
            lat, d = c["latency_ms"], c["dropped"]
            rows.append([m["modality"], run["config"], str(c["camera"]), str(c["offered"]), str(c["processed"]),
                         f"{c['fps']:.1f}", *(f"{lat.get(k, float('nan')):.0f}" for k in ("p50", "p90", "p99", "max")),
                         f"{c['queued_ms'].get('p50', float('nan')):.0f}", f"{c['infer_ms'].get('p50', float('nan')):.0f}",
                         "/".join(str(d[k]) for k in DROP_REASONS), f"{100 * c['drop_rate']:.0f}%",
                         f"{c['skew_ms'].get('p50', 0.0):.0f}", batches, util])
    return rows


HEADER = ["modality", "config", "cam", "offered", "done", "fps", "p50 ms", "p90 ms", "p99 ms", "max ms",
          "queued p50", "infer p50", "dropped stale/overrun/no partner/error", "drop rate", "skew p50 ms",
          "batch x calls", "CPU % proc/machine"]


def print_table(result) -> None:
    rows = table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def markdown(result) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    return "\n".join(lines)


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for run in runs:
        for cam in range(len(run["cameras"])):
            pts = [(s["t_capture_s"], s["latency"]) for s in run["series"] if s["camera"] == cam]
            label = run["config"] + (f" cam {cam}" if len(run["cameras"]) > 1 else "")
            if pts:
                axes[0].plot(*zip(*pts), marker=".", markersize=3, linewidth=0.8, label=label)
            events = sorted([(e["t_s"], e["reason"]) for e in run["drop_events"] if e["camera"] == cam] +
                            stale_events(run, cam))
            if events:
                axes[1].step([t for t, _ in events], np.arange(1, len(events) + 1), where="post", label=label)
    axes[0].set_ylabel("capture -> result latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("frames dropped (cumulative)")
    axes[1].set_xlabel("capture time (s)")
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    env, m, s = result["environment"], result["model"], result["settings"]
    fig.suptitle(f"{m['variant'] or 'GoPT'} {m['modality']} {m['backend']} {m['device']}, RGB {s['rgb_hz']} Hz, "
                 f"aux {s['aux_hz']} Hz; {env.get('gpu') or env['cpu']} ({env['cpu_cores']} cores) {env['date']}",
                 fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def stale_events(run, cam) -> list[tuple[float, str]]:
    """Stale drops at the capture time of the result that first counted them."""
    out, last = [], 0
    for s in run["series"]:
        if s["camera"] == cam and s["stale"] > last:
            out += [(s["t_capture_s"], "stale")] * (s["stale"] - last)
            last = s["stale"]
    return out


# ---- command line -------------------------------------------------------------------------------

def parse_args(argv):
    ap = ArgumentParser(prog="python benchmarks/streams.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--source", nargs="+", metavar="PATH", help="RGB [AUX]: a recording (open_source) instead "
                    "of the bundled frames, replayed at its timestamps (--rgb-hz when it has none)")
    ap.add_argument("--match", default="name", choices=("name", "timestamp"), help="how --source folders pair")
    ap.add_argument("--rgb-hz", type=positive, default=30.0)
    ap.add_argument("--aux-hz", type=positive, default=None, help="default: 8.7 (thermal), 30 (depth)")
    ap.add_argument("--jitter-ms", type=seconds, default=2.0)
    ap.add_argument("--max-skew-ms", type=seconds, default=None,
                    help="pair an RGB frame with an aux frame at most this old (default: one aux period + 3 jitters)")
    ap.add_argument("--cameras", type=count, default=1)
    ap.add_argument("--duration-s", type=positive, default=20.0, help="capture time per configuration")
    ap.add_argument("--drop-stale", action="store_true", help="run only pipelined+drop_stale (with --no-pipeline: "
                    "both)")
    ap.add_argument("--no-pipeline", action="store_true", help="run only sequential")
    ap.add_argument("--max-batch", type=count, default=None, help="--cameras: frames per inference call at most")
    ap.add_argument("--buffers", type=count, default=2, help="unread frames a camera holds before overwriting")
    ap.add_argument("--depth-units", type=positive, default=0.001, help="metres per count of uint16 depth frames")
    ap.add_argument("--json", type=Path, help="write the results here (replaces an earlier result file)")
    ap.add_argument("--plot", type=Path, help="plot the results here (.png, .svg or .pdf; replaces an earlier plot)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 s per configuration (a smoke run)")
    args = ap.parse_args(argv)
    input_file(args.model, "a model")
    if args.source and len(args.source) > 2:
        ap.error("--source takes RGB [AUX]: one MFNet PNG / folder, or two folders / videos / images")
    if args.source:
        check_inputs_exist(*args.source)
    check_result_outputs(args.json, args.plot)
    if args.quick:
        args.duration_s = min(args.duration_s, 2.0)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_tool(lambda args: benchmark_command(args, argv), parse_args, argv)


def benchmark_command(args, argv) -> int:
    result = run_benchmark(args, ["benchmarks/streams.py", *argv])
    print_table(result)
    if args.markdown:
        print("\n" + markdown(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1, default=_json_default))
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
