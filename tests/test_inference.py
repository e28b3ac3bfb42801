"""restore(): tiling with blending, TTA, input kinds, checks."""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from allinone_ir import create_model, restore
from allinone_ir.errors import AllInOneIRError, UsageError
from allinone_ir.inference import (
    blend_window,
    native_low_precision,
    prefers_channels_last,
    prepare_for_inference,
    tile_starts,
    tta_transforms,
)
from allinone_ir.io import read_image, write_image

from .tiny_configs import TINY

PIL = pytest.importorskip("PIL.Image")


class LocalNet(nn.Module):
    """Two 3x3 convolutions with zero padding: each output pixel sees a 5x5 neighbourhood."""

    in_channels = out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.Conv2d(6, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Recorder(nn.Module):
    """Wraps a network and records the shape of every batch it is given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.in_channels = self.out_channels = 3
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


class DegradationNet(nn.Module):
    """A fake PIP network: adds the degradation label / 10 and records what it was given."""

    accepts_degradation = True
    in_channels = out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[object] = []

    def forward(self, x: torch.Tensor, degradation: object = None) -> torch.Tensor:
        self.seen.append(degradation)
        if isinstance(degradation, torch.Tensor):
            return x + degradation.view(-1, 1, 1, 1).float() / 10
        return x


def _astronaut(size: int = 64) -> torch.Tensor:
    from allinone_ir.assets import sample_image

    x = read_image(sample_image("astronaut"))
    return torch.nn.functional.interpolate(x[None], size=(size, size), mode="area", antialias=False)[0]


# ----------------------------------------------------------------------------- tiling


def test_tile_starts_cover_with_overlap() -> None:
    for length, tile, overlap in [(100, 40, 8), (64, 32, 16), (33, 32, 4), (7, 32, 4), (95, 24, 23)]:
        starts = tile_starts(length, tile, overlap)
        t = min(tile, length)
        assert starts[0] == 0 and starts[-1] + t == length
        assert all(b - a <= t - overlap for a, b in itertools.pairwise(starts))
        assert all(b > a for a, b in itertools.pairwise(starts))


def test_blend_window_partition_of_unity() -> None:
    w = blend_window(32, 16, True, True)
    assert w[:4].eq(0).all() and w[-4:].eq(0).all()  # the outer quarter of the overlap is dropped
    assert w[16:16].numel() == 0 and w[14:18].eq(1).all()
    # the falling ramp of one tile plus the rising ramp of the next (overlap exactly 16) is one
    left, right = blend_window(32, 16, False, True), blend_window(32, 16, True, False)
    torch.testing.assert_close(left[16:] + right[:16], torch.ones(16), rtol=0, atol=1e-6)
    # smooth: no step larger than the raised-cosine slope
    assert float(w.diff().abs().max()) < 0.2
    # an edge at the image border is not ramped
    assert blend_window(16, 8, False, False).eq(1).all()


def test_tiled_equals_whole_for_local_network() -> None:
    net = LocalNet()
    x = torch.rand(2, 3, 50, 70)
    whole = restore(net, x)
    for tile, overlap, bs in [(24, 16, 1), ((16, 40), 8, 3), (32, 12, 8)]:
        tiled = restore(net, x, tile=tile, overlap=overlap, batch_size=bs)
        torch.testing.assert_close(tiled, whole, rtol=0, atol=2e-6)
    # without overlap the tile borders see zero padding: the result differs, so the test above can fail
    naive = restore(net, x, tile=24, overlap=0)
    assert float((naive - whole).abs().max()) > 1e-3


def test_blending_is_normalised() -> None:
    """An identity network gives the input back exactly, whatever the tiling."""
    ident = Recorder(nn.Identity())
    x = torch.rand(1, 3, 45, 61)
    for tile, overlap in [(16, 8), (20, 19), (64, 32), ((8, 30), 5)]:
        torch.testing.assert_close(
            restore(ident, x, tile=tile, overlap=overlap, clamp=False), x, rtol=0, atol=1e-6
        )


def test_tiles_are_batched_and_bounded() -> None:
    rec = Recorder(LocalNet())
    restore(rec, torch.rand(2, 3, 100, 90), tile=32, overlap=8, batch_size=3)
    # 2 images x 4 x 4 tiles = 32 tiles in batches of at most 3, each 32 x 32
    assert sum(s[0] for s in rec.shapes) == 2 * len(tile_starts(100, 32, 8)) * len(tile_starts(90, 32, 8))
    assert max(s[0] for s in rec.shapes) == 3
    assert {s[1:] for s in rec.shapes} == {(3, 32, 32)}


def _seam_ratio(diff: torch.Tensor, boundaries: list[int]) -> float:
    """Mean jump of the difference map across tile boundaries / mean jump elsewhere (columns)."""
    jumps = (diff[..., 1:] - diff[..., :-1]).abs().flatten(0, -2).mean(0)  # (W-1,)
    at = torch.tensor([b - 1 for b in boundaries])
    mask = torch.ones_like(jumps, dtype=torch.bool)
    mask[at] = False
    return float(jumps[at].mean() / jumps[mask].mean())


def test_promptir_tiles_show_no_seam() -> None:
    """PromptIR (global prompts, channel attention) on a photo: blended tiles leave no grid."""
    net = create_model("promptir", **TINY["promptir"]).eval()
    x = _astronaut(64)
    whole = restore(net, x)
    naive = restore(net, x, tile=32, overlap=0)
    blended = restore(net, x, tile=32, overlap=16)
    starts = tile_starts(64, 32, 16)
    naive_ratio = _seam_ratio(naive - whole, [32])
    blended_ratio = _seam_ratio(blended - whole, sorted(set(starts[1:]) | {s + 32 for s in starts[:-1]}))
    assert naive_ratio > 2.5  # abutting tiles: a visible step at the boundary (3.7 here)
    assert blended_ratio < 1.5  # blended: boundaries look like any other column (0.9 here)
    assert float((blended - whole).abs().mean()) < float((naive - whole).abs().mean())


# ----------------------------------------------------------------------------- TTA


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, (2, 3))
    return torch.flip(x, (3,)) if flip else x


def _undo(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.flip(y, (3,)) if flip else y
    return torch.rot90(y, -k, (2, 3))


def test_tta_x8_is_mean_of_eight_runs() -> None:
    net = create_model("nafnet", **TINY["nafnet"]).eval()
    for block in net.modules():  # NAF blocks start as the identity; make them act
        if hasattr(block, "beta"):
            block.beta.data.fill_(0.5)
            block.gamma.data.fill_(0.5)
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        runs = [_undo(net(_dihedral(x, k, f)), k, f) for k in range(4) for f in (False, True)]
    expected = torch.stack(runs).mean(0).clamp(0, 1)
    torch.testing.assert_close(restore(net, x, tta=True), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(restore(net, x, tta="x8"), expected, rtol=0, atol=1e-6)
    flips = torch.stack([runs[0], runs[1], runs[4], runs[5]]).mean(0).clamp(0, 1)  # id, h, rot180, rot180+h
    torch.testing.assert_close(restore(net, x, tta="flip"), flips, rtol=0, atol=1e-6)
    assert float((restore(net, x) - expected).abs().max()) > 1e-4  # TTA changes the result
    # tiled TTA equals TTA of the local network's whole image (transforms commute with tiling)
    local = LocalNet()
    torch.testing.assert_close(
        restore(local, x, tta=True, tile=16, overlap=8), restore(local, x, tta=True), rtol=0, atol=2e-6
    )


def test_tta_transforms_invert() -> None:
    x = torch.rand(1, 2, 3, 5)
    outs = [fwd(x) for fwd, _ in tta_transforms("x8")]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8  # eight distinct transforms
    with pytest.raises(ValueError, match="tta"):
        tta_transforms("x4")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- input kinds


def test_input_kinds_agree(tmp_path) -> None:
    net = LocalNet()
    arr = (np.random.default_rng(0).random((21, 34, 3)) * 255).astype(np.uint8)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    ref = restore(net, t)
    assert ref.shape == (3, 21, 34) and ref.dtype == torch.float32
    batched = restore(net, torch.stack([t, t.flip(-1)]))
    torch.testing.assert_close(batched[0], ref)

    out8 = restore(net, arr)
    assert out8.dtype == np.uint8 and out8.shape == arr.shape
    np.testing.assert_array_equal(out8, np.rint(ref.permute(1, 2, 0).numpy() * 255).astype(np.uint8))

    out16 = restore(net, arr.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and abs(int(out16.astype(int).max()) - int(out8.max()) * 257) <= 257

    outf = restore(net, arr.astype(np.float64) / 255)
    assert outf.dtype == np.float64
    np.testing.assert_allclose(outf, ref.permute(1, 2, 0).numpy(), atol=1e-6)

    pil = restore(net, PIL.fromarray(arr))
    assert isinstance(pil, PIL.Image) and pil.size == (34, 21) and pil.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), out8)
    assert restore(net, PIL.fromarray(arr[:, :, 0])).mode == "L"

    path = tmp_path / "in.png"
    write_image(path, arr)
    before = sorted(tmp_path.iterdir())
    np.testing.assert_array_equal(restore(net, path), out8)
    assert sorted(tmp_path.iterdir()) == before  # nothing written without output=
    written = restore(net, str(path), output=tmp_path / "out.png")
    np.testing.assert_array_equal(np.asarray(PIL.open(written)), out8)
    with pytest.raises(FileExistsError):
        restore(net, path, output=tmp_path / "out.png")
    with pytest.raises(ValueError, match="input"):
        restore(net, path, output=path, overwrite=True)


def test_restore_path_output_keeps_channels_and_depth(tmp_path: Path) -> None:
    """restore(path, output=...) writes what the CLI writes: grayscale stays grayscale, alpha is copied back."""
    from allinone_ir.inference import LUMA_WEIGHTS, restore_array
    from allinone_ir.io import read_image_array

    class Darken(nn.Module):
        in_channels = out_channels = 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.tensor([0.5, 0.75, 1.0]).view(1, 3, 1, 1)

    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    for name, arr in (("gray16", gray16), ("rgba", rgba)):
        src = write_image(tmp_path / f"{name}.png", arr)
        out = restore(Darken(), src, output=tmp_path / f"{name}_out.png")
        got = read_image_array(out, keep_channels=True)
        stored = read_image_array(src, keep_channels=True)
        assert got.dtype == stored.dtype and got.shape == stored.shape
        np.testing.assert_array_equal(got, restore_array(Darken(), stored)[1])  # the CLI's pixels
    # grayscale: the three darkened channels weighted back to luma (0.299*0.5 + 0.587*0.75 + 0.114)
    luma = sum(w * f for w, f in zip(LUMA_WEIGHTS, (0.5, 0.75, 1.0)))
    got = read_image_array(tmp_path / "gray16_out.png", keep_channels=True)[:, :, 0].astype(float)
    np.testing.assert_allclose(got, gray16 * luma, atol=1.0)
    # alpha copied back untouched, colour darkened per channel
    got = read_image_array(tmp_path / "rgba_out.png", keep_channels=True)
    np.testing.assert_array_equal(got[:, :, 3], rgba[:, :, 3])
    np.testing.assert_allclose(got[:, :, 0], rgba[:, :, 0] * 0.5, atol=0.51)


def test_clamp_and_half_precision() -> None:
    class Double(nn.Module):
        in_channels = out_channels = 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    x = torch.full((3, 8, 8), 0.75)
    assert float(restore(Double(), x).max()) == 1.0
    assert float(restore(Double(), x, clamp=False).max()) == 1.5
    net = create_model("restormer", **TINY["restormer"]).eval()
    y = torch.rand(1, 3, 24, 24)
    with (
        pytest.warns(RuntimeWarning, match="emulated")
        if not native_low_precision(torch.bfloat16, "cpu")
        else contextlib.nullcontext()
    ):
        y16 = restore(net, y, dtype=torch.bfloat16)
    torch.testing.assert_close(y16, restore(net, y), rtol=0, atol=0.05)


# ----------------------------------------------------------------------------- the default fast path


@pytest.mark.parametrize("name", ["promptir", "nafnet", "pip_restormer"])
def test_default_path_is_channels_last_and_equals_fp32_nchw(name: str) -> None:
    """restore() with no options converts the network to channels-last and gives the NCHW fp32 result."""
    torch.manual_seed(0)
    net = create_model(name, **TINY[name]).eval()
    x = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        ref = net(x, degradation="rain") if name == "pip_restormer" else net(x)  # plain NCHW fp32 eager
    assert not net.uses_channels_last()
    kw = {"degradation": "rain"} if name == "pip_restormer" else {}
    out = restore(net, x, clamp=False, **kw)
    assert net.uses_channels_last() and out.is_contiguous()
    assert float((out - ref).abs().max()) < 1e-4
    tiled = restore(net, x, tile=16, overlap=4, clamp=False, **kw)  # tiles run on the same path
    assert tiled.shape == x.shape and tiled.is_contiguous()


def test_channels_last_option_and_prepare_for_inference() -> None:
    net = create_model("restormer", **TINY["restormer"]).eval()
    x = torch.rand(1, 3, 16, 16)
    restore(net, x, channels_last=False)
    assert not net.uses_channels_last()
    assert prepare_for_inference(net) is net and net.uses_channels_last()
    prepare_for_inference(net, channels_last=False)
    assert not net.uses_channels_last()
    local = prepare_for_inference(LocalNet(), "cpu")  # any network with 4-D convolution weights
    assert local.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = LocalNet()
    nchw.load_state_dict(local.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(restore(local, x)[0], nchw(x).clamp(0, 1)[0], atol=1e-5, rtol=1e-5)
    assert prefers_channels_last("cpu")  # measured there (docs/benchmarks.md); other devices run NCHW
    assert not prefers_channels_last(torch.device("cuda", 1)) and not prefers_channels_last("mps")


def test_native_low_precision_on_this_cpu() -> None:
    assert native_low_precision(torch.float32, "cpu")
    assert native_low_precision(torch.bfloat16, "cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert native_low_precision(torch.float16, "cpu") == bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    assert not native_low_precision(torch.bfloat16, "meta")


def test_low_precision_warns_only_when_emulated(monkeypatch) -> None:
    import allinone_ir.inference as inf

    net = LocalNet()
    x = torch.rand(3, 8, 8)
    monkeypatch.setattr(inf, "native_low_precision", lambda dtype, device: False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        restore(net, x, dtype=torch.bfloat16)
    monkeypatch.setattr(inf, "native_low_precision", lambda dtype, device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore(net, x, dtype=torch.bfloat16)
        restore(net, x)  # fp32 never warns


@pytest.mark.slow  # torch.compile: about a minute on 2 cores
def test_compile_option_compiles_once(monkeypatch) -> None:
    """compile=True goes through torch.compile (here its eager backend: no code generation), cached."""
    calls: list[nn.Module] = []
    real = torch.compile

    def fake_compile(model: nn.Module) -> nn.Module:
        calls.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch._dynamo.reset()
    net = create_model("restormer", **TINY["restormer"]).eval()
    x = torch.rand(2, 3, 16, 16)
    expected = restore(net, x)
    torch.testing.assert_close(restore(net, x, compile=True), expected)
    torch.testing.assert_close(
        restore(net, x, compile=True, tile=8, overlap=2), restore(net, x, tile=8, overlap=2)
    )
    assert calls == [net]  # compiled once for both calls


def test_mode_restored_and_bad_inputs() -> None:
    net = LocalNet().train()
    restore(net, torch.rand(3, 8, 8))
    assert net.training
    x = torch.rand(3, 16, 16)
    x[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        restore(net, x)
    with pytest.raises(ValueError, match="channels"):
        restore(net, torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        restore(net, torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="overlap"):
        restore(net, torch.rand(3, 8, 8), tile=16, overlap=16)
    with pytest.raises(ValueError, match="degradation"):
        restore(net, torch.rand(3, 8, 8), degradation="rain")
    with pytest.raises(TypeError, match="numpy"):
        restore(net, [[0.0]])
    # another scale than [0, 1] (8-bit values, [-1, 1]) is refused; a small overshoot is not
    with pytest.raises(UsageError, match=r"the input image holds values from 0 to 255; expected \[0, 1\]"):
        restore(net, torch.linspace(0, 255, 192).reshape(3, 8, 8))
    with pytest.raises(UsageError, match=r"from -1 to 1;.*\(x \+ 1\) / 2"):
        restore(net, torch.linspace(-1, 1, 192).reshape(3, 8, 8))
    restore(net, torch.linspace(-0.1, 1.1, 192).reshape(3, 8, 8))
    with pytest.raises(UsageError, match=r"the image is empty: shape \(3, 0, 8\)"):
        restore(net, torch.rand(3, 0, 8))
    with pytest.raises(UsageError, match="tile must be a positive int or"):
        restore(net, torch.rand(3, 8, 8), tile="a")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"dtype must be torch\.float32, torch\.bfloat16 or torch\.float16"):
        restore(net, torch.rand(3, 8, 8), dtype=torch.int8)
    with pytest.raises(UsageError, match="device: expected a device such as 'cpu'"):
        restore(net, torch.rand(3, 8, 8), device="tpu")
    with pytest.raises(UsageError, match="is not a device the library runs on"):
        restore(net, torch.rand(3, 8, 8), device="meta")
    with pytest.raises(
        UsageError, match="the network's weights are on the meta device"
    ):  # NotImplementedError
        restore(net.to("meta"), torch.rand(3, 8, 8))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"'cuda:0' is not available \(this machine has no CUDA\)"):
            restore(net, torch.rand(3, 8, 8), device="cuda:0")


def test_degradation_follows_tiles() -> None:
    net = DegradationNet()
    x = torch.zeros(2, 3, 16, 16)
    out = restore(net, x, tile=8, overlap=2, batch_size=3, degradation=torch.tensor([1, 3]))
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.1, 0.3]))
    assert all(isinstance(d, torch.Tensor) for d in net.seen)
    net.seen.clear()
    restore(net, x, tile=8, overlap=2, batch_size=3, degradation=["rain", "haze"])
    flat = [d for batch in net.seen for d in batch]  # type: ignore[attr-defined]
    assert flat == ["rain"] * 9 + ["haze"] * 9
    net.seen.clear()
    restore(net, x, degradation="rain")
    assert net.seen == ["rain"]
    net.seen.clear()
    mix = {"rain": 0.5, "noise": 0.5}  # a mixture applies to every image, not one entry per image
    restore(net, x, tile=8, overlap=2, batch_size=4, degradation=mix)
    assert net.seen and all(d == mix for d in net.seen)


def test_mixture_degradation_on_pip() -> None:
    from allinone_ir import create_model

    from .tiny_configs import TINY

    net = create_model("pip_restormer", **TINY["pip_restormer"]).eval()
    x = torch.rand(2, 3, 16, 16)
    mix = {"rain": 0.5, "noise": 0.5}
    with torch.no_grad():
        ref = net(x, degradation=mix)
    torch.testing.assert_close(restore(net, x, degradation=mix, clamp=False), ref, atol=1e-5, rtol=1e-4)


def test_progress_bar(capsys) -> None:
    pytest.importorskip("tqdm")
    restore(LocalNet(), torch.rand(3, 40, 40), tile=16, overlap=4, progress=True)
    assert "tiles" in capsys.readouterr().err


# ----------------------------------------------------------------------------- low-precision policy


def test_low_precision_policy_flags_and_restores() -> None:
    from allinone_ir.inference import low_precision_policy

    net = create_model("promptir", **TINY["promptir"]).eval()
    with low_precision_policy(net) as names:
        assert names == ["patch_embed", "encoder_level1.0.attn", "decoder_level1.0.attn", "refinement.0.attn"]
        assert net.patch_embed.float32 and net.encoder_level1[0].attn.float32_dwconv
        assert not net.encoder_level2[0].attn.float32_dwconv  # only the full-resolution levels
    assert not net.patch_embed.float32 and not net.encoder_level1[0].attn.float32_dwconv
    net.refinement[0].attn.float32_dwconv = True  # a user's own setting survives the context
    with low_precision_policy(net):
        pass
    assert net.refinement[0].attn.float32_dwconv
    with low_precision_policy(net, enabled=False) as names:
        assert names == [] and not net.patch_embed.float32
    with low_precision_policy(create_model("nafnet", **TINY["nafnet"])) as names:
        assert names == []  # other families are left as they are


def test_restore_low_precision_runs_the_policy_layers_in_float32() -> None:
    """Under restore(dtype=bf16) the patch embedding and full-resolution depthwise convs see float32."""
    net = create_model("restormer", **TINY["restormer"]).eval()
    seen: dict[str, torch.dtype] = {}
    for name in ("patch_embed.proj", "encoder_level1.0.attn.qkv_dwconv", "encoder_level2.0.attn.qkv_dwconv",
                 "latent.0.attn.qkv", "encoder_level1", "encoder_level2", "decoder_level1", "refinement"):  # fmt: skip
        net.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, out.dtype)
        )
    x = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 may be emulated on this CPU
        out = restore(net, x, dtype=torch.bfloat16, clamp=False)
    assert seen["patch_embed.proj"] == torch.float32
    assert seen["encoder_level1.0.attn.qkv_dwconv"] == torch.float32
    assert seen["encoder_level2.0.attn.qkv_dwconv"] == torch.bfloat16
    assert seen["latent.0.attn.qkv"] == torch.bfloat16
    # the residual stream of the full-resolution levels stays float32 (the lower levels' is bf16):
    # measured, it is most of what keeps bf16 close to fp32 (docs/benchmarks.md)
    assert [seen[k] for k in ("encoder_level1", "decoder_level1", "refinement")] == [torch.float32] * 3
    assert seen["encoder_level2"] == torch.bfloat16
    assert not net.patch_embed.float32  # the flags are the network's own again afterwards
    torch.testing.assert_close(out, restore(net, x, clamp=False), atol=0.05, rtol=0)


# --- issue 20: what restore() gives back for a file, PIL modes, process state -------------------------------


def test_restore_path_returns_the_pixels_output_would_write(tmp_path: Path) -> None:
    from allinone_ir.io import read_image_array

    net = LocalNet()
    rng = np.random.default_rng(0)
    files = {
        "gray16.png": rng.integers(0, 65536, (9, 11), dtype=np.uint16),
        "rgba.png": rng.integers(0, 256, (9, 11, 4), dtype=np.uint8),
        "rgb.png": rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
    }
    for name, arr in files.items():
        src = write_image(tmp_path / name, arr)
        pixels = restore(net, src)
        written = read_image_array(restore(net, src, output=tmp_path / f"out_{name}"), keep_channels=True)
        assert isinstance(pixels, np.ndarray)
        assert pixels.dtype == written.dtype == arr.dtype and pixels.shape == written.shape
        np.testing.assert_array_equal(pixels, written)
    assert restore(net, tmp_path / "gray16.png").shape == (9, 11, 1)
    # a float TIFF: float32 pixels in [0, 1], written as a 16-bit PNG
    values = rng.random((9, 11)).astype(np.float32)
    PIL.fromarray(values).save(tmp_path / "f.tif")
    got = restore(net, tmp_path / "f.tif")
    assert got.dtype == np.float32 and got.shape == (9, 11, 1)
    want = restore(net, np.repeat(values[:, :, None], 3, axis=2))
    np.testing.assert_allclose(got[:, :, 0], want @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-5)
    out16 = read_image_array(restore(net, tmp_path / "f.tif", output=tmp_path / "f.png"), keep_channels=True)
    assert out16.dtype == np.uint16 and np.abs(out16 / 65535 - got).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("mode", ["F", "I;16", "I", "LA", "RGBA", "CMYK", "P", "1"])
def test_restore_pil_image_of_every_mode(mode: str) -> None:
    net = LocalNet()
    rgb = PIL.fromarray(np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    if mode == "F":
        im = PIL.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255)
    elif mode in ("I;16", "I"):
        im = PIL.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
        im = im if mode == "I;16" else im.convert("I")
    elif mode == "P":
        im = rgb.quantize(8)
    else:
        im = rgb.convert(mode)
    out = restore(net, im)
    want_mode = {"P": "RGB", "1": "L"}.get(mode, mode)
    assert isinstance(out, PIL.Image) and out.mode == want_mode and out.size == (11, 9)
    gray = np.asarray(im.convert("L") if mode not in ("F", "I;16", "I") else im, np.float64)
    scale = {"F": 1.0, "I;16": 65535.0, "I": 65535.0}.get(mode, 255.0)
    if mode in ("F", "I;16", "I"):  # the restored luma of the values, not of a black image
        restored = np.asarray(out, np.float64) / scale
        want = restore(net, np.repeat(gray[:, :, None] / scale, 3, 2)) @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(restored, want, atol=1e-4)


def test_restore_pil_float_outside_range_is_refused_by_mode() -> None:
    with pytest.raises(ValueError, match=r"PIL image: 32-bit float pixels \(mode F\) from 0 to 300"):
        restore(LocalNet(), PIL.fromarray(np.linspace(0, 300, 20, dtype=np.float32).reshape(4, 5)))


def test_restore_leaves_the_process_as_it_found_it(monkeypatch) -> None:
    """A library call changes no process-wide state: no C allocator calls, threads, environment or signals."""
    import ctypes
    import signal

    def no_c_library(*args, **kwargs):
        raise AssertionError(f"restore() opened a C library {args!r} (allocator settings are the program's)")

    monkeypatch.setattr(ctypes, "CDLL", no_c_library)
    monkeypatch.setattr(ctypes.cdll, "LoadLibrary", no_c_library)
    threads, env = torch.get_num_threads(), dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = restore(LocalNet(), torch.rand(1, 3, 32, 32), tile=16, overlap=4, progress=False)
    assert out.shape == (1, 3, 32, 32)
    assert torch.get_num_threads() == threads and dict(os.environ) == env
    assert {s: signal.getsignal(s) for s in handlers} == handlers


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_network_of_another_dtype_gets_its_inputs_in_that_dtype(dtype: torch.dtype) -> None:
    net = create_model("nafnet", **TINY["nafnet"]).eval()
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        ref = net.to(dtype)(x.to(dtype)).float().clamp(0, 1)
    assert restore(net, x, tile=16, overlap=4).dtype == torch.float32
    assert next(net.parameters()).dtype == dtype  # the network is left in its dtype
    torch.testing.assert_close(restore(net, x), ref, atol=1e-2 if dtype == torch.bfloat16 else 1e-6, rtol=0)


def test_pip_degradation_forms_and_batch_length_under_tiles() -> None:
    net = create_model("pip_nafnet", **TINY["pip_nafnet"]).eval()
    x = torch.rand(2, 3, 24, 24)
    rain = restore(net, x, degradation="rain", tile=16, overlap=4, batch_size=3, clamp=False)
    weights = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    for same in (weights, weights[None], weights.expand(2, 5), torch.tensor([1, 1]), ["rain", "derain"]):
        out = restore(net, x, degradation=same, tile=16, overlap=4, batch_size=3, clamp=False)
        torch.testing.assert_close(out, rain)
    wrong = {
        "got 3 degradations for a batch of 2 images": ["rain", "noise", "haze"],
        "got 1 degradations for a batch of 2 images": ["rain"],
        r"integer degradation labels must have shape \(2,\) for a batch of 2, got \(3,\)": torch.tensor(
            [1, 2, 0]
        ),
        r"degradation weights must have shape \(2, 5\), \(1, 5\) or \(5,\)": torch.rand(3, 5),
        "cannot read degradation weights from float": 1.0,
    }
    for message, degradation in wrong.items():
        with pytest.raises(AllInOneIRError, match=message):
            restore(net, x, degradation=degradation, tile=16, overlap=4, batch_size=3)


def test_blind_pip_in_tiles_classifies_each_image_once() -> None:
    torch.manual_seed(0)
    net = create_model("pip_nafnet", **TINY["pip_nafnet"]).eval().requires_grad_(False)
    net.classifier.head.weight.mul_(100)  # confident, as a trained classifier
    x = torch.rand(2, 3, 24, 24)
    x[1, :, :, 12:] = 0.5  # half flat: its tiles alone look different
    tiles = [x[:, :, y : y + 16, s : s + 16] for y in (0, 8) for s in (0, 8)]  # tile 16, overlap 8
    expected = torch.stack([net.classify(t) for t in tiles], dim=1).mean(dim=1).softmax(dim=-1)
    seen: list[torch.Tensor] = []
    hook = net.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["degradation"]), with_kwargs=True)
    blind = restore(net, x, tile=16, overlap=8, batch_size=3, clamp=False)
    hook.remove()
    torch.testing.assert_close(seen[0], expected[:2].index_select(0, torch.tensor([0, 0, 0])))
    given = restore(net, x, tile=16, overlap=8, batch_size=3, clamp=False, degradation=expected)
    torch.testing.assert_close(blind, given)  # not one guess per tile (the tiles' own weights differ)
    per_tile = torch.stack([net.classify(t).softmax(dim=-1) for t in tiles], dim=1)[1]
    assert (per_tile - per_tile.mean(dim=0)).abs().max() > 0.02
    whole = restore(net, x, clamp=False)  # no tiles: the network's own blind forward
    torch.testing.assert_close(whole, net(x).clamp(-1e9, 1e9))


def test_tile_and_overlap_types() -> None:
    net = LocalNet()
    for tile in ("16", True, b"16"):
        with pytest.raises(
            UsageError, match=f"tile must be a positive int or \\(height, width\\), got {tile!r}"
        ):
            restore(net, torch.rand(3, 20, 20), tile=tile, overlap=0)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"overlap must be an int >= 0, got 4\.5"):
        restore(net, torch.rand(3, 20, 20), tile=16, overlap=4.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"batch_size must be an int >= 1, got 2\.0"):
        restore(net, torch.rand(3, 20, 20), tile=16, overlap=4, batch_size=2.0)  # type: ignore[arg-type]
    x = torch.rand(3, 20, 20)
    size = np.int64(16)  # numpy integers, as a computed size is
    assert torch.equal(
        restore(net, x, tile=size, overlap=size // 4, batch_size=size // 8),
        restore(net, x, tile=16, overlap=4, batch_size=2),
    )


def test_grayscale_and_rgba_arrays_restore_as_their_pil_images_do() -> None:
    net = create_model("nafnet", **TINY["nafnet"]).eval()
    rgba = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    for arr, mode in ((rgba[:, :, 0], "L"), (rgba, "RGBA")):
        out = restore(net, arr)
        assert out.shape == arr.shape and out.dtype == np.uint8
        assert np.array_equal(out, np.asarray(restore(net, PIL.fromarray(arr, mode))))
    assert restore(net, rgba[:, :, :1].astype(np.float32) / 255).shape == (20, 30, 1)
    with pytest.raises(UsageError, match=r"the network takes 3 channels, the array has shape \(3, 20, 30\)"):
        restore(net, rgba[:, :, :3].transpose(2, 0, 1))
