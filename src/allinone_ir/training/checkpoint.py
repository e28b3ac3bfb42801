"""Training checkpoints on disk: ``checkpoints/step_XXXXXXXX.pt`` (an exact resume) and ``best.pt`` (weights).

Every file is written atomically, so a ``kill -9`` never leaves a half-written checkpoint.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..io import atomic_write

__all__: list[str] = []


def _periodic(folder: Path) -> list[tuple[int, Path]]:
    """The ``(step, path)`` of every ``step_*.pt`` in ``folder``, by increasing step."""
    if not folder.is_dir():
        return []
    return sorted((int(m[1]), p) for p in folder.iterdir() if (m := re.fullmatch(r"step_(\d+)\.pt", p.name)))


def _rotate(folder: Path, step: int, keep_last: int) -> None:
    """Keep the ``keep_last`` newest periodic checkpoints up to ``step``; remove the rest (and any later)."""
    found = _periodic(folder)
    keep = {p for _, p in [x for x in found if x[0] <= step][-keep_last:]}
    for _, p in found:
        if p not in keep:
            p.unlink(missing_ok=True)


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary files of checkpoints whose writing was killed."""
    if folder.is_dir():
        for p in folder.iterdir():
            if re.fullmatch(r"\.(step_\d+|best)\.pt\..+\.tmp", p.name):
                p.unlink(missing_ok=True)


def format_bytes(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (powers of 1000).

    Examples:
        >>> format_bytes(566_000_000), format_bytes(2048)
        ('566 MB', '2.0 kB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"


def _read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training checkpoint (``weights_only``); :class:`CheckpointError` if it is not one."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(
            f"resume checkpoint {p} is a folder; give a checkpoint file (its checkpoints/step_*.pt), or resume "
            "'auto' with that run's output_dir"
        )
    if not p.is_file():
        raise CheckpointError(
            f"resume checkpoint not found: {p} (use resume 'auto', 'never' or an existing file)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "step", "rng"} <= set(state):
        raise CheckpointError(
            f"{p} is not a training checkpoint (no optimizer state or step; best.pt and exported weights hold "
            "only weights): resume from checkpoints/step_*.pt, or start from its weights with trainer.init_weights"
        )
    return state


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Save ``state`` with ``torch.save``, atomically; a full disk is an ``OSError`` (``ENOSPC``) in one line."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a Python file: the system's error comes with torch's
            torch.save(dict(state), f)

    try:
        return atomic_write(path, save)
    except (RuntimeError, OSError) as exc:
        cause: BaseException | None = exc  # torch reports a full disk as a RuntimeError raised from it
        while cause is not None and not (
            isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        ):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        full = OSError(f"no space left on device while writing {path}; earlier checkpoints are intact")
        full.errno = errno.ENOSPC
        raise full from exc


def _plain(best: Mapping[str, Any]) -> dict[str, Any]:
    """The best-metrics record with plain floats (numpy's do not load with ``weights_only``)."""
    return {k: float(v) if isinstance(v, float) else v for k, v in best.items()}


def best_weights_state(
    weights: nn.Module, model: nn.Module, *, step: int, best: Mapping[str, Any], ema_weights: bool
) -> dict[str, Any]:
    """What ``best.pt`` holds: ``weights`` (the EMA copy when there is one) on the CPU, ``model``'s class and
    config, the step and the metrics; :func:`allinone_ir.load_checkpoint` reads it."""
    return {
        "model": {k: v.detach().cpu().contiguous() for k, v in weights.state_dict().items()},
        "arch": type(model).__name__,
        "model_config": getattr(model, "config", None),
        "step": step,
        "best": _plain(best),
        "ema_weights": ema_weights,
    }


def load_init_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load the weights of any file :func:`allinone_ir.load_checkpoint` reads into ``model``, in place.

    Raises:
        CheckpointError: One line naming the file, if it cannot be read or its weights do not fit.
    """
    from ..hub import load_checkpoint

    training = model.training
    try:
        load_checkpoint(path, model, strict=True)
    except CheckpointError as exc:
        try:  # the file's own network, as saved or detected, to name the misfit
            misfit = _describe_misfit(model, load_checkpoint(path).state_dict())
        except (CheckpointError, ValueError, TypeError, KeyError, RuntimeError):
            raise CheckpointError(f"init_weights {path}: {' '.join(str(exc).split())}") from exc
        raise CheckpointError(f"init_weights {path} does not fit the configured model ({misfit})") from exc
    finally:
        model.train(training)
    return model


def _show(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def _describe_misfit(
    model: nn.Module, state: Mapping[str, torch.Tensor], saved_config: Any = None
) -> str | None:
    """What keeps ``state`` from loading into ``model``, in one line; ``None`` if it fits.

    Examples:
        >>> _describe_misfit(nn.Linear(2, 3), nn.Linear(2, 4).state_dict())
        'Linear: 2 shape mismatches (weight: (4, 2) vs (3, 2), bias: (4,) vs (3,))'
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return None
    cfg = getattr(model, "config", None)
    name = type(model).__name__
    if isinstance(cfg, Mapping) and isinstance(saved_config, Mapping):
        diff = [k for k in cfg if k in saved_config and saved_config[k] != cfg[k]]
        if diff:
            ours = ", ".join(f"{k}={cfg[k]}" for k in diff)
            theirs = ", ".join(f"{k}={saved_config[k]}" for k in diff)
            name = f"{name} with {ours}; the checkpoint has {theirs}"
    found = [
        (missing, "missing keys", 3),
        (unexpected, "unexpected keys", 3),
        (mismatched, "shape mismatches", 2),
    ]
    parts = [f"{len(items)} {what} ({_show(items, limit)})" for items, what, limit in found if items]
    return f"{name}: " + ", ".join(parts)


def _rng_state() -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA) random states, as ``weights_only``-safe data."""
    np_state = np.random.get_state()  # noqa: NPY002 - the user's global state is what a resume restores
    assert isinstance(np_state, tuple)  # the legacy form
    kind, keys, pos, has_gauss, gauss = np_state
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), float(pos), float(has_gauss), float(gauss)],
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
