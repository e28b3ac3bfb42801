"""Exponential moving average of model weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["ModelEMA"]


class ModelEMA(nn.Module):
    r"""A frozen copy of a model whose weights track :math:`w_{ema} \leftarrow d\,w_{ema} + (1 - d)\,w`.

    Floating-point parameters and buffers are averaged; other buffers are copied. Calling it runs the copy.

    Args:
        model: The model to track (its current weights start the average).
        decay: The decay ``d``, in (0, 1).

    Examples:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> ema = ModelEMA(net, decay=0.5)
        >>> w0 = float(ema.module.weight)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> ema.update(net)
        >>> round(float(ema.module.weight), 4) == round(0.5 * w0 + 0.5, 4)
        True
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise UsageError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        src = model.state_dict()
        for name, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[name].detach().to(v.dtype), 1.0 - self.decay)
            else:
                v.copy_(src[name])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
