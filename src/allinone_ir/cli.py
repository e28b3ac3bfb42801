"""The ``allinone-ir`` command line: imports only the sub-command used and turns every error into one line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from ._version import __version__
from .errors import AllInOneIRError, MissingDependencyError, TrainingDivergedError, install_hint

__all__ = ["build_parser", "main"]

#: sub-command name -> (module that implements it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("allinone_ir.commands.demo", "train a small model on the bundled photos and show the results"),
    "train": ("allinone_ir.commands.train", "train a network from a YAML/TOML config file"),
    "restore": ("allinone_ir.commands.restore", "restore images, folders or globs (tiling, TTA, npz export)"),
    "evaluate": ("allinone_ir.commands.evaluate", "PSNR/SSIM over paired folders, per degradation"),
    "benchmark": ("allinone_ir.commands.benchmark", "a paper's table on the standard test sets"),
    "info": ("allinone_ir.commands.info", "parameters, FLOPs and latency of a network"),
    "convert": ("allinone_ir.commands.convert", "convert an official checkpoint to safetensors"),
    "models": ("allinone_ir.commands.models", "list the registered networks"),
    "weights": ("allinone_ir.commands.weights", "list, download or import the official pretrained weights"),
    "config": ("allinone_ir.commands.config", "list the shipped training configs, or print one"),
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the argument parser; only the modules of ``commands`` (default: all available) are imported."""
    parser = argparse.ArgumentParser(prog="allinone-ir", description="All-in-one image restoration.")
    parser.add_argument("--version", action="version", version=f"allinone-ir {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands if commands is not None else COMMANDS:
        module_name, help_text = COMMANDS[name]
        try:
            importlib.import_module(module_name).add_parser(sub)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("allinone_ir"):
                continue  # command not part of this build
            missing = MissingDependencyError(
                f"this command needs the optional package {exc.name!r}: {install_hint(exc.name)}"
            )
            sub.add_parser(name, help=f"{help_text} (unavailable: {exc})").set_defaults(missing=missing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``allinone-ir``: errors become one ``error:`` line, warnings one ``warning:`` line (unless
    ``ALLINONE_IR_TRACEBACK=1``).

    Returns:
        0 on success, 1 when the command ran but something failed (files skipped, training
        diverged), 2 for a usage, input or configuration error, 130 when interrupted.

    Examples:
        >>> main(["models", "promptir"])
        promptir
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    traceback = bool(os.environ.get("ALLINONE_IR_TRACEBACK"))
    try:
        with warnings.catch_warnings():
            if not traceback:
                warnings.showwarning = _show_warning
            parser = build_parser([argv[0]] if argv and argv[0] in COMMANDS else None)
            args = parser.parse_args(argv)
            if getattr(args, "missing", None) is not None:
                raise args.missing
            if getattr(args, "func", None) is None:
                parser.print_help()
                return 0 if not argv else 2
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `allinone-ir models | head -1`: the reader left; not an error of ours
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (AllInOneIRError, OSError, ImportError) as exc:
        if traceback:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingDivergedError) else 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ImportError) and not isinstance(exc, MissingDependencyError):
        return f"{exc.name or 'a package'} is not installed ({exc}); {install_hint(exc.name)}"
    if isinstance(exc, OSError) and not isinstance(exc, AllInOneIRError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
