"""NAFNet's nonlinear-activation-free block (Chen et al. 2022)."""

from __future__ import annotations

import torch
from torch import nn

from .norm import LayerNorm2d

__all__ = ["NAFBlock", "SimpleGate", "SimplifiedChannelAttention"]


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: ``x1 * x2``.

    Shape:
        - Input: :math:`(N, 2C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> SimpleGate()(torch.ones(1, 4, 2, 2)).shape
        torch.Size([1, 2, 2, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class SimplifiedChannelAttention(nn.Sequential):
    """Simplified channel attention: global average pool and a 1x1 conv; returns the channel weights.

    Kept as ``nn.Sequential`` so that the official keys ``sca.1.weight`` / ``sca.1.bias`` match.

    Args:
        channels: Number of channels.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, 1, 1)`
    """

    def __init__(self, channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, kernel_size=1, bias=True))


class NAFBlock(nn.Module):
    """NAFNet block: norm, 1x1 expand, depthwise 3x3, SimpleGate, SCA, 1x1, scaled residual; then a gated FFN.

    Args:
        c: Number of channels.
        dw_expand: Expansion of the first branch (2 in NAFNet).
        ffn_expand: Expansion of the feed-forward branch (2 in NAFNet).
        drop_out_rate: Dropout after each branch.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> NAFBlock(8)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dw, dw, kernel_size=3, padding=1, groups=dw, bias=True)
        self.conv3 = nn.Conv2d(dw // 2, c, kernel_size=1, bias=True)
        self.sca = SimplifiedChannelAttention(dw // 2)
        self.sg = SimpleGate()
        ffn = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn, kernel_size=1, bias=True)
        self.conv5 = nn.Conv2d(ffn // 2, c, kernel_size=1, bias=True)
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3(x * self.sca(x)))
        y = inp + x * self.beta
        x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return y + x * self.gamma
