"""Checkpoints: official formats, architecture detection, safetensors round trips."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from allinone_ir import __version__, create_model, list_models
from allinone_ir.errors import UsageError
from allinone_ir.hub import (
    CheckpointError,
    convert_checkpoint,
    detect_architecture,
    extract_state_dict,
    from_pretrained,
    load_checkpoint,
    save_pretrained,
)
from allinone_ir.models import PROMPTIR_UNUSED_MODULES, PromptIR

from .tiny_configs import TINY

pytest.importorskip("safetensors")


def _tiny(name: str) -> nn.Module:
    net = create_model(name, **TINY[name]).eval()
    with torch.no_grad():  # make every parameter matter (NAF blocks start as identities)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _same_outputs(a: nn.Module, b: nn.Module, size: tuple[int, int] = (24, 20)) -> None:
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def _unused_modules(cfg: dict) -> dict[str, torch.Tensor]:
    """The six modules the official PromptIR builds and never uses, with the official shapes."""
    dim, (p1, p2, p3) = cfg["dim"], cfg["prompt_dims"]
    shapes = {
        "chnl_reduce1": (p1, p1), "chnl_reduce2": (p2, p2), "chnl_reduce3": (dim * 16 // 3, p3),
        "reduce_noise_channel_1": (dim, dim + p1), "reduce_noise_channel_2": (dim * 2, dim * 2 + p2),
        "reduce_noise_channel_3": (dim * 4, dim * 4 + dim * 16 // 3),
    }  # fmt: skip
    assert set(shapes) == set(PROMPTIR_UNUSED_MODULES)
    return {f"{k}.weight": torch.randn(o, i, 1, 1) for k, (o, i) in shapes.items()}


def _official_promptir_ckpt() -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A Lightning checkpoint of the official PromptIR code (tiny network, random weights, its key names and
    unused modules), an input and the official output: the golden fixture of ``tests/test_parity.py``, where
    parity with the official code is tested for every family."""
    from safetensors.torch import load_file

    parity = Path(__file__).parent / "fixtures" / "parity"
    state = load_file(str(parity / "promptir.safetensors"))
    io = load_file(str(parity / "promptir_io.safetensors"))
    ckpt = {"epoch": 119, "global_step": 1000, "pytorch-lightning_version": "2.0.0", "state_dict": state,
            "optimizer_states": [], "lr_schedulers": []}  # fmt: skip
    return ckpt, io["input_24x24"], io["output_24x24"]


def _official_output(net: nn.Module, x: torch.Tensor, expected: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), expected, rtol=0, atol=1e-5)


def test_official_promptir_lightning_checkpoint(tmp_path) -> None:
    ckpt, x, expected = _official_promptir_ckpt()
    path = tmp_path / "model.ckpt"
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, PromptIR) and not loaded.training
    _official_output(loaded, x, expected)
    # into an existing network and with an explicit name
    _official_output(load_checkpoint(path, create_model("promptir", **loaded.config)), x, expected)
    _official_output(load_checkpoint(path, "promptir"), x, expected)


def test_full_size_promptir_detection() -> None:
    """The official configuration is recovered from (meta) tensors of the released checkpoint's shapes."""
    with torch.device("meta"):
        net = create_model("promptir")
        state = dict(net.state_dict())
        state.update({k: v.to("meta") for k, v in _unused_modules(net.config).items()})
    assert sum(v.numel() for v in state.values()) == 35_592_263  # ARCHITECTURE_FACTS: with unused modules
    name, cfg = detect_architecture(
        extract_state_dict({"state_dict": {f"net.{k}": v for k, v in state.items()}})
    )
    assert name == "PromptIR"
    assert cfg == net.config


@pytest.mark.parametrize("name", sorted(TINY))
def test_detect_architecture_of_tiny_models(name: str) -> None:
    net = _tiny(name)
    cls_name, cfg = detect_architecture(net.state_dict())
    assert cls_name == type(net).__name__
    assert {k: v for k, v in net.config.items() if k in cfg} == cfg
    _same_outputs(load_checkpoint(net.state_dict()), net)


def test_detect_other_hyper_parameters() -> None:
    net = create_model(
        "restormer", dim=6, num_blocks=(2, 1, 3, 1), num_refinement_blocks=2, heads=(1, 3, 2, 6),
        ffn_expansion_factor=2.0, bias=True, layer_norm_type="BiasFree",
    )  # fmt: skip
    assert detect_architecture(net.state_dict()) == ("Restormer", net.config)
    naf = create_model("nafnet", width=4, middle_blk_num=0, enc_blk_nums=(2, 0, 1), dec_blk_nums=(1, 1, 3))
    assert detect_architecture(naf.state_dict())[1] == {
        k: v for k, v in naf.config.items() if k != "drop_out_rate"
    }
    p = create_model("promptir", **{**TINY["promptir"], "interaction_heads": 4, "prompt_len": 2})
    assert detect_architecture(p.state_dict())[1] == p.config


def test_official_restormer_and_nafnet_pth(tmp_path) -> None:
    restormer = _tiny("restormer")
    path = tmp_path / "deraining.pth"
    torch.save({"params": {f"module.{k}": v for k, v in restormer.state_dict().items()}}, path)
    _same_outputs(load_checkpoint(path), restormer)

    naf, other = _tiny("nafnet"), _tiny("nafnet")
    path = tmp_path / "NAFNet-SIDD-width32.pth"
    torch.save({"params": other.state_dict(), "params_ema": naf.state_dict()}, path)
    _same_outputs(load_checkpoint(path), naf)  # EMA weights preferred
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in naf.state_dict().items()}}, path)
    _same_outputs(load_checkpoint(path, "nafnet_width64"), naf)  # detected sizes beat the variant's defaults


@pytest.mark.parametrize("name", ["restormer", "promptir"])
def test_official_bias_true_checkpoints_load(name: str) -> None:
    """The official networks never give ``patch_embed`` a bias (``OverlapPatchEmbed(in_c, dim)``), not even with
    ``bias=True``: every other convolution has one. ``bias`` is read from those, and such files load.

    (Checked against the official code too, outside the test suite: official Restormer and PromptIR built
    with ``bias=True`` and random weights, loaded here, give the official outputs within float rounding.)
    """
    net = create_model(name, **TINY[name], bias=True)
    state = net.state_dict()
    assert "patch_embed.proj.bias" not in state and "output.bias" in state
    assert "encoder_level1.0.attn.qkv.bias" in state and "reduce_chan_level2.bias" in state
    plain = create_model(name, **TINY[name]).state_dict()
    extra = [k for k in state if k not in plain]
    assert all(k.endswith(".bias") for k in extra)  # bias=True adds the conv biases and nothing else
    assert net.num_parameters == sum(v.numel() for v in plain.values()) + sum(state[k].numel() for k in extra)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert detect_architecture(state)[1]["bias"] is True
    if name == "promptir":
        unused = _unused_modules(net.config)
        unused.update({k.replace(".weight", ".bias"): torch.randn(v.shape[0]) for k, v in unused.items()})
        ckpt = {"state_dict": {f"net.{k}": v for k, v in {**state, **unused}.items()}, "epoch": 119}
    else:
        ckpt = {"params": {f"module.{k}": v for k, v in state.items()}}
    loaded = load_checkpoint(ckpt)
    assert loaded.config == net.config
    _same_outputs(loaded, net)


def test_wrong_architecture_lists_keys() -> None:
    naf = _tiny("nafnet")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(naf.state_dict(), "restormer", **TINY["restormer"])
    msg = str(err.value)
    assert "missing keys" in msg and "patch_embed.proj.weight" in msg
    assert "unexpected keys" in msg and "intro.weight" in msg
    wider = create_model("promptir", **{**TINY["promptir"], "dim": 16})
    with pytest.raises(CheckpointError, match=r"shape mismatches.*patch_embed\.proj\.weight"):
        load_checkpoint(_tiny("promptir").state_dict(), wider)
    with pytest.raises(CheckpointError, match="cannot detect"):
        load_checkpoint({"foo.weight": torch.zeros(2)})


def test_weights_only_refuses_pickled_objects(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _tiny("nafnet").state_dict(), "obj": nn.ReLU()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_save_pretrained_round_trip(tmp_path) -> None:
    net = _tiny("promptir")
    folder = save_pretrained(net, tmp_path / "m", protocol="basicsr")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    cfg = json.loads((folder / "config.json").read_text())
    assert (
        cfg["architecture"] == "PromptIR" and cfg["config"] == net.config and cfg["model_name"] == "promptir"
    )
    assert cfg["library_version"] == __version__ and cfg["input_range"] == [0.0, 1.0]
    assert cfg["metric_protocol"] == "basicsr"
    loaded = from_pretrained(folder)
    assert type(loaded) is PromptIR and loaded.model_name == "promptir"
    _same_outputs(loaded, net, (17, 33))
    _same_outputs(load_checkpoint(folder), net)
    _same_outputs(load_checkpoint(folder / "model.safetensors"), net)

    with pytest.raises(FileExistsError, match="overwrite"):
        save_pretrained(_tiny("promptir"), folder)
    _same_outputs(from_pretrained(folder), net)  # untouched
    other = _tiny("promptir")
    save_pretrained(other, folder, overwrite=True)
    _same_outputs(from_pretrained(folder), other)
    with pytest.raises(ValueError, match="protocol"):
        save_pretrained(net, tmp_path / "x", protocol="nope")
    # a file name: a folder of that name was made (x.safetensors/model.safetensors), or "File exists"
    (tmp_path / "f.txt").write_text("mine")
    for name, what in (("x.safetensors", "ends in .safetensors"), ("f.txt", "is a file")):
        with pytest.raises(
            UsageError, match=rf"{name} {what}: give a folder \(for model\.safetensors and config"
        ):
            save_pretrained(net, tmp_path / name)
    with pytest.raises(
        UsageError, match=r"out\.pth ends in \.pth: give a \.safetensors file or a folder \(for"
    ):
        convert_checkpoint(folder, tmp_path / "out.pth")
    assert not (tmp_path / "x.safetensors").exists() and (tmp_path / "f.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "name", sorted({n for n in list_models() if n in TINY and not n.startswith("nafnet_")})
)
def test_every_network_round_trips(tmp_path, name: str) -> None:
    net = _tiny(name)
    _same_outputs(from_pretrained(save_pretrained(net, tmp_path / name)), net)


def test_convert_official_checkpoint(tmp_path) -> None:
    ckpt, x, expected = _official_promptir_ckpt()
    src = tmp_path / "promptir.ckpt"
    torch.save(ckpt, src)
    single = convert_checkpoint(src, tmp_path / "promptir.safetensors")
    _official_output(from_pretrained(single), x, expected)  # the config travels in the safetensors metadata
    folder = convert_checkpoint(src, tmp_path / "converted")
    _official_output(from_pretrained(folder), x, expected)
    with pytest.raises(FileExistsError):
        convert_checkpoint(src, single)
    with pytest.raises(ValueError, match="source"):
        convert_checkpoint(src, src)


def test_missing_safetensors_message(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"allinone-ir\[hub\]"):
        save_pretrained(_tiny("nafnet"), tmp_path / "m")


def test_trainer_checkpoint_loads_ema_weights_and_rebuilds_from_its_config(tmp_path) -> None:
    """A Trainer's periodic checkpoint: the network is rebuilt from ``arch`` + ``model_config``, EMA first."""
    from allinone_ir.data import SyntheticDegradationDataset
    from allinone_ir.training import Trainer, TrainerConfig

    net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
    data = SyntheticDegradationDataset([torch.rand(3, 32, 32)], tasks=["noise_25"], patch_size=16)
    cfg = TrainerConfig(
        output_dir=str(tmp_path / "run"), max_steps=3, batch_size=1, progress_bar=False, ema_decay=0.5,
        lr=1e-2, plot=False,
    )  # fmt: skip
    trainer = Trainer(net, cfg, data)
    trainer.fit()
    ckpt = trainer.last_checkpoint
    assert ckpt is not None and ckpt.name.startswith("step_")
    loaded = load_checkpoint(ckpt)
    assert type(loaded).__name__ == "NAFNet" and loaded.config["width"] == 8
    ema, live = trainer.ema.module.state_dict(), trainer.model.state_dict()
    name = "intro.weight"
    assert not torch.equal(ema[name], live[name])  # the two differ after 3 updates at decay 0.5
    assert torch.equal(loaded.state_dict()[name], ema[name].cpu().contiguous())
