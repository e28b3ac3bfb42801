"""Pixel losses: L1, MSE, Charbonnier and PSNR loss, as function + module pairs."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..errors import UsageError, UsageTypeError

__all__ = ["CharbonnierLoss", "L1Loss", "MSELoss", "PSNRLoss"]

Reduction = Literal["mean", "sum", "none"]


def check_loss_inputs(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``pred`` and ``target`` are same-shape float tensors.

    Args:
        pred: Network output.
        target: Reference.
        name: The loss's name, used in the message.
    """
    for arg, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise UsageTypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise UsageTypeError(f"{name}: {arg} must be a floating-point tensor, got {t.dtype}")
    if pred.shape != target.shape:
        raise UsageError(
            f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise UsageError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def l1_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    r"""Mean absolute error :math:`|p - t|` (the PromptIR / PIP training loss).

    Args:
        pred: Network output.
        target: Reference.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (element-wise).

    Returns:
        The loss (a scalar unless ``reduction="none"``).

    Shape:
        - pred, target: any shape, the same for both

    Examples:
        >>> float(l1_loss(torch.zeros(4), torch.full((4,), 0.5)))
        0.5
    """
    check_loss_inputs(pred, target, "l1_loss")
    return _reduce((pred - target).abs(), reduction)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    r"""Mean squared error :math:`(p - t)^2`.

    Args:
        pred: Network output.
        target: Reference.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Shape:
        - pred, target: any shape, the same for both

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

    Args:
        pred: Network output.
        target: Reference.
        eps: Smoothing constant :math:`\epsilon`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Shape:
        - pred, target: any shape, the same for both

    Examples:
        >>> round(float(charbonnier_loss(torch.zeros(4), torch.full((4,), 0.3), eps=0.4)), 6)
        0.5
    """
    check_loss_inputs(pred, target, "charbonnier_loss")
    if eps <= 0:
        raise UsageError(f"charbonnier_loss: eps must be positive, got {eps}")
    return _reduce(torch.sqrt((pred - target).pow(2) + eps * eps), reduction)


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""Negative PSNR for [0, 1] images, averaged over the batch (as BasicSR's ``PSNRLoss``).

    .. math:: \frac{10}{\ln 10} \cdot \frac{1}{N}\sum_n \ln(\mathrm{MSE}_n + \epsilon)

    Args:
        pred: Network output.
        target: Reference.
        eps: Keeps the logarithm finite for a perfect prediction.

    Returns:
        Scalar loss, equal to minus the mean PSNR in dB (up to ``eps``).

    Shape:
        - pred, target: :math:`(N, *)`

    Examples:
        >>> round(float(psnr_loss(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1), eps=0)), 4)
        -20.0
    """
    check_loss_inputs(pred, target, "psnr_loss")
    mse = (pred - target).pow(2).flatten(1).mean(dim=1) if pred.ndim > 1 else (pred - target).pow(2).mean()
    return (10.0 / math.log(10.0)) * torch.log(mse + eps).mean()


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Examples:
        >>> float(L1Loss()(torch.zeros(2), torch.ones(2)))
        1.0
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

    Examples:
        >>> float(MSELoss()(torch.zeros(2), torch.full((2,), 2.0)))
        4.0
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

    Examples:
        >>> round(float(CharbonnierLoss(eps=1e-3)(torch.zeros(2), torch.ones(2))), 4)
        1.0
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

    Examples:
        >>> x = torch.zeros(1, 3, 4, 4)
        >>> round(float(PSNRLoss(eps=0)(x, x + 0.01)), 3)
        -40.0
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr_loss(pred, target, self.eps)
