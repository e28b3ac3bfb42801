"""Where each public name is documented in the API reference.

A package such as ``allinone_ir.layers`` re-exports names from its submodules; each name is
documented once, on the page of the public module that defines it. Names defined in a private
module (``allinone_ir.models._registry``) are documented on the page of the nearest public
package (``allinone_ir.models``).
"""

from __future__ import annotations

from typing import Any

_current: list[str] = [""]


def public_owner(module: str) -> str:
    """``'a.b._c._d'`` -> ``'a.b'``: the module without its trailing private parts."""
    parts = module.split(".")
    while len(parts) > 1 and parts[-1].startswith("_"):
        parts.pop()
    return ".".join(parts)


def _remember_module(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what == "module":
        _current[0] = name


def _skip(app: Any, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    if what != "module":
        return None
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str) or not owner.startswith("allinone_ir"):
        return None
    return True if public_owner(owner) != _current[0] else None


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _remember_module)
    app.connect("autodoc-skip-member", _skip)
    return {"parallel_read_safe": False}
