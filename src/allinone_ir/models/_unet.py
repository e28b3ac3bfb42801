"""The per-level hook points of the U-Net skeletons (:class:`~allinone_ir.models.restormer.RestormerUNet`, NAFNet).

Levels are numbered from the shallowest (1, full resolution) to the deepest; ``ctx`` is what the
network's ``forward`` hands the skeleton (PIP: the degradation weights ``omega``).
"""

from __future__ import annotations

from typing import Any

import torch


class UNetHooks:
    """Hook points of a U-Net skeleton; each returns its input unchanged unless a subclass overrides it.

    A hook returns a tensor the skeleton's next module accepts. Hooks are plain method calls with
    Python ints for ``level``, so ``torch.compile(fullgraph=True)`` and ``torch.export`` trace them.
    """

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the latent (bottleneck) feature before the decoder upsamples it."""
        return x

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the encoder's skip feature of ``level`` before the decoder merges it."""
        return skip

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the output of decoder ``level`` before it is upsampled (or refined, at level 1)."""
        return x
