"""Journey: the course task, exactly as a student has it.

The course folder holds ``train/degraded/rain-N.png`` with ``train/clean/rain_clean-N.png`` (the same
for snow) and ``test/degraded/N.png``, and no validation folder. The student gets the shipped config
into it (``allinone-ir config show course_rain_snow > course_rain_snow.toml``), makes the model tiny,
runs it from there, restores the test set into ``pred.npz`` for the grader and scores the held-out
pairs with ``allinone-ir evaluate``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone_ir.data import synthesize
from allinone_ir.io import write_image

from .conftest import assert_no_traceback

pytestmark = pytest.mark.slow  # trains: run by CI and `python -m pytest`, not by `-m "not slow"`

TINY_PROMPTIR = (
    "args = { dim = 8, num_blocks = [1, 1, 1, 1], num_refinement_blocks = 1, heads = [1, 2, 2, 4], "
    "prompt_dims = [8, 8, 16], prompt_sizes = [8, 4, 4], prompt_len = 2 }"
)


def _course_folder(root: Path) -> None:
    g = torch.Generator().manual_seed(0)
    for kind in ("rain", "snow"):
        for i in range(1, 9):
            clean = torch.rand(3, 32, 32, generator=g)
            write_image(root / "train" / "clean" / f"{kind}_clean-{i}.png", clean)
            write_image(root / "train" / "degraded" / f"{kind}-{i}.png", synthesize(clean, kind, rng=i))
    for i in range(1, 4):
        write_image(root / "test" / "degraded" / f"{i}.png", torch.rand(3, 32, 32, generator=g))


def _sub(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the shipped course_rain_snow config no longer has {old!r}"
    return text.replace(old, new)


def _tiny_course_config(run_cli, root: Path) -> Path:
    """The shipped config with a tiny network and a few updates; data paths, val_split etc. as shipped."""
    shown = run_cli("config", "show", "course_rain_snow")  # what `... > course_rain_snow.toml` writes
    assert shown.returncode == 0 and shown.stderr == "", shown.output
    text = shown.stdout
    for old, new in [
        ('name = "promptir"\n', f'name = "promptir"\n{TINY_PROMPTIR}\n'),
        ("patch_size = 128", "patch_size = 16"),
        ("val_split = 0.05", "val_split = 0.125"),  # 2 of the 16 pairs: one rain, one snow
        ("max_steps = 100000", "max_steps = 6"),
        ("grad_accum_steps = 4", "grad_accum_steps = 1"),
        ("warmup_steps = 4000", "warmup_steps = 0"),
        ('precision = "bf16"', 'precision = "fp32"'),
        ("val_every = 2000", "val_every = 3"),
        ("save_every = 2000", "save_every = 3\nprogress_bar = false\nplot = false"),
    ]:
        text = _sub(text, old, new)
    path = root / "course_rain_snow.toml"
    path.write_text(text)
    return path


def test_course_train_restore_npz_and_score_held_out_pairs(run_cli, tmp_path: Path) -> None:
    _course_folder(tmp_path)
    _tiny_course_config(run_cli, tmp_path)
    run = tmp_path / "runs" / "course"

    result = run_cli("train", "--config", "course_rain_snow.toml")  # from the course folder
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"no checkpoint in {run / 'checkpoints'}: starting at step 0"
    assert re.fullmatch(
        r"PromptIR: [\d,]+ parameters; a training checkpoint weighs about [\d.]+ MB "
        r"\(the newest 1 kept, plus best\.pt\)",
        lines[1],
    )
    held_out = run / "held_out.txt"
    assert lines[2] == (
        f"held out 2 of 16 pairs for validation (1 rain, 1 snow) on whole images; listed in {held_out}"
    )
    files = held_out.read_text().split()
    assert [Path(f).name.split("-")[0] for f in files] == ["rain", "snow"]
    assert all(Path(f).parent == tmp_path / "train" / "degraded" for f in files)
    with open(run / "val_log.csv") as f:
        val = list(csv.DictReader(f))
    assert [(r["step"], r["degradation"], r["count"]) for r in val] == [
        ("3", "rain", "1"), ("3", "snow", "1"), ("3", "all", "2"),
        ("6", "rain", "1"), ("6", "snow", "1"), ("6", "all", "2"),
    ]  # fmt: skip
    best_step = max((r for r in val if r["degradation"] == "all"), key=lambda r: float(r["psnr"]))["step"]
    assert "best val PSNR" in result.stdout and f"at step {best_step}" in result.stdout
    # the last checkpoint and the best weights, nothing more
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "step_00000006.pt"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert "optimizer" not in best and best["step"] == int(best_step)

    # the grader's file: every test image, keyed by file name, uint8 (3, H, W)
    result = run_cli("restore", "--checkpoint", run / "checkpoints" / "best.pt", "test/degraded",
                     "--npz", "pred.npz", "--layout", "chw")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    with np.load(tmp_path / "pred.npz") as z:
        assert sorted(z.files) == ["1.png", "2.png", "3.png"]
        assert all(z[k].shape == (3, 32, 32) and z[k].dtype == np.uint8 for k in z.files)

    # the held-out pairs, restored and scored per degradation: the numbers the validation logged
    result = run_cli(
        "restore", "--checkpoint", run / "checkpoints" / "best.pt", *files, "--out", "held_out_pred"
    )
    assert result.returncode == 0, result.output
    result = run_cli("evaluate", "--pred", "held_out_pred", "--target", "train/clean",
                     "--name-map", r"^(\w+)-(\d+)", r"\1_clean-\2")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    logged = {r["degradation"]: float(r["psnr"]) for r in val if r["step"] == best_step}
    for group, name in (("rain", "rain"), ("snow", "snow"), ("all", "average")):
        m = re.search(rf"^{name}\s+(\d+)\s+([\d.]+)\s+[\d.]+$", result.stdout, re.M)
        assert m is not None, result.stdout
        assert int(m.group(1)) == (2 if group == "all" else 1)
        assert float(m.group(2)) == pytest.approx(logged[group], abs=0.1)  # 8-bit PNGs vs float outputs
