"""Journey: restore a folder of photographs in which some files are broken, then share the results.

A user points ``allinone-ir restore`` at a folder holding 8-bit, 16-bit and grayscale PNGs next
to a truncated download, a text file named ``.png``, an empty file and (when not root) a file
they may not read. Every readable image is restored, keeping its bit depth and channels; each
bad file is one ``skipped FILE: reason`` line; the exit status says something was skipped; the
outputs are readable by the user's group like any file they write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone_ir import create_model, restore
from allinone_ir.hub import from_pretrained, save_pretrained
from allinone_ir.io import array_to_tensor, read_image_array, tensor_to_array, write_image

from .conftest import assert_no_traceback

pytest.importorskip("PIL")
pytest.importorskip("safetensors")

TINY = dict(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = create_model("nafnet", **TINY).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_pretrained(net, tmp_path / "model")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the subprocess inherits it
    yield
    os.umask(old)


def _photos(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    good = {
        "beach.png": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
        "scan16.png": rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16),
        "xray.png": rng.integers(0, 256, (24, 32), dtype=np.uint8),
    }
    for name, arr in good.items():
        write_image(folder / name, arr)
    data = (folder / "beach.png").read_bytes()
    (folder / "download.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.png").write_text("remember to buy milk\n")
    (folder / "empty.png").write_bytes(b"")
    return good


def test_restore_folder_with_bad_files(tmp_path: Path, run_cli, model_dir: Path, umask_022) -> None:
    photos = tmp_path / "photos"
    good = _photos(photos)
    expected_skips = {
        "download.png": "image file is truncated",
        "notes.png": "not an image file (or a format Pillow cannot read)",
        "empty.png": "empty file (0 bytes)",
    }
    if os.geteuid() != 0:  # root reads any file
        locked = write_image(photos / "locked.png", np.zeros((4, 4, 3), np.uint8))
        locked.chmod(0)
        expected_skips["locked.png"] = "permission denied"
    n_files = len(good) + len(expected_skips)

    result = run_cli("restore", "photos", "--checkpoint", "model", "--out", "restored", "--npz", "pred.npz")

    assert_no_traceback(result)
    assert result.returncode == 1, result.output
    lines = result.stderr.splitlines()
    for name, reason in expected_skips.items():
        [line] = [x for x in lines if x.startswith(f"skipped photos/{name}: ")]
        assert reason in line
    assert (
        lines[-1] == f"restored 3 of {n_files} image(s) -> restored, pred.npz; skipped {len(expected_skips)}"
    )

    # every readable image restored, as it came: depth and channels
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == sorted(good)
    beach = read_image_array(tmp_path / "restored" / "beach.png", keep_channels=True)
    scan = read_image_array(tmp_path / "restored" / "scan16.png", keep_channels=True)
    xray = read_image_array(tmp_path / "restored" / "xray.png", keep_channels=True)
    assert (beach.dtype, beach.shape) == (np.uint8, (24, 32, 3))
    assert (scan.dtype, scan.shape) == (np.uint16, (24, 32, 3))
    assert (xray.dtype, xray.shape) == (np.uint8, (24, 32, 1))

    # the numbers are the network's (one level of rounding apart at most: another process)
    net = from_pretrained(model_dir)
    want = tensor_to_array(restore(net, array_to_tensor(good["scan16.png"])), np.uint16)
    assert np.abs(scan.astype(np.int64) - want).max() <= 1
    assert np.abs(beach.astype(int) - restore(net, good["beach.png"]).astype(int)).max() <= 1
    with np.load(tmp_path / "pred.npz") as z:
        assert sorted(z.files) == sorted(good)  # only the images restored
        assert z["scan16.png"].dtype == np.uint8 and z["scan16.png"].shape == (24, 32, 3)

    # shared with the group: ordinary permissions, not mkstemp's 0600
    for path in [tmp_path / "pred.npz", *sorted((tmp_path / "restored").iterdir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left

    # inputs untouched; running again does not silently replace the results
    assert (photos / "notes.png").read_text() == "remember to buy milk\n"
    again = run_cli("restore", "photos", "--checkpoint", "model", "--out", "restored")
    assert again.returncode == 2
    assert again.stderr.startswith("error: output files exist") and "--overwrite" in again.stderr
    assert_no_traceback(again)


def test_named_architecture_without_weights_is_refused(tmp_path: Path, run_cli) -> None:
    write_image(tmp_path / "photo.png", np.zeros((16, 16, 3), np.uint8))

    refused = run_cli("restore", "photo.png", "--model", "promptir", "--out", "out")

    assert refused.returncode == 2
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith(
        "error: --model promptir without --checkpoint would run the network with random weights"
    )
    assert "--checkpoint" in line and "--random-weights" in line
    assert not (tmp_path / "out").exists()
    assert_no_traceback(refused)

    args = '{"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}'
    tried = run_cli(
        "restore", "photo.png", "--model", "nafnet", "--model-args", args, "--random-weights", "--out", "out"
    )
    assert tried.returncode == 0, tried.output
    assert "warning: nafnet has random weights" in tried.stderr
    assert (tmp_path / "out" / "photo.png").is_file()
