"""Building blocks shared by the networks of :mod:`allinone_ir.models`; they import only :mod:`allinone_ir.errors`."""

from .attention import MDTA, CrossChannelAttention, channel_attention
from .feedforward import GDFN
from .norm import LayerNorm2d, RestormerLayerNorm
from .padding import pad_to_multiple
from .transformer import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample

__all__ = [
    "GDFN",
    "MDTA",
    "CrossChannelAttention",
    "Downsample",
    "LayerNorm2d",
    "OverlapPatchEmbed",
    "RestormerLayerNorm",
    "TransformerBlock",
    "Upsample",
    "channel_attention",
    "pad_to_multiple",
]
