"""Training: the :class:`Trainer`, its :class:`TrainerConfig`, staged fine-tuning helpers."""

from .config import TrainerConfig
from .ema import ModelEMA
from .finetune import PROMPTIR_STAGE2_GROUPS, format_groups, freeze, module_groups, unfreeze
from .schedule import warmup_cosine_factor
from .trainer import LOSSES, LossTerm, Trainer, TrainingDivergedError, build_loss

__all__ = [
    "LOSSES",
    "PROMPTIR_STAGE2_GROUPS",
    "LossTerm",
    "ModelEMA",
    "Trainer",
    "TrainerConfig",
    "TrainingDivergedError",
    "build_loss",
    "format_groups",
    "freeze",
    "module_groups",
    "unfreeze",
    "warmup_cosine_factor",
]
