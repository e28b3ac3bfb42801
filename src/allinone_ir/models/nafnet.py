"""NAFNet (Chen et al., ECCV 2022): a nonlinear-activation-free U-Net baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..layers.norm import LayerNorm2d
from ..layers.stage import Stage
from ._base import RestorationModel, UNetHooks
from ._detect import count_blocks
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights

__all__ = ["NAFBlock", "NAFNet"]


def _simple_gate(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=1)
    return x1 * x2


class NAFBlock(nn.Module):
    """NAFNet block: a gated depthwise branch with channel attention, then a gated FFN, both scaled residuals.

    Args:
        c: Channels.
        drop_out_rate: Dropout after each branch.

    Shape:
        - Input, output: :math:`(N, C, H, W)`

    Examples:
        >>> NAFBlock(8)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, c: int, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, kernel_size=1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, kernel_size=3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, kernel_size=1))
        self.conv4 = nn.Conv2d(c, 2 * c, kernel_size=1)
        self.conv5 = nn.Conv2d(c, c, kernel_size=1)
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = _simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3(x * self.sca(x)))
        y = inp + x * self.beta
        x = self.dropout2(self.conv5(_simple_gate(self.conv4(self.norm2(y)))))
        return y + x * self.gamma


def _naf_stage(channels: int, depth: int, drop_out_rate: float) -> Stage:
    return Stage(*[NAFBlock(channels, drop_out_rate=drop_out_rate) for _ in range(depth)])


@register_architecture
class NAFNet(UNetHooks, RestorationModel):
    """NAFNet: U-Net of NAF blocks with additive skips and a global residual; official key names.

    Defaults: the SIDD width-32 configuration. Any ``H, W >= 1`` works (zero-padded to a multiple of
    ``2 ** len(enc_blk_nums)``, as the official code).

    Args:
        in_channels: Image channels (input and output).
        width: Channels of the first level (doubled at each level).
        middle_blk_num: NAF blocks in the bottleneck.
        enc_blk_nums: NAF blocks per encoder level.
        dec_blk_nums: NAF blocks per decoder level (as many levels as ``enc_blk_nums``).

    Shape:
        - Input, output: :math:`(N, C, H, W)`, float, values nominally in [0, 1]

    Examples:
        >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))
        >>> net(torch.rand(1, 3, 11, 7)).shape
        torch.Size([1, 3, 11, 7])
    """

    pad_mode = "constant"  # zeros, as the official check_image_size

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
                f"enc_blk_nums and dec_blk_nums need the same length, got {list(enc_blk_nums)} and {list(dec_blk_nums)}"
            )
        self.in_channels = self.out_channels = in_channels
        self.pad_multiple = 2 ** len(enc_blk_nums)
        self.intro = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, in_channels, kernel_size=3, padding=1, bias=True)
        self.encoders, self.downs, self.decoders, self.ups = (nn.ModuleList() for _ in range(4))
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(_naf_stage(chan, num, drop_out_rate))
            self.downs.append(nn.Conv2d(chan, chan * 2, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = _naf_stage(chan, middle_blk_num, drop_out_rate)
        for num in dec_blk_nums:
            self.ups.append(
                nn.Sequential(nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2))
            )
            chan //= 2
            self.decoders.append(_naf_stage(chan, num, drop_out_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp), size)

    def _unet_forward(self, x: torch.Tensor, ctx: Any = None) -> torch.Tensor:
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

    finetune_groups = {
        "encoder": ("intro", "encoders", "downs", "middle_blks"),
        "decoder": ("ups", "decoders", "ending"),
    }

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a NAFNet-layout state dict (``intro`` ... ``ending``), else ``None``."""
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


_SIDD_LAYOUT: dict[str, Any] = dict(enc_blk_nums=(2, 2, 4, 8), middle_blk_num=12, dec_blk_nums=(2, 2, 2, 2))
_GOPRO_LAYOUT: dict[str, Any] = dict(enc_blk_nums=(1, 1, 1, 28), middle_blk_num=1, dec_blk_nums=(1, 1, 1, 1))


@register_model
def nafnet(**kwargs: Any) -> NAFNet:
    """NAFNet, SIDD width-32 configuration (29,159,715 parameters)."""
    return NAFNet(**kwargs)


@register_model
def nafnet_width32(**kwargs: Any) -> NAFNet:
    """NAFNet width 32, enc [2,2,4,8], middle 12, dec [2,2,2,2] (SIDD; 29,159,715 parameters)."""
    return NAFNet(**{"width": 32, **_SIDD_LAYOUT, **kwargs})


@register_model
def nafnet_width64(**kwargs: Any) -> NAFNet:
    """NAFNet width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1] (GoPro; 67,888,835 parameters)."""
    return NAFNet(**{"width": 64, **_GOPRO_LAYOUT, **kwargs})


@register_model
def nafnet_sidd_width64(**kwargs: Any) -> NAFNet:
    """NAFNet width 64, enc [2,2,4,8], middle 12, dec [2,2,2,2] (SIDD; 115,982,915 parameters)."""
    return NAFNet(**{"width": 64, **_SIDD_LAYOUT, **kwargs})


@register_model
def nafnet_gopro_width32(**kwargs: Any) -> NAFNet:
    """NAFNet width 32, enc [1,1,1,28], middle 1, dec [1,1,1,1] (GoPro; 17,111,907 parameters)."""
    return NAFNet(**{"width": 32, **_GOPRO_LAYOUT, **kwargs})


# Released weights. Facts: github.com/megvii-research/NAFNet (2b4af71: readme.md, docs/REDS.md, LICENSE);
# SHA-256 and sizes: the Git LFS pointers of nyanko7/nafnet-models (08e8c70), equal to the author's Space.
# REDS-width64 is the GoPro width-64 network (NAFNetLocal uses the weights unchanged).
_SIDD = "PSNR/SSIM on RGB, SIDD validation (1,280 256x256 blocks); readme.md model table"
_GOPRO = "PSNR/SSIM on RGB, GoPro test set (1,111 images); readme.md model table"
_REDS = "PSNR/SSIM on RGB, REDS validation (300 images, lmdb) with test-time local statistics (NAFNetLocal); readme.md"
_SIDD_FACTS = dict(tasks=("noise",), training_data="SIDD", protocol=_SIDD)
_GOPRO_FACTS = dict(tasks=("blur",), training_data="GoPro", protocol=_GOPRO)
_REDS_FACTS = dict(tasks=("blur", "jpeg"), training_data="REDS (blur + JPEG)", protocol=_REDS)
#: variant: (Google Drive file id, Baidu share)
_DOWNLOADS = {
    "sidd_width64": ("14Fht1QQJ2gMlk4N1ERCRuElg8JfjrWWR", "198kYyVSrY_xZF0jGv9U0sQ?pwd=dton"),
    "sidd_width32": ("1lsByk21Xw-6aW7epCwOQxvm6HYCQZPHZ", "1Xses38SWl-7wuyuhaGNhaw?pwd=um97"),
    "gopro_width64": ("1S0PVRbyTakYY9a82kujgZLbMihfNBLfC", "1g-E1x6En-PbYXm94JfI1vg?pwd=wnwh"),
    "gopro_width32": ("1Fr2QadtDCEXg6iwWX8OzeZLbHOx2t5Bj", "1AbgG0yoROHmrRQN7dgzDvQ?pwd=so6v"),
    "reds_width64": ("14D4V4raNYIOhETfcuuLI3bGLB-OYIv6X", "1vg89ccbpIxg3mK9IONBfGg?pwd=9fas"),
}
#: variant: (SHA-256, size in bytes) of the file
_FILES = {
    "sidd_width64": ("cd685efaae01f7c4e9951f2deab05780079c8eb1e49ed664b72f6db04dabb445", 464_154_961),
    "sidd_width32": ("89c70e808d1783b6c07911306e106aaf0d4f7f3da8c61078b99ff7f8929a26f4", 116_861_841),
    "gopro_width64": ("329d3ab4077b8d6b7ff61de376e483714667960bf85be027bf4335cda701196f", 271_778_961),
    "gopro_width32": ("19394e6155d12ef6371d1d57496f87f0ec88f92bdffa27c0792690722d5d1a5c", 68_671_121),
    "reds_width64": ("175fe8b3cdf3abedfbc87769779c3d9f491e05bb2e73ea9d627883f90a4b2df3", 271_756_689),
}


def _register(dataset: str, width: int, arch: str, params: int, reported: str, **facts: Any) -> None:
    variant = f"{dataset.lower()}_width{width}"
    file = f"NAFNet-{dataset}-width{width}.pth"
    drive, baidu = _DOWNLOADS[variant]
    sha256, size = _FILES[variant]
    register_weights(
        PretrainedWeights(
            name=f"nafnet.{variant}",
            arch=arch,
            file_name=file,
            sources=(
                WeightsSource("hf", "nyanko7/nafnet-models", file, note="third-party mirror"),
                WeightsSource("gdrive", drive),
                WeightsSource("baidu", f"https://pan.baidu.com/s/{baidu}"),
            ),
            sha256=sha256,
            size=size,
            num_params=params,
            license="MIT (LICENSE of megvii-research/NAFNet)",
            reported=(reported,),
            **facts,
        )
    )


_register("SIDD", 64, "nafnet_sidd_width64", 115_982_915, "SIDD 40.3045/0.9614", **_SIDD_FACTS)
_register("SIDD", 32, "nafnet_width32", 29_159_715, "SIDD 39.9672/0.9599", **_SIDD_FACTS)
_register("GoPro", 64, "nafnet_width64", 67_888_835, "GoPro 33.7103/0.9668", **_GOPRO_FACTS, default=True)
_register("GoPro", 32, "nafnet_gopro_width32", 17_111_907, "GoPro 32.8705/0.9606", **_GOPRO_FACTS)
_register("REDS", 64, "nafnet_width64", 67_888_835, "REDS val300 29.0903/0.8671", **_REDS_FACTS)
