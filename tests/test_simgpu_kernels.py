"""libgopt_kernels.so on a simulated GPU (tests/simulated_gpu.py, tests/simgpu/simcuda.c): the
C library's build selection, parameter packing, grids, workspaces, empty inputs, errors,
kernel cache and threads, every launch executed by the Triton interpreter and compared
bitwise with the Python dispatch (kernels.group_merge / prompt_inject, backend "triton")
and within tolerance with the PyTorch reference. Nothing here runs on a GPU: these tests
prove the host code, not the cubins."""
import ctypes
import math
import os
import threading

import pytest
import torch

import kernels
import simulated_gpu as sim
from simulated_gpu import dev  # noqa: F401  (the fixture)
from kernels import native, tiles
from kernels.reference import group_merge_reference, prompt_inject_reference
from tolerances import assert_outputs_close

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the simulated GPU runs the kernels in the Triton interpreter "
                                       "(TRITON_INTERPRET=1, set by tests/conftest.py without CUDA)")

DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
d, D = 32, 768
OK, INVALID_ARG, UNSUPPORTED, NO_DRIVER, NO_KERNEL_FOR_ARCH, CUDA_ERROR, WORKSPACE_TOO_SMALL = range(7)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    sim.device()  # the driver first: the library opens it at its first call
    return native.open_library(sim.fresh_copy(sim.BUILD / "libgopt_kernels.so", tmp_path_factory.mktemp("lib")))


def last_error(lib) -> str:
    return lib.gopt_last_error().decode()


def embedded(kernel, dtype, c_pad, arch=None) -> bool:
    return any(b["kernel"] == kernel and b["dtype"] == dtype and b["constexprs"]["C_PAD"] == c_pad
               and b["constexprs"]["DP"] == d and arch in (None, b["arch"]) for b in sim.device().builds)


def c_pad_of(C):
    return max(16, 1 << (C - 1).bit_length())


def need(kernel, dtype, C, arch=None):
    if not embedded(kernel, dtype, c_pad_of(C), arch):
        pytest.skip(f"this build embeds no {kernel} {dtype} d={d} C_PAD={c_pad_of(C)}"
                    + (f" for sm_{arch}" if arch else "") + " (GOPT_DTYPES / GOPT_GROUPS / GOPT_AOT_EXTRA)")


# ---- inputs in simulated device memory -----------------------------------------------------------

def randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def merge_inputs(dev, B, S, C, dtype, seed=0):
    """a', c' as CUP passes them (views of Z' = [a'; c'] along the tokens), the cup weights
    and P (NaN) in device memory."""
    g = torch.Generator().manual_seed(seed)
    z = dev.memory.tensor("z", randn(g, B, S + C, d).to(dtype))
    names = [f"{p}_{k}" for p in "qkvo" for k in "wb"]
    w = [dev.memory.tensor(n, randn(g, *((d, d) if n.endswith("w") else (d,)), scale=0.3).to(dtype)) for n in names]
    return z[:, :S], z[:, S:], w, dev.memory.output("P", (B, C, d), dtype)


def inject_inputs(dev, B, S, C, dtype, layout, seed=0):
    """f (contiguous, or the first prompter's transposed patch embedding), P (contiguous or a
    strided view), the acp weights and the output (NaN) in device memory."""
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed":
        f = dev.memory.tensor("f", randn(g, B, D, S).to(dtype)).transpose(1, 2)
    else:
        f = dev.memory.tensor("f", randn(g, B, S, D).to(dtype))
    if layout == "strided P":
        P = dev.memory.tensor("P", randn(g, B, C + 3, d).to(dtype))[:, 3:]
    else:
        P = dev.memory.tensor("P", randn(g, B, C, d).to(dtype))
    shapes = [("down_w", (d, D)), ("down_b", (d,))] + [(f"{p}_{k}", (d, d) if k == "w" else (d,))
                                                         for p in "qkvo" for k in "wb"] + [("up_w", (D, d)),
                                                                                           ("up_b", (D,))]
    w = [dev.memory.tensor(n, randn(g, *s, scale=0.3 if n != "down_w" else 0.05).to(dtype)) for n, s in shapes]
    return f, P, w, dev.memory.output("out", (B, S, D), dtype)


def run_merge(lib, dev, a, c, w, out, workspace=None, stream=None):
    B, S, _ = a.shape
    nbytes = lib.gopt_group_merge_workspace_size(B, S, c.shape[1], d) if workspace is None else workspace
    ws = dev.memory.workspace(nbytes) if nbytes else None
    args = native.group_merge_args(a, c, w, out)
    return lib.gopt_group_merge(ctypes.byref(args), ws.address if ws else None, nbytes, stream)


def run_inject(lib, f, P, w, out, stream=None):
    return lib.gopt_prompt_inject(ctypes.byref(native.prompt_inject_args(f, P, w, out)), stream)


def unchanged(tensors, copies):
    return all(torch.equal(t, c) for t, c in zip(tensors, copies))


# ---- what each launch must look like ---------------------------------------------------------------

def merge_launches(B, S, C, dtype):
    """(kernel, grid) of the Python dispatch's launches (kernels/group_merge_triton.py)."""
    c_pad = c_pad_of(C)
    tpp = tiles.merge_tile(tiles.GENERIC_ARCH, dtype, c_pad).constexprs["TOKENS_PER_PROG"]
    split = max(1, math.ceil(S / tpp))
    launches = [("group_merge", (B, split, 1))]
    if split > 1:
        block_c = tiles.tile_constexprs(tiles.epilogue_tile(tiles.GENERIC_ARCH, dtype, c_pad), c_pad)["BLOCK_C"]
        launches.append(("group_merge_epilogue", (B, c_pad // block_c, 1)))
    return launches, split


def check_merge_launches(dev, a, c, dtype, elt):
    B, S, _ = a.shape
    C = c.shape[1]
    expected, split = merge_launches(B, S, C, dtype)
    assert [(x.kernel, x.grid) for x in dev.launches] == expected
    assert all(x.dtype == dtype for x in dev.launches)
    first = dev.launches[0].args
    a_ptr = ("z", 0) if S else None
    assert first["a_ptr"] == a_ptr and first["c_ptr"] == ("z", S * d * elt) and first["out_ptr"] == ("P", 0)
    assert [first[f"{p}_{k}"] for p in "qkvo" for k in "wb"] == [(f"{p}_{k}", 0) for p in "qkvo" for k in "wb"]
    assert (first["S"], first["C"]) == (S, C)
    assert [first[f"stride_a{k}"] for k in "bsd"] == list(a.stride())
    assert [first[f"stride_c{k}"] for k in "bcd"] == list(c.stride())
    if split == 1:
        assert first["part_sum_ptr"] == first["part_cnt_ptr"] == ("P", 0)
    else:
        sums = B * split * c_pad_of(C) * d * 4
        assert first["part_sum_ptr"] == ("workspace", 0)
        assert first["part_cnt_ptr"] == ("workspace", -(-sums // 256) * 256)
        assert dev.launches[1].args["split"] == split


def check_inject_launch(dev, f, P, dtype):
    B, S, _ = f.shape
    block_s = tiles.inject_tile(tiles.GENERIC_ARCH, dtype, c_pad_of(P.shape[1])).constexprs["BLOCK_S"]
    assert [(x.kernel, x.grid) for x in dev.launches] == [("prompt_inject", (math.ceil(S / block_s), B, 1))]
    args = dev.launches[0].args
    assert args["f_ptr"] == ("f", 0) and args["out_ptr"] == args["assign_ptr"] == ("out", 0)
    assert args["P_ptr"] == ("P", P.storage_offset() * P.element_size() - sim.GUARD)
    assert (args["S"], args["C"], args["D"]) == (S, P.shape[1], D)
    assert args["inv_sqrt_d"] == pytest.approx(1 / math.sqrt(d), rel=1e-7)
    assert [args[f"stride_f{k}"] for k in "bsd"] == list(f.stride())
    assert [args[f"stride_p{k}"] for k in "bcd"] == list(P.stride())


# ---- numbers: the C library against the Python dispatch and the reference ---------------------------

# Both sides of the one-program boundary (64 tokens per program for C <= 128, 128 beyond),
# an empty token set, and S = 1200 (480x640 at patch 16).
MERGE_CASES = [(1, 1, 9), (2, 64, 16), (2, 65, 16), (1, 1200, 40), (2, 128, 150), (1, 129, 150), (2, 1200, 150),
               (2, 0, 9)]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("B,S,C", MERGE_CASES)
def test_simulated_group_merge_equals_the_python_dispatch(dev, lib, dtype, B, S, C):
    need("group_merge", dtype, C)
    t = DT[dtype]
    a, c, w, out = merge_inputs(dev, B, S, C, t, seed=S + C)
    copies = [x.clone() for x in (a, c, *w)]
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    assert last_error(lib) == ""
    dev.check()
    assert unchanged((a, c, *w), copies)
    check_merge_launches(dev, a, c, dtype, t.itemsize)
    assert torch.equal(out, kernels.group_merge(a, c, *w, backend="triton")), "differs from the Python dispatch"
    ref = group_merge_reference(a, c, *w)
    sim.record_case(dtype, assert_outputs_close(out, ref, t), "merge", ref)


INJECT_CASES = [(2, 1, 9, "contiguous"), (1, 33, 16, "strided P"), (2, 65, 40, "transposed"),
                (1, 1200, 150, "transposed")]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("B,S,C,layout", INJECT_CASES)
def test_simulated_prompt_inject_equals_the_python_dispatch(dev, lib, dtype, B, S, C, layout):
    need("prompt_inject", dtype, C)
    t = DT[dtype]
    f, P, w, out = inject_inputs(dev, B, S, C, t, layout, seed=S + C)
    copies = [x.clone() for x in (f, P, *w)]
    assert run_inject(lib, f, P, w, out) == OK, last_error(lib)
    dev.check()
    assert unchanged((f, P, *w), copies)
    check_inject_launch(dev, f, P, dtype)
    assert torch.equal(out, kernels.prompt_inject(f, P, *w, backend="triton")), "differs from the Python dispatch"
    ref = prompt_inject_reference(f, P, *w)
    sim.record_case(dtype, assert_outputs_close(out, ref, t), "inject", ref)


@pytest.mark.parametrize("S", [1, 65])
def test_simulated_bf16_launches_match_the_python_dispatch(dev, lib, S):
    """bf16: the launches only (build, grid, every parameter); the interpreter computes bf16
    products wrongly, so no numbers are compared."""
    need("group_merge", "bf16", 9)
    need("prompt_inject", "bf16", 9)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 2, S, 9, torch.bfloat16)
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    dev.check()
    check_merge_launches(dev, a, c, "bf16", 2)
    dev.launches.clear()
    f, P, w, out = inject_inputs(dev, 2, S, 9, torch.bfloat16, "transposed")
    assert run_inject(lib, f, P, w, out) == OK, last_error(lib)
    dev.check()
    check_inject_launch(dev, f, P, "bf16")
    sim.record_case("bf16")


def test_simulated_empty_inputs_agree_with_the_python_dispatch(dev, lib):
    """B = 0: nothing launched, every pointer may be NULL. S = 0: the merge gives c' + o.bias
    (the S = 0 test above); the injection launches nothing."""
    need("group_merge", "fp32", 9)
    for B, S in ((0, 5), (0, 0)):
        a, c, w, out = merge_inputs(dev, B, S, 9, torch.float32)
        assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
        f, P, w, out = inject_inputs(dev, B, S, 9, torch.float32, "contiguous")
        assert run_inject(lib, f, P, w, out) == OK, last_error(lib)
    f, P, w, out = inject_inputs(dev, 2, 0, 9, torch.float32, "contiguous")
    assert run_inject(lib, f, P, w, out) == OK, last_error(lib)
    assert dev.launches == [] and last_error(lib) == ""
    a, c, w, out = merge_inputs(dev, 2, 0, 9, torch.float32)
    assert native.group_merge_args(a, c, w, out).a is None  # the empty a' goes as NULL
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    assert torch.equal(out, c + w[-1])  # every group empty: c' + o.bias
    args = native.group_merge_args(a, c, w, out)
    args.a = c.data_ptr()  # not NULL but may not be read: one program per sample all the same
    out.fill_(float("nan"))
    assert lib.gopt_group_merge(ctypes.byref(args), None, 0, None) == OK, last_error(lib)
    assert torch.equal(out, c + w[-1]) and dev.launches[-1].grid == (2, 1, 1)
    dev.check()
    sim.record_case("fp32")


# ---- which build runs on which GPU ----------------------------------------------------------------

CAPABILITIES = [75, 80, 86, 87, 89, 90, 100, 103, 110, 120, 121]


@pytest.mark.parametrize("cc", CAPABILITIES)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_simulated_build_selection_follows_the_rules(dev, lib, cc, dtype):
    """For each compute capability 7.5 to 12.1: the build each launch uses (its image's
    SHA-256) is the one the rules pick, and the simulated driver loads it (a cubin for another
    SM, or PTX for a newer target, would fail there)."""
    dev.configure(cc)
    dev.execute = False
    dev.driver.simcuda_ctx_set_current(dev.context())  # a fresh context: nothing cached
    for kernel, S in (("group_merge", 1), ("group_merge", 65), ("prompt_inject", 1)):
        dev.launches.clear()
        if kernel == "group_merge":
            a, c, w, out = merge_inputs(dev, 1, S, 9, DT[dtype])
            status = run_merge(lib, dev, a, c, w, out)
            kinds = [("group_merge", S == 1)] + ([] if S == 1 else [("group_merge_epilogue", None)])
        else:
            f, P, w, out = inject_inputs(dev, 1, S, 9, DT[dtype], "contiguous")
            status = run_inject(lib, f, P, w, out)
            kinds = [("prompt_inject", None)]
        expected = [sim.expected_image(k, dtype, 16, fused, cc) for k, fused in kinds]
        if None in expected:
            assert status == NO_KERNEL_FOR_ARCH, last_error(lib)
            message = last_error(lib)
            assert (f"no build for sm_{cc} {dtype} d=32 C_PAD=16" in message
                    or "no such build for any GPU" in message), message
        else:
            assert status == OK, last_error(lib)
            assert [(x.arch, x.ptx) for x in dev.launches] == expected
        dev.check()


def test_simulated_selection_covers_every_rule(dev, lib):
    """The kernel set CI embeds (sm_80 cubins and PTX, sm_86 and sm_90a merge cubins) makes
    the fp32 merge exercise each rule: exact, 86 -> 86, 89 -> 86, 87 -> PTX (no sm_80 SASS on
    sm_87), 90 -> 90a, 10.0 / 12.0 -> PTX (never the 90a cubin), 7.5 -> none."""
    if not all(embedded("group_merge", "fp32", 16, arch) for arch in ("80", "86", "90a")) or sim.ptx_arch() != "80":
        pytest.skip("needs the fp32 merge for sm_80 (with PTX), sm_86 and sm_90a (.ci/run's kernel set)")
    picks = {cc: sim.expected_image("group_merge", "fp32", 16, True, cc) for cc in (75, 80, 86, 87, 89, 90, 100, 120)}
    assert picks == {75: None, 80: ("80", False), 86: ("86", False), 87: ("80", True), 89: ("86", False),
                     90: ("90a", False), 100: ("80", True), 120: ("80", True)}
    assert sim.expected_image("group_merge", "fp16", 16, True, 86) == ("80", False)  # 86 -> 80 without an sm_86 build
    assert sim.expected_image("prompt_inject", "fp32", 16, None, 90) == ("80", True)


def test_simulated_dynamic_shared_memory_is_enabled_above_48_kib(dev, lib):
    """The C = 150 merge needs 73,728 B of shared memory: the launcher enables it with
    cuFuncSetAttribute (the simulated driver refuses the launch otherwise) and refuses a
    device whose opt-in maximum is smaller."""
    need("group_merge", "fp32", 150)
    dev.configure(86)
    dev.execute = False
    dev.driver.simcuda_ctx_set_current(dev.context())
    before = dev.calls("cuFuncSetAttribute")
    a, c, w, out = merge_inputs(dev, 1, 1, 150, torch.float32)
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    assert dev.launches[0].shared > 48 * 1024 and dev.calls("cuFuncSetAttribute") == before + 1
    dev.configure(86, shared_optin=65536)
    assert run_merge(lib, dev, a, c, w, out) == NO_KERNEL_FOR_ARCH
    assert "needs 73728 B of shared memory, the device allows 65536 B" in last_error(lib)


# ---- errors ---------------------------------------------------------------------------------------

FAKE = 0x1000  # never dereferenced: these calls fail before any launch


def fake_merge(B=1, S=64, C=9, a_strides=None, c_strides=None, **change):
    args = native.GroupMergeArgs(ctypes.sizeof(native.GroupMergeArgs), 0, B, S, C, d, FAKE,
                                 (ctypes.c_int64 * 3)(*(a_strides or (S * d, d, 1))), FAKE,
                                 (ctypes.c_int64 * 3)(*(c_strides or (C * d, d, 1))), *([FAKE] * 9))
    for k, v in change.items():
        setattr(args, k, v)
    return args


def fake_inject(B=1, S=64, C=9, Dm=D, **change):
    args = native.PromptInjectArgs(ctypes.sizeof(native.PromptInjectArgs), 0, B, S, Dm, C, d, FAKE,
                                   (ctypes.c_int64 * 3)(S * Dm, Dm, 1), FAKE, (ctypes.c_int64 * 3)(C * d, d, 1),
                                   *([FAKE] * 13))
    for k, v in change.items():
        setattr(args, k, v)
    return args


ARG_ERRORS = [
    ("struct size", "merge", fake_merge(size=8), INVALID_ARG, "gopt_group_merge_args with size"),
    ("dtype", "merge", fake_merge(dtype=7), INVALID_ARG, "dtype must be GOPT_FLOAT32, GOPT_FLOAT16 or GOPT_BFLOAT16"),
    ("NULL c", "merge", fake_merge(c=None), INVALID_ARG, "c is NULL"),
    ("NULL a", "merge", fake_merge(a=None), INVALID_ARG, "a is NULL"),
    ("negative stride", "merge", fake_merge(a_strides=(-1, 32, 1)), INVALID_ARG, "a_strides[0] must be >= 0"),
    ("D = 0", "inject", fake_inject(Dm=0), INVALID_ARG, "token width D must be >= 1"),
    ("NULL f", "inject", fake_inject(f=None), INVALID_ARG, "f is NULL"),
    ("d", "merge", fake_merge(d=24), UNSUPPORTED, "prompt width d must be 16, 32, 64 or 128, got 24"),
    ("C", "inject", fake_inject(C=300), UNSUPPORTED, "the number of groups C must be in [1, 256], got 300"),
    ("S > int32", "merge", fake_merge(S=2 ** 31), UNSUPPORTED, "exceeds int32"),
    ("c offset", "merge", fake_merge(B=3, c_strides=(2 ** 30, 32, 1)), UNSUPPORTED, "c's largest offset"),
    ("merge grid", "merge", fake_merge(S=4_200_000), UNSUPPORTED, "needs a grid of (1, 65625, 1) programs"),
    ("inject grid", "inject", fake_inject(B=70_000, S=1, Dm=16), UNSUPPORTED, "needs a grid of (1, 70000, 1)"),
    ("workspace NULL", "merge", fake_merge(S=65), WORKSPACE_TOO_SMALL, "B of workspace, got 0 B (NULL)"),
]


@pytest.mark.parametrize("name,kernel,args,status,text", ARG_ERRORS, ids=[e[0] for e in ARG_ERRORS])
def test_simulated_bad_calls_get_their_status_and_text(dev, lib, name, kernel, args, status, text):
    need("group_merge", "fp32", 9)
    if kernel == "merge":
        got = lib.gopt_group_merge(ctypes.byref(args), None, 0, None)
    else:
        got = lib.gopt_prompt_inject(ctypes.byref(args), None)
    assert got == status and text in last_error(lib), (got, last_error(lib))
    assert dev.launches == []


def test_simulated_workspace_one_byte_short_is_refused(dev, lib):
    need("group_merge", "fp32", 9)
    a, c, w, out = merge_inputs(dev, 2, 65, 9, torch.float32)
    nbytes = lib.gopt_group_merge_workspace_size(2, 65, 9, d)
    assert run_merge(lib, dev, a, c, w, out, workspace=nbytes - 1) == WORKSPACE_TOO_SMALL
    assert f"needs {nbytes} B of workspace, got {nbytes - 1} B" in last_error(lib)
    assert dev.launches == []


def test_simulated_last_error_is_cleared_by_a_successful_call(dev, lib):
    """The header promises "" after success; a failed call's text must not outlive it."""
    need("group_merge", "fp32", 9)
    assert lib.gopt_group_merge(ctypes.byref(fake_merge(d=24)), None, 0, None) == UNSUPPORTED
    assert last_error(lib)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 1, 1, 9, torch.float32)
    assert run_merge(lib, dev, a, c, w, out) == OK
    assert last_error(lib) == ""


DRIVER_ERRORS = [  # (entry point made to fail, result, status, text)
    ("cuModuleLoadData", 2, CUDA_ERROR, "cuModuleLoadData failed: CUDA_ERROR_OUT_OF_MEMORY"),
    ("cuModuleGetFunction", 500, CUDA_ERROR, "cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND"),
    ("cuLaunchKernel", 701, CUDA_ERROR, "cuLaunchKernel failed: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"),
    ("cuCtxGetId", 709, CUDA_ERROR, "cuCtxGetId failed: CUDA_ERROR_CONTEXT_IS_DESTROYED"),
    ("cuDeviceGetAttribute", 101, CUDA_ERROR, "no current CUDA context or device on this thread"),
]


@pytest.mark.parametrize("entry,result,status,text", DRIVER_ERRORS, ids=[e[0] for e in DRIVER_ERRORS])
def test_simulated_driver_failures_are_reported(dev, lib, entry, result, status, text):
    need("group_merge", "fp32", 9)
    dev.execute = False
    dev.driver.simcuda_ctx_set_current(dev.context())  # nothing cached: the module is loaded
    a, c, w, out = merge_inputs(dev, 1, 1, 9, torch.float32)
    dev.fail(entry, result)
    assert run_merge(lib, dev, a, c, w, out) == status
    assert text in last_error(lib), last_error(lib)
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)  # the next call works


def test_simulated_errors_without_a_context_or_on_a_foreign_stream(dev, lib):
    need("group_merge", "fp32", 9)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 1, 1, 9, torch.float32)
    other = dev.context()
    foreign = dev.stream()
    dev.driver.simcuda_ctx_set_current(dev.main_context)
    assert run_merge(lib, dev, a, c, w, out, stream=foreign) == INVALID_ARG
    assert "the stream belongs to another CUDA context" in last_error(lib)
    dev.driver.simcuda_ctx_set_current(other)
    assert run_merge(lib, dev, a, c, w, out, stream=foreign) == OK, last_error(lib)
    assert dev.launches[-1].stream == foreign
    dev.driver.simcuda_ctx_set_current(None)
    assert run_merge(lib, dev, a, c, w, out) == CUDA_ERROR
    assert "no current CUDA context or device on this thread (CUDA_ERROR_INVALID_CONTEXT)" in last_error(lib)


def test_simulated_kernels_missing_for_the_device_or_from_the_library(dev, lib):
    need("group_merge", "fp32", 40)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 1, 1, 40, torch.bfloat16)
    if not embedded("group_merge", "bf16", 64):
        assert run_merge(lib, dev, a, c, w, out) == NO_KERNEL_FOR_ARCH
        assert "group_merge (one program per sample) bf16 d=32 C_PAD=64: this library has no such build for any " \
               "GPU" in last_error(lib)
    dev.configure(75)
    a, c, w, out = merge_inputs(dev, 1, 1, 40, torch.float32)
    assert run_merge(lib, dev, a, c, w, out) == NO_KERNEL_FOR_ARCH
    assert "no build for sm_75 fp32 d=32 C_PAD=64 in this library" in last_error(lib)


def test_simulated_driver_that_does_not_initialise_is_no_driver(dev, tmp_path):
    """A fresh copy of the library (its one-time driver setup not yet done) on a driver whose
    cuInit fails."""
    lib = native.open_library(sim.fresh_copy(sim.BUILD / "libgopt_kernels.so", tmp_path))
    dev.driver.simcuda_set_init_result(100)  # CUDA_ERROR_NO_DEVICE
    try:
        assert lib.gopt_group_merge(ctypes.byref(fake_merge()), None, 0, None) == NO_DRIVER
    finally:
        dev.driver.simcuda_set_init_result(0)
    assert "cuInit failed: CUDA_ERROR_NO_DEVICE (no usable GPU or driver)" in last_error(lib)


def test_simulated_can_run_answers_what_a_launch_would(dev, lib):
    """gopt_can_run (what the plugins ask at build time) against the embedded builds."""
    need("group_merge", "fp32", 9)
    can = native.NativeKernels.__new__(native.NativeKernels)
    can.lib = lib
    assert can.can_run("group_merge", torch.float32, 8, 4096, 9, d)
    assert can.can_run("prompt_inject", torch.float32, 8, 4096, 9, d, D)
    assert can.can_run("group_merge", torch.float32) and last_error(lib) == ""  # some C and d
    assert not can.can_run("group_merge", torch.float32, -1, -1, 9, 24)
    assert "prompt width d must be 16, 32, 64 or 128, got 24" in can.last_error()
    assert not can.can_run("group_merge", torch.float32, 1, 4_200_000, 9, d)
    assert "needs a grid of (1, 65625, 1)" in can.last_error()
    assert not can.can_run("prompt_inject", torch.float32, 70_000, 1, 9, d, 16)
    assert not can.can_run("prompt_inject", torch.float32, 1, 3_000_000, 9, d, D)
    assert "S*D = 2304000000 exceeds int32" in can.last_error()
    if not embedded("group_merge", "bf16", 64):
        assert not can.can_run("group_merge", torch.bfloat16, -1, -1, 40, d)
    dev.configure(75)
    assert not can.can_run("prompt_inject", torch.float32, -1, -1, 9, d)
    assert "no build for sm_75" in can.last_error()
    dev.configure(80)
    result = []
    thread = threading.Thread(target=lambda: result.append(can.can_run("group_merge", torch.float32, 1, 1, 9, d)))
    thread.start()  # a thread without a current context: device 0
    thread.join()
    assert result == [True]


# ---- the kernel cache ------------------------------------------------------------------------------

def test_simulated_context_recreated_at_the_same_address_gets_its_own_kernels(dev, lib):
    """A context destroyed and re-created where it was (the simulated driver reuses the
    slot) must not be handed the old context's functions."""
    need("group_merge", "fp32", 9)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 1, 1, 9, torch.float32)
    first = dev.context()
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    loads = dev.calls("cuModuleLoadData")
    assert dev.driver.simcuda_ctx_destroy(ctypes.c_void_p(first)) == 0
    second = dev.context()
    assert second == first
    assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
    assert dev.calls("cuModuleLoadData") == loads + 1
    assert dev.launches[0].ctx_id != dev.launches[1].ctx_id
    dev.driver.simcuda_ctx_destroy(ctypes.c_void_p(second))


def test_simulated_kernel_cache_stays_bounded(dev, lib):
    """1,100 short-lived contexts (more than any fixed table) each load the kernel once and
    launch; a context in use keeps its kernels cached."""
    need("group_merge", "fp32", 9)
    dev.execute = False
    a, c, w, out = merge_inputs(dev, 1, 1, 9, torch.float32)
    loads = dev.calls("cuModuleLoadData")
    for _ in range(1100):
        ctx = dev.context()
        assert run_merge(lib, dev, a, c, w, out) == OK, last_error(lib)
        dev.driver.simcuda_ctx_destroy(ctypes.c_void_p(ctx))
    assert dev.calls("cuModuleLoadData") == loads + 1100
    dev.driver.simcuda_ctx_set_current(dev.main_context)
    for _ in range(3):
        assert run_merge(lib, dev, a, c, w, out) == OK
    assert dev.calls("cuModuleLoadData") <= loads + 1101


# ---- threads -------------------------------------------------------------------------------------

def test_simulated_eight_threads_at_once(dev, lib):
    """Eight threads, each with its own context and stream, launch merges and injections of
    different sizes and dtypes at once (the C library runs concurrently; the simulated GPU
    executes one kernel at a time); every result equals the Python dispatch, and each
    thread's error text is its own."""
    need("prompt_inject", "fp16", 40)
    jobs = []
    for i in range(8):
        dtype = torch.float32 if i % 2 else torch.float16
        B, S, C = 1 + i % 2, (1, 64, 65, 130)[i % 4], (9, 40)[i % 2]
        merge = merge_inputs(dev, B, S, C, dtype, seed=i)
        inject = inject_inputs(dev, B, S, C, dtype, "transposed" if i % 3 else "contiguous", seed=i)
        jobs.append((merge, inject, kernels.group_merge(*merge[:2], *merge[2], backend="triton"),
                     kernels.prompt_inject(*inject[:2], *inject[2], backend="triton")))
    problems = []

    def worker(i):
        ctx = dev.context()
        stream = dev.stream()
        (a, c, w, P), (f, Pi, wi, out), want_P, want_out = jobs[i]
        for _ in range(2):
            if run_merge(lib, dev, a, c, w, P, stream=stream) != OK:
                problems.append(f"thread {i} merge: {last_error(lib)}")
            if lib.gopt_group_merge(ctypes.byref(fake_merge(C=300 + i)), None, 0, None) != UNSUPPORTED:
                problems.append(f"thread {i}: bad call accepted")
            if f"got {300 + i}" not in last_error(lib):
                problems.append(f"thread {i} sees another thread's error: {last_error(lib)}")
            if run_inject(lib, f, Pi, wi, out, stream=stream) != OK or last_error(lib):
                problems.append(f"thread {i} inject: {last_error(lib)}")
        if not (torch.equal(P, want_P) and torch.equal(out, want_out)):
            problems.append(f"thread {i}: results differ from the Python dispatch")
        dev.driver.simcuda_ctx_destroy(ctypes.c_void_p(ctx))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems
    dev.check()
    assert len(dev.launches) >= 8 * 2 * 2
    sim.record_case("fp32")
    sim.record_case("fp16")


# ---- the simulated driver itself refuses what a real one does ---------------------------------------

def test_simulated_driver_enforces_the_documented_launch_checks(dev):
    """The double is only as good as its checks: images for another SM, PTX for a newer
    target or ISA, a missing entry, zero or oversized grids and blocks, dynamic shared memory
    above 48 KiB without the attribute, another context's function."""
    drv = dev.driver
    for name in ("cuModuleLoadData", "cuModuleGetFunction", "cuLaunchKernel", "cuFuncSetAttribute"):
        getattr(drv, name).restype = ctypes.c_int
    drv.cuModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
    drv.cuModuleGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_char_p]
    drv.cuFuncSetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    drv.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    folder = sim.aot_dir()
    build = max((b for b in dev.builds if b["arch"] == "80"), key=lambda b: b["shared_bytes"])
    cubin = (folder / build["cubin"]).read_bytes()
    ptx = (folder / build["ptx"]).read_bytes()

    def load(image):
        m = ctypes.c_void_p()
        return drv.cuModuleLoadData(ctypes.byref(m), image), m

    dev.configure(75)
    assert load(cubin)[0] == 209  # CUDA_ERROR_NO_BINARY_FOR_GPU
    assert load(ptx)[0] == 218  # CUDA_ERROR_INVALID_PTX: a newer target than the device
    dev.configure(80, ptx_isa=78)
    assert load(ptx)[0] == 222  # CUDA_ERROR_UNSUPPORTED_PTX_VERSION
    dev.configure(86)
    status, module = load(cubin)
    assert status == 0
    fn = ctypes.c_void_p()
    assert drv.cuModuleGetFunction(ctypes.byref(fn), module, b"no_such_kernel") == 500
    assert drv.cuModuleGetFunction(ctypes.byref(fn), module, build["name"].encode()) == 0
    dev.execute = False
    params = (ctypes.c_void_p * len(build["signature"]))()
    slots = [ctypes.c_uint64(0) for _ in build["signature"]]
    for i, s in enumerate(slots):
        params[i] = ctypes.addressof(s)

    def launch(grid=(1, 1, 1), block=(build["block"][0], 1, 1), shared=build["shared_bytes"]):
        return drv.cuLaunchKernel(fn, *grid, *block, shared, None, ctypes.cast(params, ctypes.c_void_p), None)

    assert launch(grid=(0, 1, 1)) == 1 and launch(grid=(1, 65536, 1)) == 1 and launch(grid=(1, 1, 65536)) == 1
    assert launch(block=(1025, 1, 1)) == 1 and launch(block=(32, 32, 2)) == 1
    if build["shared_bytes"] > 48 * 1024:
        assert launch() == 1  # CUDA_ERROR_INVALID_VALUE: the attribute was never set
        assert drv.cuFuncSetAttribute(fn, 8, 200_000) == 1  # beyond sm_86's opt-in maximum
        assert drv.cuFuncSetAttribute(fn, 8, build["shared_bytes"]) == 0
    # the test's side: parameters outside the test's buffers, misaligned or NULL, scratch set
    buf = dev.memory.alloc("buffer", 4096, 0)
    pointers = [i for i, p in enumerate(build["signature"]) if p["type"].startswith("*")]
    for i, p in enumerate(build["signature"][:-2]):
        slots[i].value = buf.address if i in pointers else 1  # sizes and strides 1
    for i, value, why in ((pointers[0], 0x1234, "outside every buffer"), (pointers[0], buf.address + 1, "aligned"),
                          (pointers[0], 0, "only an empty token set may be NULL"), (pointers[-1], buf.address,
                                                                                      "must be NULL")):
        old, slots[i].value = slots[i].value, value
        dev.failures.clear()
        assert launch() == sim.CUDA_ERROR_LAUNCH_FAILED and why in dev.failures[0], dev.failures
        slots[i].value = old
    dev.failures.clear()
    assert launch() == 0 and not dev.failures
    dev.driver.simcuda_ctx_set_current(dev.context())
    assert launch() == 201  # CUDA_ERROR_INVALID_CONTEXT: a function of another context
