"""PromptIR (Potlapalli et al., NeurIPS 2023): Restormer with prompt blocks in the decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.norm import NormKind
from ..layers.promptir import PromptGenBlock
from ..layers.transformer import TransformerBlock, Upsample
from ._registry import register_architecture, register_model
from .restormer import RestormerEncoderMixin, transformer_stage

__all__ = ["PROMPTIR_UNUSED_MODULES", "PromptIR", "promptir"]

#: Modules the official PromptIR builds but never uses; their checkpoint keys are dropped on load.
PROMPTIR_UNUSED_MODULES: tuple[str, ...] = (
    "chnl_reduce1", "chnl_reduce2", "chnl_reduce3",
    "reduce_noise_channel_1", "reduce_noise_channel_2", "reduce_noise_channel_3",
)  # fmt: skip


@register_architecture
class PromptIR(RestormerEncoderMixin):
    """PromptIR: all-in-one restoration with prompt generation and interaction in the decoder.

    A Restormer encoder; at the latent and after decoder levels 3 and 2 a
    :class:`~allinone_ir.layers.PromptGenBlock` generates an input-conditioned prompt,
    which is concatenated to the feature, mixed by a transformer block
    (``noise_level*``) and reduced by a 1x1 convolution (``reduce_noise_level*``).
    Defaults are the official configuration (35,376,967 parameters; the six modules
    the official code builds but never uses are not built). State-dict keys equal
    the official ones, so official weights load after stripping the ``net.`` prefix.
    Any ``H, W >= 1`` works (reflect padding to a multiple of 8, output cropped back).

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level.
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        prompt_dims: Prompt channels at decoder levels 1, 2, 3.
        prompt_sizes: Spatial size of the prompt components at levels 1, 2, 3.
        prompt_len: Number of prompt components per level (the reports try 3 to 5).
        interaction_heads: Heads of the prompt-interaction transformer blocks
            (default ``heads[2]`` as in the official code).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = PromptIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
        ...                prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 2), prompt_len=3)
        >>> net(torch.rand(2, 3, 17, 30)).shape
        torch.Size([2, 3, 17, 30])
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
        prompt_dims: Sequence[int] = (64, 128, 320),
        prompt_sizes: Sequence[int] = (64, 32, 16),
        prompt_len: int = 5,
        interaction_heads: int | None = None,
    ) -> None:
        super().__init__()
        if len(prompt_dims) != 3 or len(prompt_sizes) != 3:
            raise ValueError(
                f"prompt_dims and prompt_sizes need 3 entries (levels 1-3), got {list(prompt_dims)}, "
                f"{list(prompt_sizes)}"
            )
        ih = heads[2] if interaction_heads is None else interaction_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, dim=dim, num_blocks=list(num_blocks),
            num_refinement_blocks=num_refinement_blocks, heads=list(heads),
            ffn_expansion_factor=ffn_expansion_factor, bias=bias, layer_norm_type=layer_norm_type,
            prompt_dims=list(prompt_dims), prompt_sizes=list(prompt_sizes), prompt_len=prompt_len,
            interaction_heads=interaction_heads,
        )  # fmt: skip
        args = (ffn_expansion_factor, bias, layer_norm_type)
        p1, p2, p3 = prompt_dims
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)

        self.prompt3 = PromptGenBlock(p3, prompt_len, prompt_sizes[2], dim * 8)
        self.noise_level3 = TransformerBlock(dim * 8 + p3, ih, *args)
        self.reduce_noise_level3 = nn.Conv2d(dim * 8 + p3, dim * 4, kernel_size=1, bias=bias)
        self.up4_3 = Upsample(dim * 4)
        self.reduce_chan_level3 = nn.Conv2d(dim * 6, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = transformer_stage(dim * 4, heads[2], num_blocks[2], *args)

        self.prompt2 = PromptGenBlock(p2, prompt_len, prompt_sizes[1], dim * 4)
        self.noise_level2 = TransformerBlock(dim * 4 + p2, ih, *args)
        self.reduce_noise_level2 = nn.Conv2d(dim * 4 + p2, dim * 4, kernel_size=1, bias=bias)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = transformer_stage(dim * 2, heads[1], num_blocks[1], *args)

        self.prompt1 = PromptGenBlock(p1, prompt_len, prompt_sizes[0], dim * 2)
        self.noise_level1 = TransformerBlock(dim * 2 + p1, ih, *args)
        self.reduce_noise_level1 = nn.Conv2d(dim * 2 + p1, dim * 2, kernel_size=1, bias=bias)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = transformer_stage(dim * 2, heads[0], num_blocks[0], *args)
        self.refinement = transformer_stage(dim * 2, heads[0], num_refinement_blocks, *args)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=bias)

    @staticmethod
    def _interact(x: torch.Tensor, prompt: nn.Module, block: nn.Module, reduce: nn.Module) -> torch.Tensor:
        return reduce(block(torch.cat([x, prompt(x)], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        e1, e2, e3, latent = self._encode(inp)
        latent = self._interact(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), e3], 1)))
        d3 = self._interact(d3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = self._interact(d2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1))
        out = self.output(self.refinement(d1))
        if self.in_channels == self.out_channels:
            out = out + inp
        return self._crop(out, size)


@register_model
def promptir(**kwargs: Any) -> PromptIR:
    """PromptIR, official all-in-one configuration (35,376,967 parameters)."""
    return PromptIR(**kwargs)
