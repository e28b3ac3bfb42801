"""Gated-Dconv feed-forward network (GDFN) of Restormer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GDFN", "gelu_gate", "gelu_gate_conv1x1"]


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


def _conv_backward(
    grad: torch.Tensor,
    inp: torch.Tensor,
    weight: torch.Tensor,
    has_bias: bool,
    padding: int,
    groups: int,
    mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``F.conv2d(inp, weight, bias, padding=padding, groups=groups)`` (input, weight, bias)."""
    return torch.ops.aten.convolution_backward(
        grad, inp, weight, [weight.shape[0]] if has_bias else None, [1, 1], [padding, padding], [1, 1], False,
        [0, 0], groups, mask,
    )  # fmt: skip


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class _GatedDwProject(torch.autograd.Function):
    """GDFN after ``project_in``: depthwise 3x3 on both halves, ``gelu(a) * b``, 1x1 ``project_out``.

    Saves only the two ``project_in`` outputs; the depthwise outputs, ``gelu(a)`` and the gated map
    are recomputed in the backward pass (two depthwise convolutions and a GELU, all memory-bound and
    cheap next to the 1x1 convolutions), so the block stores two hidden-width maps instead of five.
    """

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None,
                w2: torch.Tensor, b2: torch.Tensor | None, w: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        hidden = x1.shape[1]
        a = F.conv2d(x1, w1, b1, padding=1, groups=hidden)
        b = F.conv2d(x2, w2, b2, padding=1, groups=hidden)
        out = F.conv2d(F.gelu(a).mul_(b), w, bias)
        ctx.dtypes = (a.dtype, out.dtype)
        ctx.save_for_backward(x1, x2, w1, b1, w2, b2, w, bias)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x1, x2, w1, b1, w2, b2, w, bias = ctx.saved_tensors
        dt_dw, dt_out = ctx.dtypes
        needs = ctx.needs_input_grad
        hidden = x1.shape[1]
        x1c, x2c, w1c, w2c = x1.to(dt_dw), x2.to(dt_dw), w1.to(dt_dw), w2.to(dt_dw)
        a = F.conv2d(x1c, w1c, _cast(b1, dt_dw), padding=1, groups=hidden)
        b = F.conv2d(x2c, w2c, _cast(b2, dt_dw), padding=1, groups=hidden)
        ga = F.gelu(a)
        gated = (ga * b).to(dt_out)
        mask = [any(needs[:6]), bool(needs[6]), bias is not None and bool(needs[7])]
        g_gated, g_w, g_bias = _conv_backward(
            grad.to(dt_out), gated, w.to(dt_out), bias is not None, 0, 1, mask
        )
        del gated
        grads: list[torch.Tensor | None] = [None] * 6
        if g_gated is not None:
            g_gated = g_gated.to(dt_dw)
            g_a = torch.ops.aten.gelu_backward(g_gated * b, a)
            del a, b
            g_b = g_gated.mul_(ga)
            del ga
            for k, (g, xc, wc, bb) in enumerate(((g_a, x1c, w1c, b1), (g_b, x2c, w2c, b2))):
                # inputs are (x1, x2, w1, b1, w2, b2, ...): x_k at k, w_k at 2 + 2k, b_k at 3 + 2k
                m = [bool(needs[k]), bool(needs[2 + 2 * k]), bb is not None and bool(needs[3 + 2 * k])]
                gi, gw, gb = _conv_backward(g, xc, wc, bb is not None, 1, hidden, m)
                grads[k] = _cast(gi, x1.dtype)
                grads[2 + 2 * k : 4 + 2 * k] = [_cast(gw, w1.dtype), _cast(gb, w1.dtype)]
        return (*grads, _cast(g_w, w.dtype), _cast(g_bias, w.dtype))


class _GeluGateConv1x1(torch.autograd.Function):
    """``conv1x1(gelu(a) * b, w, bias)`` saving ``a`` and ``b`` only; the gated map is recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        out = F.conv2d(F.gelu(a).mul_(b), w, bias)
        ctx.conv_dtype = out.dtype
        ctx.save_for_backward(a, b, w, bias)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b, w, bias = ctx.saved_tensors
        dt = ctx.conv_dtype
        ga = F.gelu(a)
        needs = ctx.needs_input_grad
        mask = [bool(needs[0] or needs[1]), bool(needs[2]), bias is not None and bool(needs[3])]
        g_gated, g_w, g_bias = _conv_backward(
            grad.to(dt), (ga * b).to(dt), w.to(dt), bias is not None, 0, 1, mask
        )
        grad_a = grad_b = None
        if g_gated is not None:
            g_gated = g_gated.to(a.dtype)
            grad_a = torch.ops.aten.gelu_backward(g_gated * b, a) if needs[0] else None
            grad_b = g_gated.mul_(ga) if needs[1] else None
        return grad_a, grad_b, _cast(g_w, w.dtype), _cast(g_bias, w.dtype)


def _records(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def gelu_gate_conv1x1(
    a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.conv2d(F.gelu(a) * b, weight, bias)`` (a 1x1 convolution of the gated map), lighter to train.

    When gradients are recorded (eager training), neither ``gelu(a)`` nor the gated map is kept for
    the backward pass: both are recomputed there from ``a`` and ``b`` (one GELU), which saves one
    hidden-width activation over :func:`gelu_gate` and two over the plain expression.
    Under ``torch.compile`` and without gradients the plain expression runs.

    Args:
        a: Gate input.
        b: Value, same shape as ``a``.
        weight: 1x1 convolution weight ``(C_out, C, 1, 1)``.
        bias: Its bias ``(C_out,)`` or ``None``.

    Returns:
        The convolution of the gated map.

    Shape:
        - a, b: :math:`(N, C, H, W)`
        - output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> a, b, w = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), torch.randn(2, 4, 1, 1)
        >>> torch.allclose(gelu_gate_conv1x1(a, b, w), F.conv2d(F.gelu(a) * b, w), atol=1e-6)
        True
    """
    record = _records(a, b, weight, bias)
    if record and not torch.compiler.is_compiling():
        return _GeluGateConv1x1.apply(a, b, weight, bias)
    if record:
        return F.conv2d(gelu_gate(a, b), weight, bias)
    return F.conv2d(F.gelu(a).mul_(b), weight, bias)


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

    def input_projections(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Weights and biases of the two halves of ``project_in`` (gate half first).

        The two halves are computed by separate (sliced-weight) convolutions rather than chunked from
        one output: a channel slice of a channels-last map is strided, and the GELU kernel runs several
        times slower on it than on a dense tensor. Same arithmetic, same parameters.
        """
        hidden = self.hidden_features
        w, b = self.project_in.weight, self.project_in.bias
        return [w[:hidden], w[hidden:]], [
            None if b is None else b[:hidden],
            None if b is None else b[hidden:],
        ]

    def from_projections(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The rest of the GDFN after ``project_in``: depthwise convolutions, gate and ``project_out``.

        Shape:
            - x1, x2: :math:`(N, hidden, H, W)` (the two halves of ``project_in``'s output)
            - output: :math:`(N, C, H, W)`
        """
        hidden = self.hidden_features
        w_dw, b_dw = self.dwconv.weight, self.dwconv.bias
        w1, w2 = w_dw[:hidden], w_dw[hidden:]
        b1, b2 = (None, None) if b_dw is None else (b_dw[:hidden], b_dw[hidden:])
        w, b = self.project_out.weight, self.project_out.bias
        if _records(x1, x2, w_dw, b_dw, w, b) and not torch.compiler.is_compiling():
            # training: only x1 and x2 are kept; the rest is recomputed in backward (_GatedDwProject)
            return _GatedDwProject.apply(x1, x2, w1, b1, w2, b2, w, b)
        x1 = F.conv2d(x1, w1, b1, padding=1, groups=hidden)
        x2 = F.conv2d(x2, w2, b2, padding=1, groups=hidden)
        return gelu_gate_conv1x1(x1, x2, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, biases = self.input_projections()
        return self.from_projections(*(F.conv2d(x, w, b) for w, b in zip(weights, biases, strict=True)))
