"""AdaIR's frequency mining and modulation blocks (Cui et al., ICLR 2025).

- :func:`frequency_split`: the low/high-frequency split of a feature map by a centred
  rectangular mask of the spectrum whose half-size the network predicts per sample;
- :class:`SpatialGate` and :class:`ChannelGate`: the two gates of the bidirectional modulation;
- :class:`FrequencyRefine`: the frequency modulation module (FMoM, official ``FreRefine``);
- :class:`FreModule`: the adaptive frequency learning block (AFLB) that AdaIR puts after the
  latent and after decoder levels 3 and 2.

The modules keep the official attribute names, so official state dicts load with the keys unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .attention import CrossChannelAttention, low_precision_autocast

__all__: list[str] = []


def low_frequency_mask(threshold: torch.Tensor, height: int, width: int, band: int = 128) -> torch.Tensor:
    """AdaIR's low-frequency mask, in the (unshifted) layout of ``torch.fft.fft2``.

    The official code builds, per sample, a mask of the *centred* spectrum that is one on the rows
    ``[H/2 - h', H/2 + h')`` and columns ``[W/2 - w', W/2 + w')``, with
    ``h' = floor((H // band) * t_0)`` and ``w' = floor((W // band) * t_1)`` for the predicted
    ``t \\in (0, 1)^2``, i.e. the frequencies ``-h' <= f < h'`` (and the same for columns). This
    is that mask without the shift and without a Python loop over the batch (so it traces and
    compiles): row ``u`` of the unshifted spectrum has frequency ``u`` or ``u - H``.

    Args:
        threshold: The predicted fractions ``t``.
        height: ``H``.
        width: ``W``.
        band: Pixels per unit of the half-size (128 in AdaIR: maps smaller than that in a direction
            get an empty mask).

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

    ``low = |ifft2(fft2(x) * m)|`` and ``high = |ifft2(fft2(x) * (1 - m))|`` with ``m`` the mask of
    :func:`low_frequency_mask` (both transforms with ``norm="forward"``, as the official code). Runs
    in float32 (``torch.fft`` has no bfloat16 kernels). When the map is smaller than ``band`` in
    either direction the mask is empty, so ``low = 0`` and ``high = |x|`` are returned directly.

    Args:
        x: The map to split.
        threshold: The predicted fractions of :func:`low_frequency_mask`.
        band: See :func:`low_frequency_mask`.

    Returns:
        ``(high, low)``, float32, as the official code orders them.

    Shape:
        - x: :math:`(N, C, H, W)`
        - threshold: :math:`(N, 2, 1, 1)`
        - output: two :math:`(N, C, H, W)` maps

    Examples:
        >>> x = torch.randn(2, 4, 256, 128)
        >>> high, low = frequency_split(x, torch.full((2, 2, 1, 1), 0.7))
        >>> torch.allclose(torch.fft.ifft2(torch.fft.fft2(x)).real, x, atol=1e-5), high.shape
        (True, torch.Size([2, 4, 256, 128]))
    """
    h, w = x.shape[-2:]
    # autocast off around the transforms; "meta" (FLOP counting) and other device types without
    # autocast have none to switch off
    off = (
        torch.autocast(x.device.type, enabled=False)
        if low_precision_autocast(x.device.type)
        else nullcontext()
    )
    with off:
        x = x.float()
        if h // band == 0 or w // band == 0:
            return x.abs(), torch.zeros_like(x)
        mask = low_frequency_mask(threshold.float(), h, w, band)
        spec = torch.fft.fft2(x, norm="forward", dim=(-2, -1))
        low_spec = spec * mask
        high = torch.fft.ifft2(spec - low_spec, norm="forward", dim=(-2, -1)).abs()
        low = torch.fft.ifft2(low_spec, norm="forward", dim=(-2, -1)).abs()
    return high, low


class SpatialGate(nn.Module):
    """A spatial gate: ``sigmoid(conv7x7([max_c x, mean_c x]))`` (AdaIR's H-L unit).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, 1, H, W)`, in (0, 1)

    Examples:
        >>> SpatialGate()(torch.randn(2, 5, 9, 7)).shape
        torch.Size([2, 1, 9, 7])
    """

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.spatial(scale))


class ChannelGate(nn.Module):
    """A channel gate: ``sigmoid(mlp(avgpool x) + mlp(maxpool x))``, mlp ``C -> C/16 -> C`` (the L-H unit).

    Args:
        dim: Channels ``C`` (at least 16).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, 1, 1)`, in (0, 1)

    Examples:
        >>> ChannelGate(32)(torch.randn(2, 32, 9, 7)).shape
        torch.Size([2, 32, 1, 1])
    """

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
    """Frequency modulation module (FMoM): each band gated by the other, summed, projected.

    ``proj(low * SpatialGate(high) + high * ChannelGate(low))``: the high-frequency part sets a
    spatial gate on the low-frequency part and the low-frequency part a channel gate on the
    high-frequency part (official ``FreRefine``).

    Args:
        dim: Channels.

    Shape:
        - low, high: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`

    Examples:
        >>> FrequencyRefine(16)(torch.randn(1, 16, 6, 5), torch.randn(1, 16, 6, 5)).shape
        torch.Size([1, 16, 6, 5])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = SpatialGate()  # official attribute names (state-dict keys)
        self.ChannelGate = ChannelGate(dim)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        spatial, channel = self.SpatialGate(high), self.ChannelGate(low)
        return self.proj(low * spatial + high * channel)


def _as_buffers(module: nn.Module, names: tuple[str, ...] | None = None) -> nn.Module:
    """Turn parameters of ``module`` into buffers of the same names (same state-dict keys, no gradient).

    ``names``: dotted parameter names to convert (default all).
    """
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

    The degraded image is resized to the feature's size and embedded (``conv1``, 3x3); a threshold
    ``t = sigmoid(rate_conv(avgpool(.)))`` per sample sets the low-frequency band of
    :func:`frequency_split`. Each band queries the feature by cross-channel attention
    (``channel_cross_l`` on the high band, ``channel_cross_h`` on the low band, as the official code
    names them), :class:`FrequencyRefine` modulates the two, and the feature queries the result
    (``channel_cross_agg``): ``out = para1 * attn + para2 * y`` with ``para1 = 0``, ``para2 = 1``
    at initialisation.

    Weights no gradient can reach are buffers (same keys and values as the official parameters, so
    DDP needs no ``find_unused_parameters``): ``rate_conv`` (the threshold only sets the integer band
    size) and, with ``bias=False``, ``channel_cross_h``'s ``q.weight``, ``q_dwconv.weight`` and
    ``temperature`` (the low band is zero for maps under ``2 band`` pixels). The official ``conv`` and
    ``score_gen``, unused by its forward, are not built.

    Args:
        dim: Channels of the feature.
        num_heads: Heads of the three cross attentions (must divide ``dim``).
        bias: Whether the attention convolutions have a bias.
        in_dim: Channels of the image.
        band: See :func:`low_frequency_mask`.

    Shape:
        - image: :math:`(N, C_{in}, H_0, W_0)`
        - y: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`

    Examples:
        >>> block = FreModule(16, num_heads=2)
        >>> block(torch.rand(2, 3, 32, 32), torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

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
        if not bias:
            _as_buffers(self.channel_cross_h, ("q.weight", "q_dwconv.weight", "temperature"))
        self.rate_conv = _as_buffers(
            nn.Sequential(
                nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(), nn.Conv2d(dim // 8, 2, 1, bias=False)
            )
        )

    #: Run the image embedding and the threshold in float32 under bf16/fp16 autocast (the split is
    #: float32 anyway, and a rounded threshold could move the integer band size).
    float32: bool = True

    def mine(self, image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The high- and low-frequency maps of ``image`` at ``size`` (the official ``fft``).

        Shape:
            - image: :math:`(N, C_{in}, H_0, W_0)`
            - output: two :math:`(N, C, H, W)` maps with ``(H, W) = size``, float32
        """
        if self.float32 and low_precision_autocast(image.device.type) is not None:
            with torch.autocast(image.device.type, enabled=False):
                x, threshold = self._embed(image.float(), size)
        else:
            x, threshold = self._embed(image, size)
        return frequency_split(x, threshold, self.band)

    def _embed(self, image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedded image at ``size`` and its threshold ``(N, 2, 1, 1)``."""
        x = self.conv1(F.interpolate(image, size, mode="bilinear", align_corners=False))
        return x, torch.sigmoid(self.rate_conv(x.mean(dim=(-2, -1), keepdim=True)))

    def forward(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        high, low = self.mine(image, (y.shape[-2], y.shape[-1]))
        high = self.channel_cross_l(high.to(y.dtype), y)
        low = self.channel_cross_h(low.to(y.dtype), y)
        agg = self.frequency_refine(low, high)
        return self.channel_cross_agg(y, agg) * self.para1 + y * self.para2
