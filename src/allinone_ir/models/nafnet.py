"""NAFNet (Chen et al., ECCV 2022): a nonlinear-activation-free U-Net baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UsageError
from ..layers.naf import NAFBlock
from ..layers.stage import Stage
from ._base import RestorationModel
from ._detect import count_blocks
from ._registry import register_architecture, register_model
from ._unet import UNetHooks
from ._weights import PretrainedWeights, WeightsSource, register_weights

__all__ = ["NAFNet"]


def naf_stage(channels: int, depth: int, drop_out_rate: float = 0.0) -> Stage:
    """``depth`` NAF blocks in a row (one U-Net level)."""
    return Stage(*[NAFBlock(channels, drop_out_rate=drop_out_rate) for _ in range(depth)])


@register_architecture
class NAFNet(UNetHooks, RestorationModel):
    """NAFNet: U-Net of NAF blocks with additive skips and a global residual.

    Key names equal the official ones (``intro``, ``encoders.i.j``, ``downs.i``,
    ``middle_blks.j``, ``ups.i.0``, ``decoders.i.j``, ``ending``). The default is the
    SIDD width-32 configuration (29,159,715 parameters). Any ``H, W >= 1`` works
    (zero padding to a multiple of ``2 ** len(enc_blk_nums)``, as the official code, cropped back).

    Args:
        in_channels: Image channels (input and output).
        width: Channels of the first level (doubled at each level).
        middle_blk_num: NAF blocks in the bottleneck.
        enc_blk_nums: NAF blocks per encoder level.
        dec_blk_nums: NAF blocks per decoder level (same length as ``enc_blk_nums``).
        drop_out_rate: Dropout inside the blocks.

    Shape:
        - Input: :math:`(N, C, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))
        >>> net(torch.rand(1, 3, 11, 7)).shape
        torch.Size([1, 3, 11, 7])
    """

    pad_mode = "constant"  # zeros, as the official check_image_size: official weights give official outputs

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: int = 32,
        middle_blk_num: int = 12,
        enc_blk_nums: Sequence[int] = (2, 2, 4, 8),
        dec_blk_nums: Sequence[int] = (2, 2, 2, 2),
        drop_out_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise UsageError(
                f"enc_blk_nums and dec_blk_nums need the same length, got {list(enc_blk_nums)} and "
                f"{list(dec_blk_nums)}"
            )
        self.in_channels = self.out_channels = in_channels
        self.pad_multiple = 2 ** len(enc_blk_nums)
        self.intro = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, in_channels, kernel_size=3, padding=1, bias=True)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(naf_stage(chan, num, drop_out_rate))
            self.downs.append(nn.Conv2d(chan, chan * 2, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = naf_stage(chan, middle_blk_num, drop_out_rate)
        for num in dec_blk_nums:
            self.ups.append(
                nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2))
            )
            chan //= 2
            self.decoders.append(naf_stage(chan, num, drop_out_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp), size)

    def _unet_forward(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        """The U-Net, written once for NAFNet and PIP-NAFNet, with the hooks of
        :class:`~allinone_ir.models._unet.UNetHooks` (levels ``1`` shallowest to ``L`` deepest)::

            h = intro(x); e_l = encoders[l-1](h); h = downs[l-1](e_l)      for l = 1..L
            h = _latent_hook(middle_blks(h))
            h = _decoder_hook(l, decoders[L-l](ups[L-l](h) + _skip_hook(l, e_l)))   for l = L..1
            out = ending(h) + x

        Shape:
            - x: :math:`(N, C, H, W)`, ``H, W`` multiples of ``pad_multiple``
            - output: :math:`(N, C, H, W)`
        """
        h = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self._latent_hook(self.middle_blks(h), ctx)
        level = len(skips)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            h = self._decoder_hook(level, decoder(up(h) + self._skip_hook(level, skip, ctx)), ctx)
            level -= 1
        return self.ending(h) + x

    # ------------------------------------------------------------------ what the family declares
    #: ``encoder`` (intro, encoder levels, downsampling, bottleneck) and ``decoder`` (the rest).
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("intro", "encoders", "downs", "middle_blks"),
        "decoder": ("ups", "decoders", "ending"),
    }

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a NAFNet-layout state dict (``intro`` ... ``ending``), else ``None``.

        Reads the channels and width from ``intro``, the number of levels from ``downs`` and the
        blocks per level from the largest block indices (``drop_out_rate`` has no weights: the
        default is assumed). PIP-NAFNet state dicts have the same layout plus ``pips``, so its own
        ``detect`` wins on them.

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``NAFNet(**kwargs)``, or ``None``.
        """
        return _read_nafnet_layout(state_dict)


@register_model
def nafnet(**kwargs: Any) -> NAFNet:
    """NAFNet, SIDD width-32 configuration (enc [2,2,4,8], middle 12, dec [2,2,2,2]; 29,159,715 parameters)."""
    return NAFNet(**kwargs)


@register_model
def nafnet_width32(**kwargs: Any) -> NAFNet:
    """NAFNet width 32, enc [2,2,4,8], middle 12, dec [2,2,2,2] (SIDD denoising; 29,159,715 parameters)."""
    return NAFNet(**{"width": 32, "enc_blk_nums": (2, 2, 4, 8), "middle_blk_num": 12,
                     "dec_blk_nums": (2, 2, 2, 2), **kwargs})  # fmt: skip


@register_model
def nafnet_width64(**kwargs: Any) -> NAFNet:
    """NAFNet width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1] (GoPro deblurring; 67,888,835 parameters)."""
    return NAFNet(**{"width": 64, "enc_blk_nums": (1, 1, 1, 28), "middle_blk_num": 1,
                     "dec_blk_nums": (1, 1, 1, 1), **kwargs})  # fmt: skip


@register_model
def nafnet_sidd_width64(**kwargs: Any) -> NAFNet:
    """NAFNet width 64, enc [2,2,4,8], middle 12, dec [2,2,2,2] (SIDD; 115,982,915 parameters)."""
    return NAFNet(**{"width": 64, "enc_blk_nums": (2, 2, 4, 8), "middle_blk_num": 12,
                     "dec_blk_nums": (2, 2, 2, 2), **kwargs})  # fmt: skip


@register_model
def nafnet_gopro_width32(**kwargs: Any) -> NAFNet:
    """NAFNet width 32, enc [1,1,1,28], middle 1, dec [1,1,1,1] (GoPro; 17,111,907 parameters)."""
    return NAFNet(**{"width": 32, "enc_blk_nums": (1, 1, 1, 28), "middle_blk_num": 1,
                     "dec_blk_nums": (1, 1, 1, 1), **kwargs})  # fmt: skip


def _read_nafnet_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """NAFNet's constructor arguments read from a state dict with its layout (shared by PIP-NAFNet)."""
    if "intro.weight" not in state_dict or "ending.weight" not in state_dict:
        return None
    intro = state_dict["intro.weight"]
    levels = count_blocks(state_dict, "downs")
    return dict(
        in_channels=int(intro.shape[1]),
        width=int(intro.shape[0]),
        middle_blk_num=count_blocks(state_dict, "middle_blks"),
        enc_blk_nums=[count_blocks(state_dict, f"encoders.{i}") for i in range(levels)],
        dec_blk_nums=[count_blocks(state_dict, f"decoders.{i}") for i in range(levels)],
    )


# --------------------------------------------------------------------------- released weights
# Facts from the official repository github.com/megvii-research/NAFNet (snapshot 2b4af71, 2024-03-29):
# readme.md's model table (file names, PSNR/SSIM, the Google Drive and Baidu links, the configurations
# options/test/{SIDD,GoPro}/NAFNet-width*.yml) and LICENSE (MIT). The Hugging Face mirror
# nyanko7/nafnet-models holds the same file names (third party; its LFS pointers publish SHA-256 and
# size, which could not be read from here, so none is recorded: the architecture check protects users).
def _nafnet_weights(
    variant: str,
    file_name: str,
    arch: str,
    num_params: int,
    drive: str,
    baidu: str,
    hf: bool = True,
    **facts: Any,
) -> None:
    mirror = (
        (WeightsSource("hf", "nyanko7/nafnet-models", file_name, note="third-party mirror"),) if hf else ()
    )
    register_weights(
        PretrainedWeights(
            name=f"nafnet.{variant}",
            arch=arch,
            file_name=file_name,
            sources=(*mirror, WeightsSource("gdrive", drive), WeightsSource("baidu", baidu)),
            num_params=num_params,
            license="MIT (LICENSE of megvii-research/NAFNet)",
            **facts,
        )
    )


_SIDD = "PSNR/SSIM on RGB, SIDD validation (1,280 256x256 blocks); readme.md model table"
_GOPRO = "PSNR/SSIM on RGB, GoPro test set (1,111 images); readme.md model table"
_nafnet_weights(
    "sidd_width64", "NAFNet-SIDD-width64.pth", "nafnet_sidd_width64", 115_982_915,
    "14Fht1QQJ2gMlk4N1ERCRuElg8JfjrWWR", "https://pan.baidu.com/s/198kYyVSrY_xZF0jGv9U0sQ?pwd=dton",
    tasks=("noise",), training_data="SIDD", reported=("SIDD 40.3045/0.9614",), protocol=_SIDD,
)  # fmt: skip
_nafnet_weights(
    "sidd_width32", "NAFNet-SIDD-width32.pth", "nafnet_width32", 29_159_715,
    "1lsByk21Xw-6aW7epCwOQxvm6HYCQZPHZ", "https://pan.baidu.com/s/1Xses38SWl-7wuyuhaGNhaw?pwd=um97",
    tasks=("noise",), training_data="SIDD", reported=("SIDD 39.9672/0.9599",), protocol=_SIDD,
)  # fmt: skip
_nafnet_weights(
    "gopro_width64", "NAFNet-GoPro-width64.pth", "nafnet_width64", 67_888_835,
    "1S0PVRbyTakYY9a82kujgZLbMihfNBLfC", "https://pan.baidu.com/s/1g-E1x6En-PbYXm94JfI1vg?pwd=wnwh",
    tasks=("blur",), training_data="GoPro", reported=("GoPro 33.7103/0.9668",), protocol=_GOPRO, default=True,
)  # fmt: skip
_nafnet_weights(
    "gopro_width32", "NAFNet-GoPro-width32.pth", "nafnet_gopro_width32", 17_111_907,
    "1Fr2QadtDCEXg6iwWX8OzeZLbHOx2t5Bj", "https://pan.baidu.com/s/1AbgG0yoROHmrRQN7dgzDvQ?pwd=so6v",
    tasks=("blur",), training_data="GoPro", reported=("GoPro 32.8705/0.9606",), protocol=_GOPRO,
)  # fmt: skip
# readme.md's table and docs/REDS.md (the Drive and Baidu links, REDS val 300 "deblurring with JPEG artifacts"),
# options/test/REDS/NAFNet-width64.yml (NAFNetLocal, width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1]: the
# GoPro width-64 network, whose weights NAFNetLocal uses unchanged; RGB PSNR/SSIM, crop_border 0). The file
# is not known to be on the Hugging Face mirror. The Baseline-* files are not registered: the Baseline
# network is not an architecture of this library.
_nafnet_weights(
    "reds_width64", "NAFNet-REDS-width64.pth", "nafnet_width64", 67_888_835,
    "14D4V4raNYIOhETfcuuLI3bGLB-OYIv6X", "https://pan.baidu.com/s/1vg89ccbpIxg3mK9IONBfGg?pwd=9fas", hf=False,
    tasks=("blur", "jpeg"), training_data="REDS (blur + JPEG)", reported=("REDS val300 29.0903/0.8671",),
    protocol="PSNR/SSIM on RGB, REDS validation (300 images, lmdb) with test-time local statistics (NAFNetLocal); readme.md",
)  # fmt: skip
