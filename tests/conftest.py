"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _python_sigint_handler() -> None:
    """SIGINT as a user's Python has it: a background job of a non-interactive shell (``cmd &``)
    inherits SIGINT ignored, and the tests of training's signal handling would then see no signal."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
