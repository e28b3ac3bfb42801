"""Full restoration networks and the model registry."""

from ._base import RestorationModel, check_image_batch
from ._registry import (
    create_model,
    get_model_class,
    is_model,
    list_models,
    register_architecture,
    register_model,
)
from .nafnet import NAFNet
from .promptir import PROMPTIR_UNUSED_MODULES, PromptIR
from .restormer import Restormer

__all__ = [
    "PROMPTIR_UNUSED_MODULES",
    "NAFNet",
    "PromptIR",
    "RestorationModel",
    "Restormer",
    "check_image_batch",
    "create_model",
    "get_model_class",
    "is_model",
    "list_models",
    "register_architecture",
    "register_model",
]
