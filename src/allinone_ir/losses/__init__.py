"""Loss modules: pixel, structural and frequency losses, and PIP's directional decoupled loss."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..metrics import Window, check_pair, ssim_map
from .decoupled import (
    DEFAULT_DDL_ALPHA,
    DirectionalDecoupledLoss,
    collect_degradation_prompts,
    directional_decoupled_loss,
)

__all__ = [
    "DEFAULT_DDL_ALPHA",
    "CharbonnierLoss",
    "DirectionalDecoupledLoss",
    "FFTLoss",
    "GuidedFrequencyLoss",
    "L1Loss",
    "L1SSIMLoss",
    "MSELoss",
    "PSNRLoss",
    "SSIMLoss",
    "collect_degradation_prompts",
    "directional_decoupled_loss",
]

Reduction = Literal["mean", "sum", "none"]


def _check_inputs(pred: torch.Tensor, target: torch.Tensor, name: str, ndim: int | None = None) -> None:
    """:func:`~allinone_ir.metrics.check_pair` of float tensors, and refuse empty ones (a NaN or FFT error)."""
    check_pair(pred, target, name, floating=True, ndim=ndim)
    if pred.numel() == 0:
        raise UsageError(
            f"{name}: got empty tensors of shape {tuple(pred.shape)}; expected at least one element"
        )


class _ElementwiseLoss(nn.Module):
    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in get_args(Reduction):
            raise UsageError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(pred, target, type(self).__name__)
        x = self.elementwise(pred - target)
        return x if self.reduction == "none" else getattr(x, self.reduction)()


class L1Loss(_ElementwiseLoss):
    """Mean absolute error (the PromptIR / PIP training loss); ``reduction="none"`` is element-wise.

    Examples:
        >>> float(L1Loss()(torch.zeros(4), torch.full((4,), 0.5)))
        0.5
    """

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()


class MSELoss(_ElementwiseLoss):
    """Mean squared error; ``reduction="none"`` is element-wise.

    Examples:
        >>> float(MSELoss()(torch.zeros(4), torch.full((4,), 0.5)))
        0.25
    """

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()


class CharbonnierLoss(_ElementwiseLoss):
    r"""Charbonnier loss :math:`\sqrt{(p - t)^2 + \epsilon^2}` (``eps``: :math:`\epsilon`), a smooth L1.

    Examples:
        >>> round(float(CharbonnierLoss(eps=0.4)(torch.zeros(4), torch.full((4,), 0.3))), 6)
        0.5
    """

    def __init__(self, eps: float = 1e-3, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if not eps > 0:
            raise UsageError(f"CharbonnierLoss: eps must be positive, got {eps}")
        self.eps = eps

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(diff.pow(2) + self.eps * self.eps)


class PSNRLoss(nn.Module):
    """Minus the mean PSNR of [0, 1] images (``eps`` added to the MSE), as BasicSR's ``PSNRLoss``.

    Shape:
        - pred, target: :math:`(N, *)`

    Examples:
        >>> round(float(PSNRLoss(eps=0)(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1))), 4)
        -20.0
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if not 0 <= eps < float("inf"):
            raise UsageError(f"PSNRLoss: eps must be finite and >= 0, got {eps}")
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(pred, target, "PSNRLoss")
        sq = (pred - target).pow(2)
        mse = sq.flatten(1).mean(dim=1) if sq.ndim > 1 else sq.mean()
        return 10.0 * torch.log10(mse + self.eps).mean()


class SSIMLoss(nn.Module):
    """``1 - SSIM`` (:func:`~allinone_ir.metrics.ssim_map`, ``window`` ``"gaussian"`` or ``"uniform"``), in float32.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(SSIMLoss()(x, x))
        0.0
    """

    def __init__(self, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__()
        if not 0 < data_range < float("inf"):
            raise UsageError(f"{type(self).__name__}: data_range must be positive, got {data_range}")
        self.window, self.data_range = window, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(pred, target, type(self).__name__, ndim=4)
        p, t = (x.to(torch.promote_types(pred.dtype, torch.float32)) for x in (pred, target))
        return 1.0 - ssim_map(p, t, data_range=self.data_range, window=self.window).mean()


class L1SSIMLoss(SSIMLoss):
    """``alpha * L1 + (1 - alpha) * (1 - SSIM)``, ``alpha`` in [0, 1] (Zhao et al., 2017).

    Shape:
        - pred, target: :math:`(N, C, H, W)`
    """

    def __init__(self, alpha: float = 0.84, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__(window, data_range)
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"L1SSIMLoss: alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ssim_term = super().forward(pred, target)
        return self.alpha * (pred - target).abs().mean() + (1.0 - self.alpha) * ssim_term


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
    return [*out, cur]


def gradual_cutoff(progress: float, omega0: float, omega_final: float, num_stages: int) -> float:
    """The cutoff at training ``progress`` in [0, 1]: ``omega0`` to ``omega_final`` in equal steps."""
    if num_stages < 1:
        raise UsageError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages == 1:
        return omega_final
    stage = min(int(max(progress, 0.0) * num_stages), num_stages - 1)
    return omega0 + (omega_final - omega0) * stage / (num_stages - 1)


class FFTLoss(nn.Module):
    """Mean L1 distance between the real and imaginary parts of the 2-D spectra in float32, as BasicSR's ``FFTLoss``.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> float(FFTLoss()(x + 1, x))  # the DC term is 16, the rest 0; mean over 2*16 numbers
        0.5
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_inputs(pred, target, "FFTLoss", ndim=4)
        diff = torch.fft.fft2(pred.float()) - torch.fft.fft2(target.float())
        return torch.view_as_real(diff).abs().mean()


class GuidedFrequencyLoss(nn.Module):
    r"""Guided Frequency Loss (Benjdira et al., 2023): :math:`\sqrt{C_{ch}^2 + C_{lap} + C_{freq}}`, in float32.

    Charbonnier (``eps``), ``levels``-level Laplacian-pyramid MSE and the spectrum MSE below a cutoff (cycles
    per pixel) rising from ``omega0`` to ``omega_final`` (``sqrt(0.5)``: all) in ``num_stages`` steps as the
    trainer calls :meth:`set_progress`.

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
        omega_final: float = 0.5**0.5,
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
        _check_inputs(pred, target, "GuidedFrequencyLoss", ndim=4)
        p, t = pred.float(), target.float()
        ch = torch.sqrt((p - t).pow(2) + self.eps * self.eps).mean()
        pairs = zip(laplacian_pyramid(p, self.levels), laplacian_pyramid(t, self.levels))
        lap = torch.stack([(a - b).pow(2).mean() for a, b in pairs]).mean()
        fy, fx = (torch.fft.fftfreq(n, device=p.device) for n in p.shape[-2:])
        cutoff = gradual_cutoff(self.progress, self.omega0, self.omega_final, self.num_stages)
        mask = (torch.hypot(fy[:, None], fx) <= cutoff + 1e-9).to(p.dtype)
        diff = torch.fft.fft2(p, norm="ortho") - torch.fft.fft2(t, norm="ortho")
        return torch.sqrt(ch * ch + lap + (diff.abs().pow(2) * mask).mean())
