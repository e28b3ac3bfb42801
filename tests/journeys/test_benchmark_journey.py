"""Journey: ``allinone-ir benchmark``: check a test-set layout, then score a network on the three-task suite.

A user lays out CBSD68, Rain100L and SOTS as the PromptIR README says (here a few small images with
the official names), asks ``--check`` what is there, then runs the suite with ``--json`` and
``--save-images``; the numbers are those of the official recipe computed independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allinone_ir import create_model
from allinone_ir.hub import from_pretrained, save_pretrained
from tests.test_suites import _crop, make_root

from .conftest import assert_no_traceback

pytest.importorskip("safetensors")
skimage_metrics = pytest.importorskip("skimage.metrics")


def _psnr(pred: np.ndarray, clean: np.ndarray) -> float:
    """scikit-image PSNR on RGB floats in [0, 1], as the official compute_psnr_ssim."""
    return float(skimage_metrics.peak_signal_noise_ratio(clean, np.clip(pred, 0, 1), data_range=1))


def test_check_reports_partial_and_misnamed_layouts(run_cli, tmp_path: Path) -> None:
    make_root(tmp_path / "test", sots_bad=True, rain_download_names=True)
    result = run_cli("benchmark", "--suite", "three-task", "--root", ".", "--check")
    assert_no_traceback(result)
    assert result.returncode == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["denoise_15", "partial", "3", "/", "68"]
    assert "misnamed: rain-001.png: rename the pair to the same name in input/ and target/" in result.stdout
    assert "misnamed: 0002.png: SOTS hazy images are named <id>_<A>_<beta>" in result.stdout
    assert lines[-1] == "4 of 5 task(s) can run; see the lines above"
    # no network is needed (nor loaded) to check
    empty = run_cli("benchmark", "--suite", "five-task", "--root", "nowhere", "--check")
    assert empty.returncode == 2 and empty.stderr.strip().startswith(
        "error: benchmark root nowhere is not a folder"
    )


def test_run_three_task_with_json_matches_the_official_recipe(run_cli, tmp_path: Path) -> None:
    root = make_root(tmp_path / "test")
    torch.manual_seed(0)
    net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    save_pretrained(net, tmp_path / "model")
    result = run_cli("benchmark", "--suite", "three-task", "--root", "test", "--checkpoint", "model",
                     "--json", "scores.json", "--save-images", "out", "--quiet", "--compare")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line.split()[0] for line in lines[2:8]]
    assert rows == [
        "denoise_15",
        "denoise_25",
        "denoise_50",
        "derain",
        "dehaze",
        "average",
    ]  # the paper's order
    # --compare: the published rows, with measured minus published in brackets
    assert lines[8] == "published (PSNR/SSIM; in brackets: measured minus published, dB):"
    promptir = next(line for line in lines if line.split()[:1] == ["PromptIR"])
    assert "derain 36.37/0.972 [" in promptir and "average 32.06/0.913 [" in promptir
    assert promptir.endswith("(PromptIR paper, Table 1 (as in PIP's Table 1))")
    doc = json.loads((tmp_path / "scores.json").read_text())
    compared = {row["method"]: row for row in doc["compare"]}
    assert list(compared)[-3:] == ["PIP-Restormer", "DFPIR", "BaryIR"]
    assert compared["PromptIR"]["tasks"]["derain"]["diff_psnr"] == pytest.approx(
        doc["derain"]["psnr"] - 36.37
    )
    assert compared["PromptIR"]["average"]["diff_psnr"] == pytest.approx(doc["average"]["psnr"] - 32.06)
    assert (
        doc["suite"] == "three-task"
        and doc["protocol"] == "promptir"
        and doc["weights"] == "model"
        and doc["dtype"] == "fp32"
    )
    net = from_pretrained(tmp_path / "model").eval()

    def run_net(arr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            return net(x)[0].permute(1, 2, 0).double().numpy()

    names = sorted(p.stem for p in (root / "denoise/bsd68").iterdir())
    cleans = [_crop(np.array(Image.open(root / "denoise/bsd68" / f"{n}.png"))) for n in names]
    rng = np.random.RandomState(0)  # np.random.seed(0) once, then sigma 15, 25, 50
    for sigma in (15, 25, 50):
        noisy = [np.clip(c + rng.randn(*c.shape) * sigma, 0, 255).astype(np.uint8) for c in cleans]
        entry = doc[f"denoise_{sigma}"]
        assert entry["count"] == 3
        want = np.mean([_psnr(run_net(n), c / 255) for n, c in zip(noisy, cleans)])
        assert entry["psnr"] == pytest.approx(want, abs=1e-4)
        assert entry["input_psnr"] == pytest.approx(
            np.mean([_psnr(n / 255, c / 255) for n, c in zip(noisy, cleans)]), abs=1e-6
        )
        # the saved 8-bit outputs score the same up to their rounding
        saved = [
            np.array(Image.open(tmp_path / "out" / f"denoise_{sigma}" / f"{n}.png")) / 255 for n in names
        ]
        assert entry["psnr"] == pytest.approx(
            np.mean([_psnr(s, c / 255) for s, c in zip(saved, cleans)]), abs=0.02
        )
    hazy = [_crop(np.array(Image.open(root / "dehaze/input" / f"{i:04d}_0.8_0.2.png"))) for i in (1, 2)]
    clean = [_crop(np.array(Image.open(root / "dehaze/target" / f"{i:04d}.png"))) / 255 for i in (1, 2)]
    assert doc["dehaze"]["psnr"] == pytest.approx(
        np.mean([_psnr(run_net(h), c) for h, c in zip(hazy, clean)]), abs=1e-4
    )
    keys = ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"]
    assert doc["average"]["psnr"] == pytest.approx(np.mean([doc[k]["psnr"] for k in keys]))
    assert set(doc["derain"]) >= {"psnr", "ssim", "count", "input_psnr", "input_ssim"}
    # the JSON is a new file: a second run refuses to replace it
    again = run_cli(
        "benchmark",
        "--suite",
        "three-task",
        "--root",
        "test",
        "--checkpoint",
        "model",
        "--json",
        "scores.json",
    )
    assert again.returncode == 2 and "scores.json exists; not overwritten" in again.stderr


def test_restormer_deraining_in_its_own_layout_scored_on_the_y_channel(run_cli, tmp_path: Path) -> None:
    from tests.test_suites import _matlab_scores, _rand

    sets = tmp_path / "Datasets/test/Rain100H"
    for i, shape in enumerate(((35, 40), (28, 30))):
        clean = _rand(60 + i, *shape)
        rainy = np.clip(clean.astype(int) + 50, 0, 255).astype(np.uint8)
        for sub, arr in (("input", rainy), ("target", clean)):
            (sets / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(sets / sub / f"{i + 1}.png")
    check = run_cli("benchmark", "--suite", "restormer-deraining", "--root", "Datasets", "--check")
    rows = [line.split()[:5] for line in check.stdout.splitlines() if not line.startswith(" ")]
    assert check.returncode == 1 and rows[1] == ["rain100h", "partial", "2", "/", "100"]
    assert rows[0][:2] == ["test100", "absent"] and rows[-1][:3] == ["1", "of", "5"]
    torch.manual_seed(0)
    net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    save_pretrained(net, tmp_path / "model")
    result = run_cli("benchmark", "--suite", "restormer-deraining", "--root", "Datasets", "--checkpoint", "model",
                     "--json", "derain.json", "--save-images", "out", "--quiet", "--compare")  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("suite: restormer-deraining  protocol: matlab_y (Y of rgb2ycbcr")
    assert (
        "Restormer      rain100h -  average 33.96/0.935  (Restormer paper, Table 1)" in result.stdout
    )  # one set of five: no difference
    header, task_row, average_row = result.stdout.splitlines()[1:4]
    end = header.index("PSNR") + len("PSNR")  # a wide "average (1 of 5)" label keeps the columns aligned
    assert average_row.startswith("average (1 of 5)") and task_row.startswith("rain100h")
    assert float(task_row[end - 8 : end]) == float(average_row[end - 8 : end]) == float(task_row.split()[2])
    doc = json.loads((tmp_path / "derain.json").read_text())
    assert doc["protocol"] == "matlab_y" and list(doc["skipped"]) == [
        "test100",
        "rain100l",
        "test2800",
        "test1200",
    ]
    outs = [np.array(Image.open(tmp_path / "out/rain100h" / f"{i}.png")) for i in (1, 2)]
    gts = [np.array(Image.open(sets / "target" / f"{i}.png")) for i in (1, 2)]
    ins = [np.array(Image.open(sets / "input" / f"{i}.png")) for i in (1, 2)]
    want = [_matlab_scores(o, g) for o, g in zip(outs, gts)]  # the saved 8-bit outputs are what was scored
    assert doc["rain100h"]["psnr"] == pytest.approx(np.mean([w[0] for w in want]), abs=1e-9)
    assert doc["rain100h"]["ssim"] == pytest.approx(np.mean([w[1] for w in want]), abs=1e-9)
    assert doc["rain100h"]["input_psnr"] == pytest.approx(
        np.mean([_matlab_scores(a, g)[0] for a, g in zip(ins, gts)])
    )
