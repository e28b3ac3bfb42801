"""Layer normalisation over the channel axis of NCHW feature maps.

The statistics are computed on a channels-last *view* of the input
(``x.permute(0, 2, 3, 1)``): for a tensor stored in ``torch.channels_last``
memory format that view is contiguous, so no copy is made, and for an NCHW
contiguous tensor it costs one copy instead of the two ``rearrange`` round trips
of the reference implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "RestormerLayerNorm", "layer_norm_2d", "norm_conv1x1", "norms_fusable"]

NormKind = Literal["WithBias", "BiasFree"]


def layer_norm_2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise an NCHW map over its channels at every pixel.

    With ``bias`` given this is the usual layer norm
    ``(x - mean) / sqrt(var + eps) * weight + bias``. With ``bias=None`` it is the
    *bias-free* kind of Restormer: ``x / sqrt(var + eps) * weight`` where the mean
    is used for the (biased) variance but **not** subtracted from ``x``.

    Args:
        x: Feature map.
        weight: Per-channel scale.
        bias: Per-channel shift, or ``None`` for the bias-free kind.
        eps: Added to the variance.

    Returns:
        The normalised map, in the memory format of ``x``.

    Shape:
        - x: :math:`(N, C, H, W)`
        - weight, bias: :math:`(C,)`
        - output: :math:`(N, C, H, W)`
    """
    if x.dtype in (torch.bfloat16, torch.float16) and _autocast_state(x.device.type)[0]:
        # Autocast would run layer_norm in fp32: two full-size casts per norm. The kernel accumulates its
        # statistics in fp32 for half inputs anyway, so normalise in the input's dtype.
        with torch.autocast(x.device.type, enabled=False):
            return layer_norm_2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), eps)
    xp = x.permute(0, 2, 3, 1)  # (N, H, W, C); a free view for channels-last storage
    if bias is not None:
        out = F.layer_norm(xp, (xp.shape[-1],), weight, bias, eps)
    else:
        stats = xp if xp.dtype in (torch.float32, torch.float64) else xp.float()
        var = stats.var(dim=-1, keepdim=True, unbiased=False)
        out = (xp * torch.rsqrt(var + eps).to(xp.dtype)) * weight.to(xp.dtype)
    return out.permute(0, 3, 1, 2)


class LayerNorm2d(nn.Module):
    """Layer normalisation over channels of an NCHW map (NAFNet / Restormer style).

    Args:
        num_channels: Number of channels ``C``.
        bias: ``True`` for the with-bias kind (subtract mean, learnable shift),
            ``False`` for the bias-free kind of Restormer (no mean subtraction,
            no shift).
        eps: Added to the variance (``1e-5`` in Restormer, ``1e-6`` in NAFNet).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`, same memory format as the input.

    Examples:
        >>> norm = LayerNorm2d(8)
        >>> norm(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, num_channels: int, *, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    #: Normalise in float32 under bf16/fp16 autocast (a float32 copy of the input, float32 output), as
    #: autocast itself would, instead of normalising a low-precision map in its own dtype (the fast path,
    #: which saves two full-size casts per norm). :func:`allinone_ir.inference.low_precision_policy` sets it
    #: for the latent level, where the fast path moved a trained PromptIR's output most.
    float32: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32 and _autocast_state(x.device.type)[0]:
            with torch.autocast(x.device.type, enabled=False):
                bias = None if self.bias is None else self.bias.float()
                return layer_norm_2d(x.float(), self.weight.float(), bias, self.eps)
        return layer_norm_2d(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, bias={self.bias is not None}, eps={self.eps}"


class RestormerLayerNorm(nn.Module):
    """Restormer's channel layer norm, keeping the official ``body.weight`` key names.

    A thin wrapper around :class:`LayerNorm2d` whose only job is to place the
    parameters at ``<name>.body.weight`` / ``<name>.body.bias`` as in the official
    Restormer, PromptIR and PIP checkpoints.

    Args:
        dim: Number of channels.
        kind: ``"WithBias"`` or ``"BiasFree"`` (the official ``LayerNorm_type``).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`
    """

    def __init__(self, dim: int, kind: NormKind = "WithBias") -> None:
        super().__init__()
        if kind not in ("WithBias", "BiasFree"):
            raise ValueError(f"LayerNorm kind must be 'WithBias' or 'BiasFree', got {kind!r}")
        self.body = LayerNorm2d(dim, bias=kind == "WithBias", eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except RuntimeError:  # "meta" and other device types without autocast
        return False, torch.float32


class _NormConv1x1(torch.autograd.Function):
    """``conv1x1(layer_norm_2d(x), w_i, b_i)`` for several weights, saving ``x`` instead of the normalised map.

    The normalised map is what the 1x1 convolutions would save for their weight gradients; it is
    recomputed in the backward pass (one cheap normalisation) instead of being stored: one
    activation of the block's width less per norm.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, nw: torch.Tensor, nb: torch.Tensor | None, eps: float,
                *wb: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # fmt: skip
        ctx.eps = eps
        ctx.device_type = x.device.type
        ctx.autocast = _autocast_state(x.device.type)
        ctx.has_bias = [b is not None for b in wb[1::2]]
        ln = layer_norm_2d(x, nw, nb, eps)
        outs = tuple(F.conv2d(ln, w, b) for w, b in zip(wb[0::2], wb[1::2], strict=True))
        ctx.conv_dtype = outs[0].dtype
        ctx.save_for_backward(x, nw, nb, *wb)
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        x, nw, nb, *wb = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        cast = torch.autocast(ctx.device_type, dtype=dtype) if enabled else nullcontext()
        needs = ctx.needs_input_grad
        with torch.enable_grad(), cast:
            inputs = [t.detach().requires_grad_(bool(n)) if t is not None else None
                      for t, n in zip((x, nw, nb), needs[:3])]  # fmt: skip
            ln = layer_norm_2d(inputs[0], inputs[1], inputs[2], ctx.eps)
        dt = ctx.conv_dtype
        ln_c = ln.detach().to(dt)
        grad_ln: torch.Tensor | None = None
        grad_wb: list[torch.Tensor | None] = []
        for i, (grad, has_bias) in enumerate(zip(grads, ctx.has_bias, strict=True)):
            w, b = wb[2 * i], wb[2 * i + 1]
            if grad is None:
                grad_wb += [None, None]
                continue
            mask = [True, bool(needs[4 + 2 * i]), has_bias and bool(needs[5 + 2 * i])]
            gi, gw, gb = torch.ops.aten.convolution_backward(
                grad.to(dt), ln_c, w.to(dt), [w.shape[0]] if has_bias else None,
                [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask,
            )  # fmt: skip
            grad_ln = gi if grad_ln is None else grad_ln + gi
            grad_wb += [None if gw is None else gw.to(w.dtype), None if gb is None else gb.to(b.dtype)]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        got = iter(torch.autograd.grad(ln, wanted, grad_ln.to(ln.dtype)) if wanted and grad_ln is not None
                   else [None] * len(wanted))  # fmt: skip
        grad_in = [next(got) if t is not None and t.requires_grad else None for t in inputs]
        return (*grad_in, None, *grad_wb)


def norms_fusable(norms: Sequence[nn.Module], *parts: nn.Module) -> bool:
    """Whether :func:`norm_conv1x1` may compute ``norms`` and the modules after them in one step.

    True when every norm is a stock :class:`RestormerLayerNorm` and no norm, norm body or part has a
    forward hook (a hook must see the module run, so the plain path is taken then).

    Args:
        norms: The layer norms to fuse.
        *parts: The modules whose weights the fused computation reads.

    Returns:
        Whether the fused path computes the same thing as calling the modules.

    Examples:
        >>> norm = RestormerLayerNorm(8)
        >>> norms_fusable([norm], nn.Conv2d(8, 8, 1))
        True
        >>> _ = norm.register_forward_hook(lambda *a: None)
        >>> norms_fusable([norm], nn.Conv2d(8, 8, 1))
        False
    """
    mods = [*norms, *(n.body for n in norms), *parts]
    return all(type(n) is RestormerLayerNorm for n in norms) and not any(
        m._forward_hooks or m._forward_pre_hooks for m in mods
    )


def norm_conv1x1(
    x: torch.Tensor,
    norm: LayerNorm2d,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Channel layer norm followed by several 1x1 convolutions of the normalised map.

    Equal to ``tuple(F.conv2d(norm(x), w, b) for w, b in zip(weights, biases))``. When gradients
    are recorded (eager training) the normalised map is not kept for the backward pass: it is
    recomputed there from ``x``, which the norm keeps anyway, so a transformer block stores one
    activation of its width less per norm. Under ``torch.compile`` the plain expression is
    traced (the compiler plans recomputation itself).

    Args:
        x: Feature map.
        norm: The layer norm (its weight, bias and eps are used).
        weights: 1x1 convolution weights ``(C_out_i, C, 1, 1)``.
        biases: Their biases (``None`` entries or ``None``: no bias).

    Returns:
        One output per weight, in the memory format of ``x`` and the weights.

    Shape:
        - x: :math:`(N, C, H, W)`
        - outputs: :math:`(N, C_{out,i}, H, W)`

    Examples:
        >>> norm, w = LayerNorm2d(4), torch.randn(6, 4, 1, 1)
        >>> x = torch.randn(2, 4, 3, 5)
        >>> torch.allclose(norm_conv1x1(x, norm, [w])[0], F.conv2d(norm(x), w), atol=1e-6)
        True
    """
    bs = list(biases) if biases is not None else [None] * len(weights)
    if len(bs) != len(weights) or not weights:
        raise ValueError(
            f"norm_conv1x1 needs one bias (or None) per weight, got {len(weights)} and {len(bs)}"
        )
    record = torch.is_grad_enabled() and (
        x.requires_grad
        or any(t is not None and t.requires_grad for t in (norm.weight, norm.bias, *weights, *bs))
    )
    if not record or torch.compiler.is_compiling() or getattr(norm, "float32", False):
        ln = norm(x)
        return tuple(F.conv2d(ln, w, b) for w, b in zip(weights, bs, strict=True))
    wb = [t for pair in zip(weights, bs, strict=True) for t in pair]
    return _NormConv1x1.apply(x, norm.weight, norm.bias, norm.eps, *wb)
