"""Restormer (Zamir et al., CVPR 2022): the transformer U-Net PromptIR and PIP build on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.norm import NormKind
from ..layers.stage import Stage
from ..layers.transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample
from ._base import RestorationModel
from ._registry import register_architecture, register_model

__all__ = ["Restormer", "RestormerEncoderMixin", "restormer", "restormer_biasfree"]


def transformer_stage(
    dim: int, num_heads: int, depth: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: NormKind
) -> Stage:
    """``depth`` transformer blocks in a row (one U-Net level)."""
    return Stage(
        *[TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(depth)]
    )


class RestormerEncoderMixin(RestorationModel):
    """The encoder and latent of Restormer, shared by Restormer, PromptIR and PIP-Restormer.

    Builds ``patch_embed``, ``encoder_level1..3``, ``down1_2``, ``down2_3``, ``down3_4`` and
    ``latent`` with the official names; channels are ``dim``, ``2 dim``, ``4 dim``, ``8 dim``.
    """

    def _build_encoder(
        self,
        in_channels: int,
        dim: int,
        num_blocks: Sequence[int],
        heads: Sequence[int],
        ffn_expansion_factor: float,
        bias: bool,
        layer_norm_type: NormKind,
    ) -> None:
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, bias)
        self.encoder_level1 = transformer_stage(dim, heads[0], num_blocks[0], *args)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = transformer_stage(dim * 2, heads[1], num_blocks[1], *args)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = transformer_stage(dim * 4, heads[2], num_blocks[2], *args)
        self.down3_4 = Downsample(dim * 4)
        self.latent = transformer_stage(dim * 8, heads[3], num_blocks[3], *args)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the three skip features and the latent."""
        e1 = self.encoder_level1(self.patch_embed(x))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        latent = self.latent(self.down3_4(e3))
        return e1, e2, e3, latent


@register_architecture
class Restormer(RestormerEncoderMixin):
    """Restormer: a four-level transformer U-Net with MDTA attention and GDFN feed-forward blocks.

    Defaults are the official configuration (26,126,644 parameters). Any ``H, W >= 1``
    works: the input is reflect-padded to a multiple of 8 and the output cropped back.
    The output is ``output(features) + input`` (a global residual) when the input and
    output channel counts are equal.

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level (doubled at each level).
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"`` (Gaussian denoising models).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> net(torch.rand(1, 3, 13, 21)).shape
        torch.Size([1, 3, 13, 21])
    """

    pad_multiple = 8

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, dim=dim, num_blocks=list(num_blocks),
            num_refinement_blocks=num_refinement_blocks, heads=list(heads),
            ffn_expansion_factor=ffn_expansion_factor, bias=bias, layer_norm_type=layer_norm_type,
        )  # fmt: skip
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = transformer_stage(dim * 4, heads[2], num_blocks[2], *args)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = transformer_stage(dim * 2, heads[1], num_blocks[1], *args)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = transformer_stage(dim * 2, heads[0], num_blocks[0], *args)
        self.refinement = transformer_stage(dim * 2, heads[0], num_refinement_blocks, *args)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        e1, e2, e3, latent = self._encode(inp)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), e3], 1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1))
        out = self.output(self.refinement(d1))
        if self.in_channels == self.out_channels:
            out = out + inp
        return self._crop(out, size)


@register_model
def restormer(**kwargs: Any) -> Restormer:
    """Restormer, official configuration (WithBias LayerNorm; 26,126,644 parameters)."""
    return Restormer(**kwargs)


@register_model
def restormer_biasfree(**kwargs: Any) -> Restormer:
    """Restormer with BiasFree LayerNorm, as for Gaussian denoising (26,111,668 parameters)."""
    return Restormer(**{"layer_norm_type": "BiasFree", **kwargs})
