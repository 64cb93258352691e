"""The memory a SimCMF export needs, and a two-process mode for machines that lack it.

A SimCMF (SAM ViT-B, 1024 x 1024) export peaks far above the size of its weights: the dynamo
exporter, the ONNX model and its slimmed copy, then ONNX Runtime and PyTorch each running the
image encoder (global attention over 4096 tokens) for the check. The peak of an export and its
check in one process is estimated as ``PEAK_PER_PARAMETER_BYTE`` x the fp32 parameter bytes,
a ratio measured with ``/usr/bin/time -v`` (maximum resident set size) on the ViT-B demo pair:

    python -m models.demo_simcmf -o checkpoints
    /usr/bin/time -v python -m export.onnx checkpoints/simcmf_rgbt_lora_untrained.pth \\
        --base checkpoints/sam_vit_b_random.pth [--check-separately]

and compared with MemAvailable (/proc/meminfo) before the export starts. ``--check-separately``
exports in a child process (to the ``.unverified`` names), which ends and returns all of its
memory, then checks in this process and renames the files when they pass: the export's and
the check's memory are never held at once.
"""
from __future__ import annotations

import subprocess
import sys

GIB = 2**30
# Measured peak resident memory / fp32 parameter bytes, SimCMF ViT-B 1024 x 1024, batch 1,
# 98.8 M parameters (395 MB): the export with its check in one process 6.36 GiB (ratio 17.3);
# with --check-separately the export's process 5.63 GiB (15.3), the check's 4.64 GiB.
PEAK_PER_PARAMETER_BYTE = 17.5
SEPARATE_PEAK_PER_PARAMETER_BYTE = 15.5


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (what can be allocated without swapping), or None if unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def estimate_peak(num_parameters: int, separately: bool = False) -> int:
    """Estimated peak resident bytes of a SimCMF export and its check, in one process or
    (``separately``) in two."""
    return int((SEPARATE_PEAK_PER_PARAMETER_BYTE if separately else PEAK_PER_PARAMETER_BYTE) * 4 * num_parameters)


def memory_warning(num_parameters: int, available: int | None) -> str | None:
    """A one-line warning when the estimated peak exceeds the available memory, else None."""
    need = estimate_peak(num_parameters)
    if available is None or need <= available:
        return None
    return (f"warning: this SimCMF export and its check need about {need / GIB:.1f} GiB at their peak "
            f"({num_parameters / 1e6:.1f} M parameters x 4 bytes x {PEAK_PER_PARAMETER_BYTE:.0f}, a measured ratio); "
            f"{available / GIB:.1f} GiB is available, so the out-of-memory killer may end it: free memory, or pass "
            f"--check-separately (about {estimate_peak(num_parameters, True) / GIB:.1f} GiB: the export and the "
            "check then never hold memory at once)")


def run_separately(argv: list[str]) -> int:
    """``python -m export.onnx ARGV`` exporting only (to the ``.unverified`` names) in a child
    process; its exit status. The child's memory is all returned when it ends, before this
    process loads anything for the check."""
    args = [a for a in argv if a != "--check-separately"] + ["--export-only"]
    print("exporting in a separate process (--check-separately), then checking here", flush=True)
    return subprocess.run([sys.executable, "-m", "export.onnx", *args]).returncode
