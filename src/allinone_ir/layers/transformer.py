"""Restormer's transformer block, patch embedding and resampling layers."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MDTA, low_precision_autocast
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm

__all__ = ["Downsample", "OverlapPatchEmbed", "TransformerBlock", "Upsample"]


class TransformerBlock(nn.Module):
    """Restormer's block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))`` with :class:`MDTA` and :class:`GDFN`.

    Shape:
        - Input, output: :math:`(N, C, H, W)`

    Examples:
        >>> TransformerBlock(16, num_heads=2)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.norm1 = RestormerLayerNorm(dim, layer_norm_type)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """Restormer's patch embedding: a 3x3 convolution ``in_channels -> embed_dim`` at ``proj``."""

    #: Run in float32 under bf16/fp16 autocast (set by ``low_precision_flags``).
    float32: bool = False

    def __init__(self, in_channels: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32 and low_precision_autocast(x.device.type) is not None:
            with torch.autocast(x.device.type, enabled=False):
                return self.proj(x.float())
        return self.proj(x)


class Downsample(nn.Sequential):
    """``(N, C, H, W) -> (N, 2C, H/2, W/2)``: 3x3 conv ``C -> C/2`` then PixelUnshuffle(2) at ``body``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        conv = nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False)
        self.body = nn.Sequential(conv, nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """``(N, C, H, W) -> (N, C/2, 2H, 2W)``: 3x3 conv ``C -> 2C`` then PixelShuffle(2) at ``body``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))
