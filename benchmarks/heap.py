"""Keep freed CPU memory in the process while a network runs (glibc's ``malloc`` on Linux).

A restoration network allocates and frees feature maps of tens to hundreds of megabytes at every
layer. With glibc's default settings each of them is handed back to the kernel when freed (maps
over 32 MiB are always ``mmap``-ed; the top of the heap is trimmed above 64 MiB free) and faulted in
again, page by page, when the next layer allocates: on a 2-core AMD EPYC that was about 40 % of the
time of a PromptIR forward at 256 px, for the official code and for ours alike. Inside
:func:`retain_cpu_heap` freed memory stays in the heap and is reused at once; when the outermost
block ends, glibc's steady-state thresholds are set back and :func:`malloc_trim` gives the free
memory back to the system, so the resident set after the call is what it would have been. (The
address space stays reserved: a later allocation may reuse a free region of the heap instead of a
fresh ``mmap``, and that region then stays resident until the next block ends.)

A benchmark's own process tuning (``benchmarks/`` only; the library never changes the allocator: use
jemalloc or tcmalloc through ``LD_PRELOAD`` for the same effect in your program). Nothing is done
where it does not apply (not Linux, not glibc, another
allocator in ``LD_PRELOAD``, or malloc tuned by the user through ``MALLOC_*_`` or ``GLIBC_TUNABLES``).
This module does not import torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["retain_cpu_heap"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Inside the block: maps up to 1 GiB come from the heap, and the heap is not trimmed until it has
#: 2 GiB free at its top (the largest value ``mallopt`` takes, a C ``int``).
_RETAIN_MMAP_BYTES = 1 << 30
_RETAIN_TRIM_BYTES = 2**31 - 1
#: glibc's thresholds once its dynamic mmap threshold has reached its ceiling (32 MiB on 64-bit,
#: trim at twice that), which a program handling large buffers reaches at its first large free.
_STEADY_MMAP_BYTES = 32 << 20
_STEADY_TRIM_BYTES = 64 << 20

_lock = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """glibc's ``malloc`` functions, or ``None`` where the process does not use glibc's allocator."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl and others
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def _allocator() -> Any:
    """:func:`_glibc`, or ``None`` when another allocator is preloaded (jemalloc, tcmalloc)."""
    return None if "malloc" in os.environ.get("LD_PRELOAD", "") else _glibc()


def _user_settings() -> bool:
    """Whether the user tuned glibc's malloc (then its settings are left alone)."""
    env = os.environ
    return any(k.startswith("MALLOC_") and k.endswith("_") for k in env) or "malloc" in env.get(
        "GLIBC_TUNABLES", ""
    )


@contextlib.contextmanager
def retain_cpu_heap(enabled: bool = True) -> Iterator[bool]:
    """Keep freed CPU memory in the heap for the duration of the block; give it back at the end.

    Reentrant and thread-safe: only the outermost block changes the settings and trims. Run your
    own CPU loop over a network inside it to get what ``restore()`` and the ``Trainer`` get (on the
    machine above, a PromptIR forward at 256 px took 4.0 s instead of 6.5 s, 512 px 21 s instead of 34 s).
    While the block runs, the resident set stays at the peak of the live tensors instead of falling
    between layers; the memory freed inside is returned when it ends.

    Args:
        enabled: ``False`` makes the block change nothing (``retain_cpu_heap(enabled=dev.type == "cpu")``).

    Yields:
        Whether the settings apply: ``True`` when enabled, on Linux with glibc's allocator and no user settings
        (``MALLOC_*_`` environment variables, ``GLIBC_TUNABLES`` with malloc tunables, an allocator
        in ``LD_PRELOAD``); ``False`` elsewhere, where the block changes nothing.

    Examples:
        >>> import torch
        >>> with retain_cpu_heap():
        ...     y = torch.ones(1024, 1024).sum()
        >>> float(y)
        1048576.0
    """
    global _depth
    libc = _allocator() if enabled and not _user_settings() else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_MMAP_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN_TRIM_BYTES)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_BYTES)
                libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_BYTES)
                libc.malloc_trim(0)


def malloc_trim() -> bool:
    """Return the free memory of glibc's heap to the system (``malloc_trim(0)``).

    Returns:
        Whether glibc's allocator is in use (otherwise nothing is done).

    Examples:
        >>> isinstance(malloc_trim(), bool)
        True
    """
    libc = _allocator()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
