"""The per-level hook points of the U-Net skeletons (Restormer's and NAFNet's).

Levels count from the shallowest (1, full resolution); ``ctx`` is what ``forward`` hands the skeleton.
"""

from __future__ import annotations

from typing import Any

import torch


class UNetHooks:
    """Hook points of a U-Net skeleton; each returns its input unchanged unless a subclass overrides it."""

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the latent (bottleneck) feature before the decoder upsamples it."""
        return x

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the encoder's skip feature of ``level`` before the decoder merges it."""
        return skip

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the output of decoder ``level`` before it is upsampled (or refined, at level 1)."""
        return x
