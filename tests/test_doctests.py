"""Run the docstring examples of every module of the package (they are part of the documentation)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import allinone_ir


def _module_names() -> list[str]:
    names = [allinone_ir.__name__]
    for info in pkgutil.walk_packages(allinone_ir.__path__, prefix="allinone_ir."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


MODULES = _module_names()


def test_every_subpackage_is_walked() -> None:
    # the walk must reach nested modules, or the doctests below silently cover less
    for expected in ("allinone_ir.io", "allinone_ir.layers.attention", "allinone_ir.models.promptir",
                     "allinone_ir.assets", "allinone_ir.cli"):  # fmt: skip
        assert expected in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(name)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    torch.manual_seed(0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags, verbose=False)  # not "-v" in sys.argv: pytest -v
    out: list[str] = []
    for test in finder.find(
        module, name, globs={**vars(module), "torch": torch}
    ):  # only objects defined in `module`
        runner.run(test, out=out.append)
    if out:
        pytest.fail("".join(out), pytrace=False)
