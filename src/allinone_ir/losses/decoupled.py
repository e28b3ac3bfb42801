"""PIP's directional decoupled loss: keep the degradation-aware prompts pointing in different directions.

Three forms, named by what they compute on the cosine ``cos theta_ij`` of each pair of prompts:

============================  ====================================  =====================================
``form``                      term per pair ``i < j``               where it comes from
============================  ====================================  =====================================
``"angle_hinge"`` (default)   ``max(0, theta_thre - theta_ij)``     the PIP paper, Eq. 4 (radians)
``"cosine_hinge"``            ``max(0, cos theta_ij - cos thre)``   official trainer, ``--high_reg_loss angle``
``"abs_cosine"``              ``|cos theta_ij|`` (90 degrees only)  official trainer, ``--high_reg_loss cosine``
============================  ====================================  =====================================

The official trainer (``longzilicart/pip_universal``) defaults to ``cosine`` (``src/Main_trainer.py``)
but its training script ``src/train.sh`` passes ``angle``; both terms are defined in
``src/net/PIP.py`` (``Basic_prompt``), summed over the pairs and scaled by 0.01 there. Its values
are ``0.01 * directional_decoupled_loss(d, form="cosine_hinge", reduction="sum")`` for ``angle`` and
``0.02 * directional_decoupled_loss(d, form="abs_cosine", reduction="sum")`` for ``cosine`` (which
sums both off-diagonal triangles of the cosine matrix, so every pair twice). The PIP networks' own
training term (``ddl``, weight 0.002) is the paper's ``"angle_hinge"``, averaged over pairs.

``form="angle"`` is the same as ``"angle_hinge"`` (this library's name for it before the forms were
named; note that the official trainer's ``angle`` option is ``"cosine_hinge"``). ``form="cosine"``
is deprecated: it always meant ``"cosine_hinge"``, not the official ``cosine`` option.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import UsageError

__all__ = [
    "DEFAULT_DDL_ALPHA",
    "DirectionalDecoupledLoss",
    "collect_degradation_prompts",
    "directional_decoupled_loss",
]

#: Weight of the loss in PIP's total loss ``L1 + alpha * L_ddl`` (paper Eq. 10 and section 4.1).
DEFAULT_DDL_ALPHA: float = 0.002

Form = Literal["angle_hinge", "cosine_hinge", "abs_cosine", "angle", "cosine"]

_FORMS = ("angle_hinge", "cosine_hinge", "abs_cosine")


def _canonical_form(form: str, stacklevel: int) -> str:
    """The form's current name: ``"angle"`` is ``"angle_hinge"``; ``"cosine"`` (deprecated) ``"cosine_hinge"``."""
    if form == "angle":
        return "angle_hinge"
    if form == "cosine":
        warnings.warn(
            "directional_decoupled_loss(form='cosine') is deprecated: it computes the cosine hinge "
            "max(0, cos theta - cos theta_thre), which is the official PIP trainer's 'angle' option; pass "
            "form='cosine_hinge' for it, or form='abs_cosine' for the official 'cosine' option (|cos theta|)",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        return "cosine_hinge"
    if form not in _FORMS:
        raise UsageError(f"form must be one of {list(_FORMS)} (or 'angle', 'cosine'), got {form!r}")
    return form


def _acos_bounded_grad(c: torch.Tensor, min_sq: float) -> torch.Tensor:
    """``acos(c)`` with its exact value but a gradient bounded where ``|c| -> 1``.

    The derivative ``-1 / sqrt(1 - c^2)`` is evaluated with ``1 - c^2`` clamped to at least
    ``min_sq``, so (nearly) parallel prompts give large but finite gradients.
    """
    value = torch.acos(c.clamp(-1.0, 1.0))
    slope = -torch.rsqrt((1.0 - c.square()).clamp_min(min_sq))
    return value.detach() + (c - c.detach()) * slope.detach()


def _pairwise_cosines(prompts: torch.Tensor, eps: float) -> torch.Tensor:
    """Cosines ``d_i . d_j / max(|d_i| |d_j|, eps)`` of all pairs ``i < j`` (element-wise, not autocast)."""
    acc = torch.promote_types(prompts.dtype, torch.float32)
    d = prompts.reshape(prompts.shape[0], -1).to(acc)
    t = d.shape[0]
    i, j = torch.triu_indices(t, t, offset=1, device=d.device)
    dots = (d[i] * d[j]).sum(dim=-1)
    norms = torch.linalg.vector_norm(d, dim=-1)
    return dots / (norms[i] * norms[j]).clamp_min(eps)


def directional_decoupled_loss(
    prompts: torch.Tensor | Sequence[torch.Tensor],
    *,
    threshold: float = 90.0,
    form: Form = "angle_hinge",
    eps: float = 1e-8,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Directional decoupled loss (PIP paper, Eq. 4) on ``T`` degradation-aware prompts.

    With ``theta_ij`` the angle between prompts ``d_i`` and ``d_j``
    (``cos theta_ij = d_i . d_j / max(|d_i| |d_j|, eps)``), the term of a pair is

    - ``form="angle_hinge"`` (default; the paper's Eq. 4): ``max(0, theta_thre - theta_ij)``,
      angles in radians (``"angle"`` is the same);
    - ``form="cosine_hinge"`` (the official trainer's ``angle`` option):
      ``max(0, cos theta_ij - cos theta_thre)``;
    - ``form="abs_cosine"`` (the official trainer's default ``cosine`` option): ``|cos theta_ij|``,
      which also pushes obtuse pairs back to 90 degrees (``threshold`` must be 90);
    - ``form="cosine"``: deprecated name of ``"cosine_hinge"`` (a :class:`DeprecationWarning`).

    The terms are averaged over the ``T (T - 1) / 2`` pairs ``i < j`` (``reduction="mean"``,
    Eq. 4) or summed (``"sum"``). The official code sums and scales by 0.01, and its ``cosine``
    option counts every pair twice: see the module's description for its exact values. For a
    sequence of prompt tensors (one per PIP block) the per-tensor losses are summed, as
    the official code sums its levels. Computed in at least fp32 whatever the prompts'
    dtype and device, and outside autocast. The hinge forms are zero once all pairs are at least
    ``threshold`` degrees apart; the gradient stays finite for (nearly) parallel prompts.
    Weight it by :data:`DEFAULT_DDL_ALPHA` (0.002) in the total loss.

    Args:
        prompts: A ``(T, C)`` tensor (any ``(T, ...)`` shape is flattened per prompt), or a
            sequence of them.
        threshold: ``theta_thre`` in degrees (90 by default, i.e. pairwise orthogonality).
        form: ``"angle_hinge"``, ``"cosine_hinge"`` or ``"abs_cosine"`` (see above).
        eps: Lower bound of the product of norms in the cosine.
        reduction: ``"mean"`` or ``"sum"`` over pairs.

    Returns:
        A scalar tensor (``float32``, or ``float64`` for double prompts).

    Raises:
        ValueError: For fewer than two prompts, an empty sequence, or bad options (``"abs_cosine"``
            with a threshold other than 90 degrees).

    Shape:
        - prompts: :math:`(T, C)` or :math:`(T, *)`
        - output: scalar

    Examples:
        >>> directional_decoupled_loss(torch.eye(3))  # orthogonal prompts
        tensor(0.)
        >>> directional_decoupled_loss(torch.ones(2, 4))  # identical prompts: the threshold in radians
        tensor(1.5708)
        >>> d = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135 degrees apart
        >>> directional_decoupled_loss(d, form="cosine_hinge"), directional_decoupled_loss(d, form="abs_cosine")
        (tensor(0.), tensor(0.7071))
    """
    form = _canonical_form(form, stacklevel=2)
    if reduction not in ("mean", "sum"):
        raise UsageError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not 0.0 <= threshold <= 180.0:
        raise UsageError(f"threshold must be an angle in degrees in [0, 180], got {threshold}")
    if form == "abs_cosine" and threshold != 90.0:
        raise UsageError(
            f"form='abs_cosine' pushes every pair to 90 degrees; threshold must be 90, got {threshold}"
        )
    if isinstance(prompts, torch.Tensor):
        return _ddl_one(prompts, threshold, form, eps, reduction)
    tensors = list(prompts)
    if not tensors:
        raise UsageError("no prompts given; does the model contain PIP blocks?")
    total = _ddl_one(tensors[0], threshold, form, eps, reduction)
    for p in tensors[1:]:
        total = total + _ddl_one(p, threshold, form, eps, reduction).to(total.device)
    return total


def _ddl_one(prompts: torch.Tensor, threshold: float, form: str, eps: float, reduction: str) -> torch.Tensor:
    if prompts.ndim < 2 or prompts.shape[0] < 2:
        raise UsageError(f"need at least two prompts stacked as (T, C), got shape {tuple(prompts.shape)}")
    cos = _pairwise_cosines(prompts, eps)
    theta_thre = math.radians(threshold)
    if form == "angle_hinge":
        # bound on 1 - cos^2 for the gradient: about the resolution of the dtype near |cos| = 1
        min_sq = 4 * torch.finfo(cos.dtype).eps
        terms = (theta_thre - _acos_bounded_grad(cos, min_sq)).clamp_min(0.0)
    elif form == "cosine_hinge":
        terms = (cos - math.cos(theta_thre)).clamp_min(0.0)
    else:  # abs_cosine
        terms = cos.abs()
    return terms.mean() if reduction == "mean" else terms.sum()


def collect_degradation_prompts(model: nn.Module) -> list[torch.Tensor]:
    """The degradation-aware prompt tensors ``d`` (``(T, C)`` each) of every PIP block in ``model``.

    Finds every :class:`~allinone_ir.layers.PromptInPrompt` (one per skip connection) and takes
    its :attr:`~allinone_ir.layers.PromptInPrompt.degradation_prompts`, in ``named_modules()`` order. Works on
    wrapped models (DDP, ``torch.compile``) as well, since it walks the module tree.

    Args:
        model: A network containing PIP blocks.

    Returns:
        Views of the parameters (gradients flow back to them).

    Examples:
        >>> from allinone_ir.layers import PIPBlock
        >>> [tuple(p.shape) for p in collect_degradation_prompts(PIPBlock(16, 8, 4, 5, p2f_heads=2))]
        [(5, 8)]
    """
    from ..layers.pip import PromptInPrompt  # the layers do not depend on the losses

    return [m.degradation_prompts for m in model.modules() if isinstance(m, PromptInPrompt)]


class DirectionalDecoupledLoss(nn.Module):
    """Module form of :func:`directional_decoupled_loss`; also accepts a model and collects its prompts.

    Use as ``loss = restoration + ddl.alpha * ddl(model)``.

    Args:
        threshold: ``theta_thre`` in degrees.
        form: ``"angle_hinge"`` (paper Eq. 4, the default), ``"cosine_hinge"`` (the official trainer's
            ``angle`` option) or ``"abs_cosine"`` (its ``cosine`` option); see
            :func:`directional_decoupled_loss`.
        eps: Lower bound of the product of norms in the cosine.
        reduction: ``"mean"`` or ``"sum"`` over pairs.
        alpha: The weight the caller should give the loss (stored, not applied; 0.002 as in the paper).

    Shape:
        - input: a model, a :math:`(T, C)` tensor or a sequence of them
        - output: scalar

    Examples:
        >>> ddl = DirectionalDecoupledLoss()
        >>> float(ddl(torch.tensor([[1.0, 0.0], [1.0, 1.0]])))  # 45 degrees apart: pi/4 short of 90
        0.7853981852531433
    """

    def __init__(
        self,
        threshold: float = 90.0,
        *,
        form: Form = "angle_hinge",
        eps: float = 1e-8,
        reduction: Literal["mean", "sum"] = "mean",
        alpha: float = DEFAULT_DDL_ALPHA,
    ) -> None:
        super().__init__()
        self.threshold, self.form, self.eps, self.reduction, self.alpha = (
            threshold,
            _canonical_form(form, stacklevel=2),
            eps,
            reduction,
            alpha,
        )
        directional_decoupled_loss(
            torch.eye(2), threshold=threshold, form=self.form, reduction=reduction
        )  # checks

    def forward(self, prompts: nn.Module | torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(prompts, nn.Module):
            prompts = collect_degradation_prompts(prompts)
        return directional_decoupled_loss(
            prompts, threshold=self.threshold, form=self.form, eps=self.eps, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, form={self.form!r}, reduction={self.reduction!r}, alpha={self.alpha}"
