"""A simulated ``tensorrt`` module of TensorRT 10.3, 10.16 or 11.1: the subset of the Python
API the project calls, with the semantics TensorRT documents, and only the names that version
has (tests/data/tensorrt_python_api): a name the version lacks is an AttributeError, as it is
on the real module.

- ``OnnxParser.parse_from_file`` loads the ONNX model into the network: its inputs and outputs
  (a named or unknown dimension is -1) and, for a node outside the standard ONNX domain, the
  plugin creator TensorRT's parser looks up (op type, ``plugin_version`` default "1",
  ``plugin_namespace`` default ""), which must be registered; else a parser error names the node.
  Which standard ONNX operators TensorRT supports is not simulated: ONNX Runtime must load the
  model.
- ``Builder.build_serialized_network`` checks the network against the optimisation profiles
  (every dynamic input needs one; ranks and fixed dimensions must agree), reports its phases to
  the progress monitor, records the timing cache, and returns an "engine": the ONNX model with
  its profiles, the builder settings (strongly typed or not, the network creation flags as this
  version defines them, optimisation level, memory pool limits), the TensorRT version, the
  device's compute capability and the plugin creators its layers need.
- ``Runtime.deserialize_cuda_engine`` refuses (None, with an error logged) bytes that are not
  such an engine, an engine of another TensorRT version or compute capability, and an engine
  whose plugin creators are not registered.
- ``IExecutionContext``: ``set_input_shape`` refuses shapes outside profile 0 and fixed
  dimensions that differ; ``set_tensor_address`` refuses unknown names and addresses not
  aligned to 256 bytes; ``execute_async_v3`` queues one execution of the ONNX model with ONNX
  Runtime on the CPU on the CUDA stream (simulated CUDA runtime), reading the inputs from and
  writing the outputs to the memory at the tensor addresses when the stream runs. The first
  enqueue after an input shape change does deferred work that must not be captured into a CUDA
  graph: under a stream capture it fails and invalidates the capture.
- ``IPluginRegistry.load_library`` needs an existing file that the test has declared to the
  simulation as a plugin library (with the creators it registers); it returns None, logging an
  error, when any of those creators is already registered, as TensorRT documents.

Every message it logs starts with "[simulated TensorRT ...]".
"""
from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import struct
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .cuda_runtime import ALIGNMENT, CudaFault, SimulatedCuda, Work

API_LISTS = Path(__file__).resolve().parents[1] / "data" / "tensorrt_python_api"
VERSIONS = {"10.3": "10.3.0", "10.16": "10.16", "11.1": "11.1"}  # simulated version -> API list
ENGINE_MAGIC = b"mmseg-deploy simulated TensorRT engine (not a TensorRT plan)\n"
CACHE_MAGIC = b"mmseg-deploy simulated TensorRT timing cache\n"

# Values from TensorRT's headers (NvInferRuntimeBase.h, NvInfer.h) of each version.
DATA_TYPES = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7,
              "INT64": 8, "INT4": 9, "FP4": 10, "E8M0": 11}
NETWORK_FLAGS = {10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2,
                      "PREFER_AOT_PYTHON_PLUGINS": 3},
                 11: {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2}}
TENSOR_IO_MODES = {"NONE": 0, "INPUT": 1, "OUTPUT": 2}
MEMORY_POOLS = {"WORKSPACE": 0}
SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
# ONNX tensor types a TensorRT network input or output can have, as DataType names.
ONNX_TYPES = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF", onnx.TensorProto.BFLOAT16: "BF16",
              onnx.TensorProto.INT8: "INT8", onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.INT32: "INT32",
              onnx.TensorProto.INT64: "INT64", onnx.TensorProto.BOOL: "BOOL"}
NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
         "BOOL": np.bool_, "UINT8": np.uint8}
STANDARD_DOMAINS = ("", "ai.onnx")


def api_names(version: str) -> set[str]:
    return set((API_LISTS / f"trt_python_api_{VERSIONS[version]}.txt").read_text().split())


# ---- the engine --------------------------------------------------------------------------------------

@dataclass
class EngineData:
    """What a simulated engine holds."""

    tensorrt: str
    device: str
    compute_capability: list
    strongly_typed: bool
    network_flags: int
    optimization_level: int
    memory_pool_limits: dict
    profiles: list  # [{input name: [min, opt, max]}]
    io: list  # [[name, "INPUT" / "OUTPUT", DataType name, dims with -1]]
    plugins: list  # [[name, version, namespace]]
    timing_cache: bool
    onnx: bytes = field(default=b"", repr=False)

    def to_bytes(self) -> bytes:
        meta = {k: v for k, v in self.__dict__.items() if k != "onnx"}
        header = json.dumps(meta, sort_keys=True).encode()
        return ENGINE_MAGIC + struct.pack("<Q", len(header)) + header + self.onnx

    @classmethod
    def from_bytes(cls, data: bytes) -> "EngineData | None":
        if not data.startswith(ENGINE_MAGIC):
            return None
        start = len(ENGINE_MAGIC) + 8
        (n,) = struct.unpack("<Q", data[len(ENGINE_MAGIC):start])
        return cls(**json.loads(data[start:start + n]), onnx=data[start + n:])


class Executor:
    """An ONNX Runtime session on the CPU for one engine."""

    def __init__(self, model: bytes, plugins: bool):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if plugins:  # the plugin layers run as the project's onnxruntime-extensions ops
            from runtime.backends import plugin_ops
            opts.register_custom_ops_library(plugin_ops.extensions_library())
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._shapes: dict[tuple, dict] = {}

    def run(self, feeds: dict) -> dict:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))

    def output_shapes(self, inputs: dict[str, tuple], dtypes: dict[str, type]) -> dict[str, tuple]:
        """Output shapes for these input shapes: the model evaluated once on zeros."""
        key = tuple(sorted(inputs.items()))
        if key not in self._shapes:
            out = self.run({n: np.zeros(s, dtypes[n]) for n, s in inputs.items()})
            self._shapes[key] = {n: tuple(v.shape) for n, v in out.items()}
        return self._shapes[key]


# ---- the plugin libraries ------------------------------------------------------------------------------

@dataclass
class PluginLibraries:
    """The plugin libraries the simulation knows, by file content, and what is registered."""

    known: dict = field(default_factory=dict)  # sha256 -> [(name, version, namespace)]
    registered: set = field(default_factory=set)
    loaded: list = field(default_factory=list)  # the paths load_library loaded

    def declare(self, path, creators) -> None:
        """``path`` (a file) is a plugin library registering ``creators``."""
        self.known[hashlib.sha256(Path(path).read_bytes()).hexdigest()] = [tuple(c) for c in creators]


# ---- the module ----------------------------------------------------------------------------------------

def make_tensorrt(version: str, cuda: SimulatedCuda, libraries: PluginLibraries | None = None) -> types.ModuleType:
    """A fresh simulated ``tensorrt`` module of ``version`` ("10.3", "10.16", "11.1") on ``cuda``."""
    names = api_names(version)
    major = int(version.split(".")[0])
    full_version = f"{VERSIONS[version] if VERSIONS[version].count('.') == 2 else version + '.0'}+simulated"
    libraries = libraries or PluginLibraries()

    def listed_enum(name, values):
        return enum.IntEnum(name, {k: v for k, v in values.items() if f"{name}.{k}" in names})

    DataType = listed_enum("DataType", DATA_TYPES)
    TensorIOMode = listed_enum("TensorIOMode", TENSOR_IO_MODES)
    MemoryPoolType = listed_enum("MemoryPoolType", MEMORY_POOLS)
    NetworkDefinitionCreationFlag = listed_enum("NetworkDefinitionCreationFlag", NETWORK_FLAGS[major])
    strongly_typed_bit = 1 << NETWORK_FLAGS[major]["STRONGLY_TYPED"]

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = SEVERITIES.values()

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

        def log(self, severity, msg):
            if int(severity) <= int(self.min_severity):
                print(f"[simulated TensorRT {version}] [{'FEWIV'[int(severity)]}] {msg}", file=sys.stderr)

    def error(logger, msg):
        logger.log(Logger.ERROR, msg)

    class Dims:
        def __init__(self, shape=()):
            self._d = tuple(int(d) for d in shape)

        def __len__(self):
            return len(self._d)

        def __getitem__(self, i):
            return self._d[i]

        def __iter__(self):
            return iter(self._d)

        def __eq__(self, other):
            return tuple(self) == tuple(other)

        def __repr__(self):
            return repr(self._d)

    def host_memory(data: bytes):
        cls = type("IHostMemory", (ctypes.c_ubyte * len(data),),
                   {"nbytes": property(lambda self: len(self)), "dtype": property(lambda self: DataType.UINT8)})
        return cls.from_buffer_copy(data)

    def handle_of(buffer) -> bytes:
        return bytes(memoryview(buffer).cast("B"))

    # ---- plugins ----

    class IPluginRegistry:
        def load_library(self, plugin_path):
            path = Path(plugin_path)
            if not path.is_file():
                error(Logger(), f"could not load the plugin library {plugin_path}: no such file")
                return None
            creators = libraries.known.get(hashlib.sha256(path.read_bytes()).hexdigest())
            if creators is None:
                error(Logger(), f"{plugin_path} is not a plugin library this simulation knows (declare it first)")
                return None
            taken = [c for c in creators if c in libraries.registered]
            if taken:
                error(Logger(), f"{plugin_path}: plugin creator {taken[0]} is already registered; loadLibrary fails")
                return None
            libraries.registered.update(creators)
            libraries.loaded.append(str(path))
            return types.SimpleNamespace(library=str(path))  # an opaque handle

    registry = IPluginRegistry()

    def get_plugin_registry():
        return registry

    # ---- network, parser ----

    class ITensor:
        def __init__(self, name, shape, dtype):
            self._name, self._shape, self._dtype = name, Dims(shape), dtype

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)
        dtype = property(lambda self: self._dtype)

    class INetworkDefinition:
        def __init__(self, flags, strongly_typed):
            self._flags, self._strongly_typed = flags, strongly_typed
            self._inputs, self._outputs, self._model, self._plugins = [], [], None, []

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, index):
            return self._inputs[index] if 0 <= index < len(self._inputs) else None

        def get_output(self, index):
            return self._outputs[index] if 0 <= index < len(self._outputs) else None

    class ParserError:
        def __init__(self, desc, node=-1, node_name="", node_operator=""):
            self._desc, self._node, self._name, self._op = desc, node, node_name, node_operator

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

        def __str__(self):
            return self._desc

    def value_tensor(value, errors) -> ITensor | None:
        t = value.type.tensor_type
        dtype = ONNX_TYPES.get(t.elem_type)
        if dtype is None or dtype not in DataType.__members__:
            errors.append(ParserError(f"{value.name}: ONNX type {onnx.TensorProto.DataType.Name(t.elem_type)} is not "
                                      "a TensorRT network I/O type"))
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return ITensor(value.name, dims, DataType[dtype])

    class OnnxParser:
        def __init__(self, network, logger):
            self._network, self._logger, self._errors = network, logger, []

        num_errors = property(lambda self: len(self._errors))

        def get_error(self, index):
            return self._errors[index] if 0 <= index < len(self._errors) else None

        def parse_from_file(self, model):
            try:
                proto = onnx.load(str(model))
            except Exception as e:
                self._errors.append(ParserError(f"cannot read the ONNX model {model}: {type(e).__name__}: {e}"))
                return False
            net, errors = self._network, self._errors
            for i, node in enumerate(proto.graph.node):
                if node.domain in STANDARD_DOMAINS:
                    continue
                key = (node.op_type, string_attribute(node, "plugin_version", "1"),
                       string_attribute(node, "plugin_namespace", ""))
                if key not in libraries.registered:
                    errors.append(ParserError(f"no importer for op {node.op_type}; as a plugin: no creator named "
                                              f"{key[0]!r} version {key[1]!r} namespace {key[2]!r} is registered",
                                              i, node.name, node.op_type))
                elif list(key) not in net._plugins:
                    net._plugins.append(list(key))
            initializers = {t.name for t in proto.graph.initializer}
            inputs = [value_tensor(v, errors) for v in proto.graph.input if v.name not in initializers]
            outputs = [value_tensor(v, errors) for v in proto.graph.output]
            if errors:
                return False
            net._inputs, net._outputs, net._model = inputs, outputs, proto
            return True

    # ---- builder ----

    class IOptimizationProfile:
        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            for label, shape in (("min", lo), ("opt", mid), ("max", hi)):
                if len(shape) != len(lo) or any(d < 0 for d in shape):
                    raise RuntimeError(f"Shape provided for {label} is inconsistent with other shapes.")
            if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
                raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
            self._shapes[input] = [list(lo), list(mid), list(hi)]

        def get_shape(self, input):
            return [Dims(s) for s in self._shapes.get(input, [])]

        def __bool__(self):
            return bool(self._shapes)

    class TimingCache:
        def __init__(self, header, entries=()):
            self._header, self._entries = header, set(entries)

        def serialize(self):
            data = json.dumps({"header": self._header, "entries": sorted(self._entries)}).encode()
            return host_memory(CACHE_MAGIC + data)

    TimingCache.__name__ = TimingCache.__qualname__ = "ITimingCache"
    cache_header = {"tensorrt": full_version, "device": cuda.name, "compute_capability": list(cuda.capability)}

    class IBuilderConfig:
        def __init__(self, logger):
            self._logger, self._profiles, self._pools, self._level = logger, [], {}, 3
            self._cache, self._monitor = None, None

        def add_optimization_profile(self, profile):
            if not profile:
                error(self._logger, "addOptimizationProfile: the profile sets no input shapes")
                return -1
            self._profiles.append({k: [list(s) for s in v] for k, v in profile._shapes.items()})
            return len(self._profiles) - 1

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[MemoryPoolType(pool).name] = int(pool_size)

        def _get_level(self):
            return self._level

        def _set_level(self, level):
            if not 0 <= int(level) <= 5:
                error(self._logger, f"builder optimization level {level} is outside 0 to 5")
                return
            self._level = int(level)

        builder_optimization_level = property(_get_level, _set_level)
        progress_monitor = property(lambda self: self._monitor, lambda self, m: setattr(self, "_monitor", m))

        def create_timing_cache(self, serialized_timing_cache):
            data = handle_of(serialized_timing_cache)
            if not data:
                return TimingCache(cache_header)
            try:
                assert data.startswith(CACHE_MAGIC)
                d = json.loads(data[len(CACHE_MAGIC):])
                header = d["header"]
            except (AssertionError, ValueError, KeyError):
                error(self._logger, "createTimingCache: the data is not a timing cache")
                return None
            if header.get("tensorrt") != full_version:
                error(self._logger, f"createTimingCache: a timing cache of TensorRT {header.get('tensorrt')}")
                return None
            return TimingCache(header, d["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache._header != cache_header and not ignore_mismatch:
                error(self._logger, "setTimingCache: the cache was made on a device with other properties")
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class IProgressMonitor:
        def __init__(self):
            pass

        def phase_start(self, phase_name, parent_phase, num_steps):
            raise NotImplementedError

        def step_complete(self, phase_name, step):
            raise NotImplementedError

        def phase_finish(self, phase_name):
            raise NotImplementedError

    class Builder:
        def __init__(self, logger):
            self._logger = logger

        def create_network(self, flags=0):
            known = sum(1 << v for v in NetworkDefinitionCreationFlag)
            if int(flags) & ~known:
                error(self._logger, f"createNetworkV2: unknown flags {flags:#x} for TensorRT {full_version}")
                return None
            strongly = major >= 11 or bool(int(flags) & strongly_typed_bit)
            return INetworkDefinition(int(flags), strongly)

        def create_builder_config(self):
            return IBuilderConfig(self._logger)

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            monitor, log = config._monitor, self._logger
            top = "Building a simulated engine (ONNX Runtime, not TensorRT)"
            check = "Loading the network into ONNX Runtime (simulated)"
            if monitor is not None:
                monitor.phase_start(top, None, 2)
            try:
                problems = profile_problems(network, config)
                if problems:
                    for p in problems:
                        error(log, p)
                    return None
                if monitor is not None and not monitor.step_complete(top, 0):
                    error(log, "the build was cancelled by the progress monitor")
                    return None
                if monitor is not None:
                    monitor.phase_start(check, top, 1)
                model = network._model.SerializeToString()
                try:
                    Executor(model, bool(network._plugins))
                except Exception as e:
                    error(log, f"the simulated build cannot run the network: {type(e).__name__}: {e}")
                    return None
                finally:
                    if monitor is not None:
                        monitor.phase_finish(check)
                if monitor is not None and not monitor.step_complete(top, 1):
                    error(log, "the build was cancelled by the progress monitor")
                    return None
            finally:
                if monitor is not None:
                    monitor.phase_finish(top)
            if config._cache is not None:
                config._cache._entries.update(f"{n.op_type}:{n.name}" for n in network._model.graph.node)
            io = [[t.name, mode, t.dtype.name, list(t.shape)] for mode, ts in
                  (("INPUT", network._inputs), ("OUTPUT", network._outputs)) for t in ts]
            engine = EngineData(full_version, cuda.name, list(cuda.capability), network._strongly_typed,
                                network._flags, config._level, dict(config._pools), config._profiles[:1] or [{}],
                                io, network._plugins, config._cache is not None, model)
            return host_memory(engine.to_bytes())

    def profile_problems(network, config) -> list[str]:
        if network._model is None:
            return ["the network is empty (nothing parsed)"]
        dynamic = [t for t in network._inputs if -1 in tuple(t.shape)]
        if dynamic and not config._profiles:
            return [f"network input {dynamic[0].name!r} is dynamic but no optimization profile was added"]
        problems = []
        names = {t.name: t for t in network._inputs}
        for index, profile in enumerate(config._profiles):
            for name in profile:
                if name not in names:
                    problems.append(f"optimization profile {index} sets {name!r}, which is not a network input")
            for t in network._inputs:
                dims = tuple(t.shape)
                if t.name not in profile:
                    if -1 in dims:
                        problems.append(f"optimization profile {index} has no shapes for dynamic input {t.name!r}")
                    continue
                for shape in profile[t.name]:
                    if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape)):
                        problems.append(f"optimization profile {index}: {t.name!r} shape {shape} does not fit the "
                                        f"network's {list(dims)}")
        return problems

    # ---- runtime ----

    class Runtime:
        def __init__(self, logger):
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = EngineData.from_bytes(handle_of(serialized_engine))
            log = self._logger
            if data is None:
                error(log, "deserializeCudaEngine: the data is not a serialized engine")
                return None
            if data.tensorrt != full_version:
                error(log, f"the engine is of TensorRT {data.tensorrt}; this is TensorRT {full_version}")
                return None
            if tuple(data.compute_capability) != tuple(cuda.capability):
                error(log, f"the engine was built for compute capability {data.compute_capability}, the device has "
                           f"{list(cuda.capability)}")
                return None
            missing = [tuple(c) for c in data.plugins if tuple(c) not in libraries.registered]
            if missing:
                error(log, f"the engine needs plugin creator {missing[0]}, which is not registered")
                return None
            return ICudaEngine(data, Executor(data.onnx, bool(data.plugins)), log)

    class ICudaEngine:
        def __init__(self, data, executor, logger):
            self._data, self._executor, self._logger = data, executor, logger
            self._io = {name: (mode, dtype, dims) for name, mode, dtype, dims in data.io}

        num_io_tensors = property(lambda self: len(self._data.io))

        def get_tensor_name(self, index):
            return self._data.io[index][0] if 0 <= index < len(self._data.io) else None

        def get_tensor_mode(self, name):
            return TensorIOMode[self._io[name][0]] if name in self._io else TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            return DataType[self._io[name][1]]

        def get_tensor_shape(self, name):
            return Dims(self._io[name][2]) if name in self._io else Dims()

        def create_execution_context(self):
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine):
            self._engine = engine
            self._shapes, self._addresses = {}, {}
            self._deferred = True  # the first enqueue sets the context up

        def _inputs(self):
            return [n for n, (mode, _, _) in self._engine._io.items() if mode == "INPUT"]

        def set_input_shape(self, name, shape):
            log, io = self._engine._logger, self._engine._io
            if io.get(name, ("",))[0] != "INPUT":
                error(log, f"setInputShape: {name!r} is not an input tensor")
                return False
            shape, dims = tuple(int(d) for d in shape), io[name][2]
            lo, _, hi = self._engine._data.profiles[0].get(name, (dims, dims, dims))
            if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)) or \
                    not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                error(log, f"setInputShape: {name!r} shape {list(shape)} is not within profile 0: min {list(lo)}, "
                           f"max {list(hi)}, network {list(dims)}")
                return False
            if self._shapes.get(name) != shape:
                self._shapes[name], self._deferred = shape, True
            return True

        def _input_shapes(self):
            shapes = {}
            for name in self._inputs():
                dims = self._engine._io[name][2]
                shapes[name] = self._shapes.get(name, tuple(dims) if -1 not in dims else None)
            return shapes

        def get_tensor_shape(self, name):
            io = self._engine._io
            if name not in io:
                return Dims([-1])
            shapes = self._input_shapes()
            if io[name][0] == "INPUT":
                return Dims(shapes[name] or io[name][2])
            if any(s is None for s in shapes.values()):
                return Dims(io[name][2])
            dtypes = {n: NUMPY[io[n][1]] for n in shapes}
            return Dims(self._engine._executor.output_shapes(shapes, dtypes)[name])

        def set_tensor_address(self, name, memory):
            log = self._engine._logger
            if name not in self._engine._io:
                error(log, f"setTensorAddress: {name!r} is not an input or output tensor")
                return False
            if int(memory) % ALIGNMENT:
                error(log, f"setTensorAddress: address 0x{int(memory):x} of {name!r} is not {ALIGNMENT}-byte aligned")
                return False
            self._addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            log, io = self._engine._logger, self._engine._io
            shapes = self._input_shapes()
            unset = [n for n, s in shapes.items() if s is None]
            if unset:
                error(log, f"enqueueV3: input shape of {unset[0]!r} not set")
                return False
            missing = [n for n in io if not self._addresses.get(n)]
            if missing:
                error(log, f"enqueueV3: no address set for {missing[0]!r}")
                return False
            if int(stream_handle) not in cuda.streams:
                error(log, f"enqueueV3: 0x{int(stream_handle):x} is not a CUDA stream")
                return False
            if self._deferred:
                if cuda.unsafe_during_capture("TensorRT's first enqueue after an input shape change"):
                    error(log, "enqueueV3: the first enqueue after a shape change cannot be captured into a CUDA "
                               "graph; enqueue once before capturing")
                    return False
                self._deferred = False
            dtypes = {n: NUMPY[io[n][1]] for n in io}
            outputs = self._engine._executor.output_shapes(shapes, dtypes)
            work = execution(self._engine._executor, {n: (self._addresses[n], shapes[n], dtypes[n]) for n in shapes},
                             {n: (self._addresses[n], outputs[n], dtypes[n]) for n in outputs})
            status = cuda.enqueue(int(stream_handle), work)
            if status:
                error(log, f"enqueueV3: the CUDA stream refused the work ({status.name})")
                return False
            return True

    def execution(executor, inputs, outputs) -> Work:
        def nbytes(shape, dtype):
            return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

        def run():
            feeds = {n: np.frombuffer(cuda.read(a, nbytes(s, t)), t).reshape(s) for n, (a, s, t) in inputs.items()}
            results = executor.run(feeds)
            for name, (address, shape, dtype) in outputs.items():
                value = np.ascontiguousarray(results[name], dtype)
                if value.shape != tuple(shape):
                    raise CudaFault(f"output {name!r} came out {list(value.shape)}, its shape was {list(shape)}")
                cuda.write(address, value.tobytes())

        def pinned(a, n):
            found = cuda.find(a, n)
            return found is not None and found.kind == "pinned"
        reads = [(a, nbytes(s, t)) for a, s, t in inputs.values() if pinned(a, nbytes(s, t))]
        writes = [(a, nbytes(s, t)) for a, s, t in outputs.values() if pinned(a, nbytes(s, t))]
        return Work("TensorRT enqueueV3 (ONNX Runtime on the CPU)", run, reads, writes)

    def nptype(trt_type):
        name = DataType(trt_type).name
        if name not in NUMPY:
            raise TypeError(f"TensorRT DataType.{name} has no numpy type (simulated tensorrt.nptype)")
        return NUMPY[name]

    module = types.ModuleType("tensorrt", f"Simulated TensorRT {full_version} (tests/simulated): not TensorRT.")
    exposed = [DataType, TensorIOMode, MemoryPoolType, NetworkDefinitionCreationFlag, Logger, Dims, IPluginRegistry,
               ITensor, INetworkDefinition, ParserError, OnnxParser, IOptimizationProfile, TimingCache,
               IBuilderConfig, IProgressMonitor, Builder, Runtime, ICudaEngine, IExecutionContext]
    for obj in exposed:
        prune(obj, names)  # also the classes only reached through objects
        if obj.__name__ in names:
            setattr(module, obj.__name__, obj)
    if "get_plugin_registry" in names:
        module.get_plugin_registry = get_plugin_registry
    module.nptype = nptype  # added by the tensorrt package itself
    module.__version__ = full_version
    return module


def string_attribute(node, name: str, default: str) -> str:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else str(value)
    return default


# Names TensorRT's lists leave out but the real module has (tests/test_tensorrt_api.py: NOT_LISTED).
NESTED = {f"Logger.{s}" for s in SEVERITIES}


def prune(cls, names: set[str]) -> None:
    """Remove every public member of ``cls`` that this TensorRT version does not have."""
    if isinstance(cls, enum.EnumMeta):
        return  # built with the listed members only
    for attr in [a for a in vars(cls) if not a.startswith("_")]:
        if f"{cls.__name__}.{attr}" not in names and f"{cls.__name__}.{attr}" not in NESTED:
            delattr(cls, attr)
