"""Stop training cleanly on SIGINT (Ctrl-C) or SIGTERM: finish the update, write a checkpoint, stop."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint (a :class:`KeyboardInterrupt`).

    Attributes:
        signum: The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: The last completed update.
        checkpoint: The checkpoint written (``None`` on processes other than rank 0).
        exit_status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, checkpoint: os.PathLike[str] | str | None) -> None:
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        self.exit_status = 128 + self.signum
        where = f": saved {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}{where}")


class _StopSignals:
    """Inside, a first SIGINT / SIGTERM (main thread, unless ignored) only sets ``requested``; a second acts."""

    def __init__(self, *, announce: bool) -> None:
        self.announce, self.requested = announce, 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return  # a signal of another kind while stopping (torchrun sends SIGTERM after Ctrl-C)
        self.requested = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one of this kind aborts
        if self.announce:
            print(
                f"received {signal.Signals(signum).name}: finishing this update, then writing a checkpoint "
                "(send it again to abort without one)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(s)
                if previous != signal.SIG_IGN:  # ignored by whoever started us (a background job)
                    self._previous[s] = previous
                    signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
