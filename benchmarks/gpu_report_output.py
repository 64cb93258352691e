"""The files of ``python -m benchmarks.gpu_report``: report.json, report.md and the plots.

``write`` rewrites them (atomically) from the report dict as it stands, so that it can be
called after every stage and every few seconds inside one: a run killed at any point
leaves complete files. Every formatter reads rows with ``.get`` and never fails on a
partial stage; a table that cannot be formatted says so in its place.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path

PLOTS = {"kernels": "kernels.png", "gopt": "gopt.png", "streams": "streams.png"}


@functools.cache
def files():
    """runtime/files.py alone: the report is written even where the runtime package's own
    imports (OpenCV) fail."""
    path = Path(__file__).resolve().parents[1] / "runtime" / "files.py"
    spec = importlib.util.spec_from_file_location("gpu_report_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(report: dict, out_dir: Path, plots: bool = True) -> None:
    write_text_atomic = files().write_text_atomic
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        report["plots"] = write_plots(report, out_dir)
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=1, default=_json_default) + "\n")
    write_text_atomic(out_dir / "report.md", markdown(report) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


# ---- markdown -----------------------------------------------------------------------------------

def table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def num(value, digits: int = 2, suffix: str = "") -> str:
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def pct(value, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%" if isinstance(value, (int, float)) else "-"


def status_line(stage: dict) -> str:
    line = f"**{stage.get('status', 'pending')}**"
    if stage.get("reason"):
        line += f": {stage['reason']}"
    if "seconds" in stage:
        line += f" ({stage['seconds']:.0f} s of {stage.get('allotted_s', 0):.0f} s allotted)"
    return line


def environment_md(stage: dict) -> list[str]:
    env = stage.get("environment") or {}
    gpu = env.get("gpu") or {}
    libs = env.get("libraries") or {}
    progs = env.get("programs") or {}
    rows = [["GPU", f"{gpu['name']} x{gpu['count']}" if gpu else f"none: {env.get('no_gpu')}"],
            ["compute capability / target", f"{gpu.get('capability')} / sm_{gpu.get('arch')}" if gpu else "-"],
            ["memory, SMs, L2", f"{gpu.get('memory_gib')} GiB, {gpu.get('sm_count')} SMs, {gpu.get('l2_mib')} MiB"
             if gpu else "-"],
            ["driver / CUDA (PyTorch)", f"{env.get('driver')} / {env.get('cuda')}"],
            ["clocks (SM, max SM, memory, power limit)", env.get("gpu_clocks")],
            ["nvcc", progs.get("nvcc")], ["CMake / Ninja", f"{progs.get('cmake')} / {progs.get('ninja')}"],
            ["CPU", f"{env.get('cpu')} ({env.get('cpu_cores')} cores, "
                    f"load average {num(env.get('load_average_1min'), 1)})"],
            ["Python, platform", f"{env.get('python')}, {env.get('platform')}"]]
    rows += [[name, version] for name, version in libs.items()]
    commit = env.get("commit")
    rows.append(["commit", (commit + (" + local changes" if env.get("local_changes") else "")) if commit
                 else "no git checkout"])
    rows.append(["sources SHA-256", env.get("source_sha256")])
    return [table(["", ""], rows)] if env else []


def kernels_md(stage: dict) -> list[str]:
    out = []
    if "copy_bandwidth_GBps" in stage:
        out.append(f"Copy bandwidth {stage['copy_bandwidth_GBps']:.0f} GB/s (1 GiB device-to-device, read + "
                   f"write). Timing: `{stage.get('command', '')}` settings (median of `triton.testing.do_bench`).")
    rows = []
    for r in stage.get("rows", []):
        par = r.get("parity") or {}
        head = [r.get("kernel"), r.get("dtype"), r.get("B"), r.get("S"), r.get("C")]
        if "parity" not in r:
            rows.append(head + [r.get("error") or r.get("skipped")] + [""] * 7)
            continue
        rows.append(head + [("ok" if par.get("ok") else "FAIL") + f" {pct(par.get('assignment_agreement'), 2)}",
                            num(r.get("ms"), 4), num(r.get("eager_ms"), 4), num(r.get("compile_ms"), 4),
                            num(r.get("speedup_vs_eager"), 2, "x"), num(r.get("speedup_vs_compile"), 2, "x"),
                            num(r.get("GBps"), 0), pct(r.get("frac_copy_bw"))])
    if rows:
        out.append(table(["kernel", "dtype", "B", "S", "C", "parity (assignments)", "Triton ms", "eager ms",
                          "compile ms", "vs eager", "vs compile", "GB/s", "of copy"], rows))
    out += [f"- {line}" for line in stage.get("summary", [])]
    return out


def native_md(stage: dict) -> list[str]:
    out = []
    build = stage.get("build") or {}
    if build:
        out.append(f"Build: {build.get('builds', '?')} kernels (Triton {build.get('triton_version', '?')}) in "
                   f"{num(build.get('seconds'), 0)} s: `{' && '.join(build.get('commands', []))}`")
    parity = stage.get("parity") or []
    if parity:
        out.append(table(["kernel", "dtype", "B", "S", "C", "vs reference", "max rel. err", "= Triton launch",
                          "max abs diff"],
                         [[r["kernel"], r["dtype"], r["B"], r["S"], r["C"],
                           "ok" if r["within_tolerance_of_reference"] else "FAIL",
                           f"{r['max_rel_err_vs_reference']:.2e}",
                           "bitwise" if r["bitwise_equal_to_triton_launch"] else "differs",
                           f"{r['max_abs_diff_to_triton_launch']:.2e}"] for r in parity]))
    overhead = stage.get("launch_overhead") or []
    if overhead:
        out.append(table(["kernel", "launcher", "host us per call", "device us", "shape"],
                         [[r["kernel"], r["launcher"], num(r["host_us_per_call"], 1), num(r["device_us"], 1),
                           r["shape"]] for r in overhead]))
    return out


def gopt_md(stage: dict) -> list[str]:
    rows = []
    for r in stage.get("rows", []):
        head = [r.get("model"), r.get("input"), r.get("backend"), r.get("precision"),
                "yes" if r.get("cuda_graph") else "", r.get("batch", "")]
        if r.get("status") != "ok":
            rows.append(head + [r.get("status")] + [""] * 6)
            continue
        lat = r.get("latency_ms") or {}
        accuracy = (pct(r.get("label_agreement"), 2) if r.get("label_agreement") is not None else
                    f"{r['embedding_rel_err_vs_fp32']:.1e} rel." if r.get("embedding_rel_err_vs_fp32") is not None
                    else "-")
        rows.append(head + [num(lat.get("p50")), num(lat.get("p90")), num(lat.get("p99")),
                            num(r.get("throughput_fps"), 1), accuracy, num(r.get("gpu_peak_mb"), 0)])
    if not rows:
        return []
    return ["Compute-only (model-space tensors on the GPU), `benchmarks/latency.py` settings "
            "`--warmup-s 0.3 --min-iters 10 --min-time-s 0.3 --max-time-s 2`; accuracy: label agreement with "
            "PyTorch fp32 eager on the bundled frames (SimCMF: embedding error against fp32).",
            table(["model", "input", "backend", "precision", "CUDA graph", "batch", "p50 ms", "p90 ms", "p99 ms",
                   "frames/s", "accuracy", "peak MB"], rows)]


def streams_md(stage: dict) -> list[str]:
    rows = []
    for n, result in (stage.get("results") or {}).items():
        for run in result.get("runs", []):
            for cam in run.get("cameras", []):
                lat, d = cam.get("latency_ms") or {}, cam.get("dropped") or {}
                rows.append([n, run.get("config"), cam.get("camera"), cam.get("offered"), cam.get("processed"),
                             num(cam.get("fps"), 1), num(lat.get("p50"), 0), num(lat.get("p90"), 0),
                             num(lat.get("p99"), 0), "/".join(str(d.get(k, 0)) for k in
                                                             ("stale", "overrun", "no_partner", "error")),
                             ",".join(f"{k}x{v}" for k, v in sorted(run.get("batch_sizes", {}).items()))])
    if not rows:
        return []
    return [f"{stage.get('model')}, RGB 30 Hz + thermal 8.7 Hz, {num(stage.get('duration_s'), 1)} s of capture "
            "per configuration (`benchmarks/streams.py MODEL --cameras N`).",
            table(["cameras", "config", "camera", "offered", "done", "frames/s", "p50 ms", "p90 ms", "p99 ms",
                   "dropped stale/overrun/no partner/error", "batch x calls"], rows)]


def ort_trt_md(stage: dict) -> list[str]:
    rows = []
    for r in stage.get("rows", []):
        rows.append([r.get("what"), r.get("status")])
        for res in r.get("results", []):
            lat = res.get("latency_ms") or {}
            rows.append([f"  {res.get('backend')} {res.get('precision')} batch {res.get('batch')}",
                         res.get("status") if res.get("status") != "ok" else
                         f"p50 {num(lat.get('p50'))} ms, {num(res.get('throughput_fps'), 1)} frames/s, labels "
                         f"{pct(res.get('label_agreement'), 2)}"])
    return [table(["what", "result"], rows)] if rows else []


def gpu_tests_md(stage: dict) -> list[str]:
    rows = [[r.get("suite"), r.get("summary"), num(r.get("seconds"), 0), f"`{r.get('command')}`"]
            for r in stage.get("rows", [])]
    return [table(["suite", "summary", "s", "command"], rows)] if rows else []


FORMATTERS = {"environment": environment_md, "kernels": kernels_md, "native": native_md, "gopt": gopt_md,
              "streams": streams_md, "ort_trt": ort_trt_md, "gpu_tests": gpu_tests_md}


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    gpu = (env.get("gpu") or {}).get("name", "no GPU")
    measured = ("Every number below was measured on this GPU in this run; `report.json` holds them all with "
                "their settings." if env.get("gpu") else "No CUDA GPU: nothing was measured.")
    lines = [f"# GPU report: {gpu}", "",
             f"`{report.get('command')}`, started {report.get('started')}, finished {report.get('finished') or '-'}, "
             f"budget {report.get('budget_s', 0):.0f} s. {measured}"]
    for i, stage in enumerate(report.get("stages", []), 1):
        lines += ["", f"## {i}. {stage.get('title')} (`{stage.get('name')}`)", "", status_line(stage), ""]
        try:
            body = FORMATTERS[stage["name"]](stage)
        except Exception as e:  # noqa: BLE001 - the JSON keeps the data
            body = [f"(the table could not be formatted: {type(e).__name__}: {e}; report.json has the rows)"]
        for part in body:
            lines += [part, ""]
        if stage.get("traceback"):
            lines += ["```", *stage["traceback"], "```", ""]
        if stage.get("command"):
            lines.append(f"Stands for: `{stage['command']}`")
    for name in report.get("plots") or []:
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines).rstrip()


def summary_lines(report: dict) -> list[str]:
    """One line per stage: status and reason, for the end of the console output."""
    out = []
    for stage in report.get("stages", []):
        line = f"{stage.get('name'):<12} {stage.get('status'):<8} {num(stage.get('seconds'), 0):>4} s"
        if stage.get("reason"):
            line += f"  {stage['reason']}"
        out.append(line)
        out += [f"{'':<12} {s}" for s in stage.get("summary", [])]
    return out


# ---- plots --------------------------------------------------------------------------------------

def write_plots(report: dict, out_dir: Path) -> list[str]:
    """The plots whose stages have rows; a plot that fails is left out, never the report."""
    written = []
    stages = {s["name"]: s for s in report.get("stages", [])}
    for name, draw in (("kernels", plot_kernels), ("gopt", plot_gopt), ("streams", plot_streams)):
        stage = stages.get(name) or {}
        try:
            if draw(stage, out_dir / PLOTS[name]):
                written.append(PLOTS[name])
        except Exception as e:  # noqa: BLE001 - the tables carry the numbers
            stage.setdefault("notes", []).append(f"plot {PLOTS[name]} failed: {type(e).__name__}: {e}")
    return written


def _figure(ncols: int, width: float = 6.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, 4.6), squeeze=False)


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        files().write_figure_atomic(path, fig, dpi=100)
    finally:
        plt.close(fig)
    return True


def plot_kernels(stage: dict, path: Path) -> bool:
    timed = [r for r in stage.get("rows", []) if r.get("ms") and "parity" in r]
    if not timed:
        return False
    fig, axes = _figure(2)
    for kernel, marker in (("group_merge", "o"), ("prompt_inject", "s")):
        for dtype, color in (("fp16", "C0"), ("bf16", "C1"), ("fp32", "C2")):
            pts = [r for r in timed if r["kernel"] == kernel and r["dtype"] == dtype]
            if not pts:
                continue
            x = [r["B"] * r["S"] for r in pts]
            axes[0][0].scatter(x, [r.get("speedup_vs_eager", float("nan")) for r in pts], marker=marker, color=color,
                               label=f"{kernel} {dtype}")
            axes[0][1].scatter(x, [100 * r.get("frac_copy_bw", float("nan")) for r in pts], marker=marker,
                               color=color, label=f"{kernel} {dtype}")
    for ax, ylabel in ((axes[0][0], "speed-up over eager PyTorch"), (axes[0][1], "% of measured copy bandwidth")):
        ax.set_xscale("log")
        ax.set_xlabel("tokens per call (B x S)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0][0].axhline(3, color="grey", linestyle=":")
    axes[0][1].axhline(70, color="grey", linestyle=":")
    fig.suptitle("fused Triton kernels (each point one B, S, C)", fontsize=9)
    return _save(fig, path)


def plot_gopt(stage: dict, path: Path) -> bool:
    ok = [r for r in stage.get("rows", []) if r.get("status") == "ok" and "cuda_graph" in r]
    models = sorted({r["model"] for r in ok})
    if not models:
        return False
    fig, axes = _figure(len(models))
    for ax, model in zip(axes[0], models):
        keys = sorted({(r["backend"], r["precision"], r["cuda_graph"]) for r in ok if r["model"] == model})
        for key in keys:
            pts = sorted((r["batch"], r["latency_ms"]["p50"]) for r in ok
                         if r["model"] == model and (r["backend"], r["precision"], r["cuda_graph"]) == key)
            ax.plot(*zip(*pts), marker="o", label=f"{key[0]} {key[1]}{' graph' if key[2] else ''}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("p50 latency per call (ms)")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_streams(stage: dict, path: Path) -> bool:
    bars = []
    for n, result in (stage.get("results") or {}).items():
        for run in result.get("runs", []):
            cams = run.get("cameras", [])
            if cams:
                bars.append((f"{n} cam\n{run['config']}", sum(c["fps"] for c in cams) / len(cams),
                             max(c["latency_ms"].get("p50", float("nan")) for c in cams)))
    if not bars:
        return False
    fig, axes = _figure(2)
    labels = [b[0] for b in bars]
    axes[0][0].bar(labels, [b[1] for b in bars])
    axes[0][0].axhline(30, color="grey", linestyle=":")
    axes[0][0].set_ylabel("frames/s per camera (mean)")
    axes[0][1].bar(labels, [b[2] for b in bars], color="C1")
    axes[0][1].set_ylabel("capture-to-result p50 latency, worst camera (ms)")
    for ax in axes[0]:
        ax.tick_params(axis="x", labelsize=7)
    return _save(fig, path)
