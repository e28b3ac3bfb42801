"""AdaIR: parameter count, official checkpoints, fine-tuning groups, the frequency split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from allinone_ir import create_model
from allinone_ir.hub import convert_checkpoint, detect_architecture, from_pretrained, load_checkpoint
from allinone_ir.models import AdaIR, Restormer
from allinone_ir.models.adair import ADAIR_UNUSED_MODULES, FreModule, frequency_split, low_frequency_mask
from allinone_ir.training.finetune import finetune_groups, freeze, unfreeze

from .tiny_configs import TINY, randomise, tiny_model


def _official_state_dict(net: AdaIR) -> dict[str, torch.Tensor]:
    """``net``'s weights as the official Lightning checkpoint holds them: ``net.`` prefix, unused modules."""
    sd = dict(net.state_dict())
    for i in (1, 2, 3):
        dim = net.get_submodule(f"fre{i}").para1.shape[0]
        sd[f"fre{i}.conv.weight"] = torch.randn(dim, net.in_channels, 3, 3)
        sd[f"fre{i}.score_gen.weight"] = torch.randn(2, 2, 7, 7)
        sd[f"fre{i}.score_gen.bias"] = torch.randn(2)
    return {f"net.{k}": v for k, v in sd.items()}


def _tiny() -> AdaIR:
    net = randomise(tiny_model("adair")).eval()
    return net


def test_parameter_count_of_the_official_configuration() -> None:
    with torch.device("meta"):
        net = create_model("adair")
    buffers = sum(b.numel() for b in net.buffers())
    unused = sum(3 * c * 9 + (2 * 2 * 49 + 2) for c in (384, 192, 96))  # conv (3 -> C, 3x3), score_gen
    assert net.num_parameters == 28_542_130
    assert buffers == 223_956  # rate_conv and the low-band query of channel_cross_h
    assert net.num_parameters + buffers + unused == 28_784_824  # the official count
    assert net.config["fre_heads"] is None and net.config["heads"] == [1, 2, 4, 8]
    assert ADAIR_UNUSED_MODULES == ("conv", "score_gen")


def test_official_lightning_checkpoint_is_detected_and_loaded(tmp_path) -> None:
    net = _tiny()
    ckpt = {"state_dict": _official_state_dict(net), "epoch": 149}
    arch, config = detect_architecture({k[4:]: v for k, v in ckpt["state_dict"].items()})
    assert arch == "AdaIR" and config == {**net.config, "heads": list(net.config["heads"])}
    assert AdaIR.detect(Restormer(**{k: v for k, v in TINY["adair"].items()}).state_dict()) is None
    loaded = load_checkpoint(ckpt).eval()
    assert type(loaded) is AdaIR and loaded.config == net.config
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    src = tmp_path / "adair.ckpt"
    torch.save(ckpt, src)
    converted = from_pretrained(convert_checkpoint(src, tmp_path / "adair.safetensors")).eval()
    with torch.no_grad():
        torch.testing.assert_close(converted(x), net(x))


def test_fre_heads_are_read_from_the_checkpoint() -> None:
    net = AdaIR(**TINY["adair"], fre_heads=1)
    assert AdaIR.detect(net.state_dict())["fre_heads"] == 1


def test_finetune_groups() -> None:
    net = tiny_model("adair")
    groups = finetune_groups(net)
    assert set(groups) >= {"encoder", "decoder", "frequency"}
    freeze(net)
    n = unfreeze(net, ["frequency"])
    trainable = {k.split(".")[0] for k, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fre1", "fre2", "fre3"}
    assert n == sum(p.numel() for k, p in net.named_parameters() if k.startswith("fre"))
    freeze(net)
    assert unfreeze(net, ["encoder", "decoder", "frequency"]) == net.num_parameters


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (9, 130)])
def test_forward_at_odd_sizes(size: tuple[int, int]) -> None:
    net = _tiny()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def _reference_split(x: torch.Tensor, t: torch.Tensor, n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The official loop: a mask of the centred spectrum, shift, multiply, unshift."""
    h, w = x.shape[-2:]
    mask = torch.zeros_like(x)
    for i in range(x.shape[0]):
        h_, w_ = int(h // n * t[i, 0, 0, 0]), int(w // n * t[i, 1, 0, 0])
        mask[i, :, h // 2 - h_ : h // 2 + h_, w // 2 - w_ : w // 2 + w_] = 1
    spec = torch.roll(torch.fft.fft2(x, norm="forward"), (h // 2, w // 2), (2, 3))
    parts = [torch.roll(spec * m, (-(h // 2), -(w // 2)), (2, 3)) for m in (1 - mask, mask)]
    return tuple(torch.fft.ifft2(p, norm="forward").abs() for p in parts)


@pytest.mark.parametrize("size", [(256, 384), (300, 517), (131, 640)])
def test_frequency_split_equals_the_official_loop(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 2, *size)
    t = torch.tensor([0.3, 0.9, 0.6, 0.55, 0.99, 0.7]).view(3, 2, 1, 1)
    high, low = frequency_split(x, t)
    ref_high, ref_low = _reference_split(x, t)
    torch.testing.assert_close(high, ref_high, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(low, ref_low, atol=1e-5, rtol=1e-5)
    assert low_frequency_mask(t, *size).sum() > 0 or min(size) < 256


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_frequency_split_keeps_the_layout(memory_format: torch.memory_format) -> None:
    x = torch.randn(1, 4, 256, 256).contiguous(memory_format=memory_format)
    for part in frequency_split(x, torch.full((1, 2, 1, 1), 0.5)):
        assert part.is_contiguous(memory_format=memory_format)


def test_small_maps_have_an_empty_low_band() -> None:
    x = torch.randn(2, 4, 255, 127)
    high, low = frequency_split(x, torch.full((2, 2, 1, 1), 0.99))
    assert torch.equal(low, torch.zeros_like(x)) and torch.equal(high, x.abs())
    assert low_frequency_mask(torch.full((1, 2, 1, 1), 0.99), 255, 300).sum() == 0  # 255 // 128 * t < 1


def _large_block() -> FreModule:
    torch.manual_seed(0)
    block = FreModule(16, num_heads=2).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        block.rate_conv[2].weight.zero_()  # threshold 0.5: a band of 1 at 256 px
    return block


@pytest.mark.slow  # torch.compile
def test_frequency_block_bf16_autocast_channels_last_and_compile() -> None:
    block = _large_block()
    img, y = torch.rand(1, 3, 512, 512), torch.randn(1, 16, 256, 256)
    with torch.no_grad():
        _, low = block.mine(img, (256, 256))
        assert low.abs().max() > 0  # the transform path runs
        ref = block(img, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(img, y)
        cl = block.to(memory_format=torch.channels_last)
        out_cl = cl(img.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last))
        torch._dynamo.reset()
        compiled = torch.compile(block, backend="aot_eager", fullgraph=True, dynamic=False)
        out_c = compiled(img, y)
    assert torch.isfinite(out).all() and (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    torch.testing.assert_close(out_cl, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_c, ref, atol=1e-4, rtol=1e-4)


def test_no_gradient_reaches_the_buffers_and_every_parameter_gets_one() -> None:
    block = _large_block().train()
    names = {n for n, _ in block.named_buffers()}
    assert names == {
        "channel_cross_h.temperature",
        "channel_cross_h.q.weight",
        "channel_cross_h.q_dwconv.weight",
        "rate_conv.0.weight",
        "rate_conv.2.weight",
    }
    img, y = torch.rand(2, 3, 64, 48), torch.randn(2, 16, 32, 24)
    block(img, y).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    biased = FreModule(16, num_heads=2, bias=True)
    assert {n for n, _ in biased.named_buffers()} == {"rate_conv.0.weight", "rate_conv.2.weight"}


def test_interpolation_matches_the_official_call() -> None:
    block = _large_block()
    img = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        high, _ = block.mine(img, (5, 7))
        ref = block.conv1(F.interpolate(img, (5, 7), mode="bilinear")).abs()
    torch.testing.assert_close(high, ref)


def test_three_task_config_is_valid() -> None:
    from pathlib import Path

    from allinone_ir.training import TrainerConfig
    from allinone_ir.training.cli import load_config

    cfg = load_config(Path(__file__).parents[1] / "src" / "allinone_ir" / "configs" / "adair_three_task.yaml")
    trainer = TrainerConfig.from_dict(cfg["trainer"])
    assert cfg["model"]["name"] == "adair" and cfg["data"]["train"]["type"] == "promptir"
    assert (trainer.lr, trainer.loss, trainer.warmup_steps * 10, trainer.max_steps) == (
        2e-4,
        "l1",
        375000,
        375000,
    )
