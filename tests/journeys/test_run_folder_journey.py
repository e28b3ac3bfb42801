"""Journey: what can go wrong around a run folder, and what the user sees.

Two ``allinone-ir train`` runs on one ``--output-dir`` (the second is refused at once, naming the
holder; a ``kill -9`` holder leaves no lock behind), a resume with a changed config (a warning names
each change and the value used; ``config.json`` and the schedule follow it), a truncated newest
checkpoint (auto-resume falls back to the newest intact one, says so, keeps the bad file) and a
disk that fills up while a checkpoint is written (one ``error:`` line; earlier checkpoints intact).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from allinone_ir.io import write_image
from allinone_ir.training import warmup_cosine_factor

from .conftest import assert_no_traceback, cli_command, journey_env

pytestmark = pytest.mark.slow  # trains: run by CI and `python -m pytest`, not by `-m "not slow"`

TINY_NAFNET = "{ width = 8, middle_blk_num = 1, enc_blk_nums = [1, 1], dec_blk_nums = [1, 1] }"


def _config(tmp_path: Path, *, max_steps: int, lr: float = 1e-3, extra: str = "", val: bool = False) -> Path:
    """A tiny NAFNet on synthetic rain and noise, a checkpoint every 2 updates (the newest 2 kept)."""
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.png", torch.rand(3, 24, 24, generator=g))
    val_section = (
        '[data.val]\ntype = "synthetic"\nclean_dir = "photos"\ntasks = ["rain"]\npatch_size = 16\n'
        if val
        else ""
    )
    text = f"""
[model]
name = "nafnet"
args = {TINY_NAFNET}
[data.train]
type = "synthetic"
clean_dir = "photos"
tasks = ["noise_25", "rain"]
patch_size = 16
repeat = 4
{val_section}
[trainer]
output_dir = "run"
max_steps = {max_steps}
batch_size = 2
lr = {lr}
warmup_steps = 2
log_every = 1
save_every = 2
save_every_minutes = 0
keep_last = 2
progress_bar = false
plot = false
device = "cpu"
{extra}
"""
    (tmp_path / "c.toml").write_text(textwrap.dedent(text))
    return tmp_path / "c.toml"


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_command(), "train", "--config", "c.toml", *args], cwd=tmp_path, env=journey_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_second_run_on_the_folder_is_refused_and_a_killed_holder_leaves_no_lock(
    run_cli, tmp_path: Path
) -> None:
    _config(tmp_path, max_steps=100000)
    ckpts = tmp_path / "run" / "checkpoints"
    first = _start(tmp_path)
    try:
        end = time.monotonic() + 120
        while not list(ckpts.glob("step_*.pt")):  # the first run is training
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < end, "no checkpoint in 120 s"
            time.sleep(0.05)
        started = time.monotonic()
        second = run_cli(
            "train", "--config", "c.toml", "--max-steps", "3"
        )  # another lr or steps: same answer
        assert time.monotonic() - started < 60  # refused at once, not after the first run
        assert_no_traceback(second)
        assert second.returncode == 2, second.output
        assert second.stderr.count("\n") == 1, second.stderr  # one line
        assert re.fullmatch(
            rf"error: output folder {re.escape(str(tmp_path / 'run'))} is in use by another training run "
            rf"\(pid {first.pid} on {re.escape(socket.gethostname())}, started \d{{4}}-\d\d-\d\dT[^)]+\); wait for "
            r"it to end or stop it, or use another --output-dir \(trainer\.output_dir\)\n",
            second.stderr,
        ), second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    assert (tmp_path / "run" / ".train.lock").is_file()  # left by the kill, but no longer locked
    newest = max(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.pt"))
    after = run_cli("train", "--config", "c.toml", "--max-steps", str(newest + 2))
    assert after.returncode == 0, after.output
    assert after.stderr.splitlines()[0].startswith("resumed from ")
    assert not (tmp_path / "run" / ".train.lock").exists()  # a run that ends removes it


def test_a_changed_config_on_resume_is_announced_applied_and_recorded(run_cli, tmp_path: Path) -> None:
    config = _config(tmp_path, max_steps=4, lr=1e-3)
    assert run_cli("train", "--config", "c.toml").returncode == 0
    config.write_text(config.read_text().replace("lr = 0.001", "lr = 0.0005"))
    result = run_cli("train", "--config", "c.toml", "--max-steps", "8")
    assert result.returncode == 0, result.output
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000004.pt"
    lines = result.stderr.splitlines()
    assert lines[0] == f"resumed from {ckpt} at step 4"
    lr_now = 5e-4 * warmup_cosine_factor(4, max_steps=8, warmup_steps=2, warmup_start_factor=0.1,
                                         min_factor=1e-6 / 5e-4)  # fmt: skip
    assert lines[1] == (
        f"warning: the config differs from checkpoint {ckpt}'s: max_steps 4 -> 8, lr 0.001 -> 0.0005: this run's "
        f"values are used (the learning-rate schedule is this run's, continued at step 4: lr {lr_now:.3g} now); "
        "config.json records what runs"
    )
    # what ran is this run's schedule, at each step; and that is what config.json and the checkpoints say
    logged = {int(r["step"]): float(r["lr"]) for r in _rows(tmp_path / "run" / "train_log.csv")}
    for step in range(5, 9):
        expected = 5e-4 * warmup_cosine_factor(
            step - 1, max_steps=8, warmup_steps=2, warmup_start_factor=0.1, min_factor=1e-6 / 5e-4
        )
        assert logged[step] == pytest.approx(expected, rel=1e-6)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["trainer"]["lr"] == 5e-4
    last = torch.load(tmp_path / "run" / "checkpoints" / "step_00000008.pt", weights_only=True)
    assert last["config"]["lr"] == 5e-4 and last["config"]["max_steps"] == 8

    same = run_cli("train", "--config", "c.toml", "--max-steps", "8")  # nothing changed: nothing said
    assert same.returncode == 0 and "warning" not in same.stderr, same.stderr


def test_auto_resume_falls_back_past_a_truncated_checkpoint_and_keeps_it(run_cli, tmp_path: Path) -> None:
    _config(tmp_path, max_steps=4, val=True, extra="val_every = 2")
    ckpts = tmp_path / "run" / "checkpoints"
    assert run_cli("train", "--config", "c.toml").returncode == 0
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    bad = ckpts / "step_00000004.pt"
    truncated = bad.read_bytes()[: bad.stat().st_size // 2]  # a copy cut short, a disk that lost the tail
    bad.write_bytes(truncated)

    result = run_cli("train", "--config", "c.toml", "--max-steps", "6")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    kept = ckpts / "step_00000004.pt.unreadable"
    lines = result.stderr.splitlines()
    assert lines[0] == f"resumed from {ckpts / 'step_00000002.pt'} at step 2"
    assert lines[1].startswith(f"warning: cannot read checkpoint {bad}: ")
    assert lines[1].endswith(
        f"; resumed from the newest intact checkpoint {ckpts / 'step_00000002.pt'} instead; the unreadable file "
        f"is kept as {kept}"
    )
    assert kept.read_bytes() == truncated  # never deleted, never rotated away
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "best.pt", "step_00000004.pt", "step_00000004.pt.unreadable", "step_00000006.pt",
    ]  # fmt: skip
    assert [int(r["step"]) for r in _rows(tmp_path / "run" / "train_log.csv")] == list(range(1, 7))


def test_auto_resume_with_no_readable_checkpoint_is_one_line(run_cli, tmp_path: Path) -> None:
    _config(tmp_path, max_steps=2)
    ckpts = tmp_path / "run" / "checkpoints"
    assert run_cli("train", "--config", "c.toml").returncode == 0
    (ckpts / "step_00000002.pt").write_bytes(b"")
    result = run_cli("train", "--config", "c.toml", "--max-steps", "4")
    assert_no_traceback(result)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"error: no readable checkpoint in {ckpts} (cannot read checkpoint ")
    assert result.stderr.rstrip().endswith(
        "start again with --resume never (resume='never') or use another --output-dir"
    )
    assert (ckpts / "step_00000002.pt").is_file()  # left as it was


# torch.save on a full disk: the system's ENOSPC while torch's writer is at work, reported by torch as an
# "enforce fail ... unexpected pos" RuntimeError (measured on a 1 MiB tmpfs); here the disk fills up at the
# step-4 checkpoint
_FULL_DISK = """
import errno, sys, torch
from allinone_ir.cli import main

real_save = torch.save

def save(obj, f, *args, **kwargs):
    if ".step_00000004.pt." in getattr(f, "name", str(f)):
        f.write(b"PK\\x03\\x04" + bytes(200))
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    return real_save(obj, f, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_earlier_ones(
    run_cli, tmp_path: Path
) -> None:
    _config(tmp_path, max_steps=6)
    ckpts = tmp_path / "run" / "checkpoints"
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, "train", "--config", "c.toml"],
        cwd=tmp_path, env=journey_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    target = ckpts / "step_00000004.pt"
    assert proc.stderr.splitlines()[-1] == (
        f"error: no space left on device while writing {target}; earlier checkpoints are intact"
    )
    assert sorted(os.listdir(ckpts)) == ["step_00000002.pt"]  # no partial file, no temporary one
    assert torch.load(ckpts / "step_00000002.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "run" / ".train.lock").exists()  # the failed run let go of the folder

    again = run_cli("train", "--config", "c.toml")  # space freed: the run goes on from the intact one
    assert again.returncode == 0, again.output
    assert again.stderr.splitlines()[0] == f"resumed from {ckpts / 'step_00000002.pt'} at step 2"
