"""MoCE-IR: mixture of complexity experts for all-in-one restoration (Zamfir et al., CVPR 2025).

A Restormer-style U-Net whose decoder blocks route each image to ``top_k`` of several low-rank
FFT-attention experts of increasing rank ("complexity"); the routers see the block's input and a
frequency embedding of the bottleneck. Training adds the routers' load-balancing loss (the
``balance`` term, weight 0.01 as in the official recipe). Official code: eduardzamfir/MoCE-IR,
``src/net/moce_ir.py`` (Apache-2.0); the key names are the official ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, UsageError
from ..layers.moce_ir import (
    RANK_TYPES,
    ExpertRouter,
    FrequencyEmbedding,
    MoCEBlockGroup,
    MoCEDecoderBlock,
    MoCEEncoderBlock,
    expert_ranks,
)
from ..layers.norm import NormKind
from ..layers.transformer import Downsample, OverlapPatchEmbed, Upsample
from ._base import AuxiliaryLoss, RestorationModel
from ._detect import count_blocks
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import restormer_low_precision_flags

__all__ = ["MoCEIR"]

#: Weight of the routers' load-balancing loss in the official recipe (``--balance_loss_weight 0.01``).
DEFAULT_BALANCE_WEIGHT: float = 0.01


def _balance_term(
    model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The ``balance`` term: the routers' load-balancing loss of the training forward (mean over decoder blocks).

    Raises:
        ValueError: If ``extras`` has no ``"balance"`` (the forward was not run with the network's
            ``training_forward_kwargs(batch)``).
    """
    loss = extras.get("balance")
    if loss is None:
        raise UsageError(
            "the 'balance' term needs the routers' loss in extras['balance']: run "
            "forward(x, **model.training_forward_kwargs(batch)) and split it with model.split_training_output"
        )
    return loss


@register_architecture
class MoCEIR(RestorationModel):
    """MoCE-IR: a U-Net with mixtures of complexity experts in its decoder (CVPR 2025).

    Encoder, latent and refinement: Restormer blocks (MDTA + GDFN, with biases, as in the
    official code). Each decoder block (:class:`~allinone_ir.layers.moce_ir.MoCEDecoderBlock`)
    has a shared MDTA path and a mixture of ``num_experts`` low-rank FFT-attention experts
    (ranks ``dim_level / 8, / 4, / 2, / 1`` for ``rank_type="spread"``), joined by cross
    attention. The routers are conditioned on a frequency embedding of the latent features.

    Defaults are the official MoCE-IR (25,353,796 parameters; ``dim=32``: MoCE-IR-S,
    11,477,752); every parameter is used. State-dict keys equal the official ones (Lightning's
    ``net.`` prefix is stripped on load). Any ``H, W >= 1`` works (reflect padding to a multiple of
    ``2^(levels-1)``, output cropped back).

    Routing (:class:`~allinone_ir.layers.moce_ir.ExpertRouter`) adds Gaussian noise to the router
    logits in training; eval routing is deterministic unless ``eval_routing_noise=True``. Each image
    runs its own top-k experts.

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level.
        num_blocks: Encoder blocks per level, the last entry the latent's.
        num_dec_blocks: Decoder blocks per level (first entry: the full-resolution level).
        num_refinement_blocks: Blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the decoder's attention/GDFN convolutions, the fusion 1x1 convolutions and
            the output convolution have a bias (the encoder's always have one, as in the official code).
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        num_experts: Experts per decoder block.
        rank: Base expert rank (official ``latent_dim``; unused by ``rank_type="spread"``).
        rank_type: How expert ranks grow (see :func:`~allinone_ir.layers.moce_ir.expert_ranks`).
        top_k: Experts selected per image.
        with_complexity: Weight the routers' importance loss by the experts' parameter counts
            (the official ``--with_complexity`` flag; training only; the released commands leave it off).
        complexity_scale: ``"max"`` or ``"min"`` normalisation of the complexities.
        eval_routing_noise: Add the routing noise in eval mode too, as the official code does.
        routing_noise: Add the routing noise in training, as the official code does (``False``:
            deterministic training forwards, e.g. to compare runs; the load loss is unchanged).
        train_top_k: Experts selected per image in training (``None``: ``top_k``, as the official
            code); e.g. ``num_experts`` trains every expert on every image (the tiny test configurations
            use it so that every parameter gets a non-zero gradient). Eval uses ``top_k``.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - Output: :math:`(N, C_{out}, H, W)`; with ``return_balance_loss=True`` also the
          routers' balancing loss (a scalar, 0 in eval mode)

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
        if rank_type not in RANK_TYPES:
            raise UsageError(f"rank_type must be one of {RANK_TYPES}, got {rank_type!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.pad_multiple = 2 ** (levels - 1)
        self.num_dec_blocks = list(num_dec_blocks)
        dims = [dim * 2**i for i in range(levels)]

        def encoder_group(level: int, n: int) -> MoCEBlockGroup:
            return MoCEBlockGroup(
                [
                    MoCEEncoderBlock(dims[level], heads[level], ffn_expansion_factor, True, layer_norm_type)
                    for _ in range(n)
                ]
            )

        self.patch_embed = OverlapPatchEmbed(in_channels, dim, bias=False)
        self.freq_embed = FrequencyEmbedding(dims[-1])
        self.enc = nn.ModuleList(
            nn.ModuleList([encoder_group(i, num_blocks[i]), Downsample(dims[i])]) for i in range(levels - 1)
        )
        self.latent = encoder_group(levels - 1, num_blocks[-1])
        self.dec = nn.ModuleList()
        for level in reversed(range(levels - 1)):  # deepest first, as the official modules are ordered
            d = dims[level]
            blocks = [
                MoCEDecoderBlock(
                    d,
                    heads[level],
                    ffn_expansion_factor,
                    bias,
                    layer_norm_type,
                    ranks=expert_ranks(d, rank, num_experts, rank_type),
                    freq_dim=dims[-1],
                    top_k=top_k,
                    use_complexity_bias=with_complexity,
                    complexity_scale=complexity_scale,
                )
                for _ in range(num_dec_blocks[level])
            ]
            self.dec.append(
                nn.ModuleList(
                    [
                        Upsample(dims[level + 1]),
                        nn.Conv2d(2 * d, d, 1, bias=bias),
                        MoCEBlockGroup(blocks, stage=False),
                    ]
                )
            )
        self.refinement = encoder_group(0, num_refinement_blocks)
        self.output = nn.Conv2d(dim, out_channels, kernel_size=3, padding=1, bias=bias)
        for m in self.modules():
            if isinstance(m, ExpertRouter):
                m.eval_noise, m.train_noise, m.train_k = eval_routing_noise, routing_noise, train_top_k

    def forward(self, x: torch.Tensor, *, return_balance_loss: bool = False) -> Any:
        """Restore ``x``; with ``return_balance_loss`` also return the routers' balancing loss.

        Returns:
            The image, or ``(image, balance_loss)``.
        """
        inp, size = self._pad_input(x)
        feats = self.patch_embed(inp)
        skips = []
        for group, down in self.enc:  # type: ignore[misc]
            feats = group(feats)
            skips.append(feats)
            feats = down(feats)
        feats = self.latent(feats)
        freq_emb = self.freq_embed(feats)
        balance = feats.new_zeros((), dtype=torch.float32)
        for up, fusion, group in self.dec:  # type: ignore[misc]
            feats = fusion(torch.cat([up(feats), skips.pop()], dim=1))
            for block in group.layers:
                feats, loss = block(feats, freq_emb)
                balance = balance + loss
        out = self._crop(self.output(self.refinement(feats)) + inp, size)
        if return_balance_loss:
            return out, balance / max(sum(self.num_dec_blocks), 1)
        return out

    # ------------------------------------------------------------------ training recipe of the family
    def low_precision_flags(self) -> list[tuple[str, nn.Module, str]]:
        """The modules kept in float32 under bf16/fp16 (Restormer's choice, on MoCE-IR's names)."""
        return restormer_low_precision_flags(self)

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the training forward for the routers' balancing loss as well (one forward, as DDP needs)."""
        return {"return_balance_loss": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split ``(image, balance_loss)`` into the image and ``{"balance": balance_loss}``.

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
        """
        if isinstance(output, torch.Tensor):
            return output, {}
        if (
            isinstance(output, tuple)
            and len(output) == 2
            and all(isinstance(t, torch.Tensor) for t in output)
        ):
            return output[0], {"balance": output[1]}
        raise UsageError(
            "expected the output of forward(x, **training_forward_kwargs(batch)): an image tensor or "
            f"(image, balance_loss), got {type(output).__name__}"
        )

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """MoCE-IR's training term: ``balance``, the routers' load-balancing loss, weight 0.01.

        ``0.5 * importance + 0.5 * load`` per decoder block (see
        :class:`~allinone_ir.layers.moce_ir.ExpertRouter`), averaged over the blocks, as the
        official ``total_loss``. Change the weight with ``trainer.aux_weights: {balance: ...}``.
        """
        return [AuxiliaryLoss("balance", DEFAULT_BALANCE_WEIGHT, _balance_term)]

    # ------------------------------------------------------------------ checkpoints of the family
    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a MoCE-IR state dict (official or ours), else ``None``.

        Read from the shapes: channels, levels, block counts, heads, GDFN factor, biases, norm
        kind, expert count and ranks (``rank_type``). Not stored in the weights, left at the
        official defaults: ``top_k`` (1), ``with_complexity`` and ``complexity_scale``.

        Raises:
            CheckpointError: If the expert ranks follow none of the known rank types.
        """
        embed = state_dict.get("patch_embed.proj.weight")
        out = state_dict.get("output.weight")
        if embed is None or out is None or "freq_embed.mlp.0.weight" not in state_dict:
            return None
        levels = count_blocks(state_dict, "enc") + 1
        if levels < 2 or count_blocks(state_dict, "dec") != levels - 1:
            return None
        dim = int(embed.shape[0])

        def heads(prefix: str, default: int) -> int:
            t = state_dict.get(f"{prefix}.layers.0.mixer.temperature")
            return default if t is None else int(t.shape[0])

        num_blocks = [count_blocks(state_dict, f"enc.{i}.0.layers") for i in range(levels - 1)]
        num_blocks.append(count_blocks(state_dict, "latent.layers"))
        num_dec = [count_blocks(state_dict, f"dec.{levels - 2 - i}.2.layers") for i in range(levels - 1)]
        head_list = [heads(f"enc.{i}.0", 1) for i in range(levels - 1)] + [heads("latent", 1)]
        for level in range(levels - 1):
            if num_blocks[level] == 0:
                head_list[level] = heads(f"dec.{levels - 2 - level}.2", head_list[level])
        ffn = state_dict.get("latent.layers.0.ffn.project_out.weight")
        factor = 2.0 if ffn is None else int(ffn.shape[1]) / (dim * 2 ** (levels - 1))
        prefix = f"dec.{levels - 2}.2.layers.0.adapter.experts"
        num_experts = count_blocks(state_dict, prefix)
        ranks = [int(state_dict[f"{prefix}.{i}.0.proj.0.weight"].shape[0]) for i in range(num_experts)]
        config: dict[str, Any] = {
            "in_channels": int(embed.shape[1]),
            "out_channels": int(out.shape[0]),
            "dim": dim,
            "num_blocks": num_blocks,
            "num_dec_blocks": num_dec,
            "num_refinement_blocks": count_blocks(state_dict, "refinement.layers"),
            "heads": head_list,
            "ffn_expansion_factor": factor,
            "bias": "output.bias" in state_dict,
            "layer_norm_type": "WithBias"
            if "refinement.layers.0.norms.0.body.bias" in state_dict
            else "BiasFree",
            "num_experts": num_experts,
        }
        if not ranks:
            return config
        for rank_type in ("spread", "constant", "lin", "double", "exp"):
            base = 2 if rank_type == "spread" else ranks[0]
            if expert_ranks(dim, base, num_experts, rank_type) == ranks:
                config.update(rank=base, rank_type=rank_type)
                return config
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


# --------------------------------------------------------------------------- released weights
# Facts from the official repository github.com/eduardzamfir/MoCE-IR (snapshot a1a6e74, 2025-03-14):
# README.md ("03/04/2025: Full code & models release"; checkpoints and visual results in one Google Drive
# folder, placed as checkpoints/<checkpoint_id>/last.ckpt by src/test.py; "Evaluation" names the ids
# [MODEL]_AIO3 and [MODEL]_AIO5 for MODEL in MoCE_IR, MoCE_IR_S, tested without --with_complexity),
# src/options.py (MoCE_IR dim 48, MoCE_IR_S dim 32, otherwise the same options), LICENSE (Apache 2.0).
# The three-task file was replaced on 2025-03-13 (the repository's issue 3; not readable from here).
# The files inside the folder could not be listed from here. No hash or size is published.
_MOCE_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/1pQBceb8cCPdIzbqbNNGqV5qNXzzqL4uK",
    note="Google Drive folder (README 'Usage'); take <checkpoint id>/last.ckpt",
)
for _arch, _params, _model in (("moce_ir", 25_353_796, "MoCE_IR"), ("moce_ir_s", 11_477_752, "MoCE_IR_S")):
    for _variant, _suffix, _tasks, _data in (
        ("three_task", "AIO3", ("noise", "rain", "haze"), "BSD400 + WED, Rain100L, SOTS/RESIDE outdoor"),
        ("five_task", "AIO5", ("noise", "rain", "haze", "blur", "lowlight"),
         "BSD400 + WED, Rain100L, SOTS/RESIDE outdoor, GoPro, LOL-v1"),
    ):  # fmt: skip
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
                f"{_arch}.{_variant} FILE`"
                + (
                    "; the three-task file was replaced on 2025-03-13 (MoCE-IR issue 3)"
                    if _suffix == "AIO3"
                    else ""
                ),
            )
        )
