"""Restormer (Zamir et al., CVPR 2022): the transformer U-Net PromptIR and PIP build on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..layers.attention import MDTA
from ..layers.norm import NormKind
from ..layers.stage import Stage
from ..layers.transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample
from ._base import RestorationModel, UNetHooks
from ._detect import attention_heads, count_blocks, ffn_expansion_factor
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights

__all__ = ["Restormer", "RestormerUNet"]

#: The ``finetune_groups`` of Restormer's modules.
RESTORMER_GROUPS: Mapping[str, tuple[str, ...]] = {
    "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
    "decoder": ("up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
}


def transformer_stage(
    dim: int, num_heads: int, depth: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: NormKind
) -> Stage:
    """``depth`` transformer blocks in a row (one U-Net level)."""
    return Stage(
        *[TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(depth)]
    )


def restormer_low_precision_flags(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """The float32 flags of a Restormer-layout network under bf16/fp16: the patch embedding and the
    depthwise convolutions of the full-resolution attentions."""
    full_resolution = ("encoder_level1.", "decoder_level1.", "refinement.")
    flags: list[tuple[str, nn.Module, str]] = []
    for n, m in model.named_modules():
        if n == "patch_embed" and isinstance(m, OverlapPatchEmbed):
            flags.append((n, m, "float32"))
        elif isinstance(m, MDTA) and n.startswith(full_resolution):
            flags.append((n, m, "float32_dwconv"))
    return flags


class RestormerUNet(UNetHooks, RestorationModel):
    """Restormer's U-Net with per-level hooks, shared by Restormer, PromptIR, AdaIR, PIP-Restormer and DFPIR.

    A network builds the official modules in the official order with the ``_build_*`` methods (``opts``:
    the blocks' ``ffn_expansion_factor, bias, layer_norm_type``) and overrides the
    :class:`~allinone_ir.models._base.UNetHooks` it needs; :meth:`_unet_forward` runs them.
    """

    pad_multiple = 8
    up4_3: nn.Module
    reduce_chan_level3: nn.Module
    decoder_level3: nn.Module
    up3_2: nn.Module
    reduce_chan_level2: nn.Module
    decoder_level2: nn.Module
    up2_1: nn.Module
    decoder_level1: nn.Module

    low_precision_flags = restormer_low_precision_flags

    def _stage(self, dim: int, num_heads: int, depth: int, *opts: Any) -> Stage:
        """One level of ``depth`` blocks: :func:`transformer_stage`."""
        return transformer_stage(dim, num_heads, depth, *opts)

    def _build_encoder(
        self, in_channels: int, dim: int, blocks: Sequence[int], heads: Sequence[int], *opts: Any
    ) -> None:
        """Build ``patch_embed``, ``encoder_level1..3``, ``down*`` and ``latent``."""
        if len(blocks) != 4 or len(heads) != 4:
            raise UsageError(f"num_blocks and heads need 4 entries, got {list(blocks)} and {list(heads)}")
        # no bias even with bias=True, as the official networks: their checkpoints have no patch_embed bias
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        self.encoder_level1 = self._stage(dim, heads[0], blocks[0], *opts)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = self._stage(dim * 2, heads[1], blocks[1], *opts)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = self._stage(dim * 4, heads[2], blocks[2], *opts)
        self.down3_4 = Downsample(dim * 4)
        self.latent = self._stage(dim * 8, heads[3], blocks[3], *opts)

    def _build_decoder_level(
        self, level: int, dim: int, blocks: Sequence[int], heads: Sequence[int], *opts: Any, up: int = 0
    ) -> None:
        """Build ``up{level+1}_{level}``, ``reduce_chan_level{level}`` (levels 2, 3), ``decoder_level{level}``
        (``up``: the channels reaching the upsampling if not twice the level's)."""
        channels = dim * 2 ** (level - 1)
        up_in = up or 2 * channels
        self.add_module(f"up{level + 1}_{level}", Upsample(up_in))
        width = up_in // 2 + channels
        if level > 1:
            self.add_module(
                f"reduce_chan_level{level}", nn.Conv2d(width, channels, kernel_size=1, bias=opts[1])
            )
            width = channels
        self.add_module(
            f"decoder_level{level}", self._stage(width, heads[level - 1], blocks[level - 1], *opts)
        )

    def _build_head(self, dim: int, depth: int, heads: Sequence[int], out_channels: int, *opts: Any) -> None:
        """Build ``refinement`` (``depth`` blocks at ``2 dim``) and ``output`` (3x3 conv to the image)."""
        self.refinement = self._stage(dim * 2, heads[0], depth, *opts)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, padding=1, bias=opts[1])

    def _unet_forward(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        """Run the U-Net on a padded input, calling the hooks with ``ctx``."""
        e1 = self.encoder_level1(self.patch_embed(x))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        h = self._latent_hook(self.latent(self.down3_4(e3)), ctx)
        h = self.reduce_chan_level3(torch.cat([self.up4_3(h), self._skip_hook(3, e3, ctx)], 1))
        h = self._decoder_hook(3, self.decoder_level3(h), ctx)
        h = self.reduce_chan_level2(torch.cat([self.up3_2(h), self._skip_hook(2, e2, ctx)], 1))
        h = self._decoder_hook(2, self.decoder_level2(h), ctx)
        h = torch.cat([self.up2_1(h), self._skip_hook(1, e1, ctx)], 1)
        h = self._decoder_hook(1, self.decoder_level1(h), ctx)
        out = self.output(self.refinement(h))
        return out + x if self.in_channels == self.out_channels else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp), size)


@register_architecture
class Restormer(RestormerUNet):
    """Restormer: a four-level transformer U-Net with MDTA attention and GDFN feed-forward blocks.

    Defaults: the official configuration. Any ``H, W >= 1`` works (reflect-padded to a multiple of 8).

    Args:
        dim: Channels of the first level (doubled at each level).
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"`` (Gaussian denoising models).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values in [0, 1]; output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> net(torch.rand(1, 3, 13, 21)).shape
        torch.Size([1, 3, 13, 21])
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
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        for level in (3, 2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *args)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    finetune_groups = RESTORMER_GROUPS

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a Restormer-layout state dict, else ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths.
        """
        return _read_restormer_layout(state_dict)


@register_model
def restormer(**kwargs: Any) -> Restormer:
    """Restormer, official configuration (WithBias LayerNorm; 26,126,644 parameters)."""
    return Restormer(**kwargs)


@register_model
def restormer_biasfree(**kwargs: Any) -> Restormer:
    """Restormer with BiasFree LayerNorm, as for Gaussian denoising (26,111,668 parameters)."""
    return Restormer(**{"layer_norm_type": "BiasFree", **kwargs})


def _read_restormer_layout(state_dict: Mapping[str, torch.Tensor], *required: str) -> dict[str, Any] | None:
    """Restormer's constructor arguments read from a state dict with its layout and the keys ``required``."""
    if not all(k in state_dict for k in ("patch_embed.proj.weight", "output.weight", *required)):
        return None
    embed = state_dict["patch_embed.proj.weight"]
    heads = [
        attention_heads(state_dict, ("encoder_level1", "decoder_level1", "refinement"), 1),
        attention_heads(state_dict, ("encoder_level2", "decoder_level2"), 2),
        attention_heads(state_dict, ("encoder_level3", "decoder_level3"), 4),
        attention_heads(state_dict, ("latent",), 8),
    ]
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    return dict(
        in_channels=int(embed.shape[1]),
        out_channels=int(state_dict["output.weight"].shape[0]),
        dim=int(embed.shape[0]),
        num_blocks=[count_blocks(state_dict, n) for n in levels],
        num_refinement_blocks=count_blocks(state_dict, "refinement"),
        heads=heads,
        ffn_expansion_factor=ffn_expansion_factor(state_dict),
        bias="output.bias" in state_dict or any(k.endswith(".attn.qkv.bias") for k in state_dict),
        layer_norm_type="WithBias" if any(k.endswith("norm1.body.bias") for k in state_dict) else "BiasFree",
    )


# Released weights: facts from github.com/swz30/Restormer (release v1.0, READMEs, LICENSE.md), arXiv 2111.09881.
# dual_pixel_defocus_deblurring.pth is not registered: its network (dual_pixel_task) is not of this library.
_GAUSSIAN_DRIVE = "1Qwsjyny54RZWa7zC4Apg7exixLBo4uF0"  # Denoising/README.md, Gaussian models
_DFWB = "DFWB (DIV2K, Flickr2K, BSD400, WED)"
_RELEASE = "https://github.com/swz30/Restormer/releases/download/v1.0/"
_DRIVE_FOLDERS = "https://drive.google.com/drive/folders/"
_PARAMS = {"restormer": 26_126_644, "restormer_biasfree": 26_111_668}


def _register(variant: str, arch: str, drive: str | WeightsSource, **facts: Any) -> None:
    """Register ``{variant}.pth``; ``drive``: a Google Drive folder id, or the source itself."""
    file = f"{variant}.pth"
    if isinstance(drive, str):
        drive = WeightsSource("page", _DRIVE_FOLDERS + drive, note="Google Drive folder")
    register_weights(
        PretrainedWeights(
            name=f"restormer.{variant}",
            arch=arch,
            file_name=file,
            sources=(
                WeightsSource("url", _RELEASE + file),
                WeightsSource("hf", "deepinv/Restormer", file, note="third-party mirror (deepinv)"),
                drive,
            ),
            num_params=facts.pop("num_params", _PARAMS[arch]),
            license="Academic Public License (non-commercial; LICENSE.md of swz30/Restormer)",
            **facts,
        )
    )


_register(
    "deraining",
    "restormer",
    "1ZEDDEVW0UgkpWi-N4Lj_JUoVChGXCu_u",
    tasks=("rain",),
    training_data="Rain13K",
    default=True,
    reported=("average of Test100, Rain100H, Rain100L, Test2800, Test1200 33.96/0.935",),
    protocol="PSNR/SSIM on the Y channel (Deraining/evaluate_PSNR_SSIM.m); "
    "allinone-ir benchmark --suite restormer-deraining",
)
_register(
    "motion_deblurring",
    "restormer",
    "1czMyfRTQDX3j3ErByYeZ1PM4GVLbJeGK",
    tasks=("blur",),
    training_data="GoPro",
    reported=("GoPro 32.92/0.961",),
    protocol="PSNR/SSIM on RGB (GoPro test set)",
)
_register(
    "single_image_defocus_deblurring",
    "restormer",
    "1bRBG8DG_72AGA6-eRePvChlT5ZO4cwJ4",
    tasks=("defocus",),
    training_data="DPDD (single image)",
    protocol="DPDD test set, 76 scenes",
)
_register(
    "real_denoising",
    "restormer_biasfree",
    WeightsSource("gdrive", "1FF_4NTboTWQ7sHCq4xhyLZsSl0U0JfjH"),
    tasks=("noise",),
    training_data="SIDD",
    reported=("SIDD 40.02/0.960",),
    protocol="PSNR/SSIM on RGB (SIDD validation blocks)",
)
for _sigma in ("blind", "sigma15", "sigma25", "sigma50"):
    _register(
        f"gaussian_color_denoising_{_sigma}",
        "restormer_biasfree",
        _GAUSSIAN_DRIVE,
        tasks=("noise",),
        training_data=_DFWB,
        protocol="PSNR on RGB (CBSD68, Kodak24, McMaster, Urban100), Gaussian noise of the given sigma",
    )
    _register(
        f"gaussian_gray_denoising_{_sigma}",
        "restormer_biasfree",
        _GAUSSIAN_DRIVE,
        num_params=26_109_076,
        config={"in_channels": 1, "out_channels": 1},
        tasks=("noise",),
        training_data=_DFWB + ", grayscale",
        protocol="PSNR on grayscale images (Set12, BSD68, Urban100), Gaussian noise of the given sigma",
    )
