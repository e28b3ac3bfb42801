"""The U-Net skeletons and their hooks: one forward loop per family, run by every network of the family."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from allinone_ir import PIPUNet
from allinone_ir.degradation_types import resolve_degradation_weights
from allinone_ir.models import NAFNet, Restormer
from allinone_ir.models._base import UNetHooks
from allinone_ir.models.promptir import PromptGenBlock, PromptInteraction
from allinone_ir.models.restormer import RestormerUNet

from .tiny_configs import TINY, randomise, tiny_model


class _Recording:
    """Mixin: record every hook call (and optionally shift the output of one decoder level)."""

    shift_level: int | None = None

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        self.calls.append(("latent", None, x.shape[1], ctx))
        return super()._latent_hook(x, ctx)  # type: ignore[misc]

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        self.calls.append(("skip", level, skip.shape[1], ctx))
        return super()._skip_hook(level, skip, ctx)  # type: ignore[misc]

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        self.calls.append(("decoder", level, x.shape[1], ctx))
        x = super()._decoder_hook(level, x, ctx)  # type: ignore[misc]
        return x + 0.25 if level == self.shift_level else x


class _RecordingRestormer(_Recording, Restormer):
    calls: list


class _RecordingNAFNet(_Recording, NAFNet):
    calls: list


def _copy(net: nn.Module, cls: type, config: dict[str, Any]) -> nn.Module:
    other = cls(**config)
    other.load_state_dict(net.state_dict())
    other.calls = []
    return other.eval()


class TestHooks:
    def test_restormer_calls_every_hook_in_decoder_order(self) -> None:
        net = randomise(tiny_model("restormer")).eval()
        hooked = _copy(net, _RecordingRestormer, TINY["restormer"])
        x = torch.rand(2, 3, 16, 24)
        with torch.no_grad():
            ref = net(x)
            assert torch.equal(hooked(x), ref)  # identity hooks: the same network
            d = TINY["restormer"].get("dim", 8)
            assert hooked.calls == [
                ("latent", None, 8 * d, None),
                ("skip", 3, 4 * d, None), ("decoder", 3, 4 * d, None),
                ("skip", 2, 2 * d, None), ("decoder", 2, 2 * d, None),
                ("skip", 1, d, None), ("decoder", 1, 2 * d, None),
            ]  # fmt: skip
            for level in (1, 2, 3):
                hooked.shift_level = level
                assert (hooked(x) - ref).abs().max() > 1e-3, level  # a subclass hook changes the output

    def test_nafnet_calls_every_hook_from_the_deepest_level(self) -> None:
        config = dict(TINY["nafnet"], enc_blk_nums=(1, 1, 1), dec_blk_nums=(1, 1, 1))  # three levels
        torch.manual_seed(0)
        net = randomise(NAFNet(**config), 0.2).eval()
        hooked = _copy(net, _RecordingNAFNet, config)
        x = torch.rand(1, 3, 16, 16)
        with torch.no_grad():
            ref = net(x)
            assert torch.equal(hooked(x), ref)
            assert hooked.calls == [
                ("latent", None, 64, None),
                ("skip", 3, 32, None), ("decoder", 3, 32, None),
                ("skip", 2, 16, None), ("decoder", 2, 16, None),
                ("skip", 1, 8, None), ("decoder", 1, 8, None),
            ]  # fmt: skip
            hooked.shift_level = 2
            assert (hooked(x) - ref).abs().max() > 1e-3

    def test_pip_networks_hand_omega_to_the_hooks(self) -> None:
        class Rec(_Recording, type(tiny_model("pip_nafnet"))):  # type: ignore[misc]
            calls: list

        net = _copy(tiny_model("pip_nafnet"), Rec, TINY["pip_nafnet"])
        net(torch.rand(2, 3, 8, 8), degradation=torch.tensor([1, 3]))
        omega = resolve_degradation_weights(torch.tensor([1, 3]), batch_size=2)
        assert [c[:2] for c in net.calls if c[0] == "skip"] == [("skip", 2), ("skip", 1)]
        assert all(torch.equal(c[3], omega) for c in net.calls)

    def test_default_hooks_are_the_identity(self) -> None:
        t = torch.randn(2, 3)
        hooks = UNetHooks()
        assert hooks._latent_hook(t, None) is t
        assert hooks._skip_hook(1, t, None) is t
        assert hooks._decoder_hook(2, t, "ctx") is t


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, shift: float) -> list[int]:
    calls: list[int] = []
    original = getattr(owner, name)
    is_static = isinstance(owner.__dict__[name], staticmethod)

    def wrapped(*args: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args) + shift

    monkeypatch.setattr(owner, name, staticmethod(wrapped) if is_static else wrapped)
    return calls


class TestPromptIRRunsTheExportedBlocks:
    @pytest.mark.parametrize(
        ("owner", "name"), [(PromptInteraction, "interact"), (PromptGenBlock, "forward")]
    )
    def test_patching_the_block_changes_promptir(self, monkeypatch, owner: type, name: str) -> None:
        net = randomise(tiny_model("promptir"), 0.3).eval()
        x = torch.rand(1, 3, 16, 16)
        with torch.no_grad():
            ref = net(x)
            calls = _count_calls(monkeypatch, owner, name, 0.0)
            assert torch.equal(net(x), ref) and len(calls) == 3  # one per prompt level
            monkeypatch.undo()
            _count_calls(monkeypatch, owner, name, 0.5)
            assert (net(x) - ref).abs().max() > 1e-3

    def test_block_forward_is_interact(self) -> None:
        block = randomise(PromptInteraction(feature_dim=8, prompt_dim=4, out_dim=6, num_heads=2)).eval()
        f, p = torch.randn(2, 8, 5, 7), torch.randn(2, 4, 5, 7)
        with torch.no_grad():
            out = block(f, p)
            assert torch.equal(out, PromptInteraction.interact(f, p, block.transformer, block.reduce))
            assert torch.equal(out, block.reduce(block.transformer(torch.cat([f, p], 1))))
        assert out.shape == (2, 6, 5, 7)

    def test_equals_the_official_decoder_written_out(self) -> None:
        """PromptIR's decoder as the official code writes it (prompt, concat, noise_level, reduce)."""
        net = randomise(tiny_model("promptir"), 0.3).eval()
        x = torch.rand(2, 3, 16, 24)
        with torch.no_grad():
            e1 = net.encoder_level1(net.patch_embed(x))
            e2 = net.encoder_level2(net.down1_2(e1))
            e3 = net.encoder_level3(net.down2_3(e2))
            h = net.latent(net.down3_4(e3))
            h = net.reduce_noise_level3(net.noise_level3(torch.cat([h, net.prompt3(h)], 1)))
            h = net.decoder_level3(net.reduce_chan_level3(torch.cat([net.up4_3(h), e3], 1)))
            h = net.reduce_noise_level2(net.noise_level2(torch.cat([h, net.prompt2(h)], 1)))
            h = net.decoder_level2(net.reduce_chan_level2(torch.cat([net.up3_2(h), e2], 1)))
            h = net.reduce_noise_level1(net.noise_level1(torch.cat([h, net.prompt1(h)], 1)))
            h = net.decoder_level1(torch.cat([net.up2_1(h), e1], 1))
            manual = net.output(net.refinement(h)) + x
            assert torch.equal(net(x), manual)


class _TappedNAFNet(NAFNet):
    """NAFNet whose skip features pass through identity modules that :class:`PIPUNet` can tap."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.taps = nn.ModuleList(nn.Identity() for _ in self.encoders)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.taps[level - 1](skip)


class _TappedPIPRestormerBackbone(RestormerUNet):
    """A network built on the Restormer skeleton: PIP-Restormer's decoder without PIP, skips tappable."""

    pad_multiple = 8

    def __init__(
        self, *, dim: int, num_blocks: tuple[int, ...], heads: tuple[int, ...], refinement: int
    ) -> None:
        super().__init__()
        self.in_channels = self.out_channels = 3
        args = (2.66, False, "WithBias")
        self._build_encoder(3, dim, num_blocks, heads, *args)
        self.chnl_reduce3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=False)
        for level in (3, 2, 1):
            self._build_decoder_level(level, dim, num_blocks, heads, *args, up=dim * 4 if level == 3 else 0)
        self._build_head(dim, refinement, heads, 3, *args)
        self.taps = nn.ModuleList(nn.Identity() for _ in range(3))

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.chnl_reduce3(x)

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        return self.taps[level - 1](skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._unet_forward(x)


def _as_pipunet_state(state: dict[str, torch.Tensor], block_names: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        block = next((b for b in block_names if key.startswith(b + ".")), None)
        if block is not None:
            out["pips." + block_names[block] + key[len(block) :]] = value
        elif key.startswith("classifier."):
            out[key] = value
        else:
            out["backbone." + key] = value
    return out


class TestPIPNetworksAndPIPUNetRunTheSameHooks:
    """PIP-NAFNet / PIP-Restormer and PIPUNet on the same U-Net with the same weights: the same output.

    The PIP networks apply their blocks in the skeleton's skip hook, PIPUNet in the forward hooks
    it puts on a user's modules; here the user's modules are identity taps on the same skeleton's
    skip hook, so both apply the same exported :class:`~allinone_ir.layers.PIPBlock` to the same tensors.
    """

    @staticmethod
    def _compare(pip: nn.Module, wrapped: PIPUNet) -> None:
        x = torch.rand(2, 3, 13, 21)
        with torch.no_grad():
            for degradation in (torch.tensor([0, 2]), {"rain": 0.7, "noise": 0.3}, None):
                a, wa = pip(x, degradation, return_weights=True)
                b, wb = wrapped(x, degradation, return_weights=True)
                assert torch.equal(wa, wb)
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    def test_pip_nafnet(self) -> None:
        pip = randomise(tiny_model("pip_nafnet"), 0.2).eval()
        cfg = TINY["pip_nafnet"]
        backbone = _TappedNAFNet(
            **{k: cfg[k] for k in ("width", "middle_blk_num", "enc_blk_nums", "dec_blk_nums")}
        )
        wrapped = PIPUNet(
            backbone, skips={"taps.0": 8, "taps.1": 16}, prompt_dims=cfg["prompt_dims"],
            prompt_sizes=cfg["prompt_sizes"], p2f_heads=cfg["p2f_heads"], classifier_widths=cfg["classifier_widths"],
            pad_multiple=pip.pad_multiple,
        ).eval()  # fmt: skip
        wrapped.load_state_dict(_as_pipunet_state(pip.state_dict(), {"pips.0": "taps_0", "pips.1": "taps_1"}))
        wrapped.pad_mode = (
            pip.pad_mode
        )  # NAFNet pads with zeros (as the official), PIPUNet reflects by default
        self._compare(pip, wrapped)

    def test_pip_restormer(self) -> None:
        pip = randomise(tiny_model("pip_restormer"), 0.2).eval()
        cfg = TINY["pip_restormer"]
        backbone = _TappedPIPRestormerBackbone(
            dim=cfg["dim"],
            num_blocks=cfg["num_blocks"],
            heads=cfg["heads"],
            refinement=cfg["num_refinement_blocks"],
        )
        wrapped = PIPUNet(
            backbone, skips={f"taps.{i}": cfg["dim"] * 2**i for i in range(3)}, prompt_dims=cfg["prompt_dims"],
            prompt_sizes=cfg["prompt_sizes"], p2f_heads=cfg["p2f_heads"], classifier_widths=cfg["classifier_widths"],
            pad_multiple=8,
        ).eval()  # fmt: skip
        names = {f"prompt{i + 1}": f"taps_{i}.prompt" for i in range(3)}
        names |= {
            f"low_prompt_interaction_level{i + 1}": f"taps_{i}.low_prompt_interaction" for i in range(3)
        }
        wrapped.load_state_dict(_as_pipunet_state(pip.state_dict(), names))
        self._compare(pip, wrapped)

    def test_pip_restormer_equals_its_decoder_written_out(self) -> None:
        net = randomise(tiny_model("pip_restormer"), 0.2).eval()
        x = torch.rand(2, 3, 16, 16)
        labels = torch.tensor([1, 4])
        omega = resolve_degradation_weights(labels, batch_size=2)
        with torch.no_grad():
            e1 = net.encoder_level1(net.patch_embed(x))
            e2 = net.encoder_level2(net.down1_2(e1))
            e3 = net.encoder_level3(net.down2_3(e2))
            h = net.up4_3(net.chnl_reduce3(net.latent(net.down3_4(e3))))
            s3 = net.low_prompt_interaction_level3(e3, net.prompt3(e3, omega))
            h = net.decoder_level3(net.reduce_chan_level3(torch.cat([h, s3], 1)))
            s2 = net.low_prompt_interaction_level2(e2, net.prompt2(e2, omega))
            h = net.decoder_level2(net.reduce_chan_level2(torch.cat([net.up3_2(h), s2], 1)))
            s1 = net.low_prompt_interaction_level1(e1, net.prompt1(e1, omega))
            h = net.decoder_level1(torch.cat([net.up2_1(h), s1], 1))
            manual = net.output(net.refinement(h)) + x
            assert torch.equal(net(x, labels), manual)


def test_skeleton_builds_the_official_restormer_modules() -> None:
    """A network assembled from the builders has Restormer's keys and parameters."""

    class Built(RestormerUNet):
        def __init__(self) -> None:
            super().__init__()
            self.in_channels = self.out_channels = 3
            args = (2.66, False, "WithBias")
            self._build_encoder(3, 8, (1, 1, 1, 1), (1, 2, 2, 4), *args)
            for level in (3, 2, 1):
                self._build_decoder_level(level, 8, (1, 1, 1, 1), (1, 2, 2, 4), *args)
            self._build_head(8, 1, (1, 2, 2, 4), 3, *args)

    torch.manual_seed(0)
    built = Built()
    torch.manual_seed(0)
    ref = Restormer(**TINY["restormer"])
    assert list(built.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), ref.state_dict().values()))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built._unet_forward(x), ref(x))
