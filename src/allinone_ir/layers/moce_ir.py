"""MoCE-IR's blocks (Zamfir et al., CVPR 2025): complexity experts, their router, the encoder/decoder blocks.

A decoder block of MoCE-IR splits its normalised input in two 1x1 projections: a *shared* path
(MDTA self-attention) and an *adapter* path, where a router picks ``top_k`` of several
*complexity experts* per image. The experts are low-rank FFT attentions whose rank (and FFT
patch size) grows from expert to expert, so some are cheap and some expensive; a
load-balancing loss (importance plus load, optionally weighted by each expert's parameter count:
"complexity bias") keeps the router from collapsing onto one of them. The two paths meet in a
cross attention, then a GDFN follows.

The attribute names are the official ones (``norms``, ``mixer``, ``ffn``, ``adapter.experts.<i>.0``,
``adapter.routing.gate.2``, ...), so official checkpoints load without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .attention import MDTA, channel_attention
from .feedforward import GDFN
from .norm import NormKind, RestormerLayerNorm
from .stage import Stage

__all__: list[str] = []

RANK_TYPES = ("constant", "lin", "double", "exp", "spread")


def expert_ranks(dim: int, rank: int, num_experts: int, rank_type: str) -> list[int]:
    """Ranks of the experts of one level, as the official ``rank_type`` defines them.

    Args:
        dim: Channels of the level.
        rank: The base rank (``latent_dim`` of the official options; unused by ``"spread"``).
        num_experts: Number of experts.
        rank_type: ``"spread"`` (``dim / 2^(E-1-i)``: the released models), ``"constant"``,
            ``"lin"`` (``rank + i``), ``"double"`` (``rank + 2i``) or ``"exp"`` (``rank^(i+1)``).

    Examples:
        >>> expert_ranks(48, 2, 4, "spread")
        [6, 12, 24, 48]
    """
    if rank_type == "spread":
        return [dim // 2**i for i in range(num_experts)][::-1]
    if rank_type == "constant":
        return [rank] * num_experts
    if rank_type == "lin":
        return [rank + i for i in range(num_experts)]
    if rank_type == "double":
        return [rank + 2 * i for i in range(num_experts)]
    if rank_type == "exp":
        return [rank ** (i + 1) for i in range(num_experts)]
    raise UsageError(f"rank_type must be one of {RANK_TYPES}, got {rank_type!r}")


class MoCEEncoderBlock(nn.Module):
    """Restormer block with MoCE-IR's names: ``x + mixer(norms[0](x))``, then ``x + ffn(norms[1](x))``.

    Args:
        dim: Channels.
        num_heads: Attention heads (must divide ``dim``).
        ffn_expansion_factor: GDFN hidden width relative to ``dim``.
        bias: Whether the convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> MoCEEncoderBlock(8, num_heads=2)(torch.randn(1, 8, 6, 5)).shape
        torch.Size([1, 8, 6, 5])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float = 2.0,
        bias: bool = True,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList([RestormerLayerNorm(dim, layer_norm_type) for _ in range(2)])
        self.mixer = MDTA(dim, num_heads, bias)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norms[0](x))
        return x + self.ffn(self.norms[1](x))


class MoCEBlockGroup(nn.Module):
    """A sequence of blocks kept at ``layers.<i>`` (the official residual groups' key names).

    Encoder blocks are kept in a :class:`~allinone_ir.layers.stage.Stage` (activation checkpointing
    available); decoder blocks, which take the frequency embedding too, in a ``ModuleList`` that
    the network iterates.

    Args:
        blocks: The blocks.
        stage: Keep them in a :class:`~allinone_ir.layers.stage.Stage` (single-input blocks).

    Shape:
        - Input: :math:`(N, C, H, W)` (and, for decoder blocks, the frequency embedding)
        - Output: :math:`(N, C, H, W)`
    """

    def __init__(self, blocks: Sequence[nn.Module], *, stage: bool = True) -> None:
        super().__init__()
        self.layers: nn.Module = Stage(*blocks) if stage else nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FFTAttention(nn.Module):
    """Patch-wise Fourier attention of MoCE-IR's experts.

    ``q = q_dwconv(q(x))`` (1x1, depthwise 3x3), ``k, v = kv_dwconv(kv(x))`` (1x1, depthwise 7x7);
    ``q`` and ``k`` are zero-padded to a multiple of ``patch_size`` and multiplied in the Fourier
    domain of each ``patch_size x patch_size`` patch (a circular correlation per patch, in float32);
    the result is cropped, layer-normalised, multiplied by ``v`` and projected (``proj_out``).

    Args:
        dim: Channels.
        patch_size: FFT patch size.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`

    Examples:
        >>> FFTAttention(4, patch_size=8)(torch.randn(2, 4, 10, 13)).shape
        torch.Size([2, 4, 10, 13])
    """

    def __init__(self, dim: int, *, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=7, padding=3, groups=dim * 2)
        self.norm = RestormerLayerNorm(dim, "WithBias")
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` zero-padded and viewed as ``(N, C, H/p, p, W/p, p)``, in float32."""
        p = self.patch_size
        n, c, h, w = x.shape
        x = F.pad(x.float(), (0, (-w) % p, 0, (-h) % p))
        return x.reshape(n, c, x.shape[2] // p, p, x.shape[3] // p, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(x)).chunk(2, dim=1)
        p = self.patch_size
        dims = (3, 5)
        prod = torch.fft.rfft2(self._patches(q), dim=dims) * torch.fft.rfft2(self._patches(k), dim=dims)
        out = torch.fft.irfft2(prod, s=(p, p), dim=dims)
        n, c, hp, _, wp, _ = out.shape
        out = out.reshape(n, c, hp * p, wp * p)[:, :, :h, :w]
        out = out.to(torch.promote_types(out.dtype, v.dtype))  # float64 networks: back to float64
        out = self.norm(out.contiguous(memory_format=torch.channels_last) if _channels_last(v) else out)
        return self.proj_out(out * v)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class LowRankExpert(nn.Module):
    """One complexity expert: ``x + proj[2](body(proj[0](x)) * silu(proj[1](shared)))`` (the official ``ModExpert``).

    The official ``ModExpert`` repeats this computation ``depth`` times on the same input and
    keeps the last result (so its depth has no effect); this is that single computation.

    Args:
        dim: Channels of the input.
        rank: Channels inside the expert.
        patch_size: FFT patch size of its :class:`FFTAttention`.

    Shape:
        - x, shared: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`
    """

    def __init__(self, dim: int, rank: int, *, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList([
            nn.Conv2d(dim, rank, kernel_size=1, bias=False),
            nn.Conv2d(dim, rank, kernel_size=1, bias=False),
            nn.Conv2d(rank, dim, kernel_size=1, bias=False),
        ])  # fmt: skip
        self.body = FFTAttention(rank, patch_size=patch_size)

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        y = self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))
        return self.proj[2](y) + x


class ExpertRouter(nn.Module):
    """MoCE-IR's router (official ``RoutingFunction``): noisy top-k gating plus its balancing loss.

    ``logits = gate(x) + freq_gate(freq_emb)`` (global average pool and a linear map, plus a
    linear map of the frequency embedding); the gates are the top-k of ``softmax(logits + noise)``
    (not renormalised). In training ``noise ~ N(0, (1/E)^2)`` as in the official code; in eval
    mode the official code adds the same noise, which makes its outputs random: here eval routing
    uses the noise-free logits unless :attr:`eval_noise` is set.

    The balancing loss is ``0.5 * importance + 0.5 * load``: the squared coefficient of variation
    of the batch's summed softmax probabilities (multiplied by each expert's relative parameter
    count when ``use_complexity_bias``) and of each expert's probability to be selected under
    the noise (Shazeer et al. 2017).

    Args:
        dim: Channels of the routed map.
        freq_dim: Size of the frequency embedding.
        complexity: Parameter count of each expert, ``(E,)``.
        k: Experts selected per image.
        use_complexity_bias: Weight the importance term by the experts' complexity.
        complexity_scale: ``"max"`` or ``"min"``: complexity divided by its maximum or minimum.

    Shape:
        - x: :math:`(N, C, H, W)`; freq_emb: :math:`(N, F)`
        - gates: :math:`(N, E)`, zero outside the top k
    """

    #: Add the routing noise in eval mode too (the official code does; outputs are then random).
    eval_noise: bool = False
    #: Add the routing noise in training (the official code does; the load loss keeps its noise model either way).
    train_noise: bool = True
    #: Experts selected per image in training (``None``: ``k``, as the official code).
    train_k: int | None = None

    def __init__(
        self,
        dim: int,
        freq_dim: int,
        complexity: torch.Tensor,
        *,
        k: int = 1,
        use_complexity_bias: bool = False,
        complexity_scale: str = "max",
    ) -> None:
        super().__init__()
        num_experts = int(complexity.numel())
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, num_experts, bias=False)
        )
        self.freq_gate = nn.Linear(freq_dim, num_experts, bias=False)
        complexity = complexity.float()
        if complexity_scale == "min":
            complexity = complexity / complexity.min()
        elif complexity_scale == "max":
            complexity = complexity / complexity.max()
        else:
            raise UsageError(f"complexity_scale must be 'max' or 'min', got {complexity_scale!r}")
        self.register_buffer("complexity", complexity)
        self.k = k
        self.num_experts = num_experts
        self.noise_std = 1.0 / num_experts
        self.use_complexity_bias = use_complexity_bias

    def forward(
        self, x: torch.Tensor, freq_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gates, the selected experts and the balancing loss (0 in eval mode).

        Returns:
            ``(gates, top_k_indices, loss)``: gates ``(N, E)``, indices ``(N, k)``, a scalar.
        """
        logits = (self.gate(x) + self.freq_gate(freq_emb)).float()
        noisy = self.train_noise if self.training else self.eval_noise
        noisy_logits = logits + torch.randn_like(logits) * self.noise_std if noisy else logits
        k = (self.train_k or self.k) if self.training else self.k
        values, indices = noisy_logits.softmax(dim=-1).topk(k, dim=-1)
        gates = torch.zeros_like(logits).scatter(1, indices, values)
        if self.training and self.num_experts > 1:
            loss = 0.5 * self._importance_loss(logits) + 0.5 * self._load_loss(logits, noisy_logits, k)
        else:
            loss = logits.new_zeros(())
        return gates, indices, loss

    def _importance_loss(self, logits: torch.Tensor) -> torch.Tensor:
        importance = logits.softmax(dim=-1).sum(dim=0)
        if self.use_complexity_bias:
            importance = importance * self.complexity
        return (importance.std() / (importance.mean() + 1e-8)) ** 2

    def _load_loss(self, logits: torch.Tensor, noisy_logits: torch.Tensor, k: int) -> torch.Tensor:
        kth = noisy_logits.topk(k, dim=-1).indices[:, -1:]
        threshold = noisy_logits.gather(1, kth)
        p = 1.0 - torch.special.ndtr((threshold - logits) / self.noise_std)
        p_mean = p.mean(dim=0)
        return (p_mean.std() / (p_mean.mean() + 1e-8)) ** 2


class ComplexityExperts(nn.Module):
    """MoCE-IR's mixture of complexity experts (official ``AdapterLayer``): route, run the selected experts, project.

    Expert ``i`` has rank ``ranks[i]`` and FFT patch size ``2^(i+2)``. Each image runs only its
    ``top_k`` experts, weighted by their gates; under ``torch.compile`` every expert runs on the
    whole batch and the unselected ones are weighted by 0 (same result, no data-dependent shapes).
    In a training step, an expert that no image selected still enters the graph with weight 0,
    so every parameter gets a gradient (DDP without ``find_unused_parameters``).

    Args:
        dim: Channels.
        ranks: Rank of each expert (see :func:`expert_ranks`).
        freq_dim: Size of the frequency embedding.
        top_k: Experts per image.
        use_complexity_bias: See :class:`ExpertRouter`.
        complexity_scale: See :class:`ExpertRouter`.

    Shape:
        - x, shared: :math:`(N, C, H, W)`; freq_emb: :math:`(N, F)`
        - Output: ``(out, loss)``: :math:`(N, C, H, W)` and a scalar
    """

    def __init__(
        self,
        dim: int,
        ranks: Sequence[int],
        *,
        freq_dim: int,
        top_k: int = 1,
        use_complexity_bias: bool = False,
        complexity_scale: str = "max",
    ) -> None:
        super().__init__()
        self.num_experts = len(ranks)
        if not 1 <= top_k <= self.num_experts:
            raise UsageError(f"top_k must be in [1, {self.num_experts}], got {top_k}")
        self.experts = nn.ModuleList(
            nn.ModuleList([LowRankExpert(dim, r, patch_size=2 ** (i + 2))]) for i, r in enumerate(ranks)
        )
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        complexity = torch.tensor([sum(p.numel() for p in e.parameters()) for e in self.experts])
        self.routing = ExpertRouter(
            dim, freq_dim, complexity, k=top_k,
            use_complexity_bias=use_complexity_bias, complexity_scale=complexity_scale,
        )  # fmt: skip

    def _expert(self, i: int) -> LowRankExpert:
        return self.experts[i][0]  # type: ignore[index,return-value]

    def forward(
        self, x: torch.Tensor, freq_emb: torch.Tensor, shared: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates, indices, loss = self.routing(x, freq_emb)
        if torch.compiler.is_compiling() or x.is_meta:
            # compiled: no data-dependent shapes; meta (FLOP counting): no routing decision to read,
            # so every expert runs (an upper bound of the cost)
            out = sum(
                gates[:, i].view(-1, 1, 1, 1).to(x.dtype) * self._expert(i)(x, shared)
                for i in range(self.num_experts)
            )
            return self.proj_out(out), loss
        out, unused = None, None
        n = x.shape[0]
        selected = (indices.unsqueeze(-1) == torch.arange(self.num_experts, device=x.device)).any(dim=1)
        for i, rows in enumerate(selected.t().tolist()):
            idx = [b for b, s in enumerate(rows) if s]
            expert = self._expert(i)
            if not idx:
                if self.training and torch.is_grad_enabled():  # zero-weighted: a gradient for DDP
                    term = sum(p.reshape(-1)[0] for p in expert.parameters())
                    unused = term if unused is None else unused + term
                continue
            if len(idx) == n:
                y = expert(x, shared) * gates[:, i].view(-1, 1, 1, 1).to(x.dtype)
                out = y if out is None else out + y
                continue
            sel = torch.tensor(idx, device=x.device)
            y = expert(x[sel], shared[sel]) * gates[sel, i].view(-1, 1, 1, 1).to(x.dtype)
            base = torch.zeros_like(x) if out is None else out
            out = base.index_add(0, sel, y.to(base.dtype))
        assert out is not None  # every image selects top_k >= 1 experts
        if unused is not None:
            out = out + 0.0 * unused.to(out.dtype)
        return self.proj_out(out), loss


class MoCECrossAttention(nn.Module):
    """MoCE-IR's transposed cross attention: queries from ``x``, keys and values from ``y``.

    ``q = q_dwconv(q(x))`` (1x1, depthwise 3x3), ``k, v = kv_dwconv(kv(y))`` (1x1, depthwise 7x7),
    channel attention per head (L2-normalised, learnable temperature), ``project_out``.

    Args:
        dim: Channels.
        num_heads: Heads (must divide ``dim``).
        bias: Whether the convolutions have a bias.

    Shape:
        - x, y: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)`
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UsageError(f"attention dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=7, padding=3, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        if q.dtype != v.dtype:  # the experts' FFT path may leave float32 under autocast
            q = q.to(v.dtype)
        return self.project_out(channel_attention(q, k, v, self.temperature, self.num_heads))


class MoCEDecoderBlock(nn.Module):
    """MoCE-IR decoder block: shared attention and complexity experts, joined by cross attention, then GDFN.

    ``x_s = shared(proj[0](LN(x)))``, ``x_a = adapter(proj[1](LN(x)), freq_emb, x_s)``,
    ``x = x + mixer(x_a, x_s)``, ``x = x + ffn(LN(x))``.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        ffn_expansion_factor: GDFN hidden width relative to ``dim``.
        bias: Whether the attention and GDFN convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        ranks: Rank of each expert.
        freq_dim: Size of the frequency embedding.
        top_k: Experts per image.
        use_complexity_bias: See :class:`ExpertRouter`.
        complexity_scale: See :class:`ExpertRouter`.

    Shape:
        - x: :math:`(N, C, H, W)`; freq_emb: :math:`(N, F)`
        - Output: ``(x, loss)``: :math:`(N, C, H, W)` and the router's balancing loss
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        layer_norm_type: NormKind,
        *,
        ranks: Sequence[int],
        freq_dim: int,
        top_k: int = 1,
        use_complexity_bias: bool = False,
        complexity_scale: str = "max",
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList([RestormerLayerNorm(dim, layer_norm_type) for _ in range(2)])
        self.proj = nn.ModuleList([nn.Conv2d(dim, dim, kernel_size=1) for _ in range(2)])
        self.shared = MDTA(dim, num_heads, bias)
        self.mixer = MoCECrossAttention(dim, num_heads, bias)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)
        self.adapter = ComplexityExperts(
            dim, ranks, freq_dim=freq_dim, top_k=top_k,
            use_complexity_bias=use_complexity_bias, complexity_scale=complexity_scale,
        )  # fmt: skip

    def forward(self, x: torch.Tensor, freq_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norms[0](x)
        x_s, x_a = self.proj[0](h), self.proj[1](h)
        x_s = self.shared(x_s)
        x_a, loss = self.adapter(x_a, freq_emb, x_s)
        x = x + self.mixer(x_a, x_s)
        return x + self.ffn(self.norms[1](x)), loss


class _HighPass(nn.Module):
    """Depthwise 3x3 convolution initialised to the Laplacian high-pass kernel (trainable, as in the official code)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        kernel = torch.full((3, 3), -1.0)
        kernel[1, 1] = 8.0
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand(dim, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FrequencyEmbedding(nn.Module):
    """Embedding of the bottleneck's high frequencies that conditions the routers.

    ``mlp(mean_hw(gelu(highpass(x))))``; the high-pass is a depthwise 3x3 convolution
    initialised to the Laplacian kernel. (The official code means to freeze it but assigns
    ``requires_grad_`` instead of calling it, so it trains; so does this one.)

    Args:
        dim: Channels of the bottleneck.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C)`
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.high_conv = nn.Sequential(_HighPass(dim), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.high_conv(x).mean(dim=(-2, -1)))
