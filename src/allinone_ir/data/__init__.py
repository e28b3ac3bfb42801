"""Data: paired and synthetic datasets, degradation synthesis, paired augmentations."""

from .augment import BatchAugment, cutblur, dmix, mixup, paired_random_crop
from .datasets import (
    PROMPTIR_LAYOUT,
    DatasetError,
    MixedDataset,
    PairedImageDataset,
    SyntheticDegradationDataset,
    promptir_dataset,
)
from .degradations import DEGRADATION_LABELS, DEGRADATIONS, synthesize

__all__ = [
    "DEGRADATIONS",
    "DEGRADATION_LABELS",
    "PROMPTIR_LAYOUT",
    "BatchAugment",
    "DatasetError",
    "MixedDataset",
    "PairedImageDataset",
    "SyntheticDegradationDataset",
    "cutblur",
    "dmix",
    "mixup",
    "paired_random_crop",
    "promptir_dataset",
    "synthesize",
]
