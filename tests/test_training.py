"""Trainer: schedule, config errors, exact resume, DDP equivalence, AMP, NaN stop, PIP plumbing, CLI, learning."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import socket
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import create_model
from allinone_ir.cli import main
from allinone_ir.data import SyntheticDegradationDataset
from allinone_ir.errors import CheckpointError, DatasetError
from allinone_ir.io import read_image, write_image
from allinone_ir.models import AuxiliaryLoss, RestorationModel
from allinone_ir.training import (
    LossTerm,
    Trainer,
    TrainerConfig,
    TrainingDivergedError,
    TrainingInterrupted,
    freeze,
    module_groups,
    unfreeze,
    warmup_cosine_factor,
)
from allinone_ir.training.cli import ConfigError, build_from_config, load_config

from .tiny_configs import TINY

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "allinone_ir" / "configs"


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One intra-op thread: tiny tensors gain nothing from more, and a shared machine loses a lot."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_promptir() -> nn.Module:
    return create_model("promptir", **TINY["promptir"])


def _tiny_nafnet() -> nn.Module:
    return create_model("nafnet", **TINY["nafnet"])


def _data(n: int = 4, size: int = 24, patch: int = 16) -> SyntheticDegradationDataset:
    g = torch.Generator().manual_seed(0)
    return SyntheticDegradationDataset(
        [torch.rand(3, size, size, generator=g) for _ in range(n)],
        tasks=["noise_25", "rain"],
        patch_size=patch,
    )


def _cfg(tmp: Path, **kw: Any) -> TrainerConfig:
    base = dict(
        output_dir=str(tmp), max_steps=4, batch_size=2, progress_bar=False, plot=False, log_every=1, lr=1e-3
    )
    base.update(kw)
    return TrainerConfig(**base)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if atol == 0 else torch.allclose(a[k], b[k], atol=atol) for k in a
    )


def test_schedule_warmup_cosine_floor() -> None:
    f = [
        warmup_cosine_factor(s, max_steps=10, warmup_steps=2, warmup_start_factor=0.1, min_factor=0.01)
        for s in range(11)
    ]
    assert f[0] == pytest.approx(0.1) and f[1] == pytest.approx(0.55) and f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx(0.01 + 0.99 * 0.5) and f[10] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(f[2:]))
    assert warmup_cosine_factor(50, max_steps=10, cosine=True, min_factor=0.2) == pytest.approx(0.2)
    assert warmup_cosine_factor(5, max_steps=10, cosine=False) == 1.0


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"TrainerConfig\.batch_size: expected an integer >= 1, got 0"):
        TrainerConfig(batch_size=0)
    with pytest.raises(TypeError, match=r"TrainerConfig\.precision: expected one of 'fp32', 'bf16', 'fp16'"):
        TrainerConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"TrainerConfig\.max_steps: expected an integer >= 1, got 2\.5"):
        TrainerConfig(max_steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown TrainerConfig key\(s\) \['lr_max'\]"):
        TrainerConfig.from_dict({"lr_max": 1.0})
    with pytest.raises(ValueError, match="min_lr"):
        TrainerConfig(lr=1e-4, min_lr=1e-3)
    cfg = TrainerConfig.from_dict({"betas": [0.9, 0.99], "trainable": ["output"]})
    assert cfg.betas == (0.9, 0.99) and TrainerConfig.from_dict(cfg.to_dict()) == cfg


def test_freeze_unfreeze_groups() -> None:
    net = _tiny_promptir()
    total = sum(p.numel() for p in net.parameters())
    assert freeze(net) == total
    n = unfreeze(net, ["refinement", "output", "prompt*"])
    groups = module_groups(net)
    assert n == sum(groups[g][1] for g in ("refinement", "output", "prompt1", "prompt2", "prompt3"))
    assert groups["output"][0] == groups["output"][1] and groups["latent"][0] == 0
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == n
    with pytest.raises(ValueError, match="no parameters match \\['decoder9'\\]"):
        unfreeze(net, ["decoder9"])


def test_resume_is_exact(tmp_path: Path) -> None:
    kw = dict(max_steps=6, save_every=3, grad_accum_steps=2, grad_clip=0.5, ema_decay=0.9, warmup_steps=2)
    torch.manual_seed(0)
    full = Trainer(_tiny_nafnet(), _cfg(tmp_path / "a", **kw), _data())
    full.fit()
    torch.manual_seed(0)
    part = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", **kw), _data())
    assert part.fit(steps=3)["step"] == 3  # "interrupted" after the step-3 checkpoint
    torch.manual_seed(123)  # a fresh process: other init, other global RNG
    resumed = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", resume="auto", **kw), _data())
    assert resumed.step == 3 and resumed.epoch == part.epoch
    assert (
        resumed.start_message
        == f"resumed from {tmp_path / 'b' / 'checkpoints' / 'step_00000003.pt'} at step 3"
    )
    resumed.fit()
    assert resumed.step == 6
    assert _same(full.model.state_dict(), resumed.model.state_dict())
    assert _same(full.ema.module.state_dict(), resumed.ema.module.state_dict())  # type: ignore[union-attr]
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "ema", "step", "rng", "config"}
    assert ckpt["config"]["grad_accum_steps"] == 2
    # keep_last=1 (default): the newest periodic checkpoint only
    assert [p.name for p in (tmp_path / "b" / "checkpoints").glob("step_*.pt")] == ["step_00000006.pt"]


def _steps(path: Path) -> list[str]:
    return [line.split(",")[0] for line in path.read_text().splitlines()[1:]]


def test_resume_cuts_logs_back_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """A run killed after logging step 5 but checkpointing step 3 resumes at 3: no duplicated log rows."""
    val = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["rain"], patch_size=None, fixed=True)
    kw = dict(max_steps=6, save_every=3, log_every=2, val_every=2, keep_last=3)
    torch.manual_seed(0)
    full = Trainer(_tiny_nafnet(), _cfg(tmp_path / "a", **kw), _data(), val)
    full.fit()
    torch.manual_seed(0)
    part = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", **kw), _data(), val)
    part.fit(steps=5)
    ckpts = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_00000003.pt", "step_00000005.pt"]
    (ckpts / "step_00000005.pt").unlink()  # killed before the step-5 checkpoint was written
    (ckpts / ".step_00000005.pt.abc123.tmp").write_bytes(b"half")  # what a kill -9 mid-write leaves
    assert _steps(tmp_path / "b" / "train_log.csv") == ["2", "4"]
    resumed = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", **kw), _data(), val)  # resume="auto" by default
    assert resumed.step == 3
    resumed.fit()
    for name in ("train_log.csv", "val_log.csv"):
        assert _steps(tmp_path / "b" / name) == _steps(tmp_path / "a" / name)
    assert _steps(tmp_path / "b" / "train_log.csv") == ["2", "4", "6"]
    a = (tmp_path / "a" / "train_log.csv").read_text().splitlines()
    b = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    # the loss column averages the same updates (the window is checkpointed); speed differs
    assert [r.split(",")[:4] for r in a] == [r.split(",")[:4] for r in b]
    history = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [(h["kind"], h["step"]) for h in history] == [
        (h["kind"], h["step"]) for h in json.loads((tmp_path / "a" / "history.json").read_text())
    ]
    assert _same(full.model.state_dict(), resumed.model.state_dict())
    assert not list(ckpts.glob(".*.tmp"))  # the half-written file was removed
    assert resumed.best == full.best


def test_resume_never_path_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=2), _data()).fit()
    first = tmp_path / "checkpoints" / "step_00000002.pt"
    again = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=1, resume="never"), _data())
    assert again.step == 0
    assert again.start_message == (
        f"resume=never: starting at step 0; this run replaces the 1 checkpoint(s) and the logs of an earlier "
        f"run in {tmp_path}"
    )
    again.fit()
    assert not first.exists() and (tmp_path / "checkpoints" / "step_00000001.pt").is_file()
    assert _steps(tmp_path / "train_log.csv") == ["1"]
    for never in (None, False, "none", "false", "NEVER"):
        assert _cfg(tmp_path, resume=never).resume == "never"
    with pytest.raises(
        ValueError, match=r"TrainerConfig\.resume: expected 'auto', 'never' or a checkpoint path"
    ):
        _cfg(tmp_path, resume="")
    with pytest.raises(CheckpointError, match=r"resume checkpoint not found: .*nothing\.pt"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path, resume=str(tmp_path / "nothing.pt")), _data())
    path = Trainer(_tiny_nafnet(), _cfg(tmp_path / "p", resume=str(tmp_path / "checkpoints" / "step_00000001.pt")),
                   _data())  # fmt: skip
    assert (
        path.step == 1
        and path.start_message.startswith("resumed from ")
        and path.start_message.endswith("step_00000001.pt at step 1")
    )
    with pytest.raises(CheckpointError, match=r"resume checkpoint .* is a folder; give a checkpoint file"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "r", resume=str(tmp_path)), _data())
    with pytest.raises(CheckpointError, match=r"best\.pt is not a training checkpoint \(no optimizer state"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "s", resume=str(_best_weights(tmp_path))), _data())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*junk\.pt"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "q", resume=str(tmp_path / "junk.pt")), _data())


def test_resuming_from_a_path_says_which_checkpoints_of_the_folder_it_replaces(tmp_path: Path) -> None:
    """A checkpoint of the output folder that a resume from a given path removes or rotates away is warned about."""
    Trainer(_tiny_nafnet(), _cfg(tmp_path / "a", max_steps=2), _data()).fit()
    Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", max_steps=3, save_every=1, keep_last=2), _data()).fit()
    other, ours = tmp_path / "a" / "checkpoints" / "step_00000002.pt", tmp_path / "b" / "checkpoints"
    for path, replaced in (
        (other, "2 other checkpoint(s)"),
        (ours / "step_00000002.pt", "1 other checkpoint(s)"),
    ):
        message = (
            rf"^{re.escape(str(tmp_path / 'b'))} holds {re.escape(replaced)} \(newest step_00000003\.pt\)"
        )
        with pytest.warns(UserWarning, match=message):
            Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", max_steps=3, resume=str(path)), _data())
    with warnings.catch_warnings():  # a new folder, or the newest checkpoint of the folder: nothing replaced
        warnings.simplefilter("error")
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "c", max_steps=2, resume=str(other)), _data())
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "a", max_steps=2, resume=str(other)), _data())


def _best_weights(folder: Path) -> Path:
    path = folder / "best.pt"
    torch.save({"model": _tiny_nafnet().state_dict(), "step": 1}, path)
    return path


def test_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Trainer(_tiny_promptir(), _cfg(tmp_path, max_steps=1), _data()).fit()
    bigger = create_model("promptir", **{**TINY["promptir"], "dim": 16})
    with pytest.raises(CheckpointError) as exc:
        Trainer(bigger, _cfg(tmp_path, max_steps=2), _data())
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"checkpoint {tmp_path / 'checkpoints' / 'step_00000001.pt'} does not fit the configured model "
        "(PromptIR with dim=16; the checkpoint has dim=8: "
    )
    assert "shape mismatches (patch_embed.proj.weight: (8, 3, 3, 3) vs (16, 3, 3, 3)" in msg
    assert msg.endswith("start again with --resume never (resume='never') or use another --output-dir")
    ckpt = tmp_path / "checkpoints" / "step_00000001.pt"
    with pytest.raises(CheckpointError, match=rf"^init_weights {re.escape(str(ckpt))} does not fit the configured "
                                              r"model \(PromptIR: \d+ shape mismatches"):  # fmt: skip
        Trainer(bigger, _cfg(tmp_path / "other", init_weights=str(ckpt)), _data())
    deeper = create_model("promptir", **{**TINY["promptir"], "num_refinement_blocks": 2})
    with pytest.raises(CheckpointError, match=r"\d+ missing keys \(refinement\.1\."):
        Trainer(deeper, _cfg(tmp_path, max_steps=2), _data())


def test_checkpoints_by_time_rotation_and_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    t = Trainer(
        _tiny_nafnet(), _cfg(tmp_path / "t", max_steps=3, save_every_minutes=1e-9, keep_last=5), _data()
    )
    t.fit()
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").glob("*.pt")) == [
        "step_00000001.pt", "step_00000002.pt", "step_00000003.pt",
    ]  # fmt: skip
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path / "n", max_steps=3, save_every_minutes=0, keep_last=5), _data())
    t.fit()
    written = tmp_path / "n" / "checkpoints" / "step_00000003.pt"
    assert [p.name for p in written.parent.glob("*.pt")] == [written.name]
    # the estimate: weights + Adam's two moments (no EMA), within the file's small overhead
    n = sum(p.numel() for p in t.model.parameters())
    assert t.checkpoint_size() == 3 * 4 * n
    assert 3 * 4 * n < written.stat().st_size < 3 * 4 * n + 200_000


def test_channels_last_is_the_cpu_default(tmp_path: Path) -> None:
    """``channels_last=None`` (the default): channels-last on a CPU, as built elsewhere (measured on an H200)."""
    assert TrainerConfig().channels_last is None
    t = Trainer(_tiny_promptir(), _cfg(tmp_path), _data())
    assert t.channels_last is True and t.model.uses_channels_last()  # type: ignore[operator]
    t = Trainer(_tiny_promptir(), _cfg(tmp_path / "b", channels_last=False), _data())
    assert t.channels_last is False and not t.model.uses_channels_last()  # type: ignore[operator]


def _signal_loss(sig: int, at: int, times: int = 1) -> Any:
    calls = {"n": 0}

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == at:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return (pred - target).abs().mean()

    return loss


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_update_saves_and_resumes_exactly(tmp_path: Path, sig: int) -> None:
    torch.manual_seed(0)
    full = Trainer(_tiny_nafnet(), _cfg(tmp_path / "a", max_steps=4), _data())
    full.fit()
    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", max_steps=4), _data(), loss=_signal_loss(sig, at=2))
    with pytest.raises(TrainingInterrupted) as exc:
        t.fit()
    ckpt = tmp_path / "b" / "checkpoints" / "step_00000002.pt"
    assert (exc.value.signum, exc.value.step, exc.value.checkpoint) == (sig, 2, ckpt)
    assert exc.value.exit_status == 128 + sig and isinstance(exc.value, KeyboardInterrupt)
    assert ckpt.is_file() and signal.getsignal(sig) is not None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = Trainer(_tiny_nafnet(), _cfg(tmp_path / "b", max_steps=4), _data())
    assert resumed.step == 2
    resumed.fit()
    assert _same(full.model.state_dict(), resumed.model.state_dict())


def test_second_sigint_aborts_without_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=4), _data(), loss=_signal_loss(signal.SIGINT, 2, 2))
    with pytest.raises(KeyboardInterrupt) as exc:
        t.fit()
    assert not isinstance(exc.value, TrainingInterrupted)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FamilyNet(RestorationModel):
    """A network family with its own training term, read from an output that only training asks for.

    ``head`` is used only for the logits the ``aux`` term reads: DDP fails with "parameters that were not
    used in producing loss" unless the trainer asks for them in the one forward (``training_forward_kwargs``).
    """

    in_channels = out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.config = {"width": 3}
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, *, return_logits: bool = False) -> Any:
        y = x + self.body(x)
        return (y, self.head(x.mean(dim=(2, 3)))) if return_logits else y

    def training_forward_kwargs(self, batch: Any) -> dict[str, Any]:
        return {"return_logits": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return output[0], {"logits": output[1]}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        return [
            AuxiliaryLoss(
                "aux", 0.5, lambda m, batch, extras: F.cross_entropy(extras["logits"], batch["label"])
            )
        ]


def _make(kind: str) -> nn.Module:
    return _tiny_nafnet() if kind == "nafnet" else _FamilyNet()


def _ddp_worker(rank: int, world: int, port: int, out: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trainer = Trainer(_make(kind), _cfg(Path(out) / "ddp", batch_size=1, max_steps=3, device="cpu"), _data())
    trainer.fit()
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(out) / "ddp_weights.pt")
        (Path(out) / "ddp_history.json").write_text(json.dumps(trainer.history))
    torch.distributed.barrier()  # both leave together: gloo aborts a process whose peer closes mid-write
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize(
    ("name", "local_rank", "expected"),
    [
        ("cuda", None, "cuda:0"),
        ("cuda", "3", "cuda:1"),
        ("cuda:1", "0", "cuda:1"),
        ("cpu", None, "cpu"),
        ("auto", "1", "cpu"),
    ],
)
def test_device_name_resolves_to_one_gpu(
    monkeypatch: pytest.MonkeyPatch, name: str, local_rank: str | None, expected: str
) -> None:
    """``device = "cuda"`` names this process's GPU (torchrun's ``LOCAL_RANK`` modulo the count): nccl and
    ``DistributedDataParallel(device_ids=...)`` need an index, which a bare ``"cuda"`` lacks."""
    from allinone_ir.training.trainer import _distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    device, info = _distributed(name)
    assert str(device) == expected and not info.enabled


@pytest.mark.slow  # two training processes
@pytest.mark.parametrize("kind", ["nafnet", "family"])
def test_ddp_two_gloo_processes_match_one_process(tmp_path: Path, kind: str) -> None:
    """Also for a family term whose parameters only the training forward uses (PIP's classifier)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), kind), nprocs=2, join=True)
    torch.manual_seed(0)
    single = Trainer(_make(kind), _cfg(tmp_path / "single", batch_size=2, max_steps=3, device="cpu"), _data())
    single.fit()
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    torch.manual_seed(0)
    init = _make(kind).state_dict()
    assert not _same(init, ddp, atol=1e-4)  # it trained
    if kind == "family":
        assert not torch.allclose(init["head.weight"], ddp["head.weight"])  # through the family's term only
    assert _same(single.model.state_dict(), ddp, atol=1e-6)
    # the logged losses are the global batch's (not rank 0's half), as in one process
    logged = json.loads((tmp_path / "ddp_history.json").read_text())
    keys = [k for k in single.history[0] if k.startswith("loss")]
    assert [row[k] for row in logged for k in keys] == pytest.approx(
        [row[k] for row in single.history for k in keys], rel=1e-5
    )


def _interrupted_ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    from allinone_ir.commands.train import _leave_process_group
    from allinone_ir.training import checkpoint as ck

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    write = ck.write_checkpoint
    if rank == 0:  # a slow disk: the other process must wait for the checkpoint before it leaves

        def slow_write(path: Any, state: Any) -> Path:
            time.sleep(1.0)
            return write(path, state)

        ck.write_checkpoint = slow_write  # type: ignore[assignment]
    torch.manual_seed(0)
    cfg = _cfg(Path(out) / "run", batch_size=1, max_steps=4, device="cpu")
    trainer = Trainer(_tiny_nafnet(), cfg, _data(), loss=_signal_loss(signal.SIGTERM, at=2))
    with pytest.raises(TrainingInterrupted) as exc:
        trainer.fit()
    saved = sorted(p.name for p in (Path(out) / "run" / "checkpoints").glob("step_*.pt"))
    (Path(out) / f"rank{rank}.json").write_text(json.dumps([exc.value.step, saved]))
    _leave_process_group(barrier=False)  # as the command line does


@pytest.mark.slow  # two training processes
def test_ddp_signal_stops_every_process_after_the_checkpoint(tmp_path: Path) -> None:
    """SIGTERM under torchrun: every process leaves fit() once rank 0 has written the checkpoint (a process
    that left first aborted in gloo, "terminate called without an active exception", exit status 134)."""
    import torch.multiprocessing as mp

    mp.spawn(_interrupted_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [2, ["step_00000002.pt"]]


class _FailsOnRankOne(torch.utils.data.Dataset):
    """Four samples; process 1 of the run cannot read its third one (a corrupt image)."""

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.reads += 1
        if os.environ["RANK"] == "1" and self.reads == 3:
            raise DatasetError("cannot read image file bad.png")
        clean = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i))
        return {"degraded": clean * 0.5, "clean": clean}


def _lost_peer_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))  # a buffer: DDP broadcasts it in the forward
    trainer = Trainer(
        net, _cfg(Path(out) / "run", batch_size=1, max_steps=4, device="cpu"), _FailsOnRankOne()
    )
    try:
        trainer.fit()
    except Exception as exc:
        (Path(out) / f"rank{rank}.json").write_text(json.dumps([type(exc).__name__, str(exc)]))
    os._exit(0)  # without leaving the group: the other process finds its peer gone


@pytest.mark.slow  # two training processes
def test_ddp_a_process_that_fails_is_one_line_in_the_others(tmp_path: Path) -> None:
    """The processes that lose a peer say so in one line (an OSError, as the command line prints it), not
    with gloo's "Connection closed by peer" traceback."""
    import torch.multiprocessing as mp

    mp.spawn(_lost_peer_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank1.json").read_text()) == [
        "DatasetError",
        "cannot read image file bad.png",
    ]
    kind, message = json.loads((tmp_path / "rank0.json").read_text())
    assert kind == "ConnectionError" and message.startswith(
        "training process 0 of 2 lost another process of the run at step 2 (that process's own error says why"
    )


def test_family_terms_are_added_weighted_logged_and_checked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _FamilyNet()
    head = net.head.weight.detach().clone()
    t = Trainer(net, _cfg(tmp_path, max_steps=2, aux_weights={"aux": 0.25}), _data())
    assert [(a.name, a.weight) for a in t.aux_losses] == [("aux", 0.25)]
    t.fit()
    rows = [h for h in json.loads((tmp_path / "history.json").read_text()) if h["kind"] == "train"]
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss_main"] + 0.25 * rows[0]["loss_aux"], rel=1e-6)
    assert rows[0]["loss_aux"] == pytest.approx(math.log(2), abs=0.3)  # a cross-entropy of two classes
    assert not torch.equal(head, net.head.weight)  # the term's gradient reached the head
    default = Trainer(_FamilyNet(), _cfg(tmp_path / "d", max_steps=1), _data())
    assert [(a.name, a.weight) for a in default.aux_losses] == [("aux", 0.5)]
    with pytest.raises(ConfigError, match=r"trainer\.aux_weights: 'ddl' is not a training term of _FamilyNet; "
                                          r"its terms are \['aux'\]"):  # fmt: skip
        Trainer(_FamilyNet(), _cfg(tmp_path / "e", aux_weights={"ddl": 1.0}), _data())
    dup = LossTerm(lambda m, b, o: o.mean(), 1.0, "aux")
    with pytest.raises(
        ConfigError, match=r"extra loss 'aux' is already a training term of _FamilyNet \(weight 0\.5\)"
    ):
        Trainer(_FamilyNet(), _cfg(tmp_path / "f"), _data(), extra_losses=[dup])
    with pytest.raises(
        ValueError, match=r"TrainerConfig\.aux_weights: expected a mapping of term names to numbers >= 0"
    ):
        _cfg(tmp_path, aux_weights={"aux": -1})


def test_pip_config_extra_ddl_is_refused_and_validation_passes_labels(tmp_path: Path) -> None:
    """configs that still list PIP's ddl as an extra loss would count it twice: one clear error instead."""
    _photos(tmp_path / "photos", 1)
    pip_args = dict(TINY["pip_restormer"], classifier_widths=[8, 16])
    cfg: dict[str, Any] = {
        "model": {"name": "pip_restormer", "args": pip_args},
        "data": {
            "train": {"type": "synthetic", "clean_dir": "photos", "tasks": ["rain", "haze"], "patch_size": 16}
        },
        "trainer": {
            "max_steps": 1,
            "batch_size": 2,
            "output_dir": "run",
            "progress_bar": False,
            "plot": False,
        },
        "extra_losses": [{"name": "ddl", "weight": 0.002}],
    }
    with pytest.raises(ConfigError, match=r"^extra_losses\[0\]\.name: 'ddl' is already a training term of "
                                          r"PIPRestormer \(weight 0\.002\); remove it from extra_losses"):  # fmt: skip
        build_from_config(cfg, tmp_path)
    del cfg["extra_losses"]
    cfg["data"]["val"] = {"type": "synthetic", "clean_dir": "photos", "tasks": ["rain", "haze"]}
    cfg["trainer"]["aux_weights"] = {"classifier": 0.5}
    t = build_from_config(cfg, tmp_path)
    assert {a.name: a.weight for a in t.aux_losses} == {"ddl": 0.002, "classifier": 0.5}
    seen: list[Any] = []
    t.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(dict(kwargs)), with_kwargs=True)
    t.fit()
    train_kwargs, val_kwargs = seen[0], seen[-1]
    # the network took the data's degradations as its own; labels are positions in them
    assert t.model.degradations == ("rain", "haze")
    assert train_kwargs["return_logits"] is True and train_kwargs["degradation"].tolist() in ([0, 1], [1, 0])
    assert "return_logits" not in val_kwargs and val_kwargs["degradation"].tolist() in ([0], [1])
    assert t.val_data.patch_size is None and t.val_data.fixed  # whole images, the same every time


def test_a_degradation_the_network_lacks_is_refused_naming_the_data(tmp_path: Path) -> None:
    """The Trainer's check names the data set as a config does (data.train / data.val), before any file."""
    net = create_model("pip_restormer", **dict(TINY["pip_restormer"], degradations=["rain", "haze"]))
    train = SyntheticDegradationDataset([torch.rand(3, 16, 16)] * 2, tasks=["haze", "rain"], patch_size=16)
    val = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["rain", "snow"], patch_size=None)
    with pytest.raises(
        DatasetError,
        match=r"^data\.val: PIPRestormer: the network cannot represent the degradation\(s\) \['snow'\]",
    ):
        Trainer(net, _cfg(tmp_path / "run"), train, val)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("native", [False, True])
def test_emulated_low_precision_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    import allinone_ir.inference as inference

    # whether this CPU has native bf16 is decided here, so the test means the same on every machine
    monkeypatch.setattr(
        inference, "native_low_precision", lambda dtype, device: native or dtype == torch.float32
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Trainer(_tiny_nafnet(), _cfg(tmp_path / "bf16", precision="bf16"), _data())
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "fp32"), _data())
    emulated = [str(w.message) for w in caught if "emulated" in str(w.message)]
    assert t.precision == "bf16"  # the run keeps the precision it was asked for
    if native:
        assert emulated == []
    else:
        assert len(emulated) == 1 and emulated[0].startswith("bf16 is emulated on this CPU")
        assert "precision: fp32" in emulated[0]
        assert caught[0].filename == __file__  # points at the user's line


@pytest.mark.filterwarnings("ignore:.*is emulated on this CPU:RuntimeWarning")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_run_has_no_nan(tmp_path: Path, precision: str) -> None:
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, precision=precision, max_steps=3, channels_last=True, save_every=3)
    t = Trainer(_tiny_promptir(), cfg, _data())
    out = t.fit()
    assert math.isfinite(out["loss"])
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert t.scaler.is_enabled() == (precision == "fp16")
    ckpt = torch.load(tmp_path / "checkpoints" / "step_00000003.pt", weights_only=True)
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0  # the gradient scaler's state is checkpointed


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = (pred - target).abs().mean()
        return loss * float("nan") if calls["n"] > 2 else loss

    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=5, save_every=2), _data(), loss=flaky)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 3 .*step_00000002\.pt"):
        t.fit()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert ckpts == ["step_00000002.pt"]
    state = torch.load(tmp_path / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_grad_checkpointing_gives_the_same_update(tmp_path: Path) -> None:
    runs = []
    for gc in (False, True):
        torch.manual_seed(0)
        t = Trainer(_tiny_promptir(), _cfg(tmp_path / str(gc), max_steps=1, grad_checkpointing=gc), _data())
        t.fit()
        runs.append(t.model.state_dict())
    assert _same(runs[0], runs[1], atol=1e-6)
    with pytest.raises(ValueError, match="set_grad_checkpointing"):
        Trainer(nn.Conv2d(3, 3, 1), _cfg(tmp_path / "x", grad_checkpointing=True), _data())


class _RecordingPIP(nn.Module):
    """Stands in for a PIP network: records the degradation it receives."""

    accepts_degradation = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.prompts = nn.Parameter(torch.randn(5, 4))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, degradation: Any = None) -> torch.Tensor:
        self.seen.append(degradation)
        return x + self.conv(x)


def test_pip_receives_labels_and_extra_loss_terms_are_added(tmp_path: Path) -> None:
    net = _RecordingPIP()
    got: list[float] = []

    def decoupled(model: nn.Module, batch: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
        assert model is net and out.shape == batch["clean"].shape
        v = model.prompts.pow(2).mean()
        got.append(float(v.detach()))
        return v

    t = Trainer(
        net, _cfg(tmp_path, max_steps=2, lr=1e-2), _data(), extra_losses=[LossTerm(decoupled, 0.5, "ddl")]
    )
    before = net.prompts.detach().clone()
    t.fit()
    assert all(isinstance(d, torch.Tensor) and d.dtype == torch.long and d.shape == (2,) for d in net.seen)
    assert len(got) == 2 and not torch.equal(
        before, net.prompts
    )  # the extra term's gradient reached the prompts
    rows = [json.loads(json.dumps(h)) for h in json.loads((tmp_path / "history.json").read_text())]
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss_main"] + 0.5 * rows[0]["loss_ddl"], rel=1e-5)


def test_validation_per_degradation_best_checkpoint_and_logs(tmp_path: Path) -> None:
    val = SyntheticDegradationDataset(
        [torch.rand(3, 24, 24)], tasks=["noise_25", "rain"], patch_size=16, fixed=True
    )
    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=2, val_every=1, plot=True), _data(), val)
    out = t.fit()
    res = t.evaluate()
    assert set(res) == {"noise_25", "rain", "all"} and res["all"]["count"] == 2
    assert res["all"]["psnr"] == pytest.approx((res["noise_25"]["psnr"] + res["rain"]["psnr"]) / 2)
    assert out["best"]["step"] in (1, 2) and (tmp_path / "checkpoints" / "best.pt").is_file()
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert set(best) == {"model", "arch", "model_config", "step", "best", "ema_weights"}  # no optimizer state
    assert best["step"] == out["best"]["step"] and best["arch"] == "NAFNet" and best["ema_weights"] is False
    # it starts another run (init_weights) and restores (load_checkpoint) with the validated weights
    again = Trainer(_tiny_nafnet(), _cfg(tmp_path / "again", init_weights=str(tmp_path / "checkpoints" / "best.pt")),
                    _data())  # fmt: skip
    assert _same(again.model.state_dict(), best["model"])
    from allinone_ir import load_checkpoint

    assert _same(load_checkpoint(tmp_path / "checkpoints" / "best.pt").state_dict(), best["model"])
    header = (tmp_path / "val_log.csv").read_text().splitlines()[0]
    assert header == "step,degradation,psnr,ssim,input_psnr,input_ssim,count"
    assert len((tmp_path / "train_log.csv").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "config.json").read_text())["trainer"]["max_steps"] == 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert t.plot_curves() is None
    else:
        assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_trainable_groups_and_init_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = Trainer(_tiny_promptir(), _cfg(tmp_path / "s1", max_steps=1), _data())
    first.fit()
    ckpt = tmp_path / "s1" / "checkpoints" / "step_00000001.pt"
    stage2 = _cfg(tmp_path / "s2", max_steps=1, init_weights=str(ckpt), trainable=["refinement", "output"])
    t = Trainer(_tiny_promptir(), stage2, _data())
    assert _same(t.model.state_dict(), first.model.state_dict())
    frozen = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.fit()
    after = t.model.state_dict()
    changed = {k.split(".")[0] for k in after if not torch.equal(after[k], frozen[k])}
    assert changed == {"refinement", "output"}


def _photos(folder: Path, n: int = 2) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        write_image(folder / f"p{i}.png", torch.rand(3, 24, 24, generator=g))


def test_cli_train_toml_and_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are resolved against the working directory
    _photos(tmp_path / "photos")
    toml = textwrap.dedent("""
        [model]
        name = "nafnet"
        args = { width = 8, middle_blk_num = 1, enc_blk_nums = [1, 1], dec_blk_nums = [1, 1] }
        [data.train]
        type = "synthetic"
        clean_dir = "photos"
        tasks = ["noise_25", "rain"]
        patch_size = 16
        [data.val]
        type = "synthetic"
        clean_dir = "photos"
        tasks = ["rain"]
        patch_size = 16
        fixed = true
        [trainer]
        output_dir = "run"
        max_steps = 2
        batch_size = 2
        progress_bar = false
        plot = false
    """)
    (tmp_path / "c.toml").write_text(toml)
    assert main(["train", "--config", str(tmp_path / "c.toml")]) == 0
    out = capsys.readouterr()
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    assert out.out.startswith(f"done: 2 steps in {tmp_path / 'run'}; checkpoint {ckpt} (")
    assert out.err.startswith(f"no checkpoint in {tmp_path / 'run' / 'checkpoints'}: starting at step 0\n")
    assert (tmp_path / "run" / "checkpoints" / "step_00000002.pt").is_file()
    # resume="auto" from the command line continues (nothing left to do at max_steps)
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--resume", "auto", "--max-steps", "3"]) == 0
    assert f"resumed from {ckpt} at step 2" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "step_00000003.pt").is_file()
    yaml_text = (
        "model: {name: nafnet, args: {width: 8, middle_blk_num: 1, enc_blk_nums: [1], dec_blk_nums: [1]}}\n"
    )
    yaml_text += "data: {train: {type: synthetic, clean_dir: photos, tasks: [haze], patch_size: 16}}\n"
    yaml_text += (
        "trainer: {output_dir: run_yaml, max_steps: 1, batch_size: 1, progress_bar: false, plot: false}\n"
    )
    (tmp_path / "c.yaml").write_text(yaml_text)
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 0


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trainer": {"max_step": 3}}, "trainer: unknown TrainerConfig key(s) ['max_step']"),
        ({"trainer": {"lr": -1.0}}, "trainer.lr:"),
        ({"model": {"name": "promptirr"}}, "model.name: unknown model 'promptirr'"),
        ({"data": {"train": {"type": "synthetic", "clean_dir": "photos", "patch_size": "big"}}},
         'data.train.patch_size: expected int or "full" (whole images), got \'big\''),
        ({"data": {"train": {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos", "colour": 1}}},
         "data.train.colour: unknown key"),
        ({"data": {"train": {"type": "paired", "degraded_dir": "photos", "clean_dir": "nowhere"}}},
         "data.train.clean_dir: folder not found: {tmp}/nowhere (relative paths are resolved against {tmp})"),
        ({"data": {"train": {"type": "synthetic", "clean_dir": "photos", "val_split": 0.1}}},
         "data.train.val_split: only data.train of type 'paired' can hold out pairs (this is type 'synthetic'"),
        ({"data": {"train": {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos", "val_split": 0.1},
                   "val": {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos"}}},
         "data.train.val_split: give either data.train.val_split or a data.val section, not both"),
        ({"data": {"train": {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos", "val_split": 1.5}}},
         "data.train.val_split: val_split must be a fraction in (0, 1) or a whole number of pairs, got 1.5"),
        ({"data": {"train": {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos", "val_split": 1,
                             "patch_size": 16}}},
         "data.train.val_split: val_split needs at least 2 pairs (one to train on), the dataset has 1"),
        ({"trainer": {"aux_weights": {"ddl": 0.1}}},
         "trainer.aux_weights: 'ddl' is not a training term of NAFNet; it declares none"),
        ({"trainer": {"loss": "l2"}}, "trainer.loss: unknown loss 'l2'; known: ['charbonnier',"),
        ({"trainer": {"trainable": ["nothing"]}}, "trainer.trainable: no parameters match ['nothing']"),
        ({"trainer": {"batch_size": 64}},
         "trainer.batch_size: the training set has 1 samples, fewer than one global batch of 64"),
        ({"optimiser": {}}, "optimiser: unknown top-level section"),
        ({"extra_losses": [{"name": "perceptual"}]}, "extra_losses[0].name: unknown extra loss"),
    ],
)  # fmt: skip
def test_cli_config_errors_name_the_key(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    _photos(tmp_path / "photos", 1)
    cfg: dict[str, Any] = {
        "model": {"name": "nafnet", "args": TINY["nafnet"]},
        "data": {"train": {"type": "synthetic", "clean_dir": "photos", "tasks": ["rain"], "patch_size": 16}},
        "trainer": {"max_steps": 1, "batch_size": 1, "output_dir": "run"},
    }
    cfg.update(patch)
    with pytest.raises(ConfigError) as exc:
        build_from_config(cfg, tmp_path)
    assert message.format(tmp=tmp_path.resolve()) in str(exc.value)


def test_cli_config_name_map_errors_are_config_errors(tmp_path: Path) -> None:
    """A name_map regex that does not compile is a ConfigError naming the section, not a bare re.error."""
    _photos(tmp_path / "photos", 1)
    train = {"type": "paired", "degraded_dir": "photos", "clean_dir": "photos", "name_map": ["(", "x"]}
    cfg: dict[str, Any] = {
        "model": {"name": "nafnet", "args": TINY["nafnet"]},
        "data": {"train": train},
        "trainer": {"max_steps": 1, "batch_size": 1, "output_dir": "run"},
    }
    with pytest.raises(ConfigError, match=r"^data\.train: name_map: '\(' is not a valid regular expression"):
        build_from_config(cfg, tmp_path)


def test_cli_reports_errors_with_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('[trainer]\nbatch_size = "eight"\n[model]\nname = "nafnet"\n')
    assert main(["train", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "trainer.batch_size" in capsys.readouterr().err
    (tmp_path / "c.json").write_text("{}")
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 2


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads 2e-4 as text; a config means the number, as YAML 1.2 and TOML do."""
    (tmp_path / "c.yaml").write_text("trainer: {lr: 2e-4, min_lr: 1E-6, weight_decay: 1.0e-2, seed: 3}\n")
    trainer = load_config(tmp_path / "c.yaml")["trainer"]
    assert trainer == {"lr": 2e-4, "min_lr": 1e-6, "weight_decay": 1e-2, "seed": 3}
    assert TrainerConfig.from_dict({"lr": trainer["lr"]}).lr == 2e-4


def test_yaml_duplicate_keys_are_refused(tmp_path: Path) -> None:
    """A second ``trainer:`` section (or key) would silently replace the first: refused, with its line."""
    (tmp_path / "c.yaml").write_text(
        "trainer: {max_steps: 5, batch_size: 2}\nmodel: {name: nafnet}\ntrainer: {lr: 1.0e-3}\n"
    )
    with pytest.raises(
        ConfigError, match=r"(?s)c\.yaml: invalid YAML: duplicate key 'trainer'.* line 3, column 1"
    ):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("base: &b {lr: 1.0e-3}\ntrainer: {<<: *b, lr: 2.0e-3}\n")
    assert load_config(tmp_path / "c.yaml")["trainer"] == {"lr": 2e-3}  # a merge key may be overridden


def test_output_dir_that_is_a_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for out in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "run"):
        with pytest.raises(
            ConfigError, match=rf"^trainer\.output_dir: {re.escape(str(out))} is not a folder"
        ):
            Trainer(_tiny_nafnet(), _cfg(out), _data())
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_whole_images_of_different_sizes_in_one_batch_are_one_line(tmp_path: Path) -> None:
    from allinone_ir.data import PairedImageDataset

    for i, (h, w) in enumerate([(24, 24), (20, 28)]):
        for sub in ("deg", "clean"):
            write_image(tmp_path / sub / f"p{i}.png", torch.rand(3, h, w))
    data = PairedImageDataset(tmp_path / "deg", tmp_path / "clean", label_from="rain", augment_modes=())
    message = (
        r"^p\d is \d+x\d+ but p\d is \d+x\d+: images of different sizes cannot share a batch; set trainer\."
    )
    trainer = Trainer(_tiny_nafnet(), _cfg(tmp_path / "run", val_batch_size=2), _data(), data)
    with pytest.raises(DatasetError, match=message + r"val_batch_size to 1"):
        trainer.fit()
    trainer = Trainer(_tiny_nafnet(), _cfg(tmp_path / "run2", batch_size=2, num_workers=1), data)
    with pytest.raises(DatasetError, match=message + r"batch_size to 1"):
        trainer.fit()


def test_a_data_loader_workers_error_keeps_its_own_message(tmp_path: Path) -> None:
    """An unreadable image met by a DataLoader worker is one line naming the file, not the worker's traceback."""
    from allinone_ir.data import PairedImageDataset
    from allinone_ir.errors import ImageReadError

    for sub in ("deg", "clean"):
        _photos(tmp_path / sub, 2)
    (tmp_path / "deg" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    data = PairedImageDataset(tmp_path / "deg", tmp_path / "clean", label_from="rain", patch_size=16)
    trainer = Trainer(_tiny_nafnet(), _cfg(tmp_path / "run", batch_size=1, num_workers=1), data)
    pattern = rf"^cannot read image file {re.escape(str(tmp_path / 'deg' / 'p1.png'))}: [^\n]*$"
    with pytest.raises(ImageReadError, match=pattern):
        trainer.fit()
    with pytest.raises(ImageReadError, match=pattern):
        trainer.evaluate(data)


@pytest.mark.parametrize("name", ["promptir_three_task.yaml", "pip_five_task.yaml", "course_rain_snow.toml"])
def test_sample_configs_are_valid(name: str) -> None:
    from allinone_ir.models import list_models

    cfg = load_config(CONFIGS / name)
    TrainerConfig.from_dict(cfg["trainer"])
    assert cfg["model"]["name"] in list_models()
    assert cfg["data"]["train"]["type"] in ("paired", "promptir", "synthetic")


@pytest.mark.slow
def test_tiny_promptir_learns_to_denoise(tmp_path: Path) -> None:
    """A real learning test: +3 dB over the noisy input on held-out crops of an unseen photo."""
    from allinone_ir.assets import sample_image

    train_imgs = [read_image(sample_image(n)) for n in ("astronaut", "coffee", "chelsea")]
    held_out = read_image(sample_image("rocket"))
    train = SyntheticDegradationDataset(train_imgs, tasks=["noise_25"], patch_size=32, repeat=64, seed=0)
    val = SyntheticDegradationDataset(
        [held_out], tasks=["noise_25"], patch_size=64, repeat=8, seed=99, fixed=True
    )
    torch.manual_seed(0)
    cfg = _cfg(tmp_path, max_steps=150, batch_size=8, lr=2e-3, min_lr=1e-4, warmup_steps=10, log_every=50,
               save_every=0)  # fmt: skip
    t = Trainer(_tiny_promptir(), cfg, train, val)
    t.fit()
    res = t.evaluate()["noise_25"]
    print(f"learning test: input {res['input_psnr']:.2f} dB -> restored {res['psnr']:.2f} dB "
          f"(SSIM {res['input_ssim']:.3f} -> {res['ssim']:.3f}) on {int(res['count'])} held-out 64x64 crops")  # fmt: skip
    assert res["psnr"] - res["input_psnr"] >= 3.0


def test_curves_with_negative_loss_use_linear_axis(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import warnings

    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=2, loss="psnr", plot=False), _data())
    t.fit()
    assert min(h["loss"] for h in t.history if h["kind"] == "train") < 0  # the PSNR loss is negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log axis on negative values would warn
        path = t.plot_curves()
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_one_trainer_per_output_folder(tmp_path: Path) -> None:
    from allinone_ir.errors import UsageError

    torch.manual_seed(0)
    first = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=2), _data())  # holds the folder from here
    info = json.loads((tmp_path / ".train.lock").read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    with pytest.raises(UsageError) as exc:
        Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=4, lr=5e-4), _data())
    assert str(exc.value) == (
        f"output folder {tmp_path} is in use by another training run (pid {os.getpid()} on "
        f"{socket.gethostname()}, started {info['started']}); wait for it to end or stop it, or use another "
        "--output-dir (trainer.output_dir)"
    )
    first.fit()
    assert not (tmp_path / ".train.lock").exists()  # released when fit returns
    second = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=3), _data())
    assert second.fit()["step"] == 3
    # a constructor that fails lets go, and leaves no folder it created
    with pytest.raises(ConfigError, match=r"^trainer\.batch_size"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path / "new", batch_size=64), _data())
    assert not (tmp_path / "new").exists()
    assert Trainer(_tiny_nafnet(), _cfg(tmp_path / "new", max_steps=1), _data()).fit()["step"] == 1


def test_a_changed_config_on_resume_is_used_consistently_and_recorded(tmp_path: Path) -> None:
    from allinone_ir.training import warmup_cosine_factor

    torch.manual_seed(0)
    Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=2), _data()).fit()
    ckpt = tmp_path / "checkpoints" / "step_00000002.pt"
    init = tmp_path / "init.pt"
    init.write_bytes(ckpt.read_bytes())
    new = dict(max_steps=6, lr=5e-4, betas=(0.8, 0.99), weight_decay=0.05, warmup_steps=3, ema_decay=0.5,
               batch_size=1, init_weights=str(init))  # fmt: skip
    with pytest.warns(UserWarning) as record:
        t = Trainer(_tiny_nafnet(), _cfg(tmp_path, **new), _data())
    (note,) = [str(w.message) for w in record if "config differs" in str(w.message)]
    lr_now = 5e-4 * warmup_cosine_factor(
        2, max_steps=6, warmup_steps=3, warmup_start_factor=0.1, min_factor=1e-6 / 5e-4
    )
    assert note == (
        f"the config differs from checkpoint {ckpt}'s: max_steps 2 -> 6, batch_size 2 -> 1, lr 0.001 -> 0.0005, "
        "weight_decay 0.01 -> 0.05, betas [0.9, 0.999] -> [0.8, 0.99], warmup_steps 0 -> 3, ema_decay None -> 0.5: "
        f"this run's values are used (the learning-rate schedule is this run's, continued at step 2: lr {lr_now:.3g} "
        f"now); init_weights None -> {str(init)!r}: the checkpoint's value is kept (the weights come from the "
        "checkpoint); config.json records what runs"
    )
    # the optimizer and the schedule are this run's, at the restored step: no mix of old and new
    group = t.optimizer.param_groups[0]
    assert (group["betas"], group["weight_decay"], group["initial_lr"]) == ((0.8, 0.99), 0.05, 5e-4)
    assert group["lr"] == pytest.approx(lr_now) and t.scheduler.get_last_lr() == [group["lr"]]
    assert t.config.init_weights is None and t.config.lr == 5e-4
    assert t.batch_in_epoch == 4  # 2 batches of 2 images: the epoch goes on at the same sample
    assert _same(t.ema.module.state_dict(), t.model.state_dict())  # type: ignore[union-attr]  # EMA from the weights
    t.fit()
    lrs = [h["lr"] for h in t.history if h["kind"] == "train" and h["step"] > 2]
    expected = [5e-4 * warmup_cosine_factor(s, max_steps=6, warmup_steps=3, warmup_start_factor=0.1,
                                            min_factor=1e-6 / 5e-4) for s in range(2, 6)]  # fmt: skip
    assert lrs == pytest.approx(expected, rel=1e-9)
    recorded = json.loads((tmp_path / "config.json").read_text())["trainer"]
    assert (recorded["lr"], recorded["betas"], recorded["init_weights"]) == (5e-4, [0.8, 0.99], None)
    saved = torch.load(tmp_path / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert saved["config"] == recorded
    # the config that ran, again: nothing to say (init_weights is still not what runs: said again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(_tiny_nafnet(), _cfg(tmp_path, **{**new, "init_weights": None}), _data()).fit()
    with pytest.warns(UserWarning, match=r"differs from checkpoint .*: init_weights None -> .*init\.pt'"):
        Trainer(_tiny_nafnet(), _cfg(tmp_path, **new), _data())


def test_auto_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=4, save_every=2, keep_last=2), _data()).fit()
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step_00000004.pt").write_bytes((ckpts / "step_00000004.pt").read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"cannot read checkpoint .*step_00000004\.pt: .*; resumed from the newest "
                                         r"intact checkpoint .*step_00000002\.pt instead; the unreadable file is "
                                         r"kept as .*step_00000004\.pt\.unreadable$"):  # fmt: skip
        t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=4, save_every=2, keep_last=2), _data())
    assert t.step == 2 and t.start_message == f"resumed from {ckpts / 'step_00000002.pt'} at step 2"
    assert (ckpts / "step_00000004.pt.unreadable").stat().st_size == 1000
    t.fit()
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "step_00000002.pt", "step_00000004.pt", "step_00000004.pt.unreadable"
    ]  # fmt: skip


def _full_disk_save(real: Any) -> Any:
    """``torch.save`` on a disk that fills up, as torch reports it: a RuntimeError raised while handling ENOSPC."""
    import errno

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04" + bytes(100))
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            ) from None

    return save


def test_a_full_disk_is_one_clear_error_and_keeps_the_earlier_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from allinone_ir.training.checkpoint import write_checkpoint

    path = write_checkpoint(tmp_path / "step_00000001.pt", {"step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _full_disk_save(torch.save))
    with pytest.raises(OSError) as exc:
        write_checkpoint(path, {"step": 2})
    assert exc.value.errno == errno.ENOSPC
    assert str(exc.value) == f"no space left on device while writing {path}; earlier checkpoints are intact"
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["step_00000001.pt"]
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match=r"^other$"):  # another failure is not called a full disk
        write_checkpoint(path, {"step": 2})


def test_validation_prints_the_input_psnr_and_the_gain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["rain"], patch_size=None, fixed=True)
    torch.manual_seed(0)
    t = Trainer(_tiny_nafnet(), _cfg(tmp_path, max_steps=1, progress_bar=True), _data(), val)
    t.fit()
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[step 1] val PSNR")]
    r, a = (next(h for h in t.history if h.get("degradation") == g) for g in ("rain", "all"))
    assert line == (
        f"[step 1] val PSNR: rain {r['psnr']:.2f} dB (input {r['input_psnr']:.2f}, {r['psnr'] - r['input_psnr']:+.2f}), "
        f"all {a['psnr']:.2f} dB (input {a['input_psnr']:.2f}, {a['psnr'] - a['input_psnr']:+.2f})"
    )


class _Samples(torch.utils.data.Dataset):
    def __init__(self, make: Any) -> None:
        self.make = make

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Any:
        return self.make()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: {"input": torch.rand(3, 8, 8), "target": torch.rand(3, 8, 8)},
            r"got keys \['input', 'target'\]",
        ),
        (
            lambda: (torch.rand(3, 8, 8), torch.rand(3, 8, 8)),
            "mapping with 'degraded' and 'clean' .* got a tuple",
        ),
        (
            lambda: {"degraded": torch.zeros(3, 8, 8, dtype=torch.uint8), "clean": torch.rand(3, 8, 8)},
            "torch.uint8",
        ),
        (
            lambda: {"degraded": torch.rand(3, 8, 8), "clean": torch.full((3, 8, 8), 200.0)},
            "'clean' holds values",
        ),
    ],
)
def test_a_dataset_of_another_shape_or_scale_is_refused_before_training(
    make: Any, message: str, tmp_path: Path
) -> None:
    cfg = TrainerConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1, progress_bar=False)
    net = create_model("nafnet", width=8, enc_blk_nums=(1,), middle_blk_num=1, dec_blk_nums=(1,))
    with pytest.raises(ValueError, match=r"^data\.train: .*" + message):
        Trainer(net, cfg, _Samples(make))
    assert not (tmp_path / "run").exists()


class _TwoOutputs(nn.Module):
    """A user's network that returns its features with the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), x


def test_a_network_that_returns_a_tuple_is_one_line(tmp_path: Path) -> None:
    """Not AttributeError: 'tuple' object has no attribute 'float' from inside the loss."""
    from allinone_ir.errors import UsageTypeError

    t = Trainer(_TwoOutputs(), _cfg(tmp_path, max_steps=1), _data())
    match = (
        r"^_TwoOutputs's forward must return the restored image tensor, got a tuple; return the image alone"
    )
    with pytest.raises(UsageTypeError, match=match):
        t.fit()
    with pytest.raises(UsageTypeError, match=match):
        t.evaluate(_data())
