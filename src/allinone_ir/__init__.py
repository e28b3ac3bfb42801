"""allinone-ir: all-in-one image restoration networks in PyTorch, with training and tiled inference.

Examples:
    >>> import torch
    >>> from allinone_ir import create_model
    >>> net = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    >>> net(torch.rand(1, 3, 50, 70)).shape
    torch.Size([1, 3, 50, 70])
"""

from __future__ import annotations

from ._version import __version__
from .hub import from_pretrained, load_checkpoint, save_pretrained
from .inference import restore
from .models import NAFNet, PromptIR, Restormer, list_models, register_model
from .models.adair import AdaIR
from .models.moce_ir import MoCEIR
from .models.pip import PIPNAFNet, PIPRestormer, PIPUNet
from .training import Trainer, TrainerConfig
from .weights import create_model

__all__ = [
    "AdaIR",
    "MoCEIR",
    "NAFNet",
    "PIPNAFNet",
    "PIPRestormer",
    "PIPUNet",
    "PromptIR",
    "Restormer",
    "Trainer",
    "TrainerConfig",
    "__version__",
    "create_model",
    "from_pretrained",
    "list_models",
    "load_checkpoint",
    "register_model",
    "restore",
    "save_pretrained",
]
