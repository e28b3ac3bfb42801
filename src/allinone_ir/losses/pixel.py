"""Pixel and structural losses: L1, MSE, Charbonnier, PSNR, SSIM and L1 + SSIM."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from ..errors import UsageError, UsageTypeError
from ..metrics import Window, _check_pair, ssim_map

__all__ = ["CharbonnierLoss", "L1Loss", "L1SSIMLoss", "MSELoss", "PSNRLoss", "SSIMLoss"]

Reduction = Literal["mean", "sum", "none"]


def check_loss_inputs(pred: torch.Tensor, target: torch.Tensor, name: str, ndim: int | None = None) -> None:
    """Raise unless ``pred`` and ``target`` are float tensors of one shape (with ``ndim`` dimensions)."""
    _check_pair(pred, target, name)
    for arg, t in (("pred", pred), ("target", target)):
        if not t.is_floating_point():
            raise UsageTypeError(f"{name}: {arg} must be a floating-point tensor, got {t.dtype}")
    if ndim is not None and pred.ndim != ndim:
        raise UsageError(f"{name} expects (N, C, H, W) tensors, got shape {tuple(pred.shape)}")


class _ElementwiseLoss(nn.Module):
    """A loss of ``pred - target`` element by element, reduced by ``reduction``."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in get_args(Reduction):
            raise UsageError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_loss_inputs(pred, target, type(self).__name__)
        x = self.elementwise(pred - target)
        if self.reduction == "none":
            return x
        return x.mean() if self.reduction == "mean" else x.sum()


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
        return diff.pow(2)


class CharbonnierLoss(_ElementwiseLoss):
    r"""Charbonnier loss :math:`\sqrt{(p - t)^2 + \epsilon^2}`, a smooth L1.

    Args:
        eps: Smoothing constant.

    Examples:
        >>> round(float(CharbonnierLoss(eps=0.4)(torch.zeros(4), torch.full((4,), 0.3))), 6)
        0.5
    """

    def __init__(self, eps: float = 1e-3, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        if eps <= 0:
            raise UsageError(f"CharbonnierLoss: eps must be positive, got {eps}")
        self.eps = eps

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(diff.pow(2) + self.eps * self.eps)


class PSNRLoss(nn.Module):
    """Minus the mean PSNR of [0, 1] images (``eps`` added to the MSE), as BasicSR's ``PSNRLoss``.

    Args:
        eps: Keeps the logarithm finite.

    Shape:
        - pred, target: :math:`(N, *)`

    Examples:
        >>> round(float(PSNRLoss(eps=0)(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1))), 4)
        -20.0
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_loss_inputs(pred, target, "PSNRLoss")
        sq = (pred - target).pow(2)
        mse = sq.flatten(1).mean(dim=1) if sq.ndim > 1 else sq.mean()
        return (10.0 / math.log(10.0)) * torch.log(mse + self.eps).mean()


class SSIMLoss(nn.Module):
    """``1 - SSIM`` (:func:`~allinone_ir.metrics.ssim_map`), in at least float32 (safe under autocast).

    Args:
        window: ``"gaussian"`` (11x11) or ``"uniform"`` (7x7).
        data_range: Value span of the images.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(SSIMLoss()(x, x))
        0.0
    """

    def __init__(self, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__()
        self.window, self.data_range = window, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_loss_inputs(pred, target, type(self).__name__, ndim=4)
        dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
        p, t = pred.to(dtype), target.to(dtype)
        return 1.0 - ssim_map(p, t, data_range=self.data_range, window=self.window).mean()


class L1SSIMLoss(SSIMLoss):
    """``alpha * L1 + (1 - alpha) * (1 - SSIM)`` (Zhao et al., "Loss Functions for Image Restoration").

    Args:
        alpha: Weight of the L1 term, in [0, 1].
        window: ``"gaussian"`` or ``"uniform"``.
        data_range: Value span of the images.

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
