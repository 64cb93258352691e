"""The fused GoPT graph's two custom nodes and how ONNX Runtime runs them.

``python -m export.onnx CKPT --fused-kernels`` writes each prompter's group merge and
prompt injection as one node, op type ``GoptGroupMerge`` / ``GoptPromptInject`` in the
domain ``ai.onnx.contrib``, with the attributes ``plugin_namespace="gopt"`` and
``plugin_version="1"`` that TensorRT's ONNX parser uses to pick the plugin of that name
from ``libgopt_trt_plugins.so``. The weights are the nodes' initializer inputs, in the
order below (the order of ``kernels.reference``'s arguments).

ONNX Runtime runs the same graph on the CPU through onnxruntime-extensions Python custom
ops that compute the two nodes with the project's PyTorch reference (so this path needs
torch, imported when a node first runs). It exists to check the fused export against
PyTorch, not for speed.

TensorRT runs the nodes with the plugins of ``libgopt_trt_plugins.so`` (built by CMake,
``native/plugins/``): ``python -m export.tensorrt --plugins LIB`` loads it before parsing and
records its SHA-256 in the engine's sidecar; the TensorRT backend loads it before
deserialising such an engine.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..files import file_sha256

DOMAIN = "ai.onnx.contrib"
NAMESPACE = "gopt"
VERSION = "1"
GROUP_MERGE = "GoptGroupMerge"
PROMPT_INJECT = "GoptPromptInject"
PLUGINS = (GROUP_MERGE, PROMPT_INJECT)

_LINEAR = lambda name: (f"{name}_w", f"{name}_b")  # noqa: E731
INPUTS = {
    GROUP_MERGE: ("a", "c", *_LINEAR("q"), *_LINEAR("k"), *_LINEAR("v"), *_LINEAR("o")),
    PROMPT_INJECT: ("f", "P", *_LINEAR("down"), *_LINEAR("q"), *_LINEAR("k"), *_LINEAR("v"), *_LINEAR("o"),
                    *_LINEAR("up")),
}
OUTPUTS = {GROUP_MERGE: ("P",), PROMPT_INJECT: ("out",)}
ATTRIBUTES = {"plugin_namespace": NAMESPACE, "plugin_version": VERSION}

_registered = False


def _reference(op_type: str):
    """numpy in, numpy out: the PyTorch reference of one node."""
    def compute(*arrays, **attributes):
        import torch

        from kernels.reference import group_merge_reference, prompt_inject_reference

        fn = group_merge_reference if op_type == GROUP_MERGE else prompt_inject_reference
        with torch.inference_mode():
            return fn(*(torch.from_numpy(x) for x in arrays)).numpy()
    compute.__name__ = op_type
    return compute


def extensions_library() -> str:
    """Path of the onnxruntime-extensions library with GoptGroupMerge / GoptPromptInject
    registered as Python ops (fp32, in the library's domain ``ai.onnx.contrib``); pass it to ``SessionOptions.register_custom_ops_library``."""
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise ImportError("this graph has fused GoPT nodes (exported with --fused-kernels); ONNX Runtime runs "
                          "them through onnxruntime-extensions: pip install onnxruntime-extensions torch") from None
    if not _registered:
        for op_type in PLUGINS:
            onnx_op(op_type=op_type, inputs=[PyCustomOpDef.dt_float] * len(INPUTS[op_type]),
                    outputs=[PyCustomOpDef.dt_float],
                    attrs={name: PyCustomOpDef.dt_string for name in ATTRIBUTES})(_reference(op_type))
        _registered = True
    return get_library_path()


def session_options(opts, plugins) -> None:
    """Register the custom ops on ``opts`` (ONNX Runtime ``SessionOptions``) when a model's
    metadata lists ``plugins``."""
    if plugins:
        opts.register_custom_ops_library(extensions_library())


# ---- the TensorRT plugin library ---------------------------------------------------------------

PLUGIN_LIBRARY = "libgopt_trt_plugins.so"
PLUGIN_LIBRARY_ENV = "GOPT_PLUGIN_LIB"
_BUILD_DIR = Path(__file__).resolve().parents[1] / "build"  # where `cmake -S . -B build` puts it
_loaded: dict[str, tuple[Path, object]] = {}  # SHA-256 -> (path, TensorRT's handle)
_load_lock = threading.Lock()


def find_plugin_library(explicit=None, beside=None) -> Path | None:
    """The plugin library: ``explicit``, else $GOPT_PLUGIN_LIB, else libgopt_trt_plugins.so in
    the folder ``beside`` (an engine's), else the source tree's CMake build folder; None when
    none exists (an explicit or $GOPT_PLUGIN_LIB path is returned as given, to be reported)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(PLUGIN_LIBRARY_ENV):
        return Path(os.environ[PLUGIN_LIBRARY_ENV])
    for folder in ([Path(beside)] if beside else []) + [_BUILD_DIR]:
        if (folder / PLUGIN_LIBRARY).is_file():
            return folder / PLUGIN_LIBRARY
    return None


def missing_library_hint() -> str:
    return (f"build {PLUGIN_LIBRARY} (`cmake -S . -B build -DTENSORRT_ROOT=... && cmake --build build`) and "
            f"pass its path (--plugins LIB) or set {PLUGIN_LIBRARY_ENV}")


def load_plugin_library(trt, path) -> None:
    """Register the plugins of ``path`` with TensorRT's plugin registry, once per process per
    library, told by its SHA-256: TensorRT refuses to register the same plugins twice, so a
    copy of a library already loaded (the build folder's, shipped beside an engine) is not
    loaded again, and another build of the library cannot be loaded beside the first."""
    path = Path(path)
    with _load_lock:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such plugin library; {missing_library_hint()}")
        digest = file_sha256(path)
        if digest in _loaded:
            return
        handle = trt.get_plugin_registry().load_library(str(path.resolve()))
        if handle is None:
            loaded = [str(p) for p, _ in _loaded.values()]
            why = (f"; {loaded[0]} is already loaded in this process, another build of it with the same plugins, "
                   "and TensorRT registers a plugin once per process" if loaded else " (see its message above)")
            raise RuntimeError(f"{path}: TensorRT could not load the plugin library{why}")
        _loaded[digest] = (path, handle)
