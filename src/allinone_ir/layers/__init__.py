"""Building blocks shared by the networks of :mod:`allinone_ir.models`.

The layers import nothing from the rest of the package. ``DEFAULT_DEGRADATIONS`` and
``resolve_degradation_weights``, which read degradation names, live in
:mod:`allinone_ir.degradation_types`; they are still importable from here (looked up on first use).
"""

from typing import Any

from .attention import MDTA, CrossChannelAttention, channel_attention
from .feedforward import GDFN
from .naf import NAFBlock, SimpleGate, SimplifiedChannelAttention
from .norm import LayerNorm2d, RestormerLayerNorm
from .padding import pad_to_multiple
from .pip import (
    PIPBlock,
    PromptInPrompt,
    PromptToFeature,
    PromptToPrompt,
    SelectivePromptToFeature,
)
from .promptir import PromptGenBlock, PromptInteraction
from .transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample

__all__ = [
    "DEFAULT_DEGRADATIONS",
    "GDFN",
    "MDTA",
    "CrossChannelAttention",
    "Downsample",
    "LayerNorm2d",
    "NAFBlock",
    "OverlapPatchEmbed",
    "PIPBlock",
    "PromptGenBlock",
    "PromptInPrompt",
    "PromptInteraction",
    "PromptToFeature",
    "PromptToPrompt",
    "RestormerLayerNorm",
    "SelectivePromptToFeature",
    "SimpleGate",
    "SimplifiedChannelAttention",
    "Stage",
    "TransformerBlock",
    "Upsample",
    "channel_attention",
    "layer_norm_2d",
    "pad_to_multiple",
    "resolve_degradation_weights",
    "top_m_channel_attention",
    "top_m_sizes",
]


def __getattr__(name: str) -> Any:
    from . import pip  # names that moved to allinone_ir.degradation_types, resolved there on first use

    if name in pip._MOVED_TO_DEGRADATION_TYPES:
        return getattr(pip, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
