"""Prompt-In-Prompt (PIP) modules (Li et al., "Prompt-In-Prompt Learning for Universal Image Restoration").

PIP is a plug-in for the skip connections of a U-Net. For one skip feature ``Z`` and
user-controlled degradation weights ``omega`` (one weight per degradation type) it

1. combines learnable *degradation-aware prompts* ``d_t`` with ``omega``
   (:class:`DegradationAwarePrompt`) and multiplies them with ``Z`` resized to the
   prompt size, giving ``D``;
2. fuses ``D`` with a learnable *basic restoration prompt* ``B``
   (:class:`BasicRestorationPrompt`) by cross attention (:class:`PromptToPrompt`),
   giving the universal restoration prompt ``U``;
3. modulates ``Z`` with ``U`` by a *selective* (top-m) transposed cross attention
   (:class:`SelectivePromptToFeature`).

:class:`PIPBlock` bundles the three steps: ``block(feature, omega) -> modulated feature``.
:func:`resolve_degradation_weights` turns labels, names, mixtures or weight tensors
into ``omega``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import _cosine_logits, _heads_view, channel_attention
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm

__all__ = [
    "DEFAULT_DEGRADATIONS",
    "TOP_M_FRACTIONS",
    "BasicRestorationPrompt",
    "DegradationAwarePrompt",
    "DegradationSpec",
    "PIPBlock",
    "PromptToPrompt",
    "SelectivePromptToFeature",
    "resolve_degradation_weights",
    "top_m_channel_attention",
    "top_m_sizes",
]

#: Degradation types of the PIP paper, in the order of the official labels (noise 0 ... low-light 4).
DEFAULT_DEGRADATIONS: tuple[str, ...] = ("noise", "rain", "haze", "blur", "lowlight")

#: Fractions of the per-head channels kept by the four top-m masks of the selective P2F (paper B.2).
TOP_M_FRACTIONS: tuple[tuple[int, int], ...] = ((1, 2), (2, 3), (3, 4), (4, 5))

# Task names of the official code, accepted as aliases of the default degradation names.
_ALIASES: dict[str, str] = {
    "denoise": "noise",
    "derain": "rain",
    "dehaze": "haze",
    "deblur": "blur",
    "enhance": "lowlight",
}

#: What :func:`resolve_degradation_weights` accepts (see there).
DegradationSpec = int | str | Mapping[Any, float] | Sequence[Any] | torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# Degradation weights
# ----------------------------------------------------------------------------------------------------------
def _normalise_name(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " -_")


def _name_index(name: str, names: Sequence[str]) -> int:
    table = {_normalise_name(n): i for i, n in enumerate(names)}
    key = _normalise_name(name)
    if key not in table and key in _ALIASES:
        key = _ALIASES[key]
    if key not in table:
        close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(names[table[c]]) for c in close)}?" if close else ""
        raise ValueError(f"unknown degradation name {name!r}; this network knows {list(names)}{hint}")
    return table[key]


def _label_index(label: int, names: Sequence[str]) -> int:
    if not 0 <= label < len(names):
        raise ValueError(
            f"degradation label {label} out of range: labels are 0..{len(names) - 1} for {list(names)}"
        )
    return label


def _one_sample(spec: Any, names: Sequence[str]) -> list[float]:
    """Weights of one sample from an int label, a name (``"rain+noise"`` for a mixture) or a mapping."""
    t = len(names)
    row = [0.0] * t
    if isinstance(spec, bool):
        raise TypeError("a degradation label must be an int or a name, got a bool")
    if isinstance(spec, int):
        row[_label_index(spec, names)] = 1.0
        return row
    if isinstance(spec, str):
        parts = [p for p in spec.split("+")]
        if any(not p.strip() for p in parts):
            raise ValueError(f"empty degradation name in {spec!r}; use e.g. 'rain' or 'rain+noise'")
        for p in parts:  # an equal mixture, as the official code mixes two labels
            row[_name_index(p, names)] += 1.0 / len(parts)
        return row
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError("an empty mapping gives no degradation weights; use e.g. {'rain': 1.0}")
        for key, value in spec.items():
            idx = _name_index(key, names) if isinstance(key, str) else _label_index(int(key), names)
            w = float(value)
            if not w >= 0.0 or w == float("inf"):
                raise ValueError(f"degradation weights must be finite and non-negative, got {key!r}: {value}")
            row[idx] += w
        return row
    raise TypeError(
        f"cannot read a degradation from {type(spec).__name__}; use an int label, a name such as "
        f"{names[0]!r}, 'a+b' for a mixture, or a mapping {{name: weight}}"
    )


def resolve_degradation_weights(
    degradation: DegradationSpec,
    *,
    batch_size: int,
    names: Sequence[str] = DEFAULT_DEGRADATIONS,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn the user's degradation control into PIP's degradation weights ``omega``.

    Accepted forms (``T = len(names)``, ``N = batch_size``):

    - an ``int`` label or a name (``"rain"``; ``"rain+noise"`` is an equal mixture; the
      official task names ``denoise/derain/dehaze/deblur/enhance`` are aliases, and case,
      spaces, ``-`` and ``_`` are ignored), or a mapping ``{"rain": 0.5, "noise": 0.5}``:
      the same weights for every sample;
    - a list/tuple of ``N`` such entries: one per sample;
    - an integer tensor of shape ``(N,)`` (or a 0-d one): one-hot labels;
    - a floating tensor of shape ``(N, T)``, ``(1, T)`` or ``(T,)``: the weights themselves
      (one-hot, or soft mixtures), broadcast over the batch where needed.

    Weights are used as given (not renormalised), so ``{"rain": 2.0}`` is a stronger rain prompt.

    Args:
        degradation: The control, see above.
        batch_size: ``N``.
        names: Degradation names of the network, in label order.
        device: Device of the result (defaults to the tensor's own or the CPU).
        dtype: Floating dtype of the result.

    Returns:
        ``omega``, non-negative.

    Raises:
        ValueError: Wrong shape or length, negative or non-finite weights, labels out of
            range, unknown names.
        TypeError: An unsupported type (e.g. ``None`` or a bool tensor).

    Shape:
        - output: :math:`(N, T)`

    Examples:
        >>> resolve_degradation_weights("rain", batch_size=2)
        tensor([[0., 1., 0., 0., 0.],
                [0., 1., 0., 0., 0.]])
        >>> resolve_degradation_weights(["noise", "rain+haze"], batch_size=2)
        tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                [0.0000, 0.5000, 0.5000, 0.0000, 0.0000]])
    """
    names = tuple(names)
    t = len(names)
    if t == 0:
        raise ValueError("the network has no degradation names")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if degradation is None:
        raise TypeError("degradation is None; pass labels, names or weights (or let the network classify)")
    if isinstance(degradation, torch.Tensor):
        out = _weights_from_tensor(degradation, batch_size, names)
        return out.to(device=device if device is not None else out.device, dtype=dtype)
    if isinstance(degradation, (str, int, Mapping)):
        rows = [_one_sample(degradation, names)] * batch_size
    elif isinstance(degradation, Sequence):
        if len(degradation) != batch_size:
            raise ValueError(
                f"got {len(degradation)} degradations for a batch of {batch_size} images; pass one per "
                "image, or a single name/label for all"
            )
        rows = [_one_sample(d.item() if isinstance(d, torch.Tensor) else d, names) for d in degradation]
    else:
        raise TypeError(
            f"cannot read degradation weights from {type(degradation).__name__}; expected an int, a name, "
            "a mapping, a list of those, or a tensor"
        )
    return torch.tensor(rows, dtype=dtype, device=device)


def _weights_from_tensor(w: torch.Tensor, n: int, names: tuple[str, ...]) -> torch.Tensor:
    t = len(names)
    if w.dtype == torch.bool or w.is_complex():
        raise TypeError(f"degradation tensor must hold integer labels or float weights, got {w.dtype}")
    if not w.is_floating_point():
        if w.ndim == 0:
            w = w.reshape(1).expand(n)
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(
                f"integer degradation labels must have shape ({n},) for a batch of {n}, got {tuple(w.shape)}"
            )
        if w.numel() and (int(w.min()) < 0 or int(w.max()) >= t):
            raise ValueError(f"degradation labels must lie in 0..{t - 1} for {list(names)}, got {w.tolist()}")
        return F.one_hot(w.long(), t).float()
    if w.ndim == 1 and w.shape[0] == t:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[1] != t or w.shape[0] not in (1, n):
        raise ValueError(
            f"degradation weights must have shape ({n}, {t}), (1, {t}) or ({t},) for {list(names)}, "
            f"got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("degradation weights must be finite")
    if bool((w < 0).any()):
        raise ValueError(f"degradation weights must be non-negative, got minimum {float(w.min())}")
    return w.expand(n, t)


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------
class DegradationAwarePrompt(nn.Module):
    """``T`` learnable degradation-aware prompt vectors ``d_t``, combined with the weights ``omega``.

    The combined prompt is the **mean** over ``t`` of ``omega_t d_t`` (as the official
    code computes it), returned as a ``(N, C, 1, 1)`` map ready to scale a feature.
    The vectors start as standard normal samples; :func:`allinone_ir.losses.directional_decoupled_loss`
    pushes them apart.

    Args:
        num_degradations: Number of degradation types ``T``.
        dim: Prompt channels ``C``.

    Attributes:
        prompts: The vectors ``d``, shape ``(T, C)``.

    Shape:
        - omega: :math:`(N, T)`
        - output: :math:`(N, C, 1, 1)`

    Examples:
        >>> prompt = DegradationAwarePrompt(num_degradations=3, dim=4)
        >>> prompt(torch.tensor([[0.0, 3.0, 0.0]])).flatten().allclose(prompt.prompts[1])
        True
    """

    def __init__(self, num_degradations: int, dim: int) -> None:
        super().__init__()
        if num_degradations < 1 or dim < 1:
            raise ValueError(f"need num_degradations >= 1 and dim >= 1, got {num_degradations}, {dim}")
        self.prompts = nn.Parameter(torch.randn(num_degradations, dim))

    @property
    def num_degradations(self) -> int:
        """``T``."""
        return self.prompts.shape[0]

    def forward(self, omega: torch.Tensor) -> torch.Tensor:
        t, c = self.prompts.shape
        if omega.ndim != 2 or omega.shape[1] != t:
            raise ValueError(f"omega must have shape (N, {t}), got {tuple(omega.shape)}")
        # element-wise product and mean rather than a matmul: exact in fp32 also under autocast
        combined = (omega.to(self.prompts.dtype).unsqueeze(-1) * self.prompts).mean(dim=1)
        return combined.reshape(-1, c, 1, 1)


class BasicRestorationPrompt(nn.Module):
    """The learnable low-level prompt ``B`` of shape ``(C, S, S)`` (standard normal init).

    Args:
        dim: Channels ``C``.
        size: Spatial size ``S``.

    Shape:
        - output: :math:`(1, C, S, S)` (broadcast over the batch by the caller)

    Examples:
        >>> BasicRestorationPrompt(8, 4)().shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"need dim >= 1 and size >= 1, got {dim}, {size}")
        self.prompt = nn.Parameter(torch.randn(dim, size, size))

    def forward(self) -> torch.Tensor:
        return self.prompt.unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------
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
    """Selective transposed attention: several top-m masked softmaxes, summed with learnable weights.

    Per head, ``q``, ``k`` and ``v`` are ``(c, H*W)`` matrices; rows of ``q`` and ``k`` are
    L2-normalised and ``A = q k^T * temperature`` (``c x c``). For each ``m`` in ``top_m``
    the mask ``M_ij = [A_ij >= m-th largest of row i]`` (Eq. 7 of the paper) keeps the
    ``m`` strongest entries of every row; the others get ``-inf`` before the softmax
    (Eq. 8). The output is ``sum_i weights_i softmax(A masked by M_i) v``; the
    weighted attention maps are summed before the single product with ``v``.

    Args:
        q: Queries.
        k: Keys.
        v: Values.
        temperature: Per-head scale, shape ``(heads, 1, 1)``.
        num_heads: Heads; must divide ``C``.
        top_m: The ``m`` of each mask (each ``1 <= m <= C / heads``).
        weights: One learnable weight per mask, shape ``(len(top_m),)``.
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
    probs = None
    for i, m in enumerate(top_m):
        masked = attn.masked_fill(attn < kth[..., m - 1 : m], float("-inf"))
        p = masked.softmax(dim=-1) * weights[i].to(acc)
        probs = p if probs is None else probs + p
    assert probs is not None
    out = probs.to(vh.dtype) @ vh
    return out.reshape(n, c, h, w)


def _reference_top_m_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    top_m: Sequence[int],
    weights: torch.Tensor,
) -> torch.Tensor:
    """Unfused form of :func:`top_m_channel_attention` (kept for tests and benchmarks).

    Builds each mask from ``topk`` indices with ``scatter`` and multiplies ``v`` once per mask.
    """
    n, c, h, w = q.shape
    qh = F.normalize(q.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    kh = F.normalize(k.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    vh = v.reshape(n, num_heads, c // num_heads, -1)
    attn = qh @ kh.transpose(-2, -1) * temperature
    out = torch.zeros_like(vh)
    for i, m in enumerate(top_m):
        mask = torch.zeros_like(attn).scatter_(-1, attn.topk(m, dim=-1).indices, 1.0)
        probs = attn.masked_fill(mask == 0, float("-inf")).softmax(dim=-1)
        out = out + (probs @ vh) * weights[i]
    return out.reshape(n, c, h, w)


class CrossChannelAttention(nn.Module):
    """MDTA-style transposed cross attention between a query map and a context map.

    ``q = q_dwconv(q(query))`` (1x1 ``query_dim -> dim`` then depthwise 3x3),
    ``k, v = kv_dwconv(kv(context))`` (1x1 ``dim -> 2 dim`` then depthwise 3x3), attention
    over channels (per head, L2-normalised, learnable temperature), ``project_out``
    1x1 ``dim -> out_dim``. With ``top_m_fractions`` the attention is the selective
    top-m one (:func:`top_m_channel_attention`) with one learnable weight per mask,
    initialised to 0.2; otherwise it is the dense :func:`~allinone_ir.layers.channel_attention`.

    Args:
        query_dim: Channels of the query map.
        dim: Channels of the context map and of the attention.
        num_heads: Heads; must divide ``dim``.
        bias: Whether the convolutions have a bias.
        out_dim: Output channels (default ``query_dim``).
        top_m_fractions: Fractions of the per-head channels kept by each mask, or ``None``.

    Shape:
        - query: :math:`(N_q, C_q, H, W)` with :math:`N_q \\in \\{1, N\\}` (a shared query is broadcast)
        - context: :math:`(N, C, H', W')` with :math:`H'W' = HW`
        - output: :math:`(N, C_{out}, H, W)`
    """

    def __init__(
        self,
        query_dim: int,
        dim: int,
        num_heads: int,
        bias: bool = False,
        out_dim: int | None = None,
        top_m_fractions: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(query_dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, out_dim or query_dim, kernel_size=1, bias=bias)
        if top_m_fractions is not None:
            self.top_m = top_m_sizes(dim // num_heads, top_m_fractions)
            self.top_m_weights = nn.Parameter(torch.full((len(self.top_m),), 0.2))
        else:
            self.top_m = []

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        q = self.q_dwconv(self.q(query))
        if q.shape[0] != k.shape[0]:
            q = q.expand(k.shape[0], -1, -1, -1)
        if self.top_m:
            out = top_m_channel_attention(q, k, v, self.temperature, self.num_heads, self.top_m,
                                          self.top_m_weights)  # fmt: skip
        else:
            out = channel_attention(q, k, v, self.temperature, self.num_heads)
        return self.project_out(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}" + (f", top_m={self.top_m}" if self.top_m else "")


class PromptToPrompt(nn.Module):
    """Prompt-to-prompt (P2P) interaction: the universal restoration prompt ``U`` from ``B`` and ``D``.

    ``U = B + CAtt(LN(B), LN(D))`` with ``B`` as query and the degradation-modulated
    feature ``D`` as key and value (MDTA-style, 2 heads in PIP), then
    ``U = U + GDFN(LN(U))`` (paper Eq. 5-6, official layer order).

    Args:
        dim: Prompt channels ``C``.
        num_heads: Attention heads (2 in PIP).
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - basic: :math:`(1, C, S, S)` or :math:`(N, C, S, S)`
        - degradation: :math:`(N, C, S, S)`
        - output: :math:`(N, C, S, S)`

    Examples:
        >>> p2p = PromptToPrompt(8)
        >>> p2p(torch.randn(1, 8, 4, 4), torch.randn(3, 8, 4, 4)).shape
        torch.Size([3, 8, 4, 4])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 2,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.norm_query = RestormerLayerNorm(dim, layer_norm_type)
        self.norm_context = RestormerLayerNorm(dim, layer_norm_type)
        self.attn = CrossChannelAttention(dim, dim, num_heads, bias)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, basic: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        u = basic + self.attn(self.norm_query(basic), self.norm_context(degradation))
        return u + self.ffn(self.norm2(u))


class SelectivePromptToFeature(nn.Module):
    """Selective prompt-to-feature (P2F) interaction: modulate a feature ``Z`` with the prompt ``U``.

    ``Z' = Z + CAtt_s(LN(Z), LN(U))`` with the feature as query and ``U`` as key and value,
    the attention being the top-m selective one (four masks, ``m`` = 1/2, 2/3, 3/4, 4/5
    of the per-head channels, outputs weighted by learnable scalars starting at 0.2), then
    ``Z' + GDFN(LN(Z'))`` (paper Eq. 7-9).

    Feature and prompt widths may differ: the attention runs at the prompt width ``C_p``,
    its query projection reads the ``C_f`` feature channels (``C_f -> C_p``) and its output
    projection writes them back (``C_p -> C_f``). (The official code instead zero-pads a
    narrower feature to ``C_p`` and maps it back with an extra 1x1 convolution, and lets
    only the first ``C_p`` channels of a wider feature interact; the projections here
    cover both cases without dead weights.) The residual adds the raw feature ``Z``, as in
    the paper's Eq. 9.

    Args:
        feature_dim: Feature channels ``C_f``.
        prompt_dim: Prompt channels ``C_p``.
        num_heads: Attention heads (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        top_m_fractions: Fractions of the per-head channels kept by the masks.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - prompt: :math:`(N, C_p, H, W)`
        - output: :math:`(N, C_f, H, W)`

    Examples:
        >>> p2f = SelectivePromptToFeature(feature_dim=6, prompt_dim=8, num_heads=2)
        >>> p2f(torch.randn(2, 6, 5, 7), torch.randn(2, 8, 5, 7)).shape
        torch.Size([2, 6, 5, 7])
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        num_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        top_m_fractions: Sequence[tuple[int, int]] = TOP_M_FRACTIONS,
    ) -> None:
        super().__init__()
        self.norm_feature = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.norm_prompt = RestormerLayerNorm(prompt_dim, layer_norm_type)
        self.attn = CrossChannelAttention(
            feature_dim, prompt_dim, num_heads, bias, out_dim=feature_dim, top_m_fractions=top_m_fractions
        )
        self.norm2 = RestormerLayerNorm(feature_dim, layer_norm_type)
        self.ffn = GDFN(feature_dim, ffn_expansion_factor, bias)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        z = feature + self.attn(self.norm_feature(feature), self.norm_prompt(prompt))
        return z + self.ffn(self.norm2(z))


# ----------------------------------------------------------------------------------------------------------
# The plug-in
# ----------------------------------------------------------------------------------------------------------
def _align_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the first ``channels`` channels, or zero-pad at the end up to ``channels``."""
    c = x.shape[1]
    if c > channels:
        return x[:, :channels]
    if c < channels:
        return F.pad(x, (0, 0, 0, 0, 0, channels - c))
    return x


class PIPBlock(nn.Module):
    """Prompt-In-Prompt on one skip connection: ``block(feature, omega) -> modulated feature``.

    1. ``D = mean_t(omega_t d_t) * Z_s``: the degradation-aware prompts (:class:`DegradationAwarePrompt`)
       scale the feature resized bilinearly to ``S x S`` (its channels truncated or
       zero-padded to the prompt width ``C_p``);
    2. ``U = P2P(B, D)`` (:class:`PromptToPrompt`), with the basic restoration prompt ``B``;
    3. ``U`` is resized to the feature's ``H x W`` and passed through a 3x3 convolution
       (``prompt_out``);
    4. ``Z_hat = P2F(Z, U)`` (:class:`SelectivePromptToFeature`).

    Every sample of the batch uses its own row of ``omega`` only, so a batch with mixed
    degradations equals the same images run one by one.

    Args:
        feature_dim: Channels ``C_f`` of the skip feature.
        prompt_dim: Prompt channels ``C_p``.
        prompt_size: Spatial size ``S`` of the basic restoration prompt.
        num_degradations: Number of degradation types ``T``.
        p2p_heads: Heads of the prompt-to-prompt attention (2 in PIP).
        p2f_heads: Heads of the prompt-to-feature attention (4 in PIP); must divide ``prompt_dim``.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - feature: :math:`(N, C_f, H, W)`
        - omega: :math:`(N, T)` (see :func:`resolve_degradation_weights`)
        - output: :math:`(N, C_f, H, W)`

    Examples:
        >>> block = PIPBlock(feature_dim=16, prompt_dim=8, prompt_size=4, num_degradations=5, p2f_heads=2)
        >>> omega = resolve_degradation_weights(["rain", "noise+haze"], batch_size=2)
        >>> block(torch.randn(2, 16, 9, 11), omega).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        prompt_size: int,
        num_degradations: int = len(DEFAULT_DEGRADATIONS),
        *,
        p2p_heads: int = 2,
        p2f_heads: int = 4,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.feature_dim, self.prompt_dim, self.prompt_size = feature_dim, prompt_dim, prompt_size
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self.degradation_prompt = DegradationAwarePrompt(num_degradations, prompt_dim)
        self.basic_prompt = BasicRestorationPrompt(prompt_dim, prompt_size)
        self.p2p = PromptToPrompt(prompt_dim, p2p_heads, *args)
        self.prompt_out = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.p2f = SelectivePromptToFeature(feature_dim, prompt_dim, p2f_heads, *args)

    def universal_prompt(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """The universal restoration prompt ``U`` at the prompt size ``S x S`` (before ``prompt_out``).

        Shape:
            - feature: :math:`(N, C_f, H, W)`
            - omega: :math:`(N, T)`
            - output: :math:`(N, C_p, S, S)`
        """
        if feature.ndim != 4 or feature.shape[1] != self.feature_dim:
            raise ValueError(
                f"PIPBlock expects a feature of shape (N, {self.feature_dim}, H, W), got {tuple(feature.shape)}"
            )
        if omega.shape[0] != feature.shape[0]:
            raise ValueError(f"omega has {omega.shape[0]} rows for a batch of {feature.shape[0]}")
        s = self.prompt_size
        z = F.interpolate(feature, size=(s, s), mode="bilinear", align_corners=False)
        d = self.degradation_prompt(omega).to(z.dtype) * _align_channels(z, self.prompt_dim)
        return self.p2p(self.basic_prompt(), d)

    def forward(self, feature: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        u = self.universal_prompt(feature, omega)
        u = F.interpolate(u, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        if feature.is_contiguous(memory_format=torch.channels_last):
            u = u.contiguous(memory_format=torch.channels_last)
        return self.p2f(feature, self.prompt_out(u))

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, prompt_dim={self.prompt_dim}, prompt_size={self.prompt_size}"
