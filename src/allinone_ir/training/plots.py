"""The run's curves: ``curves.png`` (training loss; validation PSNR per degradation), with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__: list[str] = []


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Save the training loss and the validation PSNR per degradation of a run as one PNG.

    The loss axis is logarithmic where every loss is positive (a PSNR loss, for one, is negative).

    Args:
        history: The run's rows (:attr:`allinone_ir.training.logs.RunLog.history`): ``{"kind": "train",
            "step", "loss", ...}`` and ``{"kind": "val", "step", "degradation", "psnr", ...}``.
        path: The PNG file to write (atomically).

    Returns:
        The PNG path, or ``None`` without matplotlib or without training rows.

    Examples:
        >>> import tempfile
        >>> rows = [{"kind": "train", "step": s, "loss": 1 / s} for s in (1, 2, 3)]
        >>> rows.append({"kind": "val", "step": 3, "degradation": "rain", "psnr": 30.0})
        >>> plot_training_curves(rows, Path(tempfile.mkdtemp()) / "curves.png").name
        'curves.png'
        >>> plot_training_curves([], Path(tempfile.mkdtemp()) / "none.png") is None
        True
    """
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
    ax = axes[0][0]
    losses = [h["loss"] for h in train]
    ax.plot([h["step"] for h in train], losses)
    ax.set(xlabel="step", ylabel="training loss", yscale="log" if min(losses) > 0 else "linear", title="loss")
    if val:
        ax = axes[0][1]
        for g in sorted({h["degradation"] for h in val}):
            pts = [h for h in val if h["degradation"] == g]
            ax.plot([h["step"] for h in pts], [h["psnr"] for h in pts], marker="o", label=g)
        ax.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
