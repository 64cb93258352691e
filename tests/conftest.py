import os

import pytest

# Triton kernels run in the interpreter on machines without a CUDA GPU. The variable must
# be set before any kernel module is imported.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_gopt_models(tmp_path_factory):
    """A folder with the tiny GoPTs exported once per test session (tests/factories.py)."""
    from factories import export_tiny_gopts

    return export_tiny_gopts(tmp_path_factory.mktemp("tiny_gopts"))


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


# The backends that run .onnx files; backend tests run on each of them.
ONNX_BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not _openvino_installed(), reason="openvino is not installed (pip install -e '.[openvino]')"))]


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_tmp(tmp_path_factory):
    """The tests' caches (OpenVINO's compiled models), theirs and their subprocesses', go to a
    folder of this test session, not the user's ~/.cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.getbasetemp() / "xdg_cache")
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(params=ONNX_BACKENDS)
def onnx_backend(request):
    """Each backend that runs .onnx files."""
    return request.param


def pytest_terminal_summary(terminalreporter):
    """Say what ran where: the simulated GPU (tests/simgpu), the simulated TensorRT
    (tests/simulated) or TensorRT on a GPU, so that no one mistakes a simulation for a GPU run."""
    _report_simulated_gpu(terminalreporter)
    _report_tensorrt_runs(terminalreporter)


def _report_tensorrt_runs(terminalreporter):
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for key, value in getattr(report, "user_properties", []):
                if key == "ran_on" and report.when == "call":
                    counts.setdefault(value, {}).setdefault(outcome, 0)
                    counts[value][outcome] += 1
    if not counts:
        return
    for where, n in sorted(counts.items()):
        terminalreporter.write_line(f"TensorRT tests on {where}: " + ", ".join(f"{v} {k}" for k, v in n.items()))
    if not any(where.endswith("on a CUDA GPU") for where in counts):
        terminalreporter.write_line("TensorRT tests on a CUDA GPU: none (TensorRT and a GPU are not both installed)")


def _report_simulated_gpu(terminalreporter):
    import sys

    sim = sys.modules.get("simulated_gpu")
    if sim is None or not sim.SUMMARY["cases"]:
        return
    s = sim.SUMMARY
    errors = ", ".join(f"{k} {e:.3g} (|ref| <= {r:.3g})" for k, (e, r) in sorted(s["max_error"].items()))
    terminalreporter.write_line(
        f"simulated GPU (tests/simgpu, no GPU used): {s['cases']} cases, {s['launches']} kernel launches run by the "
        f"Triton interpreter; max |error| against the PyTorch reference: {errors or 'none measured'}")
