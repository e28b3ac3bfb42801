"""Full restoration networks and the model registry."""

from . import mirage  # noqa: F401  (registers mirage_s, mirage_t and their weights)
from ._base import AuxiliaryLoss, RecordsConfig, RestorationModel
from ._registry import (
    create_model,
    get_model_class,
    list_architectures,
    list_models,
    register_architecture,
    register_model,
)
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .adair import AdaIR
from .baryir import BaryIR  # noqa: F401  (registers the family; public as create_model("baryir"))
from .classifier import DegradationClassifier, degradation_classification_loss
from .dfpir import DFPIR  # noqa: F401  (registers the family; public as create_model("dfpir"))
from .moce_ir import MoCEIR
from .nafnet import NAFNet
from .pip import PIPNAFNet, PIPRestormer, PIPUNet
from .promptir import PROMPTIR_UNUSED_MODULES, PromptIR
from .restormer import Restormer

__all__ = [
    "PROMPTIR_UNUSED_MODULES",
    "AdaIR",
    "AuxiliaryLoss",
    "DegradationClassifier",
    "MoCEIR",
    "NAFNet",
    "PIPNAFNet",
    "PIPRestormer",
    "PIPUNet",
    "PretrainedWeights",
    "PromptIR",
    "RecordsConfig",
    "RestorationModel",
    "Restormer",
    "WeightsSource",
    "create_model",
    "degradation_classification_loss",
    "get_model_class",
    "list_architectures",
    "list_models",
    "register_architecture",
    "register_model",
    "register_weights",
]
