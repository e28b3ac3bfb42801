"""MoCE-IR (Zamfir et al., CVPR 2025; eduardzamfir/MoCE-IR): a U-Net whose decoder routes to experts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..layers.attention import MDTA, CrossChannelAttention
from ..layers.feedforward import GDFN
from ..layers.norm import NormKind, RestormerLayerNorm, in_layout_of
from ..layers.stage import Stage
from ..layers.transformer import Downsample, OverlapPatchEmbed, Upsample
from ._base import AuxiliaryLoss, RestorationModel
from ._detect import count_blocks
from ._registry import register_architecture, register_model
from ._weights import ALL_IN_ONE, PretrainedWeights, WeightsSource, register_weights
from .restormer import restormer_low_precision_flags

__all__ = ["MoCEIR"]

RANK_TYPES = ("spread", "constant", "lin", "double", "exp")


def expert_ranks(dim: int, rank: int, num_experts: int, rank_type: str) -> list[int]:
    """Ranks of one level's experts: ``dim / 2^(E-1-i)``, ``rank``, ``rank + i``, ``rank + 2i`` or ``rank^(i+1)``."""
    ranks = {
        "spread": [dim // 2 ** (num_experts - 1 - i) for i in range(num_experts)],
        "constant": [rank] * num_experts,
        "lin": [rank + i for i in range(num_experts)],
        "double": [rank + 2 * i for i in range(num_experts)],
        "exp": [rank ** (i + 1) for i in range(num_experts)],
    }
    if rank_type not in ranks:
        raise UsageError(f"rank_type must be one of {RANK_TYPES}, got {rank_type!r}")
    return ranks[rank_type]


class MoCEEncoderBlock(nn.Module):
    """Restormer block with MoCE-IR's names: ``x + mixer(norms[0](x))``, then ``x + ffn(norms[1](x))``."""

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: NormKind
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList([RestormerLayerNorm(dim, layer_norm_type) for _ in range(2)])
        self.mixer = MDTA(dim, num_heads, bias)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norms[0](x))
        return x + self.ffn(self.norms[1](x))


class FFTAttention(nn.Module):
    """The experts' attention: ``proj_out(norm(q * k) * v)``, ``q * k`` in each patch's Fourier domain."""

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
        p = self.patch_size
        n, c, h, w = x.shape
        x = F.pad(x.float(), (0, (-w) % p, 0, (-h) % p))
        return x.reshape(n, c, x.shape[2] // p, p, x.shape[3] // p, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(x)).chunk(2, dim=1)
        p = self.patch_size
        prod = torch.fft.rfft2(self._patches(q), dim=(3, 5)) * torch.fft.rfft2(self._patches(k), dim=(3, 5))
        out = torch.fft.irfft2(prod, s=(p, p), dim=(3, 5))
        n, c, hp, _, wp, _ = out.shape
        out = out.reshape(n, c, hp * p, wp * p)[:, :, :h, :w]
        out = out.to(torch.promote_types(out.dtype, v.dtype))  # float64 networks: back to float64
        out = in_layout_of(out, x)
        return self.proj_out(self.norm(out) * v)


class LowRankExpert(nn.Module):
    """One expert (official ``ModExpert``): ``x + proj[2](body(proj[0](x)) * silu(proj[1](shared)))``."""

    def __init__(self, dim: int, rank: int, *, patch_size: int) -> None:
        super().__init__()
        sizes = ((dim, rank), (dim, rank), (rank, dim))
        self.proj = nn.ModuleList([nn.Conv2d(i, o, kernel_size=1, bias=False) for i, o in sizes])
        self.body = FFTAttention(rank, patch_size=patch_size)

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        y = self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))
        return self.proj[2](y) + x


class ExpertRouter(nn.Module):
    """Noisy top-k gating (official ``RoutingFunction``) and its load-balancing loss (Shazeer et al. 2017)."""

    eval_noise: bool = False  # set by MoCEIR's eval_routing_noise, routing_noise and train_top_k
    train_noise: bool = True
    train_k: int | None = None
    complexity: torch.Tensor

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
        if complexity_scale not in ("max", "min"):
            raise UsageError(f"complexity_scale must be 'max' or 'min', got {complexity_scale!r}")
        self.num_experts = int(complexity.numel())
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, self.num_experts, bias=False)
        )
        self.freq_gate = nn.Linear(freq_dim, self.num_experts, bias=False)
        complexity = complexity.float()
        scale = complexity.min() if complexity_scale == "min" else complexity.max()
        self.register_buffer("complexity", complexity / scale)
        self.k = k
        self.noise_std = 1.0 / self.num_experts
        self.use_complexity_bias = use_complexity_bias

    def forward(
        self, x: torch.Tensor, freq_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = (self.gate(x) + self.freq_gate(freq_emb)).float()
        noisy = self.train_noise if self.training else self.eval_noise
        noisy_logits = logits + torch.randn_like(logits) * self.noise_std if noisy else logits
        k = (self.train_k or self.k) if self.training else self.k
        values, indices = noisy_logits.softmax(dim=-1).topk(k, dim=-1)
        gates = torch.zeros_like(logits).scatter(1, indices, values)
        if not self.training or self.num_experts == 1:
            return gates, indices, logits.new_zeros(())
        importance = logits.softmax(dim=-1).sum(dim=0)
        if self.use_complexity_bias:
            importance = importance * self.complexity
        threshold = noisy_logits.topk(k, dim=-1).values[:, -1:]
        load = (1.0 - torch.special.ndtr((threshold - logits) / self.noise_std)).mean(dim=0)
        return gates, indices, 0.5 * _cv_squared(importance) + 0.5 * _cv_squared(load)


def _cv_squared(v: torch.Tensor) -> torch.Tensor:
    return (v.std() / (v.mean() + 1e-8)) ** 2


class ComplexityExperts(nn.Module):
    """Mixture of complexity experts (official ``AdapterLayer``): route, run the selected experts, project."""

    def __init__(
        self, dim: int, ranks: Sequence[int], *, freq_dim: int, top_k: int = 1, **router_kwargs: Any
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
        self.routing = ExpertRouter(dim, freq_dim, complexity, k=top_k, **router_kwargs)

    def _expert(self, i: int) -> LowRankExpert:
        return self.experts[i][0]  # type: ignore[index,return-value]

    def forward(
        self, x: torch.Tensor, freq_emb: torch.Tensor, shared: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates, indices, loss = self.routing(x, freq_emb)
        out = torch.zeros_like(x)
        if torch.compiler.is_compiling() or x.is_meta:  # no data-dependent shapes
            for i in range(self.num_experts):
                out = out + gates[:, i].view(-1, 1, 1, 1).to(x.dtype) * self._expert(i)(x, shared)
            return self.proj_out(out), loss
        selected = (indices.unsqueeze(-1) == torch.arange(self.num_experts, device=x.device)).any(dim=1)
        for i, rows in enumerate(selected.t().tolist()):
            expert = self._expert(i)
            if any(rows):
                sel = torch.tensor([b for b, s in enumerate(rows) if s], device=x.device)
                y = expert(x[sel], shared[sel]) * gates[sel, i].view(-1, 1, 1, 1).to(x.dtype)
                out = out.index_add(0, sel, y.to(out.dtype))
            elif self.training and torch.is_grad_enabled():  # weight 0: a gradient for DDP
                idle = torch.stack([p.reshape(-1)[0] for p in expert.parameters()]).sum()
                out = out + 0.0 * idle.to(x.dtype)
        # index_add returns a contiguous (NCHW) tensor whatever the layout of out
        return self.proj_out(in_layout_of(out, x)), loss


class MoCEDecoderBlock(nn.Module):
    """Decoder block: a shared MDTA path and the experts, joined by cross attention, then a GDFN."""

    def __init__(
        self, dim: int, num_heads: int, ffn_factor: float, bias: bool, norm_type: NormKind, **experts: Any
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList([RestormerLayerNorm(dim, norm_type) for _ in range(2)])
        self.proj = nn.ModuleList([nn.Conv2d(dim, dim, kernel_size=1) for _ in range(2)])
        self.shared = MDTA(dim, num_heads, bias)
        self.mixer = CrossChannelAttention(dim, dim, num_heads, bias, kv_kernel=7)
        self.ffn = GDFN(dim, ffn_factor, bias)
        self.adapter = ComplexityExperts(dim, **experts)

    def forward(self, x: torch.Tensor, freq_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norms[0](x)
        x_s = self.shared(self.proj[0](h))
        x_a, loss = self.adapter(self.proj[1](h), freq_emb, x_s)
        x = x + self.mixer(x_a, x_s)
        return x + self.ffn(self.norms[1](x)), loss


class FrequencyEmbedding(nn.Module):
    """``mlp(mean_hw(gelu(highpass(x))))``: the latent's high frequencies, which condition the routers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        with torch.no_grad():  # the Laplacian, trainable (the official freeze does not take)
            conv.weight.fill_(-1.0)
            conv.weight[:, :, 1, 1] = 8.0
        self.high_conv = nn.Sequential(nn.Sequential(OrderedDict(conv=conv)), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.high_conv(x).mean(dim=(-2, -1)))


def _balance_term(
    model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    if "balance" not in extras:
        raise UsageError(
            "the 'balance' term needs extras['balance']: run forward(x, **model.training_forward_kwargs(batch)) "
            "and split it with model.split_training_output"
        )
    return extras["balance"]


@register_architecture
class MoCEIR(RestorationModel):
    """MoCE-IR: Restormer encoder and refinement; decoder blocks with routed experts (official defaults, keys).

    Args:
        num_blocks: Encoder blocks per level, the last entry the latent's.
        num_dec_blocks: Decoder blocks per level (first entry: the full-resolution level).
        bias: Bias of the decoder's and the output's convolutions.
        rank: Base expert rank (official ``latent_dim``; unused by ``"spread"``).
        rank_type: ``"spread"``, ``"constant"``, ``"lin"``, ``"double"`` or ``"exp"`` (:func:`expert_ranks`).
        with_complexity: Weight the routers' importance loss by the experts' parameter counts.
        complexity_scale: ``"max"`` or ``"min"`` normalisation of the complexities.
        eval_routing_noise: Add the routing noise in eval mode too, as the official code does.
        routing_noise: Add the routing noise in training.
        train_top_k: Experts selected per image in training (``None``: ``top_k``).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`; with ``return_balance_loss=True`` also the balancing loss

    Examples:
        >>> net = MoCEIR(dim=8, num_blocks=(1, 1, 1, 1), num_dec_blocks=(1, 1, 1), num_refinement_blocks=1)
        >>> net.eval()(torch.rand(1, 3, 20, 28)).shape
        torch.Size([1, 3, 20, 28])
    """

    finetune_groups = {
        "encoder": ("patch_embed", "enc", "latent"),
        "decoder": ("freq_embed", "dec", "refinement", "output"),
    }

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_dec_blocks: Sequence[int] = (2, 4, 4),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        num_experts: int = 4,
        rank: int = 2,
        rank_type: str = "spread",
        top_k: int = 1,
        with_complexity: bool = False,
        complexity_scale: str = "max",
        eval_routing_noise: bool = False,
        routing_noise: bool = True,
        train_top_k: int | None = None,
    ) -> None:
        super().__init__()
        levels = len(num_blocks)
        if levels < 2 or len(heads) != levels or len(num_dec_blocks) != levels - 1:
            raise UsageError(
                f"MoCEIR needs len(heads) == len(num_blocks) >= 2 and len(num_dec_blocks) == len(num_blocks) - 1, "
                f"got {len(num_blocks)}, {len(heads)}, {len(num_dec_blocks)}"
            )
        if train_top_k is not None and not 1 <= train_top_k <= num_experts:
            raise UsageError(f"train_top_k must be in [1, {num_experts}] or None, got {train_top_k}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pad_multiple = 2 ** (levels - 1)
        self.num_dec_blocks = list(num_dec_blocks)
        dims = [dim * 2**i for i in range(levels)]

        def encoder_group(level: int, n: int) -> nn.Sequential:  # the official keys: layers.<i>
            args = (dims[level], heads[level], ffn_expansion_factor, True, layer_norm_type)
            return nn.Sequential(OrderedDict(layers=Stage(*[MoCEEncoderBlock(*args) for _ in range(n)])))

        self.patch_embed = OverlapPatchEmbed(in_channels, dim, bias=False)
        self.freq_embed = FrequencyEmbedding(dims[-1])
        self.enc = nn.ModuleList(
            nn.ModuleList([encoder_group(i, num_blocks[i]), Downsample(dims[i])]) for i in range(levels - 1)
        )
        self.latent = encoder_group(levels - 1, num_blocks[-1])
        self.dec = nn.ModuleList()
        router: dict[str, Any] = dict(use_complexity_bias=with_complexity, complexity_scale=complexity_scale)
        for level in reversed(range(levels - 1)):  # deepest first, as the official modules are ordered
            d = dims[level]
            ranks = expert_ranks(d, rank, num_experts, rank_type)
            args = (d, heads[level], ffn_expansion_factor, bias, layer_norm_type)
            blocks = [
                MoCEDecoderBlock(*args, ranks=ranks, freq_dim=dims[-1], top_k=top_k, **router)
                for _ in range(num_dec_blocks[level])
            ]
            up, fusion = Upsample(dims[level + 1]), nn.Conv2d(2 * d, d, 1, bias=bias)
            self.dec.append(nn.ModuleList([up, fusion, nn.ModuleDict({"layers": nn.ModuleList(blocks)})]))
        self.refinement = encoder_group(0, num_refinement_blocks)
        self.output = nn.Conv2d(dim, out_channels, kernel_size=3, padding=1, bias=bias)
        for m in self.modules():
            if isinstance(m, ExpertRouter):
                m.eval_noise, m.train_noise, m.train_k = eval_routing_noise, routing_noise, train_top_k

    def forward(self, x: torch.Tensor, *, return_balance_loss: bool = False) -> Any:
        """The restored image, or with ``return_balance_loss`` ``(image, balance_loss)``."""
        inp, size = self._pad_input(x)
        feats = self.patch_embed(inp)
        skips = []
        for level in self.enc:
            group, down = cast(nn.ModuleList, level)
            feats = group(feats)
            skips.append(feats)
            feats = down(feats)
        feats = self.latent(feats)
        freq_emb = self.freq_embed(feats)
        balance = feats.new_zeros((), dtype=torch.float32)
        for level in self.dec:
            up, fusion, group = cast(nn.ModuleList, level)
            feats = fusion(torch.cat([up(feats), skips.pop()], dim=1))
            for block in cast(nn.ModuleList, group.get_submodule("layers")):
                feats, loss = block(feats, freq_emb)
                balance = balance + loss
        out = self.output(self.refinement(feats))
        out = self._crop(out + inp if self.in_channels == self.out_channels else out, size)
        if return_balance_loss:
            return out, balance / max(sum(self.num_dec_blocks), 1)
        return out

    low_precision_flags = restormer_low_precision_flags

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``{"return_balance_loss": True}``: the ``balance`` term needs the routers' loss."""
        return {"return_balance_loss": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The image and ``{"balance": balance_loss}``."""
        if isinstance(output, tuple):
            return output[0], {"balance": output[1]}
        return output, {}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """``balance``: the routers' load-balancing loss averaged over the decoder blocks, weight 0.01."""
        return [AuxiliaryLoss("balance", 0.01, _balance_term)]  # the official --balance_loss_weight

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a MoCE-IR state dict (``top_k``, loss options: defaults), else ``None``."""
        embed, out = state_dict.get("patch_embed.proj.weight"), state_dict.get("output.weight")
        if embed is None or out is None or "freq_embed.mlp.0.weight" not in state_dict:
            return None
        levels = count_blocks(state_dict, "enc") + 1
        if levels < 2 or count_blocks(state_dict, "dec") != levels - 1:
            return None
        dim = int(embed.shape[0])
        enc = [f"enc.{i}.0" for i in range(levels - 1)] + ["latent"]
        dec = [f"dec.{levels - 2 - i}.2" for i in range(levels - 1)]

        def heads(level: int) -> int:  # the encoder's temperature, or the decoder's where it has no blocks
            keys = [f"{p}.layers.0.mixer.temperature" for p in [enc[level], *dec[level : level + 1]]]
            return next((int(state_dict[k].shape[0]) for k in keys if k in state_dict), 1)

        ffn = state_dict.get("latent.layers.0.ffn.project_out.weight")
        prefix = f"dec.{levels - 2}.2.layers.0.adapter.experts"
        num_experts = count_blocks(state_dict, prefix)
        ranks = [int(state_dict[f"{prefix}.{i}.0.proj.0.weight"].shape[0]) for i in range(num_experts)]
        config: dict[str, Any] = {
            "in_channels": int(embed.shape[1]),
            "out_channels": int(out.shape[0]),
            "dim": dim,
            "num_blocks": [count_blocks(state_dict, f"{p}.layers") for p in enc],
            "num_dec_blocks": [count_blocks(state_dict, f"{p}.layers") for p in dec],
            "num_refinement_blocks": count_blocks(state_dict, "refinement.layers"),
            "heads": [heads(level) for level in range(levels)],
            "ffn_expansion_factor": 2.0 if ffn is None else int(ffn.shape[1]) / (dim * 2 ** (levels - 1)),
            "bias": "output.bias" in state_dict,
            "layer_norm_type": "WithBias"
            if "refinement.layers.0.norms.0.body.bias" in state_dict
            else "BiasFree",
            "num_experts": num_experts,
        }
        if not ranks:
            return config
        for rank_type in RANK_TYPES:
            base = 2 if rank_type == "spread" else ranks[0]
            if expert_ranks(dim, base, num_experts, rank_type) == ranks:
                return {**config, "rank": base, "rank_type": rank_type}
        raise CheckpointError(
            f"MoCE-IR checkpoint: expert ranks {ranks} at dim {dim} follow no known rank_type"
        )


@register_model
def moce_ir(**kwargs: Any) -> MoCEIR:
    """MoCE-IR, official configuration (dim 48; 25,353,796 parameters)."""
    return MoCEIR(**kwargs)


@register_model
def moce_ir_s(**kwargs: Any) -> MoCEIR:
    """MoCE-IR-S, the official small configuration (dim 32; 11,477,752 parameters)."""
    return MoCEIR(**{"dim": 32, **kwargs})


# Released weights. Facts: github.com/eduardzamfir/MoCE-IR (snapshot a1a6e74) README.md (one Google Drive
# folder; checkpoints/<id>/last.ckpt, tested without --with_complexity), src/options.py, LICENSE.
_MOCE_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/1pQBceb8cCPdIzbqbNNGqV5qNXzzqL4uK",
    note="Google Drive folder (README 'Usage'); take <checkpoint id>/last.ckpt",
)
_REPLACED = "; the three-task file was replaced on 2025-03-13 (MoCE-IR issue 3)"
for _arch, _params, _model in (("moce_ir", 25_353_796, "MoCE_IR"), ("moce_ir_s", 11_477_752, "MoCE_IR_S")):
    for _variant, _suffix, _note in (("three_task", "AIO3", _REPLACED), ("five_task", "AIO5", "")):
        _tasks, _data = ALL_IN_ONE[_variant]
        register_weights(
            PretrainedWeights(
                name=f"{_arch}.{_variant}",
                arch=_arch,
                file_name=f"{_model}_{_suffix}.ckpt",
                sources=(_MOCE_DRIVE,),
                num_params=_params,
                tasks=_tasks,
                license="Apache-2.0 (LICENSE of eduardzamfir/MoCE-IR)",
                training_data=_data,
                protocol=f"src/test.py --checkpoint_id {_model}_{_suffix}: RGB PSNR (scikit-image), SSIM with "
                "a Gaussian window (gaussian_weights=True), crop to a multiple of 16",
                default=_variant == "three_task",
                notes="Google Drive only: download <id>/last.ckpt by hand, then `allinone-ir weights import "
                f"{_arch}.{_variant} FILE`{_note}",
            )
        )
