"""Loss modules (and the functional directional decoupled loss of PIP)."""

from .decoupled import (
    DEFAULT_DDL_ALPHA,
    DirectionalDecoupledLoss,
    collect_degradation_prompts,
    directional_decoupled_loss,
)
from .frequency import FFTLoss, GuidedFrequencyLoss
from .pixel import CharbonnierLoss, L1Loss, L1SSIMLoss, MSELoss, PSNRLoss, SSIMLoss

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
