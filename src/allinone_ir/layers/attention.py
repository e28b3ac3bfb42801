"""Channel ("transposed") attention: dense and top-m; MDTA and cross attention, as the official code computes them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .norm import in_layout_of

__all__ = ["MDTA", "CrossChannelAttention", "channel_attention"]


def low_precision_autocast(device_type: str) -> torch.dtype | None:
    """The autocast dtype if autocast to a 16-bit type is on for ``device_type``, else ``None``."""
    on = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type) if on else None
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _logits(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, num_heads: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    qh, kh, vh = (t.flatten(2).unflatten(1, (num_heads, -1)) for t in (q, k, v))
    eps = max(eps, torch.finfo(q.dtype).tiny)  # 1e-12 is 0 in float16: an all-zero row would give 0 / 0
    attn = F.normalize(qh, dim=-1, eps=eps) @ F.normalize(kh, dim=-1, eps=eps).transpose(-2, -1)
    return attn * temperature, vh


def channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Transposed attention per head, ``softmax(normalize(q) normalize(k)^T * temperature) v``.

    Shape:
        - q, k, v: :math:`(N, C, H, W)`; temperature: :math:`(heads, 1, 1)`
        - output: :math:`(N, C, H, W)`, in the memory layout of ``v``

    Examples:
        >>> q, k, v = torch.randn(3, 2, 8, 5, 5).unbind(0)
        >>> channel_attention(q, k, v, torch.ones(2, 1, 1), num_heads=2).shape
        torch.Size([2, 8, 5, 5])
    """
    attn, vh = _logits(q, k, v, temperature, num_heads, eps)
    return in_layout_of((attn.softmax(dim=-1).to(vh.dtype) @ vh).reshape(q.shape), v)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer): ``qkv`` 1x1, ``qkv_dwconv`` 3x3, ``project_out`` 1x1.

    Shape:
        - Input, output: :math:`(N, C, H, W)`

    Examples:
        >>> MDTA(16, num_heads=2)(torch.randn(1, 16, 9, 7)).shape
        torch.Size([1, 16, 9, 7])
    """

    #: Run the depthwise convolution in float32 under bf16/fp16 autocast (set by ``low_precision_flags``).
    float32_dwconv: bool = False

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UsageError(f"MDTA: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        low = low_precision_autocast(qkv.device.type)
        if self.float32_dwconv and low is not None:
            with torch.autocast(qkv.device.type, enabled=False):
                qkv = self.qkv_dwconv(qkv.float()).to(low)
        else:
            qkv = self.qkv_dwconv(qkv)
        q, k, v = qkv.chunk(3, dim=1)
        return self.project_out(channel_attention(q, k, v, self.temperature, self.num_heads))


def top_m_sizes(channels_per_head: int) -> list[int]:
    """The ``m`` of PIP's four top-m masks (paper B.2): ``c * a // b`` for ``a/b`` in 1/2, 2/3, 3/4, 4/5, at least 1."""
    return [max(1, channels_per_head * a // b) for a, b in ((1, 2), (2, 3), (3, 4), (4, 5))]


def top_m_channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    top_m: Sequence[int],
    weights: torch.Tensor,
) -> torch.Tensor:
    """PIP's selective attention: ``sum_i weights[i] softmax(logits masked to each row's top top_m[i]) v``."""
    attn, vh = _logits(q, k, v, temperature, num_heads, 1e-12)
    # thresholds: the m-th largest value of each row, from one sorted top-k with the largest m
    kth = torch.topk(attn, max(top_m), dim=-1).values.detach()
    probs = torch.zeros_like(attn)
    for i, m in enumerate(top_m):
        masked = attn.masked_fill(attn < kth[..., m - 1 : m], float("-inf"))
        probs = probs + masked.softmax(dim=-1) * weights[i].to(attn.dtype)
    return in_layout_of((probs.to(vh.dtype) @ vh).reshape(q.shape), v)


class CrossChannelAttention(nn.Module):
    """Transposed cross attention: ``q = q_dwconv(q(query))``, ``k, v = kv_dwconv(kv(context))``, ``project_out``.

    Shape:
        - query: :math:`(N_q, C_q, H, W)` with :math:`N_q \\in \\{1, N\\}` (a shared query is broadcast)
        - context: :math:`(N, C, H', W')` with :math:`H'W' = HW` (``C = dim``)
        - output: :math:`(N, C_{out}, H, W)` (``C_out = out_dim or query_dim``)

    Examples:
        >>> attn = CrossChannelAttention(6, 8, num_heads=2)
        >>> attn(torch.randn(1, 6, 5, 4), torch.randn(3, 8, 2, 10)).shape
        torch.Size([3, 6, 5, 4])
    """

    def __init__(
        self,
        query_dim: int,
        dim: int,
        num_heads: int,
        bias: bool = False,
        out_dim: int | None = None,
        kv_kernel: int = 3,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UsageError(f"attention dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(query_dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(
            2 * dim, 2 * dim, kv_kernel, padding=kv_kernel // 2, groups=2 * dim, bias=bias
        )
        self.project_out = nn.Conv2d(dim, out_dim or query_dim, kernel_size=1, bias=bias)

    def _qkv(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k, v = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(query)).expand(k.shape[0], -1, -1, -1)
        return q.to(v.dtype), k, v  # MoCE-IR's experts may hand a float32 query under autocast

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(query, context)
        return self.project_out(channel_attention(q, k, v, self.temperature, self.num_heads))
