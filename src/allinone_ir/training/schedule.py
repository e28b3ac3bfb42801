"""Learning-rate schedule: linear warm-up, then cosine decay to a floor, stepped per update."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine_factor"]


def warmup_cosine_factor(
    step: int,
    *,
    max_steps: int,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.1,
    min_factor: float = 0.0,
    cosine: bool = True,
) -> float:
    """Multiplier of the peak learning rate at update ``step`` (0-based).

    Warm-up rises linearly from ``warmup_start_factor`` to 1 over ``warmup_steps``;
    then the cosine falls from 1 to ``min_factor`` at ``max_steps`` (or stays at 1 with
    ``cosine=False``).

    Examples:
        >>> [round(warmup_cosine_factor(s, max_steps=10, warmup_steps=2, min_factor=0.0), 3) for s in (0, 1, 2, 6, 10)]
        [0.1, 0.55, 1.0, 0.5, 0.0]
    """
    if warmup_steps and step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if not cosine:
        return 1.0
    span = max(max_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
