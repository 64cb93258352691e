"""benchmarks/streams.py --quick: the JSON a user gets is complete, consistent and finite."""
import json
import math
import os
import subprocess
import sys

import pytest

from export.onnx import parse_args, run as export
from factories import tiny_gopt
from models import save_gopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny RGB-T and RGB-D GoPTs exported with a dynamic batch axis."""
    d = tmp_path_factory.mktemp("streambench")
    save_gopt(tiny_gopt(), d / "rgbt.pt")
    save_gopt(tiny_gopt(1, modality="depth", aux_mean=[25.6], aux_std=[6.33]), d / "rgbd.pt")
    for name in ("rgbt", "rgbd"):
        assert export(parse_args([str(d / f"{name}.pt"), "-o", str(d / f"{name}.onnx"), "--dynamic-batch",
                                  "--no-check"])) == 0
    return d


def numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x


def bench(tmp_path, model, *extra):
    out = tmp_path / f"{model.stem}{len(extra)}.json"
    cmd = [sys.executable, "benchmarks/streams.py", str(model), "--quick", "--json", str(out), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    return json.loads(text), done.stdout


def check_run(run):
    for cam in run["cameras"]:
        assert cam["processed"] > 0
        assert cam["processed"] + sum(cam["dropped"].values()) == cam["offered"], cam
        lat = cam["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert cam["fps"] > 0 and 0 <= cam["drop_rate"] <= 1
    for s in run["series"]:
        assert s["latency"] >= s["infer"] > 0  # capture-to-result covers the inference
    assert run["utilisation"]["wall_s"] > 0 and run["utilisation"]["process_cpu_pct"] > 0


def test_one_camera_three_configurations(tmp_path, tiny):
    result, stdout = bench(tmp_path, tiny / "rgbt.onnx", "--markdown", "--plot", str(tmp_path / "p.png"))
    assert all(math.isfinite(v) for v in numbers(result))
    assert [r["config"] for r in result["runs"]] == ["sequential", "pipelined", "pipelined+drop_stale"]
    for run in result["runs"]:
        check_run(run)
    assert result["settings"]["aux_hz"] == 8.7 and result["model"]["modality"] == "thermal"
    assert "streams.py" in result["environment"]["command"]
    assert "| modality | config |" in stdout
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_two_cameras_batch_into_one_call(tmp_path, tiny):
    # Cameras faster than the tiny model's inference, so that both always have a frame
    # waiting: at 30 Hz an idle machine serves each frame before the other camera's arrives.
    result, _ = bench(tmp_path, tiny / "rgbt.onnx", "--cameras", "2", "--rgb-hz", "400", "--aux-hz", "400",
                      "--jitter-ms", "0.2")
    assert all(math.isfinite(v) for v in numbers(result))
    runs = {r["config"]: r for r in result["runs"]}
    assert set(runs) == {"batched", "separate"}
    for run in runs.values():
        assert len(run["cameras"]) == 2
        check_run(run)
    assert max(map(int, runs["batched"]["batch_sizes"])) > 1  # a dynamic batch axis: both cameras in one call
    assert set(runs["separate"]["batch_sizes"]) == {"1"}


def test_rgbd_model_on_the_bundled_depth_pair(tmp_path, tiny):
    result, _ = bench(tmp_path, tiny / "rgbd.onnx", "--drop-stale")
    assert all(math.isfinite(v) for v in numbers(result))
    assert result["model"]["modality"] == "depth" and result["settings"]["aux_hz"] == 30.0
    assert [r["config"] for r in result["runs"]] == ["pipelined+drop_stale"]
    check_run(result["runs"][0])
