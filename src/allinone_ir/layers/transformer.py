"""Restormer transformer block and the resampling layers of the Restormer U-Net."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MDTA, low_precision_autocast
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm, norm_conv1x1, norms_fusable

__all__ = ["Downsample", "OverlapPatchEmbed", "TransformerBlock", "Upsample", "restormer_block"]


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
        return restormer_block(x, self.norm1, self.attn, self.norm2, self.ffn)


def restormer_block(
    x: torch.Tensor, norm1: nn.Module, attn: nn.Module, norm2: nn.Module, ffn: nn.Module
) -> torch.Tensor:
    """``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``: the step of every Restormer-style block.

    With stock parts (:class:`MDTA`, :class:`GDFN`, norms accepted by :func:`norms_fusable`) each norm is
    computed together with the 1x1 convolution after it (:func:`norm_conv1x1`; in training the normalised
    maps are recomputed in backward); otherwise the modules are called. Same result either way.

    Shape:
        - x: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> b = TransformerBlock(8, num_heads=2)
        >>> x = torch.randn(1, 8, 5, 6)
        >>> torch.equal(restormer_block(x, b.norm1, b.attn, b.norm2, b.ffn), b(x))
        True
    """
    stock = type(attn) is MDTA and type(ffn) is GDFN
    if not (stock and norms_fusable((norm1, norm2), attn, attn.qkv, ffn)):
        x = x + attn(norm1(x))
        return x + ffn(norm2(x))
    (qkv,) = norm_conv1x1(x, norm1.body, [attn.qkv.weight], [attn.qkv.bias])
    x = x + attn.attend(qkv)
    x1, x2 = norm_conv1x1(x, norm2.body, *ffn.input_projections())
    return x + ffn.from_projections(x1, x2)


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

    def __init__(self, in_channels: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=bias)

    #: Run in float32 under bf16/fp16 autocast: rounding the image (8 mantissa bits, half an 8-bit grey
    #: level) and these weights moves the output most per FLOP; the convolution is tiny. The output stays
    #: float32, so the residual stream it starts stays float32 too (measured: most of what keeps bf16
    #: close to fp32). :func:`allinone_ir.inference.low_precision_policy` sets it.
    float32: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float32 and low_precision_autocast(x.device.type) is not None:
            with torch.autocast(x.device.type, enabled=False):
                return self.proj(x.float())
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv ``C -> C/2`` then PixelUnshuffle(2).

    Args:
        n_feat: Input channels ``C`` (must be even).

    Shape:
        - Input: :math:`(N, C, H, W)` with even ``H`` and ``W``
        - Output: :math:`(N, 2C, H/2, W/2)`
    """

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv ``C -> 2C`` then PixelShuffle(2).

    Args:
        n_feat: Input channels ``C`` (must be even).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C/2, 2H, 2W)`
    """

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
