"""Gated-Dconv feed-forward network (GDFN) of Restormer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GDFN"]


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: ``project_out(gelu(x1) * x2)``, ``x1, x2 = dwconv(project_in(x))``.

    Shape:
        - Input, output: :math:`(N, C, H, W)`

    Examples:
        >>> GDFN(16)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, 2 * hidden, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)
