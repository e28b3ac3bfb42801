"""CLI: restore (files, folders, globs, npz), evaluate, info, convert."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from allinone_ir import create_model, restore
from allinone_ir.cli import main
from allinone_ir.hub import from_pretrained, save_pretrained
from allinone_ir.io import read_image, read_image_array, write_image

from .tiny_configs import TINY

pytest.importorskip("PIL")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("nafnet", **TINY["nafnet"]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_pretrained(net, tmp_path_factory.mktemp("m") / "tiny_nafnet")


def _images(folder, names, size=(20, 28)):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        write_image(folder / n, (rng.random((*size, 3)) * 255).astype(np.uint8))
    return [folder / n for n in names]


def test_restore_folder_glob_and_npz(tmp_path, model_dir) -> None:
    a = _images(tmp_path / "in", ["a.png", "b.png"])
    c = _images(tmp_path / "more", ["c.jpg"])
    out, npz = tmp_path / "out", tmp_path / "pred.npz"
    args = ["restore", str(tmp_path / "in"), str(tmp_path / "more" / "*.jpg"), "--model", str(model_dir)]
    assert main([*args, "--out", str(out), "--npz", str(npz), "--layout", "chw", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    net = from_pretrained(model_dir)
    expected = restore(net, a[0])
    np.testing.assert_array_equal(read_image_array(out / "a.png"), expected)
    with np.load(npz) as z:
        assert sorted(z.files) == ["a.png", "b.png", "c.jpg"]
        assert z["a.png"].dtype == np.uint8 and z["a.png"].shape == (3, 20, 28)
        np.testing.assert_array_equal(z["a.png"], expected.transpose(2, 0, 1))
        np.testing.assert_array_equal(z["c.jpg"].transpose(1, 2, 0), restore(net, c[0]))
    # hwc layout, tiled + TTA: still the restore() result
    npz2 = tmp_path / "hwc.npz"
    assert main(["restore", str(a[0]), "--model", str(model_dir), "--npz", str(npz2), "--tile", "16",
                 "--overlap", "8", "--tta", "--quiet"]) == 0  # fmt: skip
    with np.load(npz2) as z:
        np.testing.assert_array_equal(z["a.png"], restore(net, a[0], tile=16, overlap=8, tta=True))


def test_restore_never_overwrites(tmp_path, model_dir, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"])[0]
    before = src.read_bytes()
    assert main(["restore", str(src), "--model", str(model_dir), "--out", str(tmp_path / "in")]) == 2
    assert "input" in capsys.readouterr().err
    assert src.read_bytes() == before
    out = tmp_path / "out"
    assert main(["restore", str(src), "--model", str(model_dir), "--out", str(out), "--quiet"]) == 0
    assert main(["restore", str(src), "--model", str(model_dir), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["restore", str(src), "--model", str(model_dir), "--out", str(out), "--overwrite", "--quiet"])
        == 0
    )
    assert (
        main(["restore", str(tmp_path / "nothing*.png"), "--model", str(model_dir), "--out", str(out)]) == 2
    )
    assert "no images" in capsys.readouterr().err
    assert main(["restore", str(src), "--model", str(model_dir)]) == 2  # neither --out nor --npz


def test_evaluate_per_degradation(tmp_path, capsys) -> None:
    clean = tmp_path / "clean"
    for deg in ("rain", "haze"):
        _images(clean / deg, ["1.png", "2.png"], size=(24, 24))
    pred = tmp_path / "pred"
    for deg, noise in (("rain", 0.02), ("haze", 0.1)):
        for name in ("1.png", "2.png"):
            x = read_image(clean / deg / name)
            write_image(pred / deg / name, (x + noise * torch.randn_like(x)).clamp(0, 1))
    report = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "rain" in text and "haze" in text and "average" in text
    res = json.loads(report.read_text())
    assert res["protocol"] == "promptir"
    r = res["results"]
    assert r["rain"]["n"] == 2 and r["rain"]["psnr"] > r["haze"]["psnr"] + 10  # 0.02 vs 0.1 noise: ~14 dB
    assert r["average"]["psnr"] == pytest.approx((r["rain"]["psnr"] + r["haze"]["psnr"]) / 2)
    from allinone_ir.metrics import PROMPTIR_PROTOCOL

    one = PROMPTIR_PROTOCOL.compute(read_image(pred / "rain" / "1.png"), read_image(clean / "rain" / "1.png"))
    two = PROMPTIR_PROTOCOL.compute(read_image(pred / "rain" / "2.png"), read_image(clean / "rain" / "2.png"))
    assert r["rain"]["psnr"] == pytest.approx((one["psnr"] + two["psnr"]) / 2)
    assert r["rain"]["ssim"] == pytest.approx((one["ssim"] + two["ssim"]) / 2)
    # a target without prediction: the others are scored and the count is said; --all-targets refuses
    (pred / "haze" / "2.png").unlink()
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "scored 3 image(s)" in out and "1 target image(s) have no prediction" in out
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), "--all-targets"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "haze/2.png" in err and "no prediction" in err
    # a prediction without target is an error naming it
    write_image(pred / "haze" / "3.png", torch.zeros(3, 24, 24))
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 4 image(s)") and "haze/3.png" in err and "--skip-unpaired" in err


def test_evaluate_restores_input(tmp_path, model_dir, capsys) -> None:
    clean = _images(tmp_path / "clean", ["x.png"], size=(16, 16))
    _images(tmp_path / "noisy", ["x.png"], size=(16, 16))
    assert main(["evaluate", "--input", str(tmp_path / "noisy"), "--target", str(tmp_path / "clean"),
                 "--model", str(model_dir), "--protocol", "basicsr"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    from allinone_ir.metrics import BASICSR_PROTOCOL

    net = from_pretrained(model_dir)
    ref = BASICSR_PROTOCOL.compute(
        restore(net, read_image(tmp_path / "noisy" / "x.png")), read_image(clean[0])
    )
    assert f"{ref['psnr']:.3f}" in out


def test_evaluate_degradation_from_folder_for_pip(tmp_path, model_dir, capsys) -> None:
    torch.manual_seed(0)
    pip = create_model("pip_restormer", **TINY["pip_restormer"]).eval()
    with torch.no_grad():
        for p in pip.parameters():
            p.add_(0.02 * torch.randn_like(p))  # small: large weights saturate the output to 0/1
    pip_dir = save_pretrained(pip, tmp_path / "pip")
    for deg in ("rain", "haze"):
        _images(tmp_path / "clean" / deg, ["x.png"], size=(16, 16))
        _images(tmp_path / "noisy" / deg, ["x.png"], size=(16, 16))
    args = ["evaluate", "--input", str(tmp_path / "noisy"), "--target", str(tmp_path / "clean"),
            "--model", str(pip_dir)]  # fmt: skip
    blind, told = tmp_path / "blind.json", tmp_path / "told.json"
    assert main([*args, "--json", str(blind)]) == 0
    assert main([*args, "--degradation-from-folder", "--json", str(told)]) == 0
    from allinone_ir.metrics import PROMPTIR_PROTOCOL

    net = from_pretrained(pip_dir)
    x, y = (
        read_image(tmp_path / "noisy" / "haze" / "x.png"),
        read_image(tmp_path / "clean" / "haze" / "x.png"),
    )
    expected = PROMPTIR_PROTOCOL.compute(restore(net, x, degradation="haze"), y)["psnr"]
    told_r = json.loads(told.read_text())["results"]
    blind_r = json.loads(blind.read_text())["results"]
    assert told_r["haze"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert told_r["haze"]["psnr"] != pytest.approx(blind_r["haze"]["psnr"], abs=1e-6)
    capsys.readouterr()
    # a network without degradation control refuses the option
    assert main([*args[:-1], str(model_dir), "--degradation-from-folder"]) == 2
    assert "PIP" in capsys.readouterr().err


def test_info_counts(model_dir, capsys) -> None:
    assert main(["info", "--model", str(model_dir), "--size", "32", "48", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    net = from_pretrained(model_dir)
    assert f"{sum(p.numel() for p in net.parameters()):,d}" in out
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.rand(1, 3, 32, 48))
    assert f"{fc.get_total_flops() / 1e9:.2f} G at 1x3x32x48" in out
    assert "latency" in out


def test_info_full_promptir_flops(capsys) -> None:
    """The official PromptIR: 35,376,967 parameters, about 345 GFLOP at 256x256 (ARCHITECTURE_FACTS).

    Our fused attention/projection counts slightly fewer FLOPs for the same function (331 G with torch 2.13).
    """
    assert main(["info", "--model", "promptir", "--runs", "0"]) == 0
    out = capsys.readouterr().out
    assert "35,376,967" in out
    gflops = float(out.split("FLOPs")[1].split("G at")[0])
    assert 320 < gflops < 360


def test_convert_cli(tmp_path, capsys) -> None:
    net = create_model("promptir", **TINY["promptir"]).eval()
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "epoch=3.ckpt")
    dst = tmp_path / "promptir.safetensors"
    assert main(["convert", str(tmp_path / "epoch=3.ckpt"), str(dst)]) == 0
    assert "PromptIR" in capsys.readouterr().out
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(dst)(x), net(x), rtol=0, atol=0)
    assert main(["convert", str(tmp_path / "epoch=3.ckpt"), str(dst)]) == 2
    assert "overwrite" in capsys.readouterr().err
