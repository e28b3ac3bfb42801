"""Building blocks shared by the networks of :mod:`allinone_ir.models`."""

from .attention import MDTA, channel_attention
from .feedforward import GDFN
from .naf import NAFBlock, SimpleGate, SimplifiedChannelAttention
from .norm import LayerNorm2d, RestormerLayerNorm, layer_norm_2d
from .padding import pad_to_multiple
from .pip import (
    DEFAULT_DEGRADATIONS,
    BasicRestorationPrompt,
    DegradationAwarePrompt,
    PIPBlock,
    PromptToPrompt,
    SelectivePromptToFeature,
    resolve_degradation_weights,
    top_m_channel_attention,
)
from .promptir import PromptGenBlock, PromptInteraction
from .stage import Stage
from .transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample

__all__ = [
    "DEFAULT_DEGRADATIONS",
    "GDFN",
    "MDTA",
    "BasicRestorationPrompt",
    "DegradationAwarePrompt",
    "Downsample",
    "LayerNorm2d",
    "NAFBlock",
    "OverlapPatchEmbed",
    "PIPBlock",
    "PromptGenBlock",
    "PromptInteraction",
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
]
