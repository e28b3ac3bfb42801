"""What a network costs: FLOPs (torch's flop counter) and the latency of :func:`allinone_ir.restore`."""

from __future__ import annotations

import copy
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import UsageTypeError
from .inference import restore
from .models import get_model_class

__all__ = ["count_flops", "measure_latency"]


def count_flops(
    target: Callable[[], Any] | nn.Module, size: tuple[int, int] | None = None, in_channels: int = 3
) -> int:
    """FLOPs of one call of a function (a backward too), or of a network's forward pass on one image.

    Args:
        target: A function with no arguments, called once; or a network, counted on the ``meta`` device.
        size: ``(H, W)`` of the image; required for a network, not allowed for a function.

    Raises:
        UsageTypeError: If ``size`` is missing for a network, or given with a function.

    Examples:
        >>> count_flops(lambda: torch.ones(4, 8) @ torch.ones(8, 3))
        192
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> count_flops(net, (32, 32)) > 0
        True
    """
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(target, nn.Module):
        if size is None:
            raise UsageTypeError("count_flops(network, size): give the image size (H, W)")
        config: Any = getattr(target, "config", None)
        try:  # rebuilt on meta from its config (no memory), else a copy moved there
            with torch.device("meta"):
                meta = get_model_class(type(target).__name__)(**config)
        except (KeyError, TypeError):  # not registered, no config, or one its class does not take
            meta = copy.deepcopy(target).to("meta")
        x = torch.zeros(1, in_channels, *size, device="meta")
        meta.requires_grad_(False)  # FlopCounterMode cannot hook an output that is a view of a grad parameter
        call = torch.no_grad()(lambda: meta(x))
    elif size is not None:
        raise UsageTypeError("count_flops(fn): size is only for a network; the function is called as it is")
    else:
        call = target
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        call()
    return int(counter.get_total_flops())


def _conv_backward_flops(
    grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], *args: Any, **_: Any
) -> int:
    """Grad-input and grad-weight each cost the forward's multiply-adds (torch counts grouped ones as dense)."""
    from torch.utils.flop_counter import conv_flop_count

    transposed, output_mask = args[4], args[7]  # of aten.convolution_backward's arguments after the weight
    fwd = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def measure_latency(
    model: nn.Module,
    size: tuple[int, int],
    runs: int,
    device: str | torch.device,
    in_channels: int = 3,
    *,
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> float:
    """Median seconds of ``runs`` calls of :func:`allinone_ir.restore` on a random image of ``size`` (H, W)."""
    dev = torch.device(device)
    x = torch.rand(1, in_channels, *size, device=dev)

    def call() -> None:
        restore(model, x, device=dev, dtype=dtype, compile=compile, clamp=False, progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    call()
    return statistics.median(timeit.repeat(call, number=1, repeat=runs))
