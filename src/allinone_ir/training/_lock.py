"""One training run per output folder: an operating-system lock on ``OUTPUT_DIR/.train.lock``.

The kernel releases the lock when the holding process ends, however it ends (``kill -9`` included).
The file names the holder (process id, host, start time) for a refused run.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import IO

from ..errors import UsageError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]


def _try_lock(f: IO[str]) -> bool:
    """Take the lock on ``f`` without waiting; ``False`` if another open file holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:  # pragma: no cover - a byte far past the holder's text, which stays readable
            f.seek(1 << 20)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            f.seek(0)
    except OSError:
        return False
    return True


class RunFolderLock:
    """The lock of one run folder, held while a :class:`~allinone_ir.training.Trainer` runs.

    Examples:
        >>> import tempfile
        >>> lock = RunFolderLock(tempfile.mkdtemp())
        >>> lock.acquire(); lock.path.is_file()
        True
        >>> lock.release(); lock.path.is_file()
        False
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".train.lock"
        self._file: IO[str] | None = None
        self._created_folder = False

    def acquire(self) -> None:
        """Take the lock at once, or raise :class:`UsageError` naming the holder."""
        if self._file is not None:
            return
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
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
            try:  # a lock on a file that a releasing holder has just removed protects nothing: again
                if os.path.samestat(os.fstat(f.fileno()), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            f.close()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        f.seek(0)
        f.truncate()
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
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:  # closing the file releases the lock; the file itself is left
            file.close()
