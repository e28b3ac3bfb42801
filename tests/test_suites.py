"""Benchmark suites: layouts, the official noise recipe, crops, pairing and scores (allinone_ir.suites)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allinone_ir.errors import DatasetError, UnknownNameError, UsageError
from allinone_ir.suites import _crop, _noisy_images, check_suite, list_suites, published_rows, run_suite


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rand(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def make_root(root: Path, *, sots_bad: bool = False, rain_download_names: bool = False) -> Path:
    """A mini three-task layout with the official names (sizes not multiples of 16)."""
    for i, name in enumerate(["102061", "101087", "3096"]):  # CBSD68 names, unsorted on purpose
        _save(root / "denoise/bsd68" / f"{name}.png", _rand(i, 37 + i, 41))
    for i in range(1, 3):
        clean = _rand(10 + i, 34, 36)
        rainy = np.clip(clean.astype(int) + 40, 0, 255).astype(np.uint8)
        src, tgt = (
            (f"rain-{i:03d}.png", f"norain-{i:03d}.png") if rain_download_names else (f"{i}.png", f"{i}.png")
        )
        _save(root / "derain/Rain100L/input" / src, rainy)
        _save(root / "derain/Rain100L/target" / tgt, clean)
    for i in (1, 2):
        clean = _rand(20 + i, 33, 35)
        _save(root / "dehaze/target" / f"{i:04d}.png", clean)
        hazy = (clean * 0.5 + 100).astype(np.uint8)
        _save(
            root / "dehaze/input" / (f"{i:04d}.png" if sots_bad and i == 2 else f"{i:04d}_0.8_0.2.png"), hazy
        )
    return root


def test_list_suites_in_paper_order() -> None:
    assert list_suites() == {
        "three-task": ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"],
        "five-task": ["denoise_25", "derain", "dehaze", "deblur", "lowlight"],
        "restormer-deraining": ["test100", "rain100h", "rain100l", "test2800", "test1200"],
    }


def test_check_counts_missing_and_misnamed(tmp_path: Path) -> None:
    make_root(tmp_path, sots_bad=True, rain_download_names=True)
    report = check_suite("three-task", tmp_path)
    assert list(report) == ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"]
    assert report["denoise_15"]["found"] == 3 and report["denoise_15"]["expected"] == 68
    assert report["denoise_15"]["ready"] and not report["denoise_15"]["complete"]
    assert report["derain"]["found"] == 0 and report["derain"]["expected"] == 100
    assert len(report["derain"]["misnamed"]) == 2
    assert "rain-001.png: rename the pair to the same name" in report["derain"]["misnamed"][0]
    assert report["dehaze"]["found"] == 1
    assert report["dehaze"]["misnamed"] == [
        "0002.png: SOTS hazy images are named <id>_<A>_<beta> (0001_0.8_0.2.jpg pairs with 0001.png)"
    ]
    _save(tmp_path / "dehaze/target/0001.jpg", _rand(0, 33, 35))  # two targets of one name: which one?
    assert check_suite("three-task", tmp_path, ["dehaze"])["dehaze"]["misnamed"][0] == (
        "0001_0.8_0.2.png: 2 targets of its name (0001.jpg, 0001.png); keep one"
    )
    five = check_suite("five-task", tmp_path, ["deblur", "lowlight"])
    assert five["deblur"]["expected"] == 1111 and five["lowlight"]["expected"] == 15
    assert five["deblur"]["missing"] == [
        f"folder {tmp_path / 'deblur/gopro/input'}",
        f"folder {tmp_path / 'deblur/gopro/target'}",
    ]


def test_check_missing_target_and_root_above_test(tmp_path: Path) -> None:
    make_root(tmp_path / "data/test")
    (tmp_path / "data/test/derain/Rain100L/target/2.png").unlink()
    report = check_suite("three-task", tmp_path, ["derain"])  # the folder above data/test
    assert report["derain"]["found"] == 1
    assert report["derain"]["missing"] == [
        f"target {tmp_path / 'data/test/derain/Rain100L/target/2.png'} (for 2.png)"
    ]


def test_unknown_suite_and_task(tmp_path: Path) -> None:
    with pytest.raises(
        UnknownNameError, match="unknown benchmark suite 'four-task'; known: three-task, five-task"
    ):
        check_suite("four-task", tmp_path)
    with pytest.raises(UnknownNameError, match="suite 'three-task' has no task 'deblur'"):
        check_suite("three-task", tmp_path, ["deblur"])
    with pytest.raises(UsageError, match="no task given; the tasks of 'three-task': denoise_15, "):
        check_suite("three-task", tmp_path, [])  # `--tasks ,` was "0 of 0 task(s) can run", exit 0
    with pytest.raises(DatasetError, match="is not a folder"):
        check_suite("three-task", tmp_path / "nope")


def test_crop_to_multiple_of_16_centred_as_crop_img() -> None:
    arr = np.arange(37 * 41 * 3).reshape(37, 41, 3)
    out = _crop(arr)
    assert out.shape == (32, 32, 3)
    # crop_img: h % 16 = 5 -> rows 2..34, w % 16 = 9 -> cols 4..36
    np.testing.assert_array_equal(out, arr[2:34, 4:36])


def _official_noise(cleans: list[np.ndarray]) -> dict[int, list[np.ndarray]]:
    """The official recipe, written out: seed once, sigma 15, 25, 50 in turn, images in order."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    out = {}
    for sigma in (15, 25, 50):
        out[sigma] = [np.clip(c + np.random.randn(*c.shape) * sigma, 0, 255).astype(np.uint8) for c in cleans]  # noqa: NPY002
    np.random.set_state(state)  # noqa: NPY002
    return out


def test_noise_is_the_official_recipe_value_for_value() -> None:
    cleans = [_crop(_rand(i, 37 + i, 41)) for i in range(3)]
    expected = _official_noise(cleans)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    for sigma in (15, 25, 50):  # each sigma alone continues the stream as the official three passes do
        got = list(_noisy_images(cleans, sigma))
        for g, e in zip(got, expected[sigma]):
            np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the process's random state untouched  # noqa: NPY002
    # truncation, not rounding: a value of 10.9 becomes 10
    np.random.seed(0)  # noqa: NPY002
    c = cleans[0]
    raw = np.clip(c + np.random.randn(*c.shape) * 15, 0, 255)  # noqa: NPY002
    assert (expected[15][0] == np.floor(raw)).all() and (np.rint(raw) != np.floor(raw)).any()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(
        peak_signal_noise_ratio(b.astype(np.float64) / 255, a.astype(np.float64) / 255, data_range=1)
    )


def test_identity_network_scores_the_degraded_inputs_in_sorted_order(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    res = run_suite(_identity, "three-task", root, save_images=tmp_path / "out")
    assert list(res["tasks"]) == ["denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"]
    names = sorted(p.stem for p in (root / "denoise/bsd68").iterdir())  # 101087, 102061, 3096
    cleans = [_crop(np.array(Image.open(root / "denoise/bsd68" / f"{n}.png"))) for n in names]
    noisy = _official_noise(cleans)
    for sigma in (15, 25, 50):
        r = res["tasks"][f"denoise_{sigma}"]
        want = np.mean([_psnr(n, c) for n, c in zip(noisy[sigma], cleans)])
        assert r["psnr"] == pytest.approx(want, abs=1e-6)  # float32 images, as ToTensor
        assert r["psnr"] == r["input_psnr"] and r["count"] == 3
        for n, name in zip(noisy[sigma], names):  # the saved outputs are the noisy inputs, pixel for pixel
            np.testing.assert_array_equal(
                np.array(Image.open(tmp_path / "out" / f"denoise_{sigma}" / f"{name}.png")), n
            )
    # SOTS: 0001_0.8_0.2.png pairs with target 0001.png, both cropped to 32x32
    hazy = [_crop(np.array(Image.open(root / "dehaze/input" / f"{i:04d}_0.8_0.2.png"))) for i in (1, 2)]
    clean = [_crop(np.array(Image.open(root / "dehaze/target" / f"{i:04d}.png"))) for i in (1, 2)]
    assert hazy[0].shape == (32, 32, 3)
    assert res["tasks"]["dehaze"]["psnr"] == pytest.approx(
        np.mean([_psnr(h, c) for h, c in zip(hazy, clean)]), abs=1e-6
    )
    avg = np.mean([r["psnr"] for r in res["tasks"].values()])
    assert res["average"]["psnr"] == pytest.approx(avg) and res["skipped"] == {}


def test_partial_layout_skips_absent_tasks_and_refuses_an_empty_one(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    res = run_suite(_identity, "five-task", root)
    assert list(res["tasks"]) == ["denoise_25", "derain", "dehaze"]
    assert set(res["skipped"]) == {"deblur", "lowlight"}
    # five-task's sigma 25 is the second pass of the stream, as AdaIR's test.py --mode 6 draws it
    three = run_suite(_identity, "three-task", root, ["denoise_25"])
    assert res["tasks"]["denoise_25"]["psnr"] == three["tasks"]["denoise_25"]["psnr"]
    with pytest.raises(DatasetError, match="no task of suite 'five-task' has images"):
        run_suite(_identity, "five-task", root, ["deblur", "lowlight"])


def test_inputs_left_out_of_a_task_are_warned_about(tmp_path: Path) -> None:
    root = make_root(tmp_path, sots_bad=True)
    (root / "derain/Rain100L/target/2.png").unlink()
    with pytest.warns(UserWarning) as caught:
        res = run_suite(_identity, "three-task", root, ["derain", "dehaze"])
    assert res["tasks"]["derain"]["count"] == 1 and res["tasks"]["dehaze"]["count"] == 1
    messages = [str(w.message) for w in caught]
    assert messages[0].startswith(
        "derain: 1 image(s) left out, the scores are of the other 1 (not the papers' set)"
    )
    assert "target" in messages[0] and "2.png" in messages[0]
    assert (
        messages[1].startswith("dehaze: 1 image(s) left out") and "0002.png: SOTS hazy images" in messages[1]
    )


def test_save_images_into_a_used_folder_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    from allinone_ir import cli

    make_root(tmp_path / "test")
    (tmp_path / "out/dehaze").mkdir(parents=True)
    (tmp_path / "out/dehaze/0001_0.8_0.2.png").write_bytes(b"an earlier run's output")
    argv = ["benchmark", "--suite", "three-task", "--root", str(tmp_path), "--model", "no-such-model"]
    assert cli.main([*argv, "--save-images", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # refused before the network is even looked up
    assert (
        err == f"error: {tmp_path / 'out/dehaze'} holds outputs already; choose a new --save-images folder\n"
    )


def test_an_image_smaller_than_the_crop_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "derain/Rain100L/input/1.png", _rand(0, 40, 40))
    _save(tmp_path / "derain/Rain100L/target/1.png", _rand(1, 40, 40))
    _save(tmp_path / "denoise/bsd68/thumb.png", _rand(2, 12, 40))
    with pytest.raises(
        DatasetError, match=r"thumb.png is smaller than 16x16: nothing is left after the crop"
    ):
        run_suite(_identity, "three-task", tmp_path, ["denoise_15"])
    assert run_suite(_identity, "three-task", tmp_path, ["derain"])["tasks"]["derain"]["count"] == 1


def _matlab_scores(out: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Restormer's evaluate_PSNR_SSIM.m written out: rgb2ycbcr luma (uint8), compute_psnr, SSIM_index."""
    from scipy.signal import correlate2d

    def luma(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return np.floor(16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255 + 0.5)

    y1, y2 = luma(out), luma(gt)
    psnr = 20 * np.log10(255 / np.sqrt(np.mean((y1 - y2) ** 2)))
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()  # fspecial('gaussian', 11, 1.5)

    def f(z: np.ndarray) -> np.ndarray:
        return correlate2d(z, win, mode="valid")  # filter2(window, z, 'valid')

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m1, m2 = f(y1), f(y2)
    s1, s2, s12 = f(y1 * y1) - m1**2, f(y2 * y2) - m2**2, f(y1 * y2) - m1 * m2
    ssim_map = ((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1**2 + m2**2 + c1) * (s1 + s2 + c2))
    return float(psnr), float(ssim_map.mean())


def test_restormer_deraining_scores_the_y_channel_of_evaluate_psnr_ssim(tmp_path: Path) -> None:
    test = tmp_path / "Datasets/test"
    pairs = {}
    for name, shape in (("1.png", (37, 45)), ("2.jpg", (30, 33))):  # odd sizes: no crop, no padding kept
        clean = _rand(len(pairs) + 40, *shape)
        rainy = np.clip(clean.astype(int) + np.random.RandomState(7).randint(0, 60, clean.shape), 0, 255)
        _save(test / "Rain100L/input" / name, rainy.astype(np.uint8))
        _save(test / "Rain100L/target" / name.replace(".jpg", ".png"), clean)
        pairs[name] = (rainy.astype(np.uint8), clean)
    report = check_suite("restormer-deraining", tmp_path / "Datasets")  # the folder above test/ is accepted
    assert report["rain100l"]["found"] == 2 and report["rain100l"]["expected"] == 100
    assert report["test2800"]["expected"] == 2800 and report["test2800"]["found"] == 0
    res = run_suite(_identity, "restormer-deraining", test, save_images=tmp_path / "out")
    assert list(res["tasks"]) == ["rain100l"] and set(res["skipped"]) == {
        "test100",
        "rain100h",
        "test2800",
        "test1200",
    }
    assert res["protocol"] == "matlab_y"
    inputs = [np.array(Image.open(test / "Rain100L/input" / n)) for n in ("1.png", "2.jpg")]
    want = [_matlab_scores(a, b) for a, (_, b) in zip(inputs, pairs.values())]
    r = res["tasks"]["rain100l"]
    assert r["psnr"] == pytest.approx(np.mean([w[0] for w in want]), abs=1e-9)
    assert r["ssim"] == pytest.approx(np.mean([w[1] for w in want]), abs=1e-9)
    assert r["psnr"] == r["input_psnr"] and 0.2 < r["ssim"] < 0.99
    assert np.array(Image.open(tmp_path / "out/rain100l/1.png")).shape == (37, 45, 3)  # uncropped


def test_published_rows_and_their_differences(tmp_path: Path) -> None:
    rows = published_rows("three-task")
    assert [r["method"] for r in rows] == [
        "BRDNet", "LPNet", "FDGAN", "MPRNet", "DL", "AirNet", "PromptIR", "PIP-Restormer", "DFPIR", "BaryIR"
    ]  # fmt: skip
    # every row's average is the mean of its columns as printed (a transcription check: a wrong digit moves
    # the mean by 0.02 dB or more; BaryIR's printed average is 0.014 dB below the mean of its printed columns)
    for row in rows:
        psnrs = [v["psnr"] for v in row["tasks"].values()]
        assert sum(psnrs) / len(psnrs) == pytest.approx(row["average"]["psnr"], abs=0.015), row["method"]
    promptir = rows[6]
    assert promptir["tasks"]["derain"] == {"psnr": 36.37, "ssim": 0.972}
    assert promptir["tasks"]["denoise_50"] == {"psnr": 28.06, "ssim": 0.799}
    assert promptir["average"] == {"psnr": 32.06, "ssim": 0.913}
    five = published_rows("five-task")
    pip = next(r for r in five if r["method"] == "PIP-Restormer")
    assert pip["average"] is None and pip["tasks"]["lowlight"] == {"psnr": 24.06, "ssim": 0.859}
    for row in five[-2:]:  # DFPIR, BaryIR: averages over the suite's five columns
        psnrs = [v["psnr"] for v in row["tasks"].values()]
        assert sum(psnrs) / 5 == pytest.approx(row["average"]["psnr"], abs=0.015), row["method"]
    assert published_rows("restormer-deraining")[0]["average"] == {"psnr": 33.96, "ssim": 0.935}
    res = run_suite(_identity, "three-task", make_root(tmp_path), ["derain"])
    got = published_rows("three-task", res)[6]
    measured = res["tasks"]["derain"]["psnr"]
    assert got["tasks"]["derain"]["diff_psnr"] == pytest.approx(measured - 36.37)
    assert "diff_psnr" not in got["tasks"]["dehaze"]  # not run
    assert "diff_psnr" not in got["average"]  # the run's average covers one column of five
    with pytest.raises(UnknownNameError):
        published_rows("four-task")


def test_moce_ir_protocol_gaussian_ssim_and_its_noise_order(tmp_path: Path) -> None:
    from skimage.metrics import structural_similarity

    root = make_root(tmp_path)
    res = run_suite(_identity, "three-task", root, ["dehaze"], protocol="moce_ir")
    assert res["protocol"] == "moce_ir"
    hazy = [_crop(np.array(Image.open(root / "dehaze/input" / f"{i:04d}_0.8_0.2.png"))) for i in (1, 2)]
    clean = [_crop(np.array(Image.open(root / "dehaze/target" / f"{i:04d}.png"))) for i in (1, 2)]
    want = [  # MoCE-IR's calc_ssim on float32 images, as ToTensor gives them
        structural_similarity(
            c.astype(np.float32) / 255,
            h.astype(np.float32) / 255,
            channel_axis=2,
            gaussian_weights=True,
            data_range=1.0,
        )
        for h, c in zip(hazy, clean)
    ]
    assert res["tasks"]["dehaze"]["ssim"] == pytest.approx(np.mean(want), abs=1e-7)
    promptir = run_suite(_identity, "three-task", root, ["dehaze"])
    assert promptir["tasks"]["dehaze"]["psnr"] == res["tasks"]["dehaze"]["psnr"]
    assert promptir["tasks"]["dehaze"]["ssim"] != pytest.approx(res["tasks"]["dehaze"]["ssim"], abs=1e-4)
    # MoCE-IR's README runs five-task's CBSD68 as `--benchmarks denoise_25` alone: the first pass of the stream
    names = sorted(p.stem for p in (root / "denoise/bsd68").iterdir())
    cleans = [_crop(np.array(Image.open(root / "denoise/bsd68" / f"{n}.png"))) for n in names]
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(0)  # noqa: NPY002
    first = [np.clip(c + np.random.randn(*c.shape) * 25, 0, 255).astype(np.uint8) for c in cleans]  # noqa: NPY002
    np.random.set_state(state)  # noqa: NPY002
    five = run_suite(_identity, "five-task", root, ["denoise_25"], protocol="moce_ir")
    assert five["tasks"]["denoise_25"]["psnr"] == pytest.approx(
        np.mean([_psnr(n, c) for n, c in zip(first, cleans)]), abs=1e-6
    )
    with pytest.raises(UnknownNameError, match="scored with matlab_y, not 'moce_ir'"):
        run_suite(_identity, "restormer-deraining", root, protocol="moce_ir")
