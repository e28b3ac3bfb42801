"""Journey tests: the command line run in a subprocess, as a user runs it.

Each test takes one journey of a user from the README or the docs (the course task, PIP from
a config, a run killed and resumed, a folder with a bad file, the demo) on a tiny
configuration, and asserts what the user sees: files, numbers, messages and exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CLIResult:
    """What a user sees after running a command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


def cli_command() -> list[str]:
    """The ``allinone-ir`` console script of this environment (``python -m allinone_ir.cli`` without it)."""
    script = Path(sys.executable).with_name("allinone-ir")
    if script.is_file():
        return [str(script)]
    found = shutil.which("allinone-ir")
    return [found] if found else [sys.executable, "-m", "allinone_ir.cli"]


def journey_env(**extra: str) -> dict[str, str]:
    """The environment of a journey: one thread per process (CI has 2 cores), no progress bars' colours."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env.pop("ALLINONE_IR_TRACEBACK", None)
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run ``allinone-ir ARGS...`` in ``cwd`` (default: the test's tmp folder); returns a :class:`CLIResult`."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None):
        proc = subprocess.run(
            [*cli_command(), *map(str, args)],
            cwd=cwd or tmp_path,
            env=env or journey_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    return run


def assert_no_traceback(result: CLIResult) -> None:
    """A user never sees a Python traceback."""
    assert "Traceback (most recent call last)" not in result.output, result.output
