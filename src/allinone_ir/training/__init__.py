"""Training: the :class:`Trainer`, its :class:`TrainerConfig`, checkpoints and resume, staged fine-tuning helpers.

The trainer runs the loop; its files are written by :mod:`~allinone_ir.training.checkpoint`
(checkpoints, resume, initial weights), :mod:`~allinone_ir.training.logs` (CSV / JSON logs) and
:mod:`~allinone_ir.training.plots` (curves). :mod:`~allinone_ir.training.cli` reads config files for
``allinone-ir train`` (whose command line is in :mod:`allinone_ir.commands.train`).
"""

from .config import TrainerConfig
from .ema import ModelEMA
from .finetune import finetune_groups, freeze, module_groups, unfreeze
from .schedule import warmup_cosine_factor
from .signals import TrainingInterrupted
from .trainer import LOSSES, LossTerm, Trainer, TrainingDivergedError, build_loss

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
