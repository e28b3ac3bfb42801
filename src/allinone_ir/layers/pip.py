"""Prompt-In-Prompt (PIP) modules (Li et al., "Prompt-In-Prompt Learning for Universal Image Restoration").

PIP is a plug-in for the skip connections of a U-Net. For one skip feature ``Z`` and
user-controlled degradation weights ``omega`` (one weight per degradation type) it

1. combines learnable *degradation-aware prompts* ``d_t`` with ``omega``
   (:class:`DegradationAwarePrompt`) and multiplies them with ``Z`` resized to the
   prompt size, giving ``D``;
2. fuses ``D`` with a learnable *basic restoration prompt* ``B``
   (:class:`BasicRestorationPrompt`) by cross attention (:class:`PromptToPrompt`),
   giving the universal restoration prompt ``U``;
3. modulates ``Z`` with ``U`` by a *selective* (top-m) transposed cross attention
   (:class:`SelectivePromptToFeature`).

:class:`PIPBlock` bundles the three steps: ``block(feature, omega) -> modulated feature``.

These layers take ``omega`` as a tensor and the number of degradation types as an integer; the
degradation names, labels and the reading of users' specifications (labels, names, ``"rain+noise"``,
mappings) into ``omega`` live in :mod:`allinone_ir.degradation_types`
(:func:`~allinone_ir.degradation_types.resolve_degradation_weights`). The attention functions
(dense and top-m) live in :mod:`allinone_ir.layers.attention`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .attention import TOP_M_FRACTIONS, CrossChannelAttention
from .attention import top_m_channel_attention as top_m_channel_attention  # re-export (former home)
from .attention import top_m_sizes as top_m_sizes  # re-export (former home)
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm

__all__ = [
    "BasicRestorationPrompt",
    "DegradationAwarePrompt",
    "PIPBlock",
    "PromptToPrompt",
    "SelectivePromptToFeature",
]

#: Number of degradation types of a PIP block by default: the five of the PIP paper (noise, rain, haze,
#: blur, low light; :data:`allinone_ir.degradation_types.DEFAULT_DEGRADATIONS`).
_PIP_NUM_DEGRADATIONS = 5

# Names that moved to allinone_ir.degradation_types and are still importable from here. They are
# looked up on first access, so that importing the layers imports nothing outside allinone_ir.layers.
_MOVED_TO_DEGRADATION_TYPES = ("DEFAULT_DEGRADATIONS", "DegradationSpec", "resolve_degradation_weights")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_DEGRADATION_TYPES:
        return getattr(importlib.import_module("allinone_ir.degradation_types"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------
class DegradationAwarePrompt(nn.Module):
    """``T`` learnable degradation-aware prompt vectors ``d_t``, combined with the weights ``omega``.

    The combined prompt is the **mean** over ``t`` of ``omega_t d_t`` (as the official
    code computes it), returned as a ``(N, C, 1, 1)`` map ready to scale a feature.
    The vectors start as standard normal samples; :func:`allinone_ir.losses.directional_decoupled_loss`
    pushes them apart.

    Args:
        num_degradations: Number of degradation types ``T``.
        dim: Prompt channels ``C``.

    Attributes:
        prompts: The vectors ``d``, shape ``(T, C)``.

    Shape:
        - omega: :math:`(N, T)`
        - output: :math:`(N, C, 1, 1)`

    Examples:
        >>> prompt = DegradationAwarePrompt(num_degradations=3, dim=4)
        >>> prompt(torch.tensor([[0.0, 3.0, 0.0]])).flatten().allclose(prompt.prompts[1])
        True
    """

    def __init__(self, num_degradations: int, dim: int) -> None:
        super().__init__()
        if num_degradations < 1 or dim < 1:
            raise ValueError(f"need num_degradations >= 1 and dim >= 1, got {num_degradations}, {dim}")
        self.prompts = nn.Parameter(torch.randn(num_degradations, dim))

    @property
    def num_degradations(self) -> int:
        """``T``."""
        return self.prompts.shape[0]

    def forward(self, omega: torch.Tensor) -> torch.Tensor:
        t, c = self.prompts.shape
        if omega.ndim != 2 or omega.shape[1] != t:
            raise UsageError(f"omega must have shape (N, {t}), got {tuple(omega.shape)}")
        # element-wise product and mean rather than a matmul: exact in fp32 also under autocast
        combined = (omega.to(self.prompts.dtype).unsqueeze(-1) * self.prompts).mean(dim=1)
        return combined.reshape(-1, c, 1, 1)


class BasicRestorationPrompt(nn.Module):
    """The learnable low-level prompt ``B`` of shape ``(C, S, S)`` (standard normal init).

    Args:
        dim: Channels ``C``.
        size: Spatial size ``S``.

    Shape:
        - output: :math:`(1, C, S, S)` (broadcast over the batch by the caller)

    Examples:
        >>> BasicRestorationPrompt(8, 4)().shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"need dim >= 1 and size >= 1, got {dim}, {size}")
        self.prompt = nn.Parameter(torch.randn(dim, size, size))

    def forward(self) -> torch.Tensor:
        return self.prompt.unsqueeze(0)


class PromptToPrompt(nn.Module):
    """Prompt-to-prompt (P2P) interaction: the universal restoration prompt ``U`` from ``B`` and ``D``.

    ``U = B + CAtt(LN(B), LN(D))`` with ``B`` as query and the degradation-modulated
    feature ``D`` as key and value (MDTA-style, 2 heads in PIP), then
    ``U = U + GDFN(LN(U))`` (paper Eq. 5-6, official layer order).

    Args:
        dim: Prompt channels ``C``.
        num_heads: Attention heads (2 in PIP).
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - basic: :math:`(1, C, S, S)` or :math:`(N, C, S, S)`
        - degradation: :math:`(N, C, S, S)`
        - output: :math:`(N, C, S, S)`

    Examples:
        >>> p2p = PromptToPrompt(8)
        >>> p2p(torch.randn(1, 8, 4, 4), torch.randn(3, 8, 4, 4)).shape
        torch.Size([3, 8, 4, 4])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 2,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.norm_query = RestormerLayerNorm(dim, layer_norm_type)
        self.norm_context = RestormerLayerNorm(dim, layer_norm_type)
        self.attn = CrossChannelAttention(dim, dim, num_heads, bias)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, basic: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        u = basic + self.attn(self.norm_query(basic), self.norm_context(degradation))
        return u + self.ffn(self.norm2(u))


class SelectivePromptToFeature(nn.Module):
    """Selective prompt-to-feature (P2F) interaction: modulate a feature ``Z`` with the prompt ``U``.

    ``Z' = Z + CAtt_s(LN(Z), LN(U))`` with the feature as query and ``U`` as key and value,
    the attention being the top-m selective one (four masks, ``m`` = 1/2, 2/3, 3/4, 4/5
    of the per-head channels, outputs weighted by learnable scalars starting at 0.2), then
    ``Z' + GDFN(LN(Z'))`` (paper Eq. 7-9).

    Feature and prompt widths may differ: the attention runs at the prompt width ``C_p``,
    its query projection reads the ``C_f`` feature channels (``C_f -> C_p``) and its output
    projection writes them back (``C_p -> C_f``). (The official code instead zero-pads a
    narrower feature to ``C_p`` and maps it back with an extra 1x1 convolution, and lets
    only the first ``C_p`` channels of a wider feature interact; the projections here
    cover both cases without dead weights.) The residual adds the raw feature ``Z``, as in
    the paper's Eq. 9.

    Args:
        feature_dim: Feature channels ``C_f``.
        prompt_dim: Prompt channels ``C_p``.
        num_heads: Attention heads (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        top_m_fractions: Fractions of the per-head channels kept by the masks.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - prompt: :math:`(N, C_p, H, W)`
        - output: :math:`(N, C_f, H, W)`

    Examples:
        >>> p2f = SelectivePromptToFeature(feature_dim=6, prompt_dim=8, num_heads=2)
        >>> p2f(torch.randn(2, 6, 5, 7), torch.randn(2, 8, 5, 7)).shape
        torch.Size([2, 6, 5, 7])
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        num_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        top_m_fractions: Sequence[tuple[int, int]] = TOP_M_FRACTIONS,
    ) -> None:
        super().__init__()
        self.norm_feature = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.norm_prompt = RestormerLayerNorm(prompt_dim, layer_norm_type)
        self.attn = CrossChannelAttention(
            feature_dim, prompt_dim, num_heads, bias, out_dim=feature_dim, top_m_fractions=top_m_fractions
        )
        self.norm2 = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.ffn = GDFN(feature_dim, ffn_expansion_factor, bias)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        z = feature + self.attn(self.norm_feature(feature), self.norm_prompt(prompt))
        return z + self.ffn(self.norm2(z))


# ----------------------------------------------------------------------------------------------------------
# The plug-in
# ----------------------------------------------------------------------------------------------------------
def _align_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first ``channels`` channels, or zero-pad at the end up to ``channels``."""
    c = x.shape[1]
    if c > channels:
        return x[:, :channels]
    if c < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - c))
    return x


class PIPBlock(nn.Module):
    """Prompt-In-Prompt on one skip connection: ``block(feature, omega) -> modulated feature``.

    1. ``D = mean_t(omega_t d_t) * Z_s``: the degradation-aware prompts (:class:`DegradationAwarePrompt`)
       scale the feature resized bilinearly to ``S x S`` (its channels truncated or
       zero-padded to the prompt width ``C_p``);
    2. ``U = P2P(B, D)`` (:class:`PromptToPrompt`), with the basic restoration prompt ``B``;
    3. ``U`` is resized to the feature's ``H x W`` and passed through a 3x3 convolution
       (``prompt_out``);
    4. ``Z_hat = P2F(Z, U)`` (:class:`SelectivePromptToFeature`).

    Every sample of the batch uses its own row of ``omega`` only, so a batch with mixed
    degradations equals the same images run one by one.

    Args:
        feature_dim: Channels ``C_f`` of the skip feature.
        prompt_dim: Prompt channels ``C_p``.
        prompt_size: Spatial size ``S`` of the basic restoration prompt.
        num_degradations: Number of degradation types ``T``.
        p2p_heads: Heads of the prompt-to-prompt attention (2 in PIP).
        p2f_heads: Heads of the prompt-to-feature attention (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - omega: :math:`(N, T)` (see :func:`~allinone_ir.degradation_types.resolve_degradation_weights`)
        - output: :math:`(N, C_f, H, W)`

    Examples:
        >>> block = PIPBlock(feature_dim=16, prompt_dim=8, prompt_size=4, num_degradations=5, p2f_heads=2)
        >>> omega = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0, 0.0]])  # rain; noise+haze
        >>> block(torch.randn(2, 16, 9, 11), omega).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        prompt_size: int,
        num_degradations: int = _PIP_NUM_DEGRADATIONS,
        *,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.feature_dim, self.prompt_dim, self.prompt_size = feature_dim, prompt_dim, prompt_size
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self.degradation_prompt = DegradationAwarePrompt(num_degradations, prompt_dim)
        self.basic_prompt = BasicRestorationPrompt(prompt_dim, prompt_size)
        self.p2p = PromptToPrompt(prompt_dim, p2p_heads, *args)
        self.prompt_out = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.p2f = SelectivePromptToFeature(feature_dim, prompt_dim, p2f_heads, *args)

    def universal_prompt(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """The universal restoration prompt ``U`` at the prompt size ``S x S`` (before ``prompt_out``).

        Shape:
            - feature: :math:`(N, C_f, H, W)`
            - omega: :math:`(N, T)`
            - output: :math:`(N, C_p, S, S)`
        """
        if feature.ndim != 4 or feature.shape[1] != self.feature_dim:
            raise UsageError(
                f"PIPBlock expects a feature of shape (N, {self.feature_dim}, H, W), got {tuple(feature.shape)}"
            )
        if omega.shape[0] != feature.shape[0]:
            raise ValueError(f"omega has {omega.shape[0]} rows for a batch of {feature.shape[0]}")
        s = self.prompt_size
        z = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
        d = self.degradation_prompt(omega).to(z.dtype) * _align_channels(z, self.prompt_dim)
        return self.p2p(self.basic_prompt(), d)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        u = self.universal_prompt(feature, omega)
        u = F.interpolate(u, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        if feature.is_contiguous(memory_format=torch.channels_last):
            u = u.contiguous(memory_format=torch.channels_last)
        return self.p2f(feature, self.prompt_out(u))

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, prompt_dim={self.prompt_dim}, prompt_size={self.prompt_size}"
