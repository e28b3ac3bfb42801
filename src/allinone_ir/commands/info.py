"""``allinone-ir info``: parameters, FLOPs at a given size (torch's flop counter) and latency.

The latency is that of :func:`allinone_ir.restore` with the given options, i.e. the default fast
path (channels-last weights on CPU and CUDA) that ``allinone-ir restore`` uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from .restore import add_model_arguments, load_model_from_args

__all__ = ["add_parser", "count_flops", "measure_latency", "run"]


_DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info",
        help="parameters, FLOPs and latency of a network",
        description="Parameters, FLOPs and the latency of restore() on the default fast path.",
    )
    add_model_arguments(p)
    p.add_argument("--size", type=int, nargs="+", default=[256], metavar="PX", help="H [W] (default 256)")
    p.add_argument("--runs", type=int, default=3, help="timed forward passes for the latency (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the latency")
    p.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="fp32", help="compute dtype (bf16/fp16: autocast)"
    )
    p.add_argument("--compile", action="store_true", help="time the torch.compile'd network")
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


def measure_latency(
    model: Any,
    size: tuple[int, int],
    runs: int,
    device: Any,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    compile: bool = False,
) -> float:
    """Median seconds of :func:`allinone_ir.restore` on a random ``(1, C, H, W)`` image (after one warm-up).

    This is the path users get: the network is prepared for ``device`` (channels-last weights on
    CPU and CUDA) and run under ``torch.no_grad`` in eval mode, with autocast for a low ``dtype``.

    Args:
        model: The network.
        size: ``(H, W)``.
        runs: Timed calls.
        device: Where to run.
        in_channels: Image channels.
        dtype: ``None`` (float32) or the autocast dtype.
        compile: Time the ``torch.compile``'d network (the warm-up call compiles).

    Returns:
        The median seconds per call.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> measure_latency(net, (16, 16), 1, "cpu") > 0
        True
    """
    import torch

    from ..inference import restore

    dev = torch.device(device)
    x = torch.rand(1, in_channels, *size, device=dev)

    def call() -> None:
        restore(model, x, device=dev, dtype=dtype, compile=compile, clamp=False, progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    """Print parameters, FLOPs and latency. Returns the exit status."""
    import torch

    try:
        model = load_model_from_args(args, require_weights=False)
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
        from ..inference import prefers_channels_last

        dtype = getattr(torch, _DTYPES[args.dtype]) if _DTYPES[args.dtype] else None
        dev = torch.device(args.device)
        latency = measure_latency(model, size, args.runs, dev, in_ch, dtype=dtype, compile=args.compile)
        layout = "channels-last" if prefers_channels_last(dev) else "NCHW"
        how = f"{args.dtype}, {layout}" + (", compiled" if args.compile else "")
        print(
            f"latency       {latency * 1000:.1f} ms on {args.device} ({how}; restore(), median of {args.runs})"
        )
    return 0
