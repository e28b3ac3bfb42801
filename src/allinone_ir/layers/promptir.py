"""PromptIR's prompt generation and prompt interaction blocks (Potlapalli et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .norm import NormKind
from .transformer import TransformerBlock

__all__ = ["PromptGenBlock", "PromptInteraction"]


class PromptGenBlock(nn.Module):
    """Prompt generation block: an input-conditioned mixture of learnable prompt components.

    The feature map is pooled globally, a linear layer gives ``prompt_len`` logits,
    their softmax weights the ``prompt_len`` learnable components
    ``P_l \\in R^{C_p x S x S}``; the mixture is resized bilinearly to the
    feature's ``H x W`` and passed through a 3x3 convolution:

    .. math:: P = \\mathrm{conv}_{3\\times3}\\Big(\\mathrm{resize}\\big(\\textstyle\\sum_l
              \\mathrm{softmax}(W\\,\\mathrm{GAP}(F))_l\\, P_l\\big)\\Big)

    Args:
        prompt_dim: Channels ``C_p`` of the prompt.
        prompt_len: Number of prompt components ``L`` (5 in PromptIR).
        prompt_size: Spatial size ``S`` of each component.
        lin_dim: Channels of the input feature map.

    Shape:
        - Input: :math:`(N, C_{lin}, H, W)`
        - Output: :math:`(N, C_p, H, W)`

    Examples:
        >>> gen = PromptGenBlock(prompt_dim=8, prompt_len=3, prompt_size=4, lin_dim=16)
        >>> gen(torch.randn(2, 16, 10, 6)).shape
        torch.Size([2, 8, 10, 6])
    """

    def __init__(
        self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192
    ) -> None:
        super().__init__()
        if prompt_len < 1 or prompt_size < 1 or prompt_dim < 1:
            raise UsageError(
                f"PromptGenBlock needs positive prompt_dim, prompt_len and prompt_size, got "
                f"{prompt_dim}, {prompt_len}, {prompt_size}"
            )
        # Stored as (L, C, S, S) so that ``model.to(memory_format=torch.channels_last)`` works (it rejects
        # 5-D tensors); the state dict shows the official (1, L, C, S, S) shape and loads either shape.
        self.prompt_param = nn.Parameter(torch.rand(prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, stride=1, padding=1, bias=False)
        self.register_state_dict_post_hook(_prompt_to_official_shape)
        self.register_load_state_dict_pre_hook(_prompt_from_official_shape)

    def prompt_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights of the prompt components for each sample.

        Shape:
            - x: :math:`(N, C_{lin}, H, W)`
            - output: :math:`(N, L)`
        """
        emb = x.mean(dim=(-2, -1))
        return self.linear_layer(emb).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        weights = self.prompt_weights(x)
        components = self.prompt_param  # (L, C, S, S)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if x.shape[0] > components.shape[0]:
            # Resizing and the bias-free convolution are linear, so for batches larger than L it is cheaper
            # to resize and convolve the L components once and mix the results per sample.
            basis = F.interpolate(components, size=(h, w), mode="bilinear", align_corners=False)
            if channels_last:
                basis = basis.contiguous(memory_format=torch.channels_last)
            basis = self.conv3x3(basis)
            weights = weights.to(basis.dtype)
            if channels_last:  # mix on the (L, H*W*C) view of channels-last storage: no copy
                mixed = weights @ basis.permute(0, 2, 3, 1).reshape(basis.shape[0], -1)
                return mixed.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
            return (weights @ basis.reshape(basis.shape[0], -1)).reshape(x.shape[0], -1, h, w)
        prompt = torch.einsum("nl,lchw->nchw", weights.to(components.dtype), components)
        prompt = F.interpolate(prompt, size=(h, w), mode="bilinear", align_corners=False)
        if channels_last:
            prompt = prompt.contiguous(memory_format=torch.channels_last)
        return self.conv3x3(prompt)


def _prompt_to_official_shape(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    key = prefix + "prompt_param"
    if key in state_dict and state_dict[key].dim() == 4:
        state_dict[key] = state_dict[key].unsqueeze(0)


def _prompt_from_official_shape(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    key = prefix + "prompt_param"
    if key in state_dict and state_dict[key].dim() == 5 and state_dict[key].shape[0] == 1:
        state_dict[key] = state_dict[key][0]


class PromptInteraction(nn.Module):
    """Prompt interaction block: concatenate prompt and feature, transformer block, 1x1 reduction.

    :class:`~allinone_ir.models.PromptIR` runs this computation (:meth:`interact`) at each of its
    three prompt levels, on its modules under the official names ``noise_level{l}`` and
    ``reduce_noise_level{l}`` (so its checkpoints keep the official keys).

    Args:
        feature_dim: Channels of the feature map.
        prompt_dim: Channels of the prompt.
        out_dim: Channels after the 1x1 reduction (defaults to ``feature_dim``).
        num_heads: Heads of the transformer block (must divide ``feature_dim + prompt_dim``).
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - prompt: :math:`(N, C_p, H, W)`
        - output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> block = PromptInteraction(feature_dim=16, prompt_dim=8, num_heads=2)
        >>> block(torch.randn(1, 16, 6, 6), torch.randn(1, 8, 6, 6)).shape
        torch.Size([1, 16, 6, 6])
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        out_dim: int | None = None,
        num_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        joint = feature_dim + prompt_dim
        self.transformer = TransformerBlock(joint, num_heads, ffn_expansion_factor, bias, layer_norm_type)
        self.reduce = nn.Conv2d(joint, out_dim or feature_dim, kernel_size=1, bias=bias)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.interact(feature, prompt, self.transformer, self.reduce)

    @staticmethod
    def interact(
        feature: torch.Tensor, prompt: torch.Tensor, transformer: nn.Module, reduce: nn.Module
    ) -> torch.Tensor:
        """The block's computation with the given modules: ``reduce(transformer(cat[feature, prompt]))``.

        :class:`~allinone_ir.models.PromptIR` runs its prompt interactions through this, with its
        modules under the official names (``noise_level{l}`` as ``transformer``,
        ``reduce_noise_level{l}`` as ``reduce``), so the block documented here is the one the
        network runs and the official state-dict keys are kept.

        Args:
            feature: The feature map.
            prompt: The prompt (from a :class:`PromptGenBlock` of the feature).
            transformer: A transformer block on ``C_f + C_p`` channels.
            reduce: The reduction to the output channels.

        Shape:
            - feature: :math:`(N, C_f, H, W)`
            - prompt: :math:`(N, C_p, H, W)`
            - output: :math:`(N, C_{out}, H, W)`

        Examples:
            >>> block = PromptInteraction(feature_dim=16, prompt_dim=8, num_heads=2)
            >>> f, p = torch.randn(1, 16, 6, 6), torch.randn(1, 8, 6, 6)
            >>> torch.equal(PromptInteraction.interact(f, p, block.transformer, block.reduce), block(f, p))
            True
        """
        return reduce(transformer(torch.cat([feature, prompt], dim=1)))
