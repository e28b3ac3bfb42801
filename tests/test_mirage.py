"""MIRAGE: official sizes and keys, golden parity (network and SPD term), the training term, the family's contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from allinone_ir import create_model, load_checkpoint
from allinone_ir.errors import UsageError
from allinone_ir.models import AuxiliaryLoss
from allinone_ir.models.mirage import MIRAGE, spd_contrastive_loss, spd_feature, spectrum_l1_loss
from allinone_ir.weights import get_weights, list_pretrained

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
#: The tiny configuration of the shared contract tests: no stochastic depth (two training forwards agree)
#: and no SPD head (it serves the training term only; its gradient is checked below).
TINY: dict[str, Any] = dict(
    dim=6, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, drop_path=0.0, spd_head=False
)


def _tiny(**overrides: Any) -> MIRAGE:
    torch.manual_seed(0)
    return MIRAGE(**{**TINY, **overrides})


# --------------------------------------------------------------------------- official sizes and keys
@pytest.mark.parametrize(
    ("name", "params", "buffers", "keys"),
    [("mirage_s", 9_678_983, 2_656, 991), ("mirage_t", 6_207_412, 2_099, 964)],
)
def test_official_sizes(name: str, params: int, buffers: int, keys: int) -> None:
    """Counts of the official net/mirage_small.py and net/mirage_tiny.py (nothing built and left unused)."""
    with torch.device("meta"):
        net = create_model(name)
    assert net.num_parameters == params
    assert sum(b.numel() for b in net.buffers()) == buffers
    assert len(net.state_dict()) == keys
    assert (
        net.num_parameters - create_model(name, spd_head=False).num_parameters
        == {
            "mirage_s": 49_484,
            "mirage_t": 48_836,
        }[name]
    )


def test_official_key_names_and_shapes() -> None:
    sd = create_model("mirage_s").state_dict()
    shapes = {
        "encoder_level1.0.attn.qkv.weight": (30, 10, 1, 1),
        "encoder_level1.0.attn.gatedcnn.norm.running_var": (10,),
        "encoder_level1.0.attn.gatedcnn.gic1.weight": (52, 10, 1, 1),
        "encoder_level1.0.attn.gatedcnn.kernel_generator.3.weight": (490, 10, 1, 1),
        "encoder_level1.0.attn.mlp.0.weight": (20, 10, 1),
        "encoder_level1.0.attn.alpha_mlp": (1,),
        "latent.6.attn.temperature": (8, 1, 1),
        "latent.6.ffn.project_in.weight": (960, 240, 1, 1),
        "reduce_dim_level3.weight": (120, 240, 1, 1),
        "reduce_chan_level3.weight": (120, 180, 1, 1),
        "refinement.2.norm2.body.bias": (60,),
        "reduce_shallow.weight": (12, 30, 1, 1),
        "reduce_latent.weight": (24, 120, 1, 1),
        "spd_proj_latent.weight": (64, 576),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes


# --------------------------------------------------------------------------- golden parity
def _fixture_file(tmp_path: Path, form: str) -> Path:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = FIXTURES / "mirage.safetensors"
    if form == "safetensors":
        return path
    state = safetensors_torch.load_file(str(path))
    assert all(k.startswith("net.") for k in state)
    ckpt = {
        "epoch": 129,
        "global_step": 1000,
        "state_dict": state,
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(ckpt, tmp_path / "epoch=129.ckpt")  # Lightning's ModelCheckpoint file, as test_small.py loads
    return tmp_path / "epoch=129.ckpt"


@pytest.mark.parametrize("form", ["official_file", "safetensors"])
def test_parity_with_official_code(form: str, tmp_path: Path) -> None:
    """Detected config, float32 and float64 outputs within 1e-5, and the SPD term (batch of two)."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    meta = json.loads((FIXTURES / "manifest.json").read_text())["mirage"]
    net = load_checkpoint(_fixture_file(tmp_path, form))
    assert type(net).__name__ == "MIRAGE" and not net.training
    assert net.config == dict(
        in_channels=3, out_channels=3, dim=6, num_blocks=[2, 2, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 4],
        ffn_expansion_factor=2.0, bias=False, layer_norm_type="WithBias", drop_path=0.1, spd_head=True,
    )  # fmt: skip
    io = safetensors_torch.load_file(str(FIXTURES / meta["io"]))
    for dtype, key, suffix in ((torch.float32, "output", ""), (torch.float64, "output64", "64")):
        net.to(dtype)
        with torch.no_grad():
            for h, w in meta["sizes"]:
                out = net(io[f"input_{h}x{w}"].to(dtype))
                assert out.dtype == dtype
                assert (out - io[f"{key}_{h}x{w}"]).abs().max().item() <= 1e-5, (h, w, dtype)
            out, z_s, z_l = net(io["spd_input"].to(dtype), return_spd=True)
        assert (out - io[f"spd_{key}"]).abs().max().item() <= 1e-5
        weight = next(t.weight for t in net.auxiliary_losses() if t.name == "spd")
        loss = weight * spd_contrastive_loss(z_s, z_l)
        assert abs(loss.item() - io[f"spd_loss{suffix}"].item()) <= 1e-7
        assert loss.item() > 1e-3  # two different images: the term is not the trivial 0 of a batch of one


def test_network_without_spd_head_loads_official_weights() -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    io = safetensors_torch.load_file(str(FIXTURES / "mirage_io.safetensors"))
    net = load_checkpoint(FIXTURES / "mirage.safetensors", spd_head=False)
    assert not hasattr(net, "spd_proj_latent")
    with torch.no_grad():
        out = net(io["input_24x24"])
    assert (out - io["output_24x24"]).abs().max().item() <= 1e-5
    with pytest.raises(UsageError, match="spd_head=False"):
        net(io["input_24x24"], return_spd=True)


# --------------------------------------------------------------------------- training term
def test_spd_feature_is_the_unbiased_covariance() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    cov = torch.stack([torch.cov(s.flatten(1)) for s in x]) + 1e-5 * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(spd_feature(x), cov.flatten(1))


def test_spd_contrastive_loss_values() -> None:
    z = torch.eye(3, 4)
    assert spd_contrastive_loss(z[:1], z[:1]).item() == 0.0  # a batch of one: nothing to contrast
    # aligned pairs, orthogonal others: -log(e^10 / (e^10 + 2))
    expected = -torch.log(torch.tensor(10.0).exp() / (torch.tensor(10.0).exp() + 2))
    torch.testing.assert_close(spd_contrastive_loss(z, z), expected)


def test_training_forward_uses_every_parameter() -> None:
    """The trainer's forward (with the SPD embeddings) reaches the whole network, SPD head included (DDP)."""
    net = _tiny(spd_head=True).train()
    batch = {"degraded": torch.rand(2, 3, 24, 20), "clean": torch.rand(2, 3, 24, 20)}
    kwargs = net.training_forward_kwargs(batch)
    assert kwargs == {"return_spd": True}
    image, extras = net.split_training_output(net(batch["degraded"], **kwargs))
    assert set(extras) == {"image", "spd_shallow", "spd_latent"} and extras["spd_latent"].shape == (2, 64)
    terms = net.auxiliary_losses()
    assert all(isinstance(t, AuxiliaryLoss) for t in terms)
    assert [(t.name, t.weight) for t in terms] == [("fft", 0.1), ("spd", 0.01)]
    loss = (image - batch["clean"]).abs().mean() + sum(t.weight * t.fn(net, batch, extras) for t in terms)
    loss.backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    no_head = _tiny()
    assert no_head.training_forward_kwargs(batch) == {}
    image, extras = no_head.split_training_output(no_head(batch["degraded"]))
    assert list(extras) == ["image"]
    assert no_head.auxiliary_losses()[1].fn(no_head, batch, extras).item() == 0.0


def test_spectrum_l1_loss_is_the_official_fft_loss() -> None:
    """``FFTLoss`` of utils/loss_utils.py: L1 of ``stack([rfft2.real, rfft2.imag], -1)``."""
    pred, target = torch.rand(2, 3, 8, 6, dtype=torch.float64), torch.rand(2, 3, 8, 6, dtype=torch.float64)
    p, t = torch.fft.rfft2(pred), torch.fft.rfft2(target)
    official = (torch.stack([p.real, p.imag], -1) - torch.stack([t.real, t.imag], -1)).abs().mean()
    torch.testing.assert_close(spectrum_l1_loss(pred, target), official)
    x = torch.zeros(1, 1, 4, 4)
    assert spectrum_l1_loss(x + 1, x).item() == pytest.approx(
        16 / 24
    )  # the DC term 16, over 4 x 3 x 2 numbers


def test_drop_path_only_in_training() -> None:
    net = _tiny(drop_path=0.5)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net(x))
        torch.manual_seed(1)
        a = net.train()(x)
        torch.manual_seed(2)
        b = net(x)
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------- the family's contract
def test_any_size_channels_last_and_batch_independence() -> None:
    net = _tiny().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 37, 53)).shape == (1, 3, 37, 53)
        assert net(torch.rand(2, 3, 1, 1)).shape == (2, 3, 1, 1)
        x = torch.rand(3, 3, 16, 24)
        ref = net(x)
        torch.testing.assert_close(
            torch.cat([net(x[i : i + 1]) for i in range(3)]), ref, atol=1e-5, rtol=1e-4
        )
        out = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_grad_checkpointing_same_grads() -> None:
    net = _tiny(spd_head=True).train()
    x = torch.rand(2, 3, 16, 16)

    def grads() -> dict[str, torch.Tensor]:
        net.zero_grad()
        out, z_s, z_l = net(x, return_spd=True)
        (out.mean() + spd_contrastive_loss(z_s, z_l)).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    ref = grads()
    net.set_grad_checkpointing(True)
    assert len(net.grad_checkpointing_stages()) == 8
    for n, g in grads().items():
        torch.testing.assert_close(g, ref[n], atol=1e-6, rtol=1e-5, msg=n)


def test_bf16_autocast_close_to_fp32() -> None:
    net = _tiny().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert (out.float() - ref).abs().max() < 0.1


def test_config_rebuilds_and_small_configs() -> None:
    net = _tiny()
    assert list(MIRAGE(**net.config).state_dict()) == list(net.state_dict())
    assert (
        MIRAGE(**MIRAGE.small_config(smoke=True)).num_parameters
        < MIRAGE(**MIRAGE.small_config()).num_parameters
    )


def test_bad_configurations() -> None:
    with pytest.raises(UsageError, match="multiple of 6"):
        MIRAGE(dim=8)
    with pytest.raises(UsageError, match="multiple of the heads"):
        MIRAGE(dim=12, heads=(3, 2, 4, 8))
    with pytest.raises(UsageError, match="4 entries"):
        MIRAGE(num_blocks=(1, 1, 1))


@pytest.mark.slow
def test_compile_fullgraph() -> None:
    torch._dynamo.reset()
    net = _tiny().eval()
    x = torch.rand(2, 3, 24, 32)
    compiled = torch.compile(net, backend="eager", fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- released weights
def test_weights_entries() -> None:
    names = list_pretrained("mirage.*")
    assert names == [
        "mirage.s_cdd11",
        "mirage.s_five_task",
        "mirage.s_three_task",
        "mirage.t_five_task",
        "mirage.t_three_task",
    ]
    for name in names:
        entry = get_weights(name)
        assert entry.sources[0].kind == "gdrive" and not entry.downloadable
        assert entry.default == name.endswith("three_task")
    assert get_weights("mirage.s_three_task").reported == ("three-task average 32.91 dB",)
    assert get_weights("mirage.t_three_task").num_params == 6_207_412
