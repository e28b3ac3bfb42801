"""Data: paired and synthetic datasets, degradation synthesis, paired augmentations."""

from .augment import (
    AUGMENT_MODES,
    BatchAugment,
    augment_mode,
    cutblur,
    dmix,
    label_weights,
    mixup,
    paired_random_augment,
    paired_random_crop,
)
from .datasets import (
    PROMPTIR_LAYOUT,
    PROMPTIR_REPEATS,
    DatasetError,
    MixedDataset,
    PairedImageDataset,
    SyntheticDegradationDataset,
    promptir_dataset,
)
from .degradations import DEGRADATION_LABELS, DEGRADATIONS, synthesize

__all__ = [
    "AUGMENT_MODES",
    "DEGRADATIONS",
    "DEGRADATION_LABELS",
    "PROMPTIR_LAYOUT",
    "PROMPTIR_REPEATS",
    "BatchAugment",
    "DatasetError",
    "MixedDataset",
    "PairedImageDataset",
    "SyntheticDegradationDataset",
    "augment_mode",
    "cutblur",
    "dmix",
    "label_weights",
    "mixup",
    "paired_random_augment",
    "paired_random_crop",
    "promptir_dataset",
    "synthesize",
]
