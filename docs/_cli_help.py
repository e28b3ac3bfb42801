"""Write the ``--help`` text of every ``allinone-ir`` command into a Markdown page at build time."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path


def _help(argv: list[str]) -> str:
    from allinone_ir.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main(argv)
    return buf.getvalue().rstrip()


def write_cli_reference(path: str | Path) -> Path:
    """Write the help of ``allinone-ir`` and of each available sub-command to ``path``."""
    from allinone_ir.cli import COMMANDS, build_parser

    os.environ["COLUMNS"] = "100"  # stable line wrapping in argparse
    available = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    parts = ["## allinone-ir\n", "```text", _help(["--help"]), "```\n"]
    for name, (_module, text) in COMMANDS.items():
        parts.append(f"## allinone-ir {name}\n\n{text[0].upper() + text[1:]}.\n")
        if name in available:
            parts += ["```text", _help([name, "--help"]), "```\n"]
        else:
            parts.append("*(not available in this build)*\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
