"""A user's checkpoint is truncated or not a checkpoint at all, and a user asks about a model by name.

Every command that reads weights (``restore``, ``convert``, ``info``, ``--model FOLDER``) says in
one line which file is wrong and how, never a traceback; ``info NAME`` takes a registered model
name as users type it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from allinone_ir import create_model
from allinone_ir.hub import save_pretrained

from ..tiny_configs import TINY
from .conftest import assert_no_traceback

pytest.importorskip("safetensors")
pytest.importorskip("PIL")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    folder = save_pretrained(create_model("restormer", **TINY["restormer"]), tmp_path / "good")
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    cut_folder = tmp_path / "cut_folder"
    cut_folder.mkdir()
    (cut_folder / "config.json").write_text((folder / "config.json").read_text())
    (cut_folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(b"\x11" + bytes(range(256)) * 16)
    torch.save(create_model("restormer", **TINY["restormer"]).state_dict(), tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    Image.new("RGB", (16, 16), (120, 60, 30)).save(tmp_path / "in.png")
    return {p.name: p for p in tmp_path.iterdir()}


SAFETENSORS = r"not a valid safetensors file, truncated or corrupt \(Error while deserializing header"


def _one_error_line(result, pattern: str) -> None:
    assert_no_traceback(result)
    assert result.returncode == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_a_truncated_safetensors_file_in_every_command(run_cli, files: dict[str, Path]) -> None:
    cut = "cut.safetensors"
    what = rf"^error: cannot read checkpoint {cut}: {SAFETENSORS}"
    _one_error_line(run_cli("restore", "in.png", "--out", "out", "--checkpoint", cut), what)
    assert not Path(files["in.png"].parent / "out").exists() or not any(
        (files["in.png"].parent / "out").iterdir()
    )
    _one_error_line(run_cli("convert", cut, "converted.safetensors"), what)
    assert not (files["in.png"].parent / "converted.safetensors").exists()
    _one_error_line(run_cli("info", "--checkpoint", cut, "--runs", "0", "--size", "16"), what)
    _one_error_line(run_cli("info", cut, "--runs", "0", "--size", "16"), what)
    folder_msg = rf"^error: cannot read checkpoint cut_folder/model\.safetensors: {SAFETENSORS}"
    _one_error_line(run_cli("restore", "in.png", "--out", "out", "--model", "cut_folder"), folder_msg)
    _one_error_line(run_cli("info", "--model", "cut_folder", "--runs", "0", "--size", "16"), folder_msg)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero.pt", r"empty file \(0 bytes\)$"),
        ("random.pt", r"not a PyTorch checkpoint: neither a zip archive nor a pickle"),
        ("cut.pt", r"truncated or corrupt PyTorch checkpoint \(a zip archive that cannot be read"),
    ],
)
def test_a_bad_pt_file_says_what_is_wrong(run_cli, files: dict[str, Path], name: str, reason: str) -> None:
    result = run_cli("restore", "in.png", "--out", "out", "--checkpoint", name)
    _one_error_line(result, rf"^error: cannot read checkpoint {re.escape(name)}: {reason}")
    assert "if you trust the file" not in result.stderr.lower()


def test_info_takes_a_model_name(run_cli, files: dict[str, Path]) -> None:
    result = run_cli("info", "promptir", "--runs", "0", "--size", "32")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert re.search(r"^network\s+PromptIR \(promptir\)$", result.stdout, re.M), result.stdout
    assert re.search(r"^parameters\s+35,376,967 ", result.stdout, re.M), result.stdout
    # as typed with the class's capitals, and a save_pretrained folder as the positional argument
    assert (
        "network       PromptIR (promptir)"
        in run_cli("info", "PromptIR", "--runs", "0", "--size", "32").stdout
    )
    folder = run_cli("info", "good", "--runs", "0", "--size", "16")
    assert folder.returncode == 0 and "network       Restormer (restormer)" in folder.stdout, folder.output
    _one_error_line(
        run_cli("info", "promtir", "--runs", "0"),
        r"^error: unknown model 'promtir'\. Did you mean: promptir(, \w+)*\? Known: adair, .*restormer_biasfree\. "
        r"Or give a checkpoint file or folder that exists\.$",
    )
    _one_error_line(
        run_cli("info", "nafnet_w", "--runs", "0"),
        r"^error: 'nafnet_w' is not a registered model and matches several: nafnet_width32, nafnet_width64",
    )
    _one_error_line(
        run_cli("info", "promptir", "--model", "restormer", "--runs", "0"),
        r"^error: give the network once: 'promptir' or --model/--checkpoint, not both$",
    )
