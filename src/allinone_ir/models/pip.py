"""PIP (Prompt-In-Prompt) networks: PIP on Restormer, on NAFNet, and on any U-Net of your own.

All three take ``model(image, degradation=None, *, return_weights=False, return_logits=False)``:

- ``degradation`` controls the degradation-aware prompts: an int label or labels ``(N,)``,
  a name (``"rain"``, ``"rain+noise"``), a list of names, a mapping ``{"rain": 0.7, "noise": 0.3}``
  or a weight tensor ``(N, T)`` (see :func:`~allinone_ir.degradation_types.resolve_degradation_weights`);
- ``degradation=None`` restores blind: the built-in :class:`~allinone_ir.models.classifier.DegradationClassifier`
  estimates ``omega = softmax(logits)``;
- ``return_weights=True`` also returns the ``omega`` used (the estimate, when blind);
- ``return_logits=True`` also returns the classifier's logits, running the classifier even when
  ``degradation`` is given: one forward for joint training (restoration loss on the labelled
  prompts + :func:`~allinone_ir.models.classifier.degradation_classification_loss`), which also keeps
  every parameter in use for DDP.

The family declares its own training recipe (each network's ``auxiliary_losses()``), which the
:class:`~allinone_ir.training.Trainer`, the config files and the demo use as it is: the training
forward gets the labels (and asks for the classifier's logits), and two terms are added to the
restoration loss, ``ddl`` (the directional decoupled loss on the degradation-aware prompts, weight
:data:`~allinone_ir.losses.DEFAULT_DDL_ALPHA` = 0.002, paper Eq. 10) and ``classifier`` (the
classifier's cross-entropy against the labels, weight :data:`DEFAULT_CLASSIFIER_WEIGHT` = 0.1).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..degradation_types import (
    DEFAULT_DEGRADATIONS,
    DegradationSpec,
    default_names,
    resolve_degradation_weights,
)
from ..errors import CheckpointError, DatasetError, UsageError
from ..layers.norm import NormKind
from ..layers.pip import PIPBlock, PromptInPrompt, PromptToFeature
from ..losses.decoupled import DEFAULT_DDL_ALPHA, collect_degradation_prompts, directional_decoupled_loss
from ._base import AuxiliaryLoss, RestorationModel
from ._registry import register_architecture, register_model
from .classifier import DegradationClassifier, degradation_classification_loss
from .nafnet import NAFNet
from .restormer import RestormerUNet

__all__ = ["PIPNAFNet", "PIPRestormer", "PIPUNet"]

PIPOutput = torch.Tensor | tuple[torch.Tensor, ...]

#: Modules the official PIP-Restormer builds but never uses in ``forward``; their checkpoint keys are dropped on load.
_OFFICIAL_UNUSED_MODULES: tuple[str, ...] = (
    "reduce_noise_channel_1",
    "reduce_noise_channel_2",
    "reduce_noise_channel_3",
)

#: Default weight of the degradation classifier's cross-entropy in the PIP family's training recipe.
#: The classifier has parameters of its own and, when labels drive the prompts, its logits do not
#: reach the image, so this weight trades nothing off against the restoration loss: under Adam it
#: barely changes the classifier's updates (Adam is invariant to the scale of a gradient); it sets
#: the term's share of the logged loss and of the gradient norm that ``grad_clip`` clips. At weight 1
#: the cross-entropy's gradient norm is 2.5 times the L1 loss's at initialisation (3.72 vs 1.50,
#: PIP-Restormer dim 16, batch 8 of 64 px), so clipping would mostly shrink the restoration update;
#: at 0.1 (0.37) the restoration gradient dominates, and the term starts at ``0.1 ln T`` (0.16 for
#: five classes), the size of an L1 loss.
DEFAULT_CLASSIFIER_WEIGHT: float = 0.1


def _ddl_term(model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The ``ddl`` term: paper Eq. 4 on the network's own degradation-aware prompts, summed over its blocks."""
    return directional_decoupled_loss(collect_degradation_prompts(model))


def _classifier_term(
    model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The ``classifier`` term: cross-entropy of the training forward's logits against ``batch["label"]``.

    Zero for a batch without labels (blind training: the classifier learns through the restoration
    loss alone). Labels of any form :func:`~allinone_ir.degradation_types.resolve_degradation_weights` reads
    (integer labels, ``(N, T)`` weights from Degradation-Mix or mixup, names) are turned into
    normalised target weights, so a 50/50 mixture targets 0.5 / 0.5.

    Raises:
        ValueError: If the batch has labels but ``extras`` has no ``"logits"`` (the forward was not
            run with the network's ``training_forward_kwargs(batch)``).
    """
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


class _PIPControl:
    """Degradation control shared by the PIP networks: names, the optional classifier, ``omega``."""

    degradations: tuple[str, ...]
    classifier: DegradationClassifier | None
    in_channels: int

    def _build_control(
        self, degradations: Sequence[str], classifier: bool, classifier_widths: Sequence[int]
    ) -> None:
        names = tuple(str(n) for n in degradations)
        if not names or len(set(names)) != len(names):
            raise UsageError(f"degradations must be distinct names, got {list(degradations)}")
        self.degradations = names
        self.classifier = (
            DegradationClassifier(
                in_channels=self.in_channels, num_degradations=len(names), widths=classifier_widths
            )
            if classifier
            else None
        )

    @property
    def num_degradations(self) -> int:
        """Number of degradation types ``T``."""
        return len(self.degradations)

    def classify(self, image: torch.Tensor) -> torch.Tensor:
        """Degradation logits ``(N, T)`` of the built-in classifier.

        Raises:
            RuntimeError: If the network was built with ``classifier=False``.
        """
        if self.classifier is None:
            raise RuntimeError("this network has no degradation classifier (built with classifier=False)")
        return self.classifier(image)

    # ------------------------------------------------------------------ training recipe of the family
    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """How to call ``forward`` in a training step: with the batch's labels, and for the classifier's logits.

        - labels (``batch["label"]``: int labels ``(N,)``, or ``(N, T)`` weights from
          Degradation-Mix / mixup) and a classifier: ``{"degradation": labels, "return_logits": True}``,
          so the labels drive the prompts (as in the paper) and the classifier's logits come out
          of the same forward for the ``classifier`` term;
        - labels and no classifier (``classifier=False``): ``{"degradation": labels}``;
        - no labels: ``{}``, i.e. blind training, where the classifier's ``omega`` drives the
          prompts and the classifier learns through the restoration loss only (legitimate when
          the degradation of the training data is unknown; the ``classifier`` term is then 0).

        Every parameter is used by this one forward, as DDP without ``find_unused_parameters``
        requires.

        Args:
            batch: The batch dict on the device.

        Returns:
            Keyword arguments for ``forward``.

        Raises:
            DatasetError: Without labels when the network has no classifier: nothing could
                supply ``omega``.
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
        """Split the training forward's output into the image and ``{"logits": ...}`` (when asked for).

        Args:
            output: What ``forward(x, **training_forward_kwargs(batch))`` returned: the image, or
                ``(image, logits)``.

        Returns:
            ``(image, extras)``; ``extras`` is ``{"logits": logits}`` or empty.

        Raises:
            ValueError: For any other output (e.g. one made with ``return_weights=True``).

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
            - logits: :math:`(N, T)`
        """
        if isinstance(output, torch.Tensor):
            return output, {}
        pair = isinstance(output, tuple) and len(output) == 2
        if pair and all(isinstance(t, torch.Tensor) for t in output):
            return output[0], {"logits": output[1]}
        kind = f"a tuple of {len(output)}" if isinstance(output, tuple) else type(output).__name__
        raise UsageError(
            "expected the output of forward(x, **training_forward_kwargs(batch)): an image tensor or "
            f"(image, logits), got {kind}"
        )

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """PIP's training terms, added to the restoration loss by the trainer, the configs and the demo.

        - ``ddl``, weight :data:`~allinone_ir.losses.DEFAULT_DDL_ALPHA` (0.002): the directional
          decoupled loss (paper Eq. 4, angle form, 90 degrees) on the degradation-aware prompts of
          every PIP block, summed over the blocks; the paper's total loss is ``L1 + 0.002 L_ddl``
          (Eq. 10);
        - ``classifier``, weight :data:`DEFAULT_CLASSIFIER_WEIGHT` (0.1), only when the network has
          a classifier: the cross-entropy of its logits against the labels. The classifier sees the
          degraded image only and, as the labels drive the prompts, the restoration loss does not
          reach it, nor does this term reach the restoration path: the classifier is trained as in
          the paper (supplementary C.1), only jointly. Without labels the term is 0.

        Change a weight by name (``trainer.aux_weights: {classifier: 0.5}`` in a config); weight 0
        switches a term's effect off.

        Returns:
            The terms (``fn(model, batch, extras)``, ``model`` the unwrapped network).
        """
        terms = [AuxiliaryLoss("ddl", DEFAULT_DDL_ALPHA, _ddl_term)]
        if self.classifier is not None:
            terms.append(AuxiliaryLoss("classifier", DEFAULT_CLASSIFIER_WEIGHT, _classifier_term))
        return terms

    def _omega(
        self, image: torch.Tensor, degradation: DegradationSpec | None, need_logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = None
        if degradation is None or need_logits:
            if self.classifier is None:
                raise UsageError(
                    "degradation=None needs the degradation classifier, but this network was built with "
                    f"classifier=False; pass degradation= one of {list(self.degradations)}, labels or weights"
                )
            logits = self.classifier(image)
        if degradation is None:
            assert logits is not None
            omega = logits.float().softmax(dim=-1)
        else:
            omega = resolve_degradation_weights(
                degradation, batch_size=image.shape[0], names=self.degradations, device=image.device
            )
        return omega, logits

    @staticmethod
    def _pack(
        out: torch.Tensor,
        omega: torch.Tensor,
        logits: torch.Tensor | None,
        return_weights: bool,
        return_logits: bool,
    ) -> PIPOutput:
        extra = ([omega] if return_weights else []) + ([logits] if return_logits else [])
        return (out, *extra) if extra else out


def _apply_pip(block: nn.Module, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Modulate a skip feature with its PIP block: the one step every PIP network runs per skip.

    :class:`PIPRestormer` and :class:`PIPNAFNet` call it from their U-Net's skip hook
    (:meth:`~allinone_ir.models._unet.UNetHooks._skip_hook`), :class:`PIPUNet` from the forward hook
    it puts on the named modules of a user's network.
    """
    return block(feature, omega)


def _check_levels(name: str, values: Sequence[Any], n: int) -> list[Any]:
    if len(values) != n:
        raise UsageError(f"{name} needs {n} entries (one per skip connection), got {list(values)}")
    return list(values)


@register_architecture
class PIPRestormer(_PIPControl, RestormerUNet):
    """PIP on Restormer, the official PIP network (longzilicart/pip_universal, ``pip_cross_topm``).

    The Restormer encoder (same module names as :class:`~allinone_ir.models.Restormer`)
    produces skips ``e1, e2, e3``; each is modulated before the decoder concatenates it (the
    skip hook of Restormer's U-Net, :class:`~allinone_ir.models.restormer.RestormerUNet`, where
    :class:`PIPUNet` would tap a user's network): ``prompt<L>``
    (:class:`~allinone_ir.layers.PromptInPrompt`) makes the level's prompt from the skip and the
    degradation weights, ``low_prompt_interaction_level<L>``
    (:class:`~allinone_ir.layers.PromptToFeature`) modulates the skip with it. The decoder
    follows the official network: the latent is reduced ``8 dim -> 4 dim`` by ``chnl_reduce3``
    before ``up4_3``, so ``reduce_chan_level3`` maps ``2 dim + 4 dim -> 4 dim``. Module names are
    the official ones, so official checkpoints load as they are (the three modules the official
    code builds and never uses, ``reduce_noise_channel_1..3``, are not built and their keys are
    dropped). The official forward takes integer labels (``degradation_class``, made one-hot);
    ``degradation`` takes the same labels, or names, mixtures and weights. Any ``H, W >= 1`` works
    (reflect padding to a multiple of 8, output cropped back).

    Defaults: dim 48, blocks [4,6,6,8], refinement 4, prompt dims [64,128,256], sizes
    [64,32,16], 5 degradations, P2P 2 heads, P2F 4 heads: 27,394,619 parameters, the official
    network's 27,316,614 (without its unused modules) and the degradation classifier's 78,005
    (``classifier=False`` builds the official network alone). The paper's 26.82 M equals the
    official network counted without the parameters that are not convolution or linear weights.

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level.
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        prompt_dims: Prompt channels at skips 1, 2, 3 (shallow to deep).
        prompt_sizes: Basic-restoration-prompt sizes at skips 1, 2, 3.
        degradations: Degradation names in label order (their number is ``T``).
        p2p_heads: Heads of the prompt-to-prompt attention.
        p2f_heads: Heads of the prompt-to-feature attention (must divide every prompt dim).
        classifier: Build the degradation classifier used when ``degradation=None``.
        classifier_widths: Stage widths of the classifier.

    Shape:
        - image: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - output: :math:`(N, C_{out}, H, W)`; with ``return_weights`` also ``omega`` :math:`(N, T)`

    Examples:
        >>> net = PIPRestormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
        ...                    prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), p2f_heads=2,
        ...                    classifier_widths=(4, 8))
        >>> net(torch.rand(2, 3, 17, 30), degradation="rain").shape
        torch.Size([2, 3, 17, 30])
        >>> out, omega = net(torch.rand(1, 3, 16, 16), return_weights=True)  # blind
        >>> omega.shape
        torch.Size([1, 5])
    """

    accepts_degradation = True
    pad_multiple = 8

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
        prompt_dims = _check_levels("prompt_dims", prompt_dims, 3)
        prompt_sizes = _check_levels("prompt_sizes", prompt_sizes, 3)
        self.in_channels, self.out_channels = in_channels, out_channels
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self._build_encoder(in_channels, dim, num_blocks, heads, *args)
        self._build_control(degradations, classifier, classifier_widths)
        for level, (fdim, pdim, size) in enumerate(
            zip((dim, dim * 2, dim * 4), prompt_dims, prompt_sizes), 1
        ):
            prompt = PromptInPrompt(
                pdim, size, self.num_degradations, p2p_heads=p2p_heads, ffn_expansion_factor=ffn_expansion_factor,
                bias=bias, layer_norm_type=layer_norm_type,
            )  # fmt: skip
            self.add_module(f"prompt{level}", prompt)
            self.add_module(
                f"low_prompt_interaction_level{level}", PromptToFeature(fdim, pdim, p2f_heads, *args)
            )
        self.chnl_reduce3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        for level in (3, 2, 1):
            up = dim * 4 if level == 3 else None  # the latent, reduced by chnl_reduce3
            self._build_decoder_level(level, dim, num_blocks, heads, *args, up_channels=up)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.chnl_reduce3(x)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        prompt = getattr(self, f"prompt{level}")(skip, ctx)
        return getattr(self, f"low_prompt_interaction_level{level}")(skip, prompt)

    def forward(
        self,
        x: torch.Tensor,
        degradation: DegradationSpec | None = None,
        *,
        return_weights: bool = False,
        return_logits: bool = False,
    ) -> PIPOutput:
        inp, size = self._pad_input(x)
        omega, logits = self._omega(x, degradation, return_logits)
        out = self._unet_forward(inp, omega)
        return self._pack(self._crop(out, size), omega, logits, return_weights, return_logits)

    # ------------------------------------------------------------------ what the family declares
    #: Restormer's ``encoder`` and ``decoder`` (with ``chnl_reduce3``) and ``prompts`` (the PIP modules).
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "decoder": ("chnl_reduce3", "up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
        "prompts": ("prompt1", "prompt2", "prompt3", "low_prompt_interaction_level*"),
    }
    demo_choices: ClassVar[Mapping[str, str]] = {"pip": "pip_restormer"}

    @classmethod
    def small_config(
        cls, *, degradations: Sequence[str] = DEFAULT_DEGRADATIONS, smoke: bool = False
    ) -> dict[str, Any]:
        """A small PIP-Restormer (one block per level, width 16; the demo's); ``smoke``: the smallest.

        Args:
            degradations: The degradation names, in label order (one degradation prompt each).
            smoke: The smallest configuration (width 8, a two-stage classifier), for tests.

        Examples:
            >>> net = PIPRestormer(**PIPRestormer.small_config(degradations=("noise", "rain")))
            >>> net.degradations, net.num_parameters > 500_000
            (('noise', 'rain'), True)
        """
        config: dict[str, Any] = dict(
            dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
            prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4), p2f_heads=2, classifier_widths=(8, 16, 32),
            degradations=tuple(degradations),
        )  # fmt: skip
        if smoke:
            config.update(dim=8, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), classifier_widths=(4, 8))
        return config

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a PIP-Restormer state dict, else ``None``.

        Restormer's layout (see :meth:`Restormer.detect <allinone_ir.models.Restormer.detect>`) plus
        the official PIP modules ``prompt1..3`` and ``low_prompt_interaction_level1..3``: prompt
        channels and sizes, the number of degradations, the heads and the classifier widths (no
        classifier in an official checkpoint). Degradation names are not stored in weights: the
        defaults are assumed (with a warning when their number differs).

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``PIPRestormer(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths, or the weights have the
                PIP blocks of a development version (``pip_level1..3``).
        """
        from .restormer import _read_restormer_layout

        config = _read_restormer_layout(state_dict)
        _reject_earlier_layout(state_dict, "pip_level1.basic_prompt.prompt")
        if config is None or "prompt1.low_prompt_param" not in state_dict:
            return None
        prompts = [f"prompt{i}" for i in (1, 2, 3)]
        interactions = [f"low_prompt_interaction_level{i}" for i in (1, 2, 3)]
        return {**config, **_read_pip_blocks(state_dict, prompts, interactions)}

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Drop the keys of ``reduce_noise_channel_1..3``: modules the official code builds and never uses.

        Args:
            state_dict: Weights with the wrapper prefixes removed.
            model: The network they are loaded into.

        Returns:
            A new dict (``state_dict`` is not modified).
        """
        unused = tuple(f"{m}." for m in _OFFICIAL_UNUSED_MODULES if not hasattr(model, m))
        return {k: v for k, v in state_dict.items() if not k.startswith(unused)}


@register_architecture
class PIPNAFNet(_PIPControl, NAFNet):
    """PIP on NAFNet: a :class:`~allinone_ir.layers.PIPBlock` on each skip connection (paper Table S3).

    The NAFNet modules keep their official names (``intro``, ``encoders``, ``downs``,
    ``middle_blks``, ``ups``, ``decoders``, ``ending``); the PIP blocks are
    ``pips.0`` (shallowest) to ``pips.{L-1}``, each the official PIP-Restormer's two modules of
    a level (``pips.<i>.prompt``, ``pips.<i>.low_prompt_interaction``). Each encoder output is
    modulated by its PIP block before it is added to the upsampled decoder feature (NAFNet's skip
    hook, see :class:`~allinone_ir.models._unet.UNetHooks`). The official code has no PIP-NAFNet
    (the paper reports one), so there are no official weights for it. Defaults: width 64,
    enc [2,2,4,8], middle 12, dec [2,2,2,2], prompt dims [64,96,128,128], sizes
    [64,32,16,16], P2P 2 heads, P2F 4 heads: 120,510,960 parameters.

    Args:
        in_channels: Image channels (input and output).
        width: Channels of the first level (doubled at each level).
        middle_blk_num: NAF blocks in the bottleneck.
        enc_blk_nums: NAF blocks per encoder level.
        dec_blk_nums: NAF blocks per decoder level.
        drop_out_rate: Dropout inside the blocks.
        prompt_dims: Prompt channels per skip (shallow to deep), one per encoder level.
        prompt_sizes: Basic-restoration-prompt sizes per skip.
        degradations: Degradation names in label order.
        p2p_heads: Heads of the prompt-to-prompt attention.
        p2f_heads: Heads of the prompt-to-feature attention (must divide every prompt dim).
        ffn_expansion_factor: GDFN width factor inside the PIP blocks.
        classifier: Build the degradation classifier used when ``degradation=None``.
        classifier_widths: Stage widths of the classifier.

    Shape:
        - image: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`

    Examples:
        >>> net = PIPNAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1),
        ...                 prompt_dims=(8, 8), prompt_sizes=(8, 4), p2f_heads=2, classifier_widths=(4,))
        >>> net(torch.rand(2, 3, 13, 9), degradation=torch.tensor([0, 4])).shape
        torch.Size([2, 3, 13, 9])
    """

    accepts_degradation = True

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
            in_channels=in_channels, width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
            dec_blk_nums=dec_blk_nums, drop_out_rate=drop_out_rate,
        )  # fmt: skip
        levels = len(enc_blk_nums)
        prompt_dims = _check_levels("prompt_dims", prompt_dims, levels)
        prompt_sizes = _check_levels("prompt_sizes", prompt_sizes, levels)
        self._build_control(degradations, classifier, classifier_widths)
        kw = dict(p2p_heads=p2p_heads, p2f_heads=p2f_heads, ffn_expansion_factor=ffn_expansion_factor)
        self.pips = nn.ModuleList(
            PIPBlock(width * 2**i, pdim, size, self.num_degradations, **kw)
            for i, (pdim, size) in enumerate(zip(prompt_dims, prompt_sizes))
        )

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        degradation: DegradationSpec | None = None,
        *,
        return_weights: bool = False,
        return_logits: bool = False,
    ) -> PIPOutput:
        inp, size = self._pad_input(x)
        omega, logits = self._omega(x, degradation, return_logits)
        out = self._unet_forward(inp, omega)
        return self._pack(self._crop(out, size), omega, logits, return_weights, return_logits)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        return _apply_pip(self.pips[level - 1], skip, ctx)

    # ------------------------------------------------------------------ what the family declares
    #: NAFNet's ``encoder`` and ``decoder`` and ``prompts`` (the PIP blocks).
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        **NAFNet.finetune_groups,
        "prompts": ("pips",),
    }

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a PIP-NAFNet state dict, else ``None``.

        NAFNet's layout (see :meth:`NAFNet.detect <allinone_ir.models.NAFNet.detect>`) plus
        ``pips.0..L-1``: prompt channels and sizes, the number of degradations, the heads, the
        feed-forward factor and the classifier widths (degradation names: the defaults).

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``PIPNAFNet(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths, or the weights have the
                PIP blocks of a development version (``pips.<i>.basic_prompt``).
        """
        from ._detect import ffn_expansion_factor
        from .nafnet import _read_nafnet_layout

        config = _read_nafnet_layout(state_dict)
        _reject_earlier_layout(state_dict, "pips.0.basic_prompt.prompt")
        if config is None or "pips.0.prompt.low_prompt_param" not in state_dict:
            return None
        levels = range(len(config["enc_blk_nums"]))
        pips = _read_pip_blocks(
            state_dict,
            [f"pips.{i}.prompt" for i in levels],
            [f"pips.{i}.low_prompt_interaction" for i in levels],
        )
        return {**config, **pips, "ffn_expansion_factor": ffn_expansion_factor(state_dict)}


#: Attribute of a tapped backbone module that holds ``(PIP block, omega)`` while :meth:`PIPUNet.forward` runs.
_TAP_ATTR = "_allinone_ir_pip_tap"


def _pip_tap_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook of a tapped backbone module: apply the PIP block that :meth:`PIPUNet.forward` handed it.

    The hook holds no state and no reference to any wrapper: what it applies is stored on the
    module itself, and only for the duration of the wrapper's call. So ``copy.deepcopy``,
    pickling and ``ModelEMA`` give copies that apply their own blocks, and the backbone called
    on its own is unchanged.
    """
    active = getattr(module, _TAP_ATTR, None)
    if active is None:  # the backbone was called on its own: leave it unmodified
        return None
    block, omega = active
    return _apply_pip(block, output, omega)


class PIPUNet(_PIPControl, RestorationModel):
    """Plug PIP into a U-Net of your own, without touching its code.

    Design: PIP modulates skip tensors, so the wrapper needs to know which tensors are
    skips. Name the sub-modules of your network whose **outputs** are the skip features;
    the wrapper builds one :class:`~allinone_ir.layers.PIPBlock` per name (``pips.<name>``,
    with ``.`` in the name written ``_``) and taps each named module with a stateless forward
    hook. :meth:`forward` resolves ``omega`` once per call (from ``degradation``, or estimated
    by the classifier), hands each tapped module its block and ``omega`` for the duration of
    the call, and the hook replaces the module's output by ``pip(output, omega)``. Outside
    :meth:`forward` the hooks do nothing, so the wrapped network still runs unmodified when
    called directly.

    Nothing refers back to the wrapper, so copies are independent: ``copy.deepcopy`` (what
    :class:`~allinone_ir.training.ema.ModelEMA` does), pickling, ``.to()``, DDP and
    ``torch.compile`` all give a network that applies its own PIP blocks. The backbone's
    modules keep their types, attributes and state-dict keys (``backbone.<name>.*``; the blocks
    are ``pips.<name>.*``), so weights of the plain backbone load with
    ``net.backbone.load_state_dict(...)``.

    The named module's output is replaced wherever it is used. If your encoder output
    feeds both the skip and the next level and you want to modulate only the skip (as
    PIP does), give the skip path its own module, e.g. ``self.skip1 = nn.Identity()`` and
    ``torch.cat([up, self.skip1(e1)], 1)`` in the decoder, and name ``"skip1"``. Each named
    module must run once per forward, be called as ``module(x)`` (hooks do not run for
    ``module.forward(x)``), and lie outside activation-checkpointed regions of the backbone
    (their recomputation runs after :meth:`forward` has returned, without PIP). For full
    control instead, call :class:`~allinone_ir.layers.PIPBlock` yourself: ``e1 = pip(e1, omega)``
    with ``omega = resolve_degradation_weights(degradation, batch_size=N)``.

    ``config`` records the wrapper's arguments but not the backbone, and the wrapper is not
    in the model registry: to reload weights, wrap the same backbone again and use
    ``load_state_dict``.

    Args:
        backbone: Your network; ``backbone(x)`` must return the restored image.
        skips: ``{module name: feature channels}`` for each skip (names as in ``named_modules()``).
        prompt_dims: Prompt channels per skip, in the order of ``skips`` (default: the feature channels).
        prompt_sizes: Basic-restoration-prompt size per skip, or one size for all.
        degradations: Degradation names in label order.
        in_channels: Image channels of the input (checked).
        out_channels: Image channels of the output.
        pad_multiple: Pad ``H, W`` to a multiple of this before the backbone (e.g. ``2 ** levels``)
            and crop back; 1 for no padding.
        p2p_heads: Heads of the prompt-to-prompt attention.
        p2f_heads: Heads of the prompt-to-feature attention (must divide every prompt dim).
        ffn_expansion_factor: GDFN width factor inside the PIP blocks.
        classifier: Build the degradation classifier used when ``degradation=None``.
        classifier_widths: Stage widths of the classifier.

    Attributes:
        backbone: Your network, its named modules tapped.
        pips: The PIP blocks, ``{block name: PIPBlock}``.
        taps: ``(module name in the backbone, block name in pips)`` of each skip.

    Raises:
        ValueError: If a name is not a sub-module of ``backbone``, two names are the same module
            or give the same block name, or the lengths disagree.

    Shape:
        - image: :math:`(N, C_{in}, H, W)`
        - output: whatever ``backbone`` returns, cropped to :math:`H \\times W`

    Examples:
        >>> class TinyUNet(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.enc = nn.Conv2d(3, 8, 3, padding=1)
        ...         self.skip = nn.Identity()
        ...         self.down = nn.Conv2d(8, 8, 2, stride=2)
        ...         self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        ...         self.out = nn.Conv2d(16, 3, 3, padding=1)
        ...     def forward(self, x):
        ...         e = self.enc(x)
        ...         return x + self.out(torch.cat([self.up(self.down(e)), self.skip(e)], 1))
        >>> net = PIPUNet(TinyUNet(), skips={"skip": 8}, prompt_sizes=8, p2f_heads=2,
        ...               pad_multiple=2, classifier_widths=(4,))
        >>> net(torch.rand(2, 3, 15, 12), degradation=["rain", "haze"]).shape
        torch.Size([2, 3, 15, 12])
    """

    accepts_degradation = True

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
        dims = channels if prompt_dims is None else _check_levels("prompt_dims", prompt_dims, len(names))
        sizes = [prompt_sizes] * len(names) if isinstance(prompt_sizes, int) else list(prompt_sizes)
        sizes = _check_levels("prompt_sizes", sizes, len(names))
        self.in_channels, self.out_channels, self.pad_multiple = in_channels, out_channels, pad_multiple
        self.backbone = backbone
        self._build_control(degradations, classifier, classifier_widths)
        self.pips = nn.ModuleDict()
        self.taps: tuple[tuple[str, str], ...] = tuple(zip(names, keys))
        for name, key, c, pdim, size in zip(names, keys, channels, dims, sizes):
            self.pips[key] = PIPBlock(
                c, pdim, size, self.num_degradations, p2p_heads=p2p_heads, p2f_heads=p2f_heads,
                ffn_expansion_factor=ffn_expansion_factor,
            )  # fmt: skip
            module = modules[name]
            setattr(module, _TAP_ATTR, None)
            if not any(hook is _pip_tap_hook for hook in module._forward_hooks.values()):
                module.register_forward_hook(_pip_tap_hook)  # once, even if wrapped again

    def _tapped_modules(self) -> list[nn.Module]:
        found = []
        for name, _ in self.taps:
            module = self.backbone.get_submodule(name)
            if not hasattr(module, _TAP_ATTR):
                raise RuntimeError(
                    f"backbone module {name!r} was replaced after PIPUNet wrapped the backbone, so it has no "
                    "PIP tap; wrap the modified backbone again"
                )
            found.append(module)
        return found

    def forward(
        self,
        x: torch.Tensor,
        degradation: DegradationSpec | None = None,
        *,
        return_weights: bool = False,
        return_logits: bool = False,
    ) -> PIPOutput:
        inp, size = self._pad_input(x)
        omega, logits = self._omega(x, degradation, return_logits)
        tapped = self._tapped_modules()
        for module, (_, key) in zip(tapped, self.taps):
            setattr(module, _TAP_ATTR, (self.pips[key], omega))
        try:
            out = self.backbone(inp)
        finally:
            for module in tapped:
                setattr(module, _TAP_ATTR, None)
        return self._pack(self._crop(out, size), omega, logits, return_weights, return_logits)

    # ------------------------------------------------------------------ what the family declares
    #: ``prompts``: the PIP blocks (the backbone is ``backbone``, the classifier ``classifier``).
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {"prompts": ("pips",)}


@register_model
def pip_restormer(**kwargs: Any) -> PIPRestormer:
    """PIP on Restormer, the paper's configuration (prompt dims [64,128,256], sizes [64,32,16], 5 degradations)."""
    return PIPRestormer(**kwargs)


@register_model
def pip_nafnet(**kwargs: Any) -> PIPNAFNet:
    """PIP on NAFNet width 64 (enc [2,2,4,8], middle 12, dec [2,2,2,2]; prompt dims [64,96,128,128])."""
    return PIPNAFNet(**kwargs)


def _reject_earlier_layout(state_dict: Mapping[str, torch.Tensor], key: str) -> None:
    """Refuse the weights of the PIP blocks of development versions, which computed another function."""
    if key in state_dict:
        raise CheckpointError(
            f"these PIP weights ({key!r}) come from a development version of allinone-ir whose PIP blocks "
            "differ from the official ones built now; they cannot be converted: train the network again"
        )


def _read_pip_blocks(
    state_dict: Mapping[str, torch.Tensor], prompts: list[str], interactions: list[str]
) -> dict[str, Any]:
    """Prompt sizes, degradation count, heads and classifier of the PIP modules named ``prompts``
    (:class:`~allinone_ir.layers.PromptInPrompt`) and ``interactions`` (:class:`~allinone_ir.layers.PromptToFeature`)."""
    from ._detect import count_blocks

    basic = [state_dict[f"{p}.low_prompt_param"] for p in prompts]
    num = int(state_dict[f"{prompts[0]}.detask_prompt_param"].shape[-4])  # (1, T, C, 1, 1) or (T, C, 1, 1)
    names = list(DEFAULT_DEGRADATIONS)
    if num != len(names):
        names = list(default_names(num))  # the vocabulary's names in label order (snow is the sixth)
        warnings.warn(
            f"the checkpoint has {num} degradation prompts; their names are not stored in the weights, "
            f"calling them {names} (pass degradations=[...] to name them)",
            stacklevel=5,  # the caller of load_checkpoint / detect_architecture
        )
    widths = [
        int(state_dict[f"classifier.stages.{i}.0.conv1.weight"].shape[0])
        for i in range(count_blocks(state_dict, "classifier.stages"))
    ]
    config: dict[str, Any] = dict(
        prompt_dims=[int(p.shape[1]) for p in basic],
        prompt_sizes=[int(p.shape[-1]) for p in basic],
        degradations=names,
        p2p_heads=int(state_dict[f"{prompts[0]}.LGM.attn.temperature"].shape[0]),
        p2f_heads=int(state_dict[f"{interactions[0]}.prompt_transformer_cross.attn.temperature"].shape[0]),
        classifier=bool(widths),
    )
    if widths:
        config["classifier_widths"] = widths
    return config


# The PIP authors released no weights (github.com/longzilicart/pip_universal: no release, no checkpoint
# link in the README; its issue 6 asks for them): the weights listing says so.
from ._weights import register_weights_note  # noqa: E402

register_weights_note("PIP (pip_restormer, pip_nafnet)", "the authors released no weights; train your own")
