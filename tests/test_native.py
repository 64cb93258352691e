"""libgopt_kernels.so and libgopt_trt_plugins.so as CMake builds them (``cmake -S . -B build
&& cmake --build build``, which .ci/run does): exported symbols, the C ABI's errors without
a GPU, the embedded images against the AOT manifest, the plugin library against the
TensorRT 10.3 and 11.1 headers; on a GPU, the C library against the PyTorch reference."""
import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import native

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("GOPT_BUILD_DIR", ROOT / "build"))
TENSORRT_HEADERS = ROOT.parent / "shared" / "third_party" / "tensorrt"
C_ABI = {"gopt_version", "gopt_last_error", "gopt_group_merge_workspace_size", "gopt_group_merge",
         "gopt_prompt_inject", "gopt_can_run"}
BUILD_HINT = "build it first: cmake -S . -B build && cmake --build build (.ci/run does)"


def built(name: str) -> Path:
    path = BUILD / name
    if not path.is_file():
        pytest.skip(f"{path} is not built; {BUILD_HINT}")
    return path


def dynamic_symbols(path: Path, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def aot_dir() -> Path:
    """The AOT folder the build embedded (named in the generated table's first line)."""
    first = (BUILD / "generated" / "gopt_variants.c").read_text().splitlines()[0]
    return Path(re.search(r"from (\S+)/manifest\.json", first).group(1))


def driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


# ---- the C library ----------------------------------------------------------------------------

def test_kernel_library_exports_exactly_the_c_abi():
    lib = built("libgopt_kernels.so")
    assert dynamic_symbols(lib, defined=True) == C_ABI
    undefined = dynamic_symbols(lib, defined=False)
    assert not {s for s in undefined if s.startswith("cu")}, "libcuda is opened at run time, never linked"


def merge_args(B=1, S=64, C=16, d=32, dtype=0, size=None):
    fake = 0x1000  # never dereferenced: every call below fails before the GPU is touched
    return native.GroupMergeArgs(size or ctypes.sizeof(native.GroupMergeArgs), dtype, B, S, C, d,
                                 fake, (ctypes.c_int64 * 3)(S * d, d, 1), fake, (ctypes.c_int64 * 3)(C * d, d, 1),
                                 *([fake] * 9))


def test_bad_arguments_are_explained_without_a_gpu():
    lib = native.open_library(built("libgopt_kernels.so"))
    assert lib.gopt_version() == 1
    cases = [(merge_args(size=8), 1, "gopt_group_merge_args with size"),
             (merge_args(d=24), 2, "d must be 16, 32, 64 or 128, got 24"),
             (merge_args(C=300), 2, "C must be in [1, 256], got 300"),
             (merge_args(S=2**31), 2, "exceeds int32"),
             (merge_args(dtype=7), 1, "dtype must be")]
    for args, status, text in cases:
        assert lib.gopt_group_merge(ctypes.byref(args), None, 0, None) == status
        assert text in lib.gopt_last_error().decode()
    args = native.PromptInjectArgs(ctypes.sizeof(native.PromptInjectArgs), 0, 1, 64, 48, 16, 32)
    assert lib.gopt_prompt_inject(ctypes.byref(args), None) == 1
    assert "f is NULL" in lib.gopt_last_error().decode()


MISSING_DRIVER = """
import ctypes, json, sys
from kernels import native
lib = native.open_library(sys.argv[1])
build = next(b for b in json.load(open(sys.argv[2]))["builds"] if b["kernel"] == "group_merge")
args = native.GroupMergeArgs(ctypes.sizeof(native.GroupMergeArgs), {"fp32": 0, "fp16": 1, "bf16": 2}[build["dtype"]],
                             1, 64, build["constexprs"]["C_PAD"], build["constexprs"]["DP"])
for name in ("a", "c", "q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w", "o_b", "out"):
    setattr(args, name, 0x1000)
print(lib.gopt_group_merge(ctypes.byref(args), None, 0, None), lib.gopt_last_error().decode())
"""


@pytest.mark.skipif(driver_present(), reason="this machine has a CUDA driver")
def test_missing_driver_is_explained():
    """In a process of its own: this one may hold the simulated driver (tests/simulated_gpu.py)."""
    run = subprocess.run([sys.executable, "-c", MISSING_DRIVER, str(built("libgopt_kernels.so")),
                          str(aot_dir() / "manifest.json")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    status, message = run.stdout.strip().split(" ", 1)
    assert status == "3"  # GOPT_NO_DRIVER
    assert "cannot load the CUDA driver" in message and "libcuda.so.1" in message


def test_workspace_size_follows_the_split():
    lib = native.open_library(built("libgopt_kernels.so"))
    manifest = json.loads((aot_dir() / "manifest.json").read_text())
    split = next(b for b in manifest["builds"] if b["kernel"] == "group_merge" and not b["constexprs"]["FUSED_EPILOGUE"])
    c_pad, d, tpp = (split["constexprs"][k] for k in ("C_PAD", "DP", "TOKENS_PER_PROG"))
    assert lib.gopt_group_merge_workspace_size(2, tpp, c_pad, d) == 0  # one program per sample
    assert lib.gopt_group_merge_workspace_size(2, 0, c_pad, d) == 0
    parts = 2 * 4  # B=2, S=4*tpp tokens -> 4 partials per sample
    sums = parts * c_pad * d * 4
    assert lib.gopt_group_merge_workspace_size(2, 4 * tpp, c_pad, d) == -(-sums // 256) * 256 + parts * c_pad * 4


def test_embedded_images_are_the_manifests():
    lib = built("libgopt_kernels.so").read_bytes()
    folder = aot_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["builds"], "the build embedded no kernels"
    table = (BUILD / "generated" / "gopt_variants.c").read_text()
    ptx_arch = re.search(r"--ptx-arch=(\S*);", table).group(1)
    embedded = 0
    for b in manifest["builds"]:
        cubin = (folder / b["cubin"]).read_bytes()
        assert hashlib.sha256(cubin).hexdigest() == b["cubin_sha256"]
        assert cubin in lib, f"{b['cubin']} is not embedded"
        embedded += 1
        if b["arch"] == ptx_arch:
            ptx = (folder / b["ptx"]).read_bytes()
            assert hashlib.sha256(ptx).hexdigest() == b["ptx_sha256"]
            assert ptx + b"\0" in lib, f"{b['ptx']} is not embedded NUL-terminated"
            assert re.search(rb"^\.target sm_%s\b" % b["arch"].encode(), ptx, re.MULTILINE)
            embedded += 1
    assert f"gopt_variant_count = {embedded};" in table


# ---- the plugin library -----------------------------------------------------------------------

def test_plugin_library_exports_the_tensorrt_entry_points():
    lib = built("libgopt_trt_plugins.so")
    assert dynamic_symbols(lib, defined=True) == {"getCreators", "setLoggerFinder"}
    undefined = dynamic_symbols(lib, defined=False)
    assert not {s for s in undefined if "nvinfer" in s or s.startswith(("cu", "_ZN8nvinfer1"))}
    # no TensorRT symbol is needed, so the creators can be listed without TensorRT installed
    count = ctypes.c_int32(0)
    plugins = ctypes.CDLL(str(lib))
    plugins.getCreators.restype = ctypes.c_void_p
    assert plugins.getCreators(ctypes.byref(count)) and count.value == 2


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.3.0", "11.1"])
def test_plugins_compile_against_tensorrt_headers(version, tmp_path):
    headers = TENSORRT_HEADERS / version / "include"
    if not (headers / "NvInferRuntime.h").is_file():
        pytest.skip(f"no TensorRT {version} headers at {headers}")
    built("libgopt_kernels.so")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    configure = [cmake, "-S", str(ROOT), "-B", str(tmp_path), f"-DPython3_EXECUTABLE={sys.executable}",
                 f"-DGOPT_AOT_DIR={aot_dir()}", f"-DTENSORRT_ROOT={headers.parent}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    run = subprocess.run([cmake, "--build", str(tmp_path), "--target", "gopt_trt_plugins"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "warning" not in run.stdout.lower(), run.stdout[-3000:]
    assert dynamic_symbols(tmp_path / "libgopt_trt_plugins.so", defined=True) == {"getCreators", "setLoggerFinder"}


# ---- on a GPU: the C library against the PyTorch reference ------------------------------------

def cuda_or_skip():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (the C library launches the embedded cubins)")
    return torch


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("B,S,C", [(2, 196, 9), (1, 1024, 16)])
def test_c_library_matches_the_reference_on_a_gpu(dtype, B, S, C):
    torch = cuda_or_skip()
    from kernels.reference import group_merge_reference, prompt_inject_reference

    lib = native.NativeKernels(built("libgopt_kernels.so"))
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    manifest = json.loads((aot_dir() / "manifest.json").read_text())
    if not any(b["dtype"] == short and b["constexprs"]["DP"] == 32 and b["constexprs"]["C_PAD"] == 16
               for b in manifest["builds"]):
        pytest.skip(f"this build embeds no {short} d=32 C_PAD=16 kernels (GOPT_DTYPES / GOPT_GROUPS)")
    g = torch.Generator(device="cuda").manual_seed(0)
    dt, d, D = getattr(torch, dtype), 32, 96

    def rand(*shape):
        return (torch.randn(*shape, generator=g, device="cuda") * 0.3).to(dt)

    z = rand(B, S + C, d)
    a, c = z[:, :S], z[:, S:]  # strided views, as CUP hands them over
    merge_w = [rand(*s) for _ in range(4) for s in ((d, d), (d,))]
    P = lib.group_merge(a, c, *merge_w)
    ref_P = group_merge_reference(a, c, *merge_w)
    f = rand(B, D, S).transpose(1, 2)  # the first prompter's layout
    inject_w = [rand(d, D), rand(d)] + [rand(*s) for _ in range(4) for s in ((d, d), (d,))] + [rand(D, d), rand(D)]
    out = lib.prompt_inject(f, ref_P, *inject_w)
    ref_out = prompt_inject_reference(f, ref_P, *inject_w)
    torch.cuda.synchronize()
    tol = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}[dtype]
    assert (P.float() - ref_P.float()).abs().max() <= tol
    assert (out.float() - ref_out.float()).abs().max() <= tol * max(1.0, ref_out.float().abs().max().item())


# ---- the embedding step -------------------------------------------------------------------------

def test_embedding_refuses_what_the_launcher_cannot_run(tmp_path):
    """native/embed_kernels.py turns a manifest into the C table; a changed image, a parameter
    or grid the launcher does not know must fail the build, not embed something wrong."""
    image = tmp_path / "k.cubin"
    image.write_bytes(b"\x7fELF not really a cubin")
    record = {"kernel": "group_merge_epilogue", "name": "_group_merge_epilogue_kernel", "arch": "90a",
              "capability": 90, "dtype": "fp32", "constexprs": {"DP": 32, "C_PAD": 16, "BLOCK_C": 16},
              "signature": [{"name": "c_ptr", "type": "*fp32"}, {"name": "split", "type": "i32"}],
              "grid": ["B", "1", "1"], "block": [128, 1, 1], "shared_bytes": 0, "cubin": "k.cubin",
              "cubin_sha256": hashlib.sha256(image.read_bytes()).hexdigest(), "ptx": "k.ptx", "ptx_sha256": ""}

    def embed(**change):
        (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "builds": [{**record, **change}]}))
        return subprocess.run([sys.executable, str(ROOT / "native" / "embed_kernels.py"), str(tmp_path),
                               str(tmp_path / "out"), "--ptx-arch="], capture_output=True, text=True)

    ok = embed()
    assert ok.returncode == 0, ok.stderr
    table = (tmp_path / "out" / "gopt_variants.c").read_text()
    assert "GOPT_K_GROUP_MERGE_EPILOGUE, 0, 90, 1, 0, 32, 16, -1, 0," in table
    assert "gopt_variant_count = 1;" in table
    assert f'.incbin "{image.resolve()}"' in (tmp_path / "out" / "gopt_images.S").read_text()
    for change, message in ((dict(cubin_sha256="0" * 64), "differs from the manifest"),
                            (dict(signature=[{"name": "mystery", "type": "i32"}]), "parameters ['mystery']"),
                            (dict(grid=["B", "os.system('x')", "1"]), "grid expression"),
                            (dict(signature=[{"name": "split", "type": "i64"}]), "parameter type 'i64'")):
        bad = embed(**change)
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr
