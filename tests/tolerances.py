"""How close a fused kernel's output must be to the PyTorch fp32 reference (shared by the
kernel tests and the native library's tests on the simulated device)."""
import torch


def assert_outputs_close(out, ref, dtype) -> float:
    """The largest |out - ref|, asserted within these bounds.
    fp32: max |out - ref| <= 1e-5 x max |ref| (fp32 rounding of reordered sums of d..D terms).
    fp16 / bf16: both sides round the same fp32 value, computed in a different order, to the
    output dtype, so each element may differ by one unit in the last place of the output dtype
    (2^-10 relative for fp16, 2^-7 for bf16) plus the fp32 error (1e-5 / 1e-4 of max |ref| for
    fp16 / bf16, bf16 adding the 2^-17 residual of the kernels' hi/lo split products)."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if out.numel() == 0:
        return 0.0
    out, ref = out.float(), ref.float()
    scale = ref.abs().max().clamp(min=1.0)
    err = (out - ref).abs()
    if dtype == torch.float32:
        assert err.max() <= 1e-5 * scale, f"max abs error {err.max():.3g} (scale {scale:.3g})"
    else:
        ulp, atol = {torch.float16: (2.0 ** -10, 1e-5), torch.bfloat16: (2.0 ** -7, 1e-4)}[dtype]
        bound = ulp * ref.abs() + atol * scale
        worst = (err - bound).argmax()
        assert (err <= bound).all(), (f"{int((err > bound).sum())} elements out of tolerance, worst "
                                      f"{out.flatten()[worst]:.6g} vs {ref.flatten()[worst]:.6g}")
    return float(err.max())
