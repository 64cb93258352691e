"""The ``trt_env`` fixture: a test of the TensorRT path runs once per simulated TensorRT version
(ids ``simulated-trt10.3``, ``simulated-trt10.16``, ``simulated-trt11.1``) and, where TensorRT is
installed, once on it with a CUDA GPU (id ``gpu-tensorrt``; skipped, saying what is missing,
without a GPU).

The simulated runs put the stand-ins where the product imports them from (``sys.modules``:
``tensorrt``, ``cuda.bindings.runtime``) and run the product code unchanged. Each run records
where it ran as the test's ``ran_on`` property (tests/conftest.py sums them up in the report),
and fails if queued work touched memory outside the live allocations.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cuda_runtime import SimulatedCuda
from .tensorrt_module import EngineData, PluginLibraries, make_tensorrt

SIMULATED_VERSIONS = ("10.3", "10.16", "11.1")
NATIVE_PLUGINS = Path(__file__).resolve().parents[2] / "native" / "plugins"


@dataclass
class TrtEnv:
    id: str
    simulated: bool
    trt: types.ModuleType
    cuda: SimulatedCuda | None = None
    libraries: PluginLibraries | None = None

    @property
    def ran_on(self) -> str:
        if self.simulated:
            return f"simulated TensorRT {self.trt.__version__} and CUDA runtime (ONNX Runtime on the CPU; no GPU)"
        return f"TensorRT {self.trt.__version__} on a CUDA GPU"

    def declare_plugin_library(self, path) -> None:
        """The simulation treats the file ``path`` as the GoPT plugin library (the creators
        native/plugins registers); a no-op on real TensorRT."""
        if self.simulated:
            self.libraries.declare(path, native_plugin_creators())

    def engine_data(self, path) -> EngineData:
        """What a simulated engine file holds."""
        assert self.simulated, "only a simulated engine can be read back"
        return EngineData.from_bytes(Path(path).read_bytes())


def native_plugin_creators() -> list[tuple[str, str, str]]:
    """(name, version, namespace) of every creator the C++ plugin library registers, read from
    its sources (``kName`` per plugin, ``kVersion`` / ``kNamespace`` in common.h)."""
    common = (NATIVE_PLUGINS / "common.h").read_text()
    version = re.search(r'kVersion\s*=\s*"([^"]*)"', common).group(1)
    namespace = re.search(r'kNamespace\s*=\s*"([^"]*)"', common).group(1)
    names = [m for f in sorted(NATIVE_PLUGINS.glob("*.cpp"))
             for m in re.findall(r'kName\s*=\s*"([^"]*)"', f.read_text())]
    return [(name, version, namespace) for name in names]


def install(monkeypatch, version: str) -> TrtEnv:
    """Put a fresh simulated TensorRT ``version`` and CUDA runtime where the product imports them."""
    from runtime.backends import plugin_ops

    cuda, libraries = SimulatedCuda(), PluginLibraries()
    trt = make_tensorrt(version, cuda, libraries)
    runtime = cuda.module("cuda.bindings.runtime")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    package = types.ModuleType("cuda")
    package.bindings = bindings
    for name, module in (("tensorrt", trt), ("cuda", package), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", runtime)):
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "cuda.cudart", raising=False)
    monkeypatch.setattr(plugin_ops, "_loaded", {})  # a fresh TensorRT has no plugins loaded
    return TrtEnv(f"simulated-trt{version}", True, trt, cuda, libraries)


def real_or_skip() -> TrtEnv:
    from runtime.backends.trt_backend import BackendUnavailable, cuda_device, import_cudart, import_tensorrt

    try:
        trt = import_tensorrt()
        cuda_device(import_cudart(), 0)
    except (BackendUnavailable, RuntimeError) as e:
        pytest.skip(f"needs TensorRT 10.3-11.x and a CUDA GPU: {e}")
    return TrtEnv("gpu-tensorrt", False, trt)


# The real TensorRT where it is installed (skipped, saying why, without a GPU); where it is not,
# the summary line of tests/conftest.py says that no test ran on a GPU.
REAL = ["gpu"] if importlib.util.find_spec("tensorrt") is not None else []


@pytest.fixture(params=[*SIMULATED_VERSIONS, *REAL],
                ids=[*(f"simulated-trt{v}" for v in SIMULATED_VERSIONS), *(["gpu-tensorrt"] if REAL else [])])
def trt_env(request, monkeypatch):
    env = real_or_skip() if request.param == "gpu" else install(monkeypatch, request.param)
    request.node.user_properties.append(("ran_on", env.ran_on))
    yield env
    if env.simulated:
        assert env.cuda.faults == [], f"queued work faulted on the simulated device: {env.cuda.faults}"
