"""DFPIR: parity with the official code (golden fixture), official sizes and keys, the text embedding."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from allinone_ir import load_checkpoint
from allinone_ir.errors import MissingDependencyError, UsageError
from allinone_ir.models import create_model
from allinone_ir.models._weights import get_weights, list_pretrained
from allinone_ir.models.dfpir import (
    DFPIR,
    DFPIR_PROMPTS,
    DegradationGuidedPerturbation,
    SelectiveCrossAttention,
    dfpir_text_embedding,
)

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
TOLERANCE = 1e-5
TINY: dict[str, Any] = dict(
    dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), text_dim=16
)

#: The fixture's official constructor arguments (manifest) in this library's names; the text width is the
#: official ``lin_ch`` the fixture set to 32.
FIXTURE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, dim=4, num_blocks=[2, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
    ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias", text_dim=32,
)  # fmt: skip


def _manifest() -> dict[str, Any]:
    return json.loads((FIXTURES / "manifest.json").read_text())["dfpir"]


def _official_file(tmp_path: Path) -> Path:
    """The fixture's weights as the official training script saves them (``train_3D_DFPIR.py``)."""
    st = pytest.importorskip("safetensors.torch")
    state = st.load_file(str(FIXTURES / _manifest()["weights"]))
    ckpt = {
        "epoch": 120, "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "scheduler": {"T_max": 500, "last_epoch": 119},
    }  # fmt: skip
    path = tmp_path / "checkpoint_epoch_V1_0119.pth.tar"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("form", ["official_file", "safetensors"])
def test_parity_with_official_code(form: str, tmp_path: Path) -> None:
    """float32 and float64 outputs of the official forward on the fixture's weights, inputs and text
    embeddings (the second input is a batch of two with one embedding each)."""
    st = pytest.importorskip("safetensors.torch")
    meta = _manifest()
    path = _official_file(tmp_path) if form == "official_file" else FIXTURES / meta["weights"]
    net = load_checkpoint(path)
    assert type(net).__name__ == "DFPIR"
    assert net.config == FIXTURE_CONFIG
    io = st.load_file(str(FIXTURES / meta["io"]))
    for dtype, key in ((torch.float32, "output"), (torch.float64, "output64")):
        net.to(dtype)
        for h, w in meta["sizes"]:
            x, text = io[f"input_{h}x{w}"].to(dtype), io[f"text_{h}x{w}"].to(dtype)
            with torch.no_grad():
                out = net(x, text_embedding=text)
                other = net(x, text_embedding=text.flip(-1))
            expected = io[f"{key}_{h}x{w}"]
            assert out.dtype == expected.dtype
            err = (out - expected).abs().max().item()
            assert err <= TOLERANCE, f"{h}x{w} {dtype}: max abs difference {err:.3g}"
            assert (other - expected).abs().max().item() > 100 * TOLERANCE  # the text matters


def test_fixture_keeps_the_official_keys() -> None:
    st = pytest.importorskip("safetensors.torch")
    meta = _manifest()
    state = st.load_file(str(FIXTURES / meta["weights"]))
    assert len(state) == meta["num_tensors"] == 216
    assert sum(v.numel() for v in state.values()) == meta["num_parameters"] == 92_848
    assert state["latent_shuffle_channel.linear_layer1.weight"].shape == (32, 32)
    assert state["encoder_shuffle_channel1.linear_layer3.weight"].shape == (8, 32)


class TestFullSize:
    def test_parameter_and_buffer_counts_equal_the_official_network(self) -> None:
        with torch.device("meta"):
            net = create_model("dfpir")
        params = sum(p.numel() for p in net.parameters())
        buffers = sum(b.numel() for b in net.buffers())
        assert params == 29_315_417
        assert buffers == 1_789_344  # the text projections linear_layer1/3 of the four blocks
        assert params + buffers == 31_104_761  # the official ChannelShuffle_skip_textguaid()

    def test_official_keys_order_and_shapes(self) -> None:
        with torch.device("meta"):
            sd = create_model("dfpir").state_dict()
        keys = list(sd)
        assert len(keys) == 590
        assert keys[:3] == [
            "patch_embed.proj.weight",
            "encoder_level1.0.norm1.body.weight",
            "encoder_level1.0.norm1.body.bias",
        ]
        first = keys.index("encoder_shuffle_channel1.linear_layer1.weight")
        assert keys[first - 1].startswith("encoder_level1.3.") and keys[first + 24] == "down1_2.body.0.weight"
        assert keys[-1] == "output.weight"
        assert sd["latent_shuffle_channel.linear_layer3.weight"].shape == (768, 512)
        assert sd["latent_shuffle_channel.conv1x1.weight"].shape == (768, 384, 1, 1)
        assert sd["encoder_shuffle_channel3.select_attn.kv.weight"].shape == (384, 192, 1, 1)
        assert sd["encoder_shuffle_channel2.select_attn.attn4"].shape == (1,)
        assert sd["reduce_chan_level3.weight"].shape == (192, 384, 1, 1)
        assert sd["decoder_level1.0.attn.qkv.weight"].shape == (288, 96, 1, 1)

    def test_small_forward(self) -> None:
        torch.manual_seed(0)
        net = create_model("dfpir").eval()
        with torch.no_grad():
            y = net(torch.rand(1, 3, 20, 28), text_embedding=torch.randn(512))
        assert y.shape == (1, 3, 20, 28) and torch.isfinite(y).all()


class TestTextEmbedding:
    def setup_method(self) -> None:
        torch.manual_seed(0)
        self.net = DFPIR(**TINY).eval()
        self.x = torch.rand(2, 3, 16, 24)

    def test_one_embedding_for_the_batch_equals_it_repeated(self) -> None:
        t = torch.randn(16)
        with torch.no_grad():
            a = self.net(self.x, text_embedding=t)
            b = self.net(self.x, text_embedding=t.expand(2, 16))
            c = torch.cat([self.net(self.x[i : i + 1], text_embedding=t[None]) for i in range(2)])
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)

    def test_no_embedding_is_the_zero_embedding(self) -> None:
        with torch.no_grad():
            a, b = self.net(self.x), self.net(self.x, text_embedding=torch.zeros(1, 16))
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    @pytest.mark.parametrize("shape", [(3, 16), (2, 15), (2, 1, 16)])
    def test_wrong_shapes_are_refused(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(UsageError, match="text_embedding must have shape"):
            self.net(self.x, text_embedding=torch.zeros(shape))

    def test_projections_are_buffers_and_choose_a_permutation(self) -> None:
        block = self.net.latent_shuffle_channel
        assert isinstance(block, DegradationGuidedPerturbation)
        names = {n for n, _ in self.net.named_buffers()}
        assert "latent_shuffle_channel.linear_layer1.weight" in names
        assert not any("linear_layer" in n for n, _ in self.net.named_parameters())
        order = block.permutation(torch.randn(3, 16))
        assert order.shape == (3, 128)  # 2 x the latent's 64 channels
        assert torch.equal(order.sort(dim=-1).values, torch.arange(128).expand(3, 128))

    def test_permutation_ignores_autocast(self) -> None:
        block, t = self.net.encoder_shuffle_channel2, torch.randn(4, 16)
        assert isinstance(block, DegradationGuidedPerturbation)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block.permutation(t)
        assert torch.equal(low, block.permutation(t))


def test_selective_attention_keeps_ninety_percent_of_each_row() -> None:
    assert SelectiveCrossAttention(40, 2).top_k == 18  # int(20 * 9 / 10)
    assert SelectiveCrossAttention(48, 1).top_k == 43
    assert SelectiveCrossAttention(2, 2).top_k == 1  # the official int(0.9) = 0 would mask every entry
    with pytest.raises(UsageError, match="must be divisible by num_heads"):
        SelectiveCrossAttention(6, 4)


def test_text_embedding_needs_clip_and_a_local_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "clip", None)
    with pytest.raises(MissingDependencyError, match="openai-clip"):
        dfpir_text_embedding("Noise", tmp_path / "ViT-B-32.pt")
    calls: dict[str, Any] = {}

    class FakeClip:
        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.ones(tokens.shape[0], 512, dtype=torch.float16)

    def load(name: str, device: str) -> tuple[FakeClip, None]:
        calls["load"] = (name, device)
        return FakeClip(), None

    def tokenize(texts: list[str]) -> torch.Tensor:
        calls["texts"] = texts
        return torch.zeros(len(texts), 77, dtype=torch.long)

    monkeypatch.setitem(sys.modules, "clip", types.SimpleNamespace(load=load, tokenize=tokenize))
    with pytest.raises(UsageError, match="no CLIP checkpoint"):
        dfpir_text_embedding("Noise", tmp_path / "ViT-B-32.pt")
    (tmp_path / "ViT-B-32.pt").write_bytes(b"")
    emb = dfpir_text_embedding([DFPIR_PROMPTS["rain"], DFPIR_PROMPTS["haze"]], tmp_path / "ViT-B-32.pt")
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    assert calls == {
        "load": (str(tmp_path / "ViT-B-32.pt"), "cpu"),
        "texts": ["Rain degradation with rain lines", "Hazy degradation with normal haze"],
    }


def test_weights_entries() -> None:
    assert list_pretrained("dfpir.*") == ["dfpir.five_task", "dfpir.three_task", "dfpir.three_task_simple"]
    three, five = get_weights("dfpir.three_task"), get_weights("dfpir.five_task")
    assert three.default and three.num_params == five.num_params == 29_315_417
    assert "average 32.88/0.919" in three.reported and "average 30.64/0.913" in five.reported
    assert five.tasks == ("noise", "rain", "haze", "blur", "lowlight")
    assert not three.downloadable and {s.kind for s in three.sources} == {"baidu", "page"}


def test_released_weights_without_text_warn_once_in_eval_not_in_training() -> None:
    """No silent wrong result: an eval forward without the text embedding says so, once."""
    import warnings

    from allinone_ir import create_model

    net = create_model("dfpir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, text_dim=16)
    x = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.train()(x)
        assert not caught
        net.eval()
        with torch.no_grad():
            net(x)
            net(x)
            net(x, torch.zeros(16))
    assert len(caught) == 1
    assert "no text_embedding" in str(caught[0].message)
    assert "dfpir_text_embedding" in str(caught[0].message)
