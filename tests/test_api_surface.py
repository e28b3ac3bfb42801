"""The public surface is small and pinned (as kornia pins its API): every ``__all__`` in the package, counted."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import allinone_ir

SRC = Path(allinone_ir.__file__).parent
MAX_PUBLIC_NAMES = 150


def _all_lists() -> dict[str, list[str]]:
    """``{module: __all__}`` for every module of the package that declares one, read from the source."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and target.id == "__all__":
                parts = path.relative_to(SRC.parent).with_suffix("").parts
                module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                out[module] = list(ast.literal_eval(node.value))
    return out


def test_at_most_150_public_names() -> None:
    names = {name for names in _all_lists().values() for name in names}
    assert len(names) <= MAX_PUBLIC_NAMES, f"{len(names)} public names: {sorted(names)}"


def test_commands_export_only_add_parser() -> None:
    lists = _all_lists()
    extra = {
        m: [n for n in v if n != "add_parser"]
        for m, v in lists.items()
        if m.startswith("allinone_ir.commands.")
    }
    assert not {m: v for m, v in extra.items() if v}


def test_private_modules_declare_no_all() -> None:
    private = [m for m in _all_lists() if any(p.startswith("_") for p in m.split("."))]
    assert private == []


def test_every_listed_name_exists() -> None:
    missing = [
        f"{module}.{name}"
        for module, names in _all_lists().items()
        for name in names
        if not hasattr(importlib.import_module(module), name)
    ]
    assert missing == []


@pytest.mark.parametrize("name", allinone_ir.__all__)
def test_every_top_level_name_has_a_docstring(name: str) -> None:
    obj = getattr(allinone_ir, name)
    if name == "__version__":
        assert isinstance(obj, str) and obj
        return
    doc = inspect.getdoc(obj)
    assert doc and len(doc.split()) >= 5, f"allinone_ir.{name} needs a docstring"
