"""Bundled sample photographs."""

from __future__ import annotations

import pytest
import torch

from allinone_ir.assets import sample_image, sample_images
from allinone_ir.io import read_image


def test_sample_images_are_small_clean_rgb_photos() -> None:
    paths = sample_images()
    assert [p.name for p in paths] == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    assert sum(p.stat().st_size for p in paths) < 1_000_000
    for p in paths:
        img = read_image(p)
        assert img.shape[0] == 3 and max(img.shape[1:]) == 256 and min(img.shape[1:]) >= 128
        assert img.dtype == torch.float32 and 0.0 <= img.min() and img.max() <= 1.0
        assert img.std() > 0.1  # real photographs, not flat placeholders
        # not grayscale: the channels differ
        assert (img[0] - img[2]).abs().mean() > 0.01


def test_licence_file_lists_every_image() -> None:
    text = (sample_images()[0].parent / "LICENSES.md").read_text(encoding="utf-8")
    for p in sample_images():
        assert f"`{p.name}`" in text


def test_sample_image_by_name() -> None:
    assert sample_image("coffee") == sample_image("coffee.png")
    assert sample_image("rocket").name == "rocket.png"
    with pytest.raises(ValueError, match="available"):
        sample_image("lena")
