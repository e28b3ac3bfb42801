"""Paired augmentations: identical crops / flips / rotations, CutBlur, Mixup and Degradation-Mix.

Per-sample transforms (:func:`paired_random_crop`, :func:`augment_mode`,
:func:`paired_random_augment`) work on ``(C, H, W)`` tensors and apply the same
geometry to the degraded and the clean image. Batch augmentations (:func:`cutblur`,
:func:`mixup`, :func:`dmix`, :func:`channel_shuffle`, and :class:`BatchAugment` that picks among the
first three) work on
a batch dict ``{"degraded", "clean", "label", ...}`` and may replace integer labels by
soft degradation weights ``(N, T)``, which PIP networks accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .degradations import Rng, make_generator

__all__ = ["BatchAugment", "cutblur", "dmix", "mixup", "paired_random_crop"]

#: Number of geometric modes: identity, flips and 90-degree rotations (the dihedral group of the square).
AUGMENT_MODES = 8


def augment_mode(x: torch.Tensor, mode: int) -> torch.Tensor:
    """One of the 8 flip / rot90 combinations, as the official PromptIR ``data_augmentation``.

    Modes: 0 identity, 1 vertical flip, 2 rot90, 3 rot90 + vertical flip, 4 rot180,
    5 rot180 + vertical flip, 6 rot270, 7 rot270 + vertical flip (rotations counter-clockwise).

    Args:
        x: Image(s); the last two dimensions are rotated / flipped.
        mode: 0 to 7.

    Returns:
        The transformed tensor.

    Shape:
        - x: :math:`(*, H, W)` -> :math:`(*, H, W)` or :math:`(*, W, H)`

    Examples:
        >>> x = torch.arange(4.0).view(1, 2, 2)
        >>> augment_mode(x, 1).tolist()
        [[[2.0, 3.0], [0.0, 1.0]]]
    """
    if not 0 <= int(mode) < AUGMENT_MODES:
        raise UsageError(f"augment mode must be in 0..7, got {mode}")
    mode = int(mode)
    x = torch.rot90(x, k=mode // 2, dims=(-2, -1)) if mode // 2 else x
    return torch.flip(x, dims=(-2,)) if mode % 2 else x


def paired_random_crop(
    images: Sequence[torch.Tensor], size: int | tuple[int, int], *, rng: Rng = None, names: Sequence[str] = ()
) -> list[torch.Tensor]:
    """The same random ``size`` crop of every image (all must have equal ``H, W``).

    Args:
        images: ``(C, H, W)`` tensors of one size (degraded, clean, ...).
        size: Crop side or ``(height, width)``.
        rng: Seed or generator.
        names: File names for the error messages.

    Returns:
        The crops, in the same order.

    Raises:
        ValueError: If the sizes differ or an image is smaller than the crop (naming the files).

    Examples:
        >>> a = torch.rand(3, 10, 12)
        >>> c1, c2 = paired_random_crop([a, a.clone()], 4, rng=0)
        >>> c1.shape, torch.equal(c1, c2)
        (torch.Size([3, 4, 4]), True)
    """
    ch, cw = (size, size) if isinstance(size, int) else size
    h, w = images[0].shape[-2:]
    label = f" ({', '.join(map(str, names))})" if names else ""
    for im in images[1:]:
        if im.shape[-2:] != (h, w):
            raise UsageError(f"paired images differ in size{label}: {[tuple(i.shape[-2:]) for i in images]}")
    if h < ch or w < cw:
        raise UsageError(f"image of size {h}x{w} is smaller than the {ch}x{cw} crop{label}")
    g = make_generator(rng)
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    return [im[..., top : top + ch, left : left + cw] for im in images]


def paired_random_augment(
    images: Sequence[torch.Tensor], *, modes: Sequence[int] = tuple(range(AUGMENT_MODES)), rng: Rng = None
) -> list[torch.Tensor]:
    """Apply one random mode from ``modes`` (see :func:`augment_mode`) identically to every image.

    ``modes=range(1, 8)`` is the official PromptIR choice (always one of the 7 non-identity
    modes); ``(0, 1)`` flips only.

    Examples:
        >>> a = torch.rand(3, 4, 4)
        >>> x, y = paired_random_augment([a, a.clone()], rng=1)
        >>> torch.equal(x, y)
        True
    """
    modes = tuple(modes)
    if not modes:
        raise UsageError("modes must not be empty")
    g = make_generator(rng)
    mode = modes[int(torch.randint(len(modes), (), generator=g))]
    return [augment_mode(im, mode) for im in images]


def label_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels ``(N,)`` -> one-hot float weights ``(N, T)``; weights ``(N, T)`` pass through.

    Examples:
        >>> label_weights(torch.tensor([1, 0]), 3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    """
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise UsageError(f"label weights have {labels.shape[1]} classes, expected {num_classes}")
        return labels.float()
    if labels.ndim != 1:
        raise UsageError(f"labels must be (N,) integers or (N, T) weights, got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"labels must be in [0, {num_classes}), got {labels.tolist()}")
    return F.one_hot(labels.long(), num_classes).float()


def _check_batch(batch: dict[str, Any], name: str) -> None:
    for key in ("degraded", "clean"):
        t = batch.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise UsageError(f"{name}: batch[{key!r}] must be an (N, C, H, W) tensor")
    if batch["degraded"].shape != batch["clean"].shape:
        raise UsageError(f"{name}: degraded and clean batches differ in shape")


def channel_shuffle(batch: dict[str, Any], *, rng: Rng = None) -> dict[str, Any]:
    """Permute the colour channels of every pair at random, identically for its degraded and clean image.

    With few training photographs a network learns their colours as a prior (e.g. "hazy and warm
    means the warm coffee photo") and casts them onto new images; shuffling the channels removes
    that shortcut. It is exact for degradations that treat the channels alike (every synthetic one
    of :mod:`~allinone_ir.data.degradations`: per-channel i.i.d. noise, grey rain, snow and
    airlight, blur, low light), so degrading then shuffling equals shuffling then degrading.
    Not for real paired data whose degradation has a colour (e.g. a tinted haze).

    Args:
        batch: Dict with ``degraded`` and ``clean`` ``(N, C, H, W)`` batches.
        rng: Seed or generator (pass one generator for a new draw on every call).

    Returns:
        A new batch dict (the input is not modified); other keys are kept as they are.

    Examples:
        >>> b = {"degraded": torch.arange(3.0).view(1, 3, 1, 1), "clean": torch.arange(3.0).view(1, 3, 1, 1)}
        >>> out = channel_shuffle(b, rng=1)
        >>> sorted(out["clean"].flatten().tolist()), torch.equal(out["degraded"], out["clean"])
        ([0.0, 1.0, 2.0], True)
    """
    _check_batch(batch, "channel_shuffle")
    g = make_generator(rng)
    n, c = batch["clean"].shape[:2]
    order = torch.stack([torch.randperm(c, generator=g) for _ in range(n)])
    out = dict(batch)
    for key in ("degraded", "clean"):
        t = batch[key]
        index = order.to(t.device).view(n, c, 1, 1).expand_as(t)
        out[key] = torch.gather(t, 1, index)
    return out


def mixup(
    batch: dict[str, Any], *, alpha: float = 1.2, num_classes: int | None = None, rng: Rng = None
) -> dict[str, Any]:
    """Mixup of restoration pairs (Restormer's ``Mixing_Augment``): blend each pair with a shuffled one.

    ``lam ~ Beta(alpha, alpha)``; degraded and clean images are blended with the same
    ``lam`` and permutation. With ``num_classes`` the labels become mixed weights ``(N, T)``.

    Args:
        batch: Dict with ``degraded``, ``clean`` (and ``label``) batches.
        alpha: Beta distribution parameter.
        num_classes: Number of degradation classes, to mix the labels.
        rng: Seed or generator.

    Returns:
        A new batch dict (the input is not modified).

    Examples:
        >>> b = {"degraded": torch.zeros(2, 3, 4, 4), "clean": torch.ones(2, 3, 4, 4)}
        >>> torch.equal(mixup(b, rng=0)["clean"], b["clean"])  # clean images are all ones
        True
    """
    _check_batch(batch, "mixup")
    g = make_generator(rng)
    if alpha <= 0:
        raise UsageError(f"mixup: alpha must be positive, got {alpha}")
    lam = _beta(alpha, g)
    n = batch["degraded"].shape[0]
    perm = torch.randperm(n, generator=g)
    out = dict(batch)
    for key in ("degraded", "clean"):
        t = batch[key]
        out[key] = lam * t + (1 - lam) * t[perm.to(t.device)]
    if num_classes is not None and "label" in batch:
        w = label_weights(torch.as_tensor(batch["label"]), num_classes)
        out["label"] = lam * w + (1 - lam) * w[perm]
    return out


def _beta(alpha: float, g: torch.Generator | None) -> float:
    """Beta(alpha, alpha) drawn reproducibly: numpy's sampler seeded from the torch generator."""
    seed = int(torch.randint(2**62, (), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutblur(batch: dict[str, Any], *, alpha: float = 0.7, rng: Rng = None) -> dict[str, Any]:
    """CutBlur (Yoo et al., 2020): paste a box of the clean image into the degraded one, or the reverse.

    A box with sides ``cut_ratio * H`` by ``cut_ratio * W`` (``cut_ratio ~ N(alpha, 0.01)``, clipped
    to [0.1, 1]) is taken at a random place; with probability 1/2 the clean content is pasted into
    the degraded input, otherwise the degraded content into a clean input. The target stays the
    clean image, so the network learns where and how much to restore.

    Args:
        batch: Dict with ``degraded`` and ``clean`` batches.
        alpha: Mean relative box side.
        rng: Seed or generator.

    Returns:
        A new batch dict; only ``degraded`` changes.

    Examples:
        >>> b = {"degraded": torch.zeros(1, 3, 8, 8), "clean": torch.ones(1, 3, 8, 8)}
        >>> m = float(cutblur(b, rng=0)["degraded"].mean())
        >>> 0 < m < 1
        True
    """
    _check_batch(batch, "cutblur")
    g = make_generator(rng)
    deg, clean = batch["degraded"], batch["clean"]
    h, w = deg.shape[-2:]
    ratio = min(max(alpha + 0.01 * float(torch.randn((), generator=g)), 0.1), 1.0)
    ch, cw = max(int(h * ratio), 1), max(int(w * ratio), 1)
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    inside_clean = bool(torch.rand((), generator=g) < 0.5)
    base, patch = (deg, clean) if inside_clean else (clean, deg)
    new = base.clone()
    new[..., top : top + ch, left : left + cw] = patch[..., top : top + ch, left : left + cw]
    out = dict(batch)
    out["degraded"] = new
    return out


def dmix(batch: dict[str, Any], *, num_classes: int, rng: Rng = None) -> dict[str, Any]:
    """Degradation-Mix (PIP, supplementary Sec. B): swap image halves across the batch, mix the labels.

    Every image is split in two halves, along the height or the width (drawn once per
    batch); the second halves of degraded and clean images are shuffled across the batch
    with one permutation, and each label becomes the average of the one-hot labels of its
    two halves, giving weights ``(N, T)``.

    Args:
        batch: Dict with ``degraded``, ``clean`` and ``label`` (``(N,)`` ints or ``(N, T)`` weights).
        num_classes: Number of degradation classes ``T``.
        rng: Seed or generator.

    Returns:
        A new batch dict with mixed images and ``label`` of shape ``(N, T)``.

    Examples:
        >>> b = {"degraded": torch.rand(2, 3, 4, 4), "clean": torch.rand(2, 3, 4, 4), "label": torch.tensor([0, 1])}
        >>> dmix(b, num_classes=2, rng=0)["label"].sum(dim=1).tolist()
        [1.0, 1.0]
    """
    _check_batch(batch, "dmix")
    if "label" not in batch:
        raise UsageError("dmix needs batch['label'] (degradation labels) to mix")
    g = make_generator(rng)
    n = batch["degraded"].shape[0]
    perm = torch.randperm(n, generator=g)
    along_h = bool(torch.rand((), generator=g) < 0.5)
    out = dict(batch)
    for key in ("degraded", "clean"):
        t = batch[key].clone()
        size = t.shape[-2] if along_h else t.shape[-1]
        half = size // 2
        p = perm.to(t.device)
        if along_h:
            t[..., half:, :] = batch[key][p][..., half:, :]
        else:
            t[..., :, half:] = batch[key][p][..., :, half:]
        out[key] = t
    w = label_weights(torch.as_tensor(batch["label"]), num_classes)
    out["label"] = 0.5 * w + 0.5 * w[perm]
    return out


class BatchAugment:
    """Apply one of several batch augmentations with given probabilities (a trainer hook).

    Args:
        cutblur: Probability of :func:`cutblur`.
        mixup: Probability of :func:`mixup`.
        dmix: Probability of :func:`dmix` (needs ``num_classes``).
        num_classes: Number of degradation classes, for label mixing.
        seed: Seed of the augmentation's own generator (reproducible runs).

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
        self.probs = probs
        self.num_classes = num_classes
        self.generator = make_generator(seed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        u = float(torch.rand((), generator=self.generator))
        acc = 0.0
        for name, p in self.probs.items():
            acc += p
            if u < acc:
                if name == "cutblur":
                    return cutblur(batch, rng=self.generator)
                if name == "mixup":
                    return mixup(batch, num_classes=self.num_classes, rng=self.generator)
                return dmix(batch, num_classes=int(self.num_classes or 0), rng=self.generator)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The generator state (saved in checkpoints so resumed runs continue identically)."""
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state."""
        if "generator" in state and self.generator is not None:
            self.generator.set_state(state["generator"])
