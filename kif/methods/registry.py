"""Name -> method class. A new method is one file: a module in ``kif/methods/`` with
``@register`` on its class is found without editing any list; a method outside the package
is named ``module:Class`` (its module is imported, e.g. from the working directory)."""
from __future__ import annotations

import ast
import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import Optional

from ..errors import ConfigError

_METHODS: dict[str, type] = {}
_INFRASTRUCTURE = {"base", "registry"}  # kif/methods modules that hold no method


def register(cls):
    _METHODS[cls.name] = cls
    return cls


def all_methods() -> dict[str, type]:
    package = importlib.import_module("kif.methods")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"kif.methods.{info.name}")
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    if ":" in name:
        return _import_method(name)
    methods = all_methods()
    if name not in methods:
        raise ConfigError(f"method: unknown method '{name}' (known: {', '.join(methods)}; "
                          "or module:Class for a method of your own)")
    return methods[name]


def _import_method(spec: str) -> type:
    from .base import CLMethod

    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method: cannot import '{spec}' ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, CLMethod)):
        raise ConfigError(f"method: '{spec}' is not a CLMethod subclass")
    return cls


# ---- method_args keys read from the source (config load must not import torch) ----------------
# Importing a method module imports torch (2+ s), so a typo in method_args would be reported only
# after that. ``option_keys`` reads the method's Options fields from its file with ``ast``
# instead; whatever it cannot follow statically it answers None (unknown: validate the slow way).

class _Unresolved(Exception):
    """The source does not say for sure (the caller falls back to importing the method)."""


class _Missing(_Unresolved):
    """No class on the chain defines the attribute."""


_BASE_MODEL = "pydantic.BaseModel"  # the root every options class ends in: no fields of its own
_KIF_ROOT = Path(__file__).resolve().parents[1]  # kif/


def option_keys(name: str) -> Optional[frozenset[str]]:
    """The ``method_args`` keys method ``name`` accepts (its Options' fields and aliases), or
    None when only importing it could tell (``module:Class``, an unknown name, a construct that
    :func:`static_option_keys` does not follow)."""
    if name in _METHODS:  # already imported: the class itself is exact and costs nothing
        return option_keys_of(_METHODS[name].Options)
    return None if ":" in name else static_option_keys(name)


def option_keys_of(options: type) -> frozenset[str]:
    """Field names and string aliases of a pydantic model (the keys ``extra='forbid'`` allows)."""
    aliases = {a for f in options.model_fields.values() for a in (f.alias, f.validation_alias)
               if isinstance(a, str)}
    return frozenset(options.model_fields) | aliases


def static_option_keys(name: str) -> Optional[frozenset[str]]:
    """:func:`option_keys` from the source alone: the ``@register`` class with ``name = "<name>"``
    in a module of this package, its ``Options`` looked up through its bases, and the annotated
    assignments of that class and its bases (same-file, or ``from .x import Y`` within kif) down
    to pydantic's ``BaseModel``."""
    package = importlib.import_module("kif.methods")  # light: its names load on first use
    try:
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in _INFRASTRUCTURE or info.ispkg:
                continue
            mod = (f"kif.methods.{info.name}", Path(info.module_finder.path) / f"{info.name}.py")
            for node in _tree(mod[1]).body:
                if (isinstance(node, ast.ClassDef) and _class_constant(node, "name") == name
                        and any(_dotted(d).split(".")[-1] == "register" for d in node.decorator_list)):
                    fields, forbids = _fields(_lookup(mod, node, "Options"))
                    return frozenset(fields) if forbids else None  # extra keys allowed: no check
    except (_Unresolved, RecursionError, OSError, SyntaxError):  # importing will say what is wrong
        return None
    return None


def _tree(path: Path) -> ast.Module:
    return _parse(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> ast.Module:  # mtime: an edited file is read again
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _dotted(expr) -> str:
    """``a.b.c`` of a Name/Attribute/Call expression ('' for anything else)."""
    if isinstance(expr, ast.Call):
        return _dotted(expr.func)
    if isinstance(expr, ast.Attribute):
        return f"{_dotted(expr.value)}.{expr.attr}"
    return expr.id if isinstance(expr, ast.Name) else ""


def _class_constant(node: ast.ClassDef, attr: str):
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and _binds(stmt, attr):
            return stmt.value.value
    return None


def _binding(body: list, name: str):
    """The last statement of ``body`` that binds ``name`` (in Python the last one wins)."""
    found = None
    for stmt in body:
        if (isinstance(stmt, ast.ClassDef) and stmt.name == name or _binds(stmt, name)
                or isinstance(stmt, ast.ImportFrom) and any((a.asname or a.name) == name for a in stmt.names)):
            found = stmt
    return found


def _binds(stmt, name: str) -> bool:
    """``name = ...`` or ``name: T = ...``."""
    targets = (stmt.targets if isinstance(stmt, ast.Assign)
               else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
    return any(isinstance(t, ast.Name) and t.id == name for t in targets)


def _resolve_name(mod: tuple[str, Path], name: str):
    """The class that ``name`` denotes at the top level of module ``mod``: (mod, ClassDef) or
    ``_BASE_MODEL``; follows ``from .x import Y`` (and re-exports) within kif."""
    stmt = _binding(_tree(mod[1]).body, name)
    if isinstance(stmt, ast.ClassDef):
        return mod, stmt
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        return _resolve_expr(mod, stmt.value)
    if isinstance(stmt, ast.ImportFrom):
        imported = next(a.name for a in stmt.names if (a.asname or a.name) == name)
        if stmt.level == 0 and stmt.module == "pydantic" and imported == "BaseModel":
            return _BASE_MODEL
        return _resolve_name(_module(mod, stmt), imported)
    raise _Unresolved(f"{mod[0]}.{name}")


def _module(mod: tuple[str, Path], stmt: ast.ImportFrom) -> tuple[str, Path]:
    """The kif module a ``from ... import`` names, with its file."""
    package = mod[0] if mod[1].name == "__init__.py" else mod[0].rpartition(".")[0]
    if stmt.level:
        base = package.split(".")[:len(package.split(".")) - (stmt.level - 1)]
        dotted = ".".join(base + ([stmt.module] if stmt.module else []))
    else:
        dotted = stmt.module or ""
    parts = dotted.split(".")
    if parts[0] != "kif" or len(parts) < 2:  # outside kif (or the kif package itself): not followed
        raise _Unresolved(dotted)
    folder = _KIF_ROOT.joinpath(*parts[1:])
    for path in (folder.with_suffix(".py"), folder / "__init__.py"):
        if path.is_file():
            return dotted, path
    raise _Unresolved(dotted)


def _resolve_expr(mod, expr):
    """A class named by ``Name`` or ``Class.Attribute`` (e.g. ``IncLoRA.Options``)."""
    if isinstance(expr, ast.Name):
        return _resolve_name(mod, expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _resolve_expr(mod, expr.value)
        if owner is _BASE_MODEL:
            raise _Unresolved(expr.attr)
        return _lookup(*owner, expr.attr)
    raise _Unresolved(ast.dump(expr))


def _lookup(mod, node: ast.ClassDef, attr: str):
    """Class attribute ``attr`` of a class, its bases searched left to right, depth first (Python's
    MRO unless two bases share an ancestor that defines it; the drift test checks every method)."""
    stmt = _binding(node.body, attr)
    if isinstance(stmt, ast.ClassDef):  # a nested class: its bases are read in module scope
        return mod, stmt
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        return _resolve_expr(mod, stmt.value)
    if stmt is not None:
        raise _Unresolved(attr)
    for base in node.bases:
        owner = _resolve_expr(mod, base)
        if owner is not _BASE_MODEL:
            try:
                return _lookup(*owner, attr)
            except _Missing:
                continue
    raise _Missing(attr)


def _fields(cls) -> tuple[set[str], bool]:
    """(field names and aliases, whether ``extra='forbid'``) of an options class and its bases."""
    if cls is _BASE_MODEL:
        return set(), False
    mod, node = cls
    fields, forbids = set(), False
    for base in node.bases:
        base_fields, base_forbids = _fields(_resolve_expr(mod, base))
        fields |= base_fields
        forbids |= base_forbids
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            if name == "model_config" or name.startswith("_") or "ClassVar" in ast.unparse(stmt.annotation):
                continue  # pydantic: config, private attributes and class variables are no fields
            fields |= {name} | _aliases(stmt)
        elif isinstance(stmt, ast.Assign) and _binds(stmt, "model_config"):
            forbids = _forbids(stmt.value, forbids)
        elif isinstance(stmt, ast.FunctionDef) and (stmt.name == "__init__" or any(
                _dotted(d).endswith("model_validator") and ("before" in (u := ast.unparse(d)) or "wrap" in u)
                for d in stmt.decorator_list)):
            raise _Unresolved(stmt.name)  # may accept or rename keys the fields do not show
    return fields, forbids


def _aliases(stmt: ast.AnnAssign) -> set[str]:
    """``Field(alias="x")`` / ``validation_alias="x"`` anywhere in the field's declaration."""
    out = set()
    for call in ast.walk(stmt):
        if isinstance(call, ast.Call) and _dotted(call).endswith("Field"):
            for kw in call.keywords:
                if kw.arg in ("alias", "validation_alias"):
                    if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
                        raise _Unresolved(kw.arg)  # AliasChoices, AliasPath, a variable
                    out.add(kw.value.value)
    return out


def _forbids(value, inherited: bool) -> bool:
    """Whether ``model_config = ConfigDict(...)`` leaves unknown keys errors."""
    if not (isinstance(value, ast.Call) and _dotted(value).endswith("ConfigDict") and not value.args):
        raise _Unresolved("model_config")
    forbids = inherited
    for kw in value.keywords:
        if kw.arg == "extra":
            if not (isinstance(kw.value, ast.Constant) and kw.value.value == "forbid"):
                raise _Unresolved("model_config.extra")
            forbids = True
        elif kw.arg in (None, "alias_generator"):
            raise _Unresolved("model_config")
    return forbids
