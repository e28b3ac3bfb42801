"""Channel ("transposed") attention: dense, fused with the output projection, top-m; MDTA and cross attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["MDTA", "CrossChannelAttention", "channel_attention"]

#: Fractions of the per-head channels kept by the four top-m masks of PIP's selective P2F (paper B.2).
TOP_M_FRACTIONS: tuple[tuple[int, int], ...] = ((1, 2), (2, 3), (3, 4), (4, 5))


def low_precision_autocast(device_type: str) -> torch.dtype | None:
    """The autocast dtype if autocast to a 16-bit type is on for ``device_type``, else ``None``.

    Examples:
        >>> low_precision_autocast("cpu") is None
        True
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     low_precision_autocast("cpu")
        torch.bfloat16
        >>> low_precision_autocast("meta") is None  # a device type autocast does not know
        True
    """
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
    except RuntimeError:  # "meta" and other device types without autocast
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether the channels of a 4-D map (or a channel slice of one) are its innermost, unit-stride axis."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous()


def _heads_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N, heads, C/heads, H*W)`` as a view for NCHW and channels-last storage."""
    n, c, h, w = x.shape
    return x.reshape(n, num_heads, c // num_heads, h * w)


def _head_gram(qh: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """``qh @ kh^T`` with one batched matmul per head, so that strided views are never copied.

    ``torch.matmul`` folds the ``(N, heads)`` batch axes into one, which copies both operands when
    ``N > 1``; per head the batch axis is ``N`` alone and BLAS reads the views directly.
    """
    if qh.shape[1] == 1:
        return (qh[:, 0] @ kh[:, 0].transpose(-2, -1)).unsqueeze(1)
    return torch.stack([qh[:, i] @ kh[:, i].transpose(-2, -1) for i in range(qh.shape[1])], dim=1)


def _cosine_logits(
    qh: torch.Tensor,
    kh: torch.Tensor,
    sq_q: torch.Tensor,
    sq_k: torch.Tensor,
    temperature: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """``normalize(qh) @ normalize(kh)^T * temperature`` from the Gram matrix and the squared row norms (>= fp32)."""
    acc = sq_q.dtype
    qn = sq_q.sqrt().clamp_min(eps).unsqueeze(-1)
    kn = sq_k.sqrt().clamp_min(eps).unsqueeze(-2)
    gram = _head_gram(qh, kh).to(acc)
    return gram * (temperature.to(acc) / (qn * kn))


def channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Transposed (channel-to-channel) attention with L2-normalised queries and keys.

    Per head, ``q``, ``k`` and ``v`` are read as ``(C / heads, H*W)`` matrices and

    .. math:: \\mathrm{out} = \\mathrm{softmax}(\\hat q \\hat k^T \\cdot \\tau)\\, v

    NCHW and channels-last inputs work without copies; the output has the memory format of ``v``.

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

    Examples:
        >>> q, k, v = torch.randn(3, 2, 8, 5, 5).unbind(0)
        >>> channel_attention(q, k, v, torch.ones(2, 1, 1), num_heads=2).shape
        torch.Size([2, 8, 5, 5])
    """
    n, c, h, w = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)  # statistics in at least fp32 (bf16/fp16 safe)
    qh, kh, vh = _heads_view(q, num_heads), _heads_view(k, num_heads), _heads_view(v, num_heads)
    sq_q = qh.square().sum(dim=-1, dtype=acc)
    sq_k = kh.square().sum(dim=-1, dtype=acc)
    attn = _cosine_logits(qh, kh, sq_q, sq_k, temperature, eps).softmax(dim=-1)
    if _is_channels_last(v):
        # out^T = v^T attn^T per head, written straight into channels-last order
        vt = v.permute(0, 2, 3, 1).reshape(n, h * w, num_heads, c // num_heads)
        out = torch.einsum("nphj,nhij->nphi", vt, attn.to(vt.dtype))
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return (attn.to(vh.dtype) @ vh).reshape(n, c, h, w)


def projected_channel_attention(
    qkv: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """:func:`channel_attention` on the stacked ``qkv`` followed by a 1x1 projection, fused.

    Equal to ``conv1x1(channel_attention(*qkv.chunk(3, 1)), proj_weight, proj_bias)``; the projection is
    folded into the ``C x C`` attention matrix. The output keeps ``qkv``'s memory format.

    Args:
        qkv: Queries, keys and values stacked along channels.
        temperature: Per-head scale of shape ``(heads, 1, 1)``.
        num_heads: Number of heads; must divide ``C``.
        proj_weight: Weight of the 1x1 output projection, ``(C_out, C, 1, 1)`` or ``(C_out, C)``.
        proj_bias: Its bias ``(C_out,)`` or ``None``.
        eps: Lower bound on the row norms.

    Shape:
        - qkv: :math:`(N, 3C, H, W)`
        - output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> qkv = torch.randn(2, 12, 5, 6)
        >>> projected_channel_attention(qkv, torch.ones(2, 1, 1), 2, torch.randn(4, 4, 1, 1)).shape
        torch.Size([2, 4, 5, 6])
    """
    n, c3, h, w = qkv.shape
    c = c3 // 3
    cp = c // num_heads
    p = h * w
    acc = torch.promote_types(qkv.dtype, torch.float32)
    weight = proj_weight.reshape(proj_weight.shape[0], num_heads, cp)
    if _is_channels_last(qkv):
        t = qkv.permute(0, 2, 3, 1).reshape(n, p, 3, num_heads, cp)  # a view
        qh = t[:, :, 0].permute(0, 2, 3, 1)  # (N, heads, c, P)
        kh = t[:, :, 1].permute(0, 2, 3, 1)
        sq = t[:, :, :2].square().sum(dim=1).to(acc)  # (N, 2, heads, c)
        attn = _cosine_logits(qh, kh, sq[:, 0], sq[:, 1], temperature, eps).softmax(dim=-1)
        mix = torch.einsum("ohi,nhij->nhjo", weight.to(attn.dtype), attn).reshape(n, c, -1)
        vt = t[:, :, 2].reshape(n, p, c)  # (N, P, C), a strided view
        out = (vt @ mix.to(vt.dtype)).reshape(n, h, w, -1).permute(0, 3, 1, 2)
    else:
        t = qkv.reshape(n, 3, num_heads, cp, p)
        sq = t[:, :2].square().sum(dim=-1).to(acc)
        attn = _cosine_logits(t[:, 0], t[:, 1], sq[:, 0], sq[:, 1], temperature, eps).softmax(dim=-1)
        mix = torch.einsum("ohi,nhij->nohj", weight.to(attn.dtype), attn).reshape(n, -1, c)
        out = (mix.to(qkv.dtype) @ t[:, 2].reshape(n, c, p)).reshape(n, -1, h, w)
    if proj_bias is not None:
        out = out + proj_bias.to(out.dtype).view(1, -1, 1, 1)
    return out


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer, Zamir et al. 2022).

    ``qkv`` (1x1 conv C->3C) and ``qkv_dwconv`` (depthwise 3x3) give queries, keys and values; the
    attention runs across channels per head (cost linear in the pixels); ``project_out`` (1x1) maps back.

    Args:
        dim: Number of channels ``C``.
        num_heads: Number of heads; must divide ``dim``.
        bias: Whether the convolutions have a bias.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> attn = MDTA(16, num_heads=2)
        >>> attn(torch.randn(1, 16, 9, 7)).shape
        torch.Size([1, 16, 9, 7])
    """

    #: Run the depthwise convolution in float32 under bf16/fp16 autocast (its few weights per channel set
    #: the attention logits). Set by the family's ``low_precision_flags``.
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
                qkv = self.qkv_dwconv(qkv.float())
            qkv = qkv.to(low)
        else:
            qkv = self.qkv_dwconv(qkv)
        return projected_channel_attention(
            qkv, self.temperature, self.num_heads, self.project_out.weight, self.project_out.bias
        )


def top_m_sizes(channels_per_head: int, fractions: Sequence[tuple[int, int]] = TOP_M_FRACTIONS) -> list[int]:
    """The ``m`` of each top-m mask: ``int(c * a / b)`` for each fraction ``a/b``, at least 1.

    Examples:
        >>> top_m_sizes(16)
        [8, 10, 12, 12]
        >>> top_m_sizes(1)
        [1, 1, 1, 1]
    """
    return [max(1, (channels_per_head * a) // b) for a, b in fractions]


def top_m_channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    top_m: Sequence[int],
    weights: torch.Tensor,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Selective transposed attention (PIP): several top-m masked softmaxes, summed with learnable weights.

    ``A = normalize(q) normalize(k)^T * temperature`` per head; for each ``m`` the entries of a row
    below its ``m``-th largest get ``-inf`` before the softmax (paper Eq. 7-8). The output is
    ``sum_i weights_i softmax(A masked by M_i) v``.

    Args:
        q: Queries.
        k: Keys.
        v: Values.
        temperature: Per-head scale, shape ``(heads, 1, 1)``.
        num_heads: Heads; must divide ``C``.
        top_m: The ``m`` of each mask (each ``1 <= m <= C / heads``).
        weights: One weight per mask, shape ``(len(top_m),)``.
        eps: Lower bound on the row norms.

    Returns:
        The attention output with the shape of ``q``.

    Shape:
        - q, k, v: :math:`(N, C, H, W)` (``k`` and ``v`` may have any size with ``H*W`` pixels)
        - output: :math:`(N, C, H, W)`
    """
    n, c, h, w = q.shape
    qh, kh, vh = _heads_view(q, num_heads), _heads_view(k, num_heads), _heads_view(v, num_heads)
    acc = torch.promote_types(q.dtype, torch.float32)  # logits, masks and softmax in >= fp32
    sq_q, sq_k = qh.square().sum(dim=-1, dtype=acc), kh.square().sum(dim=-1, dtype=acc)
    attn = _cosine_logits(qh, kh, sq_q, sq_k, temperature, eps)
    # thresholds: the m-th largest value of each row, from one sorted top-k with the largest m
    kth = torch.topk(attn, max(top_m), dim=-1).values.detach()
    probs = torch.zeros_like(attn)
    for i, m in enumerate(top_m):
        masked = attn.masked_fill(attn < kth[..., m - 1 : m], float("-inf"))
        probs = probs + masked.softmax(dim=-1) * weights[i].to(acc)
    return (probs.to(vh.dtype) @ vh).reshape(n, c, h, w)


class CrossChannelAttention(nn.Module):
    """MDTA-style transposed cross attention: queries from one map, keys and values from another.

    ``q = q_dwconv(q(query))`` (1x1 ``query_dim -> dim``, depthwise 3x3), ``k, v = kv_dwconv(kv(context))``
    (1x1 ``dim -> 2 dim``, depthwise ``kv_kernel``), :func:`channel_attention`, ``project_out``
    (1x1 ``dim -> out_dim``). Used by AdaIR, MoCE-IR and PIP.

    Args:
        query_dim: Channels of the query map.
        dim: Channels of the context map and of the attention.
        num_heads: Heads; must divide ``dim``.
        bias: Whether the convolutions have a bias.
        out_dim: Output channels (default ``query_dim``).
        kv_kernel: Kernel size of the keys' and values' depthwise convolution (3; 7 in MoCE-IR).

    Shape:
        - query: :math:`(N_q, C_q, H, W)` with :math:`N_q \\in \\{1, N\\}` (a shared query is broadcast)
        - context: :math:`(N, C, H', W')` with :math:`H'W' = HW`
        - output: :math:`(N, C_{out}, H, W)`

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
            dim * 2, dim * 2, kernel_size=kv_kernel, padding=kv_kernel // 2, groups=dim * 2, bias=bias
        )
        self.project_out = nn.Conv2d(dim, out_dim or query_dim, kernel_size=1, bias=bias)

    def _qkv(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k, v = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(query))
        if q.shape[0] != k.shape[0]:
            q = q.expand(k.shape[0], -1, -1, -1)
        return q.to(v.dtype), k, v  # MoCE-IR's experts may hand a float32 query under autocast

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(query, context)
        return self.project_out(channel_attention(q, k, v, self.temperature, self.num_heads))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"
