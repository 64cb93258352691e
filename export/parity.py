"""Exported model vs PyTorch reference: the numbers an export is trusted by."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Parity:
    """Differences of one output on one input set."""

    name: str
    max_abs: float  # max |ours - reference|
    rel: float  # max_abs / max |reference|
    label_agreement: float | None = None  # fraction of equal argmax labels, for label outputs
    note: str = ""  # a diagnosis shown when the check fails (e.g. a near-tie assignment)
    nonfinite: str = ""  # NaN / inf found in either output: the check fails, whatever else agrees
    max_abs_limit: float | None = None  # a comparison's own limit (e.g. preprocessing), else the tolerance's

    def line(self) -> str:
        if self.nonfinite:
            return f"{self.name:<28} {self.nonfinite}"
        s = f"{self.name:<28} max-abs {self.max_abs:.3g}  rel {self.rel:.3g}"
        if self.label_agreement is not None:
            s += f"  labels agree {100 * self.label_agreement:.3f}%"
        return s


def compare(name: str, ours: np.ndarray, reference: np.ndarray, labels: tuple | None = None) -> Parity:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"{name}: shape {ours.shape} differs from the reference {reference.shape}")
    bad, ref_bad = int((~np.isfinite(ours)).sum()), int((~np.isfinite(reference)).sum())
    if bad or ref_bad:
        return Parity(name, float("nan"), float("nan"), nonfinite=nonfinite_diagnosis(bad, ref_bad, ours.size))
    max_abs = float(np.abs(ours - reference).max()) if ours.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    agreement = None
    if labels is not None:
        agreement = float((np.asarray(labels[0]) == np.asarray(labels[1])).mean())
    return Parity(name, max_abs, max_abs / max(scale, 1e-12), agreement)


def nonfinite_diagnosis(bad: int, ref_bad: int, size: int) -> str:
    if not ref_bad:
        return (f"CHECK FAILED: the exported graph's output is NaN or infinite at {bad} of {size} values where "
                "PyTorch's is finite (overflow in a lower precision?)")
    return (f"CHECK FAILED: output NaN or infinite at {bad} of {size} values, the PyTorch reference too "
            f"({ref_bad}): the checkpoint itself is broken (NaN or huge weights)")


@dataclass
class Tolerance:
    """What an export may differ by. fp32: accumulation-order rounding; fp16: half-precision
    activations, judged by the label maps (a hard argmax may flip at a near-tie)."""

    max_abs: float | None  # None: logits are not judged by value (fp16)
    min_label_agreement: float

    def passes(self, p: Parity) -> bool:
        if p.nonfinite:
            return False
        limit = self.max_abs if p.max_abs_limit is None else p.max_abs_limit
        ok = limit is None or p.max_abs <= limit
        if p.label_agreement is not None:
            ok = ok and p.label_agreement >= self.min_label_agreement
        return ok


FP32 = Tolerance(max_abs=1e-4, min_label_agreement=0.999)
# The graph's preprocessing does the runtime's float32 operations in the same order: equal values.
PREPROCESSING_MAX_ABS = 1e-6
FP16 = Tolerance(max_abs=None, min_label_agreement=0.995)


@contextlib.contextmanager
def closest_assignment():
    """Records the smallest relative top-2 margin of every hard assignment the PyTorch
    reference makes inside the block: ``with closest_assignment() as m: model(...)``, then
    ``m["rel"]``. Below fp32 resolution (~1.2e-7), a different but equally correct rounding
    may pick the other group, and a flip inside the prompter moves the logits far more
    than rounding does."""
    import kernels.reference as ref

    seen = {"rel": float("inf"), "abs": float("inf")}

    def observe(logits):
        if logits.shape[-1] < 2:
            return
        top = logits.detach().float().topk(2, dim=-1).values
        gap = top[..., 0] - top[..., 1]
        rel = gap / top[..., 0].abs().clamp(min=1e-12)
        seen["abs"] = min(seen["abs"], float(gap.min()))
        seen["rel"] = min(seen["rel"], float(rel.min()))

    previous, ref.assignment_observer = ref.assignment_observer, observe
    try:
        yield seen
    finally:
        ref.assignment_observer = previous


def near_tie_note(margin: dict) -> str:
    if margin["rel"] == float("inf"):
        return ""
    note = f"closest hard assignment in PyTorch: top-2 margin {margin['abs']:.2g} (relative {margin['rel']:.2g})"
    if margin["rel"] < 1e-6:
        note += "; at this margin rounding alone can pick the other group, and the flip propagates"
    return note
