"""libgopt_trt_plugins.so without TensorRT: a host compiled against the TensorRT 10.3 and
11.1 headers (tests/simgpu/plugin_host.cpp) plays TensorRT's side of IPluginV3 (creators,
both phases, output types and shapes with dynamic B and S, every format and type,
configurePlugin, workspace, serialisation, clone, attachToContext) and enqueues on the
simulated GPU (tests/simulated_gpu.py). The plugin library is the one CMake built (against
TENSORRT_ROOT's headers), so the other header set's host also checks that one binary
serves both. Nothing here runs TensorRT or a GPU."""
import ctypes
import os

import pytest
import torch

import kernels
import simulated_gpu as sim
from simulated_gpu import dev  # noqa: F401  (the fixture)
from kernels.reference import group_merge_reference, prompt_inject_reference
from tolerances import assert_outputs_close

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the simulated GPU runs the kernels in the Triton interpreter "
                                       "(TRITON_INTERPRET=1, set by tests/conftest.py without CUDA)")

FLOAT, HALF, BF16 = 0, 1, 7  # nvinfer1::DataType
LINEAR = 0  # nvinfer1::TensorFormat::kLINEAR
DTYPES = {FLOAT: "fp32", HALF: "fp16", BF16: "bf16"}
TORCH = {FLOAT: torch.float32, HALF: torch.float16, BF16: torch.bfloat16}
d, D = 32, 768
MERGE, INJECT = "GoptGroupMerge", "GoptPromptInject"
HOSTS = sorted(sim.SIM_DIR.glob("libgopt_plugin_host_trt*.so"))
_p, _i64p, _ip = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int)


class Host:
    """The C functions of plugin_host.cpp, typed."""

    def __init__(self, path, plugins):
        h = self.h = ctypes.CDLL(str(path))
        for name, res, args in [
            ("host_open", ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
            ("host_creator", ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
            ("host_create", _p, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
            ("host_recreate", _p, [_p, ctypes.c_char_p, ctypes.c_size_t]),
            ("host_describe", ctypes.c_int, [_p, ctypes.c_char_p, ctypes.c_size_t]),
            ("host_clone", _p, [_p]), ("host_attach", _p, [_p]), ("host_destroy", None, [_p]),
            ("host_output_type", ctypes.c_int, [_p, ctypes.c_int, _ip, _ip]),
            ("host_output_shape", ctypes.c_int, [_p, ctypes.c_int, _i64p, _i64p, _ip]),
            ("host_supports", ctypes.c_int, [_p, ctypes.c_int, ctypes.c_int, _ip, _ip, _i64p]),
            ("host_configure", ctypes.c_int, [_p, ctypes.c_int, _ip, _i64p, _i64p, _i64p]),
            ("host_workspace", ctypes.c_size_t, [_p, ctypes.c_int, _ip, _i64p, _i64p]),
            ("host_shape_change", ctypes.c_int, [_p, ctypes.c_int, _ip, _i64p]),
            ("host_enqueue", ctypes.c_int, [_p, ctypes.c_int, _ip, _i64p, ctypes.POINTER(_p), _p, _p, _p]),
            ("host_enum_count", ctypes.c_int, [ctypes.c_int]),
            ("host_tensorrt_version", None, [ctypes.c_char_p, ctypes.c_size_t])]:
            getattr(h, name).restype, getattr(h, name).argtypes = res, args
        version = ctypes.create_string_buffer(32)
        h.host_tensorrt_version(version, 32)
        self.version = version.value.decode()
        err = ctypes.create_string_buffer(512)
        self.creators = h.host_open(str(plugins).encode(), err, 512)
        assert self.creators >= 0, err.value.decode()
        self.types, self.formats = h.host_enum_count(0), h.host_enum_count(1)

    @staticmethod
    def text(fn, *args) -> tuple[int, str]:
        out = ctypes.create_string_buffer(1024)
        status = fn(*args, out, 1024)
        return status, out.value.decode()

    def create(self, name, phase=0, fmt=-1):
        return self.h.host_create(name.encode(), b"gopt", phase, fmt)

    def describe(self, p) -> str:
        status, text = self.text(self.h.host_describe, p)
        assert status == 0
        return text


def ints(values):
    return (ctypes.c_int * len(values))(*values)


def dims(shapes):
    flat = []
    for s in shapes:
        flat += [len(s), *s, *([0] * (3 - len(s)))]
    return (ctypes.c_int64 * len(flat))(*flat)


def merge_shapes(B, S, C, dd=d):
    return [(B, S, dd), (B, C, dd)] + [(dd, dd) if i % 2 == 0 else (dd,) for i in range(8)]


def inject_shapes(B, S, C, dd=d, DD=D):
    return [(B, S, DD), (B, C, dd), (dd, DD), (dd,)] + [(dd, dd) if i % 2 == 0 else (dd,) for i in range(8)] + [
        (DD, dd), (DD,)]


def shapes_of(name, B, S, C, **kw):
    return merge_shapes(B, S, C, **kw) if name == MERGE else inject_shapes(B, S, C, **kw)


def output_shape(name, shapes):
    return shapes[1] if name == MERGE else shapes[0]


@pytest.fixture(scope="module", params=[h.name for h in HOSTS] or ["none"])
def host(request, tmp_path_factory):
    if request.param == "none":
        pytest.skip(f"no plugin host in {sim.SIM_DIR} (cmake -DGOPT_BUILD_SIMGPU=ON with TensorRT headers; "
                    ".ci/run does)")
    sim.device()  # the simulated driver first: the plugin library opens it at its first call
    plugins = sim.fresh_copy(sim.BUILD / "libgopt_trt_plugins.so", tmp_path_factory.mktemp("plugins"))
    return Host(sim.SIM_DIR / request.param, plugins)


# ---- creators and plugin objects -------------------------------------------------------------------

def test_simulated_host_lists_both_creators(host):
    assert host.creators == 2
    infos = [host.text(host.h.host_creator, i)[1] for i in range(2)]
    assert infos == [f"PLUGIN CREATOR_V3ONE|1.0|{name}|1|gopt|format:5:1" for name in (MERGE, INJECT)]


@pytest.mark.parametrize("name", [MERGE, INJECT])
def test_simulated_plugins_are_created_in_both_phases(host, name):
    build = host.create(name)  # the ONNX parser passes the node's attributes: none
    runtime = host.create(name, phase=1, fmt=1)
    assert build and runtime
    expected = f"{name}|1|gopt|1|PLUGIN_V3ONE_CORE 1|PLUGIN_V3ONE_BUILD 1|PLUGIN_V3ONE_RUNTIME 1"
    assert host.describe(build) == host.describe(runtime) == expected
    assert not host.create(name, phase=1, fmt=2)  # an engine from a newer layout: refused
    fields = ctypes.create_string_buffer(256)
    again = host.h.host_recreate(build, fields, 256)
    assert fields.value.decode() == "format:5:1=1" and host.describe(again) == expected
    clone, attached = host.h.host_clone(build), host.h.host_attach(runtime)
    assert clone not in (build, None) and attached not in (runtime, None)
    for p in (build, runtime, again):
        host.h.host_destroy(p)
    assert host.describe(clone) == host.describe(attached) == expected  # independent of their originals
    host.h.host_destroy(clone)
    host.h.host_destroy(attached)


@pytest.mark.parametrize("name", [MERGE, INJECT])
def test_simulated_output_types_and_dynamic_shapes(host, name):
    p = host.create(name)
    shapes = shapes_of(name, -1, -1, 9)
    n = len(shapes)
    out = ctypes.c_int()
    for t in (FLOAT, HALF, BF16):
        assert host.h.host_output_type(p, n, ints([t] * n), ctypes.byref(out)) == 0 and out.value == t
    result, origin = (ctypes.c_int64 * 4)(), (ctypes.c_int * 3)()
    assert host.h.host_output_shape(p, n, dims(shapes), result, origin) == 0
    source = 1 if name == MERGE else 0
    assert list(result) == [3, *output_shape(name, shapes)]
    assert list(origin) == [4 * source + k for k in range(3)]  # the input's own expressions: B stays symbolic
    bad = list(shapes)
    bad[source] = (9, d)
    assert host.h.host_output_shape(p, n, dims(bad), result, origin) != 0
    host.h.host_destroy(p)


# ---- build-time checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("cc", [80, 75])
@pytest.mark.parametrize("name,C", [(MERGE, 9), (MERGE, 40), (INJECT, 9), (INJECT, 150)])
def test_simulated_formats_are_the_dtypes_embedded_for_this_gpu(host, dev, name, C, cc):
    """Every (type, format) at every position: linear only, input 0's type everywhere, and
    input 0 only in a dtype the library has builds of for this GPU, C and d."""
    dev.configure(cc)
    p = host.create(name)
    shapes = shapes_of(name, -1, -1, C)
    shapes.append(output_shape(name, shapes))
    n = len(shapes) - 1
    kernel = "group_merge" if name == MERGE else "prompt_inject"
    c_pad = max(16, 1 << (C - 1).bit_length())
    offered = {t for t in range(host.types) for f in range(host.formats)
               if host.h.host_supports(p, 0, n, ints([t] * (n + 1)), ints([f] * (n + 1)), dims(shapes))}
    expected = {t for t, dtype in DTYPES.items() if sim.runs(kernel, dtype, c_pad, cc)}
    assert offered == expected, f"offered {offered}, the library runs {expected} on sm_{cc}"
    if cc == 80:
        assert FLOAT in offered
    for pos in (1, 2, n - 1, n):
        for t in range(host.types):
            for f in range(host.formats):
                types, formats = [FLOAT] * (n + 1), [LINEAR] * (n + 1)
                types[pos], formats[pos] = t, f
                ok = host.h.host_supports(p, pos, n, ints(types), ints(formats), dims(shapes))
                assert ok == (t == FLOAT and f == LINEAR), (pos, t, f)
    host.h.host_destroy(p)


def configure(host, p, name, lo, hi, dtype=FLOAT):
    """configurePlugin with a profile from shapes ``lo`` to ``hi`` (opt = hi)."""
    n = len(lo)
    return host.h.host_configure(p, n, ints([dtype] * (n + 1)), dims(lo + [output_shape(name, lo)]),
                                 dims(hi + [output_shape(name, hi)]), dims(hi + [output_shape(name, hi)]))


BAD_PROFILES = [  # (plugin, what, low shapes, high shapes, dtype): the library cannot run them
    (MERGE, "d = 24", merge_shapes(1, 1, 9, dd=24), merge_shapes(8, 1200, 9, dd=24), FLOAT),
    (MERGE, "C = 300", merge_shapes(1, 1, 300), merge_shapes(8, 1200, 300), FLOAT),
    (INJECT, "C = 300", inject_shapes(1, 1, 300), inject_shapes(8, 1200, 300), FLOAT),
    (INJECT, "d = 48", inject_shapes(1, 1, 9, dd=48), inject_shapes(8, 1200, 9, dd=48), FLOAT),
    (MERGE, "bf16 without a C = 40 build", merge_shapes(1, 1, 40), merge_shapes(8, 1200, 40), BF16),
    (MERGE, "S beyond the grid", merge_shapes(1, 1, 9), merge_shapes(1, 4_200_000, 9), FLOAT),
    (INJECT, "B beyond the grid", inject_shapes(1, 1, 9, DD=16), inject_shapes(70_000, 1, 9, DD=16), FLOAT),
    (INJECT, "S*D beyond int32", inject_shapes(1, 1, 9), inject_shapes(1, 3_000_000, 9), FLOAT),
    (MERGE, "a weight of the wrong shape", merge_shapes(1, 1, 9)[:2] + [(d, 16)] + merge_shapes(1, 1, 9)[3:],
     merge_shapes(8, 1200, 9)[:2] + [(d, 16)] + merge_shapes(8, 1200, 9)[3:], FLOAT),
    (INJECT, "P of another batch", inject_shapes(1, 1, 9)[:1] + [(3, 9, d)] + inject_shapes(1, 1, 9)[2:],
     inject_shapes(2, 1200, 9)[:1] + [(3, 9, d)] + inject_shapes(2, 1200, 9)[2:], FLOAT),
]


@pytest.mark.parametrize("name,what,lo,hi,dtype", BAD_PROFILES, ids=[b[1] for b in BAD_PROFILES])
def test_simulated_configure_refuses_what_the_library_cannot_run(host, dev, name, what, lo, hi, dtype, capfd):
    if what.startswith("bf16") and sim.runs("group_merge", "bf16", 64, 80):
        pytest.skip("this build embeds bf16 C = 40 merges")
    p = host.create(name)
    assert configure(host, p, name, lo, hi, dtype) != 0, what
    assert f"[{name}]" in capfd.readouterr().err  # the reason, on stderr
    host.h.host_destroy(p)


@pytest.mark.parametrize("name", [MERGE, INJECT])
def test_simulated_configure_accepts_the_gopt_profiles(host, dev, name):
    for C in (9, 40, 150):
        p = host.create(name)
        assert configure(host, p, name, shapes_of(name, 1, 1, C), shapes_of(name, 8, 4096, C)) == 0
        host.h.host_destroy(p)


@pytest.mark.parametrize("C", [9, 40, 150])
def test_simulated_workspace_at_the_profile_maximum_covers_every_smaller_shape(host, dev, C):
    p = host.create(MERGE)
    lo, hi = merge_shapes(1, 1, C), merge_shapes(4, 1300, C)
    n = len(lo)
    size = host.h.host_workspace(p, n, ints([FLOAT] * (n + 1)), dims(lo + [lo[1]]), dims(hi + [hi[1]]))
    lib = kernel_library()
    assert size == lib.gopt_group_merge_workspace_size(4, 1300, C, d) > 0
    for B in range(1, 5):
        for S in (0, 1, 63, 64, 65, 127, 128, 129, 500, 1299, 1300):
            assert lib.gopt_group_merge_workspace_size(B, S, C, d) <= size, (B, S)
    inject = host.create(INJECT)
    lo, hi = inject_shapes(1, 1, C), inject_shapes(4, 1300, C)
    assert host.h.host_workspace(inject, len(lo), ints([FLOAT] * (len(lo) + 1)), dims(lo + [lo[0]]),
                                 dims(hi + [hi[0]])) == 0
    host.h.host_destroy(p)
    host.h.host_destroy(inject)


_kernel_library = []


def kernel_library():
    from kernels import native

    if not _kernel_library:
        _kernel_library.append(native.open_library(sim.BUILD / "libgopt_kernels.so"))
    return _kernel_library[0]


# ---- enqueue on the simulated GPU ----------------------------------------------------------------

def tensors(dev, name, shapes, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, s in enumerate(shapes):
        scale = 1.0 if i < 2 else (0.05 if name == INJECT and i == 2 else 0.3)
        out.append(dev.memory.tensor(f"in{i}", (torch.randn(*s, generator=g) * scale).to(dtype)))
    return out


PROFILE = (1, 2, 1, 200)  # B from 1 to 2, S from 1 to 200: both sides of the one-program merge


@pytest.mark.parametrize("dtype", [FLOAT, HALF])
@pytest.mark.parametrize("name,B,S,C", [(MERGE, 2, 64, 9), (MERGE, 1, 65, 9), (MERGE, 2, 200, 40), (MERGE, 2, 0, 9),
                                        (INJECT, 2, 1, 9), (INJECT, 1, 200, 40)])
def test_simulated_enqueue_equals_the_python_dispatch(host, dev, name, B, S, C, dtype):
    """The engine's life of a plugin: built with a dynamic profile (workspace at its
    maximum), serialised, re-created at run time, attached to a context, shape change,
    enqueue on the simulated GPU with 0xFF workspace of exactly the size asked."""
    kind = DTYPES[dtype]
    if not sim.runs("group_merge" if name == MERGE else "prompt_inject", kind, max(16, 1 << (C - 1).bit_length()), 80):
        pytest.skip(f"this build embeds no {kind} C = {C} kernels")
    b0, b1, s0, s1 = PROFILE
    lo, hi = shapes_of(name, b0, s0, C), shapes_of(name, b1, s1, C)
    n = len(lo)
    types = ints([dtype] * (n + 1))
    built = host.create(name)
    assert configure(host, built, name, lo, hi, dtype) == 0
    ws_size = host.h.host_workspace(built, n, types, dims(lo + [output_shape(name, lo)]),
                                    dims(hi + [output_shape(name, hi)]))
    fields = ctypes.create_string_buffer(256)
    engine = host.h.host_recreate(built, fields, 256)
    runtime = host.h.host_attach(engine)
    shapes = shapes_of(name, B, S, C)
    out_shape = output_shape(name, shapes)
    assert host.h.host_shape_change(runtime, n, types, dims(shapes + [out_shape])) == 0
    inputs = tensors(dev, name, shapes, TORCH[dtype], seed=S + C)
    out = dev.memory.output("out", out_shape, TORCH[dtype])
    ws = dev.memory.workspace(ws_size) if ws_size else None
    pointers = (_p * n)(*[t.data_ptr() if t.numel() else None for t in inputs])
    dev.driver.simcuda_ctx_set_current(dev.context())
    stream = dev.stream()
    status = host.h.host_enqueue(runtime, n, types, dims(shapes + [out_shape]), pointers,
                                 out.data_ptr() if out.numel() else None, ws.address if ws else None, stream)
    assert status == 0
    dev.check()
    assert all(x.stream == stream for x in dev.launches)
    if name == MERGE:
        expected, ref = (kernels.group_merge(*inputs, backend="triton"), group_merge_reference(*inputs))
        assert [x.kernel for x in dev.launches] == ["group_merge"] + (["group_merge_epilogue"] if S > 64 else [])
    else:
        expected, ref = kernels.prompt_inject(*inputs, backend="triton"), prompt_inject_reference(*inputs)
    assert torch.equal(out, expected), "differs from the Python dispatch"
    sim.record_case(kind, assert_outputs_close(out, ref, TORCH[dtype]), f"{name} plugin", ref)
    for p in (built, engine, runtime):
        host.h.host_destroy(p)


def test_simulated_enqueue_reports_a_gpu_without_kernels(host, dev, capfd):
    dev.configure(75)
    p = host.create(MERGE, phase=1, fmt=1)
    shapes = merge_shapes(1, 1, 9)
    n = len(shapes)
    inputs = tensors(dev, MERGE, shapes, torch.float32, 0)
    out = dev.memory.output("out", shapes[1], torch.float32)
    pointers = (_p * n)(*[t.data_ptr() for t in inputs])
    status = host.h.host_enqueue(p, n, ints([FLOAT] * (n + 1)), dims(shapes + [shapes[1]]), pointers,
                                 out.data_ptr(), None, None)
    assert status == 4  # GOPT_NO_KERNEL_FOR_ARCH
    assert "[GoptGroupMerge]" in capfd.readouterr().err and not dev.launches
    host.h.host_destroy(p)
