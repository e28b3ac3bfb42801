"""Staged fine-tuning: ``freeze(model); unfreeze(model, ["refinement", "output", "prompt*"])``.

Groups are top-level modules, dotted prefixes, globs, or the selections a family declares (:func:`finetune_groups`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from ..errors import UsageError
from ..models.promptir import PromptIR

__all__ = ["finetune_groups", "freeze", "module_groups", "unfreeze"]

#: PromptIR's ``stage2`` selection: the output end of the network.
PROMPTIR_STAGE2_GROUPS: tuple[str, ...] = tuple(PromptIR.finetune_groups["stage2"])


def finetune_groups(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """The named selections of module groups (``{name: (pattern, ...)}``) the network's family declares.

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

    Examples:
        >>> module_groups(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)))
        {'0': (6, 6), '1': (3, 3)}
    """
    groups: dict[str, tuple[int, int]] = {}
    for name, p in model.named_parameters():
        g = name.split(".", 1)[0]
        t, n = groups.get(g, (0, 0))
        groups[g] = (t + (p.numel() if p.requires_grad else 0), n + p.numel())
    return groups


def _set_trainable(model: nn.Module, groups: Iterable[str] | None, flag: bool) -> int:
    """Set ``requires_grad`` of the parameters ``groups`` match (``None``: all); returns their number."""
    params = dict(model.named_parameters())
    declared = finetune_groups(model)
    chosen = params if groups is None else {}
    unknown = []
    for pat in [p for g in groups or () for p in declared.get(g, (g,))]:
        # a name, a dotted prefix, or a glob of either
        hits = [n for n in params if fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n, f"{pat}.*")]
        if not hits:
            unknown.append(pat)
        chosen.update((n, params[n]) for n in hits)
    if unknown:
        named = f" and the named groups {sorted(declared)}" if declared else ""
        raise UsageError(
            f"no parameters match {unknown}; module groups are {sorted(module_groups(model))}{named}"
        )
    for p in chosen.values():
        p.requires_grad_(flag)
    return sum(p.numel() for p in chosen.values())


def freeze(model: nn.Module, groups: Iterable[str] | None = None) -> int:
    """Stop gradients for ``groups`` (``None``: all); returns the number of parameters frozen.

    Raises:
        UsageError: If a name matches nothing (the message lists the groups).
    """
    return _set_trainable(model, groups, False)


def unfreeze(model: nn.Module, groups: Iterable[str] | None = None) -> int:
    """Let gradients flow again for ``groups`` (as for :func:`freeze`); returns the number of parameters.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = freeze(net)
        >>> unfreeze(net, ["1"])
        3
    """
    return _set_trainable(model, groups, True)
