"""The command line in one place: every sub-command under ``allinone_ir.commands``, the shared helpers,
the one ``count_flops`` and autocast helper, the trainer's logs / curves / initial weights in their own
modules, and a network family added from outside that the CLI and the trainer take without an edit."""

from __future__ import annotations

import argparse
import io
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from allinone_ir import _runtime
from allinone_ir.cli import COMMANDS, build_parser, main
from allinone_ir.commands import _common
from allinone_ir.errors import CheckpointError, UsageError
from allinone_ir.io import write_image
from allinone_ir.models import (
    RestorationModel,
    _registry,
    create_model,
    register_architecture,
    register_model,
)
from allinone_ir.profiling import count_flops, measure_latency
from allinone_ir.training import Trainer, TrainerConfig
from allinone_ir.training.checkpoint import best_weights_state, load_init_weights, write_checkpoint
from allinone_ir.training.logs import RunLog, plot_training_curves

from .tiny_configs import TINY

# --------------------------------------------------------------------------- where things live


def test_every_command_is_a_module_of_commands() -> None:
    assert {name: module for name, (module, _) in COMMANDS.items()} == {
        name: f"allinone_ir.commands.{name}" for name in COMMANDS
    }
    parser = build_parser()
    action = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert list(action.choices) == list(COMMANDS)
    # the one-line help of `allinone-ir --help` is each module's own, the same as COMMANDS says
    assert {a.dest: a.help for a in action._choices_actions} == {n: text for n, (_, text) in COMMANDS.items()}


# --------------------------------------------------------------------------- shared option helpers


def test_option_types_and_model_args() -> None:
    assert _common.positive_int("2") == 2 and _common.non_negative_int("0") == 0
    for bad in ("0", "x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 1"):
            _common.positive_int(bad)
    assert _common.comma_list(int)("1,2,,3") == [1, 2, 3]
    assert _common.parse_model_args('{"dim": 8}') == {"dim": 8} and _common.parse_model_args("") == {}
    with pytest.raises(UsageError, match="not valid JSON"):
        _common.parse_model_args("{dim: 8}")
    with pytest.raises(UsageError, match="must be a JSON object"):
        _common.parse_model_args("[8]")


def test_with_progress_prints_above_the_bar_or_plainly() -> None:
    items, say = _common.with_progress([1], quiet=False, desc="x", unit="img")
    assert list(items) == [1] and say is print  # one item: no bar
    items, say = _common.with_progress([1, 2], quiet=True, desc="x", unit="img")
    assert say is print
    items, say = _common.with_progress([1, 2], quiet=False, desc="x", unit="img")
    assert list(items) == [1, 2] and say is not print  # tqdm's write


def test_convert_model_args_messages_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "a.pth"), str(tmp_path / "b"), "--model-args", "[1]"]) == 2
    assert capsys.readouterr().err == (
        "error: --model-args must be a JSON object such as '{\"dim\": 24}', got '[1]'\n"
    )


# --------------------------------------------------------------------------- one autocast, one progress bar


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("fp32", None),
        (None, None),
        (torch.float32, None),
        ("bf16", torch.bfloat16),
        (torch.float16, torch.float16),
    ],
)
def test_low_precision_dtype(dtype: Any, expected: torch.dtype | None) -> None:
    assert _runtime.low_precision_dtype(dtype) == expected


def test_autocast_helper() -> None:
    a = torch.ones(4, 4)
    with _runtime.autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with _runtime.autocast("cpu", None):
        assert (a @ a).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        _runtime.autocast("cpu", "fp8")


def test_progress_bar_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_tqdm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("tqdm"):
            raise ImportError("No module named 'tqdm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runtime.progress_bar(total=3) is None  # asked implicitly: quiet
    with pytest.warns(RuntimeWarning, match=r"progress bars need tqdm"):
        assert _runtime.progress_bar(total=3, warn=True) is None
    monkeypatch.setattr(builtins, "__import__", real)
    bar = _runtime.progress_bar(total=2, file=io.StringIO())
    assert bar is not None
    bar.close()


# --------------------------------------------------------------------------- one count_flops


def test_count_flops_of_a_network_equals_counting_its_call() -> None:
    net = create_model("nafnet", **TINY["nafnet"]).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        direct = count_flops(lambda: net(x))
    assert count_flops(net, (16, 24)) == direct > 0
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))  # not registered: counted on a meta copy
    assert count_flops(plain, (8, 8), in_channels=1) == 2 * (4 * 8 * 8) * (1 * 3 * 3)  # 2 per multiply-add
    with pytest.raises(TypeError, match="give the image size"):
        count_flops(net)
    with pytest.raises(TypeError, match="size is only for a network"):
        count_flops(lambda: None, (8, 8))


def test_measure_latency_runs_restore() -> None:
    net = create_model("nafnet", **TINY["nafnet"])
    assert measure_latency(net, (16, 16), 2, "cpu") > 0


# --------------------------------------------------------------------------- the trainer's own modules


def test_run_log_window_rows_files_and_state(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    for step, loss in ((1, 1.0), (2, 3.0)):
        log.accumulate({"step": step, "loss": loss, "loss_main": loss / 2, "lr": 0.1})
    assert log.window_means() == {"loss": 2.0, "loss_main": 1.0}
    log.log_train({"step": 2, **log.window_means()})
    log.reset_window()
    assert log.window == {} and log.window_means() == {}
    log.log_val(2, {"rain": {"psnr": 30.0}, "all": {"psnr": 30.0}})
    log.accumulate({"loss": 5.0})
    state = log.state_dict()
    assert [h["kind"] for h in state["history"]] == ["train", "val", "val"]
    assert state["log_window"] == {"loss": 5.0, "count": 1.0}
    assert json.loads((tmp_path / "history.json").read_text()) == state["history"]
    assert (tmp_path / "val_log.csv").read_text().splitlines()[0] == "step,degradation,psnr"
    again = RunLog(tmp_path)
    again.load_state_dict(state)
    assert again.history == log.history and again.window == log.window
    again.start(1)  # a run resumed from step 1: the rows of step 2 go
    assert again.history == [] and not (tmp_path / "train_log.csv").exists()


def test_plot_training_curves(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"kind": "train", "step": s, "loss": -s} for s in (1, 2)]  # negative (PSNR loss): linear axis
    rows += [{"kind": "val", "step": 2, "degradation": d, "psnr": 20.0} for d in ("rain", "snow")]
    path = plot_training_curves(rows, tmp_path / "c.png")
    assert path == tmp_path / "c.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_training_curves(rows[2:], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_load_init_weights_reads_what_hub_reads(tmp_path: Path) -> None:
    from allinone_ir.hub import save_pretrained

    source = create_model("nafnet", **TINY["nafnet"])
    ema = create_model("nafnet", **TINY["nafnet"])
    # a training checkpoint: the EMA weights are the ones taken
    ckpt = write_checkpoint(tmp_path / "step.pt", {"model": source.state_dict(), "ema": ema.state_dict()})
    target = create_model("nafnet", **TINY["nafnet"]).train()
    load_init_weights(target, ckpt)
    assert target.training  # its mode is kept
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), ema.state_dict().values()))
    # best.pt, and a save_pretrained folder (new: any file load_checkpoint reads)
    best = write_checkpoint(
        tmp_path / "best.pt",
        best_weights_state(source, source, step=3, best={"psnr": 1.0}, ema_weights=False),
    )
    for path in (best, save_pretrained(source, tmp_path / "folder")):
        target = create_model("nafnet", **TINY["nafnet"])
        load_init_weights(target, path)
        assert all(
            torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values())
        )
    wider = create_model("nafnet", **{**TINY["nafnet"], "width": 16})
    with pytest.raises(
        CheckpointError, match=r"^init_weights .*best\.pt does not fit the configured model \(NAFNet: "
    ):
        load_init_weights(wider, best)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError,
        match=r"^init_weights \S+junk\.pt: cannot read checkpoint \S+junk\.pt: not a PyTorch checkpoint",
    ):
        load_init_weights(wider, tmp_path / "junk.pt")


# --------------------------------------------------------------------------- a family from outside


class _Shallow(RestorationModel):
    """A family defined outside the package: one residual 3x3 convolution.

    Args:
        width: Feature channels.

    Shape:
        - Input: :math:`(N, 3, H, W)`
        - Output: :math:`(N, 3, H, W)`
    """

    def __init__(self, *, width: int = 4) -> None:
        super().__init__()
        self.in_channels = self.out_channels = 3
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.head(x))


@pytest.fixture
def shallow_family(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register ``shallow_test_net`` for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "_ARCHITECTURES", dict(_registry._ARCHITECTURES))
    register_architecture(_Shallow)

    def shallow_test_net(**kwargs: Any) -> _Shallow:
        return _Shallow(**kwargs)

    register_model(shallow_test_net)
    return "shallow_test_net"


def test_a_new_family_needs_no_edit_to_the_cli_or_the_trainer(
    shallow_family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        write_image(tmp_path / "photos" / f"p{i}.png", torch.rand(3, 24, 24, generator=g))
    assert main(["models", "shallow*"]) == 0
    assert capsys.readouterr().out == "shallow_test_net\n"
    assert main(["info", "--model", shallow_family, "--size", "16", "--runs", "0"]) == 0
    assert "_Shallow (shallow_test_net)" in capsys.readouterr().out
    config = (
        f'[model]\nname = "{shallow_family}"\n'
        '[data.train]\ntype = "synthetic"\nclean_dir = "photos"\ntasks = ["rain"]\npatch_size = 16\n'
        '[data.val]\ntype = "synthetic"\nclean_dir = "photos"\ntasks = ["rain"]\n'
        '[trainer]\nmax_steps = 2\nbatch_size = 2\noutput_dir = "run"\nprogress_bar = false\nplot = false\n'
    )
    (tmp_path / "c.toml").write_text(config)
    assert main(["train", "--config", "c.toml"]) == 0
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    assert best.is_file()
    assert (
        main(["restore", str(tmp_path / "photos" / "p0.png"), "--checkpoint", str(best), "--out", "out"]) == 0
    )
    assert (tmp_path / "out" / "p0.png").is_file()
    # the trainer starts a new run from those weights (trainer.init_weights, read by hub.load_checkpoint)
    from allinone_ir.data import SyntheticDegradationDataset

    data = SyntheticDegradationDataset([torch.rand(3, 24, 24)], tasks=["rain"], patch_size=16)
    cfg = TrainerConfig(output_dir=str(tmp_path / "again"), max_steps=1, batch_size=1, progress_bar=False,
                        plot=False, init_weights=str(best))  # fmt: skip
    trainer = Trainer(create_model(shallow_family), cfg, data)
    saved = torch.load(best, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v.cpu()) for k, v in trainer.model.state_dict().items())


@pytest.mark.slow  # every network at full size
@pytest.mark.parametrize("name", sorted(__import__("tests.tiny_configs", fromlist=["TINY"]).TINY))
def test_info_counts_flops_of_every_registered_network(name: str) -> None:
    """`allinone-ir info` counts FLOPs on the meta device: every family's forward must run there."""
    from allinone_ir import create_model

    from .tiny_configs import TINY

    net = create_model(name, **TINY[name])
    small, large = count_flops(net, size=(32, 32)), count_flops(net, size=(64, 64))
    assert small > 0 and 3.5 * small < large < 4.5 * small  # convolutions scale with the pixels


@pytest.mark.parametrize("quiet", [False, True])
def test_train_quiet_turns_the_progress_bar_off(
    shallow_family: str, quiet: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_image(
        tmp_path / "photos" / "p0.png", torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    )
    (tmp_path / "c.toml").write_text(
        f'[model]\nname = "{shallow_family}"\n'
        '[data.train]\ntype = "synthetic"\nclean_dir = "photos"\ntasks = ["rain"]\npatch_size = 16\n'
        '[trainer]\nmax_steps = 1\nbatch_size = 1\noutput_dir = "run"\nplot = false\n'
    )
    assert main(["train", "--config", "c.toml", *(["--quiet"] if quiet else [])]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["trainer"]["progress_bar"] is not quiet
