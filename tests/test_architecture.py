"""The package's import structure: no import cycles, self-contained layers, no process-wide allocator code.

The import graph is read from the source with :mod:`ast`: every ``import`` statement counts, at module
level and inside functions alike (a function-level import is still a dependency, only a later one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import allinone_ir

PACKAGE = "allinone_ir"
ROOT = Path(allinone_ir.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from . import x`` imports the submodule x when there is one, else a name of the package.
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.append(sub if sub in known else module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]  # importlib.import_module("allinone_ir.x") is an import too
        for target in targets:
            # Importing a.b.c runs a, a.b and a.b.c; the edge goes to the deepest module of the package.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One chain per strongly connected component with a cycle (Tarjan), written ``a -> b -> ... -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_chain(graph, set(c)) for c in components]


def _chain(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a component: ``[a, b, ..., a]``."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError("not a cycle")  # pragma: no cover


def _reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        # Importing a submodule runs its parent packages' __init__ first.
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        todo.extend(graph.get(m, set()) | set(parents))
    return seen


def test_the_cycle_finder_finds_a_cycle_and_reports_the_chain() -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a", "p.d"}, "p.d": set(), "p": {"p.a"}}
    assert _cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert _cycles({"p.a": {"p.b"}, "p.b": set()}) == []


def test_the_graph_resolves_relative_and_function_level_imports() -> None:
    graph = _graph()
    assert "allinone_ir.layers.attention" in graph["allinone_ir.models.pip"]  # from ..layers.attention import
    assert "allinone_ir.models" in graph["allinone_ir"]  # from .models import ...
    assert "allinone_ir.errors" in graph["allinone_ir.io"]


def test_no_import_cycles_in_the_package() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_import_nothing_else_of_the_package() -> None:
    """``layers/`` imports only itself and the error classes, which import nothing of the package."""
    graph = _graph()
    assert graph[f"{PACKAGE}.errors"] == set()
    allowed = {f"{PACKAGE}.errors"}
    outside = {
        m: sorted(t for t in targets if not t.startswith(f"{PACKAGE}.layers") and t not in allowed)
        for m, targets in graph.items()
        if m.startswith(f"{PACKAGE}.layers")
    }
    assert {m: t for m, t in outside.items() if t} == {}


def test_no_allocator_code_is_reachable_from_import_or_restore() -> None:
    """``ctypes`` / ``mallopt`` appear in no module that ``import allinone_ir`` or ``restore()`` can import."""
    graph = _graph()
    modules = _modules()
    reachable = _reachable(graph, [PACKAGE, f"{PACKAGE}.inference"])
    assert f"{PACKAGE}.inference" in reachable and f"{PACKAGE}.layers.attention" in reachable
    offenders = []
    for m in sorted(reachable):
        source = modules[m].read_text(encoding="utf-8")
        tree = ast.parse(source)
        imports_ctypes = any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "ctypes" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "ctypes")
            for n in ast.walk(tree)
        )
        if imports_ctypes or "mallopt" in source:
            offenders.append(m)
    assert offenders == []


def test_importing_the_package_imports_no_optional_dependency() -> None:
    """Nothing beyond what ``import torch`` itself imports (torch brings tqdm and ctypes along)."""
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import allinone_ir\n"
        "assert callable(allinone_ir.restore) and allinone_ir.Trainer and allinone_ir.MoCEIR\n"
        "heavy = ['PIL', 'safetensors', 'yaml', 'matplotlib', 'tqdm', 'ctypes']\n"
        "new = set(sys.modules) - before\n"
        "print(','.join(m for m in sorted(new) if m.split('.')[0] in heavy or 'heap' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
