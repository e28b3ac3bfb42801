"""Padding an image to a size a network can process."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple"]


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom and right to multiples of ``multiple``; returns the padded tensor and the original ``(H, W)``.

    ``mode``: ``"reflect"`` (``"replicate"`` where the image is too small for it), ``"replicate"``, ``"constant"``.

    Shape:
        - x: :math:`(N, C, H, W)`
        - output: :math:`(N, C, \\lceil H/m \\rceil m, \\lceil W/m \\rceil m)`

    Examples:
        >>> y, (h, w) = pad_to_multiple(torch.rand(1, 3, 37, 53), 8)
        >>> tuple(y.shape), h, w
        ((1, 3, 40, 56), 37, 53)
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)
