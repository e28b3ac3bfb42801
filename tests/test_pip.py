"""PIP: degradation weights, prompt modules, selective top-m attention, PIP networks and PIPUNet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import PIPNAFNet, PIPRestormer, PIPUNet, create_model
from allinone_ir.layers import (
    DEFAULT_DEGRADATIONS,
    BasicRestorationPrompt,
    DegradationAwarePrompt,
    PIPBlock,
    PromptToPrompt,
    SelectivePromptToFeature,
    channel_attention,
    resolve_degradation_weights,
    top_m_channel_attention,
)
from allinone_ir.layers.pip import _reference_top_m_attention, top_m_sizes
from allinone_ir.models import DegradationClassifier, degradation_classification_loss, get_model_class

from .tiny_configs import TINY


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
        prompt = DegradationAwarePrompt(num_degradations=4, dim=3)
        omega = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]])
        out = prompt(omega)
        assert out.shape == (2, 3, 1, 1)
        d = prompt.prompts.detach()
        torch.testing.assert_close(out[0].flatten(), d[0] / 4)
        torch.testing.assert_close(out[1].flatten(), (0.5 * d[1] + 0.5 * d[2]) / 4)
        with pytest.raises(ValueError, match=r"\(N, 4\)"):
            prompt(torch.ones(2, 5))

    def test_basic_prompt_and_p2p_shapes(self) -> None:
        b = BasicRestorationPrompt(8, 6)
        assert b().shape == (1, 8, 6, 6) and b.prompt.shape == (8, 6, 6)
        p2p = PromptToPrompt(8, num_heads=2)
        d = torch.randn(3, 8, 6, 6)
        u = p2p(b(), d)
        assert u.shape == (3, 8, 6, 6)
        # a shared (batch 1) query equals the query repeated over the batch
        torch.testing.assert_close(u, p2p(b().expand(3, -1, -1, -1).contiguous(), d))


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

    def test_masks_select_and_gradients_flow(self) -> None:
        p2f = SelectivePromptToFeature(feature_dim=6, prompt_dim=8, num_heads=2)
        assert p2f.attn.top_m == [2, 2, 3, 3]
        assert p2f.attn.top_m_weights.tolist() == pytest.approx([0.2] * 4)
        z, u = torch.randn(2, 6, 5, 4), torch.randn(2, 8, 5, 4)
        p2f(z, u).square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in p2f.parameters())

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
        assert count == 27_287_099
        assert 26_820_000 <= count <= 27_320_000  # paper 26.82 M .. official 27.32 M (no unused modules)
        classifier = sum(p.numel() for p in model.classifier.parameters())
        pips = sum(p.numel() for n, p in model.named_parameters() if n.startswith("pip_level"))
        assert classifier == 78_005
        assert count - classifier - pips == 24_191_284  # the official PIP-Restormer backbone
        sd = model.state_dict()
        assert sd["pip_level3.degradation_prompt.prompts"].shape == (5, 256)
        assert sd["pip_level1.basic_prompt.prompt"].shape == (64, 64, 64)
        assert sd["pip_level2.p2f.attn.q.weight"].shape == (128, 96, 1, 1)
        assert sd["chnl_reduce3.weight"].shape == (192, 384, 1, 1)
        assert sd["reduce_chan_level3.weight"].shape == (192, 288, 1, 1)
        assert model.pip_level3.p2f.attn.top_m == [32, 42, 48, 51]  # 64 channels per head
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
        assert count == 120_648_176
        assert count - 78_005 - sum(p.numel() for p in model.pips.parameters()) == 115_982_915  # NAFNet-64
        assert [b.prompt_dim for b in model.pips] == [64, 96, 128, 128]
        assert [b.prompt_size for b in model.pips] == [64, 32, 16, 16]
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
        assert any(k.startswith("pips.skip1.degradation_prompt") for k in net.state_dict())

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


def test_exports() -> None:
    assert issubclass(PIPRestormer, nn.Module) and issubclass(PIPUNet, nn.Module)
    assert PIPRestormer.accepts_degradation and PIPNAFNet.accepts_degradation and PIPUNet.accepts_degradation
