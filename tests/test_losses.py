"""Losses: values against references, gradients, autocast safety, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity as sk_ssim

from allinone_ir.losses import (
    CharbonnierLoss,
    FFTLoss,
    GuidedFrequencyLoss,
    L1Loss,
    L1SSIMLoss,
    MSELoss,
    PSNRLoss,
    SSIMLoss,
    gradual_cutoff,
    laplacian_pyramid,
)
from allinone_ir.metrics import psnr


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)


def test_pixel_losses_match_references(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, t = pair
    assert torch.allclose(L1Loss()(p, t), F.l1_loss(p, t))
    assert torch.allclose(MSELoss()(p, t), F.mse_loss(p, t))
    assert torch.allclose(L1Loss("sum")(p, t), (p - t).abs().sum())
    assert torch.allclose(MSELoss("none")(p, t), (p - t) ** 2)
    eps = 1e-3
    assert float(CharbonnierLoss(eps=eps)(p, t)) == pytest.approx(
        float(torch.sqrt((p - t) ** 2 + eps**2).mean()), rel=1e-6
    )
    assert float(PSNRLoss()(p, t)) == pytest.approx(-float(psnr(p, t)), abs=1e-4)
    with pytest.raises(ValueError, match="eps"):
        CharbonnierLoss(eps=0.0)


def test_ssim_losses_match_skimage() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in (a, b))
    ref_g = sk_ssim(
        b, a, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    ref_u = sk_ssim(b, a, data_range=1, channel_axis=-1)
    assert float(SSIMLoss()(tb, ta)) == pytest.approx(1 - ref_g, abs=1e-6)
    assert float(SSIMLoss(window="uniform")(tb, ta)) == pytest.approx(1 - ref_u, abs=1e-6)
    l1 = float((tb - ta).abs().mean())
    assert float(L1SSIMLoss()(tb, ta)) == pytest.approx(0.84 * l1 + 0.16 * (1 - ref_g), abs=1e-6)
    assert float(L1SSIMLoss(alpha=0.5)(tb, ta)) == pytest.approx(0.5 * l1 + 0.5 * (1 - ref_g), abs=1e-6)
    assert float(SSIMLoss()(ta, ta)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="alpha"):
        L1SSIMLoss(alpha=1.5)


def test_fft_loss_matches_numpy(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, t = pair
    d = np.fft.fft2(p.numpy().astype(np.float64)) - np.fft.fft2(t.numpy().astype(np.float64))
    ref = (np.abs(d.real).sum() + np.abs(d.imag).sum()) / (2 * d.size)
    assert float(FFTLoss()(p, t)) == pytest.approx(ref, rel=1e-4)
    assert float(FFTLoss()(p, p)) == 0.0


def _gfl(p: torch.Tensor, t: torch.Tensor, progress: float = 1.0, **kwargs: float) -> torch.Tensor:
    loss = GuidedFrequencyLoss(**kwargs)  # type: ignore[arg-type]
    loss.set_progress(progress)
    return loss(p, t)


def test_guided_frequency_loss(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, t = pair
    assert GuidedFrequencyLoss().progress == 0.0  # the trainer sets it every step
    # identical images: only the Charbonnier floor eps remains
    assert float(_gfl(t, t, eps=1e-3)) == pytest.approx(1e-3, rel=1e-4)
    # components by hand at full progress (cutoff covers every frequency -> Parseval: freq term = MSE)
    ch = float(torch.sqrt((p - t) ** 2 + 1e-6).mean())
    lap = float(
        torch.stack(
            [(a - b).pow(2).mean() for a, b in zip(laplacian_pyramid(p), laplacian_pyramid(t))]
        ).mean()
    )
    mse = float(((p - t) ** 2).mean())
    assert float(_gfl(p, t, progress=1.0)) == pytest.approx(math.sqrt(ch**2 + lap + mse), rel=1e-4)
    # early in training the band is narrower, so the loss is smaller
    assert float(_gfl(p, t, progress=0.0)) < float(_gfl(p, t, progress=1.0))
    assert [gradual_cutoff(x, 0.1, 0.5, 5) for x in (0.0, 0.2, 0.5, 1.0)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.5]
    )
    m = GuidedFrequencyLoss()
    m.set_progress(2.0)
    assert m.progress == 1.0
    assert float(m(p, t)) == pytest.approx(float(_gfl(p, t, progress=1.0)))


def test_laplacian_pyramid_reconstructs() -> None:
    x = torch.rand(1, 3, 32, 32)
    levels = laplacian_pyramid(x, 3)
    rec = levels[-1]
    for band in reversed(levels[:-1]):
        rec = F.interpolate(rec, size=band.shape[-2:], mode="bilinear", align_corners=False) + band
    assert torch.allclose(rec, x, atol=1e-6)


EVERY_LOSS = [
    L1Loss(),
    MSELoss(),
    CharbonnierLoss(),
    PSNRLoss(),
    SSIMLoss(),
    L1SSIMLoss(),
    FFTLoss(),
    GuidedFrequencyLoss(),
]


@pytest.mark.parametrize("fn", EVERY_LOSS)
def test_gradients_and_bf16_inputs(fn, pair) -> None:  # type: ignore[no-untyped-def]
    p, t = pair
    x = p.clone().requires_grad_(True)
    fn(x, t).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    v = fn(p.bfloat16(), t.bfloat16())
    assert torch.isfinite(v)


def test_loss_input_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        L1Loss()(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(TypeError, match="floating"):
        MSELoss()(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        L1Loss("avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        FFTLoss()(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


@pytest.mark.parametrize("fn", EVERY_LOSS)
def test_empty_batches_are_refused(fn) -> None:  # type: ignore[no-untyped-def]
    # an empty batch was a silent NaN (pixel, PSNR, SSIM losses) or an MKL RuntimeError (FFT, GFL)
    with pytest.raises(ValueError, match="empty"):
        fn(torch.rand(0, 3, 16, 16), torch.rand(0, 3, 16, 16))


def test_loss_options_are_checked_when_built() -> None:
    # PSNRLoss(eps=-1) gave NaN (or a wrong value), SSIMLoss(data_range=0) a loss above 1, eps=nan NaN
    with pytest.raises(ValueError, match="eps"):
        PSNRLoss(eps=-1e-3)
    with pytest.raises(ValueError, match="eps"):
        CharbonnierLoss(eps=float("nan"))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="data_range"):
            SSIMLoss(data_range=bad)
    assert float(PSNRLoss(eps=0)(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1))) == pytest.approx(
        -20
    )


@pytest.mark.parametrize("fn", [L1Loss(), MSELoss(), CharbonnierLoss(), PSNRLoss(), SSIMLoss(), FFTLoss()])
def test_gradients_are_finite_at_the_optimum(fn) -> None:  # type: ignore[no-untyped-def]
    t = torch.rand(2, 3, 16, 16)
    x = t.clone().requires_grad_(True)
    fn(x, t).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
