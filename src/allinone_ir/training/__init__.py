"""Training: the :class:`Trainer` and its :class:`TrainerConfig`, checkpoints and resume, staged fine-tuning."""

from ..errors import TrainingDivergedError
from .config import TrainerConfig
from .finetune import finetune_groups, freeze, module_groups, unfreeze
from .signals import TrainingInterrupted
from .trainer import LOSSES, LossTerm, ModelEMA, Trainer, build_loss, warmup_cosine_factor

__all__ = [
    "LOSSES",
    "LossTerm",
    "ModelEMA",
    "Trainer",
    "TrainerConfig",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_loss",
    "finetune_groups",
    "freeze",
    "module_groups",
    "unfreeze",
    "warmup_cosine_factor",
]
