"""PSNR / SSIM against scikit-image (random and real images, both windows, all protocol options)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from allinone_ir.metrics import (
    BASICSR_PROTOCOL,
    PROMPTIR_PROTOCOL,
    MetricProtocol,
    get_protocol,
    psnr,
    rgb_to_y,
    ssim,
)


def _pair(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if kind == "random":
        a = rng.random((40, 52, 3))
    else:
        img = data.astronaut() if kind == "astronaut" else data.coffee()
        a = img[60:160, 80:200].astype(np.float64) / 255.0
    b = np.clip(a + rng.normal(0, 0.08, a.shape), 0, 1)
    return a, b


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)


def _sk_ssim(a: np.ndarray, b: np.ndarray, window: str, data_range: float) -> float:
    if window == "uniform":
        return sk_ssim(a, b, data_range=data_range, channel_axis=-1 if a.ndim == 3 else None)
    return sk_ssim(
        a, b, data_range=data_range, channel_axis=-1 if a.ndim == 3 else None,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["random", "astronaut", "coffee"])
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_rgb_matches_skimage(kind: str, window: str, scale: float) -> None:
    a, b = _pair(kind)
    a, b = a * scale, b * scale
    assert float(psnr(_t(b), _t(a), data_range=scale)) == pytest.approx(
        sk_psnr(a, b, data_range=scale), abs=1e-4
    )
    got = float(ssim(_t(b), _t(a), data_range=scale, window=window))
    assert got == pytest.approx(_sk_ssim(b, a, window, scale), abs=1e-4)


@pytest.mark.parametrize("kind", ["random", "astronaut"])
@pytest.mark.parametrize("window", ["uniform", "gaussian"])
def test_crop_border_and_y_channel_match_skimage(kind: str, window: str) -> None:
    a, b = _pair(kind)
    c = 4
    ac, bc = a[c:-c, c:-c], b[c:-c, c:-c]
    kw = dict(crop_border=c, y_channel=True)
    # skimage's rgb2ycbcr gives BT.601 Y in [16, 235] for float RGB in [0, 1], as BasicSR / MATLAB
    ya, yb = color.rgb2ycbcr(ac)[..., 0], color.rgb2ycbcr(bc)[..., 0]
    assert float(psnr(_t(b), _t(a), **kw)) == pytest.approx(sk_psnr(ya, yb, data_range=255), abs=1e-4)
    assert float(ssim(_t(b), _t(a), window=window, **kw)) == pytest.approx(
        _sk_ssim(yb / 255.0, ya / 255.0, window, 1.0), abs=1e-4
    )
    # crop only, RGB
    assert float(psnr(_t(b), _t(a), crop_border=c)) == pytest.approx(sk_psnr(ac, bc, data_range=1), abs=1e-4)


def test_rgb_to_y_bt601_values() -> None:
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(rgb_to_y(x)) == pytest.approx((16 + 65.481) / 255, abs=1e-7)
    assert float(rgb_to_y(torch.zeros(1, 3, 1, 1))) == pytest.approx(16 / 255, abs=1e-7)
    with pytest.raises(ValueError, match="RGB"):
        rgb_to_y(torch.zeros(1, 1, 2, 2))


def test_reduction_batch_and_single_image() -> None:
    a, b = _pair("random")
    x = torch.cat([_t(a), _t(b)])
    y = torch.cat([_t(b), _t(b)])
    per = psnr(x, y, reduction="none")
    assert per.shape == (2,) and math.isinf(float(per[1]))
    assert float(per[0]) == pytest.approx(sk_psnr(b, a, data_range=1), abs=1e-4)
    s = ssim(x, y, reduction="none")
    assert s.shape == (2,) and float(s[1]) == pytest.approx(1.0)
    assert float(ssim(x, y)) == pytest.approx(float(s.mean()))
    assert psnr(_t(a)[0], _t(b)[0]).ndim == 0  # (C, H, W) input


def test_errors_name_the_problem() -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), window="gaussian")
    with pytest.raises(ValueError, match="crop_border"):
        psnr(x, x, crop_border=8)
    with pytest.raises(TypeError, match=r"ssim: crop_border must be a whole number of pixels, got 4\.0"):
        ssim(x, x, crop_border=4.0)  # type: ignore[arg-type]
    assert float(psnr(x, x * 0.5, crop_border=np.int64(4))) == float(
        psnr(x[..., 4:12, 4:12], x[..., 4:12, 4:12] * 0.5)
    )
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, x, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        ssim(x, x, window="box")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        psnr(x.numpy(), x)  # type: ignore[arg-type]
    # 8-bit values with the default data_range 1 (a PSNR near -40 dB): refused, with the fix
    with pytest.raises(
        ValueError, match=r"psnr: target holds values from 0 to 255, not in \[0, data_range=1\]"
    ):
        psnr(x * 255, torch.linspace(0, 255, 768).reshape(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"ssim: target .* pass data_range=255 for 8-bit values"):
        ssim(x * 255, x * 255)
    assert float(psnr(x * 255, x * 255 + 1, data_range=255)) == pytest.approx(48.1308, abs=1e-4)


def test_protocols() -> None:
    assert get_protocol("promptir") is PROMPTIR_PROTOCOL
    assert get_protocol("BasicSR") is BASICSR_PROTOCOL
    assert get_protocol(PROMPTIR_PROTOCOL) is PROMPTIR_PROTOCOL
    with pytest.raises(ValueError, match="known"):
        get_protocol("matlab")
    assert (PROMPTIR_PROTOCOL.y_channel, PROMPTIR_PROTOCOL.ssim_window, PROMPTIR_PROTOCOL.crop_border) == (
        False, "uniform", 0,
    )  # fmt: skip
    assert (BASICSR_PROTOCOL.y_channel, BASICSR_PROTOCOL.ssim_window) == (True, "gaussian")
    a, b = _pair("astronaut")
    res = PROMPTIR_PROTOCOL.compute(_t(b).float(), _t(a).float())
    assert res["psnr"] == pytest.approx(
        sk_psnr(a.astype(np.float32), b.astype(np.float32), data_range=1), abs=1e-3
    )
    assert res["ssim"] == pytest.approx(_sk_ssim(b, a, "uniform", 1.0), abs=1e-4)
    # BasicSR: 8-bit levels, Y channel, gaussian window
    a8, b8 = np.round(a * 255), np.round(b * 255)
    ya, yb = color.rgb2ycbcr(a8 / 255)[..., 0], color.rgb2ycbcr(b8 / 255)[..., 0]
    res = BASICSR_PROTOCOL.compute(_t(b), _t(a))
    assert res["psnr"] == pytest.approx(sk_psnr(ya, yb, data_range=255), abs=1e-4)
    # numpy arrays and 8-bit tensors are refused by name (an AttributeError and a silent ~5 dB before)
    with pytest.raises(TypeError, match=r"promptir protocol: pred must be a torch\.Tensor, got ndarray"):
        PROMPTIR_PROTOCOL.compute(b, a)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"basicsr protocol: pred must be a floating-point tensor, got torch\.uint8"
    ):
        BASICSR_PROTOCOL.compute(_t(b8.astype(np.uint8))[0], _t(a)[0])
    # predictions outside [0, 1] are clamped before measuring, as the official test scripts do
    over = MetricProtocol("x").compute(_t(a) + 2.0, torch.ones_like(_t(a)))
    assert math.isinf(over["psnr"])
