"""``allinone-ir convert``: an official (or any readable) checkpoint in, safetensors out."""

from __future__ import annotations

import argparse
import json

from ..errors import AllInOneIRError, UsageError
from ._common import architecture_flag, check_parents, overwrite_flag, parse_model_args

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``convert`` sub-command."""
    p = subparsers.add_parser(
        "convert",
        help="convert an official checkpoint to safetensors",
        description="Read an official PromptIR .ckpt, Restormer/NAFNet .pth or our own file and write "
        "safetensors: a .safetensors file (config in its metadata) or a save_pretrained folder.",
    )
    p.add_argument("src", help="checkpoint to read")
    p.add_argument("dst", help="output .safetensors file or folder")
    p.add_argument("--arch", help="architecture name (default: detected from the weights)")
    p.add_argument("--model-args", help="JSON constructor overrides")
    p.add_argument("--protocol", default="promptir", help="metric protocol recorded in the config")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import convert_checkpoint, from_pretrained

    overrides = parse_model_args(args.model_args)
    check_parents("dst", args.dst)
    try:
        with overwrite_flag(), architecture_flag(f"--arch {args.arch}"):
            options = {k: getattr(args, k) for k in ("arch", "overwrite", "protocol")}
            out = convert_checkpoint(args.src, args.dst, **options, **overrides)
    except (AllInOneIRError, OSError):
        raise
    except (ValueError, TypeError, KeyError) as exc:  # unknown --arch, arguments the network does not take
        raise UsageError(f"cannot convert {args.src}: {exc}") from exc
    model = from_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {type(model).__name__}, {n:,d} parameters, config {json.dumps(model.config)}")
    return 0
