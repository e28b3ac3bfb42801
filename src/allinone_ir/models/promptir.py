"""PromptIR (Potlapalli et al., NeurIPS 2023): Restormer with prompt blocks in the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.norm import NormKind, in_layout_of, memory_format_of
from ..layers.transformer import TransformerBlock
from ._base import official_5d_keys
from ._detect import attention_heads
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout

__all__ = ["PROMPTIR_UNUSED_MODULES", "PromptGenBlock", "PromptIR", "PromptInteraction"]

#: Modules the official PromptIR builds but never uses; their checkpoint keys are dropped on load.
PROMPTIR_UNUSED_MODULES: tuple[str, ...] = tuple(
    f"{name}{i}" for name in ("chnl_reduce", "reduce_noise_channel_") for i in (1, 2, 3)
)


class PromptGenBlock(nn.Module):
    """Prompt generation block: ``conv3x3(resize(sum_l softmax(W GAP(F))_l P_l))`` at the feature's ``H x W``.

    Args:
        prompt_dim: Channels ``C_p`` of the prompt.
        prompt_len: Number of prompt components ``L``.
        prompt_size: Spatial size ``S`` of each component.
        lin_dim: Channels ``C_{lin}`` of the input feature map.

    Shape:
        - Input: :math:`(N, C_{lin}, H, W)`
        - Output: :math:`(N, C_p, H, W)`

    Examples:
        >>> gen = PromptGenBlock(prompt_dim=8, prompt_len=3, prompt_size=4, lin_dim=16)
        >>> gen(torch.randn(2, 16, 10, 6)).shape
        torch.Size([2, 8, 10, 6])
    """

    official_5d = "prompt_param"

    def __init__(
        self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192
    ) -> None:
        super().__init__()
        if min(prompt_len, prompt_size, prompt_dim) < 1:
            raise UsageError(
                f"PromptGenBlock needs positive sizes, got {prompt_dim=}, {prompt_len=}, {prompt_size=}"
            )
        self.prompt_param = nn.Parameter(torch.rand(prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, stride=1, padding=1, bias=False)
        official_5d_keys(self)

    def prompt_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights of the prompt components, shape ``(N, L)``."""
        return self.linear_layer(x.mean(dim=(-2, -1))).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        weights = self.prompt_weights(x)
        components = self.prompt_param  # (L, C, S, S)
        if x.shape[0] <= components.shape[0]:
            prompt = torch.einsum("nl,lchw->nchw", weights.to(components.dtype), components)
            prompt = F.interpolate(prompt, size=(h, w), mode="bilinear", align_corners=False)
            return self.conv3x3(in_layout_of(prompt, x))
        # resizing and the bias-free convolution are linear: for batches larger than L, resize and
        # convolve the L components once and mix the results per sample
        basis = F.interpolate(components, size=(h, w), mode="bilinear", align_corners=False)
        basis = self.conv3x3(in_layout_of(basis, x))
        weights = weights.to(basis.dtype)
        if memory_format_of(x) == torch.channels_last:  # mix on the (L, H*W*C) view of its storage: no copy
            mixed = weights @ basis.permute(0, 2, 3, 1).reshape(basis.shape[0], -1)
            return mixed.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return (weights @ basis.reshape(basis.shape[0], -1)).reshape(x.shape[0], -1, h, w)


class PromptInteraction(nn.Module):
    """Prompt interaction block: ``reduce(transformer(cat[feature, prompt]))``.

    Args:
        out_dim: Channels after the 1x1 reduction (defaults to ``feature_dim``).
        num_heads: Heads of the transformer block (must divide ``feature_dim + prompt_dim``).

    Shape:
        - feature: :math:`(N, C_f, H, W)`; prompt: :math:`(N, C_p, H, W)`
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
        """The block's computation with the given modules (shapes as the block's)."""
        return reduce(transformer(torch.cat([feature, prompt], dim=1)))


@register_architecture
class PromptIR(RestormerUNet):
    """PromptIR: all-in-one restoration with prompt generation and interaction in the decoder.

    Restormer's U-Net; on the latent and after decoder levels 3 and 2 a :class:`PromptGenBlock` makes a prompt
    that a :class:`PromptInteraction` mixes in. Defaults and keys are the official ones. The first nine
    arguments are :class:`~allinone_ir.models.restormer.Restormer`'s.

    Args:
        prompt_dims: Prompt channels at decoder levels 1, 2, 3.
        prompt_sizes: Spatial size of the prompt components at levels 1, 2, 3.
        prompt_len: Number of prompt components per level.
        interaction_heads: Heads of the prompt-interaction blocks (default ``heads[2]``, as the official code).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values in [0, 1]; output: :math:`(N, C_{out}, H, W)`
    """

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
            raise UsageError(
                f"prompt_dims and prompt_sizes need 3 entries (levels 1-3), got {list(prompt_dims)}, "
                f"{list(prompt_sizes)}"
            )
        ih = heads[2] if interaction_heads is None else interaction_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        # in the official order: the prompt block on the feature entering a level, then that level
        for level, feature, out in ((3, dim * 8, dim * 4), (2, dim * 4, dim * 4), (1, dim * 2, dim * 2)):
            pdim, size = prompt_dims[level - 1], prompt_sizes[level - 1]
            joint = feature + pdim
            self.add_module(f"prompt{level}", PromptGenBlock(pdim, prompt_len, size, feature))
            self.add_module(f"noise_level{level}", TransformerBlock(joint, ih, *args))
            self.add_module(f"reduce_noise_level{level}", nn.Conv2d(joint, out, kernel_size=1, bias=bias))
            self._build_decoder_level(level, dim, num_blocks, heads, *args, up=dim * 4 if level == 3 else 0)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _prompt(self, level: int, x: torch.Tensor) -> torch.Tensor:
        prompt = getattr(self, f"prompt{level}")(x)
        block, reduce = getattr(self, f"noise_level{level}"), getattr(self, f"reduce_noise_level{level}")
        return PromptInteraction.interact(x, prompt, block, reduce)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self._prompt(3, x)

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        # decoder levels 3 and 2 get prompt levels 2 and 1; level 1 goes to the refinement
        return self._prompt(level - 1, x) if level > 1 else x

    _STAGE2 = ("refinement", "output", "decoder_level1", "prompt1", "noise_level1", "reduce_noise_level1")
    finetune_groups = {
        **RESTORMER_GROUPS,
        "prompts": ("prompt*", "noise_level*", "reduce_noise_level*"),
        "stage2": _STAGE2,  # the output end, for a second stage
    }
    demo_choices = {"promptir": "promptir"}
    unused_modules = PROMPTIR_UNUSED_MODULES

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A 1.3 M-parameter PromptIR (one block per level, width 16; the demo's); ``smoke``: 0.2 M.

        Examples:
            >>> PromptIR(**PromptIR.small_config()).num_parameters
            1280755
        """
        return dict(
            dim=8 if smoke else 16,
            num_blocks=(1, 1, 1, 1),
            num_refinement_blocks=1,
            heads=(1, 2, 4, 8),
            prompt_dims=(8, 8, 16) if smoke else (16, 32, 64),
            prompt_sizes=(8, 4, 4) if smoke else (16, 8, 4),
            prompt_len=4,
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Restormer's layout plus ``prompt1..3.prompt_param`` (prompt channels, sizes and length)."""
        config = _read_restormer_layout(state_dict)
        keys = [f"prompt{i}.prompt_param" for i in (1, 2, 3)]
        if config is None or not all(k in state_dict for k in keys):
            return None
        params = [
            state_dict[k][0] if state_dict[k].dim() == 5 else state_dict[k] for k in keys
        ]  # (1, L, C, S, S)
        config["prompt_dims"] = [int(p.shape[1]) for p in params]
        config["prompt_sizes"] = [int(p.shape[-1]) for p in params]
        config["prompt_len"] = int(params[0].shape[0])
        ih = attention_heads(state_dict, ("noise_level1", "noise_level2", "noise_level3"), config["heads"][2])
        config["interaction_heads"] = None if ih == config["heads"][2] else ih
        return config

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Drop the keys of :data:`PROMPTIR_UNUSED_MODULES`; give ``prompt_param`` the official 5-D shape."""
        out = super().filter_state_dict(state_dict, model)
        return {
            k: v.unsqueeze(0) if k.endswith("prompt_param") and v.dim() == 4 else v for k, v in out.items()
        }


@register_model
def promptir(**kwargs: Any) -> PromptIR:
    """PromptIR, official all-in-one configuration (35,376,967 parameters)."""
    return PromptIR(**kwargs)


# Released weights: facts from github.com/va1shn9v/PromptIR (README, LICENSE.md) and arXiv 2306.13090 Table 1.
register_weights(
    PretrainedWeights(
        name="promptir.three_task",
        arch="promptir",
        file_name="model.ckpt",
        sources=(
            WeightsSource("url", "https://github.com/va1shn9v/PromptIR/releases/download/v1.0/model.ckpt"),
            WeightsSource("gdrive", "1j-b5Od70pGF7oaCqKAfUzmf-N-xEAjYl"),  # README, "Testing"
        ),
        num_params=35_376_967,  # the official configuration built here (the six unused modules not built)
        tasks=("noise", "rain", "haze"),
        license="Academic Public License (non-commercial; LICENSE.md)",
        training_data="BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze)",
        reported=(
            "SOTS 30.58/0.974",
            "Rain100L 36.37/0.972",
            "BSD68 sigma15 33.98/0.933",
            "BSD68 sigma25 31.31/0.888",
            "BSD68 sigma50 28.06/0.799",
        ),  # paper Table 1 (all-in-one)
        protocol="PSNR/SSIM on RGB, images centre-cropped to a multiple of 16, no border crop (the official test.py); allinone-ir benchmark --suite three-task",
        default=True,
    )
)
