"""PromptIR (Potlapalli et al., NeurIPS 2023): Restormer with prompt blocks in the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UsageError
from ..layers.norm import NormKind
from ..layers.promptir import PromptGenBlock, PromptInteraction
from ..layers.transformer import TransformerBlock
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import RestormerUNet

__all__ = ["PROMPTIR_UNUSED_MODULES", "PromptIR"]

#: Modules the official PromptIR builds but never uses; their checkpoint keys are dropped on load.
PROMPTIR_UNUSED_MODULES: tuple[str, ...] = (
    "chnl_reduce1", "chnl_reduce2", "chnl_reduce3",
    "reduce_noise_channel_1", "reduce_noise_channel_2", "reduce_noise_channel_3",
)  # fmt: skip


@register_architecture
class PromptIR(RestormerUNet):
    """PromptIR: all-in-one restoration with prompt generation and interaction in the decoder.

    A Restormer encoder; at the latent and after decoder levels 3 and 2 a
    :class:`~allinone_ir.layers.PromptGenBlock` generates an input-conditioned prompt,
    which is concatenated to the feature, mixed by a transformer block
    (``noise_level*``) and reduced by a 1x1 convolution (``reduce_noise_level*``): the
    :class:`~allinone_ir.layers.PromptInteraction` block, run on these official modules
    (:meth:`~allinone_ir.layers.PromptInteraction.interact`). The network is Restormer's
    U-Net (:class:`~allinone_ir.models.restormer.RestormerUNet`) with the prompt levels in its
    latent and decoder hooks.
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
            raise UsageError(
                f"prompt_dims and prompt_sizes need 3 entries (levels 1-3), got {list(prompt_dims)}, "
                f"{list(prompt_sizes)}"
            )
        ih = heads[2] if interaction_heads is None else interaction_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        # Per level, in the official order: the prompt block on the feature entering the level
        # (latent: 8 dim; decoder levels 3, 2: 4 dim, 2 dim), then the decoder level it feeds.
        for level, feature, out in ((3, dim * 8, dim * 4), (2, dim * 4, dim * 4), (1, dim * 2, dim * 2)):
            pdim, size = prompt_dims[level - 1], prompt_sizes[level - 1]
            joint = feature + pdim
            self.add_module(f"prompt{level}", PromptGenBlock(pdim, prompt_len, size, feature))
            self.add_module(f"noise_level{level}", TransformerBlock(joint, ih, *args))
            self.add_module(f"reduce_noise_level{level}", nn.Conv2d(joint, out, kernel_size=1, bias=bias))
            up = dim * 4 if level == 3 else None
            self._build_decoder_level(level, dim, num_blocks, heads, *args, up_channels=up)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _prompt(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Prompt level ``level``: ``prompt{level}`` generates, :class:`PromptInteraction` mixes it in."""
        prompt = getattr(self, f"prompt{level}")(x)
        block, reduce = getattr(self, f"noise_level{level}"), getattr(self, f"reduce_noise_level{level}")
        return PromptInteraction.interact(x, prompt, block, reduce)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self._prompt(3, x)

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        # The outputs of decoder levels 3 and 2 get prompt levels 2 and 1; level 1 goes to refinement.
        return self._prompt(level - 1, x) if level > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp), size)

    # ------------------------------------------------------------------ what the family declares
    #: Restormer's ``encoder`` and ``decoder``; ``prompts`` (generation and interaction at the three
    #: levels); ``stage2``: the output end of the network (refinement, output conv, first decoder level
    #: and its prompt interaction), for a second training stage that retrains only those.
    _STAGE2: ClassVar[tuple[str, ...]] = (
        "refinement", "output", "decoder_level1", "prompt1", "noise_level1", "reduce_noise_level1",
    )  # fmt: skip
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "decoder": ("up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
        "prompts": ("prompt*", "noise_level*", "reduce_noise_level*"),
        "stage2": _STAGE2,
    }
    demo_choices: ClassVar[Mapping[str, str]] = {"promptir": "promptir"}

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A 1.3 M-parameter PromptIR (one block per level, width 16; the demo's); ``smoke``: 0.2 M.

        Args:
            degradations: Unused: PromptIR restores blind and learns any degradations.
            smoke: The smallest configuration (width 8), for tests.

        Examples:
            >>> PromptIR(**PromptIR.small_config()).num_parameters
            1280755
        """
        config: dict[str, Any] = dict(
            dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
            prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4), prompt_len=4,
        )  # fmt: skip
        if smoke:
            config.update(dim=8, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4))
        return config

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a PromptIR state dict (official or ours), else ``None``.

        Restormer's layout (see :meth:`Restormer.detect <allinone_ir.models.Restormer.detect>`)
        plus ``prompt1..3.prompt_param`` (official ``(1, L, C, S, S)`` or ``(L, C, S, S)``), which give
        the prompt channels, sizes and length; the interaction heads come from ``noise_level*``.

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``PromptIR(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths.
        """
        from ._detect import attention_heads
        from .restormer import _read_restormer_layout

        config = _read_restormer_layout(state_dict)
        keys = [f"prompt{i}.prompt_param" for i in (1, 2, 3)]
        if config is None or not all(k in state_dict for k in keys):
            return None
        params = [state_dict[k] for k in keys]
        params = [p[0] if p.dim() == 5 else p for p in params]  # official (1, L, C, S, S)
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
        """Drop the keys of :data:`PROMPTIR_UNUSED_MODULES` and give ``prompt_param`` the official 5-D shape.

        The official network builds six modules it never uses (the released checkpoint has their
        weights); they are not built here, so their keys are dropped unless ``model`` has a
        module of that name. ``(L, C, S, S)`` prompts become ``(1, L, C, S, S)``, the shape of
        the official keys and of this network's state dict.

        Args:
            state_dict: Weights with the wrapper prefixes removed.
            model: The network they are loaded into.

        Returns:
            A new dict.
        """
        own = {name.split(".")[0] for name, _ in model.named_parameters()}
        out = {}
        for k, v in state_dict.items():
            top = k.split(".")[0]
            if top in PROMPTIR_UNUSED_MODULES and top not in own:
                continue
            out[k] = v.unsqueeze(0) if k.endswith("prompt_param") and v.dim() == 4 else v
        return out


@register_model
def promptir(**kwargs: Any) -> PromptIR:
    """PromptIR, official all-in-one configuration (35,376,967 parameters)."""
    return PromptIR(**kwargs)


# --------------------------------------------------------------------------- released weights
# Facts from the official README (github.com/va1shn9v/PromptIR, README.md "Testing": the Drive link and
# "also available under the releases tab"), LICENSE.md (Academic Public License, non-commercial) and the
# paper (arXiv 2306.13090, Table 1: all-in-one, three degradations). No hash or size is published.
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
