"""Building blocks checked against straightforward computations of their definitions."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from allinone_ir import create_model
from allinone_ir.layers import (
    GDFN,
    MDTA,
    CrossChannelAttention,
    Downsample,
    LayerNorm2d,
    OverlapPatchEmbed,
    RestormerLayerNorm,
    TransformerBlock,
    Upsample,
    channel_attention,
    pad_to_multiple,
)
from allinone_ir.models.nafnet import NAFBlock
from allinone_ir.models.promptir import PromptGenBlock, PromptInteraction

from .tiny_configs import TINY
from .tiny_configs import randomise as _randomise

CL = torch.channels_last


def _reference_mdta_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Unfused textbook form of ``channel_attention`` (also used by test_fast_paths)."""
    n, c, h, w = q.shape
    qh = F.normalize(q.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    kh = F.normalize(k.reshape(n, num_heads, c // num_heads, -1), dim=-1)
    vh = v.reshape(n, num_heads, c // num_heads, -1)
    attn = torch.einsum("nhcp,nhdp->nhcd", qh, kh) * temperature
    return torch.einsum("nhcd,nhdp->nhcp", attn.softmax(-1), vh).reshape(n, c, h, w)


def _reference_top_m_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    num_heads: int,
    top_m: list[int],
    weights: torch.Tensor,
) -> torch.Tensor:
    """Unfused form of ``top_m_channel_attention``: masks from ``topk`` indices, ``v`` multiplied per mask."""
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


class TestLayerNorm2d:
    def test_with_bias_equals_layer_norm_on_permuted(self) -> None:
        norm = _randomise(LayerNorm2d(6))
        x = torch.randn(2, 6, 5, 7) * 3 + 1
        ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
        torch.testing.assert_close(norm(x), ref)

    def test_manual_formula_and_eps(self) -> None:
        norm = _randomise(LayerNorm2d(4, eps=1e-6))
        x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
        norm = norm.double()
        mu = x.mean(1, keepdim=True)
        var = ((x - mu) ** 2).mean(1, keepdim=True)
        ref = (x - mu) / torch.sqrt(var + 1e-6) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(norm(x), ref)

    def test_bias_free_does_not_subtract_mean(self) -> None:
        norm = _randomise(LayerNorm2d(5, bias=False))
        assert norm.bias is None
        x = torch.randn(2, 5, 4, 4, dtype=torch.float64) + 2.0
        norm = norm.double()
        var = x.var(1, keepdim=True, unbiased=False)
        ref = x / torch.sqrt(var + 1e-5) * norm.weight.view(1, -1, 1, 1)
        torch.testing.assert_close(norm(x), ref)
        # with-bias normalisation of the same input would be centred; bias-free output is not
        centred = LayerNorm2d(5).double()(x)
        assert centred.mean(1).abs().max() < 1e-6
        assert (x / torch.sqrt(var + 1e-5)).mean(1).abs().min() > 0.1

    @pytest.mark.parametrize("bias", [True, False])
    def test_channels_last_matches_and_is_preserved(self, bias: bool) -> None:
        norm = _randomise(LayerNorm2d(8, bias=bias))
        x = torch.randn(2, 8, 6, 5)
        out_cl = norm(x.to(memory_format=CL))
        assert out_cl.is_contiguous(memory_format=CL)
        torch.testing.assert_close(out_cl, norm(x))

    @pytest.mark.parametrize("bias", [True, False])
    def test_nchw_stays_nchw(self, bias: bool) -> None:
        """F.layer_norm runs on a channels-last view; the output must not leave in that layout."""
        out = LayerNorm2d(8, bias=bias)(torch.randn(2, 8, 6, 5))
        assert out.is_contiguous() and not out.is_contiguous(memory_format=CL)

    def test_restormer_norm_key_names(self) -> None:
        assert set(RestormerLayerNorm(4).state_dict()) == {"body.weight", "body.bias"}
        assert set(RestormerLayerNorm(4, "BiasFree").state_dict()) == {"body.weight"}
        with pytest.raises(ValueError, match="WithBias"):
            RestormerLayerNorm(4, "Batch")  # type: ignore[arg-type]


class TestMDTA:
    def test_attention_equals_einsum_definition(self) -> None:
        heads, c, h, w = 2, 6, 5, 4
        q, k, v = (torch.randn(3, heads * c, h, w, dtype=torch.float64) for _ in range(3))
        temp = torch.rand(heads, 1, 1, dtype=torch.float64) + 0.5
        # independent computation, one head at a time
        outs = []
        for n in range(3):
            per_head = []
            for i in range(heads):
                qi = q[n, i * c : (i + 1) * c].reshape(c, -1)
                ki = k[n, i * c : (i + 1) * c].reshape(c, -1)
                vi = v[n, i * c : (i + 1) * c].reshape(c, -1)
                qi = qi / qi.norm(dim=1, keepdim=True)
                ki = ki / ki.norm(dim=1, keepdim=True)
                a = torch.softmax(qi @ ki.T * temp[i], dim=-1)
                per_head.append((a @ vi).reshape(c, h, w))
            outs.append(torch.cat(per_head))
        ref = torch.stack(outs)
        torch.testing.assert_close(channel_attention(q, k, v, temp, heads), ref)
        torch.testing.assert_close(_reference_mdta_attention(q, k, v, temp, heads), ref)

    def test_all_zero_rows_in_float16_attend_uniformly(self) -> None:
        """A channel that is zero over the image (a black image, AdaIR's empty low band) has no direction:
        its logits are 0 in every dtype, not 0/0 (1e-12 is 0 in float16)."""
        q, k, v = torch.randn(3, 1, 4, 5, 6).unbind(0)
        q[:, :2], k[:, 1] = 0.0, 0.0
        temp = torch.ones(2, 1, 1)
        ref = channel_attention(q, k, v, temp, 2)
        out = channel_attention(q.half(), k.half(), v.half(), temp.half(), 2)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)
        mean_v = v[:, :2].mean(dim=1, keepdim=True)  # head 0: q is zero, every channel gets the mean of v
        torch.testing.assert_close(ref[:, :2], mean_v.expand(1, 2, 5, 6))

    def test_module_structure_and_keys(self) -> None:
        m = MDTA(12, num_heads=3)
        assert m.temperature.shape == (3, 1, 1)
        assert set(m.state_dict()) == {
            "temperature", "qkv.weight", "qkv_dwconv.weight", "project_out.weight",
        }  # fmt: skip
        assert m.qkv_dwconv.groups == 36
        with pytest.raises(ValueError, match="divisible"):
            MDTA(10, num_heads=3)

    def test_module_equals_manual_pipeline(self) -> None:
        m = _randomise(MDTA(8, num_heads=2)).double()
        x = torch.randn(2, 8, 7, 5, dtype=torch.float64)
        qkv = F.conv2d(F.conv2d(x, m.qkv.weight), m.qkv_dwconv.weight, padding=1, groups=24)
        q, k, v = qkv.chunk(3, 1)
        ref = F.conv2d(_reference_mdta_attention(q, k, v, m.temperature, 2), m.project_out.weight)
        torch.testing.assert_close(m(x), ref)

    def test_channels_last(self) -> None:
        m = _randomise(MDTA(8, num_heads=2))
        x = torch.randn(2, 8, 6, 10)
        torch.testing.assert_close(m.to(memory_format=CL)(x.to(memory_format=CL)), m(x), atol=1e-5, rtol=1e-4)


class TestCrossChannelAttention:
    def test_dense_equals_manual_pipeline_and_keys(self) -> None:
        m = _randomise(CrossChannelAttention(6, 8, num_heads=2, out_dim=5)).double()
        assert set(m.state_dict()) == {
            "temperature", "q.weight", "q_dwconv.weight", "kv.weight", "kv_dwconv.weight", "project_out.weight",
        }  # fmt: skip
        query, context = (
            torch.randn(1, 6, 4, 5, dtype=torch.float64),
            torch.randn(3, 8, 4, 5, dtype=torch.float64),
        )
        q = F.conv2d(F.conv2d(query, m.q.weight), m.q_dwconv.weight, padding=1, groups=8)
        k, v = F.conv2d(F.conv2d(context, m.kv.weight), m.kv_dwconv.weight, padding=1, groups=16).chunk(2, 1)
        attn = _reference_mdta_attention(q.expand(3, -1, -1, -1), k, v, m.temperature, 2)
        out = m(query, context)  # the batch-1 query is shared by the three contexts
        assert out.shape == (3, 5, 4, 5)
        torch.testing.assert_close(out, F.conv2d(attn, m.project_out.weight))
        with pytest.raises(ValueError, match="divisible"):
            CrossChannelAttention(6, 9, num_heads=2)


def test_gdfn_equals_manual() -> None:
    m = _randomise(GDFN(6, ffn_expansion_factor=2.66)).double()
    hidden = int(6 * 2.66)
    assert m.project_in.out_channels == 2 * hidden and m.project_out.in_channels == hidden
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    y = F.conv2d(F.conv2d(x, m.project_in.weight), m.dwconv.weight, padding=1, groups=2 * hidden)
    ref = F.conv2d(F.gelu(y[:, :hidden]) * y[:, hidden:], m.project_out.weight)
    torch.testing.assert_close(m(x), ref)


def test_transformer_block_residual_structure() -> None:
    blk = _randomise(TransformerBlock(8, num_heads=2)).double()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    y = x + blk.attn(blk.norm1(x))
    torch.testing.assert_close(blk(x), y + blk.ffn(blk.norm2(y)))
    assert {k.split(".")[0] for k in blk.state_dict()} == {"norm1", "attn", "norm2", "ffn"}


def test_resampling_layers() -> None:
    x = torch.randn(2, 8, 6, 10)
    assert OverlapPatchEmbed(3, 8)(torch.randn(1, 3, 5, 5)).shape == (1, 8, 5, 5)
    assert Downsample(8)(x).shape == (2, 16, 3, 5)
    assert Upsample(8)(x).shape == (2, 4, 12, 20)
    d = Downsample(8)
    ref = F.pixel_unshuffle(F.conv2d(x, d.body[0].weight, padding=1), 2)
    torch.testing.assert_close(d(x), ref)


class TestPromptGenBlock:
    def test_equals_per_sample_loop(self) -> None:
        gen = PromptGenBlock(prompt_dim=4, prompt_len=3, prompt_size=5, lin_dim=6).double()
        x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
        out = gen(x)
        assert out.shape == (2, 4, 9, 7)
        for n in range(2):
            logits = gen.linear_layer.weight @ x[n].mean((1, 2)) + gen.linear_layer.bias
            w = torch.softmax(logits, 0)
            mix = sum(w[i] * gen.prompt_param[i] for i in range(3))
            mix = F.interpolate(mix[None], size=(9, 7), mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[n : n + 1], F.conv2d(mix, gen.conv3x3.weight, padding=1))

    def test_weights_are_a_distribution_and_keys(self) -> None:
        gen = PromptGenBlock(prompt_dim=4, prompt_len=5, prompt_size=3, lin_dim=6)
        w = gen.prompt_weights(torch.randn(3, 6, 4, 4))
        torch.testing.assert_close(w.sum(1), torch.ones(3))
        assert gen.state_dict()["prompt_param"].shape == (1, 5, 4, 3, 3)  # official shape
        assert gen.prompt_param.shape == (5, 4, 3, 3)  # stored 4-D for channels-last support
        clone = PromptGenBlock(prompt_dim=4, prompt_len=5, prompt_size=3, lin_dim=6)
        clone.load_state_dict(gen.state_dict())
        torch.testing.assert_close(clone.prompt_param, gen.prompt_param)
        assert set(gen.state_dict()) == {
            "prompt_param", "linear_layer.weight", "linear_layer.bias", "conv3x3.weight",
        }  # fmt: skip
        with pytest.raises(ValueError, match="positive"):
            PromptGenBlock(prompt_len=0)

    def test_channels_last(self) -> None:
        gen = PromptGenBlock(prompt_dim=4, prompt_len=3, prompt_size=5, lin_dim=6)
        x = torch.randn(2, 6, 9, 7)
        out = gen.to(memory_format=CL)(x.to(memory_format=CL))
        assert out.is_contiguous(memory_format=CL)
        torch.testing.assert_close(out, gen(x), atol=1e-5, rtol=1e-4)


def test_prompt_interaction_equals_parts() -> None:
    blk = _randomise(PromptInteraction(feature_dim=8, prompt_dim=4, out_dim=6, num_heads=2)).double()
    f = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    p = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    out = blk(f, p)
    assert out.shape == (1, 6, 5, 5)
    torch.testing.assert_close(out, blk.reduce(blk.transformer(torch.cat([f, p], 1))))


class TestNAF:
    def test_block_starts_as_identity_and_equals_manual(self) -> None:
        blk = NAFBlock(4)
        x = torch.randn(1, 4, 6, 6)
        torch.testing.assert_close(blk(x), x)  # beta = gamma = 0 at init
        blk = _randomise(blk).double()
        x = x.double()

        def ln(t: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
            mu = t.mean(1, keepdim=True)
            var = ((t - mu) ** 2).mean(1, keepdim=True)
            return (t - mu) / torch.sqrt(var + 1e-6) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(
                1, -1, 1, 1
            )

        h = F.conv2d(ln(x, blk.norm1), blk.conv1.weight, blk.conv1.bias)
        h = F.conv2d(h, blk.conv2.weight, blk.conv2.bias, padding=1, groups=8)
        h = h[:, :4] * h[:, 4:]
        h = h * F.conv2d(h.mean((2, 3), keepdim=True), blk.sca[1].weight, blk.sca[1].bias)
        y = x + F.conv2d(h, blk.conv3.weight, blk.conv3.bias) * blk.beta
        g = F.conv2d(ln(y, blk.norm2), blk.conv4.weight, blk.conv4.bias)
        ref = y + F.conv2d(g[:, :4] * g[:, 4:], blk.conv5.weight, blk.conv5.bias) * blk.gamma
        torch.testing.assert_close(blk(x), ref)


class TestPadding:
    @pytest.mark.parametrize(("h", "w"), [(37, 53), (1, 1), (8, 16), (3, 9)])
    def test_sizes_and_content(self, h: int, w: int) -> None:
        x = torch.randn(1, 2, h, w)
        y, size = pad_to_multiple(x, 8)
        assert size == (h, w)
        assert y.shape[-2] % 8 == 0 and y.shape[-1] % 8 == 0
        assert y.shape[-2] - h < 8 and y.shape[-1] - w < 8
        torch.testing.assert_close(y[..., :h, :w], x)

    def test_reflect_values(self) -> None:
        x = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 6, 6)
        y, _ = pad_to_multiple(x, 8)
        assert y[0, 0, 0, 6:].tolist() == [4.0, 3.0]  # reflected, not repeated


_FAMILIES = [
    "restormer",
    "promptir",
    "nafnet",
    "baryir",
    "adair",
    "moce_ir",
    "mirage_s",
    "dfpir",
    "pip_restormer",
    "pip_nafnet",
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", _FAMILIES)
def test_the_network_runs_in_the_layout_it_is_given(name: str, channels_last: bool) -> None:
    """Every convolution of a network in NCHW sees NCHW maps (the official code's layout, what CUDA runs),
    every convolution of a network in channels-last sees channels-last maps (a batch of two: channel slices
    of a batch are not contiguous in either layout)."""
    net = create_model(name, **TINY[name]).eval()
    x = torch.rand(2, 3, 32, 32)
    if channels_last:
        net, x = net.to(memory_format=CL), x.contiguous(memory_format=CL)
    fmt = CL if channels_last else torch.contiguous_format
    seen: list[str] = []

    def check(name: str, inp: torch.Tensor) -> None:
        if inp.shape[2] * inp.shape[3] > 1 and inp.shape[1] > 1 and not inp.is_contiguous(memory_format=fmt):
            seen.append(name)

    for n, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(lambda m, inp, n=n: check(n, inp[0]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DFPIR without a text embedding
        net(x)
    assert seen == []
