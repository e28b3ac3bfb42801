"""A U-Net level: a sequence of blocks with optional activation checkpointing."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__: list[str] = []


class Stage(nn.Sequential):
    """``nn.Sequential`` that recomputes its activations in the backward when ``grad_checkpointing``."""

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.grad_checkpointing and torch.is_grad_enabled() and len(self) > 0:
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)
