"""Parity with the official implementations, on golden fixtures made by running the official code.

Each family in ``tests/fixtures/parity/manifest.json`` has a tiny official network's random weights,
stored with the official key names (``<family>.safetensors``: the dict the official training code
puts under its wrapper key, Lightning's ``state_dict`` with the ``net.`` prefix or BasicSR's
``params``), inputs and the outputs of the official forward (``<family>_io.safetensors``). How they
were made: ``tests/fixtures/parity/README.md``. Each test loads the weights through
``load_checkpoint`` without naming the architecture, checks the detected class and configuration,
and matches the official outputs within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from allinone_ir import load_checkpoint

safetensors_torch = pytest.importorskip("safetensors.torch")

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
MANIFEST: dict[str, dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())
TOLERANCE = 1e-5

_RESTORMER = dict(in_channels=3, out_channels=3, dim=4, num_refinement_blocks=1, heads=[1, 2, 4, 8])

#: Per fixture: the class and configuration ``load_checkpoint`` must detect (the official constructor
#: arguments of the manifest, in this library's names), and what our forward takes besides the image.
EXPECTED: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "promptir": (
        "PromptIR",
        dict(
            _RESTORMER, num_blocks=[2, 1, 1, 1], ffn_expansion_factor=2.66, bias=False,
            layer_norm_type="WithBias", prompt_dims=[4, 8, 4], prompt_sizes=[6, 5, 3], prompt_len=5,
            interaction_heads=None,
        ),
        {},
    ),
    "restormer": (
        "Restormer",
        dict(_RESTORMER, num_blocks=[2, 1, 1, 1], ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias"),
        {},
    ),
    "restormer_biasfree": (
        "Restormer",
        dict(
            _RESTORMER, num_blocks=[1, 2, 1, 1], num_refinement_blocks=2, heads=[1, 1, 2, 4],
            ffn_expansion_factor=2.0, bias=True, layer_norm_type="BiasFree",
        ),
        {},
    ),
    "adair": (
        "AdaIR",
        dict(_RESTORMER, dim=8, num_blocks=[1, 1, 1, 1], ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias", fre_heads=None),
        {},
    ),
    "moce_ir": (
        "MoCEIR",
        dict(
            in_channels=3, out_channels=3, dim=8, num_blocks=[1, 1, 1], num_dec_blocks=[1, 2], num_refinement_blocks=1,
            heads=[1, 2, 4], ffn_expansion_factor=2.0, bias=False, layer_norm_type="WithBias", num_experts=4, rank=2,
            rank_type="spread", top_k=1, complexity_scale="max", eval_routing_noise=False, routing_noise=True,
            train_top_k=None,
            # official with_complexity=True: a training-loss option that leaves no trace in the weights
            with_complexity=False,
        ),
        {},
    ),
    "nafnet": (
        "NAFNet",
        dict(in_channels=3, width=4, middle_blk_num=2, enc_blk_nums=[1, 2, 1], dec_blk_nums=[1, 1, 2], drop_out_rate=0.0),
        {},
    ),
}  # fmt: skip


def _official_file(family: str, directory: Path) -> Path:
    """The fixture's weights in the file the official training code writes (``torch.save`` of the wrapper)."""
    meta = MANIFEST[family]
    state = safetensors_torch.load_file(str(FIXTURES / meta["weights"]))
    if meta["wrapper"] == "state_dict":  # a Lightning ModelCheckpoint file
        ckpt: dict[str, Any] = {
            "epoch": 119, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "state_dict": state,
            "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
        }  # fmt: skip
        path = directory / f"{family}.ckpt"
    else:  # BasicSR's save_network
        assert meta["wrapper"] == "params"
        ckpt = {meta["wrapper"]: state}
        path = directory / f"{family}.pth"
    torch.save(ckpt, path)
    return path


#: Fixtures checked by their family's own test file (their forward needs more than the image).
OWN_TEST_FILE = {"dfpir": "test_dfpir.py", "mirage": "test_mirage.py", "baryir": "test_baryir.py"}


def test_every_fixture_is_checked() -> None:
    own = {f for f in MANIFEST if f in OWN_TEST_FILE}
    assert sorted(set(MANIFEST) - own) == sorted([*EXPECTED, *PIP_PROMPT_DIMS])
    assert all((Path(__file__).parent / OWN_TEST_FILE[f]).read_text().count(f'"{f}"') for f in own)
    for family, meta in MANIFEST.items():
        assert (FIXTURES / meta["weights"]).stat().st_size < 1_300_000, family
        assert len(meta["sizes"]) == 2, family


def test_lightning_fixture_keeps_the_official_keys() -> None:
    """The PromptIR weights are as the official checkpoint holds them: ``net.`` prefix, unused modules."""
    keys = safetensors_torch.load_file(str(FIXTURES / MANIFEST["promptir"]["weights"])).keys()
    assert all(k.startswith("net.") for k in keys)
    assert {"net.chnl_reduce3.weight", "net.reduce_noise_channel_1.weight"} <= set(keys)
    assert (
        safetensors_torch.load_file(str(FIXTURES / MANIFEST["promptir"]["weights"]))[
            "net.prompt1.prompt_param"
        ].dim()
        == 5
    )


def _max_abs(out: torch.Tensor, expected: torch.Tensor) -> float:
    assert out.shape == expected.shape and out.dtype == expected.dtype
    return (out - expected).abs().max().item()


@pytest.mark.parametrize("form", ["official_file", "safetensors"])
@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_parity_with_official_code(family: str, form: str, tmp_path: Path) -> None:
    """float32 as users run it, and float64 (the same weights, the official forward in float64), where
    the two implementations' different summation orders leave no rounding to hide a difference in."""
    arch, config, forward_kwargs = EXPECTED[family]
    meta = MANIFEST[family]
    path = _official_file(family, tmp_path) if form == "official_file" else FIXTURES / meta["weights"]
    net = load_checkpoint(path)
    assert type(net).__name__ == arch
    assert net.config == config
    assert not net.training
    io = safetensors_torch.load_file(str(FIXTURES / meta["io"]))
    for dtype, key in ((torch.float32, "output"), (torch.float64, "output64")):
        net.to(dtype)
        for h, w in meta["sizes"]:
            with torch.no_grad():
                out = net(io[f"input_{h}x{w}"].to(dtype), **forward_kwargs)
            err = _max_abs(out, io[f"{key}_{h}x{w}"])
            assert err <= TOLERANCE, (
                f"{family} {h}x{w} {dtype}: max abs difference {err:.3g} from the official output"
            )


def test_adair_low_frequency_mask_at_512px() -> None:
    """AdaIR's adaptive low-frequency mask is empty on maps under 256 px, so the network fixture never
    fills it; here ``fre3`` (the fixture's weights) runs alone on a 512 px image and a 256 px feature,
    where its mask is 2x2 (thresholds 0.54 and 0.53). In float64, as the official output was made; the
    inputs are bilinear upsamplings of stored 8x8 maps, the output is stored at every 8th pixel and as
    per-channel means."""
    meta = MANIFEST["adair"]
    io = safetensors_torch.load_file(str(FIXTURES / meta["io"]))
    fre3 = load_checkpoint(FIXTURES / meta["weights"]).fre3.double()
    image = F.interpolate(io["fre3_image_seed"], (512, 512), mode="bilinear", align_corners=False).double()
    feature = F.interpolate(
        io["fre3_feature_seed"], (256, 256), mode="bilinear", align_corners=False
    ).double()
    with torch.no_grad():
        out = fre3(image, feature)
    assert _max_abs(out[..., ::8, ::8], io["fre3_output64_stride8"]) <= TOLERANCE
    assert _max_abs(out.mean(dim=(-2, -1)), io["fre3_output64_mean"]) <= TOLERANCE


def test_moce_ir_official_eval_routing_noise() -> None:
    """The official MoCE-IR adds its routing noise in eval mode too (``torch.randn_like`` on the logits of
    each router in turn); with ``eval_routing_noise=True`` and the same seed ours draws the same noise.
    The fixture's noise seed changes the first router's expert on both inputs, so the noisy outputs
    differ from the noise-free ones."""
    meta = MANIFEST["moce_ir"]
    io = safetensors_torch.load_file(str(FIXTURES / meta["io"]))
    net = load_checkpoint(FIXTURES / meta["weights"], eval_routing_noise=True)
    for h, w in meta["sizes"]:
        x = io[f"input_{h}x{w}"]
        assert _max_abs(io[f"noisy_output_{h}x{w}"], io[f"output_{h}x{w}"]) > 10 * TOLERANCE
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(meta["noise_seed"])
            out = net(x)
        assert _max_abs(out, io[f"noisy_output_{h}x{w}"]) <= TOLERANCE


#: The official PIP-Restormer's constructor arguments (manifest) in this library's names: P2P heads are
#: the official fixed 2, P2F heads the official ``heads[2]``, and an official network has no classifier.
PIP_CONFIG: dict[str, Any] = dict(
    _RESTORMER, dim=8, num_blocks=[1, 1, 1, 1], ffn_expansion_factor=2.66, bias=False, layer_norm_type="WithBias",
    prompt_sizes=[8, 4, 4], degradations=["noise", "rain", "haze", "blur", "lowlight"],
    p2p_heads=2, p2f_heads=4, classifier=False, classifier_widths=[16, 32, 64],
)  # fmt: skip

#: The PIP fixtures' prompt widths: skips (8, 16, 32 channels) as wide as or wider than their prompts (the
#: official prompt-to-feature block attends with the first channels and passes the others), and all
#: narrower (zero padding and ``reduce_channel``, the case of the official full-size network); the
#: second has batches of two images with different labels.
PIP_PROMPT_DIMS: dict[str, list[int]] = {"pip_restormer": [8, 8, 16], "pip_restormer_narrow": [16, 24, 48]}


@pytest.mark.parametrize("form", ["official_file", "safetensors"])
@pytest.mark.parametrize("family", sorted(PIP_PROMPT_DIMS))
def test_pip_restormer_official_checkpoint(family: str, form: str, tmp_path: Path) -> None:
    """The official PIP-Restormer (``PIPNet_Restormer_onskip_inter`` as its trainer builds it): the
    official forward takes the degradation label of each input (``degradation_class``, made one-hot
    inside), ours the same labels (``degradation``). Its unused ``reduce_noise_channel_1..3`` are dropped."""
    meta = MANIFEST[family]
    path = _official_file(family, tmp_path) if form == "official_file" else FIXTURES / meta["weights"]
    net = load_checkpoint(path)
    assert type(net).__name__ == "PIPRestormer"
    assert net.config == dict(PIP_CONFIG, prompt_dims=PIP_PROMPT_DIMS[family])
    assert not hasattr(net, "reduce_noise_channel_1") and net.classifier is None
    io = safetensors_torch.load_file(str(FIXTURES / meta["io"]))
    for dtype, key in ((torch.float32, "output"), (torch.float64, "output64")):
        net.to(dtype)
        for (h, w), label in zip(meta["sizes"], meta["degradation_class"]):
            labels = torch.tensor(label).reshape(-1)  # one label per image of the input batch
            with torch.no_grad():
                out = net(io[f"input_{h}x{w}"].to(dtype), degradation=labels)
            err = _max_abs(out, io[f"{key}_{h}x{w}"])
            assert err <= TOLERANCE, f"{family} {h}x{w} {dtype}: max abs difference {err:.3g}"
            with torch.no_grad():  # the labels matter: others give other images
                other = net(io[f"input_{h}x{w}"].to(dtype), degradation=(labels + 1) % 5)
            assert _max_abs(other, io[f"{key}_{h}x{w}"]) > 100 * TOLERANCE
