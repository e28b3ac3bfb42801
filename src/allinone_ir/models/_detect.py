"""Readers of hyper-parameters from state-dict keys and tensor shapes, for the families' ``detect``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from ..errors import CheckpointError


def count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of blocks ``prefix.<i>.`` in a state dict (1 + the largest index; 0 if none)."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    idx = [int(m.group(1)) for k in state_dict if (m := pat.match(k))]
    return max(idx) + 1 if idx else 0


def attention_heads(state_dict: Mapping[str, torch.Tensor], names: Sequence[str], default: int) -> int:
    """Heads of the attentions (``attn.temperature``) of ``names``; a ``CheckpointError`` names odd tensors."""
    pats = [re.compile(re.escape(name) + r"(\.\d+)?\.attn\.temperature$") for name in names]
    found = {k: int(v.shape[0]) for k, v in state_dict.items() if any(p.match(k) for p in pats)}
    if not found:
        return default
    (value, n), *rest = Counter(found.values()).most_common()
    if not rest:
        return value
    if n > len(found) - n:  # a clear majority: the others are wrong
        odd = [k for k, v in found.items() if v != value]
        raise CheckpointError(
            ", ".join(
                f"key {k} has shape {tuple(state_dict[k].shape)}, expected ({value}, 1, 1)" for k in odd[:4]
            )
            + f" (the other {n} tensors agree on attention heads = {value}); the file is corrupt or was edited"
        )
    shown = ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in list(found)[:6])
    raise CheckpointError(
        f"the tensors disagree on attention heads: {shown}; the file is corrupt or was edited"
    )


def ffn_expansion_factor(state_dict: Mapping[str, torch.Tensor], default: float = 2.66) -> float:
    """The GDFN factor ``f``, ``int(channels * f) == hidden`` for every ``ffn.project_out``; else ``CheckpointError``."""
    pairs = {
        k: (int(v.shape[0]), int(v.shape[1]))
        for k, v in state_dict.items()
        if k.endswith("ffn.project_out.weight")
    }
    if not pairs:
        return default
    c0, h0 = next(iter(pairs.values()))
    factors = (2.66, 2.0, 4.0, 3.0, 1.0, h0 / c0, (h0 + 0.5) / c0)
    for f in factors:
        if all(int(c * f) == h for c, h in pairs.values()):
            return f
    # the factor most blocks fit: the blocks that do not are the odd ones
    candidates = [*factors, *(x / c for c, h in pairs.values() if c for x in (h, h + 0.5))]
    best = max(candidates, key=lambda f: sum(int(c * f) == h for c, h in pairs.values()))  # first max wins
    odd = [k for k, (c, h) in pairs.items() if int(c * best) != h]
    if len(odd) < len(pairs) - len(odd):
        shown = ", ".join(f"key {k} has shape {tuple(state_dict[k].shape)}" for k in odd[:4])
        raise CheckpointError(
            f"{shown}, which does not fit the feed-forward expansion factor {best:g} of the other "
            f"{len(pairs) - len(odd)} blocks (hidden = int(channels * factor)); the file is corrupt or was edited"
        )
    raise CheckpointError(
        f"cannot find a feed-forward expansion factor matching the hidden sizes {list(pairs.values())[:4]}"
    )
