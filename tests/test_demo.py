"""``allinone-ir demo``: the pipeline, its outputs, its refusal to overwrite, and its honest summary."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from allinone_ir.cli import main
from allinone_ir.demo import (
    COLOUR_TOLERANCE,
    DEMO_DEGRADATIONS,
    DemoResult,
    check_dependencies,
    make_grid,
    mean_rgb,
    render_grid,
    run_demo,
    summary_lines,
    tone_variants,
    verdicts,
)
from allinone_ir.errors import MissingDependencyError
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
    for d, c in data["mean_rgb"].items():
        m = data["metrics"][d]
        assert set(c) == {"clean", "degraded", "restored"} and all(len(v) == 3 for v in c.values())
        assert all(0.0 <= v <= 255.0 for v in c["clean"] + c["restored"])
        assert m["ssim_change"] == pytest.approx(m["ssim_out"] - m["ssim_in"], abs=1e-3)
        worst = max(abs(a - b) for a, b in zip(c["restored"], c["clean"]))
        assert m["colour_error"] == pytest.approx(worst, abs=0.02)
    assert data["colour_tolerance"] == COLOUR_TOLERANCE == 6.0
    table = (out / "metrics.md").read_text()
    assert all(f"| {d} |" in table for d in DEMO_DEGRADATIONS)
    assert "SSIM change" in table and "mean RGB restored" in table
    # grid: labelled, 4 rows of 64x96 corners, 3 columns (clean | degraded | restored) and captions
    grid = read_image(out / "grid.png")
    assert grid.shape[0] == 3 and grid.shape[1] > 4 * (64 + 3 * 18) and grid.shape[2] > 3 * 96 + 40
    degraded = read_image(smoke_run.files["input_haze"])
    assert smoke_run.colours["haze"]["degraded"] == pytest.approx(mean_rgb(degraded), abs=0.51)
    inputs = sorted(p.name for p in (out / "inputs").iterdir())
    assert inputs == sorted(f"chelsea_{d}.png" for d in DEMO_DEGRADATIONS)
    # the degraded corner written to inputs/ is pasted unscaled in the grid (row 'noise', column 'degraded')
    noisy = read_image(out / "inputs" / "chelsea_noise.png")
    assert _find(grid, noisy)


def _find(big: torch.Tensor, small: torch.Tensor) -> bool:
    """Whether ``small`` appears exactly (8-bit) somewhere in ``big``."""
    b, s = (big * 255).round(), (small * 255).round()
    h, w = s.shape[1:]
    for y in range(big.shape[1] - h + 1):
        for x in torch.nonzero((b[:, y, : big.shape[2] - w + 1] == s[:, 0, :1]).all(0)).flatten().tolist():
            if torch.equal(b[:, y : y + h, x : x + w], s):
                return True
    return False


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


def _result(
    metrics: dict[str, dict[str, float]], colours: dict | None = None, curves: bool = False
) -> DemoResult:
    files = {"model": Path("out/model"), "grid": Path("out/grid.png")}
    if curves:
        files["curves"] = Path("out/curves.png")
    return DemoResult(Path("out"), metrics, 100, 60.0, 70.0, "promptir", 1, files, colours or {})


def _m(psnr_in: float, psnr_out: float, ssim_in: float, ssim_out: float, colour_error: float = 0.0) -> dict:
    return dict(psnr_in=psnr_in, psnr_out=psnr_out, ssim_in=ssim_in, ssim_out=ssim_out,
                gain_db=psnr_out - psnr_in, ssim_change=ssim_out - ssim_in, colour_error=colour_error)  # fmt: skip


def test_summary_is_honest_about_small_gains_and_ssim_drops() -> None:
    metrics = {
        "noise": _m(20.0, 27.5, 0.5, 0.8),
        "rain": _m(22.0, 22.4, 0.7, 0.7),
        "haze": _m(12.0, 20.0, 0.768, 0.821, colour_error=18.0),
        "snow": _m(21.19, 22.5, 0.839, 0.829),  # the case: +1.3 dB, yet SSIM fell
    }
    colours = {
        "haze": {
            "clean": (153.0, 118.0, 95.0),
            "degraded": (190.0, 170.0, 157.0),
            "restored": (156.0, 100.0, 73.0),
        }
    }
    lines = summary_lines(_result(metrics, colours), "chelsea")
    text = "\n".join(lines)
    assert "  noise  PSNR  20.00 ->  27.50 dB (+7.50)   SSIM 0.500 -> 0.800 (+0.300)" in lines
    assert "  snow   PSNR  21.19 ->  22.50 dB (+1.31)   SSIM 0.839 -> 0.829 (-0.010)" in lines
    assert "  note: rain: only a small PSNR gain (+0.40 dB)" in lines
    assert "  note: snow: SSIM dropped 0.839 -> 0.829" in lines
    assert "  note: haze: colour cast (mean colour off by 18.0 levels)" in lines
    assert "after 100 updates this small network has not learnt these yet" in text
    assert (
        "haze   restored  156/100/73  clean  153/118/95  (degraded 190/170/157)  largest difference 18.0: COLOUR CAST"
        in text
    )
    assert "noise: " not in text.split("note:", 1)[1]  # no note for a clear gain
    assert "every degradation" not in text
    assert "  improved (PSNR +1 dB or more and SSIM not lower): 2 of 4 (noise, haze); not rain, snow" in lines
    assert "  mean colour kept (within 6 levels per channel): 3 of 4 (noise, rain, snow); not haze" in lines
    assert "no loss curve: it needs matplotlib: pip install 'allinone-ir[train]'" in text


def test_summary_claims_success_only_when_true() -> None:
    good = {"noise": _m(20.0, 27.5, 0.5, 0.8, 2.0), "haze": _m(12.0, 20.0, 0.7, 0.9, COLOUR_TOLERANCE)}
    colours = {d: {"clean": (10.0, 20.0, 30.0), "degraded": (0.0, 0.0, 0.0), "restored": (12.0, 20.0, 30.0)}
               for d in good}  # fmt: skip
    text = "\n".join(summary_lines(_result(good, colours, curves=True), "chelsea"))
    assert "every degradation gained at least 1 dB PSNR, kept or raised its SSIM and kept its colour" in text
    assert "note:" not in text and "COLOUR CAST" not in text and text.count(": kept") == 2
    assert "curves.png    training loss" in text
    worse = dict(good, snow=_m(21.0, 20.0, 0.8, 0.7))
    text = "\n".join(summary_lines(_result(worse), "chelsea"))
    assert "note: snow: PSNR worse than the input (-1.00 dB); SSIM dropped 0.800 -> 0.700" in text
    assert "every degradation" not in text and "2 of 3 (noise, haze); not snow" in text
    assert "mean colour kept (within 6 levels per channel): 3 of 3 (noise, haze, snow)\n" in text + "\n"


def test_verdicts_thresholds() -> None:
    v = verdicts({
        "a": _m(20.0, 21.0, 0.5, 0.5),  # exactly +1 dB, SSIM unchanged: improved
        "b": _m(20.0, 20.99, 0.5, 0.6),
        "c": _m(20.0, 25.0, 0.5, 0.4999),
        "d": _m(20.0, 25.0, 0.5, 0.6, colour_error=6.01),
    })  # fmt: skip
    assert v == {
        "a": [],
        "b": ["only a small PSNR gain (+0.99 dB)"],
        "c": ["SSIM dropped 0.500 -> 0.500"],
        "d": ["colour cast (mean colour off by 6.0 levels)"],
    }


def test_mean_rgb() -> None:
    img = torch.zeros(3, 2, 2)
    img[0] = 1.0
    img[1, 0] = 0.5
    img[2] = 2.0  # clamped, as when saved
    assert mean_rgb(img) == pytest.approx((255.0, 63.75, 255.0))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        mean_rgb(torch.zeros(1, 3, 2, 2))


def test_render_grid_labels_and_placement() -> None:
    a = torch.zeros(3, 20, 30)
    a[0] = 1.0  # red
    b = torch.zeros(3, 20, 30)
    b[2] = 1.0  # blue
    fig = render_grid(
        [[a, b], [b, a]], row_names=["noise", "haze"], column_titles=["clean", "restored"],
        captions=[[["x"], [("PSNR 1.00 dB", "#b00000")]], [[], []]], title="demo", pad=6, font_size=12,
    )  # fmt: skip
    assert fig.shape[0] == 3 and 0.0 <= float(fig.min()) and float(fig.max()) <= 1.0

    def cells(colour: int) -> int:  # pure red or pure blue 20x30 blocks
        mask = (fig[colour] == 1) & (fig.sum(0) == 1)
        return int(mask.sum())

    assert cells(0) == cells(2) == 2 * 20 * 30
    red = torch.nonzero((fig[0] == 1) & (fig.sum(0) == 1))
    top, left = red.min(0).values.tolist()
    label_w = left - 6
    assert label_w > 30  # the row names sit left of the images
    text = fig.sum(0) < 2.5  # dark pixels: text (and the images, masked below)
    assert text[:top, :].any()  # title and column titles above the first row
    assert text[top : top + 20, :label_w].any()  # "noise" left of the first row
    # the red caption "PSNR 1.00 dB" under the blue image of row 0: reddish, not black, pixels
    below = fig[:, top + 20 : top + 40, :]
    assert bool(((below[0] > 0.5) & (below[1] < 0.3)).any())
    with pytest.raises(ValueError, match="row names"):
        render_grid([[a]], row_names=[], column_titles=["x"])
    with pytest.raises(ValueError, match="every row"):
        render_grid([[a, b], [a]], row_names=["1", "2"], column_titles=["x", "y"])
    with pytest.raises(ValueError, match="captions"):
        render_grid([[a]], row_names=["1"], column_titles=["x"], captions=[[["a"]], [["b"]]])


def test_check_dependencies_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    check_dependencies()  # all installed here
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # import PIL.Image now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'allinone-ir\[train\]'"):
        check_dependencies()
    assert main(["demo", "--smoke", "--out", "never_created"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "error: allinone-ir demo (reading the bundled photos, drawing grid.png) needs Pillow:"
    )
    assert not Path("never_created").exists()


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
    # PIP's own declared terms (no special case in the demo): the decoupled loss and the classifier
    history = json.loads((res.out_dir / "history.json").read_text())
    logged = [h for h in history if h.get("kind") == "train"]
    assert logged and all(h["loss_classifier"] > 0 and h["loss_ddl"] >= 0 for h in logged)
    assert {t.name for t in model.auxiliary_losses()} == {"ddl", "classifier"}


def test_tone_variants_lift_midtones_and_keep_black_and_white() -> None:
    x = torch.linspace(0, 1, 11).view(1, 1, 11).expand(3, 4, 11).contiguous()
    variants = tone_variants(x, 5, rng=0)
    assert len(variants) == 5 and variants[0] is x
    for v in variants[1:]:
        assert (
            v.shape == x.shape and torch.equal(v[..., 0], x[..., 0]) and torch.equal(v[..., -1], x[..., -1])
        )
        assert bool((v[..., 1:-1] > x[..., 1:-1]).all())  # brighter mid-tones
        assert torch.allclose(v[0], v[1], atol=1e-6) and torch.allclose(v[1], v[2], atol=1e-6)  # one curve
        gamma = math.log(float(v[0, 0, 5])) / math.log(0.5)
        assert 0.5 <= gamma < 1.0
    assert [torch.equal(a, b) for a, b in zip(tone_variants(x, 5, rng=0), variants)] == [True] * 5
    assert len(tone_variants(x, 1)) == 1
    with pytest.raises(ValueError, match="count"):
        tone_variants(x, 0)


def test_demo_offers_every_family_that_declares_a_small_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A family registered outside the package is offered by the demo (and its --model choices) with no edit."""
    from torch import nn

    from allinone_ir.demo import _build_model, demo_models
    from allinone_ir.models import RestorationModel, _registry, register_architecture, register_model

    monkeypatch.setattr(_registry, "_ARCHITECTURES", dict(_registry._ARCHITECTURES))
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    assert sorted(demo_models()) == ["pip", "promptir"]
    assert demo_models()["pip"][1]["degradations"] == ("noise", "rain", "haze", "snow")
    assert demo_models(smoke=True)["promptir"][1]["dim"] == 8

    @register_architecture
    class Plain(RestorationModel):
        demo_choices = {"plain": "plain_small"}

        def __init__(self, *, width: int = 4) -> None:
            super().__init__()
            self.in_channels = self.out_channels = 3
            self.body = nn.Conv2d(3, 3, 3, padding=1)
            self.width = width

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

        @classmethod
        def small_config(cls, *, degradations: tuple[str, ...] = (), smoke: bool = False) -> dict[str, int]:
            return {"width": 2 if smoke else len(degradations)}

    @register_model
    def plain_small(**kwargs: int) -> Plain:
        return Plain(**kwargs)

    assert demo_models()["plain"] == ("plain_small", {"width": 4})
    name, net = _build_model("plain", smoke=True)
    assert name == "plain_small" and isinstance(net, Plain) and net.config == {"width": 2}
    with pytest.raises(ValueError, match=r"one of \['pip', 'plain', 'promptir'\]"):
        _build_model("nope", smoke=False)
