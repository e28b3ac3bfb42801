"""PIP (Prompt-In-Prompt, Li et al.): its blocks and the networks built with them (official module names)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..degradation_types import (
    DEFAULT_DEGRADATIONS,
    DegradationSpec,
    default_names,
    resolve_degradation_weights,
)
from ..errors import CheckpointError, DatasetError, UsageError
from ..layers.attention import CrossChannelAttention, top_m_channel_attention, top_m_sizes
from ..layers.feedforward import GDFN
from ..layers.norm import NormKind, RestormerLayerNorm, in_layout_of
from ..losses.decoupled import DEFAULT_DDL_ALPHA, collect_degradation_prompts, directional_decoupled_loss
from ._base import AuxiliaryLoss, RestorationModel, official_5d_keys
from ._detect import count_blocks, ffn_expansion_factor
from ._registry import register_architecture, register_model
from ._weights import register_weights_note
from .classifier import DegradationClassifier, degradation_classification_loss
from .nafnet import NAFNet
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout

__all__ = ["PIPBlock", "PIPNAFNet", "PIPRestormer", "PIPUNet", "PromptInPrompt", "PromptToFeature"]

#: Weight of the degradation classifier's cross-entropy in the family's training recipe.
DEFAULT_CLASSIFIER_WEIGHT: float = 0.1


class PromptToPrompt(nn.Module):
    """Prompt-to-prompt (official ``LGM``, Eq. 5-6): ``U = B + CAtt(LN(B), LN(D))``, then ``U + GDFN(LN(U))``."""

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
    """The first ``channels`` channels of ``x``, zero-padded at the end if it has fewer."""
    c = x.shape[1]
    return x[:, :channels] if c >= channels else F.pad(x, (0, 0, 0, 0, 0, channels - c))


class PromptInPrompt(nn.Module):
    """The prompt of one skip connection, from the feature and the degradation weights ``omega``.

    ``D = mean_t(omega_t d_t) * Z`` (``Z``: the feature at ``S x S`` with ``C_p`` channels), then
    ``outconv(resize(LGM(B, D)))`` with the basic prompt ``B``.

    Args:
        prompt_dim: Prompt channels ``C_p``.
        prompt_size: Spatial size ``S`` of the basic restoration prompt.
        num_degradations: Number of degradation types ``T``.
        p2p_heads: Heads of the prompt-to-prompt attention.

    Shape:
        - feature: :math:`(N, C_f, H, W)`; omega: :math:`(N, T)`; output: :math:`(N, C_p, H, W)`

    Examples:
        >>> prompt = PromptInPrompt(prompt_dim=8, prompt_size=4, num_degradations=3)
        >>> prompt(torch.randn(2, 16, 9, 11), torch.eye(3)[[0, 2]]).shape
        torch.Size([2, 8, 9, 11])
    """

    official_5d = "detask_prompt_param"

    def __init__(
        self,
        prompt_dim: int,
        prompt_size: int,
        num_degradations: int = 5,
        *,
        p2p_heads: int = 2,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        if min(prompt_dim, prompt_size, num_degradations) < 1:
            raise UsageError(f"need sizes >= 1, got {prompt_dim=}, {prompt_size=}, {num_degradations=}")
        self.prompt_dim, self.prompt_size = prompt_dim, prompt_size
        self.detask_prompt_param = nn.Parameter(torch.randn(num_degradations, prompt_dim, 1, 1))
        self.low_prompt_param = nn.Parameter(torch.randn(1, prompt_dim, prompt_size, prompt_size))
        self.LGM = PromptToPrompt(prompt_dim, p2p_heads, ffn_expansion_factor, bias, layer_norm_type)
        self.outconv = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        official_5d_keys(self)

    @property
    def num_degradations(self) -> int:
        """Number of degradation types ``T``."""
        return self.detask_prompt_param.shape[0]

    @property
    def degradation_prompts(self) -> torch.Tensor:
        """The degradation-aware prompts, a ``(T, C_p)`` view."""
        return self.detask_prompt_param.reshape(self.num_degradations, self.prompt_dim)

    def degradation_prompt(self, omega: torch.Tensor) -> torch.Tensor:
        """``mean_t(omega_t d_t)``, ``(N, C_p, 1, 1)``, of ``(N, T)`` weights."""
        t = self.num_degradations
        if omega.ndim != 2 or omega.shape[1] != t:
            raise UsageError(f"omega must have shape (N, {t}), got {tuple(omega.shape)}")
        # element-wise product and mean rather than a matmul: exact in fp32 also under autocast
        weights = omega.to(self.detask_prompt_param.dtype)[:, :, None, None, None]
        return (weights * self.detask_prompt_param).mean(dim=1)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        if omega.shape[0] != feature.shape[0]:
            raise UsageError(f"omega has {omega.shape[0]} rows for a batch of {feature.shape[0]}")
        s = self.prompt_size
        z = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
        d = self.degradation_prompt(omega).to(z.dtype) * _align_channels(z, self.prompt_dim)
        u = self.LGM(self.low_prompt_param, d)
        u = F.interpolate(u, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        return self.outconv(in_layout_of(u, feature))


class _TopMCrossAttention(CrossChannelAttention):
    """Top-m cross attention (:func:`~allinone_ir.layers.attention.top_m_channel_attention`), weights ``attn1..4``."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__(dim, dim, num_heads, bias)
        self.top_m = top_m_sizes(dim // num_heads)
        for i in range(1, 5):
            self.register_parameter(f"attn{i}", nn.Parameter(torch.tensor([0.2])))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(query, context)
        weights = torch.cat([getattr(self, f"attn{i}") for i in range(1, 5)])
        out = top_m_channel_attention(q, k, v, self.temperature, self.num_heads, self.top_m, weights)
        return self.project_out(out)


class _DualGateFeedForward(GDFN):
    """GDFN with both halves gating each other: ``gelu(x2) x1 + gelu(x1) x2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x2) * x1 + F.gelu(x1) * x2)


class SelectivePromptToFeature(nn.Module):
    """Selective prompt-to-feature (official ``Topm_CrossTransformerRestormer_Block_PIM``, Eq. 7-8)."""

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
        self.ffn = _DualGateFeedForward(feature_dim, ffn_expansion_factor, bias)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        z, p = self.norm11(feature), self.norm12(prompt)
        zi = in_layout_of(_align_channels(z, self.prompt_dim), z)
        x = zi + self.attn(zi, p)
        if self.feature_dim > self.prompt_dim:
            x = torch.cat([x, z[:, self.prompt_dim :]], dim=1)
        elif self.feature_dim < self.prompt_dim:
            x = self.reduce_channel(x)
        return x + self.ffn(self.norm2(x))


class PromptToFeature(nn.Module):
    """The official holder (keys ``prompt_transformer_cross.*``) of a :class:`SelectivePromptToFeature`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.prompt_transformer_cross = SelectivePromptToFeature(*args, **kwargs)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.prompt_transformer_cross(feature, prompt)


class PIPBlock(nn.Module):
    """Prompt-In-Prompt on one skip: :class:`PromptInPrompt` then :class:`PromptToFeature`.

    Args:
        feature_dim: Channels ``C_f`` of the skip feature (the next four: :class:`PromptInPrompt`'s).
        p2f_heads: Heads of the prompt-to-feature attention; must divide ``prompt_dim``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`; omega: :math:`(N, T)`; output: :math:`(N, C_f, H, W)`

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
        num_degradations: int = 5,
        *,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        ffn = ffn_expansion_factor
        self.prompt = PromptInPrompt(
            prompt_dim, prompt_size, num_degradations, p2p_heads=p2p_heads, ffn_expansion_factor=ffn
        )
        self.low_prompt_interaction = PromptToFeature(feature_dim, prompt_dim, p2f_heads, ffn)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        if feature.ndim != 4 or feature.shape[1] != self.feature_dim:
            raise UsageError(
                f"PIPBlock expects a feature of shape (N, {self.feature_dim}, H, W), got {tuple(feature.shape)}"
            )
        return self.low_prompt_interaction(feature, self.prompt(feature, omega))


def _ddl_term(model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Paper Eq. 4 on the network's degradation-aware prompts, summed over its blocks."""
    return directional_decoupled_loss(collect_degradation_prompts(model))


def _classifier_term(
    model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Cross-entropy of the classifier's logits against ``batch["label"]`` (0 without labels)."""
    label = batch.get("label")
    if label is None:
        return batch["degraded"].new_zeros((), dtype=torch.float32)
    logits = extras.get("logits")
    if logits is None:
        raise UsageError(
            "the 'classifier' term needs the classifier's logits in extras['logits']: run "
            "forward(x, **model.training_forward_kwargs(batch)) and split it with model.split_training_output"
        )
    names = getattr(model, "degradations", DEFAULT_DEGRADATIONS)
    target = resolve_degradation_weights(label, batch_size=logits.shape[0], names=names, device=logits.device)
    return degradation_classification_loss(logits, target)


class _PIPControl(RestorationModel):
    """What the PIP networks share: degradation names, the optional classifier, ``forward``, the recipe."""

    accepts_degradation = True
    degradations: tuple[str, ...]
    classifier: DegradationClassifier | None

    def _build_control(
        self, degradations: Sequence[str], classifier: bool, classifier_widths: Sequence[int]
    ) -> None:
        if isinstance(degradations, str):
            raise UsageError(
                f"degradations must be a sequence of names, got the string {degradations!r}; "
                f"e.g. {list(DEFAULT_DEGRADATIONS[:3])}"
            )
        names = tuple(str(n) for n in degradations)
        if not names or len(set(names)) != len(names):
            raise UsageError(f"degradations must be distinct names, got {list(degradations)}")
        self.degradations = names
        self.classifier = None
        if classifier:
            self.classifier = DegradationClassifier(
                in_channels=self.in_channels, num_degradations=len(names), widths=classifier_widths
            )

    def _restore(self, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        return self._unet_forward(x, omega)  # type: ignore[operator]

    @property
    def num_degradations(self) -> int:
        """Number of degradation types ``T``."""
        return len(self.degradations)

    def classify(self, image: torch.Tensor) -> torch.Tensor:
        """Degradation logits ``(N, T)`` of the built-in classifier.

        Raises:
            UsageError: If the network was built with ``classifier=False``.
        """
        if self.classifier is None:
            raise UsageError(
                "this network was built with classifier=False, so it has no degradation classifier; pass "
                f"degradation= one of {list(self.degradations)}, labels or weights"
            )
        return self.classifier(image)

    def forward(
        self,
        x: torch.Tensor,
        degradation: DegradationSpec | None = None,
        *,
        return_weights: bool = False,
        return_logits: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Restore ``x`` under ``degradation``, or blind (the classifier's ``softmax(logits)``) if ``None``.

        Args:
            degradation: A label, labels, a name (``"rain+noise"``), names, a mapping or ``(N, T)`` weights
                (:func:`~allinone_ir.degradation_types.resolve_degradation_weights`).
            return_weights: Also return ``omega``, the ``(N, T)`` weights used.
            return_logits: Also return the classifier's logits (last).
        """
        inp, size = self._pad_input(x)
        logits: torch.Tensor | None
        if degradation is None:
            logits = self.classify(x)
            omega = logits.float().softmax(dim=-1)
        else:
            logits = self.classify(x) if return_logits else None
            omega = resolve_degradation_weights(
                degradation, batch_size=x.shape[0], names=self.degradations, device=x.device
            )
        out = self._crop(self._restore(inp, omega), size)
        extra = ([omega] if return_weights else []) + (
            [logits] if logits is not None and return_logits else []
        )
        return (out, *extra) if extra else out

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's labels drive the prompts (the classifier's logits come out too); none: blind.

        Raises:
            DatasetError: Without labels when the network has no classifier.
        """
        label = batch.get("label")
        if label is None:
            if self.classifier is None:
                raise DatasetError(
                    f"training {type(self).__name__} (built with classifier=False) needs degradation labels, "
                    f"but the batch has no 'label' (keys: {sorted(batch)}); use a dataset that labels its "
                    "samples, or build the network with classifier=True to train blind"
                )
            return {}
        if self.classifier is None:
            return {"degradation": label}
        return {"degradation": label, "return_logits": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The image and ``{"logits"}`` of ``(image, logits)``; an image alone has no extras."""
        if isinstance(output, torch.Tensor):
            return output, {}
        if isinstance(output, tuple) and len(output) == 2:
            return output[0], {"logits": output[1]}
        kind = f"a tuple of {len(output)}" if isinstance(output, tuple) else type(output).__name__
        raise UsageError(
            "expected the output of forward(x, **training_forward_kwargs(batch)): an image tensor or "
            f"(image, logits), got {kind}"
        )

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """``ddl`` (0.002, paper Eq. 10) and, with a classifier, ``classifier`` (0.1)."""
        terms = [AuxiliaryLoss("ddl", DEFAULT_DDL_ALPHA, _ddl_term)]
        if self.classifier is not None:
            terms.append(AuxiliaryLoss("classifier", DEFAULT_CLASSIFIER_WEIGHT, _classifier_term))
        return terms


def _check_levels(n: int, prompt_dims: Sequence[int], prompt_sizes: Sequence[int]) -> None:
    for name, values in (("prompt_dims", prompt_dims), ("prompt_sizes", prompt_sizes)):
        if len(values) != n:
            raise UsageError(f"{name} needs {n} entries (one per skip connection), got {list(values)}")


@register_architecture
class PIPRestormer(_PIPControl, RestormerUNet):  # type: ignore[misc]  # forward takes a degradation
    """PIP on Restormer, the official PIP network (longzilicart/pip_universal, ``pip_cross_topm``).

    Restormer's U-Net with skips modulated by ``prompt<L>`` (:class:`PromptInPrompt`) and
    ``low_prompt_interaction_level<L>`` (:class:`PromptToFeature`). Defaults: the official network plus the
    degradation classifier. The first nine arguments are :class:`~allinone_ir.models.restormer.Restormer`'s.

    Args:
        prompt_dims: Prompt channels at skips 1, 2, 3 (shallow to deep).
        prompt_sizes: Basic-restoration-prompt sizes at skips 1, 2, 3.
        degradations: Degradation names in label order (their number is ``T``).
        p2p_heads: Heads of the prompt-to-prompt attention.
        p2f_heads: Heads of the prompt-to-feature attention (must divide every prompt dim).
        classifier: Build the degradation classifier used when ``degradation=None``.
        classifier_widths: Stage widths of the classifier.

    Shape:
        - image: :math:`(N, C_{in}, H, W)`; output: :math:`(N, C_{out}, H, W)` (and omega :math:`(N, T)`)

    Examples:
        >>> net = PIPRestormer(**PIPRestormer.small_config(smoke=True))
        >>> net(torch.rand(2, 3, 17, 30), degradation="rain").shape
        torch.Size([2, 3, 17, 30])
        >>> out, omega = net(torch.rand(1, 3, 16, 16), return_weights=True)  # blind
        >>> omega.shape
        torch.Size([1, 5])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        prompt_dims: Sequence[int] = (64, 128, 256),
        prompt_sizes: Sequence[int] = (64, 32, 16),
        degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        classifier: bool = True,
        classifier_widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        _check_levels(3, prompt_dims, prompt_sizes)
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        self._build_control(degradations, classifier, classifier_widths)
        p2p: dict[str, Any] = dict(p2p_heads=p2p_heads, ffn_expansion_factor=ffn_expansion_factor, bias=bias)
        for level, (pdim, size) in enumerate(zip(prompt_dims, prompt_sizes), 1):
            prompt = PromptInPrompt(pdim, size, self.num_degradations, layer_norm_type=layer_norm_type, **p2p)
            self.add_module(f"prompt{level}", prompt)
            p2f = PromptToFeature(dim * 2 ** (level - 1), pdim, p2f_heads, *args)
            self.add_module(f"low_prompt_interaction_level{level}", p2f)
        self.chnl_reduce3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        for level in (3, 2, 1):  # level 3 upsamples the latent reduced by chnl_reduce3
            self._build_decoder_level(level, dim, num_blocks, heads, *args, up=dim * 4 if level == 3 else 0)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.chnl_reduce3(x)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        prompt = getattr(self, f"prompt{level}")(skip, ctx)
        return getattr(self, f"low_prompt_interaction_level{level}")(skip, prompt)

    finetune_groups = {
        "encoder": RESTORMER_GROUPS["encoder"],
        "decoder": ("chnl_reduce3", *RESTORMER_GROUPS["decoder"]),
        "prompts": ("prompt1", "prompt2", "prompt3", "low_prompt_interaction_level*"),
    }
    demo_choices = {"pip": "pip_restormer"}
    unused_modules = ("reduce_noise_channel_1", "reduce_noise_channel_2", "reduce_noise_channel_3")

    @classmethod
    def small_config(
        cls, *, degradations: Sequence[str] = DEFAULT_DEGRADATIONS, smoke: bool = False
    ) -> dict[str, Any]:
        """A small PIP-Restormer (one block per level, width 16; the demo's); ``smoke``: the smallest.

        Examples:
            >>> net = PIPRestormer(**PIPRestormer.small_config(degradations=("noise", "rain")))
            >>> net.degradations, net.num_parameters > 500_000
            (('noise', 'rain'), True)
        """
        return dict(
            dim=8 if smoke else 16,
            num_blocks=(1, 1, 1, 1),
            num_refinement_blocks=1,
            heads=(1, 2, 4, 8),
            prompt_dims=(8, 8, 16) if smoke else (16, 32, 64),
            prompt_sizes=(8, 4, 4) if smoke else (16, 8, 4),
            p2f_heads=2,
            classifier_widths=(4, 8) if smoke else (8, 16, 32),
            degradations=tuple(degradations),
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Restormer's layout plus ``prompt1..3`` and ``low_prompt_interaction_level1..3``, else ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits, or the PIP blocks are a development version's.
        """
        prompts = [f"prompt{i}" for i in (1, 2, 3)]
        config = _read_restormer_layout(state_dict)
        return _read_pip_blocks(state_dict, config, prompts, "pip_level1.basic_prompt.prompt")


@register_architecture
class PIPNAFNet(_PIPControl, NAFNet):  # type: ignore[misc]  # forward takes a degradation
    """PIP on NAFNet: a :class:`PIPBlock` (``pips.0`` shallowest) on each skip (paper Table S3; not official).

    The first six arguments are :class:`~allinone_ir.models.nafnet.NAFNet`'s, the others
    :class:`PIPRestormer`'s (one prompt dim and size per level) and the PIP blocks' ``ffn_expansion_factor``.

    Shape:
        - image, output: :math:`(N, C, H, W)`
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: int = 64,
        middle_blk_num: int = 12,
        enc_blk_nums: Sequence[int] = (2, 2, 4, 8),
        dec_blk_nums: Sequence[int] = (2, 2, 2, 2),
        drop_out_rate: float = 0.0,
        prompt_dims: Sequence[int] = (64, 96, 128, 128),
        prompt_sizes: Sequence[int] = (64, 32, 16, 16),
        degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        classifier: bool = True,
        classifier_widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            width=width,
            middle_blk_num=middle_blk_num,
            enc_blk_nums=enc_blk_nums,
            dec_blk_nums=dec_blk_nums,
            drop_out_rate=drop_out_rate,
        )
        _check_levels(len(enc_blk_nums), prompt_dims, prompt_sizes)
        self._build_control(degradations, classifier, classifier_widths)
        options: dict[str, Any] = dict(
            p2p_heads=p2p_heads, p2f_heads=p2f_heads, ffn_expansion_factor=ffn_expansion_factor
        )
        self.pips = nn.ModuleList()
        for i, (pdim, size) in enumerate(zip(prompt_dims, prompt_sizes)):
            self.pips.append(PIPBlock(width * 2**i, pdim, size, self.num_degradations, **options))

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.pips[level - 1](skip, ctx)

    finetune_groups = {**NAFNet.finetune_groups, "prompts": ("pips",)}

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """NAFNet's layout plus ``pips.0..L-1``, else ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits, or the PIP blocks are a development version's.
        """
        config = super().detect(state_dict)
        prompts = [f"pips.{i}.prompt" for i in range(len(config["enc_blk_nums"]) if config else 0)]
        pip = _read_pip_blocks(state_dict, config, prompts, "pips.0.basic_prompt.prompt")
        if pip is None:
            return None
        return {**pip, "ffn_expansion_factor": ffn_expansion_factor(state_dict)}


#: Holds ``(PIP block, omega)`` on a tapped backbone module while :meth:`PIPUNet.forward` runs.
_TAP_ATTR = "_allinone_ir_pip_tap"


def _pip_tap_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
    active = getattr(module, _TAP_ATTR, None)
    return None if active is None else active[0](output, active[1])


class PIPUNet(_PIPControl):
    """Plug PIP into a U-Net of your own, without touching its code.

    Each module named in ``skips`` (run once per forward as ``module(x)``, not checkpointed) gets a
    :class:`PIPBlock` (``pips.<name>``, ``.`` written ``_``) applied to its **output** by a forward hook
    during :meth:`forward` only. ``config`` omits the backbone: to reload, wrap the same backbone and
    ``load_state_dict``. The PIP arguments are :class:`PIPNAFNet`'s.

    Args:
        backbone: Your network; ``backbone(x)`` must return the restored image.
        skips: ``{module name: feature channels}`` for each skip (names as in ``named_modules()``).
        prompt_dims: Prompt channels per skip, in the order of ``skips`` (default: the feature channels).
        prompt_sizes: Basic-restoration-prompt size per skip, or one size for all.
        pad_multiple: Pad ``H, W`` to a multiple of this before the backbone and crop back.

    Raises:
        UsageError: If the names are not distinct sub-modules of ``backbone`` or the lengths disagree.

    Shape:
        - image: :math:`(N, C_{in}, H, W)`; output: what ``backbone`` returns, cropped to ``H x W``

    Examples:
        >>> backbone = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Identity(), nn.Conv2d(8, 3, 1))
        >>> net = PIPUNet(backbone, skips={"1": 8}, prompt_sizes=8, p2f_heads=2, classifier_widths=(4,))
        >>> net(torch.rand(2, 3, 15, 12), degradation=["rain", "haze"]).shape
        torch.Size([2, 3, 15, 12])
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        skips: Mapping[str, int],
        prompt_dims: Sequence[int] | None = None,
        prompt_sizes: Sequence[int] | int = 16,
        degradations: Sequence[str] = DEFAULT_DEGRADATIONS,
        in_channels: int = 3,
        out_channels: int = 3,
        pad_multiple: int = 1,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        classifier: bool = True,
        classifier_widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if not skips:
            raise UsageError("skips must name at least one module, e.g. {'encoder1': 32}")
        modules = dict(backbone.named_modules())
        unknown = [name for name in skips if name not in modules or name == ""]
        if unknown:
            raise UsageError(
                f"{unknown} are not sub-modules of the backbone; some names: {list(modules)[1:9]}"
            )
        names, channels = list(skips), [int(c) for c in skips.values()]
        keys = [re.sub(r"\W", "_", name) for name in names]
        if len(set(keys)) != len(keys):
            raise UsageError(f"skips {names} give the same PIP block names {keys}; name distinct modules")
        if len({id(modules[name]) for name in names}) != len(names):
            raise UsageError(f"skips {names} name the same module twice; each skip needs a module of its own")
        dims = channels if prompt_dims is None else prompt_dims
        sizes = [prompt_sizes] * len(names) if isinstance(prompt_sizes, int) else prompt_sizes
        _check_levels(len(names), dims, sizes)
        self.in_channels, self.out_channels, self.pad_multiple = in_channels, out_channels, pad_multiple
        self.backbone = backbone
        self._build_control(degradations, classifier, classifier_widths)
        self.pips = nn.ModuleDict()
        self.taps: tuple[tuple[str, str], ...] = tuple(zip(names, keys))
        options: dict[str, Any] = dict(
            p2p_heads=p2p_heads, p2f_heads=p2f_heads, ffn_expansion_factor=ffn_expansion_factor
        )
        for name, key, c, pdim, size in zip(names, keys, channels, dims, sizes):
            self.pips[key] = PIPBlock(c, pdim, size, self.num_degradations, **options)
            module = modules[name]
            setattr(module, _TAP_ATTR, None)
            if not any(hook is _pip_tap_hook for hook in module._forward_hooks.values()):
                module.register_forward_hook(_pip_tap_hook)  # once, even if wrapped again

    def _restore(self, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        tapped = [(self.backbone.get_submodule(name), name, key) for name, key in self.taps]
        for module, name, _ in tapped:
            if not hasattr(module, _TAP_ATTR):
                raise RuntimeError(
                    f"backbone module {name!r} was replaced after PIPUNet wrapped the backbone, so it has no "
                    "PIP tap; wrap the modified backbone again"
                )
        for module, _, key in tapped:
            setattr(module, _TAP_ATTR, (self.pips[key], omega))
        try:
            return self.backbone(x)
        finally:
            for module, _, _ in tapped:
                setattr(module, _TAP_ATTR, None)

    finetune_groups = {"prompts": ("pips",)}


@register_model
def pip_restormer(**kwargs: Any) -> PIPRestormer:
    """PIP on Restormer, the paper's configuration (prompt dims [64,128,256], sizes [64,32,16], 5 degradations)."""
    return PIPRestormer(**kwargs)


@register_model
def pip_nafnet(**kwargs: Any) -> PIPNAFNet:
    """PIP on NAFNet width 64 (enc [2,2,4,8], middle 12, dec [2,2,2,2]; prompt dims [64,96,128,128])."""
    return PIPNAFNet(**kwargs)


def _read_pip_blocks(
    state_dict: Mapping[str, torch.Tensor], config: dict[str, Any] | None, prompts: list[str], old_key: str
) -> dict[str, Any] | None:
    """``config`` plus the PIP modules' arguments (``None`` without them); refuses a development version's."""
    if old_key in state_dict:
        raise CheckpointError(
            f"these PIP weights ({old_key!r}) come from a development version of allinone-ir whose PIP blocks "
            "differ from the official ones built now; they cannot be converted: train the network again"
        )
    if config is None or f"{prompts[0]}.low_prompt_param" not in state_dict:
        return None
    basic = [state_dict[f"{p}.low_prompt_param"] for p in prompts]
    num = int(state_dict[f"{prompts[0]}.detask_prompt_param"].shape[-4])  # (1, T, C, 1, 1) or (T, C, 1, 1)
    names = list(DEFAULT_DEGRADATIONS)
    if num != len(names):
        names = list(default_names(num))
        warnings.warn(
            f"the checkpoint has {num} degradation prompts; their names are not stored in the weights, "
            f"calling them {names} (pass degradations=[...] to name them)",
            stacklevel=5,  # the caller of load_checkpoint / detect_architecture
        )
    widths = [
        int(state_dict[f"classifier.stages.{i}.0.conv1.weight"].shape[0])
        for i in range(count_blocks(state_dict, "classifier.stages"))
    ]
    p2f = next(v for k, v in state_dict.items() if k.endswith("prompt_transformer_cross.attn.temperature"))
    config = dict(
        config,
        prompt_dims=[int(p.shape[1]) for p in basic],
        prompt_sizes=[int(p.shape[-1]) for p in basic],
        degradations=names,
        p2p_heads=int(state_dict[f"{prompts[0]}.LGM.attn.temperature"].shape[0]),
        p2f_heads=int(p2f.shape[0]),
        classifier=bool(widths),
    )
    if widths:
        config["classifier_widths"] = widths
    return config


register_weights_note("PIP (pip_restormer, pip_nafnet)", "the authors released no weights; train your own")
