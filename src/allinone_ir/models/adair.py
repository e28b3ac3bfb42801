"""AdaIR (Cui et al., ICLR 2025): Restormer with frequency mining and modulation in the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UsageError
from ..layers.adair import FreModule
from ..layers.norm import NormKind
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import RestormerUNet

__all__ = ["AdaIR"]

#: Submodules of each official ``FreModule`` (``fre1..3``) that its forward never uses; their
#: checkpoint keys are dropped on load.
ADAIR_UNUSED_MODULES: tuple[str, ...] = ("conv", "score_gen")


@register_architecture
class AdaIR(RestormerUNet):
    """AdaIR: all-in-one restoration by frequency mining and modulation.

    A Restormer U-Net (:class:`~allinone_ir.models.restormer.RestormerUNet`) with an adaptive
    frequency learning block (:class:`~allinone_ir.layers.adair.FreModule`) where PromptIR has its
    prompt blocks: on the latent (``fre1``, ``8 dim``) and on the outputs of decoder levels 3
    (``fre2``, ``4 dim``) and 2 (``fre3``, ``2 dim``). Each mines the low- and high-frequency parts
    of the (resized, embedded) degraded image with a per-sample adaptive spectral mask and merges
    them into the feature by cross-channel attention. The decoder channels are Restormer's.

    Defaults are the official configuration (28,542,130 parameters; the weights no gradient reaches
    are buffers, see :class:`~allinone_ir.layers.adair.FreModule`; the official code's unused
    :data:`ADAIR_UNUSED_MODULES` are not built and dropped on load). State-dict keys equal the
    official ones. Any ``H, W >= 1`` works (reflect padding to a multiple of 8, output cropped back); the
    frequency blocks read the padded image.

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level (at least 8: the frequency blocks need 16 channels).
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        fre_heads: Heads of the frequency blocks' attentions (default ``heads[2]``, as the official code).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = AdaIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))
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
        fre_heads: int | None = None,
    ) -> None:
        super().__init__()
        if dim < 8:
            raise UsageError(
                f"AdaIR needs dim >= 8 (its frequency blocks reduce 2 dim channels 16-fold), got {dim}"
            )
        fh = heads[2] if fre_heads is None else fre_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        for i, channels in ((1, dim * 8), (2, dim * 4), (3, dim * 2)):
            self.add_module(f"fre{i}", FreModule(channels, num_heads=fh, bias=bias, in_dim=in_channels))
        for level in (3, 2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *args)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.fre1(ctx, x)

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        # decoder levels 3 and 2 get fre2 and fre3; level 1 goes to the refinement
        if level == 3:
            return self.fre2(ctx, x)
        if level == 2:
            return self.fre3(ctx, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp, inp), size)

    # ------------------------------------------------------------------ what the family declares
    #: Restormer's ``encoder`` and ``decoder``; ``frequency``: the three frequency blocks.
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "decoder": ("up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
        "frequency": ("fre1", "fre2", "fre3"),
    }

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A small AdaIR (one block per level, width 16); ``smoke``: width 8, for tests.

        Args:
            degradations: Unused: AdaIR restores blind.
            smoke: The smallest configuration (width 8).
        """
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of an AdaIR state dict (official or ours), else ``None``.

        Restormer's layout (see :meth:`Restormer.detect <allinone_ir.models.Restormer.detect>`)
        plus ``fre1..3.conv1.weight``; the frequency blocks' heads come from
        ``fre1.channel_cross_l.temperature``.

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``AdaIR(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths.
        """
        from .restormer import _read_restormer_layout

        if not all(f"fre{i}.conv1.weight" in state_dict for i in (1, 2, 3)):
            return None
        config = _read_restormer_layout(state_dict)
        if config is None:
            return None
        temp = state_dict.get("fre1.channel_cross_l.temperature")
        fh = config["heads"][2] if temp is None else int(temp.shape[0])
        config["fre_heads"] = None if fh == config["heads"][2] else fh
        return config

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Drop the keys of the unused ``fre*.conv`` and ``fre*.score_gen`` (:data:`ADAIR_UNUSED_MODULES`).

        Args:
            state_dict: Weights with the wrapper prefixes removed.
            model: The network they are loaded into.

        Returns:
            A new dict.
        """
        own = set(model.state_dict().keys())
        out = {}
        for k, v in state_dict.items():
            parts = k.split(".")
            if (
                len(parts) > 2
                and parts[0] in ("fre1", "fre2", "fre3")
                and parts[1] in ADAIR_UNUSED_MODULES
                and k not in own
            ):
                continue
            out[k] = v
        return out


@register_model
def adair(**kwargs: Any) -> AdaIR:
    """AdaIR, official all-in-one configuration (28,542,130 parameters, 223,956 buffer values)."""
    return AdaIR(**kwargs)


# --------------------------------------------------------------------------- released weights
# Facts from the official repository github.com/c-yn/AdaIR: README.md "Testing" (the checkpoints are in a
# Google Drive folder, placed in ckpt/; test.py --mode 5 scores the three-degradation setting, --mode 6 the
# five-degradation one), test.py (--ckpt_name default "adair5d.ckpt"; README figures adair3d / adair5d),
# LICENSE (MIT). The files inside the folder could not be listed from here: adair3d.ckpt is inferred from
# adair5d.ckpt and the figures' names. No hash or size is published.
for _variant, _file, _tasks, _data, _mode in (
    ("three_task", "adair3d.ckpt", ("noise", "rain", "haze"),
     "BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze)", 5),
    ("five_task", "adair5d.ckpt", ("noise", "rain", "haze", "blur", "lowlight"),
     "BSD400 + WED, Rain100L, SOTS/RESIDE outdoor, GoPro, LOL-v1", 6),
):  # fmt: skip
    register_weights(
        PretrainedWeights(
            name=f"adair.{_variant}",
            arch="adair",
            file_name=_file,
            sources=(
                WeightsSource(
                    "page",
                    "https://drive.google.com/drive/folders/1x2LN4kWkO3S65jJlH-1INUFiYt8KFzPH",
                    note=f"Google Drive folder (README 'Testing'); take {_file}",
                ),
            ),
            num_params=28_542_130,
            tasks=_tasks,
            license="MIT (LICENSE of c-yn/AdaIR)",
            training_data=_data,
            protocol=f"PromptIR's protocol (RGB PSNR/SSIM, crop to a multiple of 16; test.py --mode {_mode})",
            default=_variant == "three_task",
            notes=f"Google Drive only: download by hand, then `allinone-ir weights import adair.{_variant} FILE`",
        )
    )
