"""Staged fine-tuning: freeze a network, unfreeze named module groups, list what trains.

A second training stage that retrains only a few core modules of a trained network (the
refinement blocks, the first decoder level, the prompts ...) is::

    freeze(model)
    unfreeze(model, ["refinement", "output", "decoder_level1", "prompt*"])
    print(format_groups(model))

Each model family names its useful selections in ``finetune_groups`` (see
:func:`finetune_groups`), and those names are accepted wherever module names are:
``unfreeze(model, ["stage2"])`` for PromptIR's second stage, ``["prompts"]`` for the prompt
modules of PromptIR and the PIP networks, ``["decoder"]`` ... This module names no family.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from ..errors import UsageError
from ..models.promptir import PromptIR

__all__ = ["finetune_groups", "freeze", "module_groups", "unfreeze"]

#: PromptIR's ``stage2`` selection (``PromptIR.finetune_groups["stage2"]``), kept under its old name:
#: the output end of the network (refinement, output conv, first decoder level and its prompt interaction).
PROMPTIR_STAGE2_GROUPS: tuple[str, ...] = tuple(PromptIR.finetune_groups["stage2"])


def finetune_groups(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """The named selections of module groups that the network's family declares for fine-tuning.

    :func:`freeze` and :func:`unfreeze` accept these names next to module names and patterns.

    Args:
        model: A network (its class's ``finetune_groups``; none for other modules).

    Returns:
        ``{name: (pattern, ...)}``, e.g. ``{"encoder": (...), "decoder": (...), "prompts": (...), "stage2": (...)}``
        for PromptIR.

    Examples:
        >>> from allinone_ir.models import NAFNet
        >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> finetune_groups(net)["decoder"]
        ('ups', 'decoders', 'ending')
    """
    declared = getattr(type(model), "finetune_groups", None) or {}
    return {str(k): tuple(v) for k, v in declared.items()}


def module_groups(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Top-level module groups with ``(trainable, total)`` parameter counts.

    Parameters registered directly on the model appear under their own names.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> module_groups(net)
        {'0': (6, 6), '1': (3, 3)}
    """
    groups: dict[str, tuple[int, int]] = {}
    for name, p in model.named_parameters():
        g = name.split(".", 1)[0]
        t, n = groups.get(g, (0, 0))
        groups[g] = (t + (p.numel() if p.requires_grad else 0), n + p.numel())
    return groups


def _select(model: nn.Module, patterns: Iterable[str]) -> list[nn.Parameter]:
    declared = finetune_groups(model)
    patterns = [p for pat in patterns for p in declared.get(pat, (pat,))]
    names = [n for n, _ in model.named_parameters()]
    chosen: dict[str, nn.Parameter] = {}
    params = dict(model.named_parameters())
    unknown = []
    for pat in patterns:
        hits = [n for n in names if n == pat or n.startswith(pat + ".") or fnmatch.fnmatchcase(n.split(".", 1)[0], pat)
                or fnmatch.fnmatchcase(n, pat)]  # fmt: skip
        if not hits:
            unknown.append(pat)
        chosen.update((n, params[n]) for n in hits)
    if unknown:
        named = f" and the named groups {sorted(declared)}" if declared else ""
        raise UsageError(
            f"no parameters match {unknown}; module groups are {sorted(module_groups(model))}{named}"
        )
    return list(chosen.values())


def freeze(model: nn.Module, groups: Iterable[str] | None = None) -> int:
    """Stop gradients for ``groups`` (``None``: everything).

    ``groups`` are top-level module names, dotted prefixes, glob patterns or the names of the
    family's :func:`finetune_groups` (e.g. ``"prompts"``).

    Returns:
        The number of parameters frozen.

    Raises:
        ValueError: If a name matches nothing (the message lists the groups).
    """
    params = list(model.parameters()) if groups is None else _select(model, groups)
    for p in params:
        p.requires_grad_(False)
    return sum(p.numel() for p in params)


def unfreeze(model: nn.Module, groups: Iterable[str] | None = None) -> int:
    """Let gradients flow again for ``groups`` (as for :func:`freeze`; ``None``: everything).

    Returns:
        The number of parameters made trainable.

    Raises:
        ValueError: If a name matches nothing (the message lists the groups).

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = freeze(net)
        >>> unfreeze(net, ["1"])
        3
    """
    params = list(model.parameters()) if groups is None else _select(model, groups)
    for p in params:
        p.requires_grad_(True)
    return sum(p.numel() for p in params)


def format_groups(model: nn.Module) -> str:
    """A table of module groups with trainable / total parameters, and the totals."""
    groups = module_groups(model)
    width = max([len(g) for g in groups] + [5])
    lines = [f"{'group':<{width}}  {'trainable':>12}  {'total':>12}"]
    for g, (t, n) in groups.items():
        lines.append(f"{g:<{width}}  {t:>12,}  {n:>12,}")
    tt = sum(t for t, _ in groups.values())
    nn_ = sum(n for _, n in groups.values())
    lines.append(f"{'TOTAL':<{width}}  {tt:>12,}  {nn_:>12,}")
    return "\n".join(lines)
