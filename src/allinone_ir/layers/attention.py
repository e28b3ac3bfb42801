"""Multi-Dconv head transposed attention (MDTA) of Restormer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MDTA", "channel_attention"]


def channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Transposed (channel-to-channel) attention with L2-normalised queries and keys.

    For every head with ``c = C / num_heads`` channels, ``q`` and ``k`` are read as
    ``(c, H*W)`` matrices, each row L2-normalised, and

    .. math:: \\mathrm{out} = \\mathrm{softmax}(\\hat q \\hat k^T \\cdot \\tau)\\, v

    The normalisation is fused: the raw Gram matrix ``q k^T`` is divided by the
    outer product of the row norms, which is equal to normalising ``q`` and ``k``
    first but never writes the normalised tensors. ``q`` may have a different
    spatial size from ``k`` and ``v`` only if it has the same number of pixels.

    Args:
        q: Queries.
        k: Keys.
        v: Values.
        temperature: Learnable per-head scale of shape ``(heads, 1, 1)``.
        num_heads: Number of heads; must divide ``C``.
        eps: Lower bound on the row norms (as ``F.normalize``).

    Returns:
        Attention output with the shape of ``q``.

    Shape:
        - q, k, v: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`
    """
    n, c, h, w = q.shape
    heads = num_heads
    # (N, C, H, W) -> (N, heads, C/heads, H*W): a view both for NCHW and channels-last storage.
    qh = q.reshape(n, heads, c // heads, h * w)
    kh = k.reshape(n, heads, c // heads, -1)
    vh = v.reshape(n, heads, c // heads, -1)
    acc = torch.promote_types(q.dtype, torch.float32)  # statistics in at least fp32 (bf16/fp16 safe)
    qn = torch.linalg.vector_norm(qh, dim=-1, keepdim=True, dtype=acc).clamp_min(eps)
    kn = torch.linalg.vector_norm(kh, dim=-1, keepdim=True, dtype=acc).clamp_min(eps)
    gram = qh @ kh.transpose(-2, -1)
    scale = temperature.to(acc) / (qn * kn.transpose(-2, -1))
    attn = (gram.to(acc) * scale).softmax(dim=-1).to(vh.dtype)
    out = attn @ vh
    return out.reshape(n, c, h, w)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer, Zamir et al. 2022).

    ``qkv`` (1x1 conv C->3C) and ``qkv_dwconv`` (depthwise 3x3) produce queries,
    keys and values; attention is computed across channels per head, so its cost
    is linear in the number of pixels; ``project_out`` (1x1) maps back.

    Args:
        dim: Number of channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        bias: Whether the convolutions have a bias (``False`` in the official configs).

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> attn = MDTA(16, num_heads=2)
        >>> attn(torch.randn(1, 16, 9, 7)).shape
        torch.Size([1, 16, 9, 7])
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MDTA: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        out = channel_attention(q, k, v, self.temperature, self.num_heads)
        return self.project_out(out)


def _reference_mdta_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Unfused textbook form of :func:`channel_attention` (kept for tests and benchmarks)."""
    n, c, h, w = q.shape
    qh = F.normalize(q.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    kh = F.normalize(k.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    vh = v.reshape(n, num_heads, c // num_heads, -1)
    attn = torch.einsum("nhcp,nhdp->nhcd", qh, kh) * temperature
    return torch.einsum("nhcd,nhdp->nhcp", attn.softmax(-1), vh).reshape(n, c, h, w)
