"""Pixel and structural losses: L1, MSE, Charbonnier, PSNR, SSIM and L1 + SSIM (function + module pairs)."""

from __future__ import annotations

import math
from typing import Literal

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


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise UsageError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def l1_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean absolute error (the PromptIR / PIP training loss); ``reduction="none"`` is element-wise.

    Examples:
        >>> float(l1_loss(torch.zeros(4), torch.full((4,), 0.5)))
        0.5
    """
    check_loss_inputs(pred, target, "l1_loss")
    return _reduce((pred - target).abs(), reduction)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared error.

    Examples:
        >>> float(mse_loss(torch.zeros(4), torch.full((4,), 0.5)))
        0.25
    """
    check_loss_inputs(pred, target, "mse_loss")
    return _reduce((pred - target).pow(2), reduction)


def charbonnier_loss(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3, reduction: Reduction = "mean"
) -> torch.Tensor:
    r"""Charbonnier loss :math:`\sqrt{(p - t)^2 + \epsilon^2}`, a smooth L1.

    Examples:
        >>> round(float(charbonnier_loss(torch.zeros(4), torch.full((4,), 0.3), eps=0.4)), 6)
        0.5
    """
    check_loss_inputs(pred, target, "charbonnier_loss")
    if eps <= 0:
        raise UsageError(f"charbonnier_loss: eps must be positive, got {eps}")
    return _reduce(torch.sqrt((pred - target).pow(2) + eps * eps), reduction)


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Minus the mean PSNR of [0, 1] images (up to ``eps`` in the MSE), as BasicSR's ``PSNRLoss``.

    Shape:
        - pred, target: :math:`(N, *)`

    Examples:
        >>> round(float(psnr_loss(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1), eps=0)), 4)
        -20.0
    """
    check_loss_inputs(pred, target, "psnr_loss")
    mse = (pred - target).pow(2).flatten(1).mean(dim=1) if pred.ndim > 1 else (pred - target).pow(2).mean()
    return (10.0 / math.log(10.0)) * torch.log(mse + eps).mean()


def ssim_loss(
    pred: torch.Tensor, target: torch.Tensor, *, window: Window = "gaussian", data_range: float = 1.0
) -> torch.Tensor:
    """``1 - SSIM`` (:func:`~allinone_ir.metrics.ssim`'s map), in at least float32 (safe under autocast).

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(ssim_loss(x, x))
        0.0
    """
    check_loss_inputs(pred, target, "ssim_loss", ndim=4)
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    return 1.0 - ssim_map(pred.to(dtype), target.to(dtype), data_range=data_range, window=window).mean()


def l1_ssim_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.84,
    window: Window = "gaussian",
    data_range: float = 1.0,
) -> torch.Tensor:
    r"""``alpha * L1 + (1 - alpha) * (1 - SSIM)`` (Zhao et al., "Loss Functions for Image Restoration").

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(l1_ssim_loss(x, x))
        0.0
    """
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"l1_ssim_loss: alpha must be in [0, 1], got {alpha}")
    ssim_term = ssim_loss(pred, target, window=window, data_range=data_range)
    return alpha * l1_loss(pred, target) + (1.0 - alpha) * ssim_term


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target, self.reduction)


class MSELoss(nn.Module):
    """Module form of :func:`mse_loss`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_loss(pred, target, self.reduction)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`.

    Args:
        eps: Smoothing constant.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, eps: float = 1e-3, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.eps, self.reduction = eps, reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(pred, target, self.eps, self.reduction)


class PSNRLoss(nn.Module):
    """Module form of :func:`psnr_loss`.

    Args:
        eps: Keeps the logarithm finite.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr_loss(pred, target, self.eps)


class SSIMLoss(nn.Module):
    """Module form of :func:`ssim_loss`.

    Args:
        window: ``"gaussian"`` (11x11) or ``"uniform"`` (7x7).
        data_range: Value span of the images.
    """

    def __init__(self, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__()
        self.window, self.data_range = window, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim_loss(pred, target, window=self.window, data_range=self.data_range)


class L1SSIMLoss(nn.Module):
    """Module form of :func:`l1_ssim_loss`.

    Args:
        alpha: Weight of the L1 term.
        window: ``"gaussian"`` or ``"uniform"``.
        data_range: Value span of the images.
    """

    def __init__(self, alpha: float = 0.84, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.window, self.data_range = alpha, window, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_ssim_loss(pred, target, alpha=self.alpha, window=self.window, data_range=self.data_range)
