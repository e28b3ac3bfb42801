"""Journey: PIP trained from the shipped ``pip_five_task.yaml`` config does what the paper does.

The user shrinks the shipped config (a tiny network, synthetic degradations of a few photos instead of
the five public datasets), trains it, and restores blind afterwards: the degradation classifier must have
been trained by the config's run (PIP's ``classifier`` term, declared by the network itself). The same
config runs under ``torchrun`` with two gloo processes (every parameter used in the one forward).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from allinone_ir import create_model
from allinone_ir.assets import sample_images
from allinone_ir.data import SyntheticDegradationDataset
from allinone_ir.io import read_image, write_image

from .conftest import assert_no_traceback, journey_env

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.slow  # trains: run by CI and `python -m pytest`, not by `-m "not slow"`

CONFIG = Path(__file__).resolve().parents[2] / "src" / "allinone_ir" / "configs" / "pip_five_task.yaml"
# classifier_widths of at least 8: PyTorch 2.13's oneDNN crashes in the weight gradient of a stride-2
# 1x1 convolution with fewer than 8 input channels in channels-last (the classifier's shortcut)
TINY_PIP = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4], prompt_dims=[8, 8, 16],
                prompt_sizes=[8, 4, 4], p2f_heads=2, classifier_widths=[8, 16],
                degradations=["noise", "rain", "haze", "blur", "lowlight"])  # the five of the shipped config  # fmt: skip
TASKS = ["noise_50", "rain", "haze"]  # three of the five (labels 0, 1, 2), told apart within 40 updates


def _photos(folder: Path) -> Path:
    for i, path in enumerate(sample_images()):
        small = F.interpolate(read_image(path)[None], size=(48, 48), mode="area")[0]
        write_image(folder / f"p{i}.png", small)
    return folder


def _tiny_config(tmp_path: Path, **trainer: Any) -> Path:
    """The shipped pip_five_task.yaml with a tiny network and synthetic data; everything else as shipped."""
    cfg = yaml.safe_load(CONFIG.read_text())
    assert "extra_losses" not in cfg  # PIP's terms come from the network: nothing to add by hand
    cfg["model"]["args"] = TINY_PIP
    cfg["data"]["train"] = {"type": "synthetic", "clean_dir": "photos", "tasks": TASKS, "patch_size": 32,
                            "repeat": 2}  # fmt: skip
    cfg["trainer"].update(
        output_dir="run",
        batch_size=6,
        warmup_steps=0,
        precision="fp32",
        device="cpu",
        progress_bar=False,
        plot=False,
        **trainer,
    )
    _photos(tmp_path / "photos")
    path = tmp_path / "pip_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _classifier_accuracy(state: dict[str, torch.Tensor] | None) -> float:
    """Eval-mode accuracy of the network's classifier on fresh degradations of the photos."""
    torch.manual_seed(0)
    net = create_model("pip_restormer", **TINY_PIP).eval()
    if state is not None:
        net.load_state_dict(state)
    photos = [F.interpolate(read_image(p)[None], size=(48, 48), mode="area")[0] for p in sample_images()]
    data = SyntheticDegradationDataset(photos, tasks=TASKS, patch_size=32, repeat=2, seed=7, fixed=True)
    x = torch.stack([data[i]["degraded"] for i in range(len(data))])
    y = torch.tensor([data[i]["label"] for i in range(len(data))])
    with torch.no_grad():
        return float((net.classify(x).argmax(1) == y).float().mean())


def test_pip_config_trains_the_classifier(run_cli, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, max_steps=40, lr=5e-3, schedule="constant", log_every=5)
    result = run_cli("train", "--config", config)
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert "PIPRestormer: 187,414 parameters" in result.stderr
    with open(tmp_path / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(5, 45, 5))
    # PIP's own terms, with the config's weights: loss = main + 0.002 ddl + 0.1 classifier
    for r in rows:
        parts = float(r["loss_main"]) + 0.002 * float(r["loss_ddl"]) + 0.1 * float(r["loss_classifier"])
        assert float(r["loss"]) == pytest.approx(parts, rel=1e-4)
    ce = [float(r["loss_classifier"]) for r in rows]
    print("classifier cross-entropy per 5 updates:", [round(v, 3) for v in ce])
    assert ce[0] > 0.5 * math.log(5)  # starts near chance (ln 5 = 1.61 for five degradations)
    assert sum(ce[4:]) / 4 < 0.6 * ce[0]  # and has learnt
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "step_00000040.pt", weights_only=True)
    untrained, trained = _classifier_accuracy(None), _classifier_accuracy(ckpt["model"])
    print(f"classifier accuracy: untrained {untrained:.2f}, trained {trained:.2f}")
    assert trained >= untrained + 0.3, (untrained, trained)  # blind restoration now has a trained classifier


def _run_killing_the_group(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; on a timeout the whole group (torchrun's workers too) is killed."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=journey_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out}")
    return proc.returncode, out


def test_pip_config_runs_under_torchrun_with_two_gloo_processes(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, max_steps=3, log_every=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "allinone_ir.cli", "train", "--config", str(config)]  # fmt: skip
    code, output = _run_killing_the_group(cmd, tmp_path, timeout=240)
    assert code == 0, output
    assert "parameters that were not used in producing loss" not in output
    assert "Traceback (most recent call last)" not in output
    assert "warning:" not in output  # no DDP bucket-stride warning from the channels-last weights
    assert output.count("done: 3 steps") == 1  # rank 0 reports
    with open(tmp_path / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["loss_classifier"]) > 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000003.pt"]
