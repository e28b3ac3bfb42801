"""DFPIR (Tian et al., CVPR 2025): degradation-aware feature perturbation of a Restormer's skips."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MissingDependencyError, UsageError
from ..layers.attention import CrossChannelAttention, top_m_channel_attention
from ..layers.feedforward import GDFN
from ..layers.norm import NormKind, RestormerLayerNorm, in_layout_of
from ..layers.transformer import Downsample, OverlapPatchEmbed
from ._base import as_buffers
from ._registry import register_architecture, register_model
from ._weights import ALL_IN_ONE, PretrainedWeights, WeightsSource, register_weights
from .restormer import RESTORMER_GROUPS, RestormerUNet, _read_restormer_layout, transformer_stage

#: The sentences the official scripts encode with CLIP ViT-B/32 for each degradation (the "detailed"
#: prompts of ``train_3D_DFPIR.py``; the second three-task checkpoint used "Noise", "Rain", "Haze").
DFPIR_PROMPTS: Mapping[str, str] = {
    "noise_15": "Gaussian noise with a standard deviation of 15",
    "noise_25": "Gaussian noise with a standard deviation of 25",
    "noise_50": "Gaussian noise with a standard deviation of 50",
    "rain": "Rain degradation with rain lines",
    "haze": "Hazy degradation with normal haze",
    "blur": "Blur degradation with motion blur",
    "lowlight": "Lowlight degradation",
}


class SelectiveCrossAttention(CrossChannelAttention):
    """DFPIR's cross attention keeping the top 90 % of each row, times ``attn4`` (``Topm_CrossAttention_Restormer``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, dim, num_heads)
        self.top_k = max(1, int(dim // num_heads * 9 / 10))
        self.attn4 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(query, context)
        out = top_m_channel_attention(q, k, v, self.temperature, self.num_heads, [self.top_k], self.attn4)
        return self.project_out(out)


class DegradationGuidedPerturbation(nn.Module):
    """DFPIR's degradation-guided perturbation block (DGPB; official ``ch_shuffle_high_text``).

    The text embedding (``(N, T)`` or ``(1, T)``) picks a channel permutation of ``conv1x1(x)``, which queries
    a :class:`SelectiveCrossAttention` on ``x``; then a GDFN with a residual.

    Examples:
        >>> block = DegradationGuidedPerturbation(8, 2, text_dim=16)
        >>> block(torch.randn(2, 8, 5, 5), torch.randn(1, 16)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layer_norm_type: NormKind = "WithBias",
        text_dim: int = 512,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.linear_layer1 = as_buffers(nn.Linear(text_dim, text_dim), "weight", "bias")
        self.linear_layer3 = as_buffers(nn.Linear(text_dim, 2 * dim), "weight", "bias")
        self.conv1x1 = nn.Conv2d(dim, 2 * dim, kernel_size=1)
        self.conv_out = nn.Conv2d(2 * dim, dim, kernel_size=1)
        self.norm1 = RestormerLayerNorm(dim, layer_norm_type)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.norm3 = RestormerLayerNorm(dim, layer_norm_type)
        self.select_attn = SelectiveCrossAttention(dim, num_heads)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def permutation(self, text: torch.Tensor) -> torch.Tensor:
        """The ``(N, 2C)`` channel indices, highest ``linear_layer3(linear_layer1(text))`` first (float32)."""
        device = text.device.type  # the meta device (FLOP counting) has no autocast
        off = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else None
        with off or contextlib.nullcontext():
            scores = self.linear_layer3(self.linear_layer1(text.to(self.linear_layer1.weight.dtype)))
        return torch.topk(scores, 2 * self.dim, dim=-1).indices

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        order = self.permutation(text)
        shuffled = torch.gather(self.conv1x1(x), 1, order[:, :, None, None].expand(n, -1, h, w))
        shuffled = in_layout_of(shuffled, x)  # gather returns NCHW
        att = self.select_attn(self.norm1(self.conv_out(shuffled)), self.norm2(x))
        return att + self.ffn(self.norm3(att))


@register_architecture
class DFPIR(RestormerUNet):
    """DFPIR: a Restormer whose skips and latent pass through :class:`DegradationGuidedPerturbation` blocks.

    Released weights need the CLIP embedding of their training sentence (:func:`dfpir_text_embedding`,
    :data:`DFPIR_PROMPTS`); without one the zero embedding is used. Official defaults and keys.

    Shape:
        - x: :math:`(N, C_{in}, H, W)`, any ``H, W >= 1``; output: :math:`(N, C_{out}, H, W)`
        - text_embedding: :math:`(N, T)`, :math:`(1, T)` or :math:`(T,)` (``T = text_dim``)

    Examples:
        >>> net = DFPIR(**DFPIR.small_config(smoke=True), text_dim=16)
        >>> net(torch.rand(2, 3, 17, 30), text_embedding=torch.randn(2, 16)).shape
        torch.Size([2, 3, 17, 30])
    """

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
        text_dim: int = 512,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise UsageError(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.text_dim = text_dim
        self._told_no_text = False  # the missing-embedding warning is given once per network
        args = (ffn_expansion_factor, bias, layer_norm_type)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        for level in (1, 2, 3, 4):  # the official order: a level, its perturbation block, the downsampling
            channels, n_heads = dim * 2 ** (level - 1), heads[level - 1]
            stage = transformer_stage(channels, n_heads, num_blocks[level - 1], *args)
            block = DegradationGuidedPerturbation(channels, n_heads, *args, text_dim=text_dim)
            if level == 4:
                self.latent, self.latent_shuffle_channel = stage, block
            else:
                self.add_module(f"encoder_level{level}", stage)
                self.add_module(f"encoder_shuffle_channel{level}", block)
                self.add_module(f"down{level}_{level + 1}", Downsample(channels))
        for level in (3, 2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *args)
        self._build_head(dim, num_refinement_blocks, heads, out_channels, *args)

    def _text(self, text_embedding: torch.Tensor | None, batch: int) -> torch.Tensor:
        dtype = self.latent_shuffle_channel.linear_layer1.weight.dtype
        device = self.patch_embed.proj.weight.device
        if text_embedding is None:
            if not self.training and not torch.compiler.is_compiling() and not self._told_no_text:
                self._told_no_text = True
                warnings.warn(
                    "DFPIR got no text_embedding and uses the all-zero one: right for a DFPIR trained without "
                    "text (as the Trainer trains it), wrong for the released weights, which restore as reported "
                    "only with the CLIP embedding of their degradation's sentence (dfpir_text_embedding)",
                    UserWarning,
                    stacklevel=3,
                )
            return torch.zeros(1, self.text_dim, dtype=dtype, device=device)
        t = text_embedding.unsqueeze(0) if text_embedding.dim() == 1 else text_embedding
        if t.dim() != 2 or t.shape[1] != self.text_dim or t.shape[0] not in (1, batch):
            raise UsageError(
                f"text_embedding must have shape ({batch}, {self.text_dim}), (1, {self.text_dim}) or "
                f"({self.text_dim},), got {tuple(text_embedding.shape)}"
            )
        return t.to(device=device, dtype=dtype)

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.latent_shuffle_channel(x, ctx)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        return getattr(self, f"encoder_shuffle_channel{level}")(skip, ctx)

    def forward(self, x: torch.Tensor, text_embedding: torch.Tensor | None = None) -> torch.Tensor:
        inp, size = self._pad_input(x)
        return self._crop(self._unet_forward(inp, self._text(text_embedding, x.shape[0])), size)

    finetune_groups = {
        **RESTORMER_GROUPS,
        "perturbation": ("encoder_shuffle_channel*", "latent_shuffle_channel"),
    }

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """One block per level, width 16 (``smoke``: 8); the degradation reaches DFPIR as a text embedding."""
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a DFPIR state dict (Restormer's plus the perturbation blocks), else ``None``."""
        names = [f"encoder_shuffle_channel{i}" for i in (1, 2, 3)] + ["latent_shuffle_channel"]
        config = _read_restormer_layout(state_dict, *(f"{n}.linear_layer1.weight" for n in names))
        if config is None:
            return None
        config["text_dim"] = int(state_dict["latent_shuffle_channel.linear_layer1.weight"].shape[1])
        return config


def dfpir_text_embedding(
    prompts: str | Sequence[str], clip_checkpoint: str | Path, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The ``(P, 512)`` float32 CLIP ViT-B/32 embeddings of ``prompts`` (e.g. ``DFPIR_PROMPTS["rain"]``).

    Needs ``pip install openai-clip`` and the ViT-B/32 weights as a local file (``ViT-B-32.pt``).

    Raises:
        MissingDependencyError: If the ``clip`` package is not installed.
        UsageError: If ``clip_checkpoint`` is not a file.
    """
    try:
        import clip  # type: ignore[import-not-found]
    except ImportError:
        raise MissingDependencyError(
            "DFPIR's text embeddings need OpenAI's CLIP package: pip install openai-clip", package="clip"
        ) from None
    path = Path(clip_checkpoint)
    if not path.is_file():
        raise UsageError(f"no CLIP checkpoint at {path} (a local ViT-B/32 file; nothing is downloaded)")
    model, _ = clip.load(str(path), device=device)
    with torch.no_grad():
        tokens = clip.tokenize([prompts] if isinstance(prompts, str) else list(prompts)).to(device)
        return model.encode_text(tokens).to(dtype=torch.float32)


@register_model
def dfpir(**kwargs: Any) -> DFPIR:
    """DFPIR, official configuration (29,315,417 parameters, 1,789,344 buffer values)."""
    return DFPIR(**kwargs)


# Released weights: github.com/TxpHome/DFPIR (snapshot b9ba223): README "Pretrained Model Weights" (the file
# names are ours), train_3D_DFPIR.py, fig/3D.jpg and fig/5D.jpg (the paper's tables); no LICENSE file.
_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/15bOk4xrsK1b3nIu3-OzUj4O_ZssdFN5Y",
    note="Google Drive folder with every DFPIR checkpoint (README)",
)
_THREE_PROTOCOL = "PromptIR's three-task protocol (RGB PSNR/SSIM, test_3D_DFPIR.py: BSD68, Rain100L, SOTS)"


def _register(name: str, file: str, baidu: str, code: str, protocol: str, prompts: str, **facts: Any) -> None:
    tasks, data = ALL_IN_ONE[name.removesuffix("_simple")]
    register_weights(
        PretrainedWeights(
            name=f"dfpir.{name}",
            arch="dfpir",
            file_name=file,
            sources=(
                WeightsSource("baidu", f"https://pan.baidu.com/s/{baidu}", note=f"extraction code {code}"),
                _DRIVE,
            ),
            num_params=29_315_417,  # + 1,789,344 buffer values (the text projections): the official 31,104,761
            tasks=tasks,
            license="none stated (the repository has no LICENSE file)",
            training_data=data,
            protocol=protocol,
            default=name == "three_task",
            notes=f"Baidu Pan or Google Drive only: download by hand, then `allinone-ir weights import dfpir.{name} "
            "FILE`. The network needs, per image, the CLIP ViT-B/32 embedding of its degradation's sentence "
            f"(dfpir_text_embedding, DFPIR_PROMPTS): {prompts}",
            **facts,
        )
    )


_register(
    "three_task",
    "dfpir_3d_detail.pth.tar",
    "1hk5JgOpl3VYEsWEecPpJkg?pwd=tjkd",
    "tjkd",
    _THREE_PROTOCOL,
    "the detailed sentences 'Gaussian noise with a standard deviation of 15/25/50', "
    "'Rain degradation with rain lines', 'Hazy degradation with normal haze' (the scripts' default).",
    reported=(
        "SOTS 31.87/0.980",
        "Rain100L 38.65/0.982",
        "CBSD68 sigma15 34.14/0.935",
        "CBSD68 sigma25 31.47/0.893",
        "CBSD68 sigma50 28.25/0.806",
        "average 32.88/0.919",
    ),
)
_register(
    "three_task_simple",
    "dfpir_3d_simple.pth.tar",
    "1W8mjjSB4XiL70cVK9B9Eng",
    "pa3a",
    _THREE_PROTOCOL,
    "the simple sentences 'Noise', 'Rain', 'Haze' (the scripts' commented-out alternative).",
)
_register(
    "five_task",
    "dfpir_5d.pth.tar",
    "1LhAsRq8t4dvaD-hC6yDZrA?pwd=q0sm",
    "q0sm",
    "the five-task protocol (RGB PSNR/SSIM, test_5D_DFPIR.py: CBSD68 sigma 25, Rain100L, SOTS, GoPro, LOL)",
    "the detailed sentences of DFPIR_PROMPTS for noise_25, rain, haze, blur and lowlight.",
    reported=(
        "SOTS 31.64/0.979",
        "Rain100L 37.62/0.978",
        "CBSD68 sigma25 31.29/0.889",
        "GoPro 28.82/0.873",
        "LOL 23.82/0.843",
        "average 30.64/0.913",
    ),
)
