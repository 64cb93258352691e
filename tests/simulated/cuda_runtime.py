"""A simulated CUDA runtime: the calls of cuda-python's ``cuda.bindings.runtime`` the project
makes, as documented, on one simulated device whose memory is host memory.

- ``cudaMalloc`` / ``cudaMallocHost`` return 256-byte aligned addresses of buffers this
  simulation owns, filled with 0xFF bytes (NaN as float32, 255 as uint8): memory nobody wrote
  shows. Every access is checked against the live allocations: a pointer outside them, or a
  range running past one, is an error, never a stray read or write.
- ``cudaMemcpyAsync`` and TensorRT's ``execute_async_v3`` only queue work on the stream. The
  queue runs, in order, when the host waits: ``cudaStreamSynchronize``, ``cudaFree`` (which
  synchronises the device: CUDA Programming Guide, stream-ordered memory allocator),
  ``cudaFreeHost`` (taken to do the same: CUDA documents no asynchronous free of pinned
  memory) or ``cudaStreamDestroy`` (queued work still completes). Until then the host
  memory a queued copy writes holds 0xFF bytes (its content is undefined until the copy
  completes), and host memory a queued copy reads must not change (``SimulationError``).
- Work that faults when it runs (an address freed since it was queued) sets the sticky
  ``cudaErrorIllegalAddress`` that every later call returns, as a real device does, and is
  listed in ``faults``.
- ``cudaStreamBeginCapture`` records the work issued to the stream into a graph instead of
  queuing it; only ``cudaGraphLaunch`` of the instantiated graph queues it. Calls CUDA forbids
  during a capture that is not in relaxed mode (allocating, freeing, synchronising the
  capturing stream) fail with ``cudaErrorStreamCaptureUnsupported`` and invalidate the
  capture, whose ``cudaStreamEndCapture`` then fails with ``cudaErrorStreamCaptureInvalidated``
  and returns no graph.

What CUDA leaves undefined and a GPU might not report (a copy direction that contradicts the
pointers, pageable host memory this simulation cannot check) raises ``SimulationError``, an
``AssertionError``: the test fails there.
"""
from __future__ import annotations

import bisect
import ctypes
import enum
import hashlib
import threading
import types
from dataclasses import dataclass, field

ALIGNMENT = 256  # cudaMalloc's alignment; TensorRT asks for at least this much
POISON = 0xFF


class SimulationError(AssertionError):
    """The code under test did something CUDA leaves undefined."""


class CudaFault(Exception):
    """Queued work touched memory outside the live allocations (cudaErrorIllegalAddress)."""


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureWrongThread = 908


# Descriptions written for the simulation; every one says where it comes from.
ERROR_TEXT = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorInvalidValue: "invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInvalidDevicePointer: "invalid device pointer",
    cudaError_t.cudaErrorInvalidMemcpyDirection: "invalid copy direction for memcpy",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: "invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: "invalid resource handle",
    cudaError_t.cudaErrorIllegalState: "the operation cannot be performed in the present state",
    cudaError_t.cudaErrorIllegalAddress: "an illegal memory access was encountered",
    cudaError_t.cudaErrorStreamCaptureUnsupported: "operation not permitted when stream is capturing",
    cudaError_t.cudaErrorStreamCaptureInvalidated: "operation failed due to a previous error during capture",
    cudaError_t.cudaErrorStreamCaptureWrongThread: "a thread-local capture ended from another thread",
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


cudaStreamDefault = 0
cudaStreamNonBlocking = 1
LEGACY_STREAMS = (0, 1)  # the NULL stream and cudaStreamLegacy


class _Handle:
    """cuda-python's opaque handles: ``int(handle)`` is the address."""

    def __init__(self, value: int = 0):
        self._value = int(value)

    def __int__(self):
        return self._value

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, _Handle) and int(other) == self._value

    def __hash__(self):
        return hash(self._value)

    def __repr__(self):
        return f"<{type(self).__name__} 0x{self._value:x} (simulated)>"


class cudaStream_t(_Handle):
    pass


class cudaGraph_t(_Handle):
    pass


class cudaGraphExec_t(_Handle):
    pass


class cudaDeviceProp:
    def __init__(self, name: str, capability: tuple[int, int], memory: int):
        self.name = name.encode()
        self.major, self.minor = capability
        self.totalGlobalMem = memory


@dataclass
class Allocation:
    base: int
    size: int
    kind: str  # "device" or "pinned"
    buffer: object = field(repr=False)
    live: bool = True


@dataclass
class Work:
    """One queued operation: ``run`` performs it; ``host_reads`` / ``host_writes`` are the
    pinned host ranges it reads / writes, (address, bytes)."""

    what: str
    run: object
    host_reads: list = field(default_factory=list)
    host_writes: list = field(default_factory=list)
    digests: list | None = None


@dataclass
class Capture:
    mode: int
    thread: int
    nodes: list = field(default_factory=list)
    invalidated: str | None = None


@dataclass
class Stream:
    flags: int
    queue: list = field(default_factory=list)
    capture: Capture | None = None


class SimulatedCuda:
    """One simulated CUDA device and the runtime calls on it; ``module()`` is the
    ``cuda.bindings.runtime`` stand-in."""

    def __init__(self, name="Simulated CUDA device (host memory; not a GPU)", capability=(8, 6),
                 memory=8 << 30, devices=1):
        self.name, self.capability, self.memory, self.devices = name, tuple(capability), memory, devices
        self.lock = threading.RLock()
        self.allocations: dict[int, Allocation] = {}
        self._bases: list[int] = []  # sorted bases of live allocations
        self.freed: list[Allocation] = []
        self.streams: dict[int, Stream] = {0: Stream(0), 1: Stream(0)}
        self.graphs: dict[int, list] = {}
        self.execs: dict[int, list] = {}
        self.sticky: cudaError_t | None = None
        self.faults: list[str] = []
        self.calls: list[str] = []  # the API calls made, in order
        self._next_handle = 0x1000

    # ---- the module ------------------------------------------------------------------------------

    API = ("cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaSetDevice", "cudaMalloc", "cudaMallocHost",
           "cudaFree", "cudaFreeHost", "cudaMemcpyAsync", "cudaStreamCreateWithFlags", "cudaStreamSynchronize",
           "cudaStreamDestroy", "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate",
           "cudaGraphLaunch", "cudaGraphDestroy", "cudaGraphExecDestroy", "cudaGetErrorName", "cudaGetErrorString")

    RETURNS_VALUE = {"cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaMalloc", "cudaMallocHost",
                     "cudaStreamCreateWithFlags", "cudaStreamEndCapture", "cudaGraphInstantiate"}

    def module(self, name="cuda.bindings.runtime") -> types.ModuleType:
        m = types.ModuleType(name, "Simulated CUDA runtime (tests/simulated/cuda_runtime.py): not a GPU.")
        for api in self.API:
            setattr(m, api, self._api(api))
        for obj in (cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode, cudaStream_t, cudaGraph_t,
                    cudaGraphExec_t, cudaDeviceProp):
            setattr(m, obj.__name__, obj)
        m.cudaStreamDefault, m.cudaStreamNonBlocking = cudaStreamDefault, cudaStreamNonBlocking
        return m

    def _api(self, name):
        impl = getattr(self, f"_{name}")

        def call(*args, **kwargs):
            with self.lock:
                self.calls.append(name)
                if self.sticky is not None and name not in ("cudaGetErrorName", "cudaGetErrorString"):
                    return (self.sticky, None) if name in self.RETURNS_VALUE else (self.sticky,)
                return impl(*args, **kwargs)
        call.__name__ = call.__qualname__ = name
        return call

    def _handle(self) -> int:
        self._next_handle += 0x10
        return self._next_handle

    # ---- device ----------------------------------------------------------------------------------

    def _cudaGetDeviceCount(self):
        if self.devices == 0:
            return cudaError_t.cudaErrorNoDevice, None
        return cudaError_t.cudaSuccess, self.devices

    def _cudaGetDeviceProperties(self, device):
        if not 0 <= int(device) < self.devices:
            return cudaError_t.cudaErrorInvalidDevice, None
        return cudaError_t.cudaSuccess, cudaDeviceProp(self.name, self.capability, self.memory)

    def _cudaSetDevice(self, device):
        if not 0 <= int(device) < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        return (cudaError_t.cudaSuccess,)

    def _cudaGetErrorName(self, error):
        return cudaError_t.cudaSuccess, cudaError_t(error).name.encode()

    def _cudaGetErrorString(self, error):
        return cudaError_t.cudaSuccess, f"{ERROR_TEXT[cudaError_t(error)]} [simulated CUDA runtime]".encode()

    # ---- memory ----------------------------------------------------------------------------------

    def _allocate(self, size, kind):
        size = int(size)
        if size < 0:
            return cudaError_t.cudaErrorInvalidValue, None
        if self.unsafe_during_capture(f"{'cudaMalloc' if kind == 'device' else 'cudaMallocHost'}"):
            return cudaError_t.cudaErrorStreamCaptureUnsupported, None
        used = sum(a.size for a in self.allocations.values() if a.kind == "device")
        if kind == "device" and used + size > self.memory:
            return cudaError_t.cudaErrorMemoryAllocation, None
        buffer = ctypes.create_string_buffer(max(size, 1) + ALIGNMENT)
        base = -ctypes.addressof(buffer) % ALIGNMENT + ctypes.addressof(buffer)
        ctypes.memset(base, POISON, max(size, 1))
        self.allocations[base] = Allocation(base, max(size, 1), kind, buffer)
        bisect.insort(self._bases, base)
        return cudaError_t.cudaSuccess, base

    def _cudaMalloc(self, size):
        return self._allocate(size, "device")

    def _cudaMallocHost(self, size):
        return self._allocate(size, "pinned")

    def _free(self, ptr, kind):
        ptr = int(ptr)
        if self.unsafe_during_capture("cudaFree" if kind == "device" else "cudaFreeHost"):
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        if ptr == 0:
            return (cudaError_t.cudaSuccess,)
        alloc = self.allocations.get(ptr)
        if alloc is None or alloc.kind != kind:
            return (cudaError_t.cudaErrorInvalidValue if kind == "pinned" else cudaError_t.cudaErrorInvalidDevicePointer,)
        error = self._synchronize_all()  # freeing synchronises the device
        if error:
            return (error,)
        alloc.live = False
        del self.allocations[ptr]
        self._bases.remove(ptr)
        self.freed.append(alloc)
        return (cudaError_t.cudaSuccess,)

    def _cudaFree(self, ptr):
        return self._free(ptr, "device")

    def _cudaFreeHost(self, ptr):
        return self._free(ptr, "pinned")

    def find(self, address: int, nbytes: int) -> Allocation | None:
        """The live allocation holding [address, address + nbytes), else None."""
        i = bisect.bisect_right(self._bases, address) - 1
        if i < 0:
            return None
        alloc = self.allocations[self._bases[i]]
        return alloc if address + nbytes <= alloc.base + alloc.size else None

    def describe(self, address: int, nbytes: int) -> str:
        """Why [address, address + nbytes) is not accessible."""
        for a in self.freed:
            if a.base <= address < a.base + a.size:
                return f"0x{address:x} is in a {a.kind} allocation of {a.size} bytes that was freed"
        i = bisect.bisect_right(self._bases, address) - 1
        if i >= 0:
            a = self.allocations[self._bases[i]]
            if address < a.base + a.size:
                return (f"{nbytes} bytes at 0x{address:x} run {address + nbytes - a.base - a.size} bytes past the end "
                        f"of a {a.kind} allocation of {a.size} bytes")
        return f"0x{address:x} is not in any allocation of the simulated device"

    def read(self, address: int, nbytes: int) -> bytes:
        """Device-side read (raises CudaFault)."""
        if self.find(address, nbytes) is None:
            raise CudaFault(f"read of {nbytes} bytes: {self.describe(address, nbytes)}")
        return ctypes.string_at(address, nbytes)

    def write(self, address: int, data: bytes) -> None:
        """Device-side write (raises CudaFault)."""
        if self.find(address, len(data)) is None:
            raise CudaFault(f"write of {len(data)} bytes: {self.describe(address, len(data))}")
        ctypes.memmove(address, data, len(data))

    def live(self, kind: str | None = None) -> list[Allocation]:
        return [a for a in self.allocations.values() if kind is None or a.kind == kind]

    # ---- copies ----------------------------------------------------------------------------------

    def _cudaMemcpyAsync(self, dst, src, count, kind, stream=0):
        dst, src, count, kind = int(dst), int(src), int(count), cudaMemcpyKind(kind)
        s = self.streams.get(int(stream))
        if s is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        where = {}
        for role, ptr in (("dst", dst), ("src", src)):
            alloc = self.find(ptr, count)
            if alloc is None:
                if any(a.base <= ptr < a.base + a.size for a in self.allocations.values()) or \
                        any(a.base <= ptr < a.base + a.size for a in self.freed):
                    return (cudaError_t.cudaErrorInvalidValue,)  # past the end, or freed
                raise SimulationError(f"cudaMemcpyAsync {role}=0x{ptr:x} is neither device memory nor "
                                      "cudaMallocHost memory of the simulated device; the simulation does not "
                                      "model pageable host memory")
            where[role] = alloc.kind
        want = {cudaMemcpyKind.cudaMemcpyHostToDevice: ("device", "pinned"),
                cudaMemcpyKind.cudaMemcpyDeviceToHost: ("pinned", "device"),
                cudaMemcpyKind.cudaMemcpyDeviceToDevice: ("device", "device"),
                cudaMemcpyKind.cudaMemcpyHostToHost: ("pinned", "pinned")}.get(kind)
        if want is not None and want != (where["dst"], where["src"]):
            raise SimulationError(f"cudaMemcpyAsync with {kind.name} copies {where['src']} memory to "
                                  f"{where['dst']} memory (undefined behaviour)")

        def copy():
            self.write(dst, self.read(src, count))
        work = Work(f"cudaMemcpyAsync({kind.name}, {count} bytes)", copy,
                    host_reads=[(src, count)] if where["src"] == "pinned" else [],
                    host_writes=[(dst, count)] if where["dst"] == "pinned" else [])
        return (self.enqueue(int(stream), work),)

    # ---- streams ---------------------------------------------------------------------------------

    def _cudaStreamCreateWithFlags(self, flags):
        if int(flags) not in (cudaStreamDefault, cudaStreamNonBlocking):
            return cudaError_t.cudaErrorInvalidValue, None
        handle = self._handle()
        self.streams[handle] = Stream(int(flags))
        return cudaError_t.cudaSuccess, cudaStream_t(handle)

    def _cudaStreamSynchronize(self, stream):
        s = self.streams.get(int(stream))
        if s is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if s.capture is not None:
            s.capture.invalidated = "cudaStreamSynchronize of the capturing stream"
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        return (self._run(s),)

    def _cudaStreamDestroy(self, stream):
        handle = int(stream)
        s = self.streams.get(handle)
        if s is None or handle in LEGACY_STREAMS:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if s.capture is not None:
            return (cudaError_t.cudaErrorIllegalState,)
        error = self._run(s)  # queued work completes after the destroy returns
        del self.streams[handle]
        return (error or cudaError_t.cudaSuccess,)

    def enqueue(self, stream: int, work: Work) -> cudaError_t:
        """Queue ``work`` on ``stream`` (or record it into the stream's capture)."""
        s = self.streams.get(stream)
        if s is None:
            return cudaError_t.cudaErrorInvalidResourceHandle
        if s.capture is not None:
            if s.capture.invalidated:
                return cudaError_t.cudaErrorStreamCaptureInvalidated
            s.capture.nodes.append(work)
            return cudaError_t.cudaSuccess
        work = Work(work.what, work.run, work.host_reads, work.host_writes,
                    [self._digest(a, n) for a, n in work.host_reads])
        for address, n in work.host_writes:  # undefined until the copy completes
            ctypes.memset(address, POISON, n)
        s.queue.append(work)
        return cudaError_t.cudaSuccess

    def _digest(self, address, n):
        return hashlib.sha256(ctypes.string_at(address, n)).digest()

    def _run(self, s: Stream) -> cudaError_t:
        while s.queue:
            work = s.queue.pop(0)
            for (address, n), digest in zip(work.host_reads, work.digests or []):
                if self.find(address, n) is None or self._digest(address, n) != digest:
                    s.queue.clear()
                    raise SimulationError(f"{work.what}: its pinned host source at 0x{address:x} was changed or "
                                          "freed by the host while the copy was still queued on the stream")
            try:
                work.run()
            except CudaFault as e:
                self.faults.append(f"{work.what}: {e}")
                self.sticky = cudaError_t.cudaErrorIllegalAddress
                s.queue.clear()
                return self.sticky
        return cudaError_t.cudaSuccess

    def _synchronize_all(self) -> cudaError_t:
        for s in list(self.streams.values()):
            if s.capture is None:
                error = self._run(s)
                if error:
                    return error
        return cudaError_t.cudaSuccess

    # ---- capture and graphs ----------------------------------------------------------------------

    def unsafe_during_capture(self, what: str) -> bool:
        """True (and the captures invalidated) when ``what``, a call CUDA forbids during a
        capture not in relaxed mode, comes while such a capture prohibits it in this thread."""
        me = threading.get_ident()
        hit = [s.capture for s in self.streams.values() if s.capture is not None and
               (s.capture.mode == cudaStreamCaptureMode.cudaStreamCaptureModeGlobal or
                (s.capture.mode == cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal and
                 s.capture.thread == me))]
        for capture in hit:
            capture.invalidated = capture.invalidated or f"{what} during the capture"
        return bool(hit)

    def _cudaStreamBeginCapture(self, stream, mode):
        handle = int(stream)
        s = self.streams.get(handle)
        if s is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if handle in LEGACY_STREAMS:
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        if s.capture is not None:
            return (cudaError_t.cudaErrorIllegalState,)
        s.capture = Capture(cudaStreamCaptureMode(mode), threading.get_ident())
        return (cudaError_t.cudaSuccess,)

    def _cudaStreamEndCapture(self, stream):
        s = self.streams.get(int(stream))
        if s is None:
            return cudaError_t.cudaErrorInvalidResourceHandle, None
        if s.capture is None:
            return cudaError_t.cudaErrorIllegalState, None
        if s.capture.mode != cudaStreamCaptureMode.cudaStreamCaptureModeRelaxed and \
                s.capture.thread != threading.get_ident():
            return cudaError_t.cudaErrorStreamCaptureWrongThread, None
        capture, s.capture = s.capture, None
        if capture.invalidated:
            return cudaError_t.cudaErrorStreamCaptureInvalidated, None
        handle = self._handle()
        self.graphs[handle] = list(capture.nodes)
        return cudaError_t.cudaSuccess, cudaGraph_t(handle)

    def _cudaGraphInstantiate(self, graph, flags=0):
        nodes = self.graphs.get(int(graph))
        if nodes is None:
            return cudaError_t.cudaErrorInvalidValue, None
        handle = self._handle()
        self.execs[handle] = list(nodes)
        return cudaError_t.cudaSuccess, cudaGraphExec_t(handle)

    def _cudaGraphLaunch(self, graph_exec, stream):
        nodes = self.execs.get(int(graph_exec))
        if nodes is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        for work in nodes:
            error = self.enqueue(int(stream), Work(f"graph node {work.what}", work.run, work.host_reads,
                                                   work.host_writes))
            if error:
                return (error,)
        return (cudaError_t.cudaSuccess,)

    def _cudaGraphDestroy(self, graph):
        return (cudaError_t.cudaSuccess if self.graphs.pop(int(graph), None) is not None
                else cudaError_t.cudaErrorInvalidValue,)

    def _cudaGraphExecDestroy(self, graph_exec):
        return (cudaError_t.cudaSuccess if self.execs.pop(int(graph_exec), None) is not None
                else cudaError_t.cudaErrorInvalidValue,)
