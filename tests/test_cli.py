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


@pytest.mark.parametrize("command", [None, *__import__("allinone_ir.cli", fromlist=["COMMANDS"]).COMMANDS])
def test_help_is_plain_text(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` (and the CLI page of the docs, made from it) shows no reST markup."""
    with pytest.raises(SystemExit):
        main(["--help"] if command is None else [command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: allinone-ir")
    for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", ":data:", ":doc:", "::\n"):
        assert markup not in out, (command, markup, out)


def test_train_help_reads_the_schema_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "'type: synthetic' takes clean_dir, tasks (e.g. '[noise_25, rain, haze]')" in out
    assert "Schema (YAML shown; TOML has the same tables):\n\n    model:" in out  # the literal block is kept
    assert "--config FILE|NAME" in out and "allinone-ir config list" in out
    assert max(len(line) for line in out.split("options:")[0].splitlines()) <= 110
