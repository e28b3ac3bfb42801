"""PIP's directional decoupled loss: keep the degradation-aware prompts pointing in different directions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from ..errors import UsageError

__all__ = [
    "DEFAULT_DDL_ALPHA",
    "DirectionalDecoupledLoss",
    "collect_degradation_prompts",
    "directional_decoupled_loss",
]

#: Weight of the loss in PIP's total loss ``L1 + alpha * L_ddl`` (paper Eq. 10).
DEFAULT_DDL_ALPHA: float = 0.002

Form = Literal["angle_hinge", "cosine_hinge", "abs_cosine"]
Reduction = Literal["mean", "sum"]


def _acos_bounded_grad(c: torch.Tensor, min_sq: float) -> torch.Tensor:
    """``acos(c)`` with its exact value but a gradient bounded (``1 - c^2 >= min_sq``) where ``|c| -> 1``."""
    value = torch.acos(c.clamp(-1.0, 1.0))
    slope = -torch.rsqrt((1.0 - c.square()).clamp_min(min_sq))
    return value.detach() + (c - c.detach()) * slope.detach()


def _check_options(threshold: float, form: str, reduction: str) -> None:
    if form not in get_args(Form):
        raise UsageError(f"form must be one of {list(get_args(Form))}, got {form!r}")
    if reduction not in get_args(Reduction):
        raise UsageError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not 0.0 <= threshold <= 180.0:
        raise UsageError(f"threshold must be an angle in degrees in [0, 180], got {threshold}")
    if form == "abs_cosine" and threshold != 90.0:
        raise UsageError(f"form='abs_cosine' aims at 90 degrees: threshold must be 90, got {threshold}")


def directional_decoupled_loss(
    prompts: torch.Tensor | Sequence[torch.Tensor],
    *,
    threshold: float = 90.0,
    form: Form = "angle_hinge",
    eps: float = 1e-8,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Directional decoupled loss (PIP paper, Eq. 4) on ``T`` degradation-aware prompts, in at least float32.

    The official trainer's ``--high_reg_loss angle`` is ``0.01 * directional_decoupled_loss(d, form="cosine_hinge",
    reduction="sum")``, its ``cosine`` ``0.02 * ...(d, form="abs_cosine", reduction="sum")``.

    Args:
        prompts: A ``(T, ...)`` tensor (flattened per prompt), or a sequence of them (their losses summed).
        threshold: ``theta_thre`` in degrees.
        form: The cost of a pair ``i < j`` at angle ``theta``: ``max(0, theta_thre - theta)`` in radians
            (``"angle_hinge"``), ``max(0, cos theta - cos theta_thre)`` or ``|cos theta|`` (threshold 90 only).
        eps: Lower bound of the product of norms in the cosine.
        reduction: Over the pairs.

    Raises:
        UsageError: For fewer than two prompts, no prompts, or bad options.

    Shape:
        - prompts: :math:`(T, *)`
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
    _check_options(threshold, form, reduction)
    tensors = [prompts] if isinstance(prompts, torch.Tensor) else list(prompts)
    if not tensors:
        raise UsageError("no prompts given; does the model contain PIP blocks?")
    losses = [_ddl_one(p, threshold, form, eps, reduction) for p in tensors]
    return sum((t.to(losses[0].device) for t in losses[1:]), losses[0])


def _ddl_one(prompts: torch.Tensor, threshold: float, form: str, eps: float, reduction: str) -> torch.Tensor:
    if prompts.ndim < 2 or prompts.shape[0] < 2:
        raise UsageError(f"need at least two prompts stacked as (T, C), got shape {tuple(prompts.shape)}")
    d = prompts.reshape(prompts.shape[0], -1).to(torch.promote_types(prompts.dtype, torch.float32))
    i, j = torch.triu_indices(d.shape[0], d.shape[0], offset=1, device=d.device)
    norms = torch.linalg.vector_norm(d, dim=-1)
    cos = (d[i] * d[j]).sum(dim=-1) / (norms[i] * norms[j]).clamp_min(eps)
    theta_thre = math.radians(threshold)
    if form == "angle_hinge":
        terms = (theta_thre - _acos_bounded_grad(cos, 4 * torch.finfo(cos.dtype).eps)).clamp_min(0.0)
    elif form == "cosine_hinge":
        terms = (cos - math.cos(theta_thre)).clamp_min(0.0)
    else:
        terms = cos.abs()
    return terms.mean() if reduction == "mean" else terms.sum()


def collect_degradation_prompts(model: nn.Module) -> list[torch.Tensor]:
    """The ``degradation_prompts`` tensors ``(T, C)`` of the modules of ``model``, in module order.

    Examples:
        >>> from allinone_ir.models.pip import PIPBlock
        >>> [tuple(p.shape) for p in collect_degradation_prompts(PIPBlock(16, 8, 4, 5, p2f_heads=2))]
        [(5, 8)]
    """
    prompts = [getattr(m, "degradation_prompts", None) for m in model.modules()]
    return [p for p in prompts if isinstance(p, torch.Tensor)]


class DirectionalDecoupledLoss(nn.Module):
    """Module form of :func:`directional_decoupled_loss` (same options), also taking a model's prompts.

    ``alpha`` is the weight the caller should give the loss (stored, not applied).

    Shape:
        - input: a model, a :math:`(T, C)` tensor or a sequence of them
        - output: scalar

    Examples:
        >>> float(DirectionalDecoupledLoss()(torch.tensor([[1.0, 0.0], [1.0, 1.0]])))  # 45 degrees: pi/4
        0.7853981852531433
    """

    def __init__(
        self,
        threshold: float = 90.0,
        *,
        form: Form = "angle_hinge",
        eps: float = 1e-8,
        reduction: Reduction = "mean",
        alpha: float = DEFAULT_DDL_ALPHA,
    ) -> None:
        super().__init__()
        _check_options(threshold, form, reduction)
        self.options: dict[str, Any] = dict(threshold=threshold, form=form, eps=eps, reduction=reduction)
        self.alpha = alpha

    def forward(self, prompts: nn.Module | torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(prompts, nn.Module):
            prompts = collect_degradation_prompts(prompts)
        return directional_decoupled_loss(prompts, **self.options)
