"""The run's logs: ``train_log.csv``, ``val_log.csv`` and ``history.json``, kept consistent with resumes.

Rows are appended as training goes; when a run resumes from the checkpoint of step ``N``,
:func:`truncate_logs` keeps only the rows with a step up to ``N``, so a resumed run's logs equal an
uninterrupted run's: no duplicated or out-of-order steps.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..io import atomic_write

__all__ = ["LOG_FILES", "append_csv", "read_csv", "truncate_logs", "write_json"]

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
