"""Loss functions, as function + module pairs (kornia style)."""

from .decoupled import (
    DEFAULT_DDL_ALPHA,
    DirectionalDecoupledLoss,
    collect_degradation_prompts,
    directional_decoupled_loss,
)
from .frequency import FFTLoss, GuidedFrequencyLoss, fft_loss, guided_frequency_loss, laplacian_pyramid
from .pixel import CharbonnierLoss, L1Loss, MSELoss, PSNRLoss, charbonnier_loss, l1_loss, mse_loss, psnr_loss
from .ssim import L1SSIMLoss, SSIMLoss, l1_ssim_loss, ssim_loss

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
    "charbonnier_loss",
    "collect_degradation_prompts",
    "directional_decoupled_loss",
    "fft_loss",
    "guided_frequency_loss",
    "l1_loss",
    "l1_ssim_loss",
    "laplacian_pyramid",
    "mse_loss",
    "psnr_loss",
    "ssim_loss",
]
