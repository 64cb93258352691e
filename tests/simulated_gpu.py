"""A simulated GPU for the native tests: no GPU is involved anywhere.

``build/simgpu/libcuda.so.1`` (tests/simgpu/simcuda.c, built with ``-DGOPT_BUILD_SIMGPU=ON``)
is loaded into this process first, so the native libraries' ``dlopen("libcuda.so.1")``
finds it. Device memory is host memory: ``Memory`` hands out guarded CPU buffers (outputs
NaN, workspaces 0xFF, guard bytes before and after every buffer). Each kernel launch the
driver accepts comes back here (``Device.on_launch``): the image is identified by its
SHA-256 in the AOT manifest, the parameters are decoded by the manifest's signature (a
pointer outside the test's buffers or misaligned, or a non-NULL scratch pointer, is a
failure), and the build's own ``@triton.jit`` function runs with its constexprs,
``num_warps``, ``num_stages`` and the launched grid in the Triton interpreter
(TRITON_INTERPRET=1), one launch at a time.

What this proves: the host code (build selection, parameter packing, grids, workspaces,
error handling). Not the cubins (the interpreter runs the Triton source), timing or
device-side races.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("GOPT_BUILD_DIR", ROOT / "build"))
SIM_DIR = Path(os.environ.get("GOPT_SIMGPU_DIR", BUILD / "simgpu"))
DRIVER = SIM_DIR / "libcuda.so.1"
NOT_BUILT = (f"the simulated CUDA driver {DRIVER} is not built (cmake -DGOPT_BUILD_SIMGPU=ON; .ci/run does)")

CUDA_ERROR_LAUNCH_FAILED = 719
GUARD = 64
GUARD_BYTE = 0xA5
ELEMENT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "i32": torch.int32,
           "i8": torch.int8}
LAUNCH_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p,
                             ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.c_uint,
                             ctypes.c_ulonglong, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p))


def aot_dir() -> Path:
    """The AOT folder the library embeds (named in the generated table's first line)."""
    first = (BUILD / "generated" / "gopt_variants.c").read_text().splitlines()[0]
    return Path(re.search(r"from (\S+)/manifest\.json", first).group(1))


# ---- device memory -------------------------------------------------------------------------------

@dataclass
class Buffer:
    """One allocation: [guard | data | guard] in a uint8 tensor."""
    name: str
    raw: torch.Tensor
    nbytes: int

    @property
    def address(self) -> int:
        return self.raw.data_ptr() + GUARD

    def view(self, dtype, shape, strides=None, offset=0) -> torch.Tensor:
        """The data as a ``dtype`` tensor (element offset and strides as given)."""
        t = torch.empty(0, dtype=dtype)
        if strides is None:
            strides, step = [], 1
            for n in reversed(shape):
                strides.insert(0, step)
                step *= n
        elt = t.element_size()
        return t.set_(self.raw.untyped_storage(), GUARD // elt + offset, tuple(shape), tuple(strides))

    def guards_intact(self) -> bool:
        head, tail = self.raw[:GUARD], self.raw[GUARD + self.nbytes:]
        return bool((head == GUARD_BYTE).all() and (tail == GUARD_BYTE).all())


class Memory:
    """The test's device allocations (guarded host buffers); thread-safe."""

    def __init__(self):
        self.buffers: list[Buffer] = []
        self._lock = threading.Lock()

    def alloc(self, name: str, nbytes: int, fill: int) -> Buffer:
        raw = torch.full((GUARD + nbytes + GUARD,), GUARD_BYTE, dtype=torch.uint8)
        raw[GUARD:GUARD + nbytes] = fill
        buf = Buffer(name, raw, nbytes)
        with self._lock:
            self.buffers.append(buf)
        return buf

    def tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A contiguous device copy of ``value``."""
        value = value.contiguous()
        buf = self.alloc(name, value.numel() * value.element_size(), 0)
        t = buf.view(value.dtype, value.shape)
        t.copy_(value)
        return t

    def output(self, name: str, shape, dtype) -> torch.Tensor:
        """A contiguous output that starts as NaN."""
        n = 1
        for s in shape:
            n *= s
        buf = self.alloc(name, n * torch.empty(0, dtype=dtype).element_size(), 0)
        t = buf.view(dtype, shape)
        t.fill_(float("nan"))
        return t

    def workspace(self, nbytes: int) -> Buffer:
        """Workspace full of 0xFF garbage (NaN as fp32, -1 as int32)."""
        return self.alloc("workspace", nbytes, 0xFF)

    def find(self, address: int) -> tuple[Buffer, int] | None:
        with self._lock:
            for buf in self.buffers:
                if buf.address <= address < buf.address + max(buf.nbytes, 1):
                    return buf, address - buf.address
        return None

    def damaged(self) -> list[str]:
        return [b.name for b in self.buffers if not b.guards_intact()]


# ---- launches ------------------------------------------------------------------------------------

@dataclass
class Launch:
    """One kernel launch the simulated driver accepted."""
    kernel: str
    arch: str
    ptx: bool
    dtype: str
    grid: tuple
    block: tuple
    shared: int
    ctx_id: int
    stream: int
    args: dict = field(default_factory=dict)  # name -> int / float, or (buffer name, byte offset) for a pointer


class Device:
    """The simulated driver loaded into this process, and the kernels it runs."""

    def __init__(self, manifest_dir: Path):
        self.driver = ctypes.CDLL(str(DRIVER), mode=ctypes.RTLD_GLOBAL)
        d = self.driver
        d.simcuda_ctx_create.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        d.simcuda_ctx_destroy.argtypes = [ctypes.c_void_p]
        d.simcuda_ctx_set_current.argtypes = [ctypes.c_void_p]
        d.simcuda_stream_create.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        d.simcuda_fail.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        d.simcuda_calls.argtypes = [ctypes.c_char_p]
        d.simcuda_calls.restype = ctypes.c_long
        manifest = json.loads((manifest_dir / "manifest.json").read_text())
        self.builds = manifest["builds"]
        self._by_hash = {}
        for b in self.builds:
            self._by_hash[b["cubin_sha256"]] = (b, False)
            self._by_hash[b["ptx_sha256"]] = (b, True)
        self.memory = Memory()
        self.launches: list[Launch] = []
        self.failures: list[str] = []
        self.execute = True
        self.contexts: list[int] = []
        self._run_lock = threading.Lock()  # the interpreter patches triton.language: one kernel at a time
        self._callback = LAUNCH_FN(self.on_launch)  # kept alive as long as the device
        d.simcuda_set_launch_callback(self._callback)
        self.configure(80)

    # -- controls --
    def configure(self, capability: int, shared_optin: int | None = None, ptx_isa: int = 90) -> None:
        """Compute capability (86 = 8.6) and opt-in shared memory per block (default: the
        CUDA programming guide's value for that capability) of the simulated device."""
        if shared_optin is None:
            shared_optin = {80: 166912, 87: 166912, 90: 232448, 100: 232448, 103: 232448, 110: 232448}.get(
                capability, 101376 if capability >= 86 else 65536)
        self.driver.simcuda_configure(capability // 10, capability % 10, shared_optin, ptx_isa)

    def reset(self) -> None:
        """Between tests: new memory, no launches, no injected failures, the test's contexts
        destroyed."""
        for ctx in self.contexts:
            self.driver.simcuda_ctx_destroy(ctx)
        self.memory = Memory()
        self.launches, self.failures, self.execute, self.contexts = [], [], True, []
        self.driver.simcuda_fail(b"", 0, 0)

    def context(self) -> int:
        """A new context, current on the calling thread (destroyed at the next reset)."""
        ctx = ctypes.c_void_p()
        assert self.driver.simcuda_ctx_create(ctypes.byref(ctx)) == 0
        self.contexts.append(ctx.value)
        return ctx.value

    def stream(self) -> int:
        s = ctypes.c_void_p()
        assert self.driver.simcuda_stream_create(ctypes.byref(s)) == 0
        return s.value

    def fail(self, entry_point: str, result: int, count: int = 1) -> None:
        """The next ``count`` calls of ``entry_point`` return ``result``."""
        self.driver.simcuda_fail(entry_point.encode(), result, count)

    def calls(self, entry_point: str) -> int:
        return self.driver.simcuda_calls(entry_point.encode())

    def check(self) -> None:
        """No launch failed and every guard byte is intact."""
        assert not self.failures, self.failures
        assert not self.memory.damaged(), f"written past their ends: {self.memory.damaged()}"

    # -- the launch callback --
    def on_launch(self, image, size, is_ptx, entry, grid, block, shared, ctx_id, stream, params):
        try:
            self._launch(image, size, bool(is_ptx), entry.decode(), tuple(grid[:3]), tuple(block[:3]), shared,
                         ctx_id, stream or 0, params)
            return 0
        except Exception as e:  # noqa: BLE001 - reported to the test, the launch fails
            self.failures.append(f"{type(e).__name__}: {e}")
            return CUDA_ERROR_LAUNCH_FAILED

    def _launch(self, image, size, is_ptx, entry, grid, block, shared, ctx_id, stream, params):
        data = ctypes.string_at(image, size)
        if is_ptx:
            assert data.endswith(b"\0"), "PTX image not NUL-terminated"
            data = data[:-1]
        found = self._by_hash.get(hashlib.sha256(data).hexdigest())
        assert found and found[1] == is_ptx, f"an image of {size} B that is not in the AOT manifest"
        b = found[0]
        assert entry == b["name"], f"entry {entry}, the build's is {b['name']}"
        assert block == tuple(b["block"]), f"block {block}, the build's is {b['block']}"
        assert shared == b["shared_bytes"], f"{shared} B of shared memory, the build needs {b['shared_bytes']}"
        launch = Launch(b["kernel"], b["arch"], is_ptx, b["dtype"], grid, block, shared, ctx_id, stream)
        values = []
        for i, p in enumerate(b["signature"]):
            name, kind = p["name"], p["type"]
            slot = params[i]
            if kind.startswith("*"):
                address = ctypes.c_void_p.from_address(slot).value or 0
                if name in ("global_scratch", "profile_scratch"):
                    assert address == 0, f"{name} = {address:#x}, must be NULL"
                    continue
                values.append(self._pointer(name, kind[1:], address, launch))
            else:
                value = (ctypes.c_int32 if kind == "i32" else ctypes.c_float).from_address(slot).value
                launch.args[name] = value
                values.append(value)
        nulls = [n for n, v in launch.args.items() if v is None]
        assert not nulls or (set(nulls) <= {"a_ptr", "f_ptr"} and launch.args.get("S") == 0), \
            f"NULL {nulls} with S = {launch.args.get('S')}: only an empty token set may be NULL"
        self.launches.append(launch)
        if self.execute:
            from kernels.aot import kernel_function

            with self._run_lock:
                kernel_function(b["kernel"])[grid](*values, **b["constexprs"], num_warps=b["num_warps"],
                                                   num_stages=b["num_stages"])
                SUMMARY["launches"] += 1

    def _pointer(self, name, element, address, launch) -> torch.Tensor:
        dtype = ELEMENT[element]
        if address == 0:
            launch.args[name] = None
            return torch.empty(0, dtype=dtype)
        hit = self.memory.find(address)
        assert hit, f"{name} = {address:#x} is outside every buffer of the test"
        buf, offset = hit
        elt = torch.empty(0, dtype=dtype).element_size()
        assert offset % elt == 0 and address % elt == 0, f"{name} = {buf.name} + {offset} B is not {element}-aligned"
        launch.args[name] = (buf.name, offset)
        return buf.view(dtype, ((buf.nbytes - offset) // elt,), (1,), offset // elt)


# ---- which build the documented rules pick -------------------------------------------------------

def ptx_arch() -> str:
    """The target whose PTX the library embeds (the generated table's --ptx-arch)."""
    table = (BUILD / "generated" / "gopt_variants.c").read_text()
    return re.search(r"--ptx-arch=(\S*);", table).group(1)


def expected_image(kernel, dtype, c_pad, fused, cc, d=32):
    """(arch, is_ptx) of the build a device of capability ``cc`` (86 = 8.6) runs, or None: the
    device's own cubin; sm_86 -> sm_80 and sm_89 -> sm_86, sm_80 cubins (never an "a" build);
    then PTX at or below the device's capability. ``fused``: the merge's FUSED_EPILOGUE, None
    for the other kernels."""
    builds = [b for b in device().builds if b["kernel"] == kernel and b["dtype"] == dtype
              and b["constexprs"]["C_PAD"] == c_pad and b["constexprs"]["DP"] == d
              and b["constexprs"].get("FUSED_EPILOGUE", fused) == fused]
    for cap in [cc] + {86: [80], 89: [86, 80]}.get(cc, []):
        for b in builds:
            if b["capability"] == cap and (cap == cc or not b["arch"].endswith("a")):
                return b["arch"], False
    for b in builds:
        if b["arch"] == ptx_arch() and b["capability"] <= cc:
            return b["arch"], True
    return None


def runs(kernel, dtype, c_pad, cc, d=32) -> bool:
    """Every build ``kernel`` may launch (any B and S) has an image for capability ``cc``."""
    kinds = [("group_merge", True), ("group_merge", False), ("group_merge_epilogue", None)] \
        if kernel == "group_merge" else [(kernel, None)]
    return all(expected_image(k, dtype, c_pad, fused, cc, d) for k, fused in kinds)


# ---- one device per process -----------------------------------------------------------------------

_device: Device | None = None
_device_lock = threading.Lock()

# What the simulated runs covered, for the test run's closing line (tests/conftest.py).
SUMMARY = {"launches": 0, "cases": 0, "max_error": {}}


def device() -> Device:
    """The process's simulated device (the driver can be loaded once), with a context
    current on the calling thread; skips the test when the driver is not built."""
    import pytest

    global _device
    if not DRIVER.is_file():
        pytest.skip(NOT_BUILT)
    with _device_lock:
        if _device is None:
            _device = Device(aot_dir())
            _device.main_context = _device.context()
            _device.contexts = []  # kept for the process's lifetime
    _device.driver.simcuda_ctx_set_current(_device.main_context)
    return _device


@pytest.fixture
def dev():
    """The simulated device, reset and set to compute capability 8.0 around a test."""
    device_ = device()
    device_.reset()
    device_.configure(80)
    yield device_
    device_.configure(80)


def fresh_copy(library: Path, folder: Path) -> Path:
    """A copy of a native library: dlopen loads it anew, with its own one-time driver setup
    (the build's own file may already be loaded in this process without a driver)."""
    import shutil

    if not library.is_file():
        import pytest

        pytest.skip(f"{library} is not built; cmake -S . -B build && cmake --build build (.ci/run does)")
    copy = folder / library.name
    shutil.copy2(library, copy)
    return copy


def record_case(dtype: str, error: float | None = None, kernel: str = "", ref: torch.Tensor | None = None) -> None:
    """Count a simulated case; keep the largest error against the reference per dtype and kernel."""
    SUMMARY["cases"] += 1
    if error is not None:
        key = f"{dtype} {kernel}".strip()
        scale = float(ref.float().abs().max()) if ref is not None and ref.numel() else 0.0
        old = SUMMARY["max_error"].get(key, (0.0, 0.0))
        SUMMARY["max_error"][key] = (max(old[0], error), max(old[1], scale))
