"""Readers of hyper-parameters from state-dict keys and tensor shapes, for the families' ``detect``.

A family's :meth:`~allinone_ir.models.RestorationModel.detect` reads its constructor arguments
from a checkpoint with these: block counts from the largest block index, attention heads from
the ``temperature`` shapes, the feed-forward expansion factor from the hidden widths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from ..errors import CheckpointError

__all__ = ["attention_heads", "count_blocks", "ffn_expansion_factor"]


def count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of blocks ``prefix.<i>.`` in a state dict (1 + the largest index; 0 if none).

    Args:
        state_dict: Weights.
        prefix: Dotted module name of the container, e.g. ``"encoder_level1"`` or ``"encoders.0"``.

    Examples:
        >>> count_blocks({"latent.0.w": torch.zeros(1), "latent.3.w": torch.zeros(1)}, "latent")
        4
    """
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    idx = [int(m.group(1)) for k in state_dict if (m := pat.match(k))]
    return max(idx) + 1 if idx else 0


def attention_heads(state_dict: Mapping[str, torch.Tensor], names: Sequence[str], default: int) -> int:
    """Heads of the first attention found under ``names`` (its ``attn.temperature`` has shape ``(heads, 1, 1)``).

    Args:
        state_dict: Weights.
        names: Modules to look in, in order: a stage (``name.0.attn.temperature``) or a block
            (``name.attn.temperature``).
        default: The answer when none of them has an attention (e.g. a level with no blocks).

    Examples:
        >>> attention_heads({"latent.0.attn.temperature": torch.ones(8, 1, 1)}, ["latent"], 1)
        8
    """
    for name in names:
        t = state_dict.get(f"{name}.0.attn.temperature", state_dict.get(f"{name}.attn.temperature"))
        if t is not None:
            return int(t.shape[0])
    return default


def ffn_expansion_factor(state_dict: Mapping[str, torch.Tensor], default: float = 2.66) -> float:
    """The GDFN width factor ``f`` with ``int(channels * f) == hidden`` for every ``ffn.project_out``.

    Args:
        state_dict: Weights.
        default: The answer when the state dict has no feed-forward block.

    Raises:
        CheckpointError: If no factor fits every block.

    Examples:
        >>> ffn_expansion_factor({"b.ffn.project_out.weight": torch.zeros(48, 127, 1, 1)})
        2.66
    """
    pairs = [
        (int(v.shape[0]), int(v.shape[1]))
        for k, v in state_dict.items()
        if k.endswith("ffn.project_out.weight")
    ]
    if not pairs:
        return default
    c0, h0 = pairs[0]
    for f in (2.66, 2.0, 4.0, 3.0, 1.0, h0 / c0, (h0 + 0.5) / c0):
        if all(int(c * f) == h for c, h in pairs):
            return f
    raise CheckpointError(
        f"cannot find a feed-forward expansion factor matching the hidden sizes {pairs[:4]}"
    )
