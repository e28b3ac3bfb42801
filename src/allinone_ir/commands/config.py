"""``allinone-ir config list | show NAME``: the training configs shipped with the package."""

from __future__ import annotations

import argparse
import itertools
import sys
from importlib import resources
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser"]

_DESCRIPTION = (
    "Ready-made training configs (the networks' official recipes, a small rain + snow example): 'list' names "
    "them, 'show NAME' prints one (redirect it into a file to edit a copy), 'allinone-ir train --config NAME' "
    "uses one as is. Relative paths in a config are resolved against the working directory."
)
_SUFFIXES = (".yaml", ".yml", ".toml")
#: The header lines every shipped config starts with (how to use it), not its description.
_BOILERPLATE = ("Shipped with allinone-ir", "`allinone-ir config show", "paths below")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``config`` (with ``list`` and ``show``) on the ``allinone-ir`` dispatcher."""
    p = subparsers.add_parser(
        "config", help="list the shipped training configs, or print one", description=_DESCRIPTION
    )
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="name and describe the shipped configs").set_defaults(func=run)
    show = actions.add_parser(
        "show", help="print a shipped config (allinone-ir config show NAME > my.toml to edit a copy)"
    )
    show.add_argument("name", metavar="NAME", help="a shipped config's name (see allinone-ir config list)")
    show.set_defaults(func=run)


def _shipped_configs() -> dict[str, Path]:
    """The configs shipped with the package, by name (the file name without its extension)."""
    folder = resources.files("allinone_ir") / "configs"
    found = sorted(Path(str(p)) for p in folder.iterdir()) if folder.is_dir() else []
    return {p.stem: p for p in found if p.suffix in _SUFFIXES}


def _describe(path: Path) -> str:
    """The first line of a config's header comment that says what it is."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [line.lstrip("#").strip() for line in itertools.takewhile(lambda x: x.startswith("#"), lines)]
    return next((text for text in header if text and not text.startswith(_BOILERPLATE)), "")


def _shipped(name: str) -> Path | None:
    """The shipped config called ``name`` (with or without its extension), if any."""
    configs = _shipped_configs()
    return {**{p.name: p for p in configs.values()}, **configs}.get(name)


def _resolve_config(value: str) -> tuple[Path, bool]:
    """The file ``--config VALUE`` means (an existing path wins over a shipped config's name), and if shipped."""
    path = Path(value).expanduser()
    if path.exists():
        return path, False
    if (shipped := _shipped(value)) is not None:
        return shipped, True
    raise ConfigError(
        f"config file not found: {path}; give a config file or a shipped config's name "
        f"({', '.join(_shipped_configs()) or 'none'}; allinone-ir config list)"
    )


def run(args: argparse.Namespace) -> int:
    configs = _shipped_configs()
    if args.action == "show":
        if (path := _shipped(args.name)) is None:
            raise ConfigError(
                f"no shipped config named {args.name!r}; shipped: {', '.join(configs) or 'none'} "
                "(allinone-ir config list)"
            )
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return 0
    width = max(map(len, configs), default=0)
    for name, path in configs.items():
        print(f"{name:<{width}}  {path.suffix[1:].upper():<4}  {_describe(path)}".rstrip())
    print(
        "use one as is with `allinone-ir train --config NAME`, or edit a copy: "
        "`allinone-ir config show NAME > my.yaml` (my.toml for a TOML one)",
        file=sys.stderr,
    )
    return 0
