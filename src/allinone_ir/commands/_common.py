"""What the sub-commands share: the network options, option types, progress, JSON reports, help text."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AllInOneIRError, CheckpointError, UsageError

T = TypeVar("T")

#: Compute dtypes by option value (bf16/fp16 run under autocast).
DTYPE_NAMES: tuple[str, ...] = ("bf16", "fp16", "fp32")
#: The ``--overlap`` of tiles by default, in pixels.
DEFAULT_OVERLAP = 32


def add_model_arguments(p: argparse.ArgumentParser, *, random_weights_option: bool = False) -> None:
    """Add ``--model``, ``--checkpoint``, ``--weights``, ``--model-args``, ``--device`` (and ``--random-weights``)."""
    g = p.add_argument_group("network")
    g.add_argument(
        "--model", help="registered name or save_pretrained folder; with --checkpoint, the architecture"
    )
    g.add_argument("--checkpoint", help="weights: .ckpt/.pth, .safetensors or a save_pretrained folder")
    g.add_argument("--weights", metavar="NAME", help="official pretrained weights (allinone-ir weights)")
    g.add_argument("--model-args", help="JSON constructor overrides, e.g. '{\"dim\": 24}'")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if random_weights_option:
        g.add_argument("--random-weights", action="store_true", help="allow --model NAME untrained")


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--tile``, ``--overlap`` and ``--tta``, the options of :func:`~allinone_ir.inference.restore`."""
    p.add_argument("--tile", type=positive_int, help="tile size in pixels (default: whole images)")
    p.add_argument(
        "--overlap",
        type=non_negative_int,
        default=DEFAULT_OVERLAP,
        help=f"tile overlap in px (default: {DEFAULT_OVERLAP})",
    )
    p.add_argument(
        "--tta", nargs="?", const="x8", default=False, choices=("flip", "x8"), help="test-time augmentation"
    )


def restore_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~allinone_ir.inference.restore` arguments of the :func:`add_restore_arguments` options."""
    if args.tile is not None and args.overlap >= args.tile:
        default = " (the default)" if args.overlap == DEFAULT_OVERLAP else ""
        raise UsageError(f"--overlap {args.overlap}{default} must be smaller than --tile {args.tile}")
    return {"tile": args.tile, "overlap": args.overlap, "tta": args.tta}


def parse_model_args(text: str | None) -> dict[str, Any]:
    """The ``--model-args`` JSON object (``{}`` when not given); ``UsageError`` if it is not one."""
    try:
        overrides = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-args is not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(overrides, dict):
        raise UsageError(f"--model-args must be a JSON object such as '{{\"dim\": 24}}', got {text!r}")
    return overrides


def load_model_from_args(args: argparse.Namespace, *, require_weights: bool) -> Any:
    """The network the options of :func:`add_model_arguments` choose, in eval mode on ``--device``."""
    import torch

    from .._runtime import device_problem

    overrides = parse_model_args(args.model_args)
    if (model := _weights_model(args, overrides)) is None:
        model = _named_model(args, overrides, require_weights)
    if (problem := device_problem(args.device)) is not None:
        raise UsageError(f"--device {args.device}: {problem}")
    return model.to(torch.device(args.device)).eval()


def _weights_model(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The registered weights of ``--weights NAME`` (or ``--checkpoint NAME`` when no such file exists)."""
    from ..models._weights import get_weights, list_pretrained
    from ..weights import HF_PREFIX, _is_weights_name, load_pretrained

    if args.weights and args.checkpoint:
        raise UsageError("give --weights NAME or --checkpoint PATH, not both")
    if args.weights and Path(args.weights).exists() and args.weights not in list_pretrained():
        raise UsageError(
            f"--weights takes a registered name (see `allinone-ir weights`); pass the file or folder "
            f"{args.weights} as --checkpoint {args.weights}"
        )
    name = args.weights or args.checkpoint
    if not name or not (args.weights or _is_weights_name(name)):
        return None
    if overrides:
        raise UsageError(f"--weights {name} loads the released network as it is; drop --model-args")
    if args.model and not name.startswith(HF_PREFIX) and (arch := get_weights(name).arch) != args.model:
        raise UsageError(f"--weights {name} is a {arch} network, not --model {args.model}")
    return load_pretrained(name)


def _named_model(args: argparse.Namespace, overrides: dict[str, Any], require_weights: bool) -> Any:
    from ..hub import from_pretrained, load_checkpoint
    from ..models import create_model

    model_path = Path(args.model) if args.model else None
    try:
        if args.checkpoint:
            with architecture_flag(f"--model {args.model}"):
                return load_checkpoint(args.checkpoint, args.model, **overrides)
        if model_path is None:
            raise UsageError("give the network: --weights NAME, --checkpoint PATH or --model NAME|FOLDER")
        if model_path.is_dir():
            return from_pretrained(model_path)
        if model_path.is_file():
            raise UsageError(f"--model {args.model} is a file; pass weights as --checkpoint {args.model}")
        if os.sep in args.model or "/" in args.model:
            raise UsageError(f"--model {args.model}: no such folder (and not a registered model name)")
        if require_weights and not getattr(args, "random_weights", False):
            raise UsageError(
                f"--model {args.model} without --checkpoint would run the network with random weights; "
                "pass --checkpoint PATH (or a save_pretrained folder as --model), or --random-weights "
                "to run it untrained anyway"
            )
        model = create_model(args.model, **overrides)
    except AllInOneIRError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # unknown name, constructor arguments it does not take
        what = f"--model {args.model}" if args.model else f"--checkpoint {args.checkpoint}"
        raise UsageError(f"{what}: {exc}") from exc
    print(f"warning: {args.model} has random weights; pass --checkpoint for trained ones", file=sys.stderr)
    return model


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        with contextlib.suppress(ValueError):
            if int(text) >= low:
                return int(text)
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")

    return parse


#: Option types: an integer >= 1, an integer >= 0.
positive_int, non_negative_int = _at_least(1), _at_least(0)


def comma_list(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    """Option type: a comma-separated list of ``kind`` (empty items skipped)."""
    return lambda text: [kind(t) for t in text.split(",") if t]


def with_progress(
    items: list[T], *, quiet: bool, desc: str, unit: str
) -> tuple[Iterable[T], Callable[..., None]]:
    """``items`` with a progress bar (unless ``quiet``, one item or no tqdm), and a ``print`` that writes above it."""
    from .._runtime import progress_bar

    bar = None if quiet or len(items) <= 1 else progress_bar(items, desc=desc, unit=unit)
    return (items, print) if bar is None else (bar, bar.write)


@contextlib.contextmanager
def overwrite_flag(flag: str = "--overwrite") -> Iterator[None]:
    """Inside, a library refusal to replace a file says ``pass --overwrite``, not ``pass overwrite=True``."""
    try:
        yield
    except FileExistsError as exc:
        if "pass overwrite=True" not in str(exc) or exc.filename is not None:
            raise
        raise FileExistsError(str(exc).replace("pass overwrite=True", f"pass {flag}")) from exc


@contextlib.contextmanager
def architecture_flag(flag: str) -> Iterator[None]:
    """Inside, weights that do not fit the architecture named by ``flag`` say ``drop FLAG``, not ``arch=None``."""
    try:
        yield
    except CheckpointError as exc:
        if "Try arch=None to detect it." not in str(exc):
            raise
        raise CheckpointError(str(exc).replace("Try arch=None", f"Drop {flag}")) from exc


def check_parents(flag: str, text: str) -> None:
    """Refuse ``flag TEXT`` when a folder on its path is a file (making it would say only 'File exists')."""
    if blocker := next((p for p in Path(text).parents if p.is_file()), None):
        raise UsageError(f"{flag} {text}: {blocker} is a file, not a folder")


def new_json_path(text: str | None) -> Path | None:
    """The ``--json`` report file, refused before any work if it exists or cannot be made."""
    if text == "":
        raise UsageError("--json needs a file name, got ''")
    if text and Path(text).exists():
        raise FileExistsError(f"{Path(text)} exists; not overwritten (choose another --json file)")
    if text:
        check_parents("--json", text)
    return Path(text) if text else None


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON, atomically."""
    from ..io import atomic_write

    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _plain_text(text: str, width: int = 100) -> str:
    """A docstring's reST as plain terminal text: markup dropped, prose refilled, indented blocks kept."""

    def code(m: re.Match[str]) -> str:
        span = " ".join(m.group(1).split())
        return f"'{span}'" if " " in span and "'" not in span else span

    text = re.sub(
        r":[a-z]+:`(~?)([^`]+)`", lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text
    )
    text = re.sub(r"``(.+?)``", code, text, flags=re.S)
    text = re.sub(r"::$", ":", text, flags=re.M)
    return "\n\n".join(
        b
        if any(line.startswith(" ") for line in b.splitlines())
        else textwrap.fill(" ".join(b.split()), width)
        for b in text.strip("\n").split("\n\n")
    )
