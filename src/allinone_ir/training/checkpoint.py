"""Training checkpoints on disk: names, rotation, reading, and a one-line diagnosis of a misfit.

A run folder holds ``checkpoints/step_XXXXXXXX.pt`` (everything an exact resume needs: weights,
optimizer, scheduler, scaler, EMA, counters, random states, logs; the newest ``keep_last`` are kept)
and ``checkpoints/best.pt`` (only the validated weights and their metrics). Every file is written
atomically (a temporary file renamed into place), so a ``kill -9`` never leaves a half-written
checkpoint; the temporaries such a kill leaves behind are removed by :func:`remove_stale_temporaries`.

The trainer decides what goes into a checkpoint; this module writes and reads the files:
:func:`write_checkpoint`, :func:`best_weights_state`, :func:`read_checkpoint` /
:func:`read_resume_checkpoint` (resume) and :func:`load_init_weights` (the weights a run starts from).
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

_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def step_checkpoint_name(step: int) -> str:
    """File name of the periodic checkpoint of update ``step``.

    Examples:
        >>> step_checkpoint_name(2000)
        'step_00002000.pt'
    """
    return f"step_{step:08d}.pt"


def periodic_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The ``(step, path)`` of every ``step_*.pt`` in ``folder``, by increasing step (empty if none)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_FILE.fullmatch(p.name))]
    return sorted(found)


def find_latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The periodic checkpoint with the highest step in ``folder``, or ``None``."""
    found = periodic_checkpoints(folder)
    return found[-1][1] if found else None


def rotate_checkpoints(folder: str | os.PathLike[str], step: int, keep_last: int) -> list[Path]:
    """Remove periodic checkpoints after writing the one of ``step``.

    Keeps the ``keep_last`` newest with a step up to ``step``; removes older ones and any with a
    higher step (left by an earlier run in the same folder, which this run now replaces).

    Returns:
        The removed files.
    """
    found = periodic_checkpoints(folder)
    keep = {p for _, p in [x for x in found if x[0] <= step][-keep_last:]}
    removed = [p for _, p in found if p not in keep]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of checkpoints whose writing was killed (``.step_*.pt.*.tmp``, ``.best.pt.*.tmp``).

    Returns:
        The removed files.
    """
    d = Path(folder)
    if not d.is_dir():
        return []
    stale = [p for p in d.iterdir() if re.fullmatch(r"\.(step_\d+|best)\.pt\..+\.tmp", p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def checkpoint_bytes(model: nn.Module, *, optimizer_slots: int = 2, ema: bool = False) -> int:
    """Approximate size of a training checkpoint: weights, Adam's two moments per trainable weight, EMA.

    Args:
        model: The network.
        optimizer_slots: Optimizer tensors per trainable parameter (2 for Adam / AdamW).
        ema: Whether an EMA copy of the weights is saved too.

    Examples:
        >>> checkpoint_bytes(nn.Linear(10, 10, bias=False), ema=True)  # 100 floats x (1 + 2 + 1)
        1600
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights * (2 if ema else 1) + trainable * optimizer_slots


def format_bytes(n: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (powers of 1000).

    Examples:
        >>> format_bytes(566_000_000), format_bytes(2048)
        ('566 MB', '2.0 kB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: If the file does not exist, cannot be read, or is not a training checkpoint
            (e.g. ``best.pt`` or exported weights: no optimizer state).
    """
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
    needed = {"model", "optimizer", "scheduler", "step", "rng"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise CheckpointError(
            f"{p} is not a training checkpoint (no optimizer state or step; best.pt and exported weights hold "
            "only weights): resume from checkpoints/step_*.pt, or start from its weights with trainer.init_weights"
        )
    return state


def write_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Save ``state`` with ``torch.save``, atomically (a killed write leaves the previous file intact).

    A failed write leaves no partial file and no temporary one, and every earlier file as it was.

    Returns:
        The path written.

    Raises:
        OSError: With ``errno.ENOSPC`` when the disk fills up: ``no space left on device while writing
            PATH; earlier checkpoints are intact`` (``torch.save`` itself reports an ``enforce fail ...
            unexpected pos`` ``RuntimeError``); other write errors as they come.

    Examples:
        >>> import tempfile
        >>> p = write_checkpoint(Path(tempfile.mkdtemp()) / "checkpoints" / "x.pt", {"step": 3})
        >>> torch.load(p, weights_only=True)
        {'step': 3}
    """

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a Python file: the system's error comes with torch's
            torch.save(dict(state), f)

    try:
        return atomic_write(path, save)
    except (RuntimeError, OSError) as exc:
        if not _disk_full(exc):
            raise
        full = OSError(f"no space left on device while writing {path}; earlier checkpoints are intact")
        full.errno = errno.ENOSPC
        raise full from exc


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from or while handling, is a full disk or quota."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def plain_metrics(best: Mapping[str, Any]) -> dict[str, Any]:
    """The best-metrics record with plain Python floats (float subclasses such as numpy's become ``float``).

    Args:
        best: ``{"psnr": ..., "ssim": ..., "step": ...}``.

    Returns:
        A new dict that a ``weights_only`` load reads back.

    Examples:
        >>> import numpy as np
        >>> plain_metrics({"psnr": np.float64(30.5), "step": 3})
        {'psnr': 30.5, 'step': 3}
    """
    return {k: float(v) if isinstance(v, float) else v for k, v in best.items()}


def best_weights_state(
    weights: nn.Module, model: nn.Module, *, step: int, best: Mapping[str, Any], ema_weights: bool
) -> dict[str, Any]:
    """What ``best.pt`` holds: the validated weights on the CPU, the architecture, its config and the metrics.

    No optimizer state (a quarter of a training checkpoint with Adam and EMA); it loads with
    :func:`allinone_ir.load_checkpoint`, ``allinone-ir restore --checkpoint`` or ``trainer.init_weights``.

    Args:
        weights: The network whose weights are saved (the EMA copy when there is one).
        model: The trained network (its class and ``config`` name the architecture).
        step: The update the weights are of.
        best: The metrics that made them the best (``psnr``, ``ssim``, ``step``).
        ema_weights: Whether ``weights`` are the EMA ones.

    Returns:
        The dict to save.

    Examples:
        >>> net = nn.Linear(2, 2)
        >>> state = best_weights_state(net, net, step=5, best={"psnr": 30.0, "step": 5}, ema_weights=False)
        >>> sorted(state), state["arch"]
        (['arch', 'best', 'ema_weights', 'model', 'model_config', 'step'], 'Linear')
    """
    return {
        "model": {k: v.detach().cpu().contiguous() for k, v in weights.state_dict().items()},
        "arch": type(model).__name__,
        "model_config": getattr(model, "config", None),
        "step": step,
        "best": plain_metrics(best),
        "ema_weights": ema_weights,
    }


def read_resume_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, *, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read the training checkpoint a run resumes from, and check that its weights fit ``model``.

    Args:
        path: The checkpoint.
        model: The configured network.
        state: The checkpoint's content when it has been read already (only checked then).

    Raises:
        CheckpointError: As :func:`read_checkpoint`, or when the weights do not fit the configured
            network (one line naming the file, the mismatch and the way out).
    """
    state = read_checkpoint(path) if state is None else dict(state)
    misfit = describe_misfit(model, state["model"], state.get("model_config"))
    if misfit is not None:
        raise CheckpointError(
            f"checkpoint {path} does not fit the configured model ({misfit}); start again with "
            "--resume never (resume='never') or use another --output-dir"
        )
    return state


def load_init_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load the weights a run starts from (``trainer.init_weights``) into ``model``, in place.

    Any file :func:`allinone_ir.load_checkpoint` reads will do: a training checkpoint or ``best.pt``
    (the EMA weights when it has them), a ``.safetensors`` file, a ``save_pretrained`` folder or an
    official checkpoint. The network keeps its device, layout and train/eval mode.

    Args:
        model: The configured network.
        path: The checkpoint.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        CheckpointError: If the file cannot be read, or its weights do not fit ``model`` (one line
            naming the file and the mismatch).
        FileNotFoundError: If ``path`` does not exist.

    Examples:
        >>> import tempfile
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> p = write_checkpoint(Path(tempfile.mkdtemp()) / "w.pt", {"model": a.state_dict()})
        >>> load_init_weights(b, p) is b, torch.equal(a.weight, b.weight)
        (True, True)
    """
    from ..hub import load_checkpoint

    training = model.training
    try:
        load_checkpoint(path, model, strict=True)
    except CheckpointError as exc:
        misfit = _misfit_of_file(model, path)
        if misfit is None:
            raise CheckpointError(f"init_weights {path}: {' '.join(str(exc).split())}") from exc
        raise CheckpointError(f"init_weights {path} does not fit the configured model ({misfit})") from exc
    finally:
        model.train(training)
    return model


def _misfit_of_file(model: nn.Module, path: str | os.PathLike[str]) -> str | None:
    """:func:`describe_misfit` of the weights in ``path`` (``None`` if they cannot be read on their own)."""
    from ..hub import load_checkpoint

    try:  # the file's own network, as saved or detected
        theirs = load_checkpoint(path)
    except (CheckpointError, ValueError, TypeError, KeyError, RuntimeError):
        return None
    return describe_misfit(model, theirs.state_dict())


def _show(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def describe_misfit(
    model: nn.Module, state: Mapping[str, torch.Tensor], saved_config: Mapping[str, Any] | None = None
) -> str | None:
    """What keeps ``state`` from loading into ``model``, in one line; ``None`` if it fits.

    Args:
        model: The configured network.
        state: The checkpoint's weights.
        saved_config: The checkpoint's model constructor arguments, to name the differences.

    Examples:
        >>> a, b = nn.Linear(2, 3), nn.Linear(2, 4)
        >>> describe_misfit(a, b.state_dict())
        'Linear: 2 shape mismatches (weight: (4, 2) vs (3, 2), bias: (4,) vs (3,))'
        >>> describe_misfit(a, a.state_dict()) is None
        True
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
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
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_show(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_show(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches ({_show(mismatched, 2)})")
    return f"{name}: " + ", ".join(parts)


def rng_state() -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA) random states, as tensors and plain data (``weights_only``-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the user's global numpy state is what we restore
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
