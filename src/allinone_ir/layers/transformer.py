"""Restormer's transformer block, patch embedding and resampling layers."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MDTA, low_precision_autocast
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm

__all__ = ["Downsample", "OverlapPatchEmbed", "TransformerBlock", "Upsample"]


class TransformerBlock(nn.Module):
    """Restormer transformer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``.

    Args:
        dim: Number of channels.
        num_heads: Attention heads (must divide ``dim``).
        ffn_expansion_factor: GDFN hidden width relative to ``dim``.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

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
    """Overlapping patch embedding: a 3x3 convolution ``in_channels -> embed_dim``.

    Args:
        in_channels: Image channels.
        embed_dim: Output channels.
        bias: Whether the convolution has a bias.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, C_{embed}, H, W)`
    """

    #: Run in float32 under bf16/fp16 autocast (the output, and so the residual stream it starts, stays
    #: float32). Set by the family's ``low_precision_flags``.
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
    """Halve the resolution, double the channels: 3x3 conv ``C -> C/2`` then PixelUnshuffle(2).

    Args:
        n_feat: Input channels ``C`` (even).

    Shape:
        - Input: :math:`(N, C, H, W)` with even ``H`` and ``W``
        - Output: :math:`(N, 2C, H/2, W/2)`
    """

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )


class Upsample(nn.Sequential):
    """Double the resolution, halve the channels: 3x3 conv ``C -> 2C`` then PixelShuffle(2).

    Args:
        n_feat: Input channels ``C`` (even).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C/2, 2H, 2W)`
    """

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )
