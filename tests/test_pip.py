"""PIP: degradation weights, prompt modules, selective top-m attention, PIP networks and PIPUNet."""

from __future__ import annotations

import copy
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import PIPNAFNet, PIPRestormer, PIPUNet, create_model, load_checkpoint
from allinone_ir.degradation_types import DEFAULT_DEGRADATIONS, resolve_degradation_weights
from allinone_ir.errors import AllInOneIRError, CheckpointError, DatasetError
from allinone_ir.layers import channel_attention
from allinone_ir.layers.attention import top_m_channel_attention, top_m_sizes
from allinone_ir.losses import DEFAULT_DDL_ALPHA, collect_degradation_prompts
from allinone_ir.models import DegradationClassifier, degradation_classification_loss, get_model_class
from allinone_ir.models.classifier import BasicBlock
from allinone_ir.models.pip import (
    DEFAULT_CLASSIFIER_WEIGHT,
    PIPBlock,
    PromptInPrompt,
    PromptToFeature,
    PromptToPrompt,
    SelectivePromptToFeature,
)
from allinone_ir.training import ModelEMA

from .test_layers import _reference_top_m_attention
from .tiny_configs import TINY, randomise, tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and avoids OpenMP spin-waits on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _resolve(spec, n: int = 2, names=DEFAULT_DEGRADATIONS) -> list[list[float]]:
    return resolve_degradation_weights(spec, batch_size=n, names=names).tolist()


class TestDegradationWeights:
    def test_names_labels_and_mixtures(self) -> None:
        assert DEFAULT_DEGRADATIONS == ("noise", "rain", "haze", "blur", "lowlight")
        assert _resolve("rain") == [[0, 1, 0, 0, 0]] * 2
        assert _resolve("Low-Light", 1) == [[0, 0, 0, 0, 1]]  # case, '-', '_', spaces ignored
        assert _resolve("derain", 1) == _resolve("rain", 1)  # official task names are aliases
        assert _resolve(3, 1) == [[0, 0, 0, 1, 0]]
        assert _resolve(["noise", "rain+haze"]) == [[1, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0]]
        assert _resolve([4, "blur"]) == [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]
        assert _resolve({"rain": 0.7, "noise": 0.3}, 1)[0] == pytest.approx([0.3, 0.7, 0, 0, 0])
        assert _resolve({"rain": 2.0}, 1) == [[0, 2.0, 0, 0, 0]]  # not renormalised

    def test_tensors(self) -> None:
        assert _resolve(torch.tensor([2, 0])) == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
        assert _resolve(torch.tensor(1)) == [[0, 1, 0, 0, 0]] * 2
        w = torch.tensor([[0.2, 0.0, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
        assert _resolve(w) == w.tolist()
        assert _resolve(w[0]) == [w[0].tolist()] * 2  # (T,) broadcast
        out = resolve_degradation_weights(w, batch_size=2, dtype=torch.float64)
        assert out.dtype == torch.float64

    def test_user_defined_names(self) -> None:
        names = ("rain", "snow", "fog")
        assert _resolve("snow", 1, names) == [[0, 1, 0]]
        assert _resolve(["fog", "rain+snow"], 2, names) == [[0, 0, 1], [0.5, 0.5, 0]]
        with pytest.raises(ValueError, match=r"unknown degradation name 'noise'.*\['rain', 'snow', 'fog'\]"):
            _resolve("noise", 1, names)

    @pytest.mark.parametrize(
        ("spec", "error", "match"),
        [
            ("rian", ValueError, "did you mean 'rain'"),
            ("fire", ValueError, "unknown degradation name 'fire'"),
            ("rain+", ValueError, "empty degradation name"),
            (7, ValueError, r"label 7 out of range.*0\.\.4"),
            (["rain"], ValueError, "got 1 degradations for a batch of 2"),
            (torch.tensor([0, 1, 2]), ValueError, r"shape \(2,\)"),
            (torch.tensor([0, 5]), ValueError, r"0\.\.4"),
            (torch.ones(2, 4), ValueError, r"shape \(2, 5\), \(1, 5\) or \(5,\)"),
            (torch.ones(3, 5), ValueError, r"shape \(2, 5\)"),
            (torch.tensor([[1.0, -0.5, 0, 0, 0]]), ValueError, "non-negative"),
            (torch.tensor([[1.0, math.nan, 0, 0, 0]]), ValueError, "finite"),
            ({"rain": -1.0}, ValueError, "non-negative"),
            (None, TypeError, "degradation is None"),
            (torch.tensor([True, False]), TypeError, "bool"),
            (1.5, TypeError, "cannot read degradation weights from float"),
        ],
    )
    def test_errors(self, spec, error: type[Exception], match: str) -> None:
        with pytest.raises(error, match=match):
            _resolve(spec)


class TestPrompts:
    def test_degradation_aware_prompt_is_the_mean_of_weighted_vectors(self) -> None:
        prompt = PromptInPrompt(prompt_dim=3, prompt_size=2, num_degradations=4, p2p_heads=1)
        assert prompt.detask_prompt_param.shape == (4, 3, 1, 1) and prompt.num_degradations == 4
        assert prompt.state_dict()["detask_prompt_param"].shape == (1, 4, 3, 1, 1)  # the official shape
        prompt.to(memory_format=torch.channels_last)  # 4-D: the training option converts it
        other = PromptInPrompt(prompt_dim=3, prompt_size=2, num_degradations=4, p2p_heads=1)
        other.load_state_dict(prompt.state_dict())  # loads the official shape
        assert torch.equal(other.detask_prompt_param, prompt.detask_prompt_param)
        omega = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]])
        out = prompt.degradation_prompt(omega)
        assert out.shape == (2, 3, 1, 1)
        d = prompt.degradation_prompts.detach()
        assert d.shape == (4, 3) and d.data_ptr() == prompt.detask_prompt_param.data_ptr()  # a view
        torch.testing.assert_close(out[0].flatten(), d[0] / 4)
        torch.testing.assert_close(out[1].flatten(), (0.5 * d[1] + 0.5 * d[2]) / 4)
        with pytest.raises(ValueError, match=r"\(N, 4\)"):
            prompt.degradation_prompt(torch.ones(2, 5))

    def test_prompt_in_prompt_steps(self) -> None:
        """D = mean(omega d) * (feature resized to S x S, channels aligned); U = P2P(B, D); outconv(U at H x W)."""
        torch.manual_seed(0)
        prompt = PromptInPrompt(prompt_dim=8, prompt_size=6, num_degradations=3).eval()
        assert prompt.low_prompt_param.shape == (1, 8, 6, 6)
        omega = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
        for channels in (5, 8, 11):  # zero-padded, equal, truncated to the prompt's 8
            z = torch.randn(2, channels, 9, 7)
            zs = F.interpolate(z, size=(6, 6), mode="bilinear", align_corners=False)
            zs = F.pad(zs, (0, 0, 0, 0, 0, 8 - channels)) if channels < 8 else zs[:, :8]
            with torch.no_grad():
                u = prompt.LGM(prompt.low_prompt_param, prompt.degradation_prompt(omega) * zs)
                expected = prompt.outconv(F.interpolate(u, size=(9, 7), mode="bilinear", align_corners=False))
                torch.testing.assert_close(prompt(z, omega), expected)

    def test_p2p_shapes(self) -> None:
        b = torch.randn(1, 8, 6, 6)
        p2p = PromptToPrompt(8, num_heads=2)
        d = torch.randn(3, 8, 6, 6)
        u = p2p(b, d)
        assert u.shape == (3, 8, 6, 6)
        # a shared (batch 1) query equals the query repeated over the batch
        torch.testing.assert_close(u, p2p(b.expand(3, -1, -1, -1).contiguous(), d))


def _eq78_reference(q, k, v, temperature, heads, ms, weights):
    """Eq. 7-8 written out row by row: keep the entries >= the m-th largest of the row, softmax them."""
    n, c, h, w = q.shape
    ch = c // heads
    q = F.normalize(q.reshape(n, heads, ch, h * w).double(), dim=-1)
    k = F.normalize(k.reshape(n, heads, ch, h * w).double(), dim=-1)
    v = v.reshape(n, heads, ch, h * w).double()
    out = torch.zeros_like(v)
    for b in range(n):
        for hd in range(heads):
            a = q[b, hd] @ k[b, hd].T * float(temperature[hd])
            for i in range(ch):
                row = a[i]
                for m, wt in zip(ms, weights.tolist()):
                    mth_largest = sorted(row.tolist(), reverse=True)[m - 1]
                    keep = row >= mth_largest  # M_ij of Eq. 7
                    p = torch.zeros(ch, dtype=torch.float64)
                    e = torch.exp(row[keep] - row[keep].max())
                    p[keep] = e / e.sum()  # softmax over the selected entries (others -inf), Eq. 8
                    out[b, hd, i] += wt * (p @ v[b, hd])
    return out.reshape(n, c, h, w)


class TestTopM:
    def test_m_values(self) -> None:
        assert top_m_sizes(16) == [8, 10, 12, 12]
        assert top_m_sizes(30) == [15, 20, 22, 24]
        assert top_m_sizes(64) == [int(64 / 2), int(64 * 2 / 3), int(64 * 3 / 4), int(64 * 4 / 5)]
        assert top_m_sizes(2) == [1, 1, 1, 1]  # never an empty mask

    @pytest.mark.parametrize(("c", "heads", "hw"), [(24, 2, (5, 7)), (16, 4, (3, 3))])
    def test_equals_straightforward_eq7_eq8(self, c: int, heads: int, hw: tuple[int, int]) -> None:
        q, k, v = (torch.randn(2, c, *hw) for _ in range(3))
        temperature = torch.rand(heads, 1, 1) * 3 + 0.5
        ms = top_m_sizes(c // heads)
        weights = torch.tensor([0.2, 0.5, -0.3, 1.1])
        out = top_m_channel_attention(q, k, v, temperature, heads, ms, weights)
        ref = _eq78_reference(q, k, v, temperature, heads, ms, weights)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        unfused = _reference_top_m_attention(q, k, v, temperature, heads, ms, weights)
        torch.testing.assert_close(out, unfused, atol=1e-5, rtol=1e-5)

    def test_keeping_every_entry_is_dense_attention(self) -> None:
        q, k, v = (torch.randn(2, 8, 4, 4) for _ in range(3))
        t = torch.ones(2, 1, 1) * 2.0
        out = top_m_channel_attention(q, k, v, t, 2, [4], torch.ones(1))
        torch.testing.assert_close(out, channel_attention(q, k, v, t, 2), atol=1e-6, rtol=1e-5)

    @pytest.mark.parametrize("feature_dim", [6, 8, 12])  # narrower, equal, wider than the prompt
    def test_masks_select_and_gradients_flow(self, feature_dim: int) -> None:
        p2f = SelectivePromptToFeature(feature_dim=feature_dim, prompt_dim=8, num_heads=2)
        assert p2f.attn.top_m == [2, 2, 3, 3]
        weights = [p2f.attn.attn1, p2f.attn.attn2, p2f.attn.attn3, p2f.attn.attn4]
        assert [w.item() for w in weights] == pytest.approx([0.2] * 4)
        assert hasattr(p2f, "reduce_channel") == (feature_dim < 8)
        z, u = torch.randn(2, feature_dim, 5, 4), torch.randn(2, 8, 5, 4)
        p2f(z, u).square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in p2f.parameters())

    def test_p2f_is_the_official_block(self) -> None:
        """Attention on the first C_p channels of the normalised feature, the rest passed as normalised;
        the residual is the normalised feature; then the dual-gated feed-forward network."""
        torch.manual_seed(0)
        p2f = PromptToFeature(feature_dim=12, prompt_dim=8, num_heads=2).eval()
        block = p2f.prompt_transformer_cross
        z, u = torch.randn(2, 12, 5, 4), torch.randn(2, 8, 5, 4)
        with torch.no_grad():
            zn = block.norm11(z)
            x = torch.cat([zn[:, :8] + block.attn(zn[:, :8], block.norm12(u)), zn[:, 8:]], dim=1)
            h1, h2 = block.ffn.dwconv(block.ffn.project_in(block.norm2(x))).chunk(2, dim=1)
            expected = x + block.ffn.project_out(F.gelu(h2) * h1 + F.gelu(h1) * h2)
            torch.testing.assert_close(p2f(z, u), expected)

    def test_bf16(self) -> None:
        q, k, v = (torch.randn(1, 16, 6, 6) for _ in range(3))
        ref = top_m_channel_attention(q, k, v, torch.ones(2, 1, 1), 2, [4, 6], torch.tensor([0.5, 0.5]))
        out = top_m_channel_attention(
            q.bfloat16(), k.bfloat16(), v.bfloat16(), torch.ones(2, 1, 1), 2, [4, 6], torch.tensor([0.5, 0.5])
        )
        assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.05


class TestPIPBlock:
    @pytest.mark.parametrize("feature_dim", [6, 8, 20])  # narrower, equal, wider than the prompt
    def test_any_feature_width_and_size(self, feature_dim: int) -> None:
        block = PIPBlock(feature_dim, prompt_dim=8, prompt_size=4, num_degradations=3, p2f_heads=2)
        z = torch.randn(2, feature_dim, 7, 5)
        omega = torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]])
        out = block(z, omega)
        assert out.shape == z.shape and torch.isfinite(out).all()
        assert block(torch.randn(1, feature_dim, 1, 1), omega[:1]).shape == (1, feature_dim, 1, 1)
        with pytest.raises(ValueError, match=rf"\(N, {feature_dim}, H, W\)"):
            block(torch.randn(2, feature_dim + 1, 7, 5), omega)

    def test_omega_controls_and_samples_are_independent(self) -> None:
        block = PIPBlock(12, prompt_dim=8, prompt_size=4, num_degradations=5, p2f_heads=2).eval()
        z = torch.randn(3, 12, 9, 6)
        omega = resolve_degradation_weights(["rain", "noise", "haze+blur"], batch_size=3)
        with torch.no_grad():
            out = block(z, omega)
            one = torch.cat([block(z[i : i + 1], omega[i : i + 1]) for i in range(3)])
            other = block(z, resolve_degradation_weights("lowlight", batch_size=3))
        torch.testing.assert_close(out, one, atol=1e-5, rtol=1e-4)
        assert (out - other).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **TINY[name]).eval()


@pytest.mark.parametrize("name", ["pip_restormer", "pip_nafnet"])
class TestPIPNetworks:
    def test_different_omega_give_different_outputs(self, name: str) -> None:
        model = _tiny(name)
        x = torch.rand(1, 3, 16, 20)
        with torch.no_grad():
            outs = [model(x, degradation=d) for d in DEFAULT_DEGRADATIONS]
            mix = model(x, degradation="rain+noise")
        for i in range(5):
            for j in range(i + 1, 5):
                assert (outs[i] - outs[j]).abs().max() > 1e-4, (i, j)
        assert (mix - outs[0]).abs().max() > 1e-4 and (mix - outs[1]).abs().max() > 1e-4

    def test_mixed_label_batch_equals_one_by_one(self, name: str) -> None:
        model = _tiny(name)
        x = torch.rand(4, 3, 16, 16)
        labels = torch.tensor([3, 0, 1, 4])
        with torch.no_grad():
            batch = model(x, labels)
            one = torch.cat([model(x[i : i + 1], int(labels[i])) for i in range(4)])
            names = model(x, [DEFAULT_DEGRADATIONS[i] for i in labels])
        torch.testing.assert_close(batch, one, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batch, names)

    def test_blind_and_returned_weights(self, name: str) -> None:
        model = _tiny(name)
        x = torch.rand(2, 3, 13, 11)
        with torch.no_grad():
            out, omega = model(x, return_weights=True)
            expected = model.classify(x).softmax(-1)
            torch.testing.assert_close(omega, expected)
            torch.testing.assert_close(out, model(x, omega))  # blind == the estimated weights given
            _, given = model(x, "haze", return_weights=True)
            out2, given2, logits = model(x, "haze", return_weights=True, return_logits=True)
        assert given.tolist() == [[0, 0, 1, 0, 0]] * 2 and torch.equal(given, given2)
        assert logits.shape == (2, 5) and out2.shape == x.shape

    def test_classifier_free_network_needs_a_degradation(self, name: str) -> None:
        model = create_model(name, **{**TINY[name], "classifier": False})
        assert model.classifier is None
        assert model(torch.rand(1, 3, 8, 8), "rain").shape == (1, 3, 8, 8)
        with pytest.raises(ValueError, match="classifier=False"):
            model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="classifier=False"):
            model.classify(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="unknown degradation name"):
            model(torch.rand(1, 3, 8, 8), "smog")

    def test_user_defined_degradations_and_config(self, name: str) -> None:
        model = create_model(name, **{**TINY[name], "degradations": ("rain", "snow")})
        assert model.num_degradations == 2 and model.accepts_degradation
        assert model.classify(torch.rand(1, 3, 8, 8)).shape == (1, 2)
        clone = get_model_class(type(model).__name__)(**model.config)
        assert clone.degradations == ("rain", "snow")
        with pytest.raises(TypeError):
            type(model)(3)  # keyword-only

    def test_joint_training_step_uses_every_parameter(self, name: str) -> None:
        model = _tiny(name).train()
        x, labels = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
        out, logits = model(x, labels, return_logits=True)
        loss = out.abs().mean() + degradation_classification_loss(logits, labels)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


class TestFullSize:
    @pytest.mark.slow
    def test_pip_restormer_count_breakdown_and_forward(self) -> None:
        model = create_model("pip_restormer").eval()
        count = sum(p.numel() for p in model.parameters())
        classifier = sum(p.numel() for p in model.classifier.parameters())
        assert classifier == 78_005
        # the official network (27,429,510) without its unused reduce_noise_channel_1..3 (112,896)
        assert count - classifier == 27_316_614
        pips = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("prompt", "low_prompt")))
        assert count - classifier - pips == 24_191_284  # the official PIP-Restormer backbone
        sd = model.state_dict()
        assert sd["prompt3.detask_prompt_param"].shape == (1, 5, 256, 1, 1)
        assert sd["prompt1.low_prompt_param"].shape == (1, 64, 64, 64)
        cross = "low_prompt_interaction_level2.prompt_transformer_cross"
        assert sd[f"{cross}.attn.q.weight"].shape == (128, 128, 1, 1)
        assert sd[f"{cross}.reduce_channel.weight"].shape == (96, 128, 1, 1)  # features narrower than prompts
        assert sd["chnl_reduce3.weight"].shape == (192, 384, 1, 1)
        assert sd["reduce_chan_level3.weight"].shape == (192, 288, 1, 1)
        assert model.low_prompt_interaction_level3.prompt_transformer_cross.attn.top_m == [32, 42, 48, 51]
        with torch.no_grad():
            y = model(torch.rand(1, 3, 19, 26), degradation="rain")  # the "done" criterion
            blind, omega = model(torch.rand(1, 3, 16, 16), return_weights=True)
        assert y.shape == (1, 3, 19, 26) and torch.isfinite(y).all()
        assert blind.shape == (1, 3, 16, 16) and omega.sum().item() == pytest.approx(1.0)

    @pytest.mark.slow
    def test_pip_nafnet_count_and_forward(self) -> None:
        model = create_model("pip_nafnet").eval()
        assert isinstance(model, PIPNAFNet)
        count = sum(p.numel() for p in model.parameters())
        assert count == 120_510_960
        assert count - 78_005 - sum(p.numel() for p in model.pips.parameters()) == 115_982_915  # NAFNet-64
        assert [b.prompt.prompt_dim for b in model.pips] == [64, 96, 128, 128]
        assert [b.prompt.prompt_size for b in model.pips] == [64, 32, 16, 16]
        with torch.no_grad():
            y = model(torch.rand(1, 3, 20, 17), degradation=torch.tensor([[0.5, 0.5, 0, 0, 0]]))
        assert y.shape == (1, 3, 20, 17) and torch.isfinite(y).all()


class _UNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, w, 3, padding=1)
        self.enc2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.skip1 = nn.Identity()
        self.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.out = nn.Conv2d(2 * w, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = F.gelu(self.enc1(x))
        e2 = F.gelu(self.enc2(e1))
        return x + self.out(torch.cat([self.up(e2), self.skip1(e1)], 1))


class TestPIPUNet:
    def _net(self, **kw) -> PIPUNet:
        torch.manual_seed(0)
        args = dict(skips={"skip1": 8, "enc2": 16}, prompt_dims=(8, 8), prompt_sizes=(8, 4), p2f_heads=2,
                    pad_multiple=2, classifier_widths=(4,))  # fmt: skip
        return PIPUNet(_UNet(), **{**args, **kw}).eval()

    def test_plugs_pip_on_named_modules(self) -> None:
        net = self._net()
        assert sorted(net.pips) == ["enc2", "skip1"]
        x = torch.rand(3, 3, 15, 10)
        labels = torch.tensor([0, 4, 2])
        xp = F.pad(x, (0, 0, 0, 1), mode="reflect")  # what the wrapper feeds the backbone (pad_multiple=2)
        with torch.no_grad():
            plain = net.backbone(xp)  # the backbone alone is untouched by the hooks
            ref = _UNet()
            ref.load_state_dict(net.backbone.state_dict())
            torch.testing.assert_close(plain, ref(xp))
            out = net(x, labels)
            one = torch.cat([net(x[i : i + 1], int(labels[i])) for i in range(3)])
            other = net(x, "rain")
            # the same computation written by hand with the PIP blocks
            omega = resolve_degradation_weights(labels, batch_size=3)
            bb = net.backbone
            e1 = F.gelu(bb.enc1(xp))
            e2 = F.gelu(net.pips["enc2"](bb.enc2(e1), omega))  # the hook modulates the conv output
            manual = xp + bb.out(torch.cat([bb.up(e2), net.pips["skip1"](e1, omega)], 1))
        assert out.shape == x.shape
        torch.testing.assert_close(out, manual[..., :15, :10])
        torch.testing.assert_close(out, one, atol=1e-5, rtol=1e-4)
        assert (out - other).abs().max() > 1e-4 and (out - plain[..., :15, :10]).abs().max() > 1e-4
        assert torch.equal(net.backbone(xp), plain)  # still untouched after PIP forwards

    def test_training_reaches_backbone_and_prompts(self) -> None:
        net = self._net().train()
        net(torch.rand(2, 3, 8, 8)).mean().backward()  # blind: the classifier is used too
        missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []
        assert "pips.skip1.prompt.detask_prompt_param" in net.state_dict()

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"\['dec9'\] are not sub-modules"):
            PIPUNet(_UNet(), skips={"dec9": 8})
        with pytest.raises(ValueError, match="prompt_dims needs 1 entries"):
            PIPUNet(_UNet(), skips={"skip1": 8}, prompt_dims=(8, 8))
        with pytest.raises(ValueError, match="at least one"):
            PIPUNet(_UNet(), skips={})
        net = self._net(skips={"skip1": 7}, prompt_dims=(8,), prompt_sizes=4)  # wrong channel count
        with pytest.raises(ValueError, match=r"\(N, 7, H, W\)"):
            net(torch.rand(1, 3, 8, 8), "rain")

    def test_copies_apply_pip(self) -> None:
        net = self._net()
        x = torch.rand(2, 3, 16, 12)
        with torch.no_grad():
            y, bare = net(x, "rain"), net.backbone(x)
            clone = copy.deepcopy(net)
            assert torch.equal(clone(x, "rain"), y)
            assert torch.equal(ModelEMA(net, decay=0.9)(x, "rain"), y)  # what validation and best.pt judge
            assert torch.equal(pickle.loads(pickle.dumps(net))(x, "rain"), y)
            assert (y - bare).abs().max() > 1e-3  # ... which is not the bare backbone
            # the copy uses its own blocks: changing them changes the copy only
            clone.pips["skip1"].prompt.low_prompt_param.add_(1.0)
            assert not torch.allclose(clone(x, "rain"), y) and torch.equal(net(x, "rain"), y)
            assert torch.equal(clone.backbone(x), bare)  # the copy's backbone alone is unchanged too

    def test_ema_tracks_the_pip_blocks(self) -> None:
        net = self._net()
        ema = ModelEMA(net, decay=0.5)
        with torch.no_grad():
            net.pips["enc2"].prompt.low_prompt_param.add_(2.0)
            ema.update(net)
            expected = net.pips["enc2"].prompt.low_prompt_param - 1.0  # halfway from the old value
        torch.testing.assert_close(ema.module.pips["enc2"].prompt.low_prompt_param, expected)

    def test_state_dict_keys_are_unchanged_and_plain_backbone_weights_load(self) -> None:
        net = self._net(skips={"skip1": 8}, prompt_dims=(8,), prompt_sizes=4, classifier=False)
        keys = list(net.state_dict())
        # the backbone's keys unchanged, then the PIP block's (45 in all)
        assert keys[:8] == [
            f"backbone.{m}.{p}" for m in ("enc1", "enc2", "up", "out") for p in ("weight", "bias")
        ]
        assert len(keys) == 45 and all(k.startswith("pips.skip1.") for k in keys[8:])
        assert keys[8:10] == ["pips.skip1.prompt.detask_prompt_param", "pips.skip1.prompt.low_prompt_param"]
        plain = _UNet()
        net.backbone.load_state_dict(plain.state_dict())  # pretrained weights of the plain U-Net
        assert torch.equal(net.backbone.enc2.weight, plain.enc2.weight) and isinstance(
            net.backbone.enc2, nn.Conv2d
        )
        other = self._net(skips={"skip1": 8}, prompt_dims=(8,), prompt_sizes=4, classifier=False)
        other.load_state_dict(net.state_dict())
        x = torch.rand(1, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(other(x, "haze"), net(x, "haze"))

    def test_two_wrappers_of_one_backbone_apply_their_own_blocks(self) -> None:
        first = self._net()
        torch.manual_seed(1)
        second = PIPUNet(first.backbone, skips={"skip1": 8, "enc2": 16}, prompt_dims=(8, 8), prompt_sizes=(8, 4),
                         p2f_heads=2, pad_multiple=2, classifier_widths=(4,)).eval()  # fmt: skip
        assert len(first.backbone.skip1._forward_hooks) == 1  # tapped once
        x = torch.rand(1, 3, 8, 8)
        with torch.no_grad():
            a, b = first(x, "rain"), second(x, "rain")
            second.load_state_dict(first.state_dict())
            assert (a - b).abs().max() > 1e-4 and torch.equal(second(x, "rain"), a)

    def test_replaced_module_and_clashing_names(self) -> None:
        net = self._net()
        net.backbone.skip1 = nn.Identity()  # the tapped module is gone: PIP would silently not apply
        with pytest.raises(RuntimeError, match="'skip1' was replaced after PIPUNet wrapped"):
            net(torch.rand(1, 3, 8, 8), "rain")
        bb = _UNet()
        bb.blk = nn.Sequential(nn.Identity())
        bb.blk_0 = nn.Identity()
        with pytest.raises(ValueError, match="same PIP block names"):
            PIPUNet(bb, skips={"blk.0": 8, "blk_0": 8})


class TestClassifier:
    def test_shapes_any_size_and_loss(self) -> None:
        clf = DegradationClassifier(num_degradations=3, widths=(4, 8), blocks_per_stage=2).eval()
        assert clf(torch.rand(2, 3, 1, 1)).shape == (2, 3)
        assert clf(torch.rand(1, 3, 45, 31)).shape == (1, 3)
        logits = torch.tensor([[2.0, 0.0, 0.0]])
        expected = -math.log(math.exp(2) / (math.exp(2) + 2))
        assert degradation_classification_loss(logits, torch.tensor([0])).item() == pytest.approx(expected)
        soft = torch.tensor([[1.0, 1.0, 0.0]])  # normalised to 0.5 / 0.5
        lp = logits.log_softmax(-1)[0]
        ref = -(0.5 * lp[0] + 0.5 * lp[1]).item()
        assert degradation_classification_loss(logits, soft).item() == pytest.approx(ref)
        with pytest.raises(ValueError, match="labels must have shape"):
            degradation_classification_loss(logits, torch.tensor([0, 1]))

    def test_projection_shortcut_is_a_strided_1x1_convolution(self) -> None:
        block = randomise(BasicBlock(4, 8, stride=2)).eval()
        assert block.shortcut[0].weight.shape == (8, 4, 1, 1)  # ResNet's projection, same parameters
        x = torch.rand(2, 4, 9, 7)
        with torch.no_grad():
            main = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
            skip = block.shortcut[1](F.conv2d(x, block.shortcut[0].weight, stride=2))
            torch.testing.assert_close(block(x), F.relu(main + skip))
        assert block(x).shape == (2, 8, 5, 4)

    def test_narrow_classifier_trains_channels_last(self) -> None:
        """torch 2.13's oneDNN corrupts the heap in the backward of a strided 1x1 convolution with fewer than
        8 input channels in channels-last; the classifier must not use one (run apart: a crash is fatal)."""
        code = (
            "import torch\n"
            "from allinone_ir.models import DegradationClassifier\n"
            "torch.manual_seed(0)\n"
            "clf = DegradationClassifier(num_degradations=2, widths=(4, 8)).to(memory_format=torch.channels_last)\n"
            "for _ in range(5):\n"
            "    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)\n"
            "    clf(x).logsumexp(-1).mean().backward()\n"
            "print('grad', float(clf.stem[0].weight.grad.abs().sum()) > 0)\n"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0 and "grad True" in proc.stdout, proc.stderr[-2000:]

    def test_learns_to_separate_two_toy_degradations(self) -> None:
        torch.manual_seed(0)
        clf = DegradationClassifier(num_degradations=2, widths=(8, 16))
        opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)

        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            clean = torch.rand(16, 3, 16, 16, generator=gen) * 0.5 + 0.25
            labels = torch.arange(16) % 2
            noisy = clean + 0.2 * torch.randn(clean.shape, generator=gen)
            return torch.where(labels.view(-1, 1, 1, 1) == 0, noisy, clean * 0.3), labels

        for _ in range(30):
            x, y = batch()
            loss = degradation_classification_loss(clf(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = batch()
        with torch.no_grad():
            acc = (clf.eval()(x).argmax(-1) == y).float().mean().item()
        assert acc >= 0.9


# ----------------------------------------------------------------------------------------------------------
# The family's training recipe: training_forward_kwargs, split_training_output, auxiliary_losses
# ----------------------------------------------------------------------------------------------------------
RECIPE_NETS = ["pip_restormer", "pip_nafnet", "pip_unet"]
SOFT = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0, 0.7]])  # Degradation-Mix weights


def _recipe_net(kind: str, **kw: Any) -> nn.Module:
    """A seeded tiny PIPRestormer, PIPNAFNet or PIPUNet (every parameter influences the output)."""
    torch.manual_seed(0)
    if kind == "pip_unet":
        return PIPUNet(_UNet(), skips={"skip1": 8, "enc2": 16}, prompt_dims=(8, 8), prompt_sizes=(8, 4),
                       p2f_heads=2, pad_multiple=2, classifier_widths=(4,), **kw)  # fmt: skip
    if not kw:
        return tiny_model(kind)
    model = create_model(kind, **{**TINY[kind], **kw})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.1)
    return model


def _batch(labels: str, n: int = 2, size: int = 16, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    batch: dict[str, Any] = {
        "degraded": torch.rand(n, 3, size, size, generator=gen),
        "clean": torch.rand(n, 3, size, size, generator=gen),
    }
    if labels == "int":
        batch["label"] = torch.randint(0, 5, (n,), generator=gen)
    elif labels == "soft":
        batch["label"] = SOFT.repeat(n // 2, 1)
    return batch


def _recipe_loss(
    model: nn.Module, batch: dict[str, Any], net: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """One training forward as the Trainer runs it (``net`` may be the DDP wrapper of ``model``)."""
    output = (net or model)(batch["degraded"], **model.training_forward_kwargs(batch))
    image, extras = model.split_training_output(output)
    parts = {"main": F.l1_loss(image, batch["clean"])}
    for term in model.auxiliary_losses():
        parts[term.name] = term.weight * term.fn(model, batch, extras)
    return parts


class TestTrainingRecipe:
    @pytest.mark.parametrize("kind", RECIPE_NETS)
    def test_declared_terms_and_weights(self, kind: str) -> None:
        terms = _recipe_net(kind).auxiliary_losses()
        assert [(t.name, t.weight) for t in terms] == [("ddl", 0.002), ("classifier", 0.1)]
        assert DEFAULT_DDL_ALPHA == 0.002 and DEFAULT_CLASSIFIER_WEIGHT == 0.1
        assert [t.name for t in _recipe_net(kind, classifier=False).auxiliary_losses()] == ["ddl"]

    def test_training_forward_kwargs(self) -> None:
        model = _recipe_net("pip_restormer")
        labels = torch.tensor([1, 3])
        kw = model.training_forward_kwargs({"degraded": torch.rand(2, 3, 8, 8), "label": labels})
        assert (
            kw.keys() == {"degradation", "return_logits"}
            and kw["degradation"] is labels
            and kw["return_logits"]
        )
        assert (
            model.training_forward_kwargs({"label": SOFT})["degradation"] is SOFT
        )  # mixed weights pass through
        assert model.training_forward_kwargs({"degraded": torch.rand(2, 3, 8, 8)}) == {}  # blind
        bare = _recipe_net("pip_restormer", classifier=False)
        assert bare.training_forward_kwargs({"label": labels}) == {"degradation": labels}
        with pytest.raises(
            DatasetError, match=r"classifier=False\) needs degradation labels.*keys: \['clean', "
        ):
            bare.training_forward_kwargs({"clean": 0, "degraded": 0})
        assert issubclass(DatasetError, AllInOneIRError)

    def test_split_training_output(self) -> None:
        model = _recipe_net("pip_nafnet")
        image, logits = torch.rand(2, 3, 4, 4), torch.rand(2, 5)
        out, extras = model.split_training_output(image)
        assert out is image and extras == {}
        out, extras = model.split_training_output((image, logits))
        assert out is image and extras.keys() == {"logits"} and extras["logits"] is logits
        with pytest.raises(ValueError, match="\\(image, logits\\), got a tuple of 3"):
            model.split_training_output((image, logits, logits))

    @pytest.mark.parametrize("kind", RECIPE_NETS)
    def test_ddl_term_is_eq4_on_the_networks_own_prompts(self, kind: str) -> None:
        model = _recipe_net(kind)
        ddl = next(t for t in model.auxiliary_losses() if t.name == "ddl")
        prompts = collect_degradation_prompts(model)
        assert len(prompts) == {"pip_restormer": 3, "pip_nafnet": 2, "pip_unet": 2}[kind]
        with torch.no_grad():
            for p in prompts:  # identical prompts: every pair is 90 degrees short of the threshold
                p.copy_(torch.ones_like(p))
        value = ddl.fn(model, {}, {})
        assert value.item() == pytest.approx(len(prompts) * math.pi / 2, rel=1e-6)
        with torch.no_grad():
            prompts[0].copy_(torch.eye(*prompts[0].shape))  # orthogonal: this block adds nothing
        assert ddl.fn(model, {}, {}).item() == pytest.approx((len(prompts) - 1) * math.pi / 2, rel=1e-6)

    def test_classifier_term_values(self) -> None:
        model = _recipe_net("pip_restormer")
        fn = next(t for t in model.auxiliary_losses() if t.name == "classifier").fn
        logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 3.0, 0.0]])
        labels = torch.tensor([0, 3])
        lp = logits.log_softmax(-1)
        expected = -(lp[0, 0] + lp[1, 3]).item() / 2
        x = torch.rand(2, 3, 8, 8)
        assert fn(model, {"degraded": x, "label": labels}, {"logits": logits}).item() == pytest.approx(
            expected
        )
        soft = -((0.5 * lp[0, 0] + 0.5 * lp[0, 1]) + (0.3 * lp[1, 2] + 0.7 * lp[1, 4])).item() / 2
        assert fn(model, {"degraded": x, "label": SOFT}, {"logits": logits}).item() == pytest.approx(soft)
        assert fn(
            model, {"degraded": x, "label": ["noise", "blur"]}, {"logits": logits}
        ).item() == pytest.approx(expected)  # names read like labels
        assert fn(model, {"degraded": x}, {}).item() == 0.0  # blind: no labels, nothing to learn from
        with pytest.raises(ValueError, match="needs the classifier's logits"):
            fn(model, {"degraded": x, "label": labels}, {})

    @pytest.mark.parametrize("labels", ["int", "soft", "blind"])
    @pytest.mark.parametrize("kind", RECIPE_NETS)
    def test_one_training_forward_uses_every_parameter(self, kind: str, labels: str) -> None:
        """What DDP without find_unused_parameters needs: one forward, every gradient present and finite."""
        model = _recipe_net(kind).train()
        parts = _recipe_loss(model, _batch(labels))
        assert set(parts) == {"main", "ddl", "classifier"}
        assert parts["classifier"].item() > 0 if labels != "blind" else parts["classifier"].item() == 0
        sum(parts.values()).backward()
        bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert bad == []

    @pytest.mark.parametrize("kind", RECIPE_NETS)
    def test_classifier_learns_only_from_its_term(self, kind: str) -> None:
        """With labels the classifier sees the degraded image only: the two gradients do not mix."""
        model = _recipe_net(kind).train()
        parts = _recipe_loss(model, _batch("int"))
        clf = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
        (parts["main"] + parts["ddl"]).backward(retain_graph=True)
        reached = {n for n, p in model.named_parameters() if p.grad is not None}
        assert reached.isdisjoint(clf) and len(reached) == len(list(model.parameters())) - len(clf)
        model.zero_grad(set_to_none=True)
        parts["classifier"].backward()
        assert {n for n, p in model.named_parameters() if p.grad is not None} == clf

    def test_recipe_trains_the_classifier_for_blind_restoration(self) -> None:
        """Training with the declared recipe makes the blind omega right (it was random before)."""
        model = _recipe_net("pip_unet", degradations=("noise", "lowlight"))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)

        def batch() -> dict[str, Any]:
            clean = torch.rand(16, 3, 16, 16, generator=gen) * 0.5 + 0.25
            labels = torch.arange(16) % 2
            noisy = clean + 0.2 * torch.randn(clean.shape, generator=gen)
            return {"degraded": torch.where(labels.view(-1, 1, 1, 1) == 0, noisy, clean * 0.3),
                    "clean": clean, "label": labels}  # fmt: skip

        def accuracy() -> float:
            b = batch()
            with torch.no_grad():
                _, omega = model.eval()(b["degraded"], return_weights=True)
            model.train()
            return (omega.argmax(-1) == b["label"]).float().mean().item()

        before = accuracy()
        for _ in range(30):
            loss = sum(_recipe_loss(model, batch()).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert before <= 0.75 and accuracy() >= 0.9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DDP_STEPS, _DDP_LR = 3, 0.1


def _ddp_recipe_worker(rank: int, world: int, port: int, out: str) -> None:
    """One of two gloo processes: 3 SGD steps of a tiny PIPRestormer with the family's recipe under DDP."""
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _recipe_net("pip_restormer").train()
        net = DistributedDataParallel(model)  # find_unused_parameters=False: every parameter must be used
        opt = torch.optim.SGD(model.parameters(), lr=_DDP_LR)
        for step in range(_DDP_STEPS):
            full = _batch("int", n=2 * world, seed=step)
            local = {k: v[2 * rank : 2 * rank + 2] for k, v in full.items()}
            loss = sum(_recipe_loss(model, local, net).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if rank == 0:
            torch.save(dict(model.named_parameters()), Path(out) / "ddp.pt")
        torch.distributed.barrier()  # both leave together
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_train_with_the_recipe(tmp_path: Path) -> None:
    """DDP without find_unused_parameters runs the recipe (it failed at step 2 when the classifier's
    loss was computed outside the forward), and equals averaging the two processes' gradients by hand."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_recipe_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    model = _recipe_net("pip_restormer").train()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=_DDP_LR)
    for step in range(_DDP_STEPS):
        full = _batch("int", n=4, seed=step)
        grads: dict[str, torch.Tensor] = {}
        for rank in range(2):
            model.zero_grad(set_to_none=True)
            sum(
                _recipe_loss(model, {k: v[2 * rank : 2 * rank + 2] for k, v in full.items()}).values()
            ).backward()
            for n, p in model.named_parameters():
                grads[n] = grads.get(n, 0) + p.grad / 2
        for n, p in model.named_parameters():
            p.grad = grads[n]
        opt.step()
    assert ddp.keys() == start.keys()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ddp[n], p.detach(), atol=1e-5, rtol=1e-4, msg=n)
    moved = [n for n in start if not torch.equal(ddp[n], start[n])]
    assert any(n.startswith("classifier.") for n in moved) and any(
        n.endswith(".detask_prompt_param") for n in moved
    )


def test_exports() -> None:
    assert issubclass(PIPRestormer, nn.Module) and issubclass(PIPUNet, nn.Module)
    assert PIPRestormer.accepts_degradation and PIPNAFNet.accepts_degradation and PIPUNet.accepts_degradation


@pytest.mark.parametrize("kind", ["pip_restormer", "pip_nafnet"])
def test_weights_of_earlier_pip_blocks_are_refused(kind: str, tmp_path: Path) -> None:
    """Development versions named the PIP blocks ``pip_level1..3`` / ``pips.<i>.basic_prompt`` and computed
    another function: such weights get one clear error instead of loading as a plain backbone."""
    state = tiny_model(kind).state_dict()
    old = {k: v for k, v in state.items() if not k.startswith(("prompt", "low_prompt", "pips."))}
    old["pip_level1.basic_prompt.prompt" if kind == "pip_restormer" else "pips.0.basic_prompt.prompt"] = (
        torch.randn(8, 8, 8)
    )
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="development version of allinone-ir"):
        load_checkpoint(tmp_path / "old.pt")


@pytest.mark.parametrize("kind", ["pip_restormer", "pip_nafnet"])
def test_saved_weights_load_with_their_configuration(kind: str, tmp_path: Path) -> None:
    """Bare weights are detected (prompt sizes, degradation count, heads, classifier) and give the same output."""
    torch.manual_seed(0)
    net = create_model(kind, **{**TINY[kind], "degradations": ["rain", "haze", "snow"], "classifier": False})
    net = randomise(net, 0.2).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    with pytest.warns(UserWarning, match="3 degradation prompts"):
        loaded = load_checkpoint(tmp_path / "net.pt")
    assert type(loaded) is type(net) and loaded.num_degradations == 3 and loaded.classifier is None
    unstored = ("degradations", "classifier_widths")  # names are not in weights; no classifier, no widths
    assert {k: v for k, v in loaded.config.items() if k not in unstored} == {
        k: v for k, v in net.config.items() if k not in unstored
    }
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, torch.tensor([0, 2])), net(x, torch.tensor([0, 2])))


def test_degradations_given_as_one_string_is_refused_not_split_into_letters() -> None:
    with pytest.raises(ValueError, match=r"degradations must be a sequence of names, got the string 'rain'"):
        create_model("pip_nafnet", **{**TINY["pip_nafnet"], "degradations": "rain"})
