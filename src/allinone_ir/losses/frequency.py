"""Frequency-domain losses: an FFT L1 loss and the Guided Frequency Loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .pixel import check_loss_inputs

__all__ = ["FFTLoss", "GuidedFrequencyLoss"]


def laplacian_pyramid(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Band-pass levels of a Laplacian pyramid (5x5 binomial blur, factor-2 steps), then the residual."""
    if levels < 1:
        raise UsageError(f"laplacian_pyramid: levels must be >= 1, got {levels}")
    k1 = torch.tensor((1.0, 4.0, 6.0, 4.0, 1.0), dtype=x.dtype, device=x.device) / 16.0
    kernel = torch.outer(k1, k1).expand(x.shape[1], 1, 5, 5)
    out, cur = [], x
    for _ in range(levels):
        if min(cur.shape[-2:]) < 2:
            break
        mode = "reflect" if min(cur.shape[-2:]) > 2 else "replicate"
        down = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode=mode), kernel, groups=x.shape[1])[..., ::2, ::2]
        out.append(cur - F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False))
        cur = down
    out.append(cur)
    return out


def gradual_cutoff(progress: float, omega0: float, omega_final: float, num_stages: int) -> float:
    """The cutoff at training ``progress`` in [0, 1]: ``omega0`` to ``omega_final`` in equal steps."""
    if num_stages < 1:
        raise UsageError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages == 1:
        return omega_final
    stage = min(int(max(progress, 0.0) * num_stages), num_stages - 1)
    return omega0 + (omega_final - omega0) * stage / (num_stages - 1)


class FFTLoss(nn.Module):
    """Mean L1 distance between the real and imaginary parts of the 2-D spectra (BasicSR's ``FFTLoss``).

    The FFT (unnormalised) runs in float32 even under autocast.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> float(FFTLoss()(x + 1, x))  # the DC term is 16, the rest 0; mean over 2*16 numbers
        0.5
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_loss_inputs(pred, target, "FFTLoss", ndim=4)
        diff = torch.fft.fft2(pred.float()) - torch.fft.fft2(target.float())
        return torch.view_as_real(diff).abs().mean()


class GuidedFrequencyLoss(nn.Module):
    r"""Guided Frequency Loss (Benjdira et al., 2023): :math:`\sqrt{C_{ch}^2 + C_{lap} + C_{freq}}`.

    :math:`C_{ch}` is the Charbonnier loss, :math:`C_{lap}` the MSE between Laplacian pyramids and
    :math:`C_{freq}` the mean squared spectrum difference (orthonormal FFT) below a cutoff that widens
    with the training progress (:func:`gradual_cutoff`; ``sqrt(0.5)`` is the whole spectrum). The
    trainer calls :meth:`set_progress` every step. The result is float32.

    Args:
        eps: Charbonnier constant.
        omega0: First cutoff (cycles per pixel).
        omega_final: Last cutoff.
        num_stages: Number of cutoff steps.
        levels: Laplacian pyramid levels.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> round(float(GuidedFrequencyLoss(eps=1e-3)(x, x)), 6)
        0.001
    """

    def __init__(
        self,
        eps: float = 1e-3,
        omega0: float = 0.1,
        omega_final: float = math.sqrt(0.5),
        num_stages: int = 5,
        levels: int = 3,
    ) -> None:
        super().__init__()
        self.eps, self.omega0, self.omega_final = eps, omega0, omega_final
        self.num_stages, self.levels = num_stages, levels
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        """Set the fraction of training done (clamped to [0, 1])."""
        self.progress = float(min(max(progress, 0.0), 1.0))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_loss_inputs(pred, target, "GuidedFrequencyLoss", ndim=4)
        p, t = pred.float(), target.float()
        ch = torch.sqrt((p - t).pow(2) + self.eps * self.eps).mean()
        pairs = zip(laplacian_pyramid(p, self.levels), laplacian_pyramid(t, self.levels))
        lap = torch.stack([(a - b).pow(2).mean() for a, b in pairs]).mean()
        h, w = p.shape[-2:]
        fy = torch.fft.fftfreq(h, device=p.device).view(h, 1)
        fx = torch.fft.fftfreq(w, device=p.device).view(1, w)
        cutoff = gradual_cutoff(self.progress, self.omega0, self.omega_final, self.num_stages)
        mask = (torch.sqrt(fy * fy + fx * fx) <= cutoff + 1e-9).to(p.dtype)
        diff = torch.fft.fft2(p, norm="ortho") - torch.fft.fft2(t, norm="ortho")
        return torch.sqrt(ch * ch + lap + (diff.abs().pow(2) * mask).mean())
