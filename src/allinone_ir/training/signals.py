"""Stop training cleanly on SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler's time limit, ``torchrun``).

The first signal only sets a flag; the trainer finishes the current update, writes a checkpoint
and stops (:class:`TrainingInterrupted`). A second signal of the same kind aborts at once, as
without the handler.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["TrainingInterrupted"]


def signal_name(signum: int) -> str:
    """``2`` -> ``'SIGINT'``.

    Examples:
        >>> signal_name(signal.SIGTERM)
        'SIGTERM'
    """
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint (a :class:`KeyboardInterrupt`).

    Attributes:
        signum: The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: The last completed update.
        checkpoint: The checkpoint written (``None`` on processes other than rank 0).
    """

    def __init__(self, signum: int, step: int, checkpoint: os.PathLike[str] | str | None) -> None:
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        where = f"; saved {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted by {signal_name(signum)} at step {step}{where}")

    @property
    def exit_status(self) -> int:
        """The conventional exit status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class StopSignals:
    """A context manager that turns SIGINT / SIGTERM into :attr:`requested` (the signal number).

    Handlers are installed only in the main thread (elsewhere signals cannot be caught, and the
    flag stays unset) and not for signals that were ignored. After the first signal its previous
    handler comes back, so a second one of the same kind behaves as without this (Ctrl-C raises
    :class:`KeyboardInterrupt`, SIGTERM ends the process); one of another kind is ignored. All
    previous handlers come back on exit.

    Args:
        signals: The signals to catch.
        announce: Print one line on standard error when a signal arrives.

    Examples:
        >>> with StopSignals() as stop:
        ...     os.kill(os.getpid(), signal.SIGINT)
        ...     stop.requested == signal.SIGINT
        True
    """

    def __init__(
        self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), *, announce: bool = False
    ) -> None:
        self.signals = signals
        self.announce = announce
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            return  # a signal of another kind while stopping (torchrun sends SIGTERM after Ctrl-C): ignored
        self.requested = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one of this kind aborts
        if self.announce:
            print(
                f"received {signal_name(signum)}: finishing this update, then writing a checkpoint "
                "(send it again to abort without one)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                previous = signal.getsignal(s)
                if previous == signal.SIG_IGN:
                    continue  # ignored by whoever started us (a background job): leave it so
                self._previous[s] = previous
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
