"""Degradation synthesis: the official noise recipe, physical models, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from allinone_ir.data.augment import channel_shuffle
from allinone_ir.data.degradations import (
    DEGRADATION_LABELS,
    DEGRADATIONS,
    add_gaussian_noise,
    add_haze,
    add_rain,
    add_snow,
    low_light,
    motion_blur,
    motion_kernel,
    synthesize,
)


def _img(n: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    shape = (3, 40, 48) if n is None else (n, 3, 40, 48)
    return torch.rand(shape, generator=g)


def test_noise_follows_official_uint8_recipe() -> None:
    x = _img()
    sigma = 25.0
    y = add_gaussian_noise(x, sigma, rng=7)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).numpy()
    clean8 = np.round(x.numpy() * 255).astype(np.float32)
    ref = np.clip(clean8 + noise * sigma, 0, 255).astype(np.uint8)  # PromptIR / PIP: clip, then truncate
    assert np.array_equal(np.round(y.numpy() * 255).astype(np.uint8), ref)
    flat = add_gaussian_noise(torch.full((3, 64, 64), 0.5), 15.0, rng=0)
    assert float((flat - 128 / 255).std()) == pytest.approx(15 / 255, rel=0.05)
    assert not torch.equal(add_gaussian_noise(x, 25, rng=1), add_gaussian_noise(x, 25, rng=2))
    with pytest.raises(ValueError, match="sigma"):
        add_gaussian_noise(x, -1)


def test_haze_is_atmospheric_scattering() -> None:
    x = _img()
    depth = torch.linspace(0, 1, 48).expand(40, 48)
    y = add_haze(x, beta=1.5, airlight=0.9, depth=depth)
    t = torch.exp(-1.5 * depth)
    assert torch.allclose(y, (x * t + 0.9 * (1 - t)).clamp(0, 1), atol=1e-6)
    drawn = add_haze(x, rng=5)
    assert torch.equal(drawn, add_haze(x, rng=5)) and float((drawn - x).abs().mean()) > 0.05
    with pytest.raises(ValueError, match="depth"):
        add_haze(x, depth=torch.ones(10, 10))


def test_motion_kernel_and_blur() -> None:
    k = motion_kernel(7, 0)
    assert k.shape == (7, 7) and float(k.sum()) == pytest.approx(1.0)
    assert torch.allclose(k[3], torch.full((7,), 1 / 7), atol=1e-6) and float(k[:3].sum()) == 0
    kv = motion_kernel(7, 90)
    assert torch.allclose(kv, k.T, atol=1e-6)
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1.0
    y = motion_blur(x.expand(1, 3, 9, 9).contiguous(), 5, 0)
    assert torch.allclose(y[0, 0, 4, 2:7], torch.full((5,), 0.2), atol=1e-6)
    with pytest.raises(ValueError, match="length"):
        motion_kernel(0.5, 0)


def test_low_light_formula() -> None:
    x = _img()
    assert torch.allclose(low_light(x, gamma=2.2, scale=0.5), 0.5 * x.pow(2.2), atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        low_light(x, gamma=0)


def test_rain_and_snow_brighten_only() -> None:
    x = _img() * 0.5
    for y in (add_rain(x, rng=1), add_snow(x, rng=1, density=0.01)):
        assert (y >= x - 1e-6).all() and float((y - x).max()) > 0.3
    assert torch.equal(add_rain(x, rng=2), add_rain(x, rng=2))
    assert not torch.equal(add_rain(x, rng=2), add_rain(x, rng=3))


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_synthesize_every_degradation(name: str) -> None:
    for x in (_img(), _img(2)):
        y = synthesize(x, name, rng=11)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, synthesize(x, name, rng=11))
        assert float((y - x).abs().mean()) > 1e-3
    assert name in DEGRADATION_LABELS


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        synthesize(_img(), "fog")
    with pytest.raises(ValueError, match="float tensor"):
        add_rain(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="rng"):
        add_rain(_img(), rng="seed")  # type: ignore[arg-type]
    assert DEGRADATION_LABELS["noise"] == 0 and DEGRADATION_LABELS["lowlight"] == 4
    assert not math.isnan(float(synthesize(_img(), "lowlight", rng=0).mean()))


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_channel_shuffle_commutes_with_every_synthetic_degradation(name: str) -> None:
    # the demo shuffles colour channels after synthesis; that is exact only because every degradation
    # treats the channels alike: degrading a channel-permuted image = permuting the degraded image
    x = _img()
    order = torch.tensor([2, 0, 1])
    degraded = synthesize(x, name, rng=5)
    shuffled = channel_shuffle({"degraded": degraded[None], "clean": x[None]}, rng=0)
    drawn = [
        int(torch.nonzero(torch.all(shuffled["clean"][0, i] == x, dim=(1, 2))).flatten()[0]) for i in range(3)
    ]
    assert sorted(drawn) == [0, 1, 2] and torch.equal(shuffled["degraded"][0], degraded[drawn])
    if name not in (
        "noise",
        "lowlight",
    ):  # noise (low light has some) is drawn channel by channel: only its law
        # is symmetric, not its values
        assert torch.allclose(synthesize(x[order], name, rng=5), degraded[order], atol=1e-6)


def test_channel_shuffle_draws_every_order_and_checks_the_batch() -> None:
    x = torch.arange(3.0).view(1, 3, 1, 1).expand(600, 3, 2, 2)
    out = channel_shuffle({"degraded": x + 10, "clean": x, "label": torch.zeros(600)}, rng=3)
    orders = {tuple(int(v) for v in o) for o in out["clean"][:, :, 0, 0]}
    assert len(orders) == 6  # all permutations of three channels
    assert torch.equal(out["degraded"], out["clean"] + 10) and torch.equal(out["label"], torch.zeros(600))
    assert torch.equal(channel_shuffle({"degraded": x, "clean": x}, rng=3)["clean"], out["clean"])
    with pytest.raises(ValueError, match="channel_shuffle"):
        channel_shuffle({"degraded": torch.zeros(3, 2, 2), "clean": torch.zeros(3, 2, 2)})


@pytest.mark.parametrize("name", [*sorted(DEGRADATIONS), "noise_25"])
def test_images_outside_the_unit_range_are_refused(name: str) -> None:
    # an image in 0-255 came back all white (clamped), a NaN image all NaN, without a word
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        synthesize(_img() * 255, name, rng=0)
    with pytest.raises(ValueError, match="NaN"):
        synthesize(torch.full((3, 8, 8), float("nan")), name, rng=0)


def test_noise_level_is_measured_and_library_calls_keep_the_global_rng() -> None:
    flat = torch.full((2, 3, 96, 96), 0.5)
    for sigma in (15, 25):
        y = synthesize(flat, f"noise_{sigma}", rng=1)
        assert float((y - 128 / 255).std()) == pytest.approx(sigma / 255, rel=0.02)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for name in DEGRADATIONS:
        synthesize(_img(), name, rng=2)
    assert torch.equal(torch.rand(3), expected)
    x = _img()
    assert torch.equal(synthesize(x[None], "rain", rng=4)[0], synthesize(x, "rain", rng=4))


def test_bad_parameters_name_themselves() -> None:
    x = _img()
    # flake_size=0 turned the whole image into NaN; a NaN or infinite blur length was a bare ValueError
    with pytest.raises(ValueError, match="flake_size"):
        add_snow(x, flake_size=0, rng=0)
    for length in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="length"):
            motion_blur(x, length)
    # depths of a numpy array or of another batch size were an AttributeError / RuntimeError
    with pytest.raises(TypeError, match="depth"):
        add_haze(x, depth=np.ones((40, 48)))
    with pytest.raises(ValueError, match="depth"):
        add_haze(_img(2), depth=torch.rand(3, 1, 40, 48))
    assert add_haze(_img(2), depth=torch.rand(2, 1, 40, 48)).shape == (2, 3, 40, 48)
    # an image without pixels was a RuntimeError of reshape
    with pytest.raises(ValueError, match="empty"):
        synthesize(torch.rand(3, 0, 8), "rain", rng=0)
