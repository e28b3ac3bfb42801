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
    # --out naming an existing file (an image, not a folder): refused by name, the file kept
    assert main(["restore", str(src), "--model", str(model_dir), "--out", str(out / "a.png")]) == 2
    assert f"--out {out / 'a.png'} is a file; give a folder" in capsys.readouterr().err


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
    with pytest.raises(SystemExit):
        main(["info", "--model", str(model_dir), "--size", "0"])
    assert "argument --size: expected an integer >= 1, got '0'" in capsys.readouterr().err


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


# --- restore keeps what the user gave: bit depth, channels, alpha; permissions; bad files ---------------


def test_restore_keeps_depth_channels_and_alpha(tmp_path, model_dir) -> None:
    from allinone_ir.io import array_to_tensor, tensor_to_array

    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    gray8 = rng.integers(0, 256, (12, 14), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (12, 14), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (12, 14, 3), dtype=np.uint16)
    rgba8 = rng.integers(0, 256, (12, 14, 4), dtype=np.uint8)
    for name, arr in (("g8.png", gray8), ("g16.png", gray16), ("c16.png", rgb16), ("a8.png", rgba8)):
        write_image(src / name, arr)
    out, npz = tmp_path / "out", tmp_path / "p.npz"
    assert (
        main(
            ["restore", str(src), "--model", str(model_dir), "--out", str(out), "--npz", str(npz), "--quiet"]
        )
        == 0
    )
    net = from_pretrained(model_dir)

    got = read_image_array(out / "g16.png", keep_channels=True)
    assert got.dtype == np.uint16 and got.shape == (12, 14, 1)
    y = restore(net, array_to_tensor(gray16).expand(3, -1, -1).contiguous())
    luma = 0.299 * y[0] + 0.587 * y[1] + 0.114 * y[2]
    np.testing.assert_array_equal(got[:, :, 0], tensor_to_array(luma[None], np.uint16)[:, :, 0])
    assert len(np.unique(got)) > 100  # really 16-bit levels, not 8-bit ones scaled up

    got = read_image_array(out / "g8.png", keep_channels=True)
    assert got.dtype == np.uint8 and got.shape == (12, 14, 1)
    assert PIL_mode(out / "g8.png") == "L" and PIL_mode(out / "g16.png") == "I;16"

    got = read_image_array(out / "c16.png", keep_channels=True)
    assert got.dtype == np.uint16 and got.shape == (12, 14, 3)
    np.testing.assert_array_equal(got, tensor_to_array(restore(net, array_to_tensor(rgb16)), np.uint16))

    got = read_image_array(out / "a8.png", keep_channels=True)
    assert got.shape == (12, 14, 4)
    np.testing.assert_array_equal(got[:, :, 3], rgba8[:, :, 3])  # alpha copied back untouched
    np.testing.assert_array_equal(got[:, :, :3], restore(net, rgba8[:, :, :3]))

    with np.load(npz) as z:  # the course format: the network's uint8 RGB output
        assert sorted(z.files) == ["a8.png", "c16.png", "g16.png", "g8.png"]
        assert all(z[k].dtype == np.uint8 and z[k].shape == (12, 14, 3) for k in z.files)
        np.testing.assert_array_equal(z["c16.png"], tensor_to_array(restore(net, array_to_tensor(rgb16))))


def PIL_mode(path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return im.mode


def test_restore_npz_dtype_and_permissions(tmp_path, model_dir) -> None:
    import os
    import stat

    from allinone_ir.io import tensor_to_array

    src = _images(tmp_path / "in", ["a.png"])[0]
    old = os.umask(0o022)
    try:
        assert main(["restore", str(src), "--model", str(model_dir), "--out", str(tmp_path / "out"),
                     "--npz", str(tmp_path / "f.npz"), "--npz-dtype", "float32", "--layout", "chw"]) == 0  # fmt: skip
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "a.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "f.npz").stat().st_mode) == 0o644
    y = restore(from_pretrained(model_dir), read_image(src))
    with np.load(tmp_path / "f.npz") as z:
        assert z["a.png"].dtype == np.float32 and z["a.png"].shape == (3, 20, 28)
        np.testing.assert_allclose(z["a.png"], tensor_to_array(y, np.float32).transpose(2, 0, 1), atol=1e-6)


def test_restore_skips_unreadable_files(tmp_path, model_dir, capsys) -> None:
    src = tmp_path / "in"
    _images(src, ["a.png", "c.png"])
    (src / "b.png").write_text("not a picture")
    (src / "d.png").write_bytes(b"")
    out, npz = tmp_path / "out", tmp_path / "pred.npz"
    assert main(["restore", str(src), "--model", str(model_dir), "--out", str(out), "--npz", str(npz)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"skipped {src / 'b.png'}: not an image file (or a format Pillow cannot read)" in err
    assert f"skipped {src / 'd.png'}: empty file (0 bytes)" in err
    assert err[-1] == f"restored 2 of 4 image(s) -> {out}, {npz}; skipped 2"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    with np.load(npz) as z:
        assert sorted(z.files) == ["a.png", "c.png"]
    # nothing readable: nothing written, status 1
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"")
    assert (
        main(["restore", str(only_bad), "--model", str(model_dir), "--npz", str(tmp_path / "none.npz")]) == 1
    )
    assert capsys.readouterr().err.splitlines()[-1] == "restored 0 of 1 image(s) (nothing written); skipped 1"
    assert not (tmp_path / "none.npz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_restore_refuses_random_weights(tmp_path, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"], size=(8, 8))[0]
    out = tmp_path / "out"
    assert main(["restore", str(src), "--model", "promptir", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "random weights" in err
        and "--checkpoint" in err
        and "--random-weights" in err
    )
    assert not out.exists()
    tiny = json.dumps({"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]})
    assert main(["restore", str(src), "--model", "nafnet", "--model-args", tiny, "--random-weights",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "warning: nafnet has random weights" in capsys.readouterr().err
    assert (out / "a.png").is_file()
    assert main(["restore", str(src), "--model", "nafnet", "--model-args", "{bad json", "--random-weights",
                 "--out", str(tmp_path / "o2")]) == 2  # fmt: skip
    assert "--model-args is not valid JSON" in capsys.readouterr().err
    assert main(["restore", str(src), "--model", "no_such_net", "--random-weights",
                 "--out", str(tmp_path / "o3")]) == 2  # fmt: skip
    assert "unknown model 'no_such_net'" in capsys.readouterr().err
    assert main(["restore", str(src), "--model", "runs/missing/model", "--out", str(tmp_path / "o4")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_restore_model_side_error_is_not_a_bad_file(tmp_path, capsys) -> None:
    gray_net = create_model(
        "nafnet", in_channels=1, width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)
    )
    net_dir = save_pretrained(gray_net.eval(), tmp_path / "gray_net")
    src = _images(tmp_path / "in", ["colour.png"], size=(8, 8))[0]
    assert main(["restore", str(src), "--model", str(net_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot restore {src}: the network takes 1-channel images; this image is colour (3 channels)\n"
    )
    # a grayscale file suits it
    write_image(tmp_path / "g" / "g.png", np.full((8, 8), 100, dtype=np.uint8))
    assert main(["restore", str(tmp_path / "g"), "--model", str(net_dir), "--out", str(tmp_path / "o")]) == 0
    assert read_image_array(tmp_path / "o" / "g.png", keep_channels=True).shape == (8, 8, 1)
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main(["restore", str(src), "--model", str(net_dir), "--out", str(tmp_path / "o5"), "--tile", "0"])
    assert exc.value.code == 2
    assert "argument --tile: expected an integer >= 1, got '0'" in capsys.readouterr().err


# --- evaluate: the course layout ------------------------------------------------------------------------


def _course(tmp_path, rng):
    """train/clean/{rain,snow}_clean-{1..4}.png and noisy flat predictions for a subset of them."""
    clean, pred = tmp_path / "train" / "clean", tmp_path / "pred"
    for deg in ("rain", "snow"):
        for i in range(1, 5):
            write_image(clean / f"{deg}_clean-{i}.png", (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    noise = {"rain": 0.02, "snow": 0.1}
    for deg, i in (("rain", 1), ("rain", 3), ("snow", 2)):
        x = read_image(clean / f"{deg}_clean-{i}.png")
        write_image(pred / f"{deg}-{i}.png", (x + noise[deg] * torch.randn_like(x)).clamp(0, 1))
    return clean, pred


NAME_MAP = ["--name-map", r"^(\w+)-(\d+)", r"\1_clean-\2"]


def test_evaluate_name_map_and_prefix_groups(tmp_path, capsys) -> None:
    from allinone_ir.metrics import PROMPTIR_PROTOCOL

    clean, pred = _course(tmp_path, np.random.default_rng(0))
    report = tmp_path / "r.json"
    assert (
        main(["evaluate", "--pred", str(pred), "--target", str(clean), *NAME_MAP, "--json", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "scored 3 image(s)" in out and "(degradation from: file-name prefix)" in out
    assert "5 target image(s) have no prediction" in out

    def score(deg: str, i: int) -> dict[str, float]:
        return PROMPTIR_PROTOCOL.compute(
            read_image(pred / f"{deg}-{i}.png"), read_image(clean / f"{deg}_clean-{i}.png")
        )

    rain = [score("rain", 1), score("rain", 3)]
    snow = score("snow", 2)
    doc = json.loads(report.read_text())
    r = doc["results"]
    assert (doc["group_by"], doc["scored"], doc["targets_without_prediction"]) == ("prefix", 3, 5)
    assert r["rain"]["n"] == 2 and r["rain"]["psnr"] == pytest.approx((rain[0]["psnr"] + rain[1]["psnr"]) / 2)
    assert r["snow"]["psnr"] == pytest.approx(snow["psnr"]) and r["snow"]["ssim"] == pytest.approx(
        snow["ssim"]
    )
    assert r["average"]["psnr"] == pytest.approx((r["rain"]["psnr"] + r["snow"]["psnr"]) / 2)
    assert f"rain                  2 {r['rain']['psnr']:>8.3f}" in out
    # one group when asked
    assert (
        main(["evaluate", "--pred", str(pred), "--target", str(clean), *NAME_MAP, "--group-by", "none"]) == 0
    )
    out = capsys.readouterr().out
    assert "\nall " in out and "average" not in out and "rain " not in out
    # the json is never overwritten, and that is said before any work
    assert (
        main(["evaluate", "--pred", str(pred), "--target", str(clean), *NAME_MAP, "--json", str(report)]) == 2
    )
    assert "r.json exists" in capsys.readouterr().err


def test_evaluate_pairing_errors(tmp_path, capsys) -> None:
    clean, pred = _course(tmp_path, np.random.default_rng(1))
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean)]) == 2  # no --name-map
    err = capsys.readouterr().err
    assert err.startswith("error: 3 of 3 image(s) in") and "--name-map" in err
    assert f"{pred / 'rain-1.png'} -> {clean / 'rain-1.png'}" in err
    write_image(pred / "haze-9.png", torch.zeros(3, 16, 16))
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), *NAME_MAP]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 image(s)" in err and "haze_clean-9.png" in err and "--skip-unpaired" in err
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), *NAME_MAP, "--skip-unpaired"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 image(s) without a target: haze-9.png" in captured.err
    assert "scored 3 image(s)" in captured.out and "skipped 1 without a target" in captured.out
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), "--name-map", "(", "x"]) == 2
    assert "--name-map: '(' is not a valid regular expression" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--target", str(clean), "--name-map", "a", r"\3"]) == 2
    assert "cannot apply the replacement" in capsys.readouterr().err
    write_image(tmp_path / "small" / "rain-1.png", torch.zeros(3, 8, 8))
    assert main(["evaluate", "--pred", str(tmp_path / "small"), "--target", str(clean), *NAME_MAP]) == 2
    assert "size mismatch" in capsys.readouterr().err


def test_evaluate_grayscale_against_colour_the_same_folder_and_equal_images(tmp_path, capsys) -> None:
    clean = _images(tmp_path / "clean", ["x.png", "y.png"], size=(16, 16))
    pred = tmp_path / "pred"
    for c in clean:  # grayscale predictions of colour targets: ~12 dB, and the cause is said
        write_image(pred / c.name, read_image_array(c, keep_channels=True)[:, :, 1])
    assert main(["evaluate", "--pred", str(pred), "--target", str(tmp_path / "clean")]) == 0
    err = capsys.readouterr().err
    assert f"warning: 2 grayscale image(s) scored against colour targets: {pred / 'x.png'}, " in err
    # the same folder as --pred and --target: every image against itself (inf dB), refused
    assert main(["evaluate", "--pred", str(tmp_path / "clean"), "--target", str(tmp_path / "clean/")]) == 2
    assert "--pred and --target are the same folder" in capsys.readouterr().err
    # a prediction equal to its target makes its group's mean inf: the image is named
    (pred / "x.png").unlink()
    (pred / "x.png").write_bytes(clean[0].read_bytes())
    write_image(pred / "y.png", read_image(clean[1]) * 0.9, overwrite=True)
    assert main(["evaluate", "--pred", str(pred), "--target", str(tmp_path / "clean")]) == 0
    captured = capsys.readouterr()
    assert "inf" in captured.out
    assert "warning: 1 image(s) equal their target" in captured.err and str(pred / "x.png") in captured.err


def test_evaluate_nested_pred_and_target_folders(tmp_path, capsys) -> None:
    # the targets in a sub-folder of the predictions: not a degradation scored against itself (inf dB)
    clean = _images(tmp_path / "res" / "gt", ["x.png", "y.png"], size=(16, 16))
    for c in clean:
        write_image(tmp_path / "res" / c.name, read_image(c) * 0.9)
    assert main(["evaluate", "--pred", str(tmp_path / "res"), "--target", str(tmp_path / "res" / "gt")]) == 0
    captured = capsys.readouterr()
    assert "scored 2 image(s)" in captured.out and "\ngt " not in captured.out and "inf" not in captured.out
    assert captured.err == ""
    # the predictions in a sub-folder of the targets: they are not targets without a prediction
    pred = tmp_path / "res" / "gt" / "out"
    for c in clean:
        write_image(pred / c.name, read_image(c) * 0.9)
    assert (
        main(["evaluate", "--pred", str(pred), "--target", str(tmp_path / "res" / "gt"), "--all-targets"])
        == 0
    )
    assert "have no prediction" not in capsys.readouterr().out


def test_evaluate_a_target_found_by_stem_must_be_the_only_one(tmp_path, capsys) -> None:
    clean = _images(
        tmp_path / "clean", ["x.jpg", "x.bmp"], size=(16, 16)
    )  # which one was "x"? (one was taken)
    write_image(tmp_path / "pred" / "x.png", read_image(clean[0]) * 0.9)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "clean")]) == 2
    err = capsys.readouterr().err
    assert f"x.png: 2 images of its name in {tmp_path / 'clean'} (x.bmp, x.jpg); keep the target only" in err


def test_evaluate_json_path_and_small_image_problems_are_named(tmp_path, capsys) -> None:
    clean = _images(tmp_path / "clean", ["x.png"], size=(16, 16))
    write_image(tmp_path / "pred" / "x.png", read_image(clean[0]) * 0.9)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "clean"), "--json"]
    assert main([*args, str(clean[0] / "r.json")]) == 2  # "File exists" after the scores before
    captured = capsys.readouterr()
    assert (
        captured.out == ""
        and f"--json {clean[0] / 'r.json'}: {clean[0]} is a file, not a folder" in captured.err
    )
    assert main([*args, ""]) == 2  # an empty --json (an unset shell variable) wrote no report
    assert "--json needs a file name" in capsys.readouterr().err
    # an image smaller than the SSIM window is named among the others
    write_image(tmp_path / "clean" / "y.png", torch.zeros(3, 5, 5))
    write_image(tmp_path / "pred" / "y.png", torch.zeros(3, 5, 5))
    assert main(args[:-1]) == 2
    assert f"{tmp_path / 'pred' / 'y.png'}: SSIM with a 7x7 uniform window" in capsys.readouterr().err


def test_evaluate_group_by_none_scores_the_sub_folders_too(tmp_path, capsys) -> None:
    for deg in ("rain", "haze"):  # "none scores everything as one group": it said "no images" here
        for c in _images(tmp_path / "clean" / deg, ["x.png"], size=(16, 16)):
            write_image(tmp_path / "pred" / deg / c.name, read_image(c) * 0.9)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "clean")]
    assert main([*args, "--group-by", "none"]) == 0
    out = capsys.readouterr().out
    assert "scored 2 image(s)" in out and "\nall                   2 " in out and "no prediction" not in out


def test_evaluate_prefix_rule_is_the_datasets(tmp_path) -> None:
    from allinone_ir.commands.evaluate import group_of, pair_images
    from allinone_ir.data import PairedImageDataset

    names = ["rain-1.png", "snow_2.png", "haze 3.png", "noise.4.png", "lowlight-x_1.png"]
    for n in names:
        write_image(tmp_path / "d" / n, torch.zeros(3, 4, 4))
        write_image(tmp_path / "c" / n, torch.zeros(3, 4, 4))
    ds = PairedImageDataset(tmp_path / "d", tmp_path / "c", label_from="prefix")
    from pathlib import Path

    assert {p.degraded.name: p.degradation for p in ds.pairs} == {
        n: group_of(Path(n), "prefix") for n in names
    }
    assert sorted(pair_images(tmp_path / "d", tmp_path / "c").groups) == [
        "haze",
        "lowlight",
        "noise",
        "rain",
        "snow",
    ]
    # numbered files have no degradation prefix: one group
    for n in ("0001.png", "0002.png"):
        write_image(tmp_path / "n" / n, torch.zeros(3, 4, 4))
    assert pair_images(tmp_path / "n", tmp_path / "n").group_by == "none"


def test_evaluate_input_with_name_map(tmp_path, model_dir, capsys) -> None:
    from allinone_ir.metrics import PROMPTIR_PROTOCOL

    clean, degraded = _course(tmp_path, np.random.default_rng(2))
    report = tmp_path / "r.json"
    assert main(["evaluate", "--input", str(degraded), "--target", str(clean), *NAME_MAP,
                 "--model", str(model_dir), "--json", str(report)]) == 0  # fmt: skip
    net = from_pretrained(model_dir)
    x, y = read_image(degraded / "snow-2.png"), read_image(clean / "snow_clean-2.png")
    expected = PROMPTIR_PROTOCOL.compute(restore(net, x), y)
    assert json.loads(report.read_text())["results"]["snow"]["psnr"] == pytest.approx(
        expected["psnr"], abs=1e-6
    )
    capsys.readouterr()
    assert (
        main(["evaluate", "--input", str(degraded), "--target", str(clean), *NAME_MAP, "--model", "nafnet"])
        == 2
    )
    assert "random weights" in capsys.readouterr().err


def test_restore_interrupted_leaves_no_archive(tmp_path, model_dir, monkeypatch, capsys) -> None:
    import allinone_ir.inference as inference

    _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    real, calls = inference.restore, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "restore", interrupt_second)
    npz = tmp_path / "out" / "pred.npz"
    assert (
        main(["restore", str(tmp_path / "in"), "--model", str(model_dir), "--npz", str(npz), "--quiet"])
        == 130
    )
    assert capsys.readouterr().err.endswith("interrupted\n")
    assert list((tmp_path / "out").iterdir()) == []  # neither the archive nor its temporary file


def test_unusable_options_are_one_line(tmp_path, model_dir, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"], size=(8, 8))[0]
    assert (
        main(
            [
                "restore",
                str(src),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "bogus",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error: --device bogus: ")
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "in"),
                "--target",
                str(tmp_path / "in"),
                "--protocol",
                "nope",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error: --protocol: unknown metric protocol 'nope'")


def test_restore_file_removed_after_listing_is_skipped(tmp_path, model_dir, monkeypatch, capsys) -> None:
    import allinone_ir.commands.restore as restore_command

    a, _ = _images(tmp_path / "in", ["a.png", "b.png"], size=(8, 8))
    real = restore_command.collect_inputs

    def listed_then_removed(items):
        found = real(items)
        a.unlink()
        return found

    monkeypatch.setattr(restore_command, "collect_inputs", listed_then_removed)
    assert (
        main(
            [
                "restore",
                str(tmp_path / "in"),
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"skipped {a}: no such file (removed?)",
        f"restored 1 of 2 image(s) -> {tmp_path / 'o'}; skipped 1",
    ]


# --- issue 20: a full disk, link loops, the --overwrite flag named ---------------------------------------


def test_restore_npz_full_disk_leaves_no_temporary(tmp_path, model_dir, monkeypatch, capsys) -> None:
    import errno

    _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    real, calls = np.lib.format.write_array, []

    def disk_fills(f, array, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"\0" * 100)  # part of the array made it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", disk_fills)
    npz = tmp_path / "out" / "pred.npz"
    code = main(["restore", str(tmp_path / "in"), "--model", str(model_dir), "--npz", str(npz), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: no space left on device while writing {npz}"
    assert list((tmp_path / "out").iterdir()) == []  # neither the archive nor its temporary file


def test_restore_npz_full_disk_at_the_central_directory(tmp_path, model_dir, monkeypatch, capsys) -> None:
    import errno
    import zipfile

    _images(tmp_path / "in", ["a.png"])

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "_write_end_record", full)
    npz = tmp_path / "out" / "pred.npz"
    code = main(["restore", str(tmp_path / "in"), "--model", str(model_dir), "--npz", str(npz), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: no space left on device while writing {npz}"
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("how", ["folder", "file", "glob"])
def test_restore_link_loop_is_skipped_like_a_bad_file(tmp_path, model_dir, capsys, how) -> None:
    _images(tmp_path / "in", ["a.png", "b.png"])
    (tmp_path / "in" / "loop.png").symlink_to("loop.png")
    (tmp_path / "in" / "gone.png").symlink_to("nowhere.png")
    inputs = {
        "folder": [str(tmp_path / "in")],
        "file": [str(tmp_path / "in" / n) for n in ("a.png", "loop.png", "gone.png", "b.png")],
        "glob": [str(tmp_path / "in" / "*.png")],
    }[how]
    out = tmp_path / "out"
    assert main(["restore", *inputs, "--model", str(model_dir), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"skipped {tmp_path / 'in' / 'loop.png'}: symbolic link loop" in err
    assert f"skipped {tmp_path / 'in' / 'gone.png'}: a link to nowhere.png, which does not exist" in err
    assert err[-1] == f"restored 2 of 4 image(s) -> {out}; skipped 2"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_restore_output_appearing_meanwhile_names_the_flag(tmp_path, model_dir, monkeypatch, capsys) -> None:
    import allinone_ir.inference as inference

    _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    real = inference.restore

    def someone_writes(*args, **kwargs):  # another program writes the output while the network runs
        write_image(out / "a.png", np.zeros((2, 2, 3), np.uint8))
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "restore", someone_writes)
    assert (
        main(["restore", str(tmp_path / "in"), "--model", str(model_dir), "--out", str(out), "--quiet"]) == 2
    )
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"error: refusing to overwrite existing file {out / 'a.png'} (pass --overwrite)"
    assert read_image_array(out / "a.png").max() == 0  # the other program's file kept


def test_overwrite_flag_translates_only_the_library_hint() -> None:
    from allinone_ir.commands._common import overwrite_flag

    with (
        pytest.raises(FileExistsError, match=r"^refusing to overwrite x \(pass --force\)$"),
        overwrite_flag("--force"),
    ):
        raise FileExistsError("refusing to overwrite x (pass overwrite=True)")
    with pytest.raises(FileExistsError, match=r"^output files exist; pass --overwrite$"), overwrite_flag():
        raise FileExistsError("output files exist; pass --overwrite")


def test_weights_of_another_architecture_name_the_flag_to_drop(tmp_path, model_dir, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"], size=(8, 8))[0]
    weights = str(model_dir / "model.safetensors")
    args = ["restore", str(src), "--checkpoint", weights, "--model", "promptir", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights} does not match PromptIR") and "arch=None" not in err
    assert err.endswith("Is it a checkpoint of another architecture? Drop --model promptir to detect it.\n")
    assert main(["convert", weights, str(tmp_path / "c.safetensors"), "--arch", "restormer"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("Is it a checkpoint of another architecture? Drop --arch restormer to detect it.\n")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c.safetensors").exists()


def test_outputs_where_a_file_is_in_the_way_are_refused_by_name(tmp_path, model_dir, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"], size=(8, 8))[0]
    before = src.read_bytes()
    restore_args = ["restore", str(src), "--model", str(model_dir), "--quiet"]
    assert main([*restore_args, "--out", str(src / "sub")]) == 2
    assert capsys.readouterr().err == f"error: --out {src / 'sub'}: {src} is a file, not a folder\n"
    assert main([*restore_args, "--npz", str(src / "x.npz")]) == 2
    assert capsys.readouterr().err == f"error: --npz {src / 'x.npz'}: {src} is a file, not a folder\n"
    (tmp_path / "d.npz").mkdir()
    assert main([*restore_args, "--npz", str(tmp_path / "d.npz"), "--overwrite"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --npz {tmp_path / 'd.npz'} is a folder; give a file name ending in .npz\n"
    )
    weights = str(model_dir / "model.safetensors")
    assert main(["convert", weights, str(src), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"error: {src} is a file: give a .safetensors file or a folder (for model.safetensors and config.json)\n"
    )
    assert main(["convert", weights, str(src / "x.safetensors")]) == 2
    assert capsys.readouterr().err == f"error: dst {src / 'x.safetensors'}: {src} is a file, not a folder\n"
    assert main(["convert", weights, str(tmp_path / "new.pth")]) == 2  # not a folder named new.pth
    assert "new.pth ends in .pth: give a .safetensors file or a folder" in capsys.readouterr().err
    assert not (tmp_path / "new.pth").exists() and src.read_bytes() == before
    assert list((tmp_path / "d.npz").iterdir()) == []


def test_a_tile_not_larger_than_the_overlap_is_refused_by_its_options(tmp_path, model_dir, capsys) -> None:
    src = _images(tmp_path / "in", ["a.png"], size=(8, 8))[0]
    args = ["restore", str(src), "--model", str(model_dir), "--out", str(tmp_path / "o"), "--tile", "16"]
    assert main(args) == 2
    assert capsys.readouterr().err == "error: --overlap 32 (the default) must be smaller than --tile 16\n"
    assert main([*args, "--overlap", "16"]) == 2
    assert capsys.readouterr().err == "error: --overlap 16 must be smaller than --tile 16\n"
    assert not (tmp_path / "o").exists()
    assert main([*args, "--overlap", "4", "--quiet"]) == 0


def test_restore_glob_leaves_out_folders_named_like_images(tmp_path, model_dir, capsys) -> None:
    _images(tmp_path / "in", ["a.png"], size=(8, 8))
    (tmp_path / "in" / "album.png").mkdir()
    out = tmp_path / "o"
    assert (
        main(["restore", str(tmp_path / "in" / "*.png"), "--model", str(model_dir), "--out", str(out)]) == 0
    )
    assert capsys.readouterr().err == f"restored 1 image(s) -> {out}\n"
