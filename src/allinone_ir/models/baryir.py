"""BaryIR (Tang et al., TPAMI 2026): a Wasserstein-barycenter latent and its residual, decoded side by side.

A Restormer U-Net (``BaryNet``, the "Restormer backbone" of the released weights) whose latent is split
in two: the source latent ``s = LN(latent(x))`` is mapped by a second transformer stage to its
barycenter embedding ``b = LN(barylatent(s))`` (trained towards the Wasserstein barycenter of the
degradations' latent distributions: degradation-agnostic content), and the residual ``r = s - b`` keeps
what is specific to the degradation. The barycenter branch is the usual decoder; the residual branch
has its own decoder whose features are added, scaled by 0.8, to the skips the main decoder reads::

    x --encoder--> latent --LN--> s --barylatent, LN--> b ;  r = s - b
    main:     cat(b, r) --noise_level3, 1x1--> up --cat(., skip3 + 0.8 r3)--> decoder3 --> ... --> out + x
    residual: r --1x1, up--> r3 --1x1, decoder--> --1x1, up--> r2 --> ... --> r1 (added to each skip)

``LN`` is one layer norm (the same weights) applied to both ``s`` and ``b``. The training terms need
the latents (``forward(x, return_latents=True)``): :func:`barycenter_latent_loss` is the alignment of
``s`` and ``b``, the orthogonality of ``b`` and ``r`` and the contrast of the residuals between
degradations (the model's ``barycenter`` term); the official training also pushes ``b`` towards the
barycenter with adversarial Kantorovich potentials, a second network trained in turn, which is not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..layers import Downsample, OverlapPatchEmbed, RestormerLayerNorm, TransformerBlock, Upsample
from ..layers.norm import NormKind
from ..layers.stage import Stage
from ._base import AuxiliaryLoss, RestorationModel, drop_unused_modules
from ._detect import attention_heads, count_blocks, ffn_expansion_factor
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights

#: Modules the official ``BaryNet`` builds but never uses (PromptIR's leftovers, 215,296 parameters at
#: the official size); their checkpoint keys are dropped on load.
BARYIR_UNUSED_MODULES: tuple[str, ...] = (
    "chnl_reduce1", "chnl_reduce2", "chnl_reduce3",
    "reduce_noise_channel_1", "reduce_noise_channel_2", "reduce_noise_channel_3",
)  # fmt: skip

#: Weight of the residual decoder's features added to the main decoder's skips (official constant).
RESIDUAL_SKIP_SCALE = 0.8
#: Default weight of the ``barycenter`` term relative to the L1 loss: the official total is
#: ``bary_loss / N + Sigma * L1`` with ``--Sigma=10000`` (README commands).
DEFAULT_BARYCENTER_WEIGHT = 1e-4


def barycenter_latent_loss(
    source: torch.Tensor,
    bary: torch.Tensor,
    residual: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 0.07,
    weight: float = 0.05,
) -> torch.Tensor:
    """BaryIR's latent terms without the potentials: alignment, orthogonality and residual contrast.

    Per sample ``i`` (``z``: the flattened latent, L2-normalised), as ``trainer_bary.py`` computes them:
    ``rms(source_i - bary_i) + weight * (orth_i + contra_i)`` with ``orth_i = sum_j <z(bary_i),
    z(residual_j)>^2`` over the batch and ``contra_i = -log(pos_i / (pos_i + neg_i))``, where ``pos_i`` sums
    ``exp(<z(residual_i), z(residual_j)> / temperature)`` over the samples ``j`` of ``i``'s degradation
    (``i`` included) and ``neg_i`` over the others; the mean over the batch. The official loss also
    weights each sample by its source's normalised inverse dataset size and subtracts the adversarial
    Kantorovich potentials of the barycenter (a second network trained in turn); neither is part of
    this term. Without labels every sample is of one degradation (the contrast is 0).

    Args:
        source: Source latents (``forward(x, return_latents=True)[1]``).
        bary: Barycenter embeddings.
        residual: Residuals ``source - bary``.
        labels: Degradation label per sample, ``(N,)`` integers or ``(N, T)`` weights (their argmax).
        temperature: Contrast temperature (official 0.07).
        weight: Weight of the orthogonality and contrast terms (official 0.05).

    Returns:
        The scalar loss, float32.

    Shape:
        - source, bary, residual: :math:`(N, C, h, w)`
        - labels: :math:`(N,)` or :math:`(N, T)`

    Examples:
        >>> s, b = torch.randn(4, 8, 2, 2), torch.randn(4, 8, 2, 2)
        >>> barycenter_latent_loss(s, b, s - b, torch.tensor([0, 0, 1, 1])).shape
        torch.Size([])
    """
    n = source.shape[0]
    s, b, r = (t.float().reshape(n, -1) for t in (source, bary, residual))
    align = (s - b).square().mean(1).sqrt()
    zb, zr = F.normalize(b, dim=1), F.normalize(r, dim=1)
    orth = (zb @ zr.T).square().sum(1)
    if labels is None:
        contra = torch.zeros_like(align)
    else:
        lab = labels.argmax(1) if labels.dim() == 2 else labels
        if lab.shape != (n,):
            raise UsageError(f"labels must have shape ({n},) or ({n}, T), got {tuple(labels.shape)}")
        sim = torch.exp(zr @ zr.T / temperature)
        same = lab.to(sim.device)[:, None] == lab.to(sim.device)[None, :]
        contra = -torch.log((sim * same).sum(1) / sim.sum(1))
    return (align + weight * (orth + contra)).mean()


def _barycenter_term(
    model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    if "source" not in extras:
        return next(model.parameters()).new_zeros((), dtype=torch.float32)
    label = batch.get("label")
    labels = None if label is None else torch.as_tensor(label)
    return barycenter_latent_loss(extras["source"], extras["bary"], extras["residual"], labels)


def _stage(dim: int, heads: int, depth: int, args: tuple[float, bool, NormKind]) -> Stage:
    """``depth`` Restormer blocks in a row (one level; checkpointable)."""
    return Stage(*[TransformerBlock(dim, heads, *args) for _ in range(depth)])


def _conv1x1(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)


@register_architecture
class BaryIR(RestorationModel):
    """BaryIR with the Restormer backbone: a barycenter latent and its residual, decoded side by side.

    The official ``BaryNet(decoder=True)``: Restormer's encoder; the latent stage, a shared layer norm
    ``LN``, a second stage ``barylatent`` giving the barycenter embedding; a main decoder fed with the
    barycenter embedding and the residual (``noise_level1..3`` blocks and their 1x1 reductions between
    the levels) and a residual decoder (``res*`` modules) whose upsampled features are added, times 0.8,
    to the encoder skips. The ``noise_level*`` blocks use the third level's heads.

    Defaults are the official configuration (53,549,774 parameters; the official network also builds
    ``chnl_reduce1..3`` and ``reduce_noise_channel_1..3``, 215,296 parameters it never uses, whose keys
    are dropped on load: the official count is 53,765,070). State-dict keys equal the official ones, in
    the official order. Any ``H, W >= 1`` works (reflect padding to a multiple of 8, output cropped
    back; the official test script crops the image to a multiple of 8 instead).

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level.
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent; the
            barycenter stage has as many as the latent, the residual decoder as many as the main one).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the convolutions of the blocks and the 1x1 reductions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.

    Shape:
        - x: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - output: :math:`(N, C_{out}, H, W)`; with ``return_latents``, also the source latent, the
          barycenter embedding and the residual, each :math:`(N, 8 \\cdot dim, H_p / 8, W_p / 8)`
          (:math:`H_p, W_p`: the padded size)

    Examples:
        >>> net = BaryIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))
        >>> net(torch.rand(2, 3, 17, 30)).shape
        torch.Size([2, 3, 17, 30])
    """

    pad_multiple = 8

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise UsageError(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        a = (ffn_expansion_factor, bias, layer_norm_type)
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        h1, h2, h3, h4 = heads
        # construction order = the official order (state-dict keys in the official order)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        self.encoder_level1 = _stage(d1, h1, num_blocks[0], a)
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = _stage(d2, h2, num_blocks[1], a)
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = _stage(d3, h3, num_blocks[2], a)
        self.down3_4 = Downsample(d3)
        self.latent = _stage(d4, h4, num_blocks[3], a)
        self.barylatent = _stage(d4, h4, num_blocks[3], a)
        self.LN = RestormerLayerNorm(d4, layer_norm_type)
        # level 3: main (from cat(b, r), 2 * d4 channels) and residual (from r) branches
        self.up4_3 = Upsample(d3)
        self.reduce_chan_level3 = _conv1x1(d2 + d3, d3, bias)
        self.noise_level3 = TransformerBlock(2 * d4, h3, *a)
        self.reduce_noise_level3 = _conv1x1(2 * d4, d3, bias)
        self.decoder_level3 = _stage(d3, h3, num_blocks[2], a)
        self.resup4_3 = Upsample(d4)
        self.resreduce_chan_level3 = _conv1x1(d3, d3, bias)
        self.resreduce_noise_level3 = _conv1x1(d4, d4, bias)
        self.resdecoder_level3 = _stage(d3, h3, num_blocks[2], a)
        # level 2
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = _conv1x1(d3, d2, bias)
        self.noise_level2 = TransformerBlock(d3, h3, *a)
        self.reduce_noise_level2 = _conv1x1(d3, d3, bias)
        self.decoder_level2 = _stage(d2, h2, num_blocks[1], a)
        self.resup3_2 = Upsample(d3)
        self.resreduce_chan_level2 = _conv1x1(d2, d2, bias)
        self.resreduce_noise_level2 = _conv1x1(d3, d3, bias)
        self.resdecoder_level2 = _stage(d2, h2, num_blocks[1], a)
        # level 1
        self.up2_1 = Upsample(d2)
        self.resup2_1 = Upsample(d2)
        self.noise_level1 = TransformerBlock(d2, h3, *a)
        self.reduce_noise_level1 = _conv1x1(d2, d2, bias)
        self.resreduce_noise_level1 = _conv1x1(d2, d2, bias)
        self.decoder_level1 = _stage(d2, h1, num_blocks[0], a)
        self.refinement = _stage(d2, h1, num_refinement_blocks, a)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(
        self, x: torch.Tensor, return_latents: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Restore ``x``; with ``return_latents``, also ``(source, barycenter, residual)`` latents.

        Args:
            x: Degraded images.
            return_latents: Also return the latents the training terms need (the official forward
                always returns the four).

        Returns:
            The restored images, or ``(images, source, barycenter, residual)``.
        """
        inp, size = self._pad_input(x)
        enc1 = self.encoder_level1(self.patch_embed(inp))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        source = self.LN(self.latent(self.down3_4(enc3)))
        bary = self.LN(self.barylatent(source))
        residual = source - bary

        s = RESIDUAL_SKIP_SCALE
        main = self.reduce_noise_level3(self.noise_level3(torch.cat([bary, residual], 1)))
        res = self.resup4_3(self.resreduce_noise_level3(residual))
        main = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(main), enc3 + s * res], 1)))
        res = self.resdecoder_level3(self.resreduce_chan_level3(res))

        main = self.reduce_noise_level2(self.noise_level2(main))
        res = self.resup3_2(self.resreduce_noise_level2(res))
        main = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(main), enc2 + s * res], 1)))
        res = self.resdecoder_level2(self.resreduce_chan_level2(res))

        main = self.reduce_noise_level1(self.noise_level1(main))
        res = self.resup2_1(self.resreduce_noise_level1(res))
        main = self.refinement(self.decoder_level1(torch.cat([self.up2_1(main), enc1 + s * res], 1)))
        out = self._crop(self.output(main) + inp, size)
        if return_latents:
            return out, source, bary, residual
        return out

    # ------------------------------------------------------------------ what the family declares
    #: ``encoder``: Restormer's encoder and latent; ``barycenter``: the barycenter stage and the shared
    #: norm; ``decoder``: the main decoder; ``residual``: the residual decoder.
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "barycenter": ("barylatent", "LN"),
        "decoder": (
            "up*", "reduce_chan_level*", "noise_level*", "reduce_noise_level*", "decoder_level*",
            "refinement", "output",
        ),
        "residual": ("res*",),
    }  # fmt: skip

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the training forward for the latents (the ``barycenter`` term needs them)."""
        return {"return_latents": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split ``(image, source, bary, residual)`` into the image and ``{"source", "bary", "residual"}``.

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
        """
        if isinstance(output, torch.Tensor):
            return output, {}
        image, source, bary, residual = output
        return image, {"source": source, "bary": bary, "residual": residual}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """BaryIR's ``barycenter`` term (weight 1e-4 relative to L1): :func:`barycenter_latent_loss`.

        The labels come from ``batch["label"]`` when the batch has them. The official adversarial
        potentials are not part of it.
        """
        return [AuxiliaryLoss("barycenter", DEFAULT_BARYCENTER_WEIGHT, _barycenter_term)]

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A small BaryIR (one block per level, width 16); ``smoke``: width 8, for tests.

        Args:
            degradations: Unused: BaryIR is blind to the degradation.
            smoke: The smallest configuration (width 8).
        """
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a BaryIR state dict (official ``BaryNet`` or ours), else ``None``.

        Recognised by ``barylatent``, ``LN`` and ``resup4_3``; widths, block counts, heads and the
        feed-forward factor are read from the shapes as for Restormer.

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``BaryIR(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths.
        """
        needed = ("patch_embed.proj.weight", "output.weight", "LN.body.weight", "resup4_3.body.0.weight")
        if not all(k in state_dict for k in needed) or "barylatent.0.norm1.body.weight" not in state_dict:
            return None
        embed = state_dict["patch_embed.proj.weight"]
        return dict(
            in_channels=int(embed.shape[1]),
            out_channels=int(state_dict["output.weight"].shape[0]),
            dim=int(embed.shape[0]),
            num_blocks=[count_blocks(state_dict, n) for n in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")],
            num_refinement_blocks=count_blocks(state_dict, "refinement"),
            heads=[
                attention_heads(state_dict, ("encoder_level1", "decoder_level1", "refinement"), 1),
                attention_heads(state_dict, ("encoder_level2", "decoder_level2"), 2),
                attention_heads(state_dict, ("encoder_level3", "decoder_level3"), 4),
                attention_heads(state_dict, ("latent", "barylatent"), 8),
            ],
            ffn_expansion_factor=ffn_expansion_factor(state_dict),
            bias="output.bias" in state_dict,
            layer_norm_type="WithBias" if "LN.body.bias" in state_dict else "BiasFree",
        )  # fmt: skip

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Drop the keys of :data:`BARYIR_UNUSED_MODULES` (built by the official code, never used)."""
        return drop_unused_modules(state_dict, model, BARYIR_UNUSED_MODULES)


#: Classes of the official ``model_bary.py`` that a training checkpoint pickles.
_OFFICIAL_CLASSES = (
    "BaryNet", "Potentials", "TransformerBlock", "Attention", "FeedForward", "LayerNorm", "WithBias_LayerNorm",
    "BiasFree_LayerNorm", "Downsample", "Upsample", "OverlapPatchEmbed", "resblock",
)  # fmt: skip


def baryir_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights of an official BaryIR training file, read without the official code.

    The official trainer pickles the whole network (``torch.save({"epoch", "BaryIR": BaryNet, "Pots":
    Potentials})``), which ``torch.load(weights_only=True)`` refuses and a plain ``torch.load`` can only
    read with ``model_bary.py`` importable (and would run whatever the pickle names). This reads it with
    ``weights_only=True``, standing in an empty module for each ``model_bary`` class and allowing
    only the ``torch.nn`` layers the official network uses; no code of the file runs. Save the result
    (``torch.save(sd, "baryir.pth")``) and load or import that.

    Args:
        path: The official ``.pt`` / ``.pth`` file.

    Returns:
        The official state dict of ``BaryIR`` (``"BaryIR"``), keys as the official network names them.

    Raises:
        CheckpointError: If the file cannot be read this way or holds no ``BaryIR`` network.
    """
    stand_ins = [(type(name, (nn.Module,), {}), f"model_bary.{name}") for name in _OFFICIAL_CLASSES]
    layers = [
        nn.Conv2d, nn.Sequential, nn.ModuleList, nn.PixelShuffle, nn.PixelUnshuffle, nn.PReLU,
        nn.LeakyReLU, nn.Flatten, nn.Linear, nn.Identity,
    ]  # fmt: skip
    try:
        with torch.serialization.safe_globals([*stand_ins, *layers]):
            ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} as an official BaryIR training file: {exc}") from exc
    net = ckpt.get("BaryIR") if isinstance(ckpt, Mapping) else None
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"{path} holds no pickled BaryIR network under 'BaryIR'")
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@register_model
def baryir(**kwargs: Any) -> BaryIR:
    """BaryIR with the Restormer backbone, official configuration (53,549,774 parameters)."""
    return BaryIR(**kwargs)


# --------------------------------------------------------------------------- released weights
# Facts from the official repository github.com/xl-tang3/BaryIR (snapshot af5cb9a): README.md "Pretrained
# weights for 3- and 5-degradation benchmarks" (one Google Drive folder with the 3D and 5D files "based on
# the Restormer backbone"; the file names are not given, so the cache keeps them under the names below),
# trainer_bary.py (network BaryNet(decoder=True); save_checkpoint: torch.save({"epoch", "BaryIR": the
# whole pickled network, "Pots": the potentials}): a plain torch.load needs the official model_bary.py,
# baryir_official_state_dict does not), tester_bary.py (torch.load(path)["BaryIR"]; the image cropped to a multiple of 8; PSNR/SSIM
# by evaluate.py on the saved PNGs), LICENSE (MIT, Copyright (c) 2026 Xiaole Tang), and the README's
# result figure figs/5Dquant.png (the paper's Tables 1 and 2, rows "BaryIR_Restormer"; the rows
# "BaryIR_PromptIR" have no released weights). No hash or size is published.
_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/1OyGS4UNvLcVPmHPAKwkVw6ryBm9mRIuU",
    note="Google Drive folder with the 3D and 5D BaryIR (Restormer backbone) checkpoints (README)",
)
_LICENSE = "MIT (LICENSE of xl-tang3/BaryIR)"
_HOW = (
    "Google Drive only: download by hand. The official file pickles the whole network "
    "({{'epoch', 'BaryIR': BaryNet, 'Pots': Potentials}}), which torch.load(weights_only=True) refuses: "
    "extract the weights once with allinone_ir.models.baryir.baryir_official_state_dict (no official code "
    "needed), torch.save(baryir_official_state_dict(path), 'baryir.pth'), "
    "then `allinone-ir weights import {name} baryir.pth`."
)
_PROTOCOL = (
    "tester_bary.py: RGB PSNR/SSIM of the output PNG, each image cropped (not padded) to a multiple of 8"
)

register_weights(
    PretrainedWeights(
        name="baryir.three_task",
        arch="baryir",
        file_name="baryir_restormer_3d.pt",
        sources=(_DRIVE,),
        num_params=53_549_774,  # + 215,296 of unused modules in the file: the official 53,765,070
        tasks=("noise", "rain", "haze"),
        license=_LICENSE,
        training_data="BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze)",
        reported=(
            "SOTS 31.40/0.980",
            "Rain100L 39.02/0.985",
            "BSD68 sigma15 34.16/0.935",
            "BSD68 sigma25 31.54/0.892",
            "BSD68 sigma50 28.25/0.802",
            "average 32.86/0.919",
        ),  # figs/5Dquant.png, Table 1, row BaryIR_Restormer
        protocol="PromptIR's three-task protocol (BSD68, Rain100L, SOTS); " + _PROTOCOL,
        default=True,
        notes=_HOW.format(name="baryir.three_task"),
    )
)
register_weights(
    PretrainedWeights(
        name="baryir.five_task",
        arch="baryir",
        file_name="baryir_restormer_5d.pt",
        sources=(_DRIVE,),
        num_params=53_549_774,
        tasks=("noise", "rain", "haze", "blur", "lowlight"),
        license=_LICENSE,
        training_data="BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze), GoPro (blur), LOL-v1 (low light)",
        reported=(
            "SOTS 31.20/0.979",
            "Rain100L 38.10/0.982",
            "BSD68 sigma25 31.43/0.891",
            "GoPro 29.51/0.889",
            "LOL-v1 23.37/0.854",
            "average 30.72/0.919",
        ),  # figs/5Dquant.png, Table 2, row BaryIR_Restormer
        protocol="the five-task protocol (BSD68 sigma 25, Rain100L, SOTS, GoPro, LOL-v1); " + _PROTOCOL,
        notes=_HOW.format(name="baryir.five_task"),
    )
)
