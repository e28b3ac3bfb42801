"""Layer normalisation over the channels of NCHW maps, computed on a channels-last view."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

__all__ = ["LayerNorm2d", "RestormerLayerNorm"]

NormKind = Literal["WithBias", "BiasFree"]


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The layout of a 4-D map: ``torch.channels_last`` where its channels are adjacent in memory."""
    cl = x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1
    return torch.channels_last if cl else torch.contiguous_format


def in_layout_of(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout of ``ref`` (:func:`memory_format_of`), copied only if it is not."""
    return x.contiguous(memory_format=memory_format_of(ref))


def layer_norm_2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Normalise over the channels (``bias=None``: ``x / sqrt(var + eps) * weight``, in at least float32)."""
    xp = x.permute(0, 2, 3, 1)  # (N, H, W, C); a free view for channels-last storage
    if bias is not None:
        out = F.layer_norm(xp, (xp.shape[-1],), weight, bias, eps)
    else:
        xa = xp.to(torch.promote_types(xp.dtype, torch.float32))
        out = (xa * torch.rsqrt(xa.var(dim=-1, keepdim=True, unbiased=False) + eps) * weight).to(xp.dtype)
    return in_layout_of(out.permute(0, 3, 1, 2), x)


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of an NCHW map; ``bias=False``: Restormer's bias-free kind.

    Shape:
        - Input, output: :math:`(N, C, H, W)`, the output in the memory format of the input

    Examples:
        >>> LayerNorm2d(8)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, num_channels: int, *, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_2d(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, bias={self.bias is not None}, eps={self.eps}"


class RestormerLayerNorm(nn.Sequential):
    """Restormer's channel layer norm of ``kind`` ``"WithBias"`` or ``"BiasFree"``: a :class:`LayerNorm2d` at ``body``.

    Shape:
        - Input, output: :math:`(N, C, H, W)`
    """

    def __init__(self, dim: int, kind: NormKind = "WithBias") -> None:
        if kind not in ("WithBias", "BiasFree"):
            raise UsageError(f"LayerNorm kind must be 'WithBias' or 'BiasFree', got {kind!r}")
        super().__init__()
        self.body = LayerNorm2d(dim, bias=kind == "WithBias")
