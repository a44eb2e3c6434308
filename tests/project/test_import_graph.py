"""kif's modules import each other without cycles at module level (the guide: "no import
cycles"), and import each other inside functions only in the CLI, which defers heavy imports
(torch, transformers) until a command needs them (issue 32: a function-level import elsewhere
hides a cycle)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from helpers import REPO

KIF = REPO / "kif"


def _modules() -> dict[str, Path]:
    out = {}
    for p in KIF.rglob("*.py"):
        parts = p.relative_to(KIF.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _targets(module: str, path: Path, node, modules) -> set[str]:
    """The kif modules an import statement of ``module`` reads."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(up + ([node.module] if node.module else []))
        found = {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    else:
        found = {a.name for a in node.names}
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for stmt in tree.body:  # module level, including imports under a top-level if/try
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for node in ast.walk(stmt):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    edges |= _targets(name, path, node, modules)
        graph[name] = edges - {name}
    return graph


def function_level_imports() -> dict[str, int]:
    """Module -> how many of its import statements inside a function (or method) read a kif module."""
    modules = _modules()
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        found = {id(node) for f in functions for node in ast.walk(f)
                 if isinstance(node, (ast.Import, ast.ImportFrom)) and _targets(name, path, node, modules)}
        if found:
            out[name] = len(found)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_by_hand():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_kif_has_no_module_level_import_cycle():
    graph = import_graph()
    assert "kif.data.benchmarks" in graph and "kif.data.unseen" in graph["kif.data"]
    assert cycles(graph) == []


def test_no_cycle_between_packages():
    """Each sub-package counted as one room (kif.methods, kif.data, ...): e.g. kif.methods.base
    may import kif.config, so nothing kif.methods.* imports may import kif.methods back."""
    rooms: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        room = ".".join(module.split(".")[:2])
        rooms.setdefault(room, set()).update(".".join(t.split(".")[:2]) for t in targets)
    assert cycles({r: t - {r} for r, t in rooms.items()}) == []


def test_function_level_imports_by_hand(tmp_path, monkeypatch):
    pkg = tmp_path / "kif"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n\ndef f():\n    from .b import x\n    import json\n")
    (pkg / "b.py").write_text("class C:\n    def m(self):\n        from kif import a\n")
    monkeypatch.setattr(sys.modules[__name__], "KIF", pkg)
    assert function_level_imports() == {"kif.a": 1, "kif.b": 1}


def test_kif_internal_imports_inside_functions_only_in_the_cli():
    inside = {m: n for m, n in function_level_imports().items() if m != "kif.cli"}
    assert inside == {}, "import at module level (a cycle it hides shows in the test above)"


def test_sweep_checks_before_torch_loads():
    """``kif sweep`` validates its file (and every cell's config) before any model code loads:
    importing it must not import torch (2+ s), as a checkpoint check once did."""
    import subprocess

    code = "import sys, kif.sweep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
