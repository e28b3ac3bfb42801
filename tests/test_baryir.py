"""BaryIR: parity with the official code (golden fixture), official sizes and keys, latents, weights entries."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from allinone_ir import load_checkpoint
from allinone_ir.errors import CheckpointError, UsageError
from allinone_ir.models import create_model
from allinone_ir.models._weights import get_weights, list_pretrained
from allinone_ir.models.baryir import (
    BARYIR_UNUSED_MODULES,
    BaryIR,
    barycenter_latent_loss,
    baryir_official_state_dict,
)

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
TOLERANCE = 1e-5
TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))

#: The fixture's official constructor arguments (manifest) in this library's names.
FIXTURE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, dim=4, num_blocks=[2, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias",
)  # fmt: skip


def _manifest() -> dict[str, Any]:
    return json.loads((FIXTURES / "manifest.json").read_text())["baryir"]


def _extracted_file(tmp_path: Path) -> Path:
    """The fixture's weights as the extraction the weights entries describe writes them
    (``torch.save(ckpt["BaryIR"].state_dict(), path)``: the official keys, the unused modules included)."""
    st = pytest.importorskip("safetensors.torch")
    path = tmp_path / "baryir.pth"
    torch.save(st.load_file(str(FIXTURES / _manifest()["weights"])), path)
    return path


@pytest.mark.parametrize("form", ["extracted_file", "safetensors"])
def test_parity_with_official_code(form: str, tmp_path: Path) -> None:
    """float32 and float64 outputs (image and the three latents) of the official forward on the fixture."""
    st = pytest.importorskip("safetensors.torch")
    meta = _manifest()
    path = _extracted_file(tmp_path) if form == "extracted_file" else FIXTURES / meta["weights"]
    net = load_checkpoint(path)
    assert type(net).__name__ == "BaryIR"
    assert net.config == FIXTURE_CONFIG
    assert not net.training
    io = st.load_file(str(FIXTURES / meta["io"]))
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "64")):
        net.to(dtype)
        for h, w in meta["sizes"]:
            x = io[f"input_{h}x{w}"].to(dtype)
            with torch.no_grad():
                image = net(x)
                outs = net(x, return_latents=True)
            assert torch.equal(image, outs[0])
            for name, out in zip(("output", "source", "bary", "residual"), outs):
                expected = io[f"{name}{suffix}_{h}x{w}"]
                assert out.dtype == expected.dtype and out.shape == expected.shape
                err = (out - expected).abs().max().item()
                assert err <= TOLERANCE, f"{name} {h}x{w} {dtype}: max abs difference {err:.3g}"


def test_fixture_keeps_the_official_keys() -> None:
    st = pytest.importorskip("safetensors.torch")
    meta = _manifest()
    state = st.load_file(str(FIXTURES / meta["weights"]))
    assert len(state) == meta["num_tensors"] == 205
    assert sum(v.numel() for v in state.values()) == meta["num_parameters"] == 259_613
    assert {"chnl_reduce3.weight", "reduce_noise_channel_1.weight", "LN.body.bias"} <= set(state)
    assert state["noise_level3.attn.temperature"].shape == (4, 1, 1)
    assert state["resreduce_noise_level3.weight"].shape == (32, 32, 1, 1)


class TestFullSize:
    def test_parameter_count_equals_the_official_network_without_unused_modules(self) -> None:
        with torch.device("meta"):
            net = create_model("baryir")
        assert sum(p.numel() for p in net.parameters()) == 53_549_774
        assert sum(b.numel() for b in net.buffers()) == 0
        # the official BaryNet(decoder=True): 53,765,070, of which these never-used modules hold 215,296
        unused = dict(
            chnl_reduce1=64 * 64, chnl_reduce2=128 * 128, chnl_reduce3=320 * 256,
            reduce_noise_channel_1=(48 + 64) * 48, reduce_noise_channel_2=(96 + 128) * 96,
            reduce_noise_channel_3=(192 + 256) * 192,
        )  # fmt: skip
        assert sorted(unused) == sorted(BARYIR_UNUSED_MODULES)
        assert sum(unused.values()) == 215_296
        assert 53_549_774 + 215_296 == 53_765_070

    def test_official_keys_order_and_shapes(self) -> None:
        with torch.device("meta"):
            sd = create_model("baryir").state_dict()
        keys = list(sd)
        assert len(keys) == 760  # the official 766 without the six unused weights
        assert keys[:3] == [
            "patch_embed.proj.weight",
            "encoder_level1.0.norm1.body.weight",
            "encoder_level1.0.norm1.body.bias",
        ]
        assert keys[-1] == "output.weight"
        i = keys.index("LN.body.weight")
        assert keys[i - 1].startswith("barylatent.7.") and keys[i + 2] == "up4_3.body.0.weight"
        assert sd["noise_level3.norm1.body.weight"].shape == (768,)
        assert sd["noise_level3.attn.temperature"].shape == (4, 1, 1)
        assert sd["reduce_noise_level3.weight"].shape == (192, 768, 1, 1)
        assert sd["reduce_chan_level3.weight"].shape == (192, 288, 1, 1)
        assert sd["resup4_3.body.0.weight"].shape == (768, 384, 3, 3)
        assert sd["resreduce_noise_level3.weight"].shape == (384, 384, 1, 1)
        assert sd["noise_level1.attn.temperature"].shape == (4, 1, 1)
        assert sd["decoder_level1.0.attn.qkv.weight"].shape == (288, 96, 1, 1)

    def test_detect_reads_the_official_configuration(self) -> None:
        with torch.device("meta"):
            sd = create_model("baryir").state_dict()
        assert BaryIR.detect(sd) == dict(
            in_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
            heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias",
        )  # fmt: skip

    def test_small_forward(self) -> None:
        torch.manual_seed(0)
        net = create_model("baryir").eval()
        with torch.no_grad():
            y = net(torch.rand(1, 3, 20, 28))
        assert y.shape == (1, 3, 20, 28) and torch.isfinite(y).all()


class TestLatents:
    def setup_method(self) -> None:
        torch.manual_seed(0)
        self.net = BaryIR(**TINY).eval()

    def test_residual_is_source_minus_barycenter_at_the_padded_eighth(self) -> None:
        with torch.no_grad():
            out, source, bary, residual = self.net(torch.rand(2, 3, 17, 30), return_latents=True)
        assert out.shape == (2, 3, 17, 30)
        assert source.shape == bary.shape == residual.shape == (2, 64, 3, 4)  # padded to 24x32
        torch.testing.assert_close(residual, source - bary, rtol=0, atol=0)

    def test_the_residual_branch_reaches_the_output(self) -> None:
        x = torch.rand(1, 3, 16, 16)
        with torch.no_grad():
            ref = self.net(x)
            self.net.resup2_1.body[0].weight.zero_()
            changed = self.net(x)
        assert (changed - ref).abs().max().item() > 1e-4


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="4 entries"):
        BaryIR(num_blocks=(1, 1, 1))


def test_detect_ignores_other_families() -> None:
    with torch.device("meta"):
        sd = create_model("restormer").state_dict()
    assert BaryIR.detect(sd) is None


def test_weights_entries() -> None:
    assert list_pretrained("baryir.*") == ["baryir.five_task", "baryir.three_task"]
    three, five = get_weights("baryir.three_task"), get_weights("baryir.five_task")
    assert three.default and not five.default
    assert three.num_params == five.num_params == 53_549_774
    assert "average 32.86/0.919" in three.reported
    assert "average 30.72/0.919" in five.reported
    assert five.tasks == ("noise", "rain", "haze", "blur", "lowlight")
    assert all(s.kind == "page" and "1OyGS4UNvLcVPmHPAKwkVw6ryBm9mRIuU" in s.location for s in three.sources)
    assert "MIT" in three.license


class TestBarycenterTerm:
    """The latent terms against the official training loop (``trainer_bary.py``, run with the sample
    weights ``Lambda`` 1 and the potentials 0 on these float64 latents)."""

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        s = torch.randn(6, 16, 3, 5, dtype=torch.float64)
        b = torch.randn(6, 16, 3, 5, dtype=torch.float64) * 0.5 + 0.3 * s
        return s, b, s - b

    def test_official_values(self) -> None:
        s, b, r = self._latents()
        mixed = barycenter_latent_loss(s, b, r, torch.tensor([0, 0, 1, 3, 1, 4]))
        assert mixed.dtype == torch.float32
        assert mixed.item() == pytest.approx(0.8613576535081737, abs=1e-6)
        torch.manual_seed(0)  # the official run drew the second case right after the first
        _ = torch.randn(12, 16, 3, 5, dtype=torch.float64)
        s2 = torch.randn(6, 16, 3, 5, dtype=torch.float64)
        b2 = torch.randn(6, 16, 3, 5, dtype=torch.float64) * 0.5 + 0.3 * s2
        one = barycenter_latent_loss(s2, b2, s2 - b2, torch.full((6,), 2))
        assert one.item() == pytest.approx(0.8540945127676677, abs=1e-6)
        # one degradation: the contrast is 0, as without labels; weights (N, T) are read by their argmax
        assert barycenter_latent_loss(s2, b2, s2 - b2).item() == pytest.approx(one.item(), abs=1e-7)
        weights = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 3, 1, 4]), 5).double() * 0.9
        assert barycenter_latent_loss(s, b, r, weights).item() == pytest.approx(mixed.item(), abs=1e-7)

    def test_wrong_labels_are_refused(self) -> None:
        s, b, r = self._latents()
        with pytest.raises(UsageError, match="labels"):
            barycenter_latent_loss(s, b, r, torch.tensor([0, 1]))

    def test_training_step_reaches_the_term(self) -> None:
        torch.manual_seed(0)
        net = BaryIR(**TINY).train()
        batch = {"degraded": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 0, 2])}
        out = net(batch["degraded"], **net.training_forward_kwargs(batch))
        image, extras = net.split_training_output(out)
        assert image.shape == (4, 3, 16, 16) and sorted(extras) == ["bary", "residual", "source"]
        (term,) = net.auxiliary_losses()
        assert (term.name, term.weight) == ("barycenter", 1e-4)
        loss = term.fn(net, batch, extras)
        expected = barycenter_latent_loss(
            extras["source"], extras["bary"], extras["residual"], batch["label"]
        )
        assert loss.item() == pytest.approx(expected.item()) and loss.item() > 0
        loss.backward()
        assert net.barylatent[0].attn.temperature.grad is not None
        assert net.split_training_output(image) == (image, {})


class TestOfficialPickle:
    """``baryir_official_state_dict`` on a file pickled like the official trainer's (module ``model_bary``)."""

    def _save(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str | None = None) -> Path:
        fake = types.ModuleType("model_bary")

        def cls(name: str) -> type:
            c = type(name, (nn.Module,), {"__module__": "model_bary"})
            setattr(fake, name, c)
            return c

        bary_net, embed, layer_norm, with_bias, upsample = (
            cls(n) for n in ("BaryNet", "OverlapPatchEmbed", "LayerNorm", "WithBias_LayerNorm", "Upsample")
        )
        monkeypatch.setitem(sys.modules, "model_bary", fake)
        torch.manual_seed(0)
        net = bary_net()
        net.patch_embed = embed()
        net.patch_embed.proj = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        net.LN = layer_norm()
        net.LN.body = with_bias()
        net.LN.body.weight = nn.Parameter(torch.rand(32))
        net.LN.body.normalized_shape = torch.Size([32])
        net.up4_3 = upsample()
        net.up4_3.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.PixelShuffle(2))
        if extra is not None:
            net.other = cls(extra)()
        path = tmp_path / "model_allBaryNet128__56_1.0.pt"
        torch.save({"epoch": 56, "BaryIR": net, "Pots": nn.ModuleList([nn.Linear(4, 1)])}, path)
        self.expected = {k: v.clone() for k, v in net.state_dict().items()}
        return path

    def test_reads_the_weights_without_the_official_code(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = self._save(tmp_path, monkeypatch)
        monkeypatch.delitem(sys.modules, "model_bary")
        sd = baryir_official_state_dict(path)
        assert (
            list(sd)
            == list(self.expected)
            == ["patch_embed.proj.weight", "LN.body.weight", "up4_3.body.0.weight"]
        )
        assert all(torch.equal(sd[k], self.expected[k]) for k in sd)

    def test_refuses_other_classes(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = self._save(tmp_path, monkeypatch, extra="NotOfficial")
        monkeypatch.delitem(sys.modules, "model_bary")
        with pytest.raises(CheckpointError, match="official BaryIR"):
            baryir_official_state_dict(path)
