"""The run's curves: ``curves.png`` (training loss; validation PSNR per degradation), with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__: list[str] = []


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Save the training loss and validation PSNR of ``history`` (:attr:`.RunLog.history`) as a PNG at ``path``
    (returned); ``None`` without matplotlib or without training rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [h for h in history if h["kind"] == "train"]
    val = [h for h in history if h["kind"] == "val"]
    if not train:
        return None
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(10 if val else 5, 3.5), squeeze=False)
    losses = [h["loss"] for h in train]
    axes[0][0].plot([h["step"] for h in train], losses)
    axes[0][0].set(
        xlabel="step", ylabel="training loss", yscale="log" if min(losses) > 0 else "linear", title="loss"
    )
    if val:
        for g in sorted({h["degradation"] for h in val}):
            pts = [h for h in val if h["degradation"] == g]
            axes[0][1].plot([h["step"] for h in pts], [h["psnr"] for h in pts], marker="o", label=g)
        axes[0][1].set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR")
        axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
