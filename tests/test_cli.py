"""The ``allinone-ir`` command-line dispatcher."""

from __future__ import annotations

import pytest

from allinone_ir.cli import main


def test_models_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "promptir", "--params"]) == 0
    assert "35,376,967" in capsys.readouterr().out


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "allinone-ir" in capsys.readouterr().out
    assert main([]) == 0
    with pytest.raises(SystemExit):
        main(["no-such-command"])
