"""README.md as a user reads it: every Python snippet runs as written, every command it names parses.

Each ```python block runs on its own (a fresh namespace, a fresh empty folder), in the order of the
README, and what its comments promise is checked. Each ``allinone-ir ...`` command of the README (in
```bash blocks and in inline code) must name a real sub-command whose flags the parser accepts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from allinone_ir.cli import COMMANDS, build_parser
from allinone_ir.commands.config import _shipped_configs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the ```language fenced blocks of a Markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def cli_commands(text: str) -> list[list[str]]:
    """Every ``allinone-ir`` (or ``-m allinone_ir.cli``) command line of the README, as its arguments.

    Lines of ```bash blocks (comments stripped) and inline code spans are read; the arguments after
    the program are returned. The command-list span (``demo | train | ...``) and the ``COMMAND``
    placeholder are left out (tested apart).
    """
    lines = [ln for block in fenced_blocks(text, "bash") for ln in block.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    lines += re.findall(r"`([^`\n]*allinone-ir [^`\n]*)`", prose)
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:2] == ["git", "clone"]:  # `git clone .../allinone-ir && cd allinone-ir`: the folder
            continue
        if "allinone-ir" in words:
            args = words[words.index("allinone-ir") + 1 :]
        elif "allinone_ir.cli" in words:
            args = words[words.index("allinone_ir.cli") + 1 :]
        else:
            continue
        if "|" in args or (args and args[0] == "COMMAND"):
            continue
        found.append(args)
    return found


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_has_the_snippets_this_test_expects() -> None:
    snippets = fenced_blocks(_readme(), "python")
    assert len(snippets) == 3, "a snippet was added or removed: extend test_readme_python_snippet"
    assert len(cli_commands(_readme())) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2], ids=["quick_start", "pip_control", "restore_save_load"])
def test_readme_python_snippet(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh, empty folder: the snippet must create what it uses
    code = fenced_blocks(_readme(), "python")[index]
    ns: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index + 1}", "exec"), ns)
    if index == 0:  # the comments: 35,376,967 parameters, the same size out, the registry, a tiny model
        assert sum(p.numel() for p in ns["model"].parameters()) == 35_376_967
        assert tuple(ns["restored"].shape) == (1, 3, 50, 70)
        assert "promptir" in ns["list_models"]() and "nafnet" in ns["list_models"]()
        assert ns["tiny"].config["dim"] == 16
    elif index == 1:
        assert sum(p.numel() for p in ns["pip"].parameters()) == 27_394_619
        assert tuple(ns["y"].shape) == (1, 3, 50, 70) and tuple(ns["omega"].shape) == (1, 5)
        assert float(ns["omega"].sum()) == pytest.approx(1.0, abs=1e-5)
        assert tuple(ns["pip"].degradations) == ("noise", "rain", "haze", "blur", "lowlight")
    else:
        assert ns["big"].shape == (171, 256, 3)  # a path in: an (H, W, C) array out
        assert (tmp_path / "coffee_restored.png").is_file() and (tmp_path / "model.ckpt").is_file()
        assert {p.name for p in (tmp_path / "my_model").iterdir()} >= {"model.safetensors", "config.json"}
        assert type(ns["model"]).__name__ == "NAFNet" and ns["model"].config["width"] == 16
        x = torch.rand(1, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(ns["model"](x), ns["net"].eval()(x))  # the same weights after the round trip


def test_readme_commands_exist_and_parse() -> None:
    commands = cli_commands(_readme())
    named = {args[0] for args in commands}
    assert named <= set(COMMANDS), f"the README names unknown commands: {sorted(named - set(COMMANDS))}"
    assert {"demo", "train", "restore", "evaluate", "convert", "config"} <= named
    written: set[str] = set()
    for args in commands:
        if ">" in args:  # a shell redirection: the file the output goes to
            written.add(args[args.index(">") + 1])
            args = args[: args.index(">")]
        parser = build_parser([args[0]])
        try:
            parser.parse_args(args)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"README command 'allinone-ir {shlex.join(args)}' does not parse (exit {exc.code})")
        if "--config" in args:  # a shipped config's name, or a file the README wrote in an earlier line
            value = args[args.index("--config") + 1]
            assert value in _shipped_configs() or value in written, (
                f"README trains from {value!r}, which is neither a shipped config nor a file it wrote"
            )
        if args[:2] == ["config", "show"]:
            assert args[2] in _shipped_configs(), f"README shows {args[2]!r}, which is not a shipped config"


def test_readme_lists_every_command() -> None:
    listing = re.search(r"`allinone-ir ((?:[a-z]+ \| )+[a-z]+)`", _readme())
    assert listing is not None, "the README's list of commands (`allinone-ir demo | train | ...`) is gone"
    assert listing.group(1).split(" | ") == list(COMMANDS)


def test_cli_commands_reads_blocks_and_inline_code() -> None:
    text = (
        "Run `allinone-ir demo --smoke` or `allinone-ir COMMAND --help`.\n\n"
        "```bash\nallinone-ir restore --checkpoint m IMAGES/ --out r/   # comment\n"
        "torchrun --nproc_per_node 2 -m allinone_ir.cli train --config c.toml\npython -m pytest -q\n```\n"
    )
    assert cli_commands(text) == [
        ["restore", "--checkpoint", "m", "IMAGES/", "--out", "r/"],
        ["train", "--config", "c.toml"],
        ["demo", "--smoke"],
    ]
    assert fenced_blocks("```python\nx = 1\n```\ntext\n```python\ny = 2\n```\n", "python") == [
        "x = 1\n",
        "y = 2\n",
    ]


def test_install_is_from_a_clone_until_released() -> None:
    """The package is not on PyPI: every install command of the README and the docs works from a clone."""
    pages = [
        README,
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "docs" / "tutorials").glob("*.md")),
    ]
    for page in pages:
        for block in fenced_blocks(page.read_text(encoding="utf-8"), "bash"):
            for line in block.splitlines():
                assert not re.search(r"pip install ['\"]?allinone-ir", line), (
                    f"{page.name}: {line!r} (not released)"
                )
    install = _readme().split("## Install", 1)[1].split("\n## ", 1)[0]
    commands = fenced_blocks(install, "bash")[0]
    assert commands.startswith("git clone ") and 'pip install -e ".[all]"' in commands
    assert "pip install torch==2.13.0" in commands


def test_test_section_gives_a_fast_subset_and_ci_runs_everything() -> None:
    section = _readme().split("## Test", 1)[1].split("\n## ", 1)[0]
    lines = fenced_blocks(section, "bash")[0].splitlines()
    assert lines[0].startswith('python -m pytest -q -m "not slow"')
    assert lines[1].startswith("python -m pytest -q ") and "minutes" in lines[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest -q\n" in ci and "not slow" not in ci  # CI runs every test
