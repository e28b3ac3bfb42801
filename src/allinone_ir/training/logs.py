"""The run's logs: ``train_log.csv``, ``val_log.csv`` and ``history.json``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
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
        """Add one update's losses (``loss`` and ``loss_*``) to the window."""
        for k, v in row.items():
            if k == "loss" or k.startswith("loss_"):
                self.window[k] = self.window.get(k, 0.0) + float(v)
        self.window["count"] = self.window.get("count", 0.0) + 1

    def window_means(self) -> dict[str, float]:
        """Every loss averaged over the updates since the last training row."""
        n = self.window.get("count", 0.0) or 1.0
        return {k: v / n for k, v in self.window.items() if k != "count"}

    def reset_window(self) -> None:
        """Start a new window (on every process, so that all ranks agree)."""
        self.window = {}

    def log_train(self, row: Mapping[str, Any]) -> None:
        """Append a training row."""
        self.history.append({"kind": "train", **row})
        _append_csv(self.folder / "train_log.csv", row)
        _write_json(self.folder / "history.json", self.history)

    def log_val(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
        """Append one row per degradation of ``results`` (``{group: metrics}``)."""
        for group, metrics in results.items():
            row = {"step": step, "degradation": group, **metrics}
            self.history.append({"kind": "val", **row})
            _append_csv(self.folder / "val_log.csv", row)
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
        """The history and the window, as a training checkpoint holds them."""
        return {"history": self.history, "log_window": dict(self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.history = list(state.get("history", []))
        self.window = {str(k): float(v) for k, v in state.get("log_window", {}).items()}
