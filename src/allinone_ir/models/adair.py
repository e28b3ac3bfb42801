"""AdaIR (Cui et al., ICLR 2025): Restormer with frequency mining and modulation in the decoder.

The modules keep the official attribute names, so official state dicts load with the keys unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.attention import CrossChannelAttention, low_precision_autocast
from ..layers.norm import NormKind
from ._base import drop_unused_modules
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import RestormerUNet

__all__ = ["AdaIR"]

#: Submodules of each official ``FreModule`` (``fre1..3``) that its forward never uses; their
#: checkpoint keys are dropped on load.
ADAIR_UNUSED_MODULES: tuple[str, ...] = ("conv", "score_gen")


def low_frequency_mask(threshold: torch.Tensor, height: int, width: int, band: int = 128) -> torch.Tensor:
    """AdaIR's low-frequency mask, in the (unshifted) layout of ``torch.fft.fft2``.

    One on the frequencies ``-h' <= f < h'`` (rows) and ``-w' <= f < w'`` (columns), with
    ``h' = floor((H // band) * t_0)`` and ``w' = floor((W // band) * t_1)``: the official centred
    rectangle, without the shift and without a loop over the batch (so it traces and compiles).

    Args:
        threshold: The predicted fractions ``t``.
        height: ``H``.
        width: ``W``.
        band: Pixels per unit of the half-size (128 in AdaIR).

    Returns:
        The mask (0 or 1) with the dtype of ``threshold``.

    Shape:
        - threshold: :math:`(N, 2, 1, 1)`
        - output: :math:`(N, 1, H, W)`

    Examples:
        >>> m = low_frequency_mask(torch.full((1, 2, 1, 1), 0.9), 256, 384)
        >>> m.sum().item(), m[0, 0, 0, 0].item(), m[0, 0, -1, -2].item(), m[0, 0, 1, 0].item()
        (8.0, 1.0, 1.0, 0.0)
    """
    half_h = torch.floor((height // band) * threshold[:, 0:1])  # (N, 1, 1, 1)
    half_w = torch.floor((width // band) * threshold[:, 1:2])
    dev, dt = threshold.device, threshold.dtype
    fh = torch.arange(height, device=dev, dtype=dt)
    fh = torch.where(fh < height - height // 2, fh, fh - height).view(1, 1, height, 1)
    fw = torch.arange(width, device=dev, dtype=dt)
    fw = torch.where(fw < width - width // 2, fw, fw - width).view(1, 1, 1, width)
    rows = (fh >= -half_h) & (fh < half_h)
    cols = (fw >= -half_w) & (fw < half_w)
    return (rows & cols).to(dt)


def frequency_split(
    x: torch.Tensor, threshold: torch.Tensor, band: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a map into the magnitudes of its high- and low-frequency parts (AdaIR's ``fft``).

    ``low = |ifft2(fft2(x) * m)|``, ``high = |ifft2(fft2(x) * (1 - m))|`` with ``m`` from
    :func:`low_frequency_mask`, in float32 (``torch.fft`` has no bfloat16 kernels).

    Args:
        x: The map to split.
        threshold: The predicted fractions of :func:`low_frequency_mask`.
        band: See :func:`low_frequency_mask`.

    Returns:
        ``(high, low)``, float32, as the official code orders them.

    Shape:
        - x: :math:`(N, C, H, W)`; threshold: :math:`(N, 2, 1, 1)`
        - output: two :math:`(N, C, H, W)` maps

    Examples:
        >>> x = torch.randn(2, 4, 256, 128)
        >>> high, low = frequency_split(x, torch.full((2, 2, 1, 1), 0.7))
        >>> torch.allclose(torch.fft.ifft2(torch.fft.fft2(x)).real, x, atol=1e-5), high.shape
        (True, torch.Size([2, 4, 256, 128]))
    """
    h, w = x.shape[-2:]
    # autocast off around the transforms ("meta" and other device types without autocast have none)
    off = (
        torch.autocast(x.device.type, enabled=False)
        if low_precision_autocast(x.device.type)
        else nullcontext()
    )
    with off:
        x = x.float()
        if h // band == 0 or w // band == 0:  # an empty mask
            return x.abs(), torch.zeros_like(x)
        mask = low_frequency_mask(threshold.float(), h, w, band)
        spec = torch.fft.fft2(x, norm="forward", dim=(-2, -1))
        low_spec = spec * mask
        high = torch.fft.ifft2(spec - low_spec, norm="forward", dim=(-2, -1)).abs()
        low = torch.fft.ifft2(low_spec, norm="forward", dim=(-2, -1)).abs()
    return high, low


class SpatialGate(nn.Module):
    """``sigmoid(conv7x7([max_c x, mean_c x]))``: a ``(N, 1, H, W)`` gate (AdaIR's H-L unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.spatial(scale))


class ChannelGate(nn.Module):
    """``sigmoid(mlp(avgpool x) + mlp(maxpool x))``, mlp ``C -> C/16 -> C``: a ``(N, C, 1, 1)`` gate (the L-H unit)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 16:
            raise UsageError(f"ChannelGate needs at least 16 channels (it reduces them 16-fold), got {dim}")
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, dim // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(dim // 16, dim, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(-2, -1), keepdim=True))
        mx = self.mlp(x.amax(dim=(-2, -1), keepdim=True))
        return torch.sigmoid(avg + mx)


class FrequencyRefine(nn.Module):
    """Frequency modulation module (official ``FreRefine``): ``proj(low * SpatialGate(high) + high * ChannelGate(low))``.

    Shape:
        - low, high: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = SpatialGate()  # official attribute names (state-dict keys)
        self.ChannelGate = ChannelGate(dim)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.proj(low * self.SpatialGate(high) + high * self.ChannelGate(low))


def _as_buffers(module: nn.Module, names: tuple[str, ...] | None = None) -> nn.Module:
    """Turn the parameters ``names`` (dotted, default all) of ``module`` into buffers of the same names."""
    for full, p in list(module.named_parameters()):
        if names is not None and full not in names:
            continue
        owner_name, _, name = full.rpartition(".")
        owner = module.get_submodule(owner_name)
        delattr(owner, name)
        owner.register_buffer(name, p.detach())
    return module


class FreModule(nn.Module):
    """Adaptive frequency learning block (AFLB): frequency mining of the image, modulation of a feature.

    The image, resized to the feature and embedded (``conv1``), is split by :func:`frequency_split` with
    a per-sample threshold ``sigmoid(rate_conv(avgpool(.)))``. Each band queries the feature by cross
    attention (``channel_cross_l`` on the high band, ``channel_cross_h`` on the low band, the official
    names), :class:`FrequencyRefine` merges them and the feature queries the result
    (``channel_cross_agg``): ``out = para1 * attn + para2 * y``. Weights no gradient reaches are
    buffers (same keys; DDP needs no ``find_unused_parameters``): ``rate_conv`` and, with
    ``bias=False``, ``channel_cross_h``'s ``q.weight``, ``q_dwconv.weight`` and ``temperature``.

    Args:
        dim: Channels of the feature (at least 16).
        num_heads: Heads of the three cross attentions (must divide ``dim``).
        bias: Whether the attention convolutions have a bias.
        in_dim: Channels of the image.
        band: See :func:`low_frequency_mask`.

    Shape:
        - image: :math:`(N, C_{in}, H_0, W_0)`; y: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`

    Examples:
        >>> block = FreModule(16, num_heads=2)
        >>> block(torch.rand(2, 3, 32, 32), torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    #: Run the image embedding and the threshold in float32 under bf16/fp16 autocast.
    float32: bool = True

    def __init__(
        self, dim: int, num_heads: int, bias: bool = False, in_dim: int = 3, band: int = 128
    ) -> None:
        super().__init__()
        if dim < 16:
            raise UsageError(f"FreModule needs at least 16 channels, got {dim}")
        self.band = band
        self.conv1 = nn.Conv2d(in_dim, dim, kernel_size=3, padding=1, bias=False)
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = CrossChannelAttention(dim, dim, num_heads, bias)
        self.channel_cross_h = CrossChannelAttention(dim, dim, num_heads, bias)
        self.channel_cross_agg = CrossChannelAttention(dim, dim, num_heads, bias)
        self.frequency_refine = FrequencyRefine(dim)
        if not bias:  # the low band is zero for maps under 2 band pixels
            _as_buffers(self.channel_cross_h, ("q.weight", "q_dwconv.weight", "temperature"))
        self.rate_conv = _as_buffers(
            nn.Sequential(
                nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(), nn.Conv2d(dim // 8, 2, 1, bias=False)
            )
        )

    def mine(self, image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The high- and low-frequency maps of ``image`` at ``size``, float32 (the official ``fft``)."""
        if self.float32 and low_precision_autocast(image.device.type) is not None:
            with torch.autocast(image.device.type, enabled=False):
                x, threshold = self._embed(image.float(), size)
        else:
            x, threshold = self._embed(image, size)
        return frequency_split(x, threshold, self.band)

    def _embed(self, image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(F.interpolate(image, size, mode="bilinear", align_corners=False))
        return x, torch.sigmoid(self.rate_conv(x.mean(dim=(-2, -1), keepdim=True)))

    def forward(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        high, low = self.mine(image, (y.shape[-2], y.shape[-1]))
        high = self.channel_cross_l(high.to(y.dtype), y)
        low = self.channel_cross_h(low.to(y.dtype), y)
        agg = self.frequency_refine(low, high)
        return self.channel_cross_agg(y, agg) * self.para1 + y * self.para2


@register_architecture
class AdaIR(RestormerUNet):
    """AdaIR: all-in-one restoration by frequency mining and modulation.

    Restormer's U-Net (:class:`~allinone_ir.models.restormer.RestormerUNet`) with a :class:`FreModule`
    where PromptIR has its prompt blocks: on the latent (``fre1``) and on the outputs of decoder levels
    3 (``fre2``) and 2 (``fre3``). Defaults are the official configuration (28,542,130 parameters; the
    unused :data:`ADAIR_UNUSED_MODULES` are not built and dropped on load). State-dict keys equal the
    official ones. Any ``H, W >= 1`` works (reflect padding to a multiple of 8, output cropped back);
    the frequency blocks read the padded image.

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level (at least 8).
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
    fre1: FreModule
    fre2: FreModule
    fre3: FreModule

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

    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "decoder": ("up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
        "frequency": ("fre1", "fre2", "fre3"),
    }

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A small AdaIR (one block per level, width 16); ``smoke``: width 8, for tests."""
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Restormer's layout plus ``fre1..3.conv1.weight``; the frequency heads from ``fre1``'s temperature."""
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
        """Drop the keys of the unused ``fre*.conv`` and ``fre*.score_gen`` (:data:`ADAIR_UNUSED_MODULES`)."""
        unused = [f"fre{i}.{m}" for i in (1, 2, 3) for m in ADAIR_UNUSED_MODULES]
        return drop_unused_modules(state_dict, model, unused)


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
