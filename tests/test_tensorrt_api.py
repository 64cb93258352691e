"""Every TensorRT Python name the project uses exists in every supported TensorRT (10.3 to 11.x).

The names are read from the project's source with ``ast``, not listed by hand:

- module attributes and their members: ``trt.Builder``, ``trt.BuilderFlag.FP16`` (where ``trt``
  is any name bound to the module: ``import tensorrt as trt``, ``trt = import_tensorrt()``,
  ``self.trt``);
- members of TensorRT objects: ``builder.create_network`` -> ``Builder.create_network``. An object's
  class comes from how it was made (``x = trt.Builder(...)``) or from the project's naming
  convention for TensorRT objects (``RECEIVERS``: a ``network`` is an ``INetworkDefinition``), in
  the modules that use TensorRT, unless the function assigns that name something else;
- methods of classes derived from TensorRT's (``class Monitor(trt.IProgressMonitor)``).

They are checked against TensorRT's own API lists (tests/data/tensorrt_python_api, with their
provenance) for 10.3.0, 10.16 and 11.1. A name missing from one of them fails the test unless
the code branches on the TensorRT version where it uses it (``VERSION_BRANCHES``).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LISTS = Path(__file__).resolve().parent / "data" / "tensorrt_python_api"
VERSIONS = ("10.3.0", "10.16", "11.1")
SOURCE_DIRS = ("export", "runtime", "benchmarks", "models", "kernels", "ros2", "native")

# The project's names for TensorRT objects, in the modules that use TensorRT.
RECEIVERS = {
    "builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition", "parser": "OnnxParser",
    "profile": "IOptimizationProfile", "engine": "ICudaEngine", "context": "IExecutionContext",
    "runtime": "Runtime", "layer": "ILayer", "tensor": "ITensor", "error": "ParserError", "cache": "ITimingCache",
    "logger": "Logger", "registry": "IPluginRegistry",
}
# Names the lists do not hold, with the reason; still names the project relies on.
NOT_LISTED = {
    "__version__": "set by the tensorrt package (the project checks it: runtime/backends/trt_backend.py)",
    "nptype": "added by the tensorrt Python package itself (tensorrt/__init__.py)",
    "Logger.WARNING": "ILogger.Severity's values, exported onto Logger; nested enums are not in the lists",
}
# Names missing from a supported version, allowed where the code branches on the version:
# name -> the function (module:qualname) that holds both the use and the branch.
VERSION_BRANCHES: dict[str, str] = {}


def api_lists() -> dict[str, set[str]]:
    return {v: set((LISTS / f"trt_python_api_{v}.txt").read_text().split()) for v in VERSIONS}


@dataclass(frozen=True)
class Use:
    name: str  # "Builder", "BuilderFlag.FP16", "IBuilderConfig.set_flag"
    where: str  # "export/tensorrt.py:123"
    scope: str  # "export/tensorrt.py:build"


def _dotted(node) -> str | None:
    """"trt", "self.trt" for a Name / self-attribute, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def module_aliases(tree: ast.AST) -> set[str]:
    """Names bound to the tensorrt module: imports, ``x = import_tensorrt()``, copies of those,
    and ``trt`` everywhere (the project's name for the module, also as a parameter)."""
    aliases = {"trt"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assign):
                continue
            v = node.value
            is_module = (isinstance(v, ast.Call) and getattr(v.func, "id", getattr(v.func, "attr", None))
                         == "import_tensorrt") or _dotted(v) in aliases
            for target in node.targets:
                name = _dotted(target)
                if is_module and name and name not in aliases:
                    aliases.add(name)
                    changed = True
    return aliases


class NameCollector(ast.NodeVisitor):
    """The TensorRT names one module uses."""

    def __init__(self, path: str, aliases: set[str]):
        self.path, self.aliases, self.uses = path, aliases, []
        self.scopes: list[str] = []
        self.local: list[dict[str, str | None]] = [{}]  # per function: name -> class (None: not TensorRT)

    # ---- what an expression is ----
    def klass(self, node) -> str | None:
        """The TensorRT class of an object expression, or None."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):  # trt.f().x, obj.f().x
            owner = node.func.value
            if _dotted(owner) in self.aliases:
                return MODULE_RETURNS.get(node.func.attr)
            cls = self.klass(owner)
            return RETURNS.get(f"{cls}.{node.func.attr}") if cls else None
        name = _dotted(node)
        if name is None:
            return None
        for scope in reversed(self.local):
            if name in scope:
                return scope[name]
        return RECEIVERS.get(name.removeprefix("self."))

    def made_class(self, value) -> tuple[bool, str | None]:
        """(value comes from TensorRT, its class if known) for an assigned value."""
        if isinstance(value, ast.Constant) and value.value is None:
            return True, None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
            owner = value.func.value
            if _dotted(owner) in self.aliases:
                return True, value.func.attr  # trt.Builder(...) is a Builder
            if self.klass(owner) is not None:
                return True, RETURNS.get(f"{self.klass(owner)}.{value.func.attr}")
        return False, None

    def use(self, name: str, node) -> None:
        scope = ".".join(self.scopes) or "<module>"
        self.uses.append(Use(name, f"{self.path}:{node.lineno}", f"{self.path}:{scope}"))

    # ---- scopes ----
    def visit_FunctionDef(self, node):
        self.scopes.append(node.name)
        local: dict[str, str | None] = {}
        for sub in ast.walk(node):  # names this function gives non-TensorRT values
            if isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                from_trt, cls = self.made_class(sub.value)
                for t in targets:
                    name = _dotted(t)
                    if name and not name.startswith("self.") and name not in self.aliases:
                        local[name] = cls if from_trt else None
                        if from_trt and cls is None:
                            local.pop(name)  # None / unknown TensorRT result: keep the convention
            elif isinstance(sub, (ast.For, ast.comprehension)):
                for t in ast.walk(sub.target):
                    if isinstance(t, ast.Name) and t.id in RECEIVERS:
                        local[t.id] = None
        for a in node.args.args + node.args.kwonlyargs:
            local.pop(a.arg, None)  # parameters follow the convention
        self.local.append(local)
        self.generic_visit(node)
        self.local.pop()
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        bases = [b for b in node.bases if isinstance(b, ast.Attribute) and _dotted(b.value) in self.aliases]
        for base in bases:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    self.use(f"{base.attr}.{item.name}", item)
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    # ---- names ----
    def visit_Attribute(self, node):
        owner = node.value
        if _dotted(owner) in self.aliases:
            self.use(node.attr, node)
        elif isinstance(owner, ast.Attribute) and _dotted(owner.value) in self.aliases:
            if not (owner.attr.startswith("__") or node.attr.startswith("__")):
                self.use(f"{owner.attr}.{node.attr}", node)  # trt.BuilderFlag.FP16
        elif not node.attr.startswith("__") and self.klass(owner) is not None and \
                not (isinstance(owner, ast.Name) and owner.id in self.aliases):
            self.use(f"{self.klass(owner)}.{node.attr}", node)
        self.generic_visit(node)


# What a TensorRT call returns, where the project keeps the result under another name.
RETURNS = {
    "Builder.create_network": "INetworkDefinition", "Builder.create_builder_config": "IBuilderConfig",
    "Builder.create_optimization_profile": "IOptimizationProfile", "Runtime.deserialize_cuda_engine": "ICudaEngine",
    "ICudaEngine.create_execution_context": "IExecutionContext", "INetworkDefinition.get_input": "ITensor",
    "INetworkDefinition.get_output": "ITensor", "INetworkDefinition.get_layer": "ILayer",
    "OnnxParser.get_error": "ParserError", "IBuilderConfig.create_timing_cache": "ITimingCache",
    "IBuilderConfig.get_timing_cache": "ITimingCache",
}


MODULE_RETURNS = {"get_plugin_registry": "IPluginRegistry", "get_builder_plugin_registry": "IPluginRegistry"}


def collect(source: str, path: str) -> list[Use]:
    tree = ast.parse(source, path)
    aliases = module_aliases(tree)
    uses_module = any(isinstance(n, ast.Attribute) and _dotted(n.value) in aliases for n in ast.walk(tree))
    if not uses_module:
        return []
    collector = NameCollector(path, aliases)
    collector.visit(tree)
    return collector.uses


def project_sources() -> list[Path]:
    files = [ROOT / "demo.py"]
    for d in SOURCE_DIRS:
        files += sorted((ROOT / d).rglob("*.py")) if (ROOT / d).is_dir() else []
    return [f for f in files if f.is_file()]


def project_uses() -> list[Use]:
    uses = []
    for f in project_sources():
        uses += collect(f.read_text(), str(f.relative_to(ROOT)))
    return uses


def branches_on_version(function: ast.AST, name: str) -> bool:
    """The function tests the TensorRT version (``__version__``) or whether ``name`` exists
    (``hasattr(..., "member")``) in an if / conditional expression."""
    member = name.split(".")[-1]
    for node in ast.walk(function):
        if isinstance(node, (ast.If, ast.IfExp)):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.Attribute) and sub.attr == "__version__":
                    return True
                if (isinstance(sub, ast.Call) and getattr(sub.func, "id", None) == "hasattr" and len(sub.args) == 2
                        and isinstance(sub.args[1], ast.Constant) and sub.args[1].value == member):
                    return True
    return False


def find_function(scope: str) -> ast.AST:
    path, _, qualname = scope.partition(":")
    node = ast.parse((ROOT / path).read_text())
    for part in qualname.split("."):
        node = next(n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    return node


def problems(uses: list[Use], lists: dict[str, set[str]], branches: dict[str, str]) -> list[str]:
    out = []
    for use in sorted(set(uses), key=lambda u: (u.name, u.where)):
        if use.name in NOT_LISTED:
            continue
        missing = [v for v in VERSIONS if use.name not in lists[v]]
        if not missing:
            continue
        if branches.get(use.name) == use.scope and branches_on_version(find_function(use.scope), use.name):
            continue
        out.append(f"{use.name} ({use.where}) is not in TensorRT {', '.join(missing)}")
    return out


# ---- the tests ----------------------------------------------------------------------------------

def test_the_lists_are_the_copied_ones():
    lists = api_lists()
    assert all(len(names) > 1000 for names in lists.values())
    # the facts the build path is designed around
    for removed in ("BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
                    "ILayer.precision", "ILayer.set_output_type"):
        assert removed in lists["10.3.0"] and removed in lists["10.16"] and removed not in lists["11.1"]
    assert all("NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names for names in lists.values())


def test_every_tensorrt_name_the_project_uses_is_in_every_supported_version():
    uses = project_uses()
    names = {u.name for u in uses}
    # The collector sees the build path and the runtime (else this test could not fail).
    for expected in ("Builder", "OnnxParser", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
                     "Builder.build_serialized_network", "IBuilderConfig.set_timing_cache", "ParserError.desc",
                     "ITensor.shape", "IOptimizationProfile.set_shape", "Runtime.deserialize_cuda_engine",
                     "ICudaEngine.get_tensor_mode", "IExecutionContext.execute_async_v3",
                     "IProgressMonitor.phase_start", "TensorIOMode.INPUT", "ITimingCache.serialize",
                     "IPluginRegistry.load_library"):
        assert expected in names, f"{expected} not found: the collector missed a use"
    assert problems(uses, api_lists(), VERSION_BRANCHES) == []
    for name, scope in VERSION_BRANCHES.items():  # every entry of the table is still a real branch
        assert branches_on_version(find_function(scope), name), f"{scope} no longer branches for {name}"


def test_weakly_typed_code_is_caught(tmp_path):
    """The build path TensorRT 11 removed, written the usual ways, is reported name by name."""
    code = '''
import tensorrt as trt

def build(network, onnx_path):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layer.precision = trt.DataType.FLOAT
        layer.set_output_type(0, trt.DataType.FLOAT)
    engine = str(onnx_path)  # a str, not a TensorRT engine
    return engine.upper()
'''
    found = problems(collect(code, "snippet.py"), api_lists(), {})
    assert [p.split(" (")[0] for p in found] == [
        "BuilderFlag.FP16", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "ILayer.precision", "ILayer.set_output_type"]
    assert all(p.endswith("is not in TensorRT 11.1") for p in found)


def test_a_version_branch_is_allowed_only_where_it_is(tmp_path, monkeypatch):
    code = """import tensorrt

def configure(trt, config, half):
    if half and int(trt.__version__.split(".")[0]) < 11:
        config.set_flag(trt.BuilderFlag.FP16)

def careless(trt, config):
    config.set_flag(trt.BuilderFlag.FP16)
"""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "snippet.py").write_text(code.replace("import tensorrt", "import tensorrt as trt"))
    uses = collect((tmp_path / "snippet.py").read_text(), "snippet.py")
    found = problems(uses, api_lists(), {"BuilderFlag.FP16": "snippet.py:configure"})
    assert found == ["BuilderFlag.FP16 (snippet.py:8) is not in TensorRT 11.1"]  # careless(), not configure()
    assert len(problems(uses, api_lists(), {})) == 2  # without the table entry, both


@pytest.mark.parametrize("version", VERSIONS)
def test_each_list_names_the_runtime_api(version):
    names = api_lists()[version]
    for name in ("IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
                 "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_dtype"):
        assert name in names
