"""Journey: restore what a user really has on disk: phone photographs, float TIFFs, odd links, a small disk.

A user restores a folder holding a phone photograph taken upright (stored sideways with EXIF
Orientation 6), a 32-bit float TIFF from a scientific camera, a float TIFF whose values are not
in [0, 1], and a symbolic link that points at itself. The photograph comes back the way every
viewer shows it, the float TIFF as a 16-bit PNG of its restored values (not black), the
out-of-range TIFF and the link loop are each one ``skipped FILE: reason`` line while the others are
restored (exit status 1). Then the ``--npz`` archive goes to a disk that fills up: one line says
so, and no temporary file is left on that disk.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone_ir import create_model, restore
from allinone_ir.hub import from_pretrained, save_pretrained
from allinone_ir.io import read_image_array, write_image

from .conftest import assert_no_traceback

PIL = pytest.importorskip("PIL.Image")
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


def _phone_photo(path: Path) -> np.ndarray:
    """A landscape sensor's pixels with Orientation 6; returns the picture a viewer shows."""
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:, :, 2] = 60
    stored[:6, :, 0] = 250  # a red band along the stored top: the right edge of the upright picture
    exif = PIL.Exif()
    exif[0x0112] = 6
    PIL.fromarray(stored).save(path, exif=exif, quality=95)
    return np.rot90(stored, -1)


def test_photos_float_tiffs_and_a_link_loop(tmp_path: Path, run_cli, model_dir: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    upright = _phone_photo(photos / "phone.jpg")
    values = np.linspace(0.2, 0.8, 24 * 32, dtype=np.float32).reshape(24, 32)
    PIL.fromarray(values).save(photos / "sensor.tif")
    PIL.fromarray(values * 4000).save(photos / "counts.tif")
    (photos / "loop.png").symlink_to("loop.png")

    result = run_cli("restore", "photos", "--checkpoint", "model", "--out", "restored")

    assert_no_traceback(result)
    assert result.returncode == 1, result.output
    lines = result.stderr.splitlines()
    [loop] = [x for x in lines if x.startswith("skipped photos/loop.png: ")]
    assert loop == "skipped photos/loop.png: symbolic link loop"
    [counts] = [x for x in lines if x.startswith("skipped photos/counts.tif: ")]
    assert "mode F" in counts and "from 800 to 3200" in counts and "[0, 1]" in counts
    assert lines[-1] == "restored 2 of 4 image(s) -> restored; skipped 2"
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["phone.png", "sensor.png"]

    # the photograph the way viewers show it: portrait, the red band on the right
    phone = read_image_array(tmp_path / "restored" / "phone.png")
    assert phone.shape == upright.shape == (40, 24, 3)
    assert phone[:, -6:, 0].mean() > phone[:, :6, 0].mean() + 100

    # the float TIFF: its values restored into a 16-bit grayscale PNG, as the library computes them
    sensor = read_image_array(tmp_path / "restored" / "sensor.png", keep_channels=True)
    assert sensor.dtype == np.uint16 and sensor.shape == (24, 32, 1)
    assert sensor.max() > 0.3 * 65535 and sensor.std() > 1000  # not a black image
    net = from_pretrained(model_dir)
    want = restore(net, str(photos / "sensor.tif"))
    assert want.dtype == np.float32 and want.shape == (24, 32, 1)
    assert np.abs(sensor / 65535.0 - want).max() <= 2 / 65535


def _mount_small_disk(where: Path) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def test_npz_on_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path, run_cli, model_dir: Path) -> None:
    disk = tmp_path / "usb"
    if not _mount_small_disk(disk):
        pytest.skip("needs root and tmpfs to make a real 1 MiB disk (tests/test_cli_inference.py fakes it)")
    try:
        rng = np.random.default_rng(0)
        for i in range(3):  # 128 x 128 x 3 float32 = 192 KiB each in the archive: the third does not fit
            write_image(tmp_path / f"img{i}.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
        (disk / "holiday.txt").write_bytes(b"x" * 600_000)  # the user's own file on the disk

        result = run_cli(
            "restore", "img0.png", "img1.png", "img2.png", "--checkpoint", "model",
            "--npz", disk / "pred.npz", "--npz-dtype", "float32", "--quiet",
        )  # fmt: skip

        assert_no_traceback(result)
        assert result.returncode == 2, result.output
        assert (
            result.stderr.splitlines()[-1]
            == f"error: no space left on device while writing {disk / 'pred.npz'}"
        )
        assert sorted(p.name for p in disk.iterdir()) == ["holiday.txt"]  # no .tmp left, the user's file kept
        assert (disk / "holiday.txt").read_bytes() == b"x" * 600_000
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_refusals_to_overwrite_name_the_option(tmp_path: Path, run_cli) -> None:
    """A command that will not replace a file tells the user its flag, never a Python argument."""
    torch.manual_seed(0)
    net = create_model("nafnet", **TINY)
    torch.save(net.state_dict(), tmp_path / "nafnet.pth")
    for dst in ("nafnet.safetensors", "nafnet_folder"):
        first = run_cli("convert", "nafnet.pth", dst)
        assert first.returncode == 0, first.output

        again = run_cli("convert", "nafnet.pth", dst)

        assert_no_traceback(again)
        assert again.returncode == 2
        [line] = again.stderr.splitlines()
        assert line.startswith(f"error: refusing to overwrite {dst}") and line.endswith("(pass --overwrite)")
        assert "overwrite=True" not in again.output
