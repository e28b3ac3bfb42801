"""One error hierarchy: the library reports a user's mistake with an ``allinone_ir.errors`` class, never a bare builtin.

Each class also subclasses the builtin it stands for (``UsageError`` is a ``ValueError``,
``UsageTypeError`` a ``TypeError``), so ``except ValueError`` keeps working, while ``cli.main``
turns every one of them into one ``error: ...`` line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import allinone_ir
from allinone_ir.errors import AllInOneIRError, UnknownNameError, UsageError, UsageTypeError
from allinone_ir.metrics import get_protocol, psnr

SRC = Path(allinone_ir.__file__).parent
BARE = {"ValueError", "TypeError", "KeyError"}

#: (file, function) pairs allowed to raise a bare builtin: internal invariants a user cannot reach
#: as such, each with the reason.
ALLOWED = {
    # pypng's decoding problems; read_image turns them into an ImageReadError naming the file
    ("io.py", "_read_png16"),
    # the pretrained-weights table checks its own entries when the module is imported (a developer's
    # mistake in the table, not a user's)
    ("models/_weights.py", "__post_init__"),
    ("models/_weights.py", "register_weights"),
    ("models/_weights.py", "_register"),
}


def _bare_raises() -> list[str]:
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, rel: str) -> None:
            self.rel, self.names = rel, ["<module>"]

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.names.append(node.name)
            self.generic_visit(node)
            self.names.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Raise(self, node: ast.Raise) -> None:
            called = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if (
                isinstance(called, ast.Name)
                and called.id in BARE
                and (self.rel, self.names[-1]) not in ALLOWED
            ):
                found.append(f"{self.rel}:{node.lineno} ({self.names[-1]}): raise {called.id}")

    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        Visitor(rel).visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_bare_builtin_error_for_a_users_mistake() -> None:
    bare = _bare_raises()
    assert not bare, "use a class of allinone_ir.errors (UsageError, UsageTypeError, ...):\n" + "\n".join(
        bare
    )


def test_the_scan_sees_a_bare_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.py").write_text(
        "def f(x):\n    if x:\n        raise ValueError('x')\n    raise KeyError\n"
    )
    (tmp_path / "io.py").write_text("def _read_png16(p):\n    raise ValueError('allowed')\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    assert _bare_raises() == ["bad.py:3 (f): raise ValueError", "bad.py:4 (f): raise KeyError"]


@pytest.mark.parametrize(
    ("call", "cls", "builtin", "message"),
    [
        (lambda: allinone_ir.restore(torch_module(), [1.0]), UsageTypeError, TypeError, "image must be"),
        (lambda: get_protocol("nope"), UnknownNameError, ValueError, "unknown metric protocol"),
        (lambda: psnr(_t(1, 3, 4, 4), _t(1, 3, 4, 5)), UsageError, ValueError, "shapes differ"),
    ],
    ids=["restore-type", "protocol-name", "psnr-shape"],
)
def test_one_mistake_one_library_class(call, cls, builtin, message) -> None:
    with pytest.raises(cls, match=message) as info:
        call()
    assert isinstance(info.value, AllInOneIRError) and isinstance(info.value, builtin)


def torch_module():
    import torch

    return torch.nn.Conv2d(3, 3, 1)


def _t(*shape: int):
    import torch

    return torch.rand(*shape)
