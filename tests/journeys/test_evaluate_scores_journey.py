"""Journey: ``allinone-ir evaluate`` shows what restoration gained, reads noise_<sigma> folders, takes several name maps.

A user scores a network on degraded inputs (``--input``): beside the restored images' PSNR the table shows
the inputs' own PSNR and the gain. A PIP network is told each folder's degradation
(``--degradation-from-group``), the PromptIR test layout naming its noise folders ``noise_15``,
``noise_25`` and ``noise_50``. A folder whose files follow two naming schemes is paired with two
``--name-map`` options.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from allinone_ir import create_model, restore
from allinone_ir.data import synthesize
from allinone_ir.data.degradations import add_gaussian_noise
from allinone_ir.hub import from_pretrained, save_pretrained
from allinone_ir.io import read_image, write_image
from allinone_ir.metrics import PROMPTIR_PROTOCOL

from .conftest import assert_no_traceback

pytest.importorskip("safetensors")

ROW = re.compile(r"(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)\s+([\d.]+)")


def _rows(stdout: str) -> dict[str, list[float]]:
    return {m[1]: [float(v) for v in m.groups()[1:]] for m in map(ROW.fullmatch, stdout.splitlines()) if m}


def _tiny(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "nafnet":
        return create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    return create_model(
        "pip_restormer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
        prompt_dims=[8, 8, 16], prompt_sizes=[8, 4, 4], p2f_heads=2, classifier_widths=[8, 16], **extra,
    ).eval()  # fmt: skip


def _mean_psnr(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return sum(PROMPTIR_PROTOCOL.compute(a, b)["psnr"] for a, b in pairs) / len(pairs)


def test_input_scores_show_the_degraded_psnr_and_the_gain(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    pairs = {}
    for kind in ("rain", "snow"):
        for i in (1, 2):
            clean = torch.rand(3, 24, 24, generator=g)
            write_image(tmp_path / "clean" / f"{kind}-{i}.png", clean)
            write_image(tmp_path / "degraded" / f"{kind}-{i}.png", synthesize(clean, kind, rng=i))
            pairs.setdefault(kind, []).append((f"{kind}-{i}.png",))
    save_pretrained(_tiny("nafnet"), tmp_path / "model")
    result = run_cli("evaluate", "--input", "degraded", "--target", "clean", "--checkpoint", "model",
                     "--json", "scores.json")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert "input PSNR" in result.stdout and "gain dB" in result.stdout
    rows = _rows(result.stdout)
    assert sorted(rows) == ["average", "rain", "snow"]
    net = from_pretrained(tmp_path / "model")
    for kind in ("rain", "snow"):
        files = [
            (read_image(tmp_path / "degraded" / f), read_image(tmp_path / "clean" / f))
            for (f,) in pairs[kind]
        ]
        n, psnr, _, input_psnr, gain, _ = rows[kind]
        assert n == 2
        assert input_psnr == pytest.approx(_mean_psnr(files), abs=6e-4)
        assert psnr == pytest.approx(
            _mean_psnr([(restore(net, x, progress=False), y) for x, y in files]), abs=2e-3
        )
        assert gain == pytest.approx(psnr - input_psnr, abs=2e-3)
    report = json.loads((tmp_path / "scores.json").read_text())["results"]
    for r in report.values():
        assert r["gain_db"] == pytest.approx(r["psnr"] - r["input_psnr"], abs=1e-9)
        assert 0 < r["input_ssim"] <= 1


def test_noise_sigma_folders_name_pips_noise_prompt(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    for sigma in (15, 25, 50):
        clean = torch.rand(3, 24, 24, generator=g)
        write_image(tmp_path / "clean" / f"noise_{sigma}" / "1.png", clean)
        write_image(
            tmp_path / "input" / f"noise_{sigma}" / "1.png", add_gaussian_noise(clean, sigma, rng=sigma)
        )
    net = _tiny("pip", degradations=["noise", "rain"])
    with torch.no_grad():  # prompts far apart, prompt attention strong: the one used shows in the score
        for name, p in net.named_parameters():
            if name.endswith("detask_prompt_param"):
                p[1].add_(3.0)
            if name.endswith((".attn1", ".attn2", ".attn3", ".attn4")):  # the top-m weights, 0.2 at the start
                p.fill_(2.0)
    save_pretrained(net, tmp_path / "pip")
    result = run_cli("evaluate", "--input", "input", "--target", "clean", "--checkpoint", "pip",
                     "--degradation-from-group")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    rows = _rows(result.stdout)
    assert sorted(rows) == ["average", "noise_15", "noise_25", "noise_50"]
    net = from_pretrained(tmp_path / "pip")
    for sigma in (15, 25, 50):
        x = read_image(tmp_path / "input" / f"noise_{sigma}" / "1.png")
        y = read_image(tmp_path / "clean" / f"noise_{sigma}" / "1.png")
        told = PROMPTIR_PROTOCOL.compute(restore(net, x, degradation="noise", progress=False), y)["psnr"]
        other = PROMPTIR_PROTOCOL.compute(restore(net, x, degradation="rain", progress=False), y)["psnr"]
        assert rows[f"noise_{sigma}"][1] == pytest.approx(told, abs=2e-3)
        assert (
            abs(told - other) > 0.01
        )  # 5x the tolerance: the score is the noise prompt's, not the rain one's


def test_name_map_given_twice_uses_both(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    for pred, target in (("rain-1.png", "rain_clean-1.png"), ("snow_2.png", "snow_gt_2.png")):
        x = torch.rand(3, 16, 16, generator=g)
        write_image(tmp_path / "pred" / pred, x)
        write_image(tmp_path / "clean" / target, x)
    result = run_cli("evaluate", "--pred", "pred", "--target", "clean",
                     "--name-map", r"^(rain)-(\d+)", r"\1_clean-\2",
                     "--name-map", r"^(snow)_(\d+)", r"\1_gt_\2")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert "scored 2 image(s) of pred against clean" in result.stdout
    assert "have no prediction" not in result.stdout  # both targets were found


def test_predictions_scored_beside_their_degraded_inputs(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    pairs = []
    for kind in ("rain", "haze"):
        for i in (1, 2):
            clean = torch.rand(3, 24, 24, generator=g)
            degraded = synthesize(clean, kind, rng=i)
            restored = (0.5 * degraded + 0.5 * clean).clamp(0, 1)  # a prediction halfway to the target
            write_image(tmp_path / "clean" / f"{kind}-{i}.png", clean)
            write_image(tmp_path / "degraded" / f"{kind}-{i}.jpg", degraded)  # stems pair across types
            write_image(tmp_path / "pred" / f"{kind}-{i}.png", restored)
            pairs.append((kind, f"{kind}-{i}"))
    result = run_cli("evaluate", "--pred", "pred", "--target", "clean", "--degraded", "degraded",
                     "--json", "scores.json")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert "input PSNR" in result.stdout and "gain dB" in result.stdout
    rows = _rows(result.stdout)
    assert sorted(rows) == ["average", "haze", "rain"]
    for kind in ("rain", "haze"):
        stems = [s for k, s in pairs if k == kind]
        clean = [read_image(tmp_path / "clean" / f"{s}.png") for s in stems]
        inp = _mean_psnr([(read_image(tmp_path / "degraded" / f"{s}.jpg"), y) for s, y in zip(stems, clean)])
        out = _mean_psnr([(read_image(tmp_path / "pred" / f"{s}.png"), y) for s, y in zip(stems, clean)])
        n, psnr, _, input_psnr, gain, _ = rows[kind]
        assert n == 2 and psnr == pytest.approx(out, abs=6e-4) and input_psnr == pytest.approx(inp, abs=6e-4)
        assert gain == pytest.approx(psnr - input_psnr, abs=2e-3) and gain > 3
    report = json.loads((tmp_path / "scores.json").read_text())["results"]
    assert report["average"]["gain_db"] == pytest.approx(
        report["average"]["psnr"] - report["average"]["input_psnr"], abs=1e-9
    )
    # a prediction without its degraded input is named; --degraded needs --pred
    (tmp_path / "degraded" / "haze-2.jpg").unlink()
    result = run_cli("evaluate", "--pred", "pred", "--target", "clean", "--degraded", "degraded")
    assert_no_traceback(result)
    assert result.returncode != 0 and "1 prediction(s) have no degraded input" in result.stderr
    assert "haze-2.png" in result.stderr
