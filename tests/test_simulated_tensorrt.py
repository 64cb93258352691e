"""The simulated TensorRT and CUDA runtime (tests/simulated) hold to the contracts they stand in
for, so that the TensorRT tests that run on them can fail: only the names each TensorRT version
has; copies and executions that complete only when the host waits; stream capture that records
without running and graphs that replay; the calls CUDA forbids during a capture; memory errors
as errors; TensorRT's shape, address, engine and plugin checks. No GPU is involved."""
import ctypes
import re
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from simulated.cuda_runtime import POISON, SimulatedCuda, SimulationError
from simulated.environment import SIMULATED_VERSIONS, native_plugin_creators
from simulated.tensorrt_module import NESTED, PluginLibraries, api_names, make_tensorrt
from test_tensorrt_api import NOT_LISTED, project_uses



@pytest.fixture
def rt():
    cuda = SimulatedCuda()
    module = cuda.module()
    module.cuda = cuda
    return module


def ok(result):
    err, *values = result
    assert err == 0, err
    return values[0] if values else None


def put(address, data: bytes):
    ctypes.memmove(address, data, len(data))


# ---- names -----------------------------------------------------------------------------------------

def public_names(trt) -> set[str]:
    names = set()
    for attr, value in vars(trt).items():
        if attr.startswith("_"):
            continue
        names.add(attr)
        if isinstance(value, type):
            names |= {f"{attr}.{m}" for m in vars(value) if not m.startswith("_")}
            names |= {f"{attr}.{m}" for m in getattr(value, "__members__", {})}
    return names


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_the_module_has_only_names_of_its_version(version):
    trt = make_tensorrt(version, SimulatedCuda())
    extra = public_names(trt) - api_names(version) - set(NOT_LISTED) - NESTED
    assert extra == set()


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_every_name_the_project_uses_is_there(version):
    """The subset is the project's: every TensorRT name its code uses resolves (tests/test_tensorrt_api.py
    collects them)."""
    trt = make_tensorrt(version, SimulatedCuda())
    for name in sorted({u.name for u in project_uses()}):
        owner, _, member = name.rpartition(".")
        obj = getattr(trt, owner) if owner else trt
        if owner == "Logger" and member == "min_severity":
            obj = trt.Logger()
        assert hasattr(obj, member), f"{name} is missing from the simulated TensorRT {version}"


def test_a_name_the_version_lacks_is_an_attribute_error():
    old, new = (make_tensorrt(v, SimulatedCuda()) for v in ("10.3", "11.1"))
    assert int(old.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) == 0
    with pytest.raises(AttributeError):
        new.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018: removed in TensorRT 11
    with pytest.raises(AttributeError):
        old.NetworkDefinitionCreationFlag.PREFER_JIT_PYTHON_PLUGINS  # noqa: B018: new in 10.x after 10.3
    # the same flag has other values: 1 on 10.x, 0 on 11.x, as in their headers
    assert [int(m.NetworkDefinitionCreationFlag.STRONGLY_TYPED) for m in (old, new)] == [1, 0]
    assert "E8M0" not in old.DataType.__members__ and "E8M0" in new.DataType.__members__


# ---- the CUDA runtime --------------------------------------------------------------------------------

def test_copies_complete_when_the_host_waits(rt):
    data = bytes(range(16))
    host, device, out = ok(rt.cudaMallocHost(16)), ok(rt.cudaMalloc(16)), ok(rt.cudaMallocHost(16))
    assert host % 256 == 0 and device % 256 == 0 and ctypes.string_at(device, 16) == bytes([POISON]) * 16
    put(host, data)
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    ok(rt.cudaMemcpyAsync(device, host, 16, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    ok(rt.cudaMemcpyAsync(out, device, 16, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
    assert ctypes.string_at(out, 16) == bytes([POISON]) * 16  # queued, not done
    ok(rt.cudaStreamSynchronize(stream))
    assert ctypes.string_at(out, 16) == data
    ok(rt.cudaStreamDestroy(stream))


def test_host_writes_under_a_queued_copy_are_caught(rt):
    host, device = ok(rt.cudaMallocHost(8)), ok(rt.cudaMalloc(8))
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    ok(rt.cudaMemcpyAsync(device, host, 8, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    put(host, b"too soon")
    with pytest.raises(SimulationError, match="changed or freed by the host while the copy was still queued"):
        rt.cudaStreamSynchronize(stream)


def test_capture_records_and_only_a_graph_launch_runs(rt):
    host, device = ok(rt.cudaMallocHost(4)), ok(rt.cudaMalloc(4))
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    put(host, b"abcd")
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    ok(rt.cudaMemcpyAsync(device, host, 4, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    graph = ok(rt.cudaStreamEndCapture(stream))
    ok(rt.cudaStreamSynchronize(stream))
    assert rt.cuda.read(device, 4) == bytes([POISON]) * 4  # recorded, not run
    graph_exec = ok(rt.cudaGraphInstantiate(graph, 0))
    ok(rt.cudaGraphDestroy(graph))  # the executable graph is independent of it
    for value in (b"abcd", b"wxyz"):
        put(host, value)
        ok(rt.cudaGraphLaunch(graph_exec, stream))
        ok(rt.cudaStreamSynchronize(stream))
        assert rt.cuda.read(device, 4) == value
    ok(rt.cudaGraphExecDestroy(graph_exec))


def test_calls_cuda_forbids_during_a_capture(rt):
    E = rt.cudaError_t
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    modes = rt.cudaStreamCaptureMode
    ok(rt.cudaStreamBeginCapture(stream, modes.cudaStreamCaptureModeThreadLocal))
    other = []
    thread = threading.Thread(target=lambda: other.append(rt.cudaMalloc(8)[0]))
    thread.start()
    thread.join()
    assert other == [E.cudaSuccess]  # another thread may allocate during a thread-local capture
    assert rt.cudaMalloc(8)[0] == E.cudaErrorStreamCaptureUnsupported
    assert rt.cudaStreamSynchronize(stream)[0] == E.cudaErrorStreamCaptureUnsupported
    assert rt.cudaStreamEndCapture(stream) == (E.cudaErrorStreamCaptureInvalidated, None)
    ok(rt.cudaStreamBeginCapture(stream, modes.cudaStreamCaptureModeRelaxed))
    ok(rt.cudaMalloc(8))  # relaxed: allowed
    ok(rt.cudaStreamEndCapture(stream))
    assert rt.cudaStreamBeginCapture(0, modes.cudaStreamCaptureModeGlobal)[0] == E.cudaErrorStreamCaptureUnsupported


def test_memory_errors_are_errors(rt):
    E = rt.cudaError_t
    host, device = ok(rt.cudaMallocHost(8)), ok(rt.cudaMalloc(8))
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    assert rt.cudaMemcpyAsync(device, host, 9, h2d, stream)[0] == E.cudaErrorInvalidValue  # past the end
    with pytest.raises(SimulationError, match="pageable host memory"):
        rt.cudaMemcpyAsync(device, ctypes.addressof(ctypes.create_string_buffer(8)), 8, h2d, stream)
    with pytest.raises(SimulationError, match="undefined behaviour"):
        rt.cudaMemcpyAsync(host, device, 8, h2d, stream)  # the direction contradicts the pointers
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed))
    ok(rt.cudaMemcpyAsync(device, host, 8, h2d, stream))
    graph_exec = ok(rt.cudaGraphInstantiate(ok(rt.cudaStreamEndCapture(stream)), 0))
    ok(rt.cudaFree(device))
    assert rt.cudaFree(device)[0] == E.cudaErrorInvalidDevicePointer  # twice
    ok(rt.cudaGraphLaunch(graph_exec, stream))  # replays a copy into freed memory
    assert rt.cudaStreamSynchronize(stream)[0] == E.cudaErrorIllegalAddress
    assert "was freed" in rt.cuda.faults[0]
    assert rt.cudaMalloc(8)[0] == E.cudaErrorIllegalAddress  # sticky, as on a device
    assert rt.cudaGetErrorString(E.cudaErrorIllegalAddress)[1].endswith(b"[simulated CUDA runtime]")


# ---- TensorRT ------------------------------------------------------------------------------------------

def double_onnx(path, domain=None):
    """y = x + x for x [batch, 4] (or one custom node when ``domain`` is given)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    if domain is None:
        node = helper.make_node("Add", ["x", "x"], ["y"], name="add")
    else:
        node = helper.make_node("GoptGroupMerge", ["x"], ["y"], name="merge", domain=domain,
                                plugin_namespace="gopt", plugin_version="1")
    model = helper.make_model(helper.make_graph([node], "double", [x], [y]), opset_imports=[
        helper.make_opsetid("", 18), *([helper.make_opsetid(domain, 1)] if domain else [])])
    onnx.save(model, str(path))
    return path


def build(trt, path, lo=1, hi=4, flags=None):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if flags is None else flags
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return None, [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (lo, 4), (lo, 4), (hi, 4))
    assert config.add_optimization_profile(profile) == 0
    return bytes(builder.build_serialized_network(network, config)), []


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_execution_context_contract(version, tmp_path):
    cuda = SimulatedCuda()
    trt, rt = make_tensorrt(version, cuda), cuda.module()
    plan, _ = build(trt, double_onnx(tmp_path / "double.onnx"), lo=2)
    engine = trt.Runtime(trt.Logger(trt.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    assert tuple(engine.get_tensor_shape("x")) == (-1, 4) and engine.get_tensor_mode("y") == trt.TensorIOMode.OUTPUT
    assert not context.set_input_shape("x", (1, 4))  # below the profile's min
    assert not context.set_input_shape("x", (2, 5))  # a fixed dimension
    assert not context.set_input_shape("y", (2, 4))  # not an input
    stream = ok(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
    assert not context.execute_async_v3(int(stream))  # no shape, no addresses
    assert context.set_input_shape("x", (3, 4)) and tuple(context.get_tensor_shape("y")) == (3, 4)
    x, y = ok(rt.cudaMalloc(48)), ok(rt.cudaMalloc(48))
    put(x, np.arange(12, dtype=np.float32).tobytes())
    assert not context.set_tensor_address("x", x + 4)  # not 256-byte aligned
    assert context.set_tensor_address("x", x) and context.set_tensor_address("y", y)
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert not context.execute_async_v3(int(stream))  # the first enqueue after a shape change
    assert rt.cudaStreamEndCapture(stream)[0] == rt.cudaError_t.cudaErrorStreamCaptureInvalidated
    assert context.execute_async_v3(int(stream))
    assert cuda.read(y, 4) == bytes([POISON]) * 4  # queued
    ok(rt.cudaStreamSynchronize(stream))
    assert (np.frombuffer(cuda.read(y, 48), np.float32) == 2 * np.arange(12)).all()
    ok(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    assert context.execute_async_v3(int(stream))  # now capturable
    graph_exec = ok(rt.cudaGraphInstantiate(ok(rt.cudaStreamEndCapture(stream)), 0))
    put(x, np.ones(12, np.float32).tobytes())
    ok(rt.cudaGraphLaunch(graph_exec, stream))
    ok(rt.cudaStreamSynchronize(stream))
    assert (np.frombuffer(cuda.read(y, 48), np.float32) == 2).all()


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_engines_are_refused_as_tensorrt_refuses_them(version, tmp_path):
    cuda = SimulatedCuda()
    trt = make_tensorrt(version, cuda)
    plan, _ = build(trt, double_onnx(tmp_path / "double.onnx"))
    runtime = trt.Runtime(trt.Logger(trt.Logger.INTERNAL_ERROR))
    assert runtime.deserialize_cuda_engine(plan) is not None
    assert runtime.deserialize_cuda_engine(b"not an engine") is None
    cuda.capability = (9, 0)
    assert runtime.deserialize_cuda_engine(plan) is None
    other = "10.16" if version != "10.16" else "11.1"
    assert make_tensorrt(other, SimulatedCuda()).Runtime(trt.Logger()).deserialize_cuda_engine(plan) is None


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_network_flags_are_those_of_the_version(version, tmp_path):
    cuda = SimulatedCuda()
    trt = make_tensorrt(version, cuda)
    model = double_onnx(tmp_path / "double.onnx")
    from simulated.tensorrt_module import EngineData
    strongly = EngineData.from_bytes(build(trt, model)[0]).strongly_typed
    weakly = EngineData.from_bytes(build(trt, model, flags=0)[0]).strongly_typed
    assert strongly and weakly == version.startswith("11")  # TensorRT 11 has no other kind of network
    assert trt.Builder(trt.Logger(trt.Logger.INTERNAL_ERROR)).create_network(1 << 7) is None  # no such flag


@pytest.mark.parametrize("version", SIMULATED_VERSIONS)
def test_plugin_libraries_and_plugin_nodes(version, tmp_path):
    libraries = PluginLibraries()
    trt = make_tensorrt(version, SimulatedCuda(), libraries)
    model = double_onnx(tmp_path / "merge.onnx", domain="ai.onnx.contrib")
    plan, errors = build(trt, model)
    assert plan is None and errors[0].node() == 0 and errors[0].node_operator() == "GoptGroupMerge"
    assert "no creator named 'GoptGroupMerge' version '1' namespace 'gopt'" in errors[0].desc()
    registry = trt.get_plugin_registry()
    assert registry.load_library(str(tmp_path / "missing.so")) is None
    library = tmp_path / "libgopt_trt_plugins.so"
    library.write_bytes(b"a plugin library")
    assert registry.load_library(str(library)) is None  # not known as a plugin library
    libraries.declare(library, native_plugin_creators())
    assert ("GoptGroupMerge", "1", "gopt") in native_plugin_creators()
    assert registry.load_library(str(library)) is not None
    assert registry.load_library(str(library)) is None  # its plugins are registered already
    assert trt.OnnxParser(trt.Builder(trt.Logger()).create_network(), trt.Logger()).parse_from_file(str(model))


def test_the_gpu_run_says_what_is_missing():
    """The real-TensorRT run of every TensorRT test skips with what this machine lacks."""
    from runtime.backends.trt_backend import BackendUnavailable, cuda_device, import_cudart, import_tensorrt
    from simulated.environment import real_or_skip
    try:
        import_tensorrt()
        cuda_device(import_cudart(), 0)
    except (BackendUnavailable, RuntimeError) as e:
        with pytest.raises(pytest.skip.Exception, match=re.escape(f"needs TensorRT 10.3-11.x and a CUDA GPU: {e}")):
            real_or_skip()
    else:
        assert not real_or_skip().simulated
