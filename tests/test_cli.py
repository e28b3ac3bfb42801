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


def test_models_pattern_without_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "nafnet_width*"]) == 0
    assert capsys.readouterr().out.split() == ["nafnet_width32", "nafnet_width64"]
    assert main(["models", "transformer*"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no registered model matches 'transformer*'; the models are ")
    assert "promptir" in err and err.count("\n") == 1


def test_convert_bad_arguments_are_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.ckpt" in err and err.startswith("error: ")
    assert main(["convert", "a.ckpt", "b.safetensors", "--model-args", "[1, 2]"]) == 2
    assert capsys.readouterr().err.startswith("error: --model-args must be a JSON object")


def test_help_texts_name_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    for command, options in (
        ("restore", ["--random-weights", "--npz-dtype", "skipped FILE: reason"]),
        ("evaluate", ["--name-map REGEX REPLACEMENT", "--group-by {auto,folder,prefix,none}", "--skip-unpaired",
                      "--all-targets", "--degradation-from-group", "rain_clean-6.png"]),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for option in options:
            assert option in text, (command, option)
