"""BaryIR (Tang et al., TPAMI 2026): a Wasserstein-barycenter latent and its residual, decoded side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..layers import RestormerLayerNorm, TransformerBlock, Upsample
from ..layers.norm import NormKind
from ._base import AuxiliaryLoss
from ._registry import register_architecture, register_model
from ._weights import ALL_IN_ONE, PretrainedWeights, WeightsSource, register_weights
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout, transformer_stage

#: Modules the official ``BaryNet`` builds but never uses (215,296 parameters); their keys are dropped on load.
BARYIR_UNUSED_MODULES = tuple(
    f"{name}{i}" for name in ("chnl_reduce", "reduce_noise_channel_") for i in (1, 2, 3)
)

#: Weight of the residual decoder's features added to the main decoder's skips (official constant).
RESIDUAL_SKIP_SCALE = 0.8
#: Weight of the ``barycenter`` term relative to L1 (official ``bary_loss / N + Sigma * L1``, ``Sigma=10000``).
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
    """BaryIR's latent terms of ``trainer_bary.py`` (alignment, orthogonality, residual contrast), float32.

    The official adversarial potentials are not part of it; without ``labels`` the contrast is 0.

    Args:
        labels: :math:`(N,)` degradation labels or :math:`(N, T)` weights.

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


def _conv1x1(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)


@register_architecture
class BaryIR(RestormerUNet):
    """BaryIR with the Restormer backbone (official ``BaryNet(decoder=True)``; official defaults and keys).

    Shape:
        - x: :math:`(N, C_{in}, H, W)`, any ``H, W >= 1``; output: :math:`(N, C_{out}, H, W)`
        - with ``return_latents`` also source, barycenter and residual, :math:`(N, 8 dim, H_p / 8, W_p / 8)`
          for the padded size :math:`H_p, W_p`

    Examples:
        >>> net = BaryIR(**BaryIR.small_config(smoke=True))
        >>> net(torch.rand(2, 3, 17, 30)).shape
        torch.Size([2, 3, 17, 30])
    """

    unused_modules = BARYIR_UNUSED_MODULES

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
        self.in_channels, self.out_channels = in_channels, out_channels
        a = (ffn_expansion_factor, bias, layer_norm_type)
        # the official construction order (keys in the official order)
        self._build_encoder(in_channels, dim, num_blocks, heads, *a)
        d2, d3, d4 = dim * 2, dim * 4, dim * 8
        h1, h2, h3, h4 = heads
        self.barylatent = transformer_stage(d4, h4, num_blocks[3], *a)
        self.LN = RestormerLayerNorm(d4, layer_norm_type)
        # level 3: main (from cat(b, r), 2 * d4 channels) and residual (from r) branches
        self.up4_3 = Upsample(d3)
        self.reduce_chan_level3 = _conv1x1(d2 + d3, d3, bias)
        self.noise_level3 = TransformerBlock(2 * d4, h3, *a)
        self.reduce_noise_level3 = _conv1x1(2 * d4, d3, bias)
        self.decoder_level3 = transformer_stage(d3, h3, num_blocks[2], *a)
        self.resup4_3 = Upsample(d4)
        self.resreduce_chan_level3 = _conv1x1(d3, d3, bias)
        self.resreduce_noise_level3 = _conv1x1(d4, d4, bias)
        self.resdecoder_level3 = transformer_stage(d3, h3, num_blocks[2], *a)
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = _conv1x1(d3, d2, bias)
        self.noise_level2 = TransformerBlock(d3, h3, *a)
        self.reduce_noise_level2 = _conv1x1(d3, d3, bias)
        self.decoder_level2 = transformer_stage(d2, h2, num_blocks[1], *a)
        self.resup3_2 = Upsample(d3)
        self.resreduce_chan_level2 = _conv1x1(d2, d2, bias)
        self.resreduce_noise_level2 = _conv1x1(d3, d3, bias)
        self.resdecoder_level2 = transformer_stage(d2, h2, num_blocks[1], *a)
        self.up2_1 = Upsample(d2)
        self.resup2_1 = Upsample(d2)
        self.noise_level1 = TransformerBlock(d2, h3, *a)
        self.reduce_noise_level1 = _conv1x1(d2, d2, bias)
        self.resreduce_noise_level1 = _conv1x1(d2, d2, bias)
        self.decoder_level1 = transformer_stage(d2, h1, num_blocks[0], *a)
        self.refinement = transformer_stage(d2, h1, num_refinement_blocks, *a)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, return_latents: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The restored images, or with ``return_latents`` ``(images, source, barycenter, residual)``."""
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
        out = self.output(main)
        out = self._crop(out + inp if self.in_channels == self.out_channels else out, size)
        if return_latents:
            return out, source, bary, residual
        return out

    def low_precision_flags(self) -> list[tuple[str, nn.Module, str]]:
        """None: BaryIR runs wholly in the autocast dtype."""
        return []

    finetune_groups = {
        "encoder": RESTORMER_GROUPS["encoder"],
        "barycenter": ("barylatent", "LN"),
        "decoder": (*RESTORMER_GROUPS["decoder"], "noise_level*", "reduce_noise_level*"),
        "residual": ("res*",),
    }

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``{"return_latents": True}``: the ``barycenter`` term needs the latents."""
        return {"return_latents": True}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The image and ``{"source", "bary", "residual"}``."""
        if isinstance(output, torch.Tensor):
            return output, {}
        image, source, bary, residual = output
        return image, {"source": source, "bary": bary, "residual": residual}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """``barycenter`` (weight 1e-4): :func:`barycenter_latent_loss`, with ``batch["label"]`` if present."""
        return [AuxiliaryLoss("barycenter", DEFAULT_BARYCENTER_WEIGHT, _barycenter_term)]

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """One block per level, width 16 (``smoke``: 8); BaryIR is blind to the degradation."""
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a BaryIR state dict (``barylatent``, ``LN``, ``resup4_3``), else ``None``."""
        needed = ("LN.body.weight", "resup4_3.body.0.weight", "barylatent.0.norm1.body.weight")
        return _read_restormer_layout(state_dict, *needed)


def baryir_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights of an official BaryIR training file (a pickled ``BaryNet``), read without its code.

    Raises:
        CheckpointError: If the file cannot be read this way or holds no ``BaryIR`` network.
    """
    # weights_only=True with stand-ins for the classes of the official model_bary.py that the file pickles
    official = "BaryNet Potentials TransformerBlock Attention FeedForward LayerNorm WithBias_LayerNorm "
    official += "BiasFree_LayerNorm Downsample Upsample OverlapPatchEmbed resblock"
    stand_ins = [(type(name, (nn.Module,), {}), f"model_bary.{name}") for name in official.split()]
    torch_layers = (
        "Conv2d Sequential ModuleList PixelShuffle PixelUnshuffle PReLU LeakyReLU Flatten Linear Identity"
    )
    try:
        with torch.serialization.safe_globals([*stand_ins, *(getattr(nn, n) for n in torch_layers.split())]):
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


# Released weights: github.com/xl-tang3/BaryIR (snapshot af5cb9a): README (one Drive folder; the file names are
# ours), trainer_bary.py, tester_bary.py, LICENSE, figs/5Dquant.png (the paper's Tables 1-2, BaryIR_Restormer).
_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/1OyGS4UNvLcVPmHPAKwkVw6ryBm9mRIuU",
    note="Google Drive folder with the 3D and 5D BaryIR (Restormer backbone) checkpoints (README)",
)
_PROTOCOL = (
    "tester_bary.py: RGB PSNR/SSIM of the output PNG, each image cropped (not padded) to a multiple of 8"
)


def _register(variant: str, file: str, protocol: str, reported: tuple[str, ...]) -> None:
    tasks, data = ALL_IN_ONE[variant]
    register_weights(
        PretrainedWeights(
            name=f"baryir.{variant}",
            arch="baryir",
            file_name=file,
            sources=(_DRIVE,),
            num_params=53_549_774,  # + 215,296 of unused modules in the file: the official 53,765,070
            tasks=tasks,
            license="MIT (LICENSE of xl-tang3/BaryIR)",
            training_data=data,
            reported=reported,
            protocol=protocol + _PROTOCOL,
            default=variant == "three_task",
            notes="Google Drive only: download by hand. The official file pickles the whole network "
            "({'epoch', 'BaryIR': BaryNet, 'Pots': Potentials}), which torch.load(weights_only=True) refuses: "
            "extract the weights once with allinone_ir.models.baryir.baryir_official_state_dict (no official "
            "code needed), torch.save(baryir_official_state_dict(path), 'baryir.pth'), "
            f"then `allinone-ir weights import baryir.{variant} baryir.pth`.",
        )
    )


_register(
    "three_task",
    "baryir_restormer_3d.pt",
    "PromptIR's three-task protocol (BSD68, Rain100L, SOTS); ",
    (
        "SOTS 31.40/0.980",
        "Rain100L 39.02/0.985",
        "BSD68 sigma15 34.16/0.935",
        "BSD68 sigma25 31.54/0.892",
        "BSD68 sigma50 28.25/0.802",
        "average 32.86/0.919",
    ),
)
_register(
    "five_task",
    "baryir_restormer_5d.pt",
    "the five-task protocol (BSD68 sigma 25, Rain100L, SOTS, GoPro, LOL-v1); ",
    (
        "SOTS 31.20/0.979",
        "Rain100L 38.10/0.982",
        "BSD68 sigma25 31.43/0.891",
        "GoPro 29.51/0.889",
        "LOL-v1 23.37/0.854",
        "average 30.72/0.919",
    ),
)
