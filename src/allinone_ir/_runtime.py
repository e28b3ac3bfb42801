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
    """The autocast dtype of a name of :data:`PRECISIONS`, a torch dtype or ``None``: ``None`` for float32.

    Raises:
        UsageError: For an unknown name.

    Examples:
        >>> low_precision_dtype("bf16"), low_precision_dtype(torch.float32), low_precision_dtype(None)
        (torch.bfloat16, None, None)
    """
    if isinstance(dtype, str):
        if dtype not in PRECISIONS:
            raise UsageError(f"dtype must be one of {sorted(PRECISIONS)}, got {dtype!r}")
        dtype = PRECISIONS[dtype]
    return None if dtype in (None, torch.float32) else dtype


def autocast(
    device: str | torch.device, dtype: str | torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type for a low ``dtype`` (:func:`low_precision_dtype`), else a null context.

    Examples:
        >>> with autocast("cpu", "bf16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    low = low_precision_dtype(dtype)
    if low is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=low)


def progress_bar(
    iterable: Iterable[Any] | None = None, *, warn: bool = False, stacklevel: int = 2, **options: Any
) -> Any:
    """A tqdm bar over ``iterable`` (``None``: give ``total``, update by hand), or ``None`` without tqdm.

    ``warn``: a ``RuntimeWarning`` (at ``stacklevel`` from the caller) when tqdm is missing;
    ``options`` go to ``tqdm``.
    """
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
