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


def pytest_terminal_summary(terminalreporter):
    """Where the TensorRT tests ran: the simulation (tests/simulated) or TensorRT on a GPU."""
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
