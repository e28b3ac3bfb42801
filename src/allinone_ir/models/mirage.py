"""MIRAGE (Ren et al., ICLR 2026): channel-wise functional decomposition and SPD manifold regularisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.attention import channel_attention
from ..layers.feedforward import GDFN
from ..layers.norm import NormKind, RestormerLayerNorm, in_layout_of
from ..layers.stage import Stage
from ..layers.transformer import Upsample
from ._base import AuxiliaryLoss
from ._registry import register_architecture, register_model
from ._weights import ALL_IN_ONE, PretrainedWeights, WeightsSource, register_weights
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout

#: Channels of the shallow and latent features the SPD head reduces to, and the width of its projections.
SPD_CHANNELS: tuple[int, int] = (12, 24)
SPD_DIM = 64
SPD_HEAD = ("reduce_shallow", "reduce_latent", "spd_proj_shallow", "spd_proj_latent")
#: Weights of the spectrum L1 term (official ``--fft_loss_weight``) and of the SPD contrastive term.
DEFAULT_FFT_WEIGHT = 0.1
DEFAULT_SPD_WEIGHT = 0.01
SPD_TEMPERATURE = 0.1


class _GatedCNNBlock(nn.Module):
    """MIRAGE's gated branch with a per-sample dynamic depthwise convolution (kernels from ``kernel_generator``)."""

    def __init__(self, dim: int, drop_path: float = 0.1, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = int(8 / 3 * dim)
        self.norm = nn.BatchNorm2d(dim)
        self.gic1 = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.split_indices = [hidden, hidden - dim, dim]
        self.kernel_size = kernel_size
        self.drop_path = drop_path
        self.kernel_generator = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(dim, dim * kernel_size * kernel_size, 1, bias=False),
        )
        self.gic2 = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, i, c = torch.split(self.gic1(self.norm(x)), self.split_indices, dim=1)
        n, ch, h, w = c.shape
        k = self.kernel_size
        kernel = self.kernel_generator(c).reshape(n * ch, 1, k, k)
        stacked = in_layout_of(c.reshape(1, n * ch, h, w), c)
        c = F.conv2d(stacked, kernel, padding=k // 2, groups=n * ch).reshape(n, ch, h, w)
        y = self.gic2(F.gelu(g / self.temperature) * torch.cat((i, c), dim=1))
        if self.training and self.drop_path > 0:  # stochastic depth per sample (timm's DropPath)
            keep = 1.0 - self.drop_path
            y = y * y.new_empty((n, 1, 1, 1)).bernoulli_(keep).div_(keep)
        return self.proj_out(y + x)


class _MirageAttention(nn.Module):
    """Thirds of the channels to channel attention, the gated branch and an MLP, each modulated by the others."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False, drop_path: float = 0.1) -> None:
        super().__init__()
        a = dim // 3
        if dim % 3 or a % num_heads:
            raise UsageError(f"MIRAGE: channels ({dim}) must be 3 x a multiple of the heads ({num_heads})")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(a, a * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(a * 3, a * 3, kernel_size=3, padding=1, groups=a * 3, bias=bias)
        self.gatedcnn = _GatedCNNBlock(a, drop_path=drop_path)
        self.mlp = nn.Sequential(
            nn.Conv1d(a, a * 2, 1, bias=bias), nn.GELU(), nn.Conv1d(a * 2, a, 1, bias=bias)
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.alpha_att = nn.Parameter(torch.ones(1))
        self.alpha_gated = nn.Parameter(torch.ones(1))
        self.alpha_mlp = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_attn, x_gated, x_mlp = x.chunk(3, dim=1)
        q, k, v = self.qkv_dwconv(self.qkv(in_layout_of(x_attn, x))).chunk(3, dim=1)
        att = channel_attention(q, k, v, self.temperature, self.num_heads)
        gated = self.gatedcnn(x_gated)
        mlp = in_layout_of(self.mlp(x_mlp.flatten(2)).reshape(x_mlp.shape), x)
        out = torch.cat(
            (
                att + self.alpha_att * torch.sigmoid(gated + mlp),
                gated + self.alpha_gated * torch.sigmoid(att + mlp),
                mlp + self.alpha_mlp * torch.sigmoid(att + gated),
            ),
            dim=1,
        )
        return self.project_out(out)


class _MirageFeedForward(GDFN):
    """GDFN with a GELU between ``project_in`` and ``dwconv``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(F.gelu(self.project_in(x))).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class _MirageBlock(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, ffn_factor: float, bias: bool, norm: NormKind, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = RestormerLayerNorm(dim, norm)
        self.attn = _MirageAttention(dim, num_heads, bias, drop_path)
        self.norm2 = RestormerLayerNorm(dim, norm)
        self.ffn = _MirageFeedForward(dim, ffn_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def spd_feature(x: torch.Tensor) -> torch.Tensor:
    """Flattened channel covariance ``cov + 1e-5 I`` (unbiased, over ``H * W >= 2`` pixels), ``(N, C^2)``, at least float32."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32)).flatten(2)
        x = x - x.mean(dim=2, keepdim=True)
        cov = torch.bmm(x, x.transpose(1, 2)) / (x.shape[2] - 1)
        cov = cov + 1e-5 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return cov.flatten(1)


def spd_contrastive_loss(z_shallow: torch.Tensor, z_latent: torch.Tensor) -> torch.Tensor:
    """NT-Xent of the ``(N, D)`` shallow and latent SPD embeddings (sample ``i`` pairs with ``i``); 0 for one sample."""
    logits = F.normalize(z_shallow, dim=1) @ F.normalize(z_latent, dim=1).T / SPD_TEMPERATURE
    return F.cross_entropy(logits, torch.arange(z_shallow.shape[0], device=z_shallow.device))


def spectrum_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the real and imaginary parts of the ``rfft2`` spectra (official ``FFTLoss``)."""
    acc = torch.promote_types(pred.dtype, torch.float32)
    return torch.view_as_real(torch.fft.rfft2(pred.to(acc)) - torch.fft.rfft2(target.to(acc))).abs().mean()


def _fft_term(model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return spectrum_l1_loss(extras["image"], batch["clean"])


def _spd_term(model: nn.Module, batch: Mapping[str, Any], extras: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "spd_shallow" not in extras:
        return next(model.parameters()).new_zeros(())
    return spd_contrastive_loss(extras["spd_shallow"], extras["spd_latent"])


@register_architecture
class MIRAGE(RestormerUNet):
    """MIRAGE: a Restormer-style U-Net of three-branch blocks (official keys; defaults: MIRAGE-S).

    Args:
        dim: A multiple of 6; each level's heads divide its channels / 3.
        spd_head: Build the SPD head of the ``spd`` training term (official checkpoints load either way).

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`, any ``H, W >= 1``
        - Output: :math:`(N, C_{out}, H, W)`; with ``return_spd=True`` also the two :math:`(N, 64)` embeddings

    Examples:
        >>> net = MIRAGE(**MIRAGE.small_config(smoke=True))
        >>> net(torch.rand(2, 3, 17, 30)).shape
        torch.Size([2, 3, 17, 30])
    """

    unused_modules = SPD_HEAD  # dropped when the network is built without the SPD head

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 30,
        num_blocks: Sequence[int] = (3, 5, 5, 7),
        num_refinement_blocks: int = 3,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        drop_path: float = 0.1,
        spd_head: bool = True,
    ) -> None:
        super().__init__()
        if dim % 6:
            raise UsageError(
                f"MIRAGE needs dim to be a multiple of 6 (three branches, even levels), got {dim}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        opts = (ffn_expansion_factor, bias, layer_norm_type, drop_path)
        # the official construction order (keys in the official order)
        self._build_encoder(in_channels, dim, num_blocks, heads, *opts)
        self.up4_3 = Upsample(dim * 4)
        self.reduce_chan_level3 = nn.Conv2d(dim * 6, dim * 4, kernel_size=1, bias=bias)
        self.reduce_dim_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = self._stage(dim * 4, heads[2], num_blocks[2], *opts)
        for level in (2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *opts)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *opts)
        if spd_head:
            s, t = SPD_CHANNELS
            self.reduce_shallow = nn.Conv2d(dim, s, 1)
            self.reduce_latent = nn.Conv2d(dim * 4, t, 1)
            self.spd_proj_shallow = nn.Linear(s * s, SPD_DIM)
            self.spd_proj_latent = nn.Linear(t * t, SPD_DIM)

    def _stage(self, dim: int, num_heads: int, depth: int, *opts: Any) -> Stage:
        return Stage(*[_MirageBlock(dim, num_heads, *opts) for _ in range(depth)])

    def _latent_hook(self, x: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        ctx["latent"] = self.reduce_dim_level3(x)
        return ctx["latent"]

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        ctx[f"e{level}"] = skip
        return skip

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, *, return_spd: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if return_spd and not self.config["spd_head"]:
            raise UsageError("return_spd=True needs the SPD head; this MIRAGE was built with spd_head=False")
        inp, size = self._pad_input(x)
        feats: dict[str, torch.Tensor] = {}
        out = self._crop(self._unet_forward(inp, feats), size)
        if not return_spd:
            return out
        z_s = F.normalize(self.spd_proj_shallow(spd_feature(self.reduce_shallow(feats["e1"]))), dim=1)
        z_l = F.normalize(self.spd_proj_latent(spd_feature(self.reduce_latent(feats["latent"]))), dim=1)
        return out, z_s, z_l

    finetune_groups = {
        "encoder": RESTORMER_GROUPS["encoder"],
        "decoder": ("reduce_dim_level3", *RESTORMER_GROUPS["decoder"]),
        "spd": ("reduce_shallow", "reduce_latent", "spd_proj_*"),
    }

    def low_precision_flags(self) -> list[tuple[str, nn.Module, str]]:
        """Under bf16/fp16 autocast the patch embedding runs in float32."""
        return [("patch_embed", self.patch_embed, "float32")]

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``{"return_spd": True}`` with the SPD head."""
        return {"return_spd": True} if self.config["spd_head"] else {}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The image and ``{"image", "spd_shallow", "spd_latent"}``."""
        if isinstance(output, torch.Tensor):
            return output, {"image": output}
        image, z_s, z_l = output
        return image, {"image": image, "spd_shallow": z_s, "spd_latent": z_l}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """``fft`` (weight 0.1, :func:`spectrum_l1_loss`) and ``spd`` (0.01, :func:`spd_contrastive_loss`)."""
        return [
            AuxiliaryLoss("fft", DEFAULT_FFT_WEIGHT, _fft_term),
            AuxiliaryLoss("spd", DEFAULT_SPD_WEIGHT, _spd_term),
        ]

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """One block per level, width 24 (``smoke``: 12); MIRAGE is blind to the degradation."""
        return dict(dim=12 if smoke else 24, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments (all but ``drop_path``) of a MIRAGE state dict, else ``None``."""
        if not any(".attn.gatedcnn.gic1.weight" in k for k in state_dict):
            return None
        config = _read_restormer_layout(state_dict, "reduce_dim_level3.weight")
        if config is not None:
            config["spd_head"] = "spd_proj_latent.weight" in state_dict
        return config


@register_model
def mirage_s(**kwargs: Any) -> MIRAGE:
    """MIRAGE-S, official configuration (dim 30; 9,678,983 parameters)."""
    return MIRAGE(**kwargs)


@register_model
def mirage_t(**kwargs: Any) -> MIRAGE:
    """MIRAGE-T, official configuration (dim 24; 6,207,412 parameters)."""
    return MIRAGE(**{"dim": 24, "num_refinement_blocks": 2, **kwargs})


# Released weights: github.com/Amazingren/MIRAGE (snapshot 926dc83): README "Checkpoints", test scripts, LICENSE;
# the averages of the README's result figure and the paper (arXiv 2505.18679 v2); the CDD11 file name is ours.
_CDD11 = "CDD-11 (single, double and triple mixtures of the four)"
_P3 = "PromptIR's three-task protocol (RGB PSNR/SSIM, centre crop to a multiple of 16; test_*.py --mode 5)"
_P5 = "AdaIR's five-task protocol, denoising at sigma 25 in the average (test_*.py --mode 6 --avg_denoise_sigma 25)"
_P_CDD11 = "CDD-11 test set (test_small.py --trainset CDD11_<subset>)"
_FILES = {  # name: architecture, file, Google Drive id (README "Checkpoints"), parameters
    "s_three_task": ("mirage_s", "3Deg_small.ckpt", "1kZqS7AQE93QX9tBtc2Aa8mqFEbauXLZy", 9_678_983),
    "t_three_task": ("mirage_t", "3Deg_tiny.ckpt", "1HH6ZkKr-e-kChrgHUc8nuEPDjXcj5H5E", 6_207_412),
    "s_five_task": ("mirage_s", "5Deg_small.ckpt", "13C-eso1XB5VlTUCmubzrEAB4b_aSsHzb", 9_678_983),
    "t_five_task": ("mirage_t", "5Deg_tiny.ckpt", "1GNjqXsVE7uik5wWpnuPAzC-C05S9DpgO", 6_207_412),
    "s_cdd11": ("mirage_s", "CDD11_small.ckpt", "1GLRMUDfjgWR7aW4DqnUDJzsPO98-cw5G", 9_678_983),
}
_FACTS = {  # name: tasks and training data, protocol, reported
    "s_three_task": (ALL_IN_ONE["three_task"], _P3, ("three-task average 32.91 dB",)),
    "t_three_task": (ALL_IN_ONE["three_task"], _P3, ("three-task average 32.77 dB",)),
    "s_five_task": (ALL_IN_ONE["five_task"], _P5, ("five-task average 30.68 dB",)),
    "t_five_task": (ALL_IN_ONE["five_task"], _P5, ()),
    "s_cdd11": ((("lowlight", "haze", "rain", "snow"), _CDD11), _P_CDD11, ()),
}
for _name, (_arch, _file, _drive, _params) in _FILES.items():
    (_tasks, _data), _protocol, _reported = _FACTS[_name]
    register_weights(
        PretrainedWeights(
            name=f"mirage.{_name}",
            arch=_arch,
            file_name=_file,
            sources=(WeightsSource("gdrive", _drive, note="README 'Checkpoints'"),),
            num_params=_params,
            tasks=_tasks,
            license="MIT (LICENSE of Amazingren/MIRAGE)",
            training_data=_data,
            reported=_reported,
            protocol=_protocol,
            default=_name.endswith("three_task"),
            notes=f"Google Drive only: download by hand, then `allinone-ir weights import mirage.{_name} FILE`",
        )
    )
