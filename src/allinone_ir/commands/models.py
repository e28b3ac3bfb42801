"""``allinone-ir models``: list the registered networks with their parameter counts."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..models import create_model, list_models

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``models`` sub-command."""
    p = subparsers.add_parser("models", help="list the registered networks")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'nafnet*'")
    p.add_argument("--params", action="store_true", help="also build each network and count its parameters")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    names = list_models(args.pattern)
    if not names:
        raise UsageError(
            f"no registered model matches {args.pattern!r}; the models are {', '.join(list_models())}"
        )
    for name in names:
        if args.params:
            with torch.device("meta"):  # building on the meta device makes counting free
                n = sum(p.numel() for p in create_model(name).parameters())
            print(f"{name:28s} {n:>14,d}")
        else:
            print(name)
    return 0
