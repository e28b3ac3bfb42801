"""Journey: a training run is killed, interrupted, restarted, or pointed at the wrong checkpoint.

What the user sees: one line saying where the run starts (``resumed from FILE at step N`` or ``no
checkpoint in DIR: starting at step 0``), checkpoints written by time (``save_every_minutes``) and on
SIGINT / SIGTERM, logs without duplicated steps after a ``kill -9``, and one ``error:`` line naming the
checkpoint when it does not fit the configured model.
"""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from allinone_ir.io import write_image

from .conftest import assert_no_traceback, cli_command, journey_env

pytestmark = pytest.mark.slow  # trains: run by CI and `python -m pytest`, not by `-m "not slow"`

TINY_NAFNET = "{ width = 8, middle_blk_num = 1, enc_blk_nums = [1, 1], dec_blk_nums = [1, 1] }"


def _config(tmp_path: Path, *, max_steps: int, width: int = 8, save_every_minutes: float = 0.002) -> Path:
    """A tiny NAFNet on synthetic rain and noise; checkpoints every ~0.1 s (by time only) and at the end."""
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.png", torch.rand(3, 24, 24, generator=g))
    (tmp_path / "c.toml").write_text(
        f"""
[model]
name = "nafnet"
args = {TINY_NAFNET.replace("width = 8", f"width = {width}")}
[data.train]
type = "synthetic"
clean_dir = "photos"
tasks = ["noise_25", "rain"]
patch_size = 16
repeat = 4
[trainer]
output_dir = "run"
max_steps = {max_steps}
batch_size = 2
log_every = 1
save_every = 0
save_every_minutes = {save_every_minutes}
progress_bar = false
plot = false
device = "cpu"
"""
    )
    return tmp_path / "c.toml"


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    # SIGINT as in an interactive shell, even where the test runner was started with SIGINT ignored
    return subprocess.Popen(
        [*cli_command(), "train", "--config", "c.toml", *args], cwd=tmp_path, env=journey_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_checkpoint(
    proc: subprocess.Popen[str], folder: Path, after: int = 0, timeout: float = 120
) -> None:
    """Wait until the running ``proc`` has written a checkpoint of a step above ``after``."""
    end = time.monotonic() + timeout
    while not (list(folder.glob("step_*.pt")) and _newest_step(folder) > after):
        assert proc.poll() is None, f"training ended before its checkpoint: {proc.communicate()}"
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no checkpoint written in {timeout} s")
        time.sleep(0.02)


def _steps(path: Path) -> list[int]:
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _newest_step(folder: Path) -> int:
    return max(int(p.stem.split("_")[1]) for p in folder.glob("step_*.pt"))


def test_kill_9_then_resume_auto_loses_nothing_and_logs_each_step_once(run_cli, tmp_path: Path) -> None:
    _config(tmp_path, max_steps=200)
    ckpts = tmp_path / "run" / "checkpoints"
    proc = _start(tmp_path)
    _wait_for_checkpoint(proc, ckpts)
    time.sleep(0.1)  # a few more updates (and perhaps time-based checkpoints), then the power cord
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    n = _newest_step(ckpts)
    assert 0 < n < 200 and len(list(ckpts.glob("step_*.pt"))) == 1  # by time, and only the newest kept
    logged = _steps(tmp_path / "run" / "train_log.csv")
    assert logged == list(range(1, len(logged) + 1)) and len(logged) >= n

    result = run_cli("train", "--config", "c.toml", "--resume", "auto")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert result.stderr.splitlines()[0] == f"resumed from {ckpts / f'step_{n:08d}.pt'} at step {n}"
    assert re.search(
        r"^done: 200 steps in .*run; checkpoint .*step_00000200\.pt \(\d+(\.\d)? kB\)$", result.stdout, re.M
    )
    assert _steps(tmp_path / "run" / "train_log.csv") == list(range(1, 201))  # in order, no duplicates
    assert [p.name for p in ckpts.iterdir()] == ["step_00000200.pt"]


def test_sigterm_and_sigint_checkpoint_say_where_and_resume(run_cli, tmp_path: Path) -> None:
    _config(tmp_path, max_steps=100000, save_every_minutes=0.002)
    ckpts = tmp_path / "run" / "checkpoints"
    n = 0
    for sig, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = _start(tmp_path)  # the second time, it resumes from the first's checkpoint
        _wait_for_checkpoint(proc, ckpts, after=n)
        time.sleep(0.1)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # the signal did not stop it: do not leave it running
            proc.kill()
            raise
        assert proc.returncode == status, err
        assert "Traceback" not in out + err
        n = _newest_step(ckpts)
        saved = ckpts / f"step_{n:08d}.pt"
        name = signal.Signals(sig).name
        assert f"received {name}: finishing this update, then writing a checkpoint" in err
        assert err.rstrip().splitlines()[-1] == (
            f"interrupted by {name} at step {n}: saved {saved}; run the same command to resume"
        )
        assert _steps(tmp_path / "run" / "train_log.csv")[-1] == n  # the log ends where the checkpoint is
    result = run_cli("train", "--config", "c.toml", "--max-steps", str(n + 2))
    assert result.returncode == 0, result.output
    assert result.stderr.splitlines()[0] == f"resumed from {saved} at step {n}"
    assert _steps(tmp_path / "run" / "train_log.csv") == list(range(1, n + 3))


def test_resume_never_a_changed_model_and_a_missing_checkpoint(run_cli, tmp_path: Path) -> None:
    config = _config(tmp_path, max_steps=4)
    ckpts = tmp_path / "run" / "checkpoints"
    first = run_cli("train", "--config", "c.toml")
    assert (
        first.returncode == 0
        and first.stderr.splitlines()[0] == f"no checkpoint in {ckpts}: starting at step 0"
    )
    again = run_cli("train", "--config", "c.toml", "--resume", "never", "--max-steps", "2")
    assert again.returncode == 0, again.output
    assert again.stderr.splitlines()[0] == (
        f"resume=never: starting at step 0; this run replaces the 1 checkpoint(s) and the logs of an earlier "
        f"run in {tmp_path / 'run'}"
    )
    assert [p.name for p in ckpts.iterdir()] == ["step_00000002.pt"]
    assert _steps(tmp_path / "run" / "train_log.csv") == [1, 2]

    config.write_text(config.read_text().replace("width = 8", "width = 16"))  # a wider model, same folder
    changed = run_cli("train", "--config", "c.toml")
    assert_no_traceback(changed)
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1  # one line
    assert changed.stderr.startswith(
        f"error: checkpoint {ckpts / 'step_00000002.pt'} does not fit the configured model (NAFNet with width=16; "
        "the checkpoint has width=8: "
    )
    assert "shape mismatches (intro.weight: (8, 3, 3, 3) vs (16, 3, 3, 3)" in changed.stderr
    assert changed.stderr.rstrip().endswith(
        "start again with --resume never (resume='never') or use another --output-dir"
    )

    missing = run_cli("train", "--config", "c.toml", "--resume", "runs/nothing.pt")
    assert missing.returncode == 2 and missing.stderr.startswith(
        f"error: resume checkpoint not found: {tmp_path / 'runs' / 'nothing.pt'}"
    )
    empty = run_cli("train", "--config", "c.toml", "--resume", "")
    assert empty.returncode == 2
    assert empty.stderr == ("error: trainer.resume: expected 'auto', 'never' or a checkpoint path, got ''\n")
