"""Image file I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL.Image")

from allinone_ir.io import ImageReadError, list_images, read_image, read_image_array, write_image  # noqa: E402


def test_round_trip_8bit(tmp_path: Path) -> None:
    x = torch.rand(3, 9, 13)
    p = write_image(tmp_path / "a.png", x)
    y = read_image(p)
    assert y.shape == (3, 9, 13) and y.dtype == torch.float32
    assert (y - x).abs().max() <= 0.5 / 255 + 1e-6


def test_16bit_grayscale_promoted(tmp_path: Path) -> None:
    arr = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    PIL.fromarray(arr).save(tmp_path / "g16.png")
    raw = read_image_array(tmp_path / "g16.png")
    assert raw.dtype == np.uint16 and raw.shape == (4, 5, 3)
    assert raw[3, 4, 2] == 19 * 3000
    t = read_image(tmp_path / "g16.png")
    assert abs(float(t[0, 3, 4]) - 57000 / 65535) < 1e-6


def test_alpha_dropped_with_warning(tmp_path: Path) -> None:
    PIL.new("RGBA", (4, 3), (10, 20, 30, 40)).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        arr = read_image_array(tmp_path / "a.png")
    assert arr.shape == (3, 4, 3) and arr[0, 0].tolist() == [10, 20, 30]


def test_corrupt_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_never_overwrites(tmp_path: Path) -> None:
    p = write_image(tmp_path / "x.png", torch.zeros(3, 2, 2))
    with pytest.raises(FileExistsError, match="refusing"):
        write_image(p, torch.ones(3, 2, 2))
    assert read_image(p).max() == 0
    write_image(p, torch.ones(3, 2, 2), overwrite=True)
    assert read_image(p).min() == 1
    assert [q.name for q in list_images(tmp_path)] == ["x.png"]
