"""No import circle among the project's modules, read from the source with ``ast``.

Every import counts, at module level or inside a function (a lazy import that closes a
circle still ties the two modules together): ``import a.b``, ``from a import b`` (the
module ``a.b`` when it is one, else ``a``) and relative imports, resolved against the files
of the packages below. An import of something outside them (numpy, torch) is ignored.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "export", "models", "kernels", "evaluation", "serving", "benchmarks")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` (a package is its __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules) -> str | None:
    """``name`` or its closest enclosing module among ``modules`` (``runtime.cli.count`` -> ``runtime.cli``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node, module: str, is_package: bool, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    graph = {}
    for module, path in modules.items():
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(node, module, path.name == "__init__.py", modules):
                    target = _known(name, modules)
                    if target and target != module:
                        graph[module].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(component)))}" for m in component)


def test_no_import_circle_in_the_project():
    graph = import_graph(module_files(ROOT))
    assert len(graph) > 50 and "runtime.backends.factory" in graph["runtime.segmenter"]
    found = circles(graph)
    assert not found, "import circles: " + " | ".join(describe(c, graph) for c in found)


def test_the_check_finds_circles_through_relative_lazy_and_package_imports(tmp_path):
    files = {
        "pkg/__init__.py": "from .core import Thing\n",
        "pkg/core.py": "def f():\n    from .sub import helper\n",  # lazy
        "pkg/sub/__init__.py": "",
        "pkg/sub/helper.py": "from .. import core\n",  # back up two levels: a circle core <-> sub.helper
        "pkg/leaf.py": "import numpy\nfrom pkg.core import f\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(module_files(tmp_path, ("pkg",)))
    assert graph["pkg.leaf"] == {"pkg.core"}
    assert circles(graph) == [["pkg.core", "pkg.sub.helper"]]
    (tmp_path / "pkg/sub/helper.py").write_text("import os\n")
    assert circles(import_graph(module_files(tmp_path, ("pkg",)))) == []
