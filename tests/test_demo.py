"""``allinone-ir demo``: the pipeline, its outputs, its refusal to overwrite, and its honest summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from allinone_ir.cli import main
from allinone_ir.demo import DEMO_DEGRADATIONS, DemoResult, make_grid, run_demo, summary_lines
from allinone_ir.hub import from_pretrained
from allinone_ir.io import read_image


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    out = tmp_path_factory.mktemp("demo") / "out"
    return run_demo(out, steps=2, smoke=True, progress=False, device="cpu", log=lambda _s: None)


def test_demo_writes_every_output(smoke_run: DemoResult) -> None:
    out = smoke_run.out_dir
    assert smoke_run.steps == 2
    for name in ("grid.png", "metrics.md", "metrics.json", "model/model.safetensors", "model/config.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert list(data["metrics"]) == list(DEMO_DEGRADATIONS)
    for m in data["metrics"].values():
        assert m["gain_db"] == pytest.approx(m["psnr_out"] - m["psnr_in"], abs=1e-3)
        assert 5.0 < m["psnr_in"] < 60.0 and 0.0 < m["ssim_in"] <= 1.0
    table = (out / "metrics.md").read_text()
    assert all(f"| {d} |" in table for d in DEMO_DEGRADATIONS)
    # grid: 4 rows (degradations) x 3 columns (degraded | restored | clean) of 64x96 crops, 4 px gaps
    grid = read_image(out / "grid.png")
    assert tuple(grid.shape) == (3, 4 * 64 + 5 * 4, 3 * 96 + 4 * 4)
    inputs = sorted(p.name for p in (out / "inputs").iterdir())
    assert inputs == sorted(f"chelsea_{d}.png" for d in DEMO_DEGRADATIONS)


def test_demo_model_reloads_and_restores(smoke_run: DemoResult) -> None:
    model = from_pretrained(smoke_run.out_dir / "model").eval()
    assert sum(p.numel() for p in model.parameters()) == smoke_run.num_parameters
    x = read_image(smoke_run.out_dir / "inputs" / "chelsea_noise.png")[None]
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_demo_restore_command_uses_the_model(smoke_run: DemoResult, tmp_path: Path) -> None:
    out = smoke_run.out_dir
    code = main(["restore", "--checkpoint", str(out / "model"), str(out / "inputs" / "chelsea_rain.png"),
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    assert read_image(tmp_path / "chelsea_rain.png").shape == (3, 64, 96)


def test_demo_refuses_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        run_demo(tmp_path, steps=1, smoke=True, progress=False, log=lambda _s: None)
    assert main(["demo", "--smoke", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_demo_overwrite_keeps_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    (tmp_path / "metrics.md").write_text("stale")
    code = main(["demo", "--smoke", "--steps", "1", "--minutes", "0.1", "--no-progress", "--device", "cpu",
                 "--out", str(tmp_path), "--overwrite"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "mine.txt").read_text() == "user data"
    assert "stale" not in (tmp_path / "metrics.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 1


def test_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="minutes"):
        run_demo(tmp_path / "a", minutes=0, smoke=True)
    with pytest.raises(ValueError, match="holdout"):
        run_demo(tmp_path / "b", holdout="lena", smoke=True)
    with pytest.raises(ValueError, match="model"):
        run_demo(tmp_path / "c", model="unet", smoke=True, steps=1, log=lambda _s: None)


def test_summary_is_honest_about_small_gains() -> None:
    metrics = {
        "noise": dict(psnr_in=20.0, psnr_out=27.5, ssim_in=0.5, ssim_out=0.8, gain_db=7.5),
        "rain": dict(psnr_in=22.0, psnr_out=22.4, ssim_in=0.7, ssim_out=0.7, gain_db=0.4),
        "snow": dict(psnr_in=21.0, psnr_out=20.0, ssim_in=0.8, ssim_out=0.7, gain_db=-1.0),
    }
    res = DemoResult(Path("out"), metrics, 100, 60.0, 70.0, "promptir", 1, {"model": Path("out/model"),
                     "grid": Path("out/grid.png")})  # fmt: skip
    text = "\n".join(summary_lines(res, "chelsea"))
    assert "+7.50 dB" in text
    assert "rain: only a small gain (+0.40 dB)" in text
    assert "snow: worse than the input (-1.00 dB)" in text
    assert "noise: " not in text.split("note:", 1)[1]  # no note for a clear gain
    assert "no loss curve" in text  # no curves file recorded


def test_make_grid_layout_and_errors() -> None:
    a, b = torch.zeros(3, 2, 3), torch.ones(3, 4, 5)
    g = make_grid([[a, b], [b, a]], pad=1, value=0.5)
    assert g.shape == (3, 1 + 4 + 1 + 4 + 1, 1 + 5 + 1 + 5 + 1)
    assert torch.equal(g[:, 1:5, 7:12], torch.ones(3, 4, 5))  # top-right cell: b
    assert float(g[0, 0, 0]) == 0.5 and float(g[0, 3, 1]) == 0.5  # border, and the unfilled part of a's cell
    with pytest.raises(ValueError, match="every row"):
        make_grid([[a, b], [a]])
    with pytest.raises(ValueError, match="channels"):
        make_grid([[a, torch.zeros(1, 2, 3)]])


def test_demo_trains_pip_with_its_degradations(tmp_path: Path) -> None:
    res = run_demo(tmp_path / "pip", model="pip", steps=2, smoke=True, progress=False, device="cpu",
                   log=lambda _s: None)  # fmt: skip
    model = from_pretrained(res.out_dir / "model").eval()
    assert type(model).__name__ == "PIPRestormer" and res.model_name == "pip_restormer"
    assert tuple(model.degradations) == DEMO_DEGRADATIONS
    x = read_image(res.out_dir / "inputs" / "chelsea_rain.png")[None]
    with torch.no_grad():  # the demo trained the classifier too, so the network also runs blind
        assert model(x, degradation="rain").shape == model(x).shape == x.shape
