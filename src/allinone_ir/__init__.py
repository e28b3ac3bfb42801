"""allinone-ir: all-in-one image restoration in PyTorch.

Networks (PromptIR, PIP, Restormer, NAFNet), their building blocks, training,
tiled inference and checkpoint tools. Heavier parts (inference, hub, training)
are imported on first use.

Examples:
    >>> import torch
    >>> from allinone_ir import create_model
    >>> net = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    >>> net(torch.rand(1, 3, 50, 70)).shape
    torch.Size([1, 3, 50, 70])
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .models import NAFNet, PromptIR, Restormer, create_model, list_models, register_model

# Public names that live in optional / heavier submodules, imported lazily on first access.
_LAZY: dict[str, str] = {
    "restore": "allinone_ir.inference",
    "load_checkpoint": "allinone_ir.hub",
    "save_pretrained": "allinone_ir.hub",
    "from_pretrained": "allinone_ir.hub",
    "Trainer": "allinone_ir.training",
    "TrainerConfig": "allinone_ir.training",
    "PIPRestormer": "allinone_ir.models.pip",
    "PIPNAFNet": "allinone_ir.models.pip",
    "PIPUNet": "allinone_ir.models.pip",
    "AdaIR": "allinone_ir.models.adair",
    "MoCEIR": "allinone_ir.models.moce_ir",
}

__all__ = [
    "NAFNet",
    "PromptIR",
    "Restormer",
    "__version__",
    "create_model",
    "list_models",
    "register_model",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'allinone_ir' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
