"""Gated-Dconv feed-forward network (GDFN) of Restormer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GDFN", "gelu_gate"]


class _GeluGate(torch.autograd.Function):
    """``gelu(a) * b`` that saves only ``a`` and ``b`` and recomputes ``gelu(a)`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return F.gelu(a) * b

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        a, b = ctx.saved_tensors
        grad_a = torch.ops.aten.gelu_backward(grad * b, a) if ctx.needs_input_grad[0] else None
        grad_b = grad * F.gelu(a) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def gelu_gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.gelu(a) * b``, keeping less memory for the backward pass.

    The plain expression keeps ``gelu(a)`` alive until the backward pass (the product needs it);
    this recomputes it there instead, which saves one hidden-width activation per GDFN when
    training at the cost of one extra GELU.

    Args:
        a: Gate input.
        b: Value, same shape as ``a``.

    Returns:
        ``gelu(a) * b``.

    Shape:
        - a, b: any, equal
        - output: same

    Examples:
        >>> a, b = torch.randn(2, 3), torch.randn(2, 3)
        >>> torch.allclose(gelu_gate(a, b), torch.nn.functional.gelu(a) * b)
        True
    """
    return _GeluGate.apply(a, b)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network.

    ``hidden = int(dim * ffn_expansion_factor)``; ``project_in`` (1x1, C->2*hidden),
    ``dwconv`` (depthwise 3x3), split in two halves ``x1, x2``, ``gelu(x1) * x2``,
    ``project_out`` (1x1, hidden->C).

    Args:
        dim: Number of channels ``C``.
        ffn_expansion_factor: Hidden width relative to ``dim`` (2.66 in Restormer).
        bias: Whether the convolutions have a bias.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> GDFN(16)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.hidden_features = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The two halves are computed by separate (sliced-weight) convolutions rather than chunked from one
        # output: a channel slice of a channels-last map is strided, and the GELU kernel runs several times
        # slower on it than on a dense tensor. Same arithmetic, same parameters, same saved activations.
        hidden = self.hidden_features
        w_in, w_dw = self.project_in.weight, self.dwconv.weight
        b_in, b_dw = self.project_in.bias, self.dwconv.bias
        x1 = F.conv2d(x, w_in[:hidden], None if b_in is None else b_in[:hidden])
        x1 = F.conv2d(x1, w_dw[:hidden], None if b_dw is None else b_dw[:hidden], padding=1, groups=hidden)
        x2 = F.conv2d(x, w_in[hidden:], None if b_in is None else b_in[hidden:])
        x2 = F.conv2d(x2, w_dw[hidden:], None if b_dw is None else b_dw[hidden:], padding=1, groups=hidden)
        if torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad):
            return self.project_out(gelu_gate(x1, x2))
        return self.project_out(F.gelu(x1).mul_(x2))
