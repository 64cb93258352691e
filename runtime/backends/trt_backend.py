"""TensorRT backend (10.3 to 11.x): a serialized engine, the JSON beside it, cuda-python for memory.

    backend = TensorRTBackend("gopt_rgbt.engine")      # reads gopt_rgbt.engine.json first
    out = backend.infer({"rgb": rgb, "aux": aux}, ["labels"])

An engine runs only under the TensorRT version that built it, on GPUs of the compute
capability it was built for. ``python -m export.tensorrt`` writes both beside the engine
(``ENGINE.json``, with the model's metadata, the optimisation profile and the engine's
sha256); they are checked here before TensorRT sees the file, so a mismatch is one clear
error instead of a failure inside TensorRT.

Importing this module needs neither TensorRT, cuda-python nor PyTorch: the constructor
imports TensorRT and cuda-python.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..files import file_sha256, write_text_atomic
from ..graph_check import check_model
from ..metadata import ModelFileError, ModelInfo, TensorSpec
from . import plugin_ops
from .base import Backend, check_feeds

SIDECAR_FORMAT = "mmseg-deploy-engine/1"
TENSORRT_MISSING = "TensorRT is not installed (pip install 'tensorrt>=10.3,<12' on a machine with an NVIDIA GPU)"
SUPPORTED_TENSORRT = ((10, 3), (12, 0))  # from 10.3 (JetPack 6) up to, not including, 12
CUDA_PYTHON_MISSING = "cuda-python is not installed (pip install 'cuda-python>=12')"
NO_GPU = "no CUDA GPU found"


class BackendUnavailable(ValueError):
    """Something the TensorRT path needs is missing: TensorRT 10.3-11.x, cuda-python or a CUDA GPU."""


# ---- the sidecar JSON ---------------------------------------------------------------------------

@dataclass
class EngineSidecar:
    """What ``ENGINE.json`` records about the engine beside it."""

    tensorrt: str  # the TensorRT version that built the engine, the only one that can run it
    gpu: str  # the GPU it was built on
    compute_capability: str  # "8.6": the engine runs only on GPUs of this compute capability
    precision: str  # fp32 / fp16 / bf16
    profiles: dict  # input name -> {"min": [...], "opt": [...], "max": [...]}
    builder: dict  # the builder settings it was built with
    onnx: dict  # {"file": name, "sha256": ...}: the ONNX model it was built from
    engine_sha256: str
    model: ModelInfo  # the ONNX model's metadata, precision updated to the engine's
    built: str  # ISO 8601 date
    format: str = SIDECAR_FORMAT
    # {"file", "sha256", "ops"}: the plugin library (libgopt_trt_plugins.so) the engine's
    # custom layers need, loaded before deserialising; None for an engine of standard layers.
    plugins: dict | None = None

    def __post_init__(self):
        for name in ("tensorrt", "gpu", "compute_capability", "precision", "engine_sha256", "built", "format"):
            if not isinstance(getattr(self, name), str):
                raise ModelFileError(f"field {name!r} is {getattr(self, name)!r:.60}, not a string")
        for name in ("profiles", "builder", "onnx"):
            if not isinstance(getattr(self, name), dict):
                raise ModelFileError(f"field {name!r} is {getattr(self, name)!r:.60}, not an object")
        if not isinstance(self.onnx.get("file", ""), str):
            raise ModelFileError(f"field 'onnx' names its file as {self.onnx['file']!r:.60}, not a string")
        if self.plugins is not None and not (isinstance(self.plugins, dict) and isinstance(self.plugins.get("file"), str)
                                             and isinstance(self.plugins.get("sha256"), str)):
            raise ModelFileError(f"field 'plugins' is {self.plugins!r:.60}, not {{'file', 'sha256', 'ops'}}")
        if isinstance(self.model, dict):
            self.model = ModelInfo.from_json(json.dumps(self.model), "the model metadata")
        elif not isinstance(self.model, ModelInfo):
            raise ModelFileError(f"the model metadata is a {type(self.model).__name__}, not an object")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "engine sidecar") -> "EngineSidecar":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ModelFileError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ModelFileError(f"{source}: format {found!r}, this runtime reads {SIDECAR_FORMAT!r}")
        try:
            sidecar = cls(**d)
        except TypeError as e:
            raise ModelFileError(f"{source}: malformed engine sidecar ({e})") from None
        except ModelFileError as e:
            raise ModelFileError(f"{source}: {e}") from None
        check_profiles(sidecar.profiles, sidecar.model, source)
        return sidecar

    def rebuild_hint(self) -> str:
        return f"rebuild it here with `python -m export.tensorrt {self.onnx.get('file', 'MODEL.onnx')}`"


def check_profiles(profiles, info: ModelInfo, source: str) -> None:
    """Every input of the model has a min / opt / max shape of its rank, min <= opt <= max."""
    if not isinstance(profiles, dict) or sorted(profiles) != sorted(t.name for t in info.inputs):
        named = sorted(profiles) if isinstance(profiles, dict) else profiles
        raise ModelFileError(f"{source}: profiles for {named!r}, "
                             f"the model's inputs are {[t.name for t in info.inputs]}")
    for spec in info.inputs:
        r = profiles[spec.name]
        try:
            lo, opt, hi = (list(map(int, r[k])) for k in ("min", "opt", "max"))
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{source}: profile of {spec.name!r} needs integer min / opt / max shapes") from None
        if not len(lo) == len(opt) == len(hi) == len(spec.shape) or not all(
                1 <= a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ModelFileError(f"{source}: profile of {spec.name!r} is inconsistent: min {lo}, opt {opt}, max {hi}")


def sidecar_path(engine) -> Path:
    """``ENGINE.json``: the engine's file name with ``.json`` appended."""
    return Path(f"{os.fspath(engine)}.json")


def write_sidecar(engine, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(engine)
    write_text_atomic(path, sidecar.to_json() + "\n")
    return path


def read_sidecar(engine) -> EngineSidecar:
    path = sidecar_path(engine)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelFileError(f"{engine}: no {path.name} beside it; an engine is only usable with the JSON that "
                             "`python -m export.tensorrt` writes next to it (rebuild the engine)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    return EngineSidecar.from_json(text, str(path))


def capability_string(capability) -> str:
    """(8, 6), "8.6" or 8.6 -> "8.6"."""
    if isinstance(capability, (tuple, list)):
        return f"{int(capability[0])}.{int(capability[1])}"
    return str(capability)


def check_sidecar(sidecar: EngineSidecar, installed_version: str, device_capability,
                  device_name: str = "this GPU") -> None:
    """ModelFileError unless the engine was built by ``installed_version`` of TensorRT for a
    GPU of ``device_capability``."""
    if sidecar.tensorrt != installed_version:
        raise ModelFileError(
            f"engine built with TensorRT {sidecar.tensorrt}, but TensorRT {installed_version} is installed; "
            f"an engine runs only under the TensorRT version that built it: {sidecar.rebuild_hint()}")
    have = capability_string(device_capability)
    if sidecar.compute_capability != have:
        raise ModelFileError(
            f"engine built for compute capability {sidecar.compute_capability} ({sidecar.gpu}), but {device_name} "
            f"has compute capability {have}; an engine runs only on GPUs of the capability it was built for: "
            f"{sidecar.rebuild_hint()}")


def engine_plugin_library(engine, sidecar: EngineSidecar) -> Path:
    """The plugin library an engine's sidecar asks for, found as ``plugin_ops.find_plugin_library``
    finds it (beside the engine included) and checked against the recorded SHA-256."""
    want = sidecar.plugins
    path = plugin_ops.find_plugin_library(beside=Path(engine).parent)
    if path is None or not path.is_file():
        where = f" ({path}: no such file)" if path else ""
        raise ModelFileError(
            f"{engine}: the engine's {', '.join(want.get('ops', []))} layers need the TensorRT plugin library "
            f"{want['file']}{where}: put it beside the engine or set {plugin_ops.PLUGIN_LIBRARY_ENV}")
    if file_sha256(path) != want["sha256"]:
        raise ModelFileError(f"{path}: not the plugin library the engine was built with (sha256 differs from "
                             f"{sidecar_path(engine).name}); {sidecar.rebuild_hint()}")
    return path


def read_engine(path, sidecar: EngineSidecar) -> bytes:
    """The engine's bytes, checked against the sha256 its sidecar recorded."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    if hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
        raise ModelFileError(f"{path}: does not match {sidecar_path(path).name} (sha256 differs): the engine was "
                             f"rebuilt or replaced without its JSON; {sidecar.rebuild_hint()}")
    return data


def batch_sizes(info: ModelInfo, profiles: dict, bound: str) -> list[int]:
    """The profile's ``bound`` ("min" / "max") of every input's batch axis."""
    return [profiles[spec.name][bound][axis] for spec in info.inputs
            for axis, label in spec.dynamic_axes().items() if label == "batch"]


def max_batch(info: ModelInfo, profiles: dict) -> int | None:
    """The largest batch the engine's profile allows (None when no input has a batch axis)."""
    sizes = batch_sizes(info, profiles, "max")
    return min(sizes) if sizes else None


def min_batch(info: ModelInfo, profiles: dict) -> int | None:
    """The smallest batch the engine's profile allows (None when no input has a batch axis)."""
    sizes = batch_sizes(info, profiles, "min")
    return max(sizes) if sizes else None


def check_profile_shapes(profiles: dict, feeds: dict) -> None:
    """ValueError for an input shape outside the engine's optimisation profile."""
    for name, r in profiles.items():
        if name not in feeds:
            continue
        shape = list(np.shape(feeds[name]))
        lo, hi = list(r["min"]), list(r["max"])
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise ValueError(f"input {name!r} has shape {shape}, outside this engine's profile: from {lo} to {hi} "
                             "(rebuild the engine with a wider range: python -m export.tensorrt --help)")


# ---- TensorRT and CUDA ----------------------------------------------------------------------------

def tensorrt_version_supported(version: str) -> bool:
    """10.3 <= version < 12."""
    try:
        major, minor = (int(v) for v in version.split(".")[:2])
    except ValueError:
        return False
    return SUPPORTED_TENSORRT[0] <= (major, minor) < SUPPORTED_TENSORRT[1]


def import_tensorrt():
    """The ``tensorrt`` module (10.3 to 11.x), or BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "tensorrt":
            raise BackendUnavailable(TENSORRT_MISSING) from None
        raise BackendUnavailable(f"TensorRT is installed but cannot be loaded: {e}") from None
    except (ImportError, OSError) as e:  # e.g. the TensorRT libraries are missing
        raise BackendUnavailable(f"TensorRT is installed but cannot be loaded: {str(e).splitlines()[0]}") from None
    if not tensorrt_version_supported(trt.__version__):
        raise BackendUnavailable(f"TensorRT {trt.__version__} is installed; this project builds and runs "
                                 "TensorRT 10.3 to 11.x engines (pip install 'tensorrt>=10.3,<12')")
    return trt


def import_cudart():
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable(CUDA_PYTHON_MISSING) from None
    return cudart


def cuda_check(cudart, result, what: str):
    """The values a cuda-python call returned after its error code; RuntimeError naming the call
    and the CUDA error otherwise."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        text = cudart.cudaGetErrorString(err)[1]
        name, text = (s.decode(errors="replace") if isinstance(s, bytes) else str(s) for s in (name, text))
        raise RuntimeError(f"CUDA {what} failed: {name} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_device(cudart, index: int = 0) -> tuple[str, tuple[int, int]]:
    """(name, (major, minor)) of CUDA device ``index``; BackendUnavailable without a GPU."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        raise BackendUnavailable(NO_GPU)
    if not 0 <= index < count:
        raise ValueError(f"device cuda:{index} asked for, but this machine has {count} CUDA GPU(s)")
    prop = cuda_check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0")[0].decode(errors="replace")
    return str(name).strip(), (int(prop.major), int(prop.minor))


def cuda_index(device) -> int:
    """None / "cuda" -> 0, "cuda:N" -> N."""
    if device in (None, "cuda"):
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"TensorRT runs on a CUDA GPU: device must be None, 'cuda' or 'cuda:N', got {device!r}")


class IOBuffer:
    """One engine input or output: device memory, and pinned host memory for the copies.
    Both grow when a larger shape comes and are reused otherwise."""

    def __init__(self, cudart, name: str, dtype: np.dtype):
        self.rt, self.name, self.dtype = cudart, name, np.dtype(dtype)
        self.device = self.host = 0
        self.device_bytes = self.host_bytes = 0

    def reserve_device(self, nbytes: int) -> bool:
        """True when the device memory moved (the engine must be given the new address)."""
        if nbytes <= self.device_bytes:
            return False
        self.free_device()
        size = max(nbytes, 1)
        self.device = cuda_check(self.rt, self.rt.cudaMalloc(size), f"cudaMalloc of {size} bytes for {self.name!r}")
        self.device_bytes = size
        return True

    def reserve_host(self, nbytes: int) -> None:
        if nbytes <= self.host_bytes:
            return
        self.free_host()
        size = max(nbytes, 1)
        self.host = cuda_check(self.rt, self.rt.cudaMallocHost(size),
                               f"cudaMallocHost of {size} bytes for {self.name!r}")
        self.host_bytes = size

    def host_array(self, shape) -> np.ndarray:
        """A numpy view of the pinned host memory (valid until the next reserve or free)."""
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_ubyte * max(count * self.dtype.itemsize, 1)).from_address(self.host)
        return np.frombuffer(raw, dtype=self.dtype, count=count).reshape(shape)

    def free_device(self) -> None:
        if self.device:
            ptr, self.device, self.device_bytes = self.device, 0, 0
            cuda_check(self.rt, self.rt.cudaFree(ptr), f"cudaFree for {self.name!r}")

    def free_host(self) -> None:
        if self.host:
            ptr, self.host, self.host_bytes = self.host, 0, 0
            cuda_check(self.rt, self.rt.cudaFreeHost(ptr), f"cudaFreeHost for {self.name!r}")


class TensorRTBackend(Backend):
    """A TensorRT engine (10.3 to 11.x) on one CUDA GPU.

    ``cuda_graph``: once a call comes with the same input shapes as the call before it (every
    call, for an engine with fixed shapes), the engine's launch is captured into a CUDA graph
    and replayed from then on; new shapes run the engine directly and capture again later.
    Calls from several threads are serialised (a lock around ``infer``): the buffers, the
    stream and the CUDA graph are the backend's own.
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(self, path, device: str | None = None, cuda_graph: bool = True):
        self._closed = True  # close() is safe whatever the constructor got to
        self._lock = threading.Lock()
        index = cuda_index(device)
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{path}: no such file")
        self.sidecar = read_sidecar(self.path)
        super().__init__(self.sidecar.model)
        data = read_engine(self.path, self.sidecar)
        plugins = engine_plugin_library(self.path, self.sidecar) if self.sidecar.plugins else None
        trt = import_tensorrt()
        cudart = import_cudart()
        self.gpu, capability = cuda_device(cudart, index)
        check_sidecar(self.sidecar, trt.__version__, capability, self.gpu)
        self.trt, self.rt, self.device_index = trt, cudart, index
        self.cuda_graph = bool(cuda_graph)
        self.profiles = self.sidecar.profiles
        self.max_batch = max_batch(self.info, self.profiles)
        self.min_batch = min_batch(self.info, self.profiles)  # smaller batches must be padded up to it
        self.precision = self.sidecar.precision
        self.buffers: dict[str, IOBuffer] = {}
        self.stream = self.graph = None
        self.engine = self.context = self.runtime = None
        self._shapes = None  # the input shapes the context is set up for
        self._output_shapes: dict[str, tuple] = {}
        self._closed = False
        try:
            self._cuda("cudaSetDevice", cudart.cudaSetDevice(index))
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            if plugins is not None:  # before deserialising: the engine's plugin layers need their creators
                try:
                    plugin_ops.load_plugin_library(trt, plugins)
                except (OSError, RuntimeError) as e:
                    raise ModelFileError(f"{path}: {e}") from None
            self.engine = self.runtime.deserialize_cuda_engine(data)
            if self.engine is None:
                raise ModelFileError(f"{path}: corrupt engine: TensorRT {trt.__version__} cannot deserialize it "
                                     f"(see its messages above); {self.sidecar.rebuild_hint()}")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise RuntimeError(f"{path}: TensorRT could not create an execution context "
                                   "(out of GPU memory? see its message above)")
            self._match_io()
            self.stream = self._cuda("cudaStreamCreateWithFlags",
                                     cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        except BaseException:
            self.close()
            raise

    def _cuda(self, what: str, result):
        return cuda_check(self.rt, result, what)

    def _match_io(self) -> None:
        """The engine's I/O tensors are the metadata's (names, ranks, fixed axes, dtypes), and
        the metadata is consistent with its config (runtime.graph_check)."""
        trt = self.trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        specs = {True: [], False: []}
        for name in names:
            trt_dtype = self.engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype)).name
            except TypeError:
                raise ModelFileError(f"{self.path}: tensor {name!r} is {trt_dtype}, which has no numpy type") from None
            shape = list(self.engine.get_tensor_shape(name))  # -1: a dynamic axis
            specs[self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT].append(TensorSpec(name, shape, dtype))
        check_model(self.info, str(self.path), specs[True], specs[False])
        for spec in (*self.inputs, *self.outputs):
            self.buffers[spec.name] = IOBuffer(self.rt, spec.name, np.dtype(spec.dtype))

    # ---- inference ------------------------------------------------------------------------------

    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        with self._lock:
            return self._infer(feeds, outputs)

    def _infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        if self._closed:
            raise ValueError("this TensorRT backend is closed")
        check_feeds(self.inputs, feeds, self.max_batch)
        check_profile_shapes(self.profiles, feeds)
        known = [t.name for t in self.outputs]
        names = outputs or known
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; this model has {known}")
        self._cuda("cudaSetDevice", self.rt.cudaSetDevice(self.device_index))
        shapes = {name: tuple(x.shape) for name, x in feeds.items()}
        fresh = shapes != self._shapes
        if fresh:
            self._set_shapes(shapes)
        h2d, d2h = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, x in feeds.items():
            buf = self.buffers[name]
            np.copyto(buf.host_array(x.shape), x)
            self._cuda(f"copy of {name!r} to the GPU",
                       self.rt.cudaMemcpyAsync(buf.device, buf.host, x.nbytes, h2d, self.stream))
        self._execute(use_graph=self.cuda_graph and not fresh)
        for name in names:
            buf, shape = self.buffers[name], self._output_shapes[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * buf.dtype.itemsize
            buf.reserve_host(nbytes)
            self._cuda(f"copy of {name!r} from the GPU",
                       self.rt.cudaMemcpyAsync(buf.host, buf.device, nbytes, d2h, self.stream))
        self._cuda("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(self.stream))
        return {name: self.buffers[name].host_array(self._output_shapes[name]).copy() for name in names}

    def _set_shapes(self, shapes: dict[str, tuple]) -> None:
        """Input shapes into the context, output shapes out of it, buffers and addresses bound."""
        self._shapes = None
        self._drop_graph()
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise ValueError(f"TensorRT refuses shape {list(shape)} for input {name!r} (see its message above)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.buffers[name].dtype.itemsize
            self.buffers[name].reserve_device(nbytes)
            self.buffers[name].reserve_host(nbytes)
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise ModelFileError(f"{self.path}: output {spec.name!r} has a data-dependent shape {list(shape)}, "
                                     "which this backend does not support")
            self._output_shapes[spec.name] = shape
            buf = self.buffers[spec.name]
            buf.reserve_device(int(np.prod(shape, dtype=np.int64)) * buf.dtype.itemsize)
        for name, buf in self.buffers.items():
            if not self.context.set_tensor_address(name, buf.device):
                raise RuntimeError(f"TensorRT refused the device address of {name!r}")
        self._shapes = shapes

    def _execute(self, use_graph: bool) -> None:
        if use_graph and self.graph is None:
            self._capture()
        if use_graph and self.graph is not None:
            self._cuda("cudaGraphLaunch", self.rt.cudaGraphLaunch(self.graph, self.stream))
            return
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT could not run the engine (see its message above)")

    def _capture(self) -> None:
        """Record one launch of the engine into a CUDA graph; on failure, run without graphs."""
        rt = self.rt
        self._cuda("cudaStreamBeginCapture",
                   rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        launched = self.context.execute_async_v3(int(self.stream))
        err, graph = rt.cudaStreamEndCapture(self.stream)
        try:
            if not launched or err != rt.cudaError_t.cudaSuccess:
                raise RuntimeError("TensorRT could not run the engine inside a CUDA graph capture"
                                   if not launched else f"cudaStreamEndCapture failed ({err})")
            self.graph = self._cuda("cudaGraphInstantiate", rt.cudaGraphInstantiate(graph, 0))
        except RuntimeError as e:
            self.cuda_graph = False
            warnings.warn(f"{self.path.name}: CUDA graphs disabled for this engine: {e}", RuntimeWarning,
                          stacklevel=3)
        finally:
            if err == rt.cudaError_t.cudaSuccess and graph is not None:
                self._cuda("cudaGraphDestroy", rt.cudaGraphDestroy(graph))

    def _drop_graph(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            self._cuda("cudaGraphExecDestroy", self.rt.cudaGraphExecDestroy(graph))

    # ---- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the GPU memory, the stream and the CUDA graph; the TensorRT objects go last."""
        with self._lock:  # not while another thread's infer uses the buffers
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        steps = [self._drop_graph]
        for buf in self.buffers.values():
            steps += [buf.free_device, buf.free_host]
        if self.stream is not None:
            stream, self.stream = self.stream, None
            steps.append(lambda: self._cuda("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream)))
        for step in steps:
            try:
                step()
            except RuntimeError as e:
                errors.append(str(e))
        self.context = self.engine = self.runtime = None  # context before engine before runtime
        if errors:
            raise RuntimeError("; ".join(errors))

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"TensorRTBackend({self.info.kind}, {self.path.name}, {self.precision}, "
                f"cuda:{getattr(self, 'device_index', 0)} {getattr(self, 'gpu', '')})")
