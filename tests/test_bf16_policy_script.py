"""``benchmarks/bf16_policy.py``: its policies do what they say, and it prints the table on a saved network."""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from allinone_ir import create_model, save_pretrained
from allinone_ir.inference import low_precision_policy
from allinone_ir.io import write_image

from .tiny_configs import TINY
from .tiny_configs import randomise as _randomise

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bf16_policy.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("bf16_policy_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _dtypes(net: torch.nn.Module, name: str, script: Any) -> dict[str, torch.dtype]:
    seen: dict[str, torch.dtype] = {}
    hooks = [
        net.get_submodule(m).register_forward_hook(lambda mod, a, out, m=m: seen.__setitem__(m, out.dtype))
        for m in ("encoder_level1", "encoder_level1.0.attn.qkv_dwconv", "encoder_level2")
    ]
    with script.policy(name, net), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        # what restore() runs: it looks low_precision_policy up in the module when it is called
        from allinone_ir import inference

        with inference.low_precision_policy(net):
            net(torch.rand(1, 3, 16, 16))
    for h in hooks:
        h.remove()
    return seen


def test_policies_set_the_dtypes_they_name() -> None:
    script = _load()
    net = create_model("promptir", **TINY["promptir"]).eval()
    bf, f32 = torch.bfloat16, torch.float32
    expect = {  # (full-resolution stream, its depthwise convolution, the next level)
        "plain": (bf, bf, bf),
        "policy": (f32, f32, bf),
        "bf16-stream": (bf, f32, bf),
        "embed-only": (f32, bf, bf),
    }
    assert set(expect) == set(script.POLICIES)
    for name, want in expect.items():
        seen = _dtypes(net, name, script)
        got = (seen["encoder_level1"], seen["encoder_level1.0.attn.qkv_dwconv"], seen["encoder_level2"])
        assert got == want, name
    # a top-level module in float32 on top of the policy: the next level too, and only while the policy runs
    seen = _dtypes(net, "float32:encoder_level2", script)
    assert (seen["encoder_level1"], seen["encoder_level2"]) == (f32, f32)
    assert "forward" not in vars(net.encoder_level2)
    with pytest.raises(ValueError, match="needs the model"), script.policy("float32:latent"):
        pass
    with low_precision_policy(net) as names:  # nothing is left patched afterwards
        assert "encoder_level1.0.attn" in names
    with pytest.raises(ValueError, match="policy must be one of"), script.policy("fp8"):
        pass


def test_table_on_a_saved_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _load()
    torch.manual_seed(0)
    net = _randomise(create_model("promptir", **TINY["promptir"]), scale=0.05)
    save_pretrained(net, tmp_path / "model")
    clean = torch.rand(3, 24, 32)
    (tmp_path / "inputs").mkdir()
    for name, noise in (("a_noise", 0.1), ("b_noise", 0.2)):
        write_image(
            tmp_path / "inputs" / f"{name}.png", (clean + noise * torch.randn_like(clean)).clamp(0, 1)
        )
    write_image(tmp_path / "clean.png", clean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        script.main(
            [str(tmp_path / "model"), str(tmp_path / "inputs"), "--clean", str(tmp_path / "clean.png")]
        )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].count("vs fp32 dB") == 4
    assert lines[2].startswith("| a_noise |") and lines[3].startswith("| b_noise |")
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        base = float(cells[1])
        for cell in cells[2:]:
            psnr, diff, close, largest = (float(v) for v in re.findall(r"[-+]?\d+\.\d+", cell))
            assert diff == pytest.approx(psnr - base, abs=2e-3)
            assert 20 < close < 120 and 0 < largest < 0.2  # bf16 is near fp32, and not equal to it


def test_needs_inputs_or_casts() -> None:
    with pytest.raises(SystemExit):
        _load().main([])
