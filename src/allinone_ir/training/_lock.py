"""One training run per output folder: an operating-system lock on ``OUTPUT_DIR/.train.lock``.

The lock is an ``fcntl.flock`` (``msvcrt.locking`` on Windows) on an open file, so the kernel
releases it when the holding process ends, however it ends (``kill -9`` included): a lock never
outlives its run. The file holds the holder's process id, host and start time, which a refused run
names. The file is removed when the lock is released normally; one left by a killed run is
harmless (the next run takes the lock on it).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

from ..errors import UsageError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

LOCK_NAME = ".train.lock"
_WINDOWS_OFFSET = 1 << 20  # msvcrt locks a byte range: one far past the holder's text, which stays readable


def _try_lock(f: IO[str]) -> bool:
    """Take the lock on ``f`` without waiting; ``False`` if another open file holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True
    if msvcrt is not None:  # pragma: no cover - Windows
        f.seek(_WINDOWS_OFFSET)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            f.seek(0)
        return True
    return True  # pragma: no cover - no locking on this platform: runs are not protected


def _holder(path: Path) -> str:
    """``pid N on HOST, started TIME`` from the lock file (``another process`` while it is being written)."""
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunFolderLock:
    """The lock of one run folder, held by this process while a :class:`~allinone_ir.training.Trainer` runs.

    Args:
        folder: The run's output folder (created when the lock is taken).

    Examples:
        >>> import tempfile
        >>> lock = RunFolderLock(tempfile.mkdtemp())
        >>> lock.acquire(); lock.held
        True
        >>> lock.release(); lock.held
        False
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._file: IO[str] | None = None
        self._created_folder = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock at once, or refuse.

        Raises:
            UsageError: If another run holds it (one line naming the folder and the holder: pid, host,
                start time).
        """
        if self._file is not None:
            return
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")  # held open while the run lasts
            if not _try_lock(f):
                f.close()
                raise UsageError(
                    f"output folder {self.folder} is in use by another training run ({_holder(self.path)}); "
                    "wait for it to end or stop it, or use another --output-dir (trainer.output_dir)"
                )
            try:  # a lock on a file that a releasing holder has just removed protects nothing: take it again
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        f.seek(0)
        f.truncate()
        f.write(json.dumps(info) + "\n")
        f.flush()
        self._file = f

    def release(self, *, remove_empty_folder: bool = False) -> None:
        """Remove the lock file and release the lock (nothing if not held).

        Args:
            remove_empty_folder: Also remove the folder if :meth:`acquire` created it and it is empty
                (a run that failed before writing anything leaves nothing behind).
        """
        if self._file is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: no one can take the removed file
        finally:
            self._file.close()
            self._file = None
        if remove_empty_folder and self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:  # closing the file releases the lock; the file itself is left
            file.close()
