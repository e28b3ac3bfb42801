"""Training: the :class:`Trainer` and its :class:`TrainerConfig`, checkpoints and resume, staged fine-tuning.

:mod:`~allinone_ir.training.cli` reads the config files of ``allinone-ir train``.
"""

from .config import TrainerConfig
from .ema import ModelEMA
from .finetune import finetune_groups, freeze, module_groups, unfreeze
from .signals import TrainingInterrupted
from .trainer import LOSSES, LossTerm, Trainer, TrainingDivergedError, build_loss, warmup_cosine_factor

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
