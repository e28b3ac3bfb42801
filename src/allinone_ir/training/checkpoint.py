"""The run folder on disk: atomic checkpoints (``checkpoints/step_XXXXXXXX.pt``, ``best.pt``) and its lock."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import random
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, UsageError
from ..hub import load_checkpoint
from ..io import _disk_full, atomic_write

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

__all__: list[str] = []


def _try_lock(f: IO[str]) -> bool:
    """Take the lock on ``f`` without waiting; ``False`` if another open file holds it."""
    try:
        if sys.platform == "win32":  # a byte far past the holder's text, which stays readable
            f.seek(1 << 20)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            f.seek(0)
        else:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class RunFolderLock:
    """The lock (``FOLDER/.train.lock``, naming its holder) of a run folder, held while a Trainer runs."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".train.lock"
        self._file: IO[str] | None = None
        self._created_folder = False

    def acquire(self) -> None:
        """Take the lock at once, or raise :class:`UsageError` naming the holder (:class:`ConfigError`: not a folder)."""
        if self._file is not None:
            return
        self._created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(
                f"trainer.output_dir: {self.folder} is not a folder (a file of that name or above it is in the way)"
            ) from None
        while True:
            f = open(self.path, "a+")  # held open while the run lasts
            if not _try_lock(f):
                f.close()
                try:
                    info = json.loads(self.path.read_text())
                    holder = f"pid {info['pid']} on {info['host']}, started {info['started']}"
                except (OSError, ValueError, KeyError, TypeError):  # being written
                    holder = "another process"
                raise UsageError(
                    f"output folder {self.folder} is in use by another training run ({holder}); "
                    "wait for it to end or stop it, or use another --output-dir (trainer.output_dir)"
                )
            # a lock on a file its holder has just removed: again
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(f.fileno()), os.stat(self.path)):
                    break
            f.close()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        f.truncate(0)
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
        f.flush()
        self._file = f

    def release(self, *, remove_empty_folder: bool = False) -> None:
        """Remove the lock file and release the lock; also the folder if ``acquire`` created it and it is empty."""
        if self._file is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: no one can take the removed file
        finally:
            self._file.close()
            self._file = None
        if remove_empty_folder and self._created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:  # closing the file releases the lock; the file itself is left
            file.close()


def _periodic(folder: Path) -> list[tuple[int, Path]]:
    """The ``(step, path)`` of every ``step_*.pt`` in ``folder``, by increasing step."""
    return sorted((int(p.stem[5:]), p) for p in folder.glob("step_*.pt") if p.stem[5:].isdigit())


def _rotate(folder: Path, step: int, keep_last: int) -> None:
    """Keep the newest ``keep_last`` step_*.pt up to ``step``; remove the others and killed writes' leftovers."""
    kept = [p for s, p in _periodic(folder) if s <= step][-keep_last:]
    for p in folder.glob("*"):
        if re.fullmatch(r"step_\d+\.pt|\.(step_\d+|best)\.pt\..+\.tmp", p.name) and p not in kept:
            p.unlink(missing_ok=True)


def format_bytes(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (powers of 1000)."""
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
        # torch reports a full disk as a RuntimeError raised from the system's error
        full, cause = None, exc  # type: tuple[OSError | None, BaseException | None]
        while full is None and cause is not None:
            full, cause = _disk_full(cause, path), cause.__cause__ or cause.__context__
        if full is None:
            raise
        full.args = (f"{full}; earlier checkpoints are intact",)
        raise full from exc


def best_weights_state(
    weights: nn.Module, model: nn.Module, *, step: int, best: Mapping[str, Any], ema_weights: bool
) -> dict[str, Any]:
    """What ``best.pt`` holds (read by :func:`allinone_ir.load_checkpoint`): ``weights`` on the CPU,
    ``model``'s class and config, the step and the metrics."""
    return {
        "model": {k: v.detach().cpu().contiguous() for k, v in weights.state_dict().items()},
        "arch": type(model).__name__,
        "model_config": getattr(model, "config", None),
        "step": step,
        "best": dict(best),
        "ema_weights": ema_weights,
    }


def load_init_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load the weights of any file :func:`allinone_ir.load_checkpoint` reads into ``model``, in place;
    a :class:`CheckpointError` naming the file if they cannot be read or do not fit."""
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


def _describe_misfit(
    model: nn.Module, state: Mapping[str, torch.Tensor], saved_config: Any = None
) -> str | None:
    """What keeps ``state`` from loading into ``model``, in one line; ``None`` if it fits."""
    expected = model.state_dict()
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    found = (
        ("missing keys", [k for k in expected if k not in state], 3),
        ("unexpected keys", [k for k in state if k not in expected], 3),
        ("shape mismatches", mismatched, 2),
    )
    parts = [
        f"{len(items)} {what} ({', '.join(items[:n])}{', ...' if len(items) > n else ''})"
        for what, items, n in found
        if items
    ]
    if not parts:
        return None
    cfg, name = getattr(model, "config", None), type(model).__name__
    if isinstance(cfg, Mapping) and isinstance(saved_config, Mapping):
        if diff := [k for k in cfg if k in saved_config and saved_config[k] != cfg[k]]:
            ours = ", ".join(f"{k}={cfg[k]}" for k in diff)
            name += f" with {ours}; the checkpoint has {', '.join(f'{k}={saved_config[k]}' for k in diff)}"
    return f"{name}: " + ", ".join(parts)


def _rng_state() -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA) random states, as ``weights_only``-safe data."""
    np_state = np.random.get_state()  # noqa: NPY002 - the user's global state is what a resume restores
    assert isinstance(np_state, tuple)  # the legacy form
    kind, keys, pos, has_gauss, gauss = np_state
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), float(pos), float(has_gauss), float(gauss)],
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
