"""SimCMF export memory: the estimate against MemAvailable, and --check-separately / --check-only."""
import os
import subprocess
import sys

from export.memory import GIB, available_bytes, estimate_peak, memory_warning
from factories import tiny_gopt
from models import save_gopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT_B = 98_801_399  # parameters of the SimCMF ViT-B demo pair (LoRA r=100, simcmf projector)


def test_available_memory_from_meminfo(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_bytes(str(fake)) == 8_000_000 * 1024
    assert available_bytes(str(tmp_path / "missing")) is None
    assert available_bytes() > 0  # this machine's


def test_warning_names_the_estimate_and_what_is_available():
    assert 6.36 * GIB < estimate_peak(VIT_B) < 6.5 * GIB  # measured: 6.36 GiB
    assert 5.63 * GIB < estimate_peak(VIT_B, separately=True) < 5.8 * GIB  # measured: 5.63 GiB
    line = memory_warning(VIT_B, available=4 * GIB)
    assert "about 6.4 GiB" in line and "4.0 GiB is available" in line and "--check-separately (about 5.7 GiB" in line
    assert "\n" not in line
    assert memory_warning(VIT_B, available=20 * GIB) is None
    assert memory_warning(VIT_B, available=None) is None


def export_cli(*args):
    return subprocess.run([sys.executable, "-m", "export.onnx", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_check_separately_and_check_only(tmp_path):
    """The two-process mode and the check as its own step (a tiny GoPT: the command line takes
    SimCMF checkpoints at SAM ViT-B size only; both kinds go through the same steps)."""
    save_gopt(tiny_gopt(), tmp_path / "tiny.pt")
    out = export_cli(tmp_path / "tiny.pt", "-o", tmp_path / "sep.onnx", "--check-separately")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "exporting in a separate process" in out.stdout and "within tolerance" in out.stdout
    assert out.stdout.count("exporting GoPT") == 1 and (tmp_path / "sep.onnx").is_file()
    assert "exported, not yet checked" in out.stdout and "checked: " in out.stdout
    assert sorted(p.name for p in tmp_path.glob("sep*")) == ["sep.onnx"]  # the .unverified file was renamed
    # The check alone (what the second process of --check-separately ran above) needs the files.
    out = export_cli(tmp_path / "tiny.pt", "-o", tmp_path / "missing.onnx", "--check-only")
    assert out.returncode == 2 and "missing.onnx: no such file" in out.stderr.strip().splitlines()[-1], out.stderr


def test_check_only_of_a_no_check_export_and_of_the_wrong_checkpoint(tmp_path):
    """--no-check writes the final name; --check-only confirms it, and takes the final name away
    (back to OUT.unverified.onnx) when the file does not match the checkpoint it is checked against."""
    save_gopt(tiny_gopt(seed=0), tmp_path / "a.pt")
    save_gopt(tiny_gopt(seed=1), tmp_path / "b.pt")
    out = export_cli(tmp_path / "a.pt", "-o", tmp_path / "m.onnx", "--no-check")
    assert out.returncode == 0 and "unchecked (--no-check)" in out.stdout, out.stderr[-2000:]
    out = export_cli(tmp_path / "a.pt", "-o", tmp_path / "m.onnx", "--check-only")
    assert out.returncode == 0 and "within tolerance" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "exporting GoPT" not in out.stdout and (tmp_path / "m.onnx").is_file()
    assert f"checking {tmp_path / 'm.onnx'}" in out.stdout and "wrote " not in out.stdout
    out = export_cli(tmp_path / "b.pt", "-o", tmp_path / "m.onnx", "--check-only")
    assert out.returncode == 1 and "beyond tolerance" in out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    assert not (tmp_path / "m.onnx").exists() and (tmp_path / "m.unverified.onnx").is_file()
    assert "kept as " in out.stderr.strip().splitlines()[-1]
