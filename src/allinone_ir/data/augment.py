"""Paired crops, flips and rotations; channel shuffle, CutBlur, Mixup, D-Mix of batch dicts (a new one back)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .degradations import Rng, make_generator

__all__ = ["BatchAugment", "cutblur", "dmix", "mixup", "paired_random_crop"]

#: Number of geometric modes: identity, flips and 90-degree rotations.
AUGMENT_MODES = 8


def augment_mode(x: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode ``m`` of PromptIR's ``data_augmentation`` on ``(*, H, W)``: ``m // 2`` quarter turns, then a
    vertical flip if odd."""
    mode = int(mode)
    if not 0 <= mode < AUGMENT_MODES:
        raise UsageError(f"augment mode must be in 0..7, got {mode}")
    x = torch.rot90(x, k=mode // 2, dims=(-2, -1)) if mode // 2 else x
    return torch.flip(x, dims=(-2,)) if mode % 2 else x


def paired_random_crop(
    images: Sequence[torch.Tensor], size: int | tuple[int, int], *, rng: Rng = None, names: Sequence[str] = ()
) -> list[torch.Tensor]:
    """The same random crop of every image (all of one size); ``size`` is a side or ``(height, width)``.

    Raises:
        UsageError: If the sizes differ, an image is smaller than the crop (naming ``names``) or ``size`` is
            not positive.

    Examples:
        >>> a = torch.rand(3, 10, 12)
        >>> c1, c2 = paired_random_crop([a, a.clone()], 4, rng=0)
        >>> c1.shape, torch.equal(c1, c2)
        (torch.Size([3, 4, 4]), True)
    """
    sides = (size, size) if isinstance(size, (int, np.integer)) else size
    if (
        not isinstance(sides, (tuple, list))
        or len(sides) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sides)
    ):
        raise UsageError(f"crop size must be a positive int or (height, width), got {size!r}")
    if not images:
        raise UsageError("paired_random_crop: no images given")
    ch, cw = int(sides[0]), int(sides[1])
    h, w = images[0].shape[-2:]
    label = f" ({', '.join(map(str, names))})" if names else ""
    if any(im.shape[-2:] != (h, w) for im in images):
        raise UsageError(f"paired images differ in size{label}: {[tuple(i.shape[-2:]) for i in images]}")
    if h < ch or w < cw:
        raise UsageError(f"image of size {h}x{w} is smaller than the {ch}x{cw} crop{label}")
    g = make_generator(rng)
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    return [im[..., top : top + ch, left : left + cw] for im in images]


def _mixed_labels(labels: Any, num_classes: int, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam`` of each label's weights ``(N, T)`` (one-hot from integers) plus ``1 - lam`` of ``perm``'s."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 0 or labels.shape[0] != len(perm):
        raise UsageError(
            f"labels of shape {tuple(labels.shape)} for {len(perm)} images; expected one per image"
        )
    if labels.ndim == 1 and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"labels must be in [0, {num_classes}), got {labels.tolist()}")
    w = F.one_hot(labels.long(), num_classes).float() if labels.ndim == 1 else labels.float()
    if w.ndim != 2 or w.shape[1] != num_classes:
        raise UsageError(f"labels must be (N,) integers or (N, {num_classes}) weights, got {tuple(w.shape)}")
    return lam * w + (1 - lam) * w[perm]


_PAIR = ("degraded", "clean")


def _generator(batch: dict[str, Any], name: str, rng: Rng) -> torch.Generator | None:
    """The generator of ``rng``, once the batch's pairs are checked."""
    for key in _PAIR:
        t = batch.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise UsageError(f"{name}: batch[{key!r}] must be an (N, C, H, W) tensor")
    if batch["degraded"].shape != batch["clean"].shape:
        raise UsageError(f"{name}: degraded and clean batches differ in shape")
    return make_generator(rng)


def channel_shuffle(batch: dict[str, Any], *, rng: Rng = None) -> dict[str, Any]:
    """Permute the colour channels of each pair at random, alike in its degraded and clean image."""
    g = _generator(batch, "channel_shuffle", rng)
    n, c = batch["clean"].shape[:2]
    order = torch.stack([torch.randperm(c, generator=g) for _ in range(n)]).view(n, c, 1, 1)
    return {
        **batch,
        **{k: torch.gather(batch[k], 1, order.to(batch[k].device).expand_as(batch[k])) for k in _PAIR},
    }


def mixup(
    batch: dict[str, Any], *, alpha: float = 1.2, num_classes: int | None = None, rng: Rng = None
) -> dict[str, Any]:
    """Mixup of pairs (Restormer's ``Mixing_Augment``): blend each with a shuffled one by ``lam ~ Beta(alpha, alpha)``.

    With ``num_classes`` the labels become mixed weights ``(N, T)``.

    Examples:
        >>> b = {"degraded": torch.zeros(2, 3, 4, 4), "clean": torch.ones(2, 3, 4, 4)}
        >>> torch.equal(mixup(b, rng=0)["clean"], b["clean"])  # clean images are all ones
        True
    """
    g = _generator(batch, "mixup", rng)
    if not alpha > 0:
        raise UsageError(f"mixup: alpha must be positive, got {alpha}")
    # Beta drawn reproducibly: numpy's sampler seeded from the torch generator
    lam = float(np.random.default_rng(int(torch.randint(2**62, (), generator=g))).beta(alpha, alpha))
    perm = torch.randperm(batch["degraded"].shape[0], generator=g)
    out = {**batch, **{k: lam * batch[k] + (1 - lam) * batch[k][perm.to(batch[k].device)] for k in _PAIR}}
    if num_classes is not None and "label" in batch:
        out["label"] = _mixed_labels(batch["label"], num_classes, perm, lam)
    return out


def cutblur(batch: dict[str, Any], *, alpha: float = 0.7, rng: Rng = None) -> dict[str, Any]:
    """CutBlur (Yoo et al., 2020): paste a box of sides ``ratio * (H, W)``, ``ratio ~ N(alpha, 0.01)`` in
    [0.1, 1], of the clean image into the degraded one, or the reverse.

    Examples:
        >>> b = {"degraded": torch.zeros(1, 3, 8, 8), "clean": torch.ones(1, 3, 8, 8)}
        >>> 0 < float(cutblur(b, rng=0)["degraded"].mean()) < 1
        True
    """
    g = _generator(batch, "cutblur", rng)
    deg, clean = batch["degraded"], batch["clean"]
    h, w = deg.shape[-2:]
    ratio = min(max(alpha + 0.01 * float(torch.randn((), generator=g)), 0.1), 1.0)
    ch, cw = max(int(h * ratio), 1), max(int(w * ratio), 1)
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    base, patch = (deg, clean) if bool(torch.rand((), generator=g) < 0.5) else (clean, deg)
    new = base.clone()
    new[..., top : top + ch, left : left + cw] = patch[..., top : top + ch, left : left + cw]
    return {**batch, "degraded": new}


def dmix(batch: dict[str, Any], *, num_classes: int, rng: Rng = None) -> dict[str, Any]:
    """Degradation-Mix (PIP, supplementary Sec. B): shuffle the second halves (of the height or the width) across
    the batch; each label becomes the mean of its halves' labels, weights ``(N, num_classes)``.

    Examples:
        >>> b = {"degraded": torch.rand(2, 3, 4, 4), "clean": torch.rand(2, 3, 4, 4), "label": torch.tensor([0, 1])}
        >>> dmix(b, num_classes=2, rng=0)["label"].sum(dim=1).tolist()
        [1.0, 1.0]
    """
    g = _generator(batch, "dmix", rng)
    if "label" not in batch:
        raise UsageError("dmix needs batch['label'] (degradation labels) to mix")
    perm = torch.randperm(batch["degraded"].shape[0], generator=g)
    dim = -2 if bool(torch.rand((), generator=g) < 0.5) else -1
    out = dict(batch)
    for key in _PAIR:
        t = batch[key].clone()
        half, size = t.shape[dim] // 2, t.shape[dim]
        t.narrow(dim, half, size - half).copy_(batch[key][perm.to(t.device)].narrow(dim, half, size - half))
        out[key] = t
    out["label"] = _mixed_labels(batch["label"], num_classes, perm, 0.5)
    return out


class BatchAugment:
    """Apply :func:`cutblur`, :func:`mixup` or :func:`dmix` with these probabilities (a trainer hook).

    ``num_classes`` (needed by ``dmix``) mixes the labels; ``seed`` seeds the augmentation's own generator.

    Examples:
        >>> aug = BatchAugment(dmix=1.0, num_classes=3, seed=0)
        >>> b = {"degraded": torch.rand(2, 3, 4, 4), "clean": torch.rand(2, 3, 4, 4), "label": torch.tensor([0, 2])}
        >>> aug(b)["label"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        *,
        cutblur: float = 0.0,
        mixup: float = 0.0,
        dmix: float = 0.0,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        probs = {"cutblur": cutblur, "mixup": mixup, "dmix": dmix}
        for k, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise UsageError(f"BatchAugment: probability {k} must be in [0, 1], got {p}")
        if sum(probs.values()) > 1.0 + 1e-9:
            raise UsageError(f"BatchAugment: probabilities sum to more than 1: {probs}")
        if dmix > 0 and num_classes is None:
            raise UsageError("BatchAugment: dmix needs num_classes")
        self.probs, self.num_classes = probs, num_classes
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        u = float(torch.rand((), generator=self.generator))
        augments: list[Callable[..., dict[str, Any]]] = [cutblur, mixup, dmix]
        for augment, edge in zip(augments, itertools.accumulate(self.probs.values())):
            if u < edge:
                labels: dict[str, Any] = {} if augment is cutblur else {"num_classes": self.num_classes}
                return augment(batch, rng=self.generator, **labels)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The generator state (checkpointed: a resumed run continues identically)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if "generator" in state:
            self.generator.set_state(state["generator"])
