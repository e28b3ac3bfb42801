"""The autocast context and the progress bar that the library and the command line share."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from .errors import UsageError

#: Compute dtypes by name, as the options and configs spell them (``--dtype``, ``trainer.precision``).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def low_precision_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype of a name of :data:`PRECISIONS` or a torch dtype (``None`` for float32 or None)."""
    if isinstance(dtype, str):
        if dtype not in PRECISIONS:
            raise UsageError(f"dtype must be one of {sorted(PRECISIONS)}, got {dtype!r}")
        dtype = PRECISIONS[dtype]
    if dtype is not None and dtype not in PRECISIONS.values():
        raise UsageError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return None if dtype in (None, torch.float32) else dtype


def device_problem(
    name: str | torch.device, runner: str = "the library", *, auto: bool = False
) -> str | None:
    """Why ``name`` is not a device this machine runs ``runner`` on (``"auto"`` too if ``auto``); ``None`` if it is."""
    if auto and name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        also = "'auto' or " if auto else ""
        return f"expected {also}a device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {name!r}"
    count = {"cpu": 1, "cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    if dev.type not in count:
        return f"{str(name)!r} is not a device {runner} runs on (cpu, cuda, mps)"
    if dev.type != "cpu" and (dev.index or 0) >= count[dev.type]:
        kind = dev.type.upper()
        have = f"{count[dev.type]} {kind} device(s)" if count[dev.type] else f"no {kind}"
        return f"{str(name)!r} is not available (this machine has {have})"
    return None


def autocast(
    device: str | torch.device, dtype: str | torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type for a low ``dtype``, else a null context."""
    low = low_precision_dtype(dtype)
    return contextlib.nullcontext() if low is None else torch.autocast(torch.device(device).type, dtype=low)


def progress_bar(
    iterable: Iterable[Any] | None = None, *, warn: bool = False, stacklevel: int = 2, **options: Any
) -> Any:
    """A tqdm bar over ``iterable`` (or ``total``), or ``None`` without tqdm (then warns if ``warn``)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if warn:
            warnings.warn(
                "progress bars need tqdm: pip install 'allinone-ir[progress]'",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
        return None
    return tqdm(iterable, **options)
