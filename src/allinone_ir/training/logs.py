"""The run's logs: ``train_log.csv``, ``val_log.csv`` and ``history.json``, kept consistent with resumes.

Rows are appended as training goes; when a run resumes from the checkpoint of step ``N``,
:func:`truncate_logs` keeps only the rows with a step up to ``N``, so a resumed run's logs equal an
uninterrupted run's: no duplicated or out-of-order steps. :class:`RunLog` is what the trainer
keeps: the history in memory, the losses summed since the last logged row, and the files.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__: list[str] = []

#: The CSV logs of a run folder.
LOG_FILES: tuple[str, ...] = ("train_log.csv", "val_log.csv")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""

    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=float)

    atomic_write(path, w)


def read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file (empty if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return [], []
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def append_csv(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append a row; the first row of a new file writes the header (later rows use that header).

    Examples:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "log.csv"
        >>> append_csv(p, {"step": 1, "loss": 0.5}); append_csv(p, {"step": 2, "loss": 0.25, "extra": 1})
        >>> p.read_text().splitlines()
        ['step,loss', '1,0.5', '2,0.25']
    """
    p = Path(path)
    header: list[str] = []
    if p.is_file() and p.stat().st_size > 0:
        with open(p, newline="") as f:
            header = next(csv.reader(f), [])
    new = not header
    with open(p, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header or list(row), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _rewrite_csv(path: Path, header: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, w)


def _step_of(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")  # an unreadable row is dropped


def truncate_logs(folder: str | os.PathLike[str], step: int, history: list[dict[str, Any]]) -> None:
    """Keep only the log rows of steps up to ``step``; write ``history`` (filtered the same way).

    A run that starts at step 0 removes the CSV files (training writes them again).

    Args:
        folder: The run folder.
        step: The step the run continues from.
        history: The history to write to ``history.json``.
    """
    d = Path(folder)
    for name in LOG_FILES:
        p = d / name
        if not p.is_file():
            continue
        header, rows = read_csv(p)
        kept = [r for r in rows if _step_of(r.get("step")) <= step]
        if not kept:
            p.unlink()
        elif len(kept) != len(rows):
            _rewrite_csv(p, header, kept)
    kept_history = [h for h in history if _step_of(h.get("step")) <= step]
    if kept_history or (d / "history.json").is_file():
        write_json(d / "history.json", kept_history)


@dataclass
class RunLog:
    """The logs of one run: its history, the loss window since the last logged row, and their files.

    Every update's losses are summed into the window (:meth:`accumulate`); every ``log_every``
    updates one training row, with the window's means, is appended to ``train_log.csv`` and the
    history (:meth:`log_train`); each validation adds one row per degradation to ``val_log.csv``
    (:meth:`log_val`). ``history.json`` is rewritten after each. The history and the window are part
    of a training checkpoint (:meth:`state_dict`), so a resumed run logs what an uninterrupted one does.

    Attributes:
        folder: The run folder the files are written to.
        history: Every logged row, ``{"kind": "train" | "val", "step": ..., ...}``, in order.
        window: Sums of the losses (``loss``, ``loss_*``) since the last training row, and ``count``.

    Examples:
        >>> import tempfile
        >>> log = RunLog(Path(tempfile.mkdtemp()))
        >>> log.accumulate({"step": 1, "loss": 0.5}); log.accumulate({"step": 2, "loss": 0.25})
        >>> log.log_train({"step": 2, "loss": 0.25, **log.window_means()})
        >>> log.history, (log.folder / "train_log.csv").read_text().splitlines()
        ([{'kind': 'train', 'step': 2, 'loss': 0.375}], ['step,loss', '2,0.375'])
    """

    folder: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=dict)

    def accumulate(self, row: Mapping[str, Any]) -> None:
        """Add one update's losses (the keys ``loss`` and ``loss_*`` of ``row``) to the window."""
        for k, v in row.items():
            if k == "loss" or k.startswith("loss_"):
                self.window[k] = self.window.get(k, 0.0) + float(v)
        self.window["count"] = self.window.get("count", 0.0) + 1

    def window_means(self) -> dict[str, float]:
        """Every loss averaged over the updates since the last training row (the CSV's loss columns)."""
        n = self.window.get("count", 0.0) or 1.0
        return {k: v / n for k, v in self.window.items() if k != "count"}

    def reset_window(self) -> None:
        """Start a new window (after a training row; every process, so that all ranks agree)."""
        self.window = {}

    def log_train(self, row: Mapping[str, Any]) -> None:
        """Append a training row to the history and ``train_log.csv``; rewrite ``history.json``."""
        self.history.append({"kind": "train", **row})
        append_csv(self.folder / "train_log.csv", row)
        write_json(self.folder / "history.json", self.history)

    def log_val(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
        """Append one validation row per degradation (``results``: ``{group: metrics}``) at ``step``."""
        for group, metrics in results.items():
            row = {"step": step, "degradation": group, **metrics}
            self.history.append({"kind": "val", **row})
            append_csv(self.folder / "val_log.csv", row)
        write_json(self.folder / "history.json", self.history)

    def start(self, step: int) -> None:
        """Before the first update of a run that starts at ``step``: cut the files and the history back to it."""
        truncate_logs(self.folder, step, self.history)
        self.history = [h for h in self.history if h.get("step", 0) <= step]

    def state_dict(self) -> dict[str, Any]:
        """The history and the window, as a training checkpoint holds them (``history``, ``log_window``)."""
        return {"history": self.history, "log_window": dict(self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (missing keys: empty)."""
        self.history = list(state.get("history", []))
        self.window = {str(k): float(v) for k, v in state.get("log_window", {}).items()}
