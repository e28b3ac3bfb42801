"""``allinone-ir info``: parameters, FLOPs at a given size (torch's flop counter) and latency."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from .restore import add_model_arguments, load_model_from_args

__all__ = ["add_parser", "count_flops", "measure_latency", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``info`` sub-command."""
    p = subparsers.add_parser("info", help="parameters, FLOPs and latency of a network")
    add_model_arguments(p)
    p.add_argument("--size", type=int, nargs="+", default=[256], metavar="PX", help="H [W] (default 256)")
    p.add_argument("--runs", type=int, default=3, help="timed forward passes for the latency (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the latency")
    p.set_defaults(func=run)


def count_flops(model: Any, size: tuple[int, int], in_channels: int = 3) -> int:
    """Forward FLOPs of one ``(1, C, H, W)`` image, counted by ``torch.utils.flop_counter``.

    The count runs on the meta device (no computation); a multiply-add counts as 2 FLOPs,
    so the papers' MACs are about half of it.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> count_flops(net, (32, 32)) > 0
        True
    """
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import get_model_class

    cfg = getattr(model, "config", None)
    try:  # rebuild on the meta device: no memory, no computation
        with torch.device("meta"):
            meta = get_model_class(type(model).__name__)(**cfg)
    except (KeyError, TypeError):
        meta = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, in_channels, *size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return int(counter.get_total_flops())


def measure_latency(model: Any, size: tuple[int, int], runs: int, device: Any, in_channels: int = 3) -> float:
    """Median seconds of a forward pass on a random ``(1, C, H, W)`` image (after one warm-up)."""
    import torch

    x = torch.rand(1, in_channels, *size, device=device)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(runs):
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    """Print parameters, FLOPs and latency. Returns the exit status."""
    import torch

    try:
        model = load_model_from_args(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(args.size) not in (1, 2):
        print("error: --size takes H or H W", file=sys.stderr)
        return 2
    size = (args.size[0], args.size[-1])
    in_ch = int(getattr(model, "in_channels", 3))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = count_flops(model, size, in_ch)
    print(f"network       {type(model).__name__} ({getattr(model, 'model_name', '-')})")
    print(f"parameters    {params:,d} ({params / 1e6:.2f} M; trainable {trainable:,d})")
    print(
        f"FLOPs         {flops / 1e9:.2f} G at 1x{in_ch}x{size[0]}x{size[1]} (about {flops / 2e9:.2f} GMAC)"
    )
    if args.runs > 0:
        if args.threads:
            torch.set_num_threads(args.threads)
        latency = measure_latency(model, size, args.runs, torch.device(args.device), in_ch)
        print(f"latency       {latency * 1000:.1f} ms on {args.device} (median of {args.runs})")
    return 0
