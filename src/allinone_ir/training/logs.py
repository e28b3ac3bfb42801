"""The run's logs: ``train_log.csv``, ``val_log.csv``, ``history.json`` and ``curves.png``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__: list[str] = []


def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=float)))


def _append_csv(path: Path, row: Mapping[str, Any]) -> None:
    """Append a row; a new file gets the row's keys as its header."""
    header: list[str] = []
    if path.is_file() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header or list(row), extrasaction="ignore")
        if not header:
            w.writeheader()
        w.writerow(row)


@dataclass
class RunLog:
    """The logs of one run, kept in its checkpoints so that a resumed run logs what an uninterrupted one does."""

    folder: Path
    #: Every logged row, ``{"kind": "train" | "val", "step": ..., ...}``, in order.
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Sums of the losses (``loss``, ``loss_*``) since the last training row, and ``count``.
    window: dict[str, float] = field(default_factory=dict)

    def accumulate(self, row: Mapping[str, Any]) -> None:
        for k, v in row.items():
            if k == "loss" or k.startswith("loss_"):
                self.window[k] = self.window.get(k, 0.0) + float(v)
        self.window["count"] = self.window.get("count", 0.0) + 1

    def window_means(self) -> dict[str, float]:
        n = self.window.get("count", 0.0) or 1.0
        return {k: v / n for k, v in self.window.items() if k != "count"}

    def reset_window(self) -> None:
        self.window = {}

    def log_train(self, row: Mapping[str, Any]) -> None:
        self._append("train", [row])

    def log_val(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
        """Append one row per degradation of ``results`` (``{group: metrics}``)."""
        self._append("val", [{"step": step, "degradation": g, **metrics} for g, metrics in results.items()])

    def _append(self, kind: str, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self.history.append({"kind": kind, **row})
            _append_csv(self.folder / f"{kind}_log.csv", row)
        _write_json(self.folder / "history.json", self.history)

    def start(self, step: int) -> None:
        """Drop the rows after ``step`` (where a run starts), in the files too."""
        self.history = [h for h in self.history if h["step"] <= step]
        for kind in ("train", "val"):
            path = self.folder / f"{kind}_log.csv"
            path.unlink(missing_ok=True)
            for h in self.history:
                if h["kind"] == kind:
                    _append_csv(path, {k: v for k, v in h.items() if k != "kind"})
        if self.history or (self.folder / "history.json").is_file():
            _write_json(self.folder / "history.json", self.history)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "log_window": dict(self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.window = {str(k): float(v) for k, v in state.get("log_window", {}).items()}


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Save the training loss and validation PSNR per degradation of ``history`` as a PNG at ``path``
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
    for g in sorted({h["degradation"] for h in val}):
        pts = [h for h in val if h["degradation"] == g]
        axes[0][1].plot([h["step"] for h in pts], [h["psnr"] for h in pts], marker="o", label=g)
    if val:
        axes[0][1].set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR")
        axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
