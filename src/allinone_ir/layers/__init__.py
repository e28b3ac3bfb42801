"""Building blocks shared by the networks of :mod:`allinone_ir.models`.

The layers import nothing from the rest of the package; the degradation names and the reading of
users' degradation specifications live in :mod:`allinone_ir.degradation_types`.
"""

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
    "TransformerBlock",
    "Upsample",
    "channel_attention",
    "pad_to_multiple",
]
