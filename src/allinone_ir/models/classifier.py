"""A small ResNet-style classifier that predicts PIP's degradation weights from an image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.norm import in_layout_of
from ._base import RecordsConfig

__all__ = ["DegradationClassifier", "degradation_classification_loss"]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm, a (projected) shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        # the strided 1x1 shortcut subsamples first (same values), into a map in the layout of x: oneDNN's
        # backward of a strided 1x1 channels-last convolution with under 8 input channels corrupts the heap
        skip = x
        if self.stride != 1:
            skip = in_layout_of(x[:, :, :: self.stride, :: self.stride], x)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(skip))


class DegradationClassifier(RecordsConfig, nn.Module):
    """Predict which degradation an image suffers from (PIP paper, supplementary C.1); softmax: PIP's ``omega``.

    Args:
        num_degradations: Number of classes ``T``.
        widths: Channels of the stages, each of ``blocks_per_stage`` ResNet blocks halving the resolution.

    Shape:
        - Input: :math:`(N, C, H, W)`; output: :math:`(N, T)` logits

    Examples:
        >>> clf = DegradationClassifier(num_degradations=5, widths=(8, 16))
        >>> clf(torch.rand(2, 3, 33, 20)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_degradations: int = 5,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        if not widths or blocks_per_stage < 1 or num_degradations < 1:
            raise UsageError(
                f"need widths and sizes >= 1, got {list(widths)}, {blocks_per_stage=}, {num_degradations=}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        chan = widths[0]
        for w in widths:
            blocks = [BasicBlock(chan, w, stride=2)] + [BasicBlock(w, w) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            chan = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(chan, num_degradations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(-2, -1)))


def degradation_classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the classifier's logits against labels or weights (rows normalised to sum 1).

    Raises:
        UsageError: If the shapes do not match.

    Shape:
        - logits: :math:`(N, T)`; target: :math:`(N,)` labels or :math:`(N, T)` weights; output: scalar

    Examples:
        >>> logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
        >>> float(degradation_classification_loss(logits, torch.tensor([0, 1]))) < 1e-3
        True
    """
    if logits.ndim != 2:
        raise UsageError(f"logits must have shape (N, T), got {tuple(logits.shape)}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise UsageError(f"weights {tuple(target.shape)} must match logits {tuple(logits.shape)}")
        probs = target / target.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return F.cross_entropy(logits.float(), probs.float())
    if target.shape != logits.shape[:1]:
        raise UsageError(f"labels must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
    return F.cross_entropy(logits.float(), target.long())
