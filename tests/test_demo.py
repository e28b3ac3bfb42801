"""``allinone-ir demo``: its outputs, the model it saves, its refusals and its honest summary."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from allinone_ir.cli import main
from allinone_ir.commands import demo
from allinone_ir.hub import from_pretrained
from allinone_ir.io import read_image

DEGRADATIONS = ["noise", "rain", "haze", "snow"]
ARGS = ["demo", "--smoke", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*ARGS, "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_demo_writes_every_output(smoke: tuple[Path, str]) -> None:
    out, text = smoke
    for name in ("grid.png", "metrics.md", "metrics.json", "curves.png", "model/model.safetensors"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert (data["steps"], data["model"], data["told_degradation"]) == (2, "promptir", False)
    assert list(data["metrics"]) == DEGRADATIONS
    for m in data["metrics"].values():
        assert m["gain_db"] == pytest.approx(m["psnr_out"] - m["psnr_in"], abs=2e-4)
        assert m["ssim_change"] == pytest.approx(m["ssim_out"] - m["ssim_in"], abs=2e-4)
        assert 5.0 < m["psnr_in"] < 60.0 and 0.0 < m["ssim_in"] <= 1.0
        rgb = m["mean_rgb"]
        assert m["colour_error"] == pytest.approx(
            max(abs(a - b) for a, b in zip(rgb["restored"], rgb["clean"])), abs=1e-3
        )
    table = (out / "metrics.md").read_text()
    assert all(f"| {d} |" in table for d in DEGRADATIONS) and "Blind: not told the degradation" in table
    assert "blind: not told the degradation" in text.splitlines()[0]
    assert sorted(p.name for p in (out / "inputs").iterdir()) == [
        f"chelsea_{d}.png" for d in sorted(DEGRADATIONS)
    ]
    noisy = read_image(out / "inputs" / "chelsea_noise.png")
    assert noisy.shape == (3, 64, 96)
    assert data["metrics"]["noise"]["mean_rgb"]["degraded"] == pytest.approx(
        (noisy.mean(dim=(1, 2)) * 255).tolist(), abs=0.51
    )
    grid = read_image(out / "grid.png")  # 4 labelled rows of 64 x 96 images with two caption lines each
    assert grid.shape[1] > 4 * (64 + 2 * 18) and grid.shape[2] > 3 * 96
    assert _find(grid, noisy)  # the degraded image is pasted unscaled (row noise, column degraded)


def _find(big: torch.Tensor, small: torch.Tensor) -> bool:
    """Whether ``small`` appears exactly (8-bit) somewhere in ``big``."""
    b, s = (big * 255).round(), (small * 255).round()
    h, w = s.shape[1:]
    for y in range(big.shape[1] - h + 1):
        for x in torch.nonzero((b[:, y, : big.shape[2] - w + 1] == s[:, 0, :1]).all(0)).flatten().tolist():
            if torch.equal(b[:, y : y + h, x : x + w], s):
                return True
    return False


def test_demo_model_is_usable_by_restore(smoke: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = smoke
    model = from_pretrained(out / "model").eval()
    x = read_image(out / "inputs" / "chelsea_rain.png")[None]
    with torch.no_grad():
        assert model(x).shape == x.shape
    args = ["restore", "--checkpoint", str(out / "model"), str(out / "inputs" / "chelsea_rain.png")]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert read_image(tmp_path / "chelsea_rain.png").shape == (3, 64, 96)


def test_demo_refuses_a_used_folder_and_overwrites_only_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    (tmp_path / "metrics.md").write_text("stale")
    assert main([*ARGS, "--out", str(tmp_path)]) == 2
    assert "is not empty; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.md", "mine.txt"]
    assert main([*ARGS, "--steps", "1", "--out", str(tmp_path), "--overwrite"]) == 0
    assert (tmp_path / "mine.txt").read_text() == "user data"
    assert "stale" not in (tmp_path / "metrics.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 1


def test_demo_overwrite_keeps_folders_of_the_users_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "project"
    assert main([*ARGS, "--steps", "1", "--out", str(out)]) == 0
    assert main([*ARGS, "--steps", "1", "--out", str(out), "--overwrite"]) == 0  # its own files: replaced
    (out / "inputs" / "my_photo.jpg").write_bytes(b"user data")
    (out / "checkpoints" / "best.pt").write_bytes(b"user data")
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"error: --overwrite would delete {out / 'inputs' / 'my_photo.jpg'} (2 such), which the demo did not "
        "write; choose another --out\n"
    )
    assert (out / "inputs" / "my_photo.jpg").read_bytes() == (out / "checkpoints" / "best.pt").read_bytes()
    assert (out / "model" / "model.safetensors").is_file()


def test_demo_refuses_a_device_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS[:-2], "--device", "bogus", "--out", str(tmp_path / "o")]) == 2
    out, err = capsys.readouterr()
    expected = "expected 'auto' or a device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got 'bogus'"
    assert (out, err) == ("", f"error: --device bogus: {expected}\n")
    assert not (tmp_path / "o").exists()


def test_demo_rejects_bad_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "error: --steps must be a positive integer, got 0\n"
    assert not (tmp_path / "o").exists()


def test_demo_tells_pip_the_degradation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--model", "pip", "--out", str(tmp_path)]) == 0
    assert "told each image's degradation" in capsys.readouterr().out.splitlines()[0]
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert (data["model"], data["told_degradation"]) == ("pip_restormer", True)
    model = from_pretrained(tmp_path / "model").eval()
    assert tuple(model.degradations) == tuple(DEGRADATIONS)
    history = json.loads((tmp_path / "history.json").read_text())  # PIP's own training terms were used
    assert all(h["loss_classifier"] > 0 for h in history if h.get("kind") == "train")


def _m(psnr_in: float, psnr_out: float, ssim_in: float, ssim_out: float, colour: float = 0.0) -> dict:
    return dict(psnr_in=psnr_in, psnr_out=psnr_out, ssim_in=ssim_in, ssim_out=ssim_out, colour_error=colour,
                gain_db=psnr_out - psnr_in, ssim_change=ssim_out - ssim_in)  # fmt: skip


def test_summary_names_every_failure_and_claims_success_only_when_true() -> None:
    lines = demo._summary({
        "noise": _m(20.0, 27.5, 0.5, 0.8),
        "rain": _m(22.0, 22.4, 0.7, 0.7),
        "haze": _m(12.0, 20.0, 0.768, 0.821, colour=18.0),
        "snow": _m(21.19, 22.5, 0.839, 0.829),
        "blur": _m(25.0, 24.0, 0.8, 0.9),
    })  # fmt: skip
    assert (
        lines[1]
        == "  noise  PSNR  20.00 ->  27.50 dB (+7.50)   SSIM 0.500 -> 0.800 (+0.300)   mean colour off by 0.0"
    )
    assert lines[6:] == [
        "  note: rain: PSNR gain under 1 dB (+0.40 dB)",
        "  note: haze: colour cast (mean colour off by 18.0 levels)",
        "  note: snow: SSIM dropped 0.839 -> 0.829",
        "  note: blur: PSNR worse than the input (-1.00 dB)",
        "restored 1 of 5 (PSNR +1 dB or more, SSIM not lower, mean colour within 6 levels); not rain, haze, snow, blur",
    ]
    good = demo._summary({"noise": _m(20.0, 21.0, 0.5, 0.5, colour=6.0)})  # the thresholds themselves pass
    assert good[-1].startswith("every degradation restored") and "note" not in "".join(good)


def test_demo_offers_every_family_that_declares_a_small_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch import nn

    from allinone_ir.models import RestorationModel, _registry, register_architecture, register_model

    monkeypatch.setattr(_registry, "_ARCHITECTURES", dict(_registry._ARCHITECTURES))
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    assert sorted(demo._choices()) == ["pip", "promptir"]
    assert demo._choices()["pip"][1]["degradations"] == tuple(DEGRADATIONS)

    @register_architecture
    class Plain(RestorationModel):
        demo_choices = {"plain": "plain_small"}

        def __init__(self, *, width: int = 4) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

        @classmethod
        def small_config(cls, *, degradations: tuple[str, ...] = (), smoke: bool = False) -> dict[str, int]:
            return {"width": 2 if smoke else len(degradations)}

    @register_model
    def plain_small(**kwargs: int) -> Plain:
        return Plain(**kwargs)

    assert demo._choices()["plain"] == ("plain_small", {"width": 4})
    assert demo._choices(smoke=True)["plain"] == ("plain_small", {"width": 2})
