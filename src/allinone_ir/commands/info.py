"""``allinone-ir info``: parameters, FLOPs at a given size and the latency of :func:`allinone_ir.restore`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..profiling import count_flops, measure_latency
from ._common import DTYPE_NAMES, add_model_arguments, load_model_from_args, non_negative_int, positive_int

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info",
        help="parameters, FLOPs and latency of a network",
        description="Parameters, FLOPs and the latency of restore() on the default fast path.",
    )
    p.add_argument(
        "name", nargs="?", metavar="MODEL", help="a model name, checkpoint or save_pretrained folder"
    )
    add_model_arguments(p)
    p.add_argument(
        "--size",
        type=positive_int,
        nargs="+",
        default=[256],
        metavar="PX",
        help="H [W] (default 256)",
    )
    p.add_argument(
        "--runs", type=non_negative_int, default=3, help="timed forward passes for the latency (0: skip)"
    )
    p.add_argument("--threads", type=positive_int, help="torch CPU threads for the latency")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32", help="compute dtype (bf16/fp16: autocast)")
    p.add_argument("--compile", action="store_true", help="time the torch.compile'd network")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .._runtime import low_precision_dtype
    from ..inference import prefers_channels_last

    _resolve_positional(args)
    model = load_model_from_args(args, require_weights=False)
    if len(args.size) not in (1, 2):
        raise UsageError("--size takes H or H W")
    size = (args.size[0], args.size[-1])
    in_ch = int(getattr(model, "in_channels", 3))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = count_flops(model, size, in_ch)
    print(f"network       {type(model).__name__} ({getattr(model, 'model_name', '-')})")
    print(f"parameters    {params:,d} ({params / 1e6:.2f} M; trainable {trainable:,d})")
    print(f"FLOPs         {flops / 1e9:.2f} G at 1x{in_ch}x{size[0]}x{size[1]} ({flops / 2e9:.2f} GMAC)")
    if args.runs > 0:
        if args.threads:
            torch.set_num_threads(args.threads)
        dev = torch.device(args.device)
        dtype = low_precision_dtype(args.dtype)
        latency = measure_latency(model, size, args.runs, dev, in_ch, dtype=dtype, compile=args.compile)
        how = f"{args.dtype}, {'channels-last' if prefers_channels_last(dev) else 'NCHW'}"
        how += ", compiled" if args.compile else ""
        print(
            f"latency       {latency * 1000:.1f} ms on {args.device} ({how}; restore(), median of {args.runs})"
        )
    return 0


def _resolve_positional(args: argparse.Namespace) -> None:
    """Turn the positional ``MODEL`` into ``--model NAME|FOLDER``, ``--checkpoint FILE`` or ``--weights NAME``."""
    from ..models import list_models
    from ..models._registry import _unknown
    from ..weights import _is_weights_name

    if (name := args.name) is None:
        return
    if args.model or args.checkpoint:
        raise UsageError(f"give the network once: {name!r} or --model/--checkpoint, not both")
    if Path(name).is_dir():
        args.model = name
    elif Path(name).is_file():
        args.checkpoint = name
    elif _is_weights_name(name):  # registered pretrained weights, e.g. promptir.three_task
        args.weights = name
    else:
        names = list_models()
        exact = [n for n in names if n.lower() == name.lower()]
        found = exact or [n for n in names if n.startswith(name.lower())]
        if len(found) > 1:
            raise UsageError(
                f"{name!r} is not a registered model and matches several: {', '.join(found)}; give one of them"
            )
        if not found:
            raise UsageError(
                f"{_unknown('model', name, names)} Or give a checkpoint file or folder that exists."
            )
        args.model = found[0]
