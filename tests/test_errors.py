"""The error types and the command line's one exit path (``allinone_ir.cli.main``)."""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys
import types
import warnings

import pytest

from allinone_ir import cli, errors
from allinone_ir.errors import (
    AllInOneIRError,
    CheckpointError,
    ConfigError,
    DatasetError,
    DownloadError,
    ImageReadError,
    MissingDependencyError,
    ModelArgumentError,
    TrainingDivergedError,
    UnknownNameError,
    UsageError,
    UsageTypeError,
    install_hint,
    require,
)

BUILTINS = {
    ConfigError: ValueError,
    CheckpointError: ValueError,
    DatasetError: ValueError,
    UsageError: ValueError,
    ImageReadError: OSError,
    DownloadError: OSError,
    TrainingDivergedError: RuntimeError,
    MissingDependencyError: ImportError,
    UnknownNameError: KeyError,
    ModelArgumentError: TypeError,
    UsageTypeError: TypeError,
}


def test_every_error_is_listed_here() -> None:
    defined = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, AllInOneIRError) and obj is not AllInOneIRError
    }
    assert defined == set(BUILTINS)


@pytest.mark.parametrize("cls", list(BUILTINS), ids=lambda c: c.__name__)
def test_each_error_is_ours_and_its_builtin(cls: type[Exception]) -> None:
    with pytest.raises(AllInOneIRError, match=r"^the message$"):
        raise cls("the message")
    with pytest.raises(BUILTINS[cls], match=r"^the message$"):  # older `except ValueError` still catches it
        raise cls("the message")


def test_unknown_name_error_is_also_a_value_error_and_prints_plainly() -> None:
    exc = UnknownNameError("unknown model 'x'. Known: a, b.")
    assert isinstance(exc, ValueError) and isinstance(exc, KeyError)
    assert str(exc) == "unknown model 'x'. Known: a, b."  # a plain KeyError would print the quoted repr
    assert pickle.loads(pickle.dumps(exc)).args == exc.args


def test_image_read_error_keeps_path_and_reason() -> None:
    exc = ImageReadError(
        "cannot read image file a.png: empty file (0 bytes)", path="a.png", reason="empty file (0 bytes)"
    )
    assert (exc.path, exc.reason, str(exc)) == (
        "a.png",
        "empty file (0 bytes)",
        "cannot read image file a.png: empty file (0 bytes)",
    )
    back = pickle.loads(pickle.dumps(exc))  # DataLoader workers send errors between processes
    assert (type(back), back.path, back.reason, str(back)) == (ImageReadError, exc.path, exc.reason, str(exc))
    assert ImageReadError("only a message").reason == "only a message"


def _fail_import(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Make ``importlib.import_module`` fail for ``missing`` modules (and their submodules)."""
    real = importlib.import_module

    def fake(name: str, package: str | None = None):
        if name.split(".")[0] in missing:
            raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}", name=name.split(".")[0])
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_require_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", extra="data", purpose="x").dumps([1]) == "[1]"
    _fail_import(monkeypatch, "PIL")
    with pytest.raises(MissingDependencyError) as info:
        require("PIL.Image", extra="data", purpose="reading image files")
    assert str(info.value) == "reading image files needs Pillow: pip install 'allinone-ir[data]'"
    assert (info.value.package, info.value.extra, info.value.name) == ("PIL", "data", "PIL")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_install_hint() -> None:
    assert install_hint("safetensors.torch") == "pip install 'allinone-ir[hub]'"
    assert install_hint("tqdm.auto") == "pip install 'allinone-ir[progress]'"
    assert install_hint("matplotlib") == "pip install 'allinone-ir[train]'"
    assert install_hint("onnxruntime") == "pip install 'allinone-ir[export]'"
    assert install_hint("cv2") == "pip install cv2"
    assert install_hint(None) == "pip install 'allinone-ir[all]'"


# --- cli.main: one exit path ---------------------------------------------------------------------------


@pytest.fixture
def fake_command(monkeypatch: pytest.MonkeyPatch):
    """Register an ``allinone-ir boom`` command whose body is the function given to the fixture."""
    module = types.ModuleType("fake_boom_command")
    body: dict[str, object] = {}

    def add_parser(sub: argparse._SubParsersAction) -> None:
        sub.add_parser("boom").set_defaults(func=lambda args: body["run"]())

    module.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_boom_command", module)
    monkeypatch.setitem(cli.COMMANDS, "boom", ("fake_boom_command", "raise something"))
    monkeypatch.delenv("ALLINONE_IR_TRACEBACK", raising=False)

    def set_body(fn) -> None:
        body["run"] = fn

    return set_body


def _raise(exc: BaseException):
    def run():
        raise exc

    return run


CASES = [
    (ConfigError("trainer.lr: expected a positive number, got -1"), 2, "error: trainer.lr: expected a positive number, got -1"),
    (CheckpointError("model.ckpt: 3 missing keys:\n  a\n  b"), 2, "error: model.ckpt: 3 missing keys: a b"),
    (DatasetError("2 degraded image(s) without a clean partner:\n  x\n  y"), 2, "error: 2 degraded image(s) without a clean partner: x y"),
    (UsageError("give --out DIR and/or --npz FILE"), 2, "error: give --out DIR and/or --npz FILE"),
    (ImageReadError("cannot read image file a.png: truncated"), 2, "error: cannot read image file a.png: truncated"),
    (TrainingDivergedError("loss is nan at step 12; last good checkpoint: step 10"), 1, "error: loss is nan at step 12; last good checkpoint: step 10"),
    (MissingDependencyError("safetensors files needs safetensors: pip install 'allinone-ir[hub]'"), 2, "error: safetensors files needs safetensors: pip install 'allinone-ir[hub]'"),
    (FileNotFoundError("no images found for 'in/*.png'"), 2, "error: no images found for 'in/*.png'"),
    (PermissionError(13, "Permission denied", "out/a.png"), 2, "error: Permission denied: out/a.png"),
    (ModuleNotFoundError("No module named 'safetensors'", name="safetensors"), 2,
     "error: safetensors is not installed (No module named 'safetensors'); pip install 'allinone-ir[hub]'"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "status", "line"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_main_turns_each_error_into_one_line(fake_command, capsys, exc, status, line) -> None:
    fake_command(_raise(exc))
    assert cli.main(["boom"]) == status
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_main_interrupt_and_traceback_switch(fake_command, capsys, monkeypatch) -> None:
    fake_command(_raise(KeyboardInterrupt()))
    assert cli.main(["boom"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    fake_command(_raise(DatasetError("bad pairs")))
    monkeypatch.setenv("ALLINONE_IR_TRACEBACK", "1")
    with pytest.raises(DatasetError, match="bad pairs"):
        cli.main(["boom"])


def test_main_lets_bugs_show_their_traceback(fake_command) -> None:
    fake_command(_raise(ZeroDivisionError("a bug")))  # not a user's mistake: not hidden
    with pytest.raises(ZeroDivisionError):
        cli.main(["boom"])


def test_main_warning_is_one_line_and_status_comes_back(fake_command, capsys) -> None:
    def run() -> int:
        warnings.warn("x.png: alpha\nchannel dropped", UserWarning, stacklevel=1)
        return 1

    fake_command(run)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err == "warning: x.png: alpha channel dropped\n"


def test_main_broken_pipe_is_quiet(fake_command, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)  # keep pytest's stdout
    fake_command(_raise(BrokenPipeError(32, "Broken pipe")))
    assert cli.main(["boom"]) == 141
    assert capsys.readouterr().err == ""


def test_command_whose_import_fails_names_the_extra(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.COMMANDS, "needs-yaml", ("fake_yaml_command", "a command needing PyYAML"))
    real = importlib.import_module

    def fake(name: str, package: str | None = None):
        if name == "fake_yaml_command":
            raise ModuleNotFoundError("No module named 'yaml'", name="yaml")
        return real(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", fake)
    assert cli.main(["needs-yaml"]) == 2
    assert capsys.readouterr().err == (
        "error: this command needs the optional package 'yaml': pip install 'allinone-ir[train]'\n"
    )


def test_missing_pillow_in_restore_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG not really")
    _fail_import(monkeypatch, "PIL")
    args = ["restore", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", "nafnet",
            "--random-weights", "--model-args", '{"width": 8, "enc_blk_nums": [1], "dec_blk_nums": [1]}']  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "error: reading and writing image files needs Pillow: pip install 'allinone-ir[data]'"
    assert not (tmp_path / "out").exists()
