"""Prompt-In-Prompt (PIP) modules (Li et al., "Prompt-In-Prompt Learning for Universal Image Restoration").

PIP is a plug-in for the skip connections of a U-Net. For one skip feature ``Z`` and
user-controlled degradation weights ``omega`` (one weight per degradation type)

1. :class:`PromptInPrompt` combines learnable *degradation-aware prompts* ``d_t`` with ``omega``,
   multiplies them with ``Z`` resized to the prompt size (giving ``D``) and fuses ``D`` with a
   learnable *basic restoration prompt* ``B`` by cross attention (:class:`PromptToPrompt`), giving
   the universal restoration prompt ``U``;
2. :class:`SelectivePromptToFeature` (held by :class:`PromptToFeature`) modulates ``Z`` with ``U``
   by a *selective* (top-m) transposed cross attention.

:class:`PIPBlock` bundles the two: ``block(feature, omega) -> modulated feature``. Modules and
parameters keep the names of the official code (longzilicart/pip_universal), so official
checkpoints load without renaming.

These layers take ``omega`` as a tensor and the number of degradation types as an integer; the
degradation names, labels and the reading of users' specifications (labels, names, ``"rain+noise"``,
mappings) into ``omega`` live in :mod:`allinone_ir.degradation_types`
(:func:`~allinone_ir.degradation_types.resolve_degradation_weights`). The attention functions
(dense and top-m) live in :mod:`allinone_ir.layers.attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .attention import TOP_M_FRACTIONS, CrossChannelAttention, top_m_channel_attention, top_m_sizes
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm

__all__ = [
    "PIPBlock",
    "PromptInPrompt",
    "PromptToFeature",
    "PromptToPrompt",
    "SelectivePromptToFeature",
]

#: Number of degradation types of a PIP block by default: the five of the PIP paper (noise, rain, haze,
#: blur, low light; :data:`allinone_ir.degradation_types.DEFAULT_DEGRADATIONS`).
_PIP_NUM_DEGRADATIONS = 5


# ----------------------------------------------------------------------------------------------------------
# Prompt generation (official ``PromptInPrompt``: ``prompt1..3`` of the official PIP-Restormer)
# ----------------------------------------------------------------------------------------------------------
class PromptToPrompt(nn.Module):
    """Prompt-to-prompt (P2P) interaction: the universal restoration prompt ``U`` from ``B`` and ``D``.

    ``U = B + CAtt(LN(B), LN(D))`` with the basic restoration prompt ``B`` as query and the
    degradation-modulated feature ``D`` as key and value (MDTA-style, 2 heads in PIP), then
    ``U = U + GDFN(LN(U))`` (paper Eq. 5-6). Module names are the official ones (``LGM`` of the
    official ``PromptInPrompt``).

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
        self.norm11 = RestormerLayerNorm(dim, layer_norm_type)
        self.norm12 = RestormerLayerNorm(dim, layer_norm_type)
        self.attn = CrossChannelAttention(dim, dim, num_heads, bias)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, basic: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        u = basic + self.attn(self.norm11(basic), self.norm12(degradation))
        return u + self.ffn(self.norm2(u))


def _align_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first ``channels`` channels, or zero-pad at the end up to ``channels``."""
    c = x.shape[1]
    if c > channels:
        return x[:, :channels]
    if c < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - c))
    return x


class PromptInPrompt(nn.Module):
    """The prompt of one skip connection, made from the feature and the degradation weights ``omega``.

    1. ``D = mean_t(omega_t d_t) * Z_s``: the ``T`` degradation-aware prompt vectors ``d_t``
       (``detask_prompt_param``) weighted by ``omega`` and averaged over ``t`` (as the official
       code computes it) scale the feature resized bilinearly to ``S x S``, its channels
       truncated or zero-padded to the prompt width ``C_p``;
    2. ``U = P2P(B, D)`` (:class:`PromptToPrompt`, ``LGM``) with the basic restoration prompt ``B``
       (``low_prompt_param``);
    3. ``U`` is resized bilinearly to the feature's ``H x W`` and passed through a 3x3
       convolution (``outconv``).

    Parameter and module names are the official ones, so the official ``prompt1..3`` load as they
    are. Both prompts start as standard normal samples; the directional decoupled loss
    (:func:`allinone_ir.losses.directional_decoupled_loss`) pushes the ``d_t`` apart.

    Args:
        prompt_dim: Prompt channels ``C_p``.
        prompt_size: Spatial size ``S`` of the basic restoration prompt.
        num_degradations: Number of degradation types ``T``.
        p2p_heads: Heads of the prompt-to-prompt attention (2 in PIP).
        ffn_expansion_factor: GDFN width factor of the P2P block.
        bias: Whether the P2P convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Attributes:
        detask_prompt_param: The vectors ``d``, shape ``(T, C_p, 1, 1)`` (``(1, T, C_p, 1, 1)`` in the
            state dict, as in the official code).
        low_prompt_param: The basic restoration prompt ``B``, shape ``(1, C_p, S, S)``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - omega: :math:`(N, T)` (see :func:`~allinone_ir.degradation_types.resolve_degradation_weights`)
        - output: :math:`(N, C_p, H, W)`

    Examples:
        >>> prompt = PromptInPrompt(prompt_dim=8, prompt_size=4, num_degradations=3)
        >>> prompt(torch.randn(2, 16, 9, 11), torch.eye(3)[[0, 2]]).shape
        torch.Size([2, 8, 9, 11])
    """

    def __init__(
        self,
        prompt_dim: int,
        prompt_size: int,
        num_degradations: int = _PIP_NUM_DEGRADATIONS,
        *,
        p2p_heads: int = 2,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        if min(prompt_dim, prompt_size, num_degradations) < 1:
            raise UsageError(
                f"need prompt_dim, prompt_size and num_degradations >= 1, got {prompt_dim}, {prompt_size}, "
                f"{num_degradations}"
            )
        self.prompt_dim, self.prompt_size = prompt_dim, prompt_size
        # Stored as (T, C_p, 1, 1) so that ``model.to(memory_format=torch.channels_last)`` works (it rejects
        # 5-D tensors); the state dict shows the official (1, T, C_p, 1, 1) shape and loads either shape.
        self.detask_prompt_param = nn.Parameter(torch.randn(num_degradations, prompt_dim, 1, 1))
        self.low_prompt_param = nn.Parameter(torch.randn(1, prompt_dim, prompt_size, prompt_size))
        self.LGM = PromptToPrompt(prompt_dim, p2p_heads, ffn_expansion_factor, bias, layer_norm_type)
        self.outconv = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.register_state_dict_post_hook(_detask_to_official_shape)
        self.register_load_state_dict_pre_hook(_detask_from_official_shape)

    @property
    def num_degradations(self) -> int:
        """``T``."""
        return self.detask_prompt_param.shape[0]

    @property
    def degradation_prompts(self) -> torch.Tensor:
        """The degradation-aware prompt vectors as a ``(T, C_p)`` view of ``detask_prompt_param``."""
        return self.detask_prompt_param.reshape(self.num_degradations, self.prompt_dim)

    def degradation_prompt(self, omega: torch.Tensor) -> torch.Tensor:
        """``mean_t(omega_t d_t)``, shape ``(N, C_p, 1, 1)``.

        Raises:
            ValueError: If ``omega`` is not ``(N, T)``.
        """
        t = self.num_degradations
        if omega.ndim != 2 or omega.shape[1] != t:
            raise UsageError(f"omega must have shape (N, {t}), got {tuple(omega.shape)}")
        # element-wise product and mean rather than a matmul: exact in fp32 also under autocast
        weights = omega.to(self.detask_prompt_param.dtype)[:, :, None, None, None]
        return (weights * self.detask_prompt_param).mean(dim=1)

    def universal_prompt(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """The universal restoration prompt ``U`` at the prompt size ``S x S`` (before ``outconv``).

        Raises:
            ValueError: If ``feature`` is not 4-D or ``omega`` has another batch size.

        Shape:
            - feature: :math:`(N, C_f, H, W)`
            - omega: :math:`(N, T)`
            - output: :math:`(N, C_p, S, S)`
        """
        if feature.ndim != 4:
            raise UsageError(f"expected a feature of shape (N, C, H, W), got {tuple(feature.shape)}")
        if omega.shape[0] != feature.shape[0]:
            raise UsageError(f"omega has {omega.shape[0]} rows for a batch of {feature.shape[0]}")
        s = self.prompt_size
        z = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
        d = self.degradation_prompt(omega).to(z.dtype) * _align_channels(z, self.prompt_dim)
        return self.LGM(self.low_prompt_param, d)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        u = self.universal_prompt(feature, omega)
        u = F.interpolate(u, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        if feature.is_contiguous(memory_format=torch.channels_last):
            u = u.contiguous(memory_format=torch.channels_last)
        return self.outconv(u)

    def extra_repr(self) -> str:
        return f"prompt_dim={self.prompt_dim}, prompt_size={self.prompt_size}"


def _detask_to_official_shape(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    key = prefix + "detask_prompt_param"
    if key in state_dict and state_dict[key].dim() == 4:
        state_dict[key] = state_dict[key].unsqueeze(0)


def _detask_from_official_shape(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    key = prefix + "detask_prompt_param"
    if key in state_dict and state_dict[key].dim() == 5 and state_dict[key].shape[0] == 1:
        state_dict[key] = state_dict[key][0]


# ----------------------------------------------------------------------------------------------------------
# Prompt-to-feature interaction (official ``PromptToFeature``: ``low_prompt_interaction_level1..3``)
# ----------------------------------------------------------------------------------------------------------
class _TopMCrossAttention(CrossChannelAttention):
    """Selective (top-m) cross attention at one width, with the official mask weights ``attn1..attn4``.

    :class:`~allinone_ir.layers.CrossChannelAttention` (query and context both ``dim`` channels)
    whose attention is :func:`~allinone_ir.layers.attention.top_m_channel_attention` with the four masks of
    :data:`~allinone_ir.layers.attention.TOP_M_FRACTIONS`, weighted by the scalars ``attn1..attn4`` (0.2 at
    the start).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, dim, num_heads, bias)
        self.top_m = top_m_sizes(dim // num_heads, TOP_M_FRACTIONS)
        self.attn1 = nn.Parameter(torch.tensor([0.2]))
        self.attn2 = nn.Parameter(torch.tensor([0.2]))
        self.attn3 = nn.Parameter(torch.tensor([0.2]))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(query))
        weights = torch.cat([self.attn1, self.attn2, self.attn3, self.attn4])
        out = top_m_channel_attention(q, k, v, self.temperature, self.num_heads, self.top_m, weights)
        return self.project_out(out)


class DualGateFeedForward(GDFN):
    """The dual-gated feed-forward network of PIP's prompt-to-feature block: ``gelu(x2) x1 + gelu(x1) x2``.

    :class:`~allinone_ir.layers.GDFN`'s modules (``project_in``, depthwise ``dwconv``,
    ``project_out``) with both halves gating each other.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> DualGateFeedForward(8)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x2) * x1 + F.gelu(x1) * x2)


class SelectivePromptToFeature(nn.Module):
    """Selective prompt-to-feature (P2F) interaction: modulate a feature ``Z`` with the prompt ``U``.

    As the official ``Topm_CrossTransformerRestormer_Block_PIM``: ``Z_n = LN(Z)`` (``norm11``),
    ``U_n = LN(U)`` (``norm12``); the attention runs at the prompt width ``C_p`` on the first
    ``C_p`` channels of ``Z_n`` (zero-padded to ``C_p`` when the feature is narrower):
    ``X = Z_n + CAtt_s(Z_n, U_n)``, the top-m selective cross attention with the feature as
    query (four masks keeping ``m`` = 1/2, 2/3, 3/4, 4/5 of the per-head channels, outputs
    weighted by learnable scalars starting at 0.2, paper Eq. 7-8). A wider feature's other
    channels pass as ``Z_n``; for a narrower one ``reduce_channel`` (1x1, ``C_p -> C_f``) maps
    ``X`` back. Then ``X + FFN(LN(X))`` with the dual-gated feed-forward network.

    Args:
        feature_dim: Feature channels ``C_f``.
        prompt_dim: Prompt channels ``C_p``.
        num_heads: Attention heads (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: Feed-forward width factor.
        bias: Whether the convolutions have a bias (``reduce_channel`` never has one).
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

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
    ) -> None:
        super().__init__()
        self.feature_dim, self.prompt_dim = feature_dim, prompt_dim
        self.norm11 = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.norm12 = RestormerLayerNorm(prompt_dim, layer_norm_type)
        self.attn = _TopMCrossAttention(prompt_dim, num_heads, bias)
        if feature_dim < prompt_dim:
            self.reduce_channel = nn.Conv2d(prompt_dim, feature_dim, kernel_size=1, bias=False)
        self.norm2 = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.ffn = DualGateFeedForward(feature_dim, ffn_expansion_factor, bias)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        z, p = self.norm11(feature), self.norm12(prompt)
        zi = _align_channels(z, self.prompt_dim)
        x = zi + self.attn(zi, p)
        if self.feature_dim > self.prompt_dim:
            x = torch.cat([x, z[:, self.prompt_dim :]], dim=1)
        elif self.feature_dim < self.prompt_dim:
            x = self.reduce_channel(x)
        return x + self.ffn(self.norm2(x))


class PromptToFeature(nn.Module):
    """The official ``PromptToFeature`` holder (``pip_cross_topm``): one :class:`SelectivePromptToFeature`.

    It exists for the official state-dict names
    (``low_prompt_interaction_level<L>.prompt_transformer_cross.*``).

    Args:
        feature_dim: Feature channels ``C_f``.
        prompt_dim: Prompt channels ``C_p``.
        num_heads: Attention heads; must divide ``prompt_dim``.
        ffn_expansion_factor: Feed-forward width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - prompt: :math:`(N, C_p, H, W)`
        - output: :math:`(N, C_f, H, W)`
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        num_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.prompt_transformer_cross = SelectivePromptToFeature(
            feature_dim, prompt_dim, num_heads, ffn_expansion_factor, bias, layer_norm_type
        )

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.prompt_transformer_cross(feature, prompt)


# ----------------------------------------------------------------------------------------------------------
# The plug-in
# ----------------------------------------------------------------------------------------------------------
class PIPBlock(nn.Module):
    """Prompt-In-Prompt on one skip connection: ``block(feature, omega) -> modulated feature``.

    ``prompt`` (:class:`PromptInPrompt`) makes the prompt from the feature and ``omega``;
    ``low_prompt_interaction`` (:class:`PromptToFeature`) modulates the feature with it. These are
    the two modules the official PIP-Restormer keeps per level as ``prompt<L>`` and
    ``low_prompt_interaction_level<L>``.

    Every sample of the batch uses its own row of ``omega`` only, so a batch with mixed
    degradations equals the same images run one by one.

    Args:
        feature_dim: Channels ``C_f`` of the skip feature.
        prompt_dim: Prompt channels ``C_p``.
        prompt_size: Spatial size ``S`` of the basic restoration prompt.
        num_degradations: Number of degradation types ``T``.
        p2p_heads: Heads of the prompt-to-prompt attention (2 in PIP).
        p2f_heads: Heads of the prompt-to-feature attention (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: Feed-forward width factor.
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
        self.feature_dim = feature_dim
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self.prompt = PromptInPrompt(
            prompt_dim, prompt_size, num_degradations, p2p_heads=p2p_heads, ffn_expansion_factor=ffn_expansion_factor,
            bias=bias, layer_norm_type=layer_norm_type,
        )  # fmt: skip
        self.low_prompt_interaction = PromptToFeature(feature_dim, prompt_dim, p2f_heads, *args)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        if feature.ndim != 4 or feature.shape[1] != self.feature_dim:
            raise UsageError(
                f"PIPBlock expects a feature of shape (N, {self.feature_dim}, H, W), got {tuple(feature.shape)}"
            )
        return self.low_prompt_interaction(feature, self.prompt(feature, omega))

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}"
