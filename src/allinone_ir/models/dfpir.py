"""DFPIR (Tian et al., CVPR 2025): degradation-aware feature perturbation of a Restormer's skips.

A Restormer U-Net whose three skips and latent pass through a degradation-guided perturbation block
(DGPB, :class:`DegradationGuidedPerturbation`) before the decoder reads them. The degradation is told
to the network as the CLIP ViT-B/32 text embedding of a sentence describing it (:data:`DFPIR_PROMPTS`);
each DGPB turns that embedding into a channel permutation of its feature (the channel-wise
perturbation) and attends from the permuted feature to the original one with a top-k masked channel
attention (the attention-wise perturbation)::

    text (N, 512) --linear_layer1, linear_layer3--> scores (N, 2C) --top-k order--> permutation
    skip (N, C, H, W) --conv1x1--> (N, 2C) --permute channels--> --conv_out--> q (N, C)
    att = SelectiveCrossAttention(norm1(q), norm2(skip));  out = att + GDFN(norm3(att))

The text projections only choose the permutation (their values never reach the output through a
differentiable path), so no gradient ever reaches them: they keep their initial values in the official
training and are buffers here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingDependencyError, UsageError
from ..layers.feedforward import GDFN
from ..layers.norm import NormKind, RestormerLayerNorm
from ..layers.transformer import Downsample, OverlapPatchEmbed
from ._registry import register_architecture, register_model
from ._weights import PretrainedWeights, WeightsSource, register_weights
from .restormer import RestormerUNet, transformer_stage

#: The sentences the official scripts encode with CLIP ViT-B/32 for each degradation (``inputext`` of
#: ``train_3D_DFPIR.py`` / ``test_5D_DFPIR.py``, the "detailed" prompts). The README's second
#: three-task checkpoint was trained with the "simple" prompts ``"Noise"``, ``"Rain"``, ``"Haze"``.
DFPIR_PROMPTS: Mapping[str, str] = {
    "noise_15": "Gaussian noise with a standard deviation of 15",
    "noise_25": "Gaussian noise with a standard deviation of 25",
    "noise_50": "Gaussian noise with a standard deviation of 50",
    "rain": "Rain degradation with rain lines",
    "haze": "Hazy degradation with normal haze",
    "blur": "Blur degradation with motion blur",
    "lowlight": "Lowlight degradation",
}


M = TypeVar("M", bound=nn.Module)


def _as_buffers(module: M) -> M:
    """Turn every parameter of ``module`` into a buffer of the same name (same state-dict keys, no gradient)."""
    for name, p in list(module.named_parameters(recurse=False)):
        delattr(module, name)
        module.register_buffer(name, p.detach())
    return module


class SelectiveCrossAttention(nn.Module):
    """DFPIR's attention-wise perturbation: transposed cross attention keeping the top 90 % of each row.

    ``q`` comes from the query map (1x1 and depthwise 3x3 convolutions), ``k`` and ``v`` from the
    context map. Per head, with ``c`` channels, rows of ``q`` and ``k`` are L2-normalised, the
    ``c x c`` logits ``q k^T * temperature`` keep their ``int(0.9 c)`` largest entries per row (at least
    one; the others are ``-inf`` before the softmax), and the output ``attn4 * softmax(...) v`` goes
    through ``project_out``. Official name: ``Topm_CrossAttention_Restormer``; no convolution has a bias.

    Args:
        dim: Channels of the query and context maps.
        num_heads: Heads (must divide ``dim``).

    Shape:
        - query, context: :math:`(N, C, H, W)`
        - output: :math:`(N, C, H, W)`

    Examples:
        >>> SelectiveCrossAttention(8, 2)(torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"the attention heads ({num_heads}) must divide the channels ({dim})")
        self.num_heads = num_heads
        self.top_k = max(1, int(dim // num_heads * 9 / 10))
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=False)
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.attn4 = nn.Parameter(torch.tensor([0.2]))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = query.shape
        q = self.q_dwconv(self.q(query)).reshape(n, self.num_heads, c // self.num_heads, h * w)
        k, v = self.kv_dwconv(self.kv(context)).chunk(2, dim=1)
        k = k.reshape(n, self.num_heads, c // self.num_heads, h * w)
        v = v.reshape(n, self.num_heads, c // self.num_heads, h * w)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        keep = torch.zeros_like(attn, dtype=torch.bool).scatter_(
            -1, torch.topk(attn, self.top_k, dim=-1).indices, True
        )
        attn = attn.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        out = (attn @ v) * self.attn4
        return self.project_out(out.reshape(n, c, h, w))


class DegradationGuidedPerturbation(nn.Module):
    """DFPIR's degradation-guided perturbation block (DGPB; official name ``ch_shuffle_high_text``).

    The text embedding goes through ``linear_layer1`` (``T -> T``) and ``linear_layer3``
    (``T -> 2C``); the order of the ``2C`` scores (largest first) permutes the channels of
    ``conv1x1(x)`` (``C -> 2C``), and ``conv_out`` (``2C -> C``) gives the query of a
    :class:`SelectiveCrossAttention` on ``x``; a GDFN follows with a residual on the attention's output
    (the block's output replaces ``x``: there is no residual from ``x``). The text projections choose
    the permutation only, so no gradient reaches them: they are buffers (same keys as the official
    parameters) and are computed in float32 outside autocast, so the permutation does not depend on the
    precision.

    Args:
        dim: Channels ``C`` of the feature.
        num_heads: Heads of the attention.
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the GDFN's convolutions have a bias (``conv1x1`` and ``conv_out`` always have one).
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        text_dim: Width ``T`` of the text embedding (512 for CLIP ViT-B/32).

    Shape:
        - x: :math:`(N, C, H, W)`
        - text: :math:`(N, T)` or :math:`(1, T)` (one embedding for the whole batch)
        - output: :math:`(N, C, H, W)`

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
        self.linear_layer1 = _as_buffers(nn.Linear(text_dim, text_dim))
        self.linear_layer3 = _as_buffers(nn.Linear(text_dim, 2 * dim))
        self.conv1x1 = nn.Conv2d(dim, 2 * dim, kernel_size=1)
        self.conv_out = nn.Conv2d(2 * dim, dim, kernel_size=1)
        self.norm1 = RestormerLayerNorm(dim, layer_norm_type)
        self.norm2 = RestormerLayerNorm(dim, layer_norm_type)
        self.norm3 = RestormerLayerNorm(dim, layer_norm_type)
        self.select_attn = SelectiveCrossAttention(dim, num_heads)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def permutation(self, text: torch.Tensor) -> torch.Tensor:
        """The channel order the text embedding selects: ``2C`` indices, highest score first.

        Shape:
            - text: :math:`(N, T)`
            - output: :math:`(N, 2C)`, int64
        """
        w1, w3 = self.linear_layer1, self.linear_layer3
        if torch.amp.is_autocast_available(text.device.type):  # the scores in the weights' precision
            with torch.autocast(text.device.type, enabled=False):
                scores = w3(w1(text.to(w1.weight.dtype)))
        else:  # the meta device (FLOP counting) has no autocast
            scores = w3(w1(text.to(w1.weight.dtype)))
        return torch.topk(scores, 2 * self.dim, dim=-1).indices

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        order = self.permutation(text)
        feat = self.conv1x1(x)
        shuffled = torch.gather(feat, 1, order[:, :, None, None].expand(n, -1, h, w))
        att = self.select_attn(self.norm1(self.conv_out(shuffled)), self.norm2(x))
        return att + self.ffn(self.norm3(att))


@register_architecture
class DFPIR(RestormerUNet):
    """DFPIR: all-in-one restoration by degradation-aware feature perturbation.

    A Restormer U-Net (:class:`~allinone_ir.models.restormer.RestormerUNet`; the official network is
    Restormer's with the same decoder) where each skip (``encoder_shuffle_channel1..3``, at ``dim``,
    ``2 dim``, ``4 dim``) and the latent (``latent_shuffle_channel``, ``8 dim``) go through a
    :class:`DegradationGuidedPerturbation` guided by a text embedding of the degradation. The official
    network always receives the CLIP ViT-B/32 embedding of the sentence for the input's degradation
    (:data:`DFPIR_PROMPTS`; :func:`dfpir_text_embedding` computes it with the optional ``clip``
    package): DFPIR is told the degradation, it does not find it. Without ``text_embedding`` the
    zero embedding is used (a fixed permutation per block): the network runs and trains, but
    released weights restore as the paper reports only with the embeddings of their training
    sentences.

    Defaults are the official configuration (29,315,417 parameters and 1,789,344 buffer values: the
    text projections, which no gradient reaches; the official network counts 31,104,761 parameters,
    the two together). State-dict keys equal the official ones, in the official order. Any
    ``H, W >= 1`` works (reflect padding to a multiple of 8, output cropped back).

    Args:
        in_channels: Input image channels.
        out_channels: Output image channels.
        dim: Channels of the first level.
        num_blocks: Transformer blocks per level (encoder/decoder levels 1-3 and the latent).
        num_refinement_blocks: Transformer blocks after the decoder.
        heads: Attention heads per level (the perturbation blocks use their level's).
        ffn_expansion_factor: GDFN width factor.
        bias: Whether the transformer blocks' convolutions have a bias.
        layer_norm_type: ``"WithBias"`` or ``"BiasFree"``.
        text_dim: Width of the text embedding (512: CLIP ViT-B/32).

    Shape:
        - x: :math:`(N, C_{in}, H, W)`, float, values nominally in [0, 1]
        - text_embedding: :math:`(N, T)`, :math:`(1, T)` or :math:`(T,)` (one for the whole batch)
        - output: :math:`(N, C_{out}, H, W)`

    Examples:
        >>> net = DFPIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4),
        ...             text_dim=16)
        >>> net(torch.rand(2, 3, 17, 30), text_embedding=torch.randn(2, 16)).shape
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
        text_dim: int = 512,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise UsageError(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.text_dim = text_dim
        self._told_no_text = False  # the missing-embedding warning is given once per network
        args = (ffn_expansion_factor, bias, layer_norm_type)
        # the official order: each encoder level, then its perturbation block, then the downsampling
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        for level, channels in enumerate((dim, dim * 2, dim * 4), 1):
            self.add_module(
                f"encoder_level{level}",
                transformer_stage(channels, heads[level - 1], num_blocks[level - 1], *args),
            )
            self.add_module(
                f"encoder_shuffle_channel{level}",
                DegradationGuidedPerturbation(channels, heads[level - 1], *args, text_dim=text_dim),
            )
            self.add_module(f"down{level}_{level + 1}", Downsample(channels))
        self.latent = transformer_stage(dim * 8, heads[3], num_blocks[3], *args)
        self.latent_shuffle_channel = DegradationGuidedPerturbation(
            dim * 8, heads[3], *args, text_dim=text_dim
        )
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

    # ------------------------------------------------------------------ what the family declares
    #: Restormer's ``encoder`` and ``decoder``; ``perturbation``: the four DGPBs.
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "encoder": ("patch_embed", "encoder_level*", "down*", "latent"),
        "decoder": ("up*", "reduce_chan_level*", "decoder_level*", "refinement", "output"),
        "perturbation": ("encoder_shuffle_channel*", "latent_shuffle_channel"),
    }

    @classmethod
    def small_config(cls, *, degradations: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
        """A small DFPIR (one block per level, width 16); ``smoke``: width 8, for tests.

        Args:
            degradations: Unused: the degradation reaches DFPIR as a text embedding.
            smoke: The smallest configuration (width 8).
        """
        return dict(
            dim=8 if smoke else 16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4)
        )

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments of a DFPIR state dict (official or ours), else ``None``.

        Restormer's layout (see :meth:`Restormer.detect <allinone_ir.models.Restormer.detect>`) plus
        ``encoder_shuffle_channel1..3`` and ``latent_shuffle_channel``; the text width comes from
        ``latent_shuffle_channel.linear_layer1.weight``.

        Args:
            state_dict: Weights with the wrapper prefixes removed.

        Returns:
            Keyword arguments for ``DFPIR(**kwargs)``, or ``None``.

        Raises:
            CheckpointError: If no feed-forward factor fits the hidden widths.
        """
        from .restormer import _read_restormer_layout

        names = [f"encoder_shuffle_channel{i}" for i in (1, 2, 3)] + ["latent_shuffle_channel"]
        if not all(f"{n}.linear_layer1.weight" in state_dict for n in names):
            return None
        config = _read_restormer_layout(state_dict)
        if config is None:
            return None
        config["text_dim"] = int(state_dict["latent_shuffle_channel.linear_layer1.weight"].shape[1])
        return config


def dfpir_text_embedding(
    prompts: str | Sequence[str], clip_checkpoint: str | Path, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The CLIP ViT-B/32 text embeddings DFPIR takes, as the official scripts compute them.

    ``clip.tokenize`` then ``encode_text`` of the CLIP model loaded from a local file, in float32. Needs
    the optional ``clip`` package (``pip install openai-clip``) and the ViT-B/32 weights as a local
    file (``ViT-B-32.pt``, from OpenAI's CLIP release); nothing is downloaded.

    Args:
        prompts: One sentence or several, e.g. ``DFPIR_PROMPTS["rain"]``.
        clip_checkpoint: Path of the CLIP ViT-B/32 file.
        device: Where CLIP runs.

    Returns:
        The embeddings, float32.

    Shape:
        - output: :math:`(P, 512)`, one row per prompt

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


# --------------------------------------------------------------------------- released weights
# Facts from the official repository github.com/TxpHome/DFPIR (snapshot b9ba223): README.md "Pretrained
# Model Weights" (three Baidu Pan links with their extraction codes, and one Google Drive folder holding
# the same files; the file names are not given, so the cache keeps them under the names below), the
# scripts train_3D_DFPIR.py / test_5D_DFPIR.py (network ChannelShuffle_skip_textguaid() with its
# defaults; checkpoint {"epoch", "state_dict": model.state_dict(), "optimizer", "scheduler"}, no key
# prefix; prompts DFPIR_PROMPTS), and the README's result figures fig/3D.jpg and fig/5D.jpg (the paper's
# tables; which of the two three-task files they come from is not said). The repository has no LICENSE
# file; no hash or size is published.
_DRIVE = WeightsSource(
    "page",
    "https://drive.google.com/drive/folders/15bOk4xrsK1b3nIu3-OzUj4O_ZssdFN5Y",
    note="Google Drive folder with every DFPIR checkpoint (README)",
)
_NO_LICENSE = "none stated (the repository has no LICENSE file)"
_HOW = (
    "Baidu Pan or Google Drive only: download by hand, then `allinone-ir weights import {name} FILE`. "
    "The network needs, per image, the CLIP ViT-B/32 embedding of its degradation's sentence "
    "(dfpir_text_embedding, DFPIR_PROMPTS): "
)
_THREE_TASK_REPORTED = (
    "SOTS 31.87/0.980",
    "Rain100L 38.65/0.982",
    "CBSD68 sigma15 34.14/0.935",
    "CBSD68 sigma25 31.47/0.893",
    "CBSD68 sigma50 28.25/0.806",
    "average 32.88/0.919",
)  # fig/3D.jpg (the paper's three-degradation table)
_THREE_TASK_DATA = "BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze)"
_THREE_TASK_PROTOCOL = (
    "PromptIR's three-task protocol (RGB PSNR/SSIM, test_3D_DFPIR.py: BSD68, Rain100L, SOTS)"
)

register_weights(
    PretrainedWeights(
        name="dfpir.three_task",
        arch="dfpir",
        file_name="dfpir_3d_detail.pth.tar",
        sources=(
            WeightsSource(
                "baidu",
                "https://pan.baidu.com/s/1hk5JgOpl3VYEsWEecPpJkg?pwd=tjkd",
                note="extraction code tjkd",
            ),
            _DRIVE,
        ),
        num_params=29_315_417,  # + 1,789,344 buffer values (the text projections): the official 31,104,761
        tasks=("noise", "rain", "haze"),
        license=_NO_LICENSE,
        training_data=_THREE_TASK_DATA,
        reported=_THREE_TASK_REPORTED,
        protocol=_THREE_TASK_PROTOCOL,
        default=True,
        notes=_HOW.format(name="dfpir.three_task")
        + "the detailed sentences 'Gaussian noise with a standard deviation of 15/25/50', "
        "'Rain degradation with rain lines', 'Hazy degradation with normal haze' (the scripts' default).",
    )
)
register_weights(
    PretrainedWeights(
        name="dfpir.three_task_simple",
        arch="dfpir",
        file_name="dfpir_3d_simple.pth.tar",
        sources=(
            WeightsSource(
                "baidu", "https://pan.baidu.com/s/1W8mjjSB4XiL70cVK9B9Eng", note="extraction code pa3a"
            ),
            _DRIVE,
        ),
        num_params=29_315_417,
        tasks=("noise", "rain", "haze"),
        license=_NO_LICENSE,
        training_data=_THREE_TASK_DATA,
        protocol=_THREE_TASK_PROTOCOL,
        notes=_HOW.format(name="dfpir.three_task_simple")
        + "the simple sentences 'Noise', 'Rain', 'Haze' (the scripts' commented-out alternative).",
    )
)
register_weights(
    PretrainedWeights(
        name="dfpir.five_task",
        arch="dfpir",
        file_name="dfpir_5d.pth.tar",
        sources=(
            WeightsSource(
                "baidu",
                "https://pan.baidu.com/s/1LhAsRq8t4dvaD-hC6yDZrA?pwd=q0sm",
                note="extraction code q0sm",
            ),
            _DRIVE,
        ),
        num_params=29_315_417,
        tasks=("noise", "rain", "haze", "blur", "lowlight"),
        license=_NO_LICENSE,
        training_data="BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze), GoPro (blur), LOL (low light)",
        reported=(
            "SOTS 31.64/0.979",
            "Rain100L 37.62/0.978",
            "CBSD68 sigma25 31.29/0.889",
            "GoPro 28.82/0.873",
            "LOL 23.82/0.843",
            "average 30.64/0.913",
        ),  # fig/5D.jpg (the paper's five-degradation table)
        protocol="the five-task protocol (RGB PSNR/SSIM, test_5D_DFPIR.py: CBSD68 sigma 25, Rain100L, SOTS, GoPro, LOL)",
        notes=_HOW.format(name="dfpir.five_task")
        + "the detailed sentences of DFPIR_PROMPTS for noise_25, rain, haze, blur and lowlight.",
    )
)
