"""Journey: a user downloads an official AdaIR or MoCE-IR release and uses it from the command line.

The released files are Lightning checkpoints (``state_dict`` with a ``net.`` prefix). The user
converts one with ``allinone-ir convert``, looks at it with ``allinone-ir info``, restores a
photograph with it, and trains MoCE-IR from a configuration file, where the family's load-balancing
term is logged next to the main loss. The releases are stood in for by official-format files of
small configurations with random weights (the released weights are not downloaded in tests).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from allinone_ir import restore
from allinone_ir.assets import sample_image
from allinone_ir.hub import from_pretrained
from allinone_ir.io import read_image, read_image_array

from ..tiny_configs import TINY, tiny_model
from .conftest import assert_no_traceback

pytest.importorskip("PIL")
pytest.importorskip("safetensors")


@pytest.mark.parametrize(("name", "cls"), [("adair", "AdaIR"), ("moce_ir_s", "MoCEIR")])
def test_official_release_converted_inspected_and_used(run_cli, tmp_path: Path, name: str, cls: str) -> None:
    net = tiny_model(name).eval()
    release = tmp_path / f"{name}.ckpt"
    torch.save({"epoch": 119, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, release)

    res = run_cli("convert", release, tmp_path / f"{name}.safetensors")
    assert res.returncode == 0, res.output
    assert_no_traceback(res)
    assert f"{cls}, {net.num_parameters:,} parameters" in res.output

    res = run_cli("info", "--checkpoint", tmp_path / f"{name}.safetensors", "--size", "64")
    assert res.returncode == 0, res.output
    assert cls in res.output and f"{net.num_parameters:,}" in res.output and "FLOPs" in res.output

    photo = tmp_path / "photo.png"
    photo.write_bytes(Path(sample_image("chelsea")).read_bytes())
    original = photo.read_bytes()
    res = run_cli("restore", "--checkpoint", release, photo, "--out", tmp_path / "out")
    assert res.returncode == 0, res.output
    out = tmp_path / "out" / "photo.png"
    assert read_image_array(out).shape == read_image_array(photo).shape
    assert photo.read_bytes() == original  # the input is never replaced
    # the command's output is the network's, within 8-bit rounding
    with torch.no_grad():
        expected = restore(from_pretrained(tmp_path / f"{name}.safetensors"), read_image(photo))
    assert (read_image(out) - expected).abs().max().item() <= 1 / 255 + 1e-6


@pytest.mark.slow  # trains
def test_moce_ir_trained_from_a_config_logs_its_balance_term(run_cli, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("coffee", "rocket"):
        (photos / f"{stem}.png").write_bytes(Path(sample_image(stem)).read_bytes())
    toml = {bool: lambda v: str(v).lower(), int: str, float: str, tuple: lambda v: str(list(v))}
    args = ", ".join(f"{k} = {toml[type(v)](v)}" for k, v in TINY["moce_ir_s"].items())  # the tiny network
    (tmp_path / "moce.toml").write_text(
        f"""[model]
name = "moce_ir_s"
args = {{{args}}}
[data.train]
type = "synthetic"
clean_dir = "photos"
tasks = ["noise_25", "rain", "haze"]
patch_size = 32
repeat = 2
[trainer]
output_dir = "runs/moce"
max_steps = 3
batch_size = 2
log_every = 1
"""
    )
    res = run_cli("train", "--config", "moce.toml")
    assert res.returncode == 0, res.output
    assert_no_traceback(res)
    assert "no checkpoint in" in res.output and "starting at step 0" in res.output
    with open(tmp_path / "runs" / "moce" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for r in rows:  # the family's term, weighted 0.01, is part of the logged loss
        total, main, balance = float(r["loss"]), float(r["loss_main"]), float(r["loss_balance"])
        assert balance >= 0 and total == pytest.approx(main + 0.01 * balance, rel=1e-5, abs=1e-7)
