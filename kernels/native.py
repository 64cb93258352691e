"""``libgopt_kernels.so`` (the C library CMake builds from the AOT kernels) through ctypes,
on PyTorch CUDA tensors: the way to test and time the native launch path from Python.

    lib = NativeKernels()                      # build/libgopt_kernels.so or $GOPT_KERNELS_LIB
    P = lib.group_merge(a, c, q_w, q_b, ...)   # same arguments as reference.group_merge_reference
    out = lib.prompt_inject(f, P, down_w, ...)

Calls are queued on PyTorch's current stream. Errors raise ``NativeKernelError`` with the
library's ``gopt_last_error()`` text. ``lib.can_run("group_merge", torch.float16, B, S, C, d)``
asks whether the library has a build for the current device (``gopt_can_run``).
``group_merge_args`` / ``prompt_inject_args`` pack the C structs from tensors.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

LIBRARY = "libgopt_kernels.so"
LIBRARY_ENV = "GOPT_KERNELS_LIB"
BUILD_DIR = Path(__file__).resolve().parents[1] / "build"
STATUS = {0: "OK", 1: "INVALID_ARG", 2: "UNSUPPORTED", 3: "NO_DRIVER", 4: "NO_KERNEL_FOR_ARCH", 5: "CUDA_ERROR",
          6: "WORKSPACE_TOO_SMALL"}
DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
KERNELS = {"group_merge": 0, "prompt_inject": 1}  # gopt_kernel

_ptr, _i64 = ctypes.c_void_p, ctypes.c_int64


class GroupMergeArgs(ctypes.Structure):
    """``gopt_group_merge_args`` of native/include/gopt_kernels.h."""
    _fields_ = [("size", ctypes.c_size_t), ("dtype", ctypes.c_int32), ("B", _i64), ("S", _i64), ("C", _i64),
                ("d", _i64), ("a", _ptr), ("a_strides", _i64 * 3), ("c", _ptr), ("c_strides", _i64 * 3)] + [
                (name, _ptr) for name in ("q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w", "o_b", "out")]


class PromptInjectArgs(ctypes.Structure):
    """``gopt_prompt_inject_args`` of native/include/gopt_kernels.h."""
    _fields_ = [("size", ctypes.c_size_t), ("dtype", ctypes.c_int32), ("B", _i64), ("S", _i64), ("D", _i64),
                ("C", _i64), ("d", _i64), ("f", _ptr), ("f_strides", _i64 * 3), ("P", _ptr),
                ("P_strides", _i64 * 3)] + [
                (name, _ptr) for name in ("down_w", "down_b", "q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w",
                                          "o_b", "up_w", "up_b", "out")]


class NativeKernelError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{STATUS.get(status, status)}: {message}")
        self.status = status


def library_path(path=None) -> Path:
    return Path(path or os.environ.get(LIBRARY_ENV) or BUILD_DIR / LIBRARY)


def open_library(path=None) -> ctypes.CDLL:
    """The library with its five functions typed."""
    path = library_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; build it with `cmake -S . -B build && cmake --build build` "
                                f"or set {LIBRARY_ENV}")
    lib = ctypes.CDLL(str(path))
    lib.gopt_version.restype = ctypes.c_int
    lib.gopt_last_error.restype = ctypes.c_char_p
    lib.gopt_group_merge_workspace_size.restype = ctypes.c_size_t
    lib.gopt_group_merge_workspace_size.argtypes = [_i64] * 4
    lib.gopt_group_merge.argtypes = [ctypes.POINTER(GroupMergeArgs), _ptr, ctypes.c_size_t, _ptr]
    lib.gopt_prompt_inject.argtypes = [ctypes.POINTER(PromptInjectArgs), _ptr]
    lib.gopt_can_run.argtypes = [ctypes.c_int, ctypes.c_int] + [_i64] * 5
    return lib


def dtype_code(t) -> int:
    """gopt_dtype of a tensor or torch dtype."""
    name = str(getattr(t, "dtype", t)).replace("torch.", "")
    if name not in DTYPES:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {name}")
    return DTYPES[name]


def _address(t) -> int:
    return t.data_ptr() if t.numel() else 0  # an empty tensor may be passed as NULL


def group_merge_args(a, c, weights, out) -> GroupMergeArgs:
    """``gopt_group_merge_args`` for a' [B, S, d], c' [B, C, d] (any strides), the eight
    contiguous cup weights and biases (q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b) and P."""
    B, S, d = a.shape
    return GroupMergeArgs(ctypes.sizeof(GroupMergeArgs), dtype_code(a), B, S, c.shape[1], d,
                          _address(a), (_i64 * 3)(*a.stride()), _address(c), (_i64 * 3)(*c.stride()),
                          *(_address(t) for t in weights), _address(out))


def prompt_inject_args(f, P, weights, out) -> PromptInjectArgs:
    """``gopt_prompt_inject_args`` for f [B, S, D], P [B, C, d] (any strides), the twelve
    contiguous acp weights and biases (down_w, down_b, q_w, ..., o_b, up_w, up_b) and the output."""
    B, S, D = f.shape
    return PromptInjectArgs(ctypes.sizeof(PromptInjectArgs), dtype_code(f), B, S, D, P.shape[1], P.shape[2],
                            _address(f), (_i64 * 3)(*f.stride()), _address(P), (_i64 * 3)(*P.stride()),
                            *(_address(t) for t in weights), _address(out))


class NativeKernels:
    """The C library's two kernels on torch CUDA tensors (stream: torch's current one)."""

    def __init__(self, path=None):
        self.lib = open_library(path)

    def last_error(self) -> str:
        return self.lib.gopt_last_error().decode()

    def _check(self, status: int) -> None:
        if status != 0:
            raise NativeKernelError(status, self.last_error())

    def can_run(self, kernel: str, dtype, B=-1, S=-1, C=-1, d=-1, D=-1) -> bool:
        """Whether ``kernel`` ("group_merge" / "prompt_inject") runs in ``dtype`` on the current
        device for these sizes (-1: any); ``last_error()`` says why not."""
        return self.lib.gopt_can_run(KERNELS[kernel], dtype_code(dtype), B, S, C, d, D) == 0

    @staticmethod
    def _stream():
        import torch

        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def group_merge(self, a, c, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b):
        import torch

        B, S, d = a.shape
        C = c.shape[1]
        weights = [t.contiguous() for t in (q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b)]
        out = torch.empty((B, C, d), dtype=a.dtype, device=a.device)
        args = group_merge_args(a, c, weights, out)
        nbytes = self.lib.gopt_group_merge_workspace_size(B, S, C, d)
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=a.device) if nbytes else None
        self._check(self.lib.gopt_group_merge(ctypes.byref(args), workspace.data_ptr() if nbytes else None, nbytes,
                                              self._stream()))
        return out

    def prompt_inject(self, f, P, down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b):
        import torch

        weights = [t.contiguous() for t in (down_w, down_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, up_w, up_b)]
        out = torch.empty(f.shape, dtype=f.dtype, device=f.device)
        args = prompt_inject_args(f, P, weights, out)
        self._check(self.lib.gopt_prompt_inject(ctypes.byref(args), self._stream()))
        return out
