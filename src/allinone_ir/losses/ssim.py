"""SSIM-based losses: ``1 - SSIM`` and the L1 + SSIM mix (L1 weight 0.84 by default)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..metrics import Window, ssim_map
from .pixel import check_loss_inputs, l1_loss

__all__ = ["L1SSIMLoss", "SSIMLoss"]


def ssim_loss(
    pred: torch.Tensor, target: torch.Tensor, *, window: Window = "gaussian", data_range: float = 1.0
) -> torch.Tensor:
    r"""``1 - SSIM``, differentiable, averaged over the batch, channels and the valid region.

    Computed in float32 (or float64 for float64 inputs), so it is safe under autocast.

    Args:
        pred: Network output.
        target: Reference.
        window: ``"gaussian"`` (11x11, sigma 1.5, the usual training choice) or ``"uniform"`` (7x7).
        data_range: Value span of the images.

    Returns:
        Scalar loss in ``[0, 2]``.

    Raises:
        ValueError: On mismatched shapes or images smaller than the window.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(ssim_loss(x, x))
        0.0
    """
    check_loss_inputs(pred, target, "ssim_loss")
    if pred.ndim != 4:
        raise UsageError(f"ssim_loss expects (N, C, H, W) tensors, got shape {tuple(pred.shape)}")
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    smap = ssim_map(pred.to(dtype), target.to(dtype), data_range=data_range, window=window)
    return 1.0 - smap.mean()


def l1_ssim_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.84,
    window: Window = "gaussian",
    data_range: float = 1.0,
) -> torch.Tensor:
    r"""Mix of L1 and SSIM (Zhao et al., "Loss Functions for Image Restoration").

    .. math:: \alpha \cdot L_1 + (1 - \alpha) \cdot (1 - \mathrm{SSIM})

    Args:
        pred: Network output.
        target: Reference.
        alpha: Weight of the L1 term (0.84 in the paper).
        window: SSIM window, ``"gaussian"`` or ``"uniform"``.
        data_range: Value span of the images.

    Returns:
        Scalar loss.

    Shape:
        - pred, target: :math:`(N, C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> round(float(l1_ssim_loss(x + 0.1, x)) - 0.84 * 0.1, 3) >= 0
        True
    """
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"l1_ssim_loss: alpha must be in [0, 1], got {alpha}")
    return alpha * l1_loss(pred, target) + (1.0 - alpha) * ssim_loss(
        pred, target, window=window, data_range=data_range
    )


class SSIMLoss(nn.Module):
    """Module form of :func:`ssim_loss`.

    Args:
        window: ``"gaussian"`` or ``"uniform"``.
        data_range: Value span of the images.

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(SSIMLoss()(x, x))
        0.0
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

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(L1SSIMLoss()(x, x))
        0.0
    """

    def __init__(self, alpha: float = 0.84, window: Window = "gaussian", data_range: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.window, self.data_range = alpha, window, data_range

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_ssim_loss(pred, target, alpha=self.alpha, window=self.window, data_range=self.data_range)
