"""AdaIR (Cui et al., ICLR 2025): Restormer with frequency mining and modulation in the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.attention import CrossChannelAttention, low_precision_autocast
from ..layers.norm import NormKind, in_layout_of, memory_format_of
from ._base import as_buffers
from ._registry import register_architecture, register_model
from ._weights import ALL_IN_ONE, PretrainedWeights, WeightsSource, register_weights
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout

__all__ = ["AdaIR"]

#: Submodules of each official ``FreModule`` that its forward never uses; their checkpoint keys are dropped.
ADAIR_UNUSED_MODULES: tuple[str, ...] = ("conv", "score_gen")


def _autocast_off(device_type: str) -> AbstractContextManager[Any]:
    """Autocast disabled if a 16-bit autocast is on for ``device_type``, else nothing."""
    if low_precision_autocast(device_type) is None:
        return nullcontext()
    return torch.autocast(device_type, enabled=False)


def low_frequency_mask(threshold: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """AdaIR's ``(N, 1, H, W)`` low-frequency mask in ``fft2``'s layout: one where ``-h' <= f_y < h'`` and
    ``-w' <= f_x < w'``, ``h' = floor((H // 128) * t_0)``, ``w' = floor((W // 128) * t_1)``, ``t = threshold``.
    """
    half_h = torch.floor((height // 128) * threshold[:, 0:1])
    half_w = torch.floor((width // 128) * threshold[:, 1:2])
    dev, dt = threshold.device, threshold.dtype
    fh = torch.arange(height, device=dev, dtype=dt)
    fh = torch.where(fh < height - height // 2, fh, fh - height).view(1, 1, height, 1)
    fw = torch.arange(width, device=dev, dtype=dt)
    fw = torch.where(fw < width - width // 2, fw, fw - width).view(1, 1, 1, width)
    rows = (fh >= -half_h) & (fh < half_h)
    cols = (fw >= -half_w) & (fw < half_w)
    return (rows & cols).to(dt)


def frequency_split(x: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, low)``: float32 magnitudes of the two parts of ``x`` under :func:`low_frequency_mask`, in the
    layout of ``x``."""
    h, w = x.shape[-2:]
    fmt = memory_format_of(x)
    with _autocast_off(x.device.type):  # torch.fft has no bfloat16 kernels
        x = x.float()
        if h < 128 or w < 128:
            return x.abs(), torch.zeros_like(x)
        mask = low_frequency_mask(threshold.float(), h, w)
        spec = torch.fft.fft2(x, norm="forward", dim=(-2, -1))
        low_spec = spec * mask
        high = torch.fft.ifft2(spec - low_spec, norm="forward", dim=(-2, -1)).abs()
        low = torch.fft.ifft2(low_spec, norm="forward", dim=(-2, -1)).abs()
    return high.contiguous(memory_format=fmt), low.contiguous(memory_format=fmt)


class FrequencyRefine(nn.Module):
    """Frequency modulation (official ``FreRefine``): ``proj(low * spatial_gate(high) + high * channel_gate(low))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = nn.ModuleDict({"spatial": nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)})
        mlp = nn.Sequential(
            nn.Conv2d(dim, dim // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(dim // 16, dim, 1, bias=False)
        )
        self.ChannelGate = nn.ModuleDict({"mlp": mlp})
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((high.amax(dim=1, keepdim=True), high.mean(dim=1, keepdim=True)), dim=1)
        pooled = in_layout_of(pooled, high)
        spatial = torch.sigmoid(self.SpatialGate["spatial"](pooled))
        mlp = self.ChannelGate["mlp"]
        channel = torch.sigmoid(
            mlp(low.mean(dim=(-2, -1), keepdim=True)) + mlp(low.amax(dim=(-2, -1), keepdim=True))
        )
        return self.proj(low * spatial + high * channel)


class FreModule(nn.Module):
    """Frequency mining of the image (:func:`frequency_split`) and modulation of the feature ``y`` by its bands."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False, in_dim: int = 3) -> None:
        super().__init__()
        if dim < 16:
            raise UsageError(f"FreModule needs at least 16 channels, got {dim}")
        self.conv1 = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = CrossChannelAttention(dim, dim, num_heads, bias)
        self.channel_cross_h = CrossChannelAttention(dim, dim, num_heads, bias)
        self.channel_cross_agg = CrossChannelAttention(dim, dim, num_heads, bias)
        self.frequency_refine = FrequencyRefine(dim)
        if not bias:  # no gradient reaches them: the low band is zero on maps under 256 pixels
            as_buffers(self.channel_cross_h, "q.weight", "q_dwconv.weight", "temperature")
        self.rate_conv = nn.Sequential(
            nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(), nn.Conv2d(dim // 8, 2, 1, bias=False)
        )
        as_buffers(self.rate_conv, "0.weight", "2.weight")

    def mine(self, image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The high- and low-frequency maps of ``image`` at ``size``, in float32."""
        with _autocast_off(image.device.type):
            x = F.interpolate(image.to(self.conv1.weight.dtype), size, mode="bilinear", align_corners=False)
            x = self.conv1(x)
            threshold = torch.sigmoid(self.rate_conv(x.mean(dim=(-2, -1), keepdim=True)))
        return frequency_split(x, threshold)

    def forward(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        high, low = self.mine(image, (y.shape[-2], y.shape[-1]))
        high = self.channel_cross_l(high.to(y.dtype), y)
        low = self.channel_cross_h(low.to(y.dtype), y)
        agg = self.frequency_refine(low, high)
        return self.channel_cross_agg(y, agg) * self.para1 + y * self.para2


@register_architecture
class AdaIR(RestormerUNet):
    """AdaIR: Restormer's U-Net with a :class:`FreModule` on the latent and after decoder levels 3 and 2.

    Official defaults and keys (:data:`ADAIR_UNUSED_MODULES` are not built). Any ``H, W >= 1`` works.

    Args:
        dim: Channels of the first level (at least 8).
        num_blocks: Transformer blocks per level (levels 1-3 and the latent).
        fre_heads: Heads of the frequency blocks' attentions (default ``heads[2]``).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = AdaIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))
        >>> net(torch.rand(2, 3, 17, 30)).shape
        torch.Size([2, 3, 17, 30])
    """

    unused_modules = tuple(f"fre{i}.{m}" for i in (1, 2, 3) for m in ADAIR_UNUSED_MODULES)

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
            raise UsageError(f"AdaIR needs dim >= 8 (its frequency blocks need 16 channels), got {dim}")
        fre_heads = heads[2] if fre_heads is None else fre_heads
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        self.fre1 = FreModule(dim * 8, fre_heads, bias, in_channels)
        self.fre2 = FreModule(dim * 4, fre_heads, bias, in_channels)
        self.fre3 = FreModule(dim * 2, fre_heads, bias, in_channels)
        for level in (3, 2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *args)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.fre1(ctx, x)

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        if level == 1:  # the refinement follows
            return x
        return (self.fre2 if level == 3 else self.fre3)(ctx, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp, inp), size)

    finetune_groups = {**RESTORMER_GROUPS, "frequency": ("fre1", "fre2", "fre3")}

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A small AdaIR (one block per level, width 16); ``smoke``: width 8, for tests."""
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Restormer's layout plus ``fre1..3.conv1.weight``; ``fre_heads`` from ``fre1``'s temperature."""
        config = _read_restormer_layout(state_dict, *(f"fre{i}.conv1.weight" for i in (1, 2, 3)))
        if config is None:
            return None
        temp = state_dict.get("fre1.channel_cross_l.temperature")
        fh = config["heads"][2] if temp is None else int(temp.shape[0])
        config["fre_heads"] = None if fh == config["heads"][2] else fh
        return config


@register_model
def adair(**kwargs: Any) -> AdaIR:
    """AdaIR, official all-in-one configuration (28,542,130 parameters, 223,956 buffer values)."""
    return AdaIR(**kwargs)


# Released weights. Facts: github.com/c-yn/AdaIR README.md "Testing" (a Google Drive folder), test.py
# (--mode 5 / 6; --ckpt_name "adair5d.ckpt", adair3d.ckpt inferred from it), LICENSE.
for _variant, _file, _mode in (("three_task", "adair3d.ckpt", 5), ("five_task", "adair5d.ckpt", 6)):
    _tasks, _data = ALL_IN_ONE[_variant]
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
