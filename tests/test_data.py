"""Datasets (pairing rules, labels, identical geometry, error messages), mixing and augmentations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from allinone_ir.data import (
    BatchAugment,
    DatasetError,
    MixedDataset,
    PairedImageDataset,
    SyntheticDegradationDataset,
    cutblur,
    dmix,
    mixup,
    paired_random_crop,
    promptir_dataset,
)
from allinone_ir.data.augment import augment_mode
from allinone_ir.data.datasets import normalize_patch_size
from allinone_ir.errors import UsageError
from allinone_ir.io import write_image


def _write(path: Path, img: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, img)


def _q(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """The course task layout: degraded/rain-1.png pairs with clean/rain_clean-1.png."""
    g = torch.Generator().manual_seed(0)
    for kind in ("rain", "snow"):
        for i in (1, 2):
            clean = _q(torch.rand(3, 20, 24, generator=g))
            _write(tmp_path / "clean" / f"{kind}_clean-{i}.png", clean)
            _write(tmp_path / "degraded" / f"{kind}-{i}.png", 1 - clean)
    return tmp_path


COURSE_MAP = (r"^(\w+)-(\d+)", r"\1_clean-\2")


def test_paired_course_layout_labels_and_identical_geometry(course: Path) -> None:
    ds = PairedImageDataset(
        course / "degraded", course / "clean", name_map=COURSE_MAP, label_from="prefix",
        classes=["rain", "snow"], patch_size=8, seed=3,
    )  # fmt: skip
    assert len(ds) == 4 and ds.validate() == []
    labels = sorted((s["name"], s["label"], s["degradation"]) for s in (ds[i] for i in range(4)))
    assert labels == [
        ("rain-1", 0, "rain"),
        ("rain-2", 0, "rain"),
        ("snow-1", 1, "snow"),
        ("snow-2", 1, "snow"),
    ]
    seen_modes = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["degraded"].shape == (3, 8, 8)
        assert torch.allclose(s["degraded"], 1 - s["clean"], atol=1e-6)  # same crop, flip, rotation
        seen_modes.add(tuple(s["clean"].flatten()[:4].tolist()))
    assert len(seen_modes) > 1  # the epoch changes the crop / augmentation
    ds.set_epoch(2)
    assert torch.equal(ds[1]["clean"], ds[1]["clean"])  # deterministic per (seed, epoch, index)


def _course_pairs(root: Path, rain: int, snow: int, size: tuple[int, int] = (12, 16)) -> Path:
    g = torch.Generator().manual_seed(1)
    for kind, n in (("rain", rain), ("snow", snow)):
        for i in range(1, n + 1):
            clean = _q(torch.rand(3, *size, generator=g))
            _write(root / "clean" / f"{kind}_clean-{i}.png", clean)
            _write(root / "degraded" / f"{kind}-{i}.png", 1 - clean)
    return root


def test_val_split_is_deterministic_stratified_and_whole_images(tmp_path: Path) -> None:
    root = _course_pairs(tmp_path, rain=30, snow=10)
    ds = PairedImageDataset(root / "degraded", root / "clean", name_map=COURSE_MAP, patch_size=8, seed=5)
    train, val = ds.split(0.1)
    names = sorted(p.degraded.name for p in val.pairs)
    # 10% of 40 = 4 pairs, proportional to each degradation: 3 of 30 rain, 1 of 10 snow
    assert [p.degradation for p in val.pairs].count("rain") == 3 and len(names) == 4
    assert len(train) == 36 and not {p.degraded.name for p in train.pairs} & set(names)
    assert names == sorted(p.degraded.name for p in ds.split(0.1)[1].pairs)  # the same split every time
    assert names != sorted(
        p.degraded.name for p in ds.split(0.1, seed=6)[1].pairs
    )  # another seed, another split
    s = val[0]
    assert s["degraded"].shape == (3, 12, 16) and torch.allclose(s["degraded"], 1 - s["clean"], atol=1e-6)
    assert val.patch_size is None and val.augment_modes == ()
    assert train[0]["degraded"].shape == (3, 8, 8) and ds.patch_size == 8  # the original is unchanged
    _, seven = ds.split(7)  # a count: 5.25 rain + 1.75 snow -> 5 + 2 by the largest remainders
    assert sorted(p.degradation for p in seven.pairs) == ["rain"] * 5 + ["snow"] * 2
    for bad in (0.0, 1.0, 40, 0, -1, "5%", True):
        with pytest.raises(ValueError, match=r"val_split"):
            ds.split(bad)  # type: ignore[arg-type]


def test_val_split_keeps_a_training_pair_of_every_degradation(tmp_path: Path) -> None:
    root = _course_pairs(tmp_path, rain=1, snow=3)
    ds = PairedImageDataset(root / "degraded", root / "clean", name_map=COURSE_MAP)
    train, val = ds.split(2)
    assert "rain" in {p.degradation for p in train.pairs}  # the one rain pair is never held out
    assert [p.degradation for p in val.pairs] == ["snow"]


def test_patch_size_full_means_whole_images(course: Path) -> None:
    ds = PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP, patch_size="full")
    assert ds.patch_size is None and ds[0]["degraded"].shape == (3, 20, 24)
    syn = SyntheticDegradationDataset([torch.rand(3, 10, 14)], tasks=["rain"], patch_size="full")
    assert syn[0]["clean"].shape == (3, 10, 14)
    assert normalize_patch_size("FULL") is None and normalize_patch_size(64) == 64
    for bad in (0, "big", 2.5, True):
        with pytest.raises(ValueError, match=r'patch_size must be a positive integer, "full" or None'):
            PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP, patch_size=bad)


def test_label_from_subfolder_mapping_and_default_classes(tmp_path: Path) -> None:
    for sub in ("rain", "haze"):
        _write(tmp_path / "deg" / sub / "a.png", torch.rand(3, 8, 8))
        _write(tmp_path / "clean" / sub / "a.png", torch.rand(3, 8, 8))
    ds = PairedImageDataset(tmp_path / "deg", tmp_path / "clean", label_from="subfolder")
    assert sorted((s["degradation"], s["label"]) for s in ds) == [("haze", 2), ("rain", 1)]  # PIP labels
    ds = PairedImageDataset(tmp_path / "deg" / "rain", tmp_path / "clean" / "rain", label_from={"a": "snow"})
    assert ds[0]["degradation"] == "snow" and ds.classes == {"snow": 5}
    with pytest.raises(DatasetError, match="no label"):
        PairedImageDataset(
            tmp_path / "deg" / "rain", tmp_path / "clean" / "rain", label_from="fog", classes=["rain"]
        )


def test_a_partner_found_only_by_stem_must_be_the_only_one_of_that_stem(tmp_path: Path) -> None:
    """deg/snow/1.png must not pair with clean/rain_gt/1.png because clean/snow_gt/1.png shares its stem."""
    for sub in ("rain", "snow"):
        _write(tmp_path / "deg" / sub / "1.png", torch.rand(3, 8, 8))
        _write(tmp_path / "clean" / f"{sub}_gt" / "1.png", torch.rand(3, 8, 8))
    with pytest.raises(DatasetError) as exc:
        PairedImageDataset(tmp_path / "deg", tmp_path / "clean", label_from="subfolder")
    msg = str(exc.value)
    assert msg.startswith("2 degraded image(s) without a clean partner: (1) ")
    assert (
        "; ambiguous: 2 images of its stem (" in msg and str(tmp_path / "clean" / "snow_gt" / "1.png") in msg
    )
    _write(tmp_path / "flat" / "rain_1.jpg", torch.rand(3, 8, 8))
    for ext in ("png", "bmp"):
        _write(tmp_path / "flat_clean" / f"rain_1.{ext}", torch.rand(3, 8, 8))
    with pytest.raises(
        DatasetError, match=r"rain_1\.jpg -> expected clean partner .*rain_1\.jpg; ambiguous: 2 images"
    ):
        PairedImageDataset(tmp_path / "flat", tmp_path / "flat_clean")
    (tmp_path / "flat_clean" / "rain_1.bmp").unlink()
    assert PairedImageDataset(tmp_path / "flat", tmp_path / "flat_clean").pairs[0].clean.suffix == ".png"


def test_missing_partners_are_all_named(course: Path) -> None:
    (course / "clean" / "rain_clean-2.png").unlink()
    (course / "clean" / "snow_clean-1.png").unlink()
    with pytest.raises(DatasetError) as exc:
        PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP)
    msg = str(exc.value)
    assert "2 degraded image(s) without a clean partner" in msg
    assert "rain-2.png" in msg and "rain_clean-2.png" in msg and "snow-1.png" in msg


def test_size_mismatch_and_unreadable_files_named_and_collected(course: Path) -> None:
    (course / "clean" / "rain_clean-1.png").unlink()
    _write(course / "clean" / "rain_clean-1.png", torch.rand(3, 21, 24))
    (course / "degraded" / "snow-2.png").write_bytes(b"not a png")
    ds = PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP, patch_size=22)
    with pytest.raises(
        DatasetError, match=r"rain-1\.png is 24x20 but its clean partner .*rain_clean-1\.png is 24x21"
    ):
        ds[ds.pairs.index(next(p for p in ds.pairs if p.degraded.name == "rain-1.png"))]
    problems = ds.validate(raise_on_error=False)
    assert len(problems) == 4  # mismatch, unreadable, and two images smaller than the 22 px crop
    assert any("snow-2.png" in p and "cannot read" in p for p in problems)
    assert sum("smaller than patch_size 22" in p for p in problems) == 2
    with pytest.raises(DatasetError, match="4 problem"):
        ds.validate()


def test_bad_folders_and_name_map(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        PairedImageDataset(tmp_path / "nope", tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        PairedImageDataset(tmp_path / "a", tmp_path)
    _write(tmp_path / "a" / "x.png", torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="name_map"):
        PairedImageDataset(tmp_path / "a", tmp_path / "a", name_map=42)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"^name_map: '\(' is not a valid regular expression"):
        PairedImageDataset(tmp_path / "a", tmp_path / "a", name_map=("(", "y"))
    with pytest.raises(UsageError, match=r"^name_map: cannot apply the replacement '\\\\3' to 'x.png'"):
        PairedImageDataset(tmp_path / "a", tmp_path / "a", name_map=("x", r"\3"))


def test_synthetic_dataset_seeded_and_fixed() -> None:
    imgs = [torch.rand(3, 32, 32), torch.rand(3, 32, 32)]
    ds = SyntheticDegradationDataset(imgs, tasks=["noise_15", "rain", "haze"], patch_size=16, seed=1)
    assert len(ds) == 6
    assert [ds[i]["task"] for i in range(3)] == ["noise_15", "rain", "haze"]
    assert [ds[i]["label"] for i in range(3)] == [0, 1, 2]
    a = ds[1]
    assert torch.equal(a["degraded"], ds[1]["degraded"])
    ds.set_epoch(1)
    assert not torch.equal(a["degraded"], ds[1]["degraded"])
    fixed = SyntheticDegradationDataset(imgs, tasks=["snow"], patch_size=16, fixed=True)
    s0 = fixed[0]["degraded"]
    fixed.set_epoch(5)
    assert torch.equal(s0, fixed[0]["degraded"])
    with pytest.raises(ValueError, match="unknown task"):
        SyntheticDegradationDataset(imgs, tasks=["fog"])
    with pytest.raises(IndexError):
        ds[6]


def test_promptir_layout_repeats_and_labels(tmp_path: Path) -> None:
    for i in range(2):
        _write(tmp_path / "Train" / "Denoise" / f"{i}.png", torch.rand(3, 20, 20))
    _write(tmp_path / "Train" / "Derain" / "rainy" / "rain-1.png", torch.rand(3, 20, 20))
    _write(tmp_path / "Train" / "Derain" / "gt" / "norain-1.png", torch.rand(3, 20, 20))
    _write(tmp_path / "Train" / "Dehaze" / "synthetic" / "part1" / "0001_0.8_0.2.png", torch.rand(3, 20, 20))
    _write(tmp_path / "Train" / "Dehaze" / "original" / "0001.png", torch.rand(3, 20, 20))
    ds = promptir_dataset(tmp_path, patch_size=16)
    assert len(ds) == 2 * 3 + 1 * 120 + 1 * 1  # three sigmas, rain x120, haze x1
    tasks = [ds[i]["task"] for i in (0, 1, 2, 6, 125, 126)]
    assert tasks == ["noise_15", "noise_25", "noise_50", "rain", "rain", "haze"]
    assert [ds[i]["label"] for i in (0, 6, 126)] == [0, 1, 2]
    assert ds.validate() == []
    small = promptir_dataset(tmp_path, tasks=["derain"], repeats={"derain": 2}, patch_size=16)
    assert len(small) == 2
    with pytest.raises(ValueError, match="unknown task"):
        promptir_dataset(tmp_path, tasks=["desnow"])
    with pytest.raises(DatasetError, match="not a folder"):
        promptir_dataset(tmp_path, tasks=["deblur"])


def test_mixed_dataset_forwards_epoch() -> None:
    a = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["rain"], patch_size=8)
    ds = MixedDataset([(a, 2), a])
    assert len(ds) == 3
    before = ds[0]["degraded"]
    ds.set_epoch(3)
    assert a.epoch == 3 and not torch.equal(before, ds[0]["degraded"])
    with pytest.raises(ValueError, match="repeat"):
        MixedDataset([(a, 0)])


def test_augment_modes_are_the_eight_symmetries() -> None:
    x = torch.arange(9.0).view(1, 3, 3)
    outs = {tuple(augment_mode(x, m).flatten().tolist()) for m in range(8)}
    assert len(outs) == 8
    assert torch.equal(augment_mode(x, 2), torch.rot90(x, 1, (-2, -1)))
    with pytest.raises(ValueError, match=r"0\.\.7"):
        augment_mode(x, 8)
    with pytest.raises(ValueError, match="smaller than"):
        paired_random_crop([torch.rand(3, 4, 4)], 8, names=["a.png"])


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "degraded": torch.rand(4, 3, 8, 8, generator=g),
        "clean": torch.rand(4, 3, 8, 8, generator=g),
        "label": torch.tensor([0, 1, 2, 3]),
    }


def test_dmix_swaps_halves_and_mixes_labels() -> None:
    b = _batch()
    out = dmix(b, num_classes=5, rng=1)
    g = torch.Generator().manual_seed(1)  # replay the draws: permutation, then the split axis
    perm = torch.randperm(4, generator=g)
    along_h = bool(torch.rand((), generator=g) < 0.5)
    for key in ("degraded", "clean"):
        ref = b[key].clone()
        if along_h:
            ref[..., 4:, :] = b[key][perm][..., 4:, :]
        else:
            ref[..., :, 4:] = b[key][perm][..., :, 4:]
        assert torch.equal(out[key], ref)
    onehot = torch.nn.functional.one_hot(b["label"], 5).float()
    assert torch.equal(out["label"], 0.5 * onehot + 0.5 * onehot[perm])
    assert not torch.equal(perm, torch.arange(4))
    with pytest.raises(ValueError, match="label"):
        dmix({"degraded": b["degraded"], "clean": b["clean"]}, num_classes=5)


def test_mixup_and_cutblur() -> None:
    b = _batch()
    out = mixup(b, num_classes=5, rng=2)
    w = out["label"]
    lam = float(w.max(dim=1).values.min())
    assert torch.allclose(w.sum(1), torch.ones(4)) and 0 < lam <= 1
    # the same blend applies to degraded and clean images
    d = out["degraded"] - out["clean"]
    assert d.shape == b["degraded"].shape
    assert torch.equal(mixup(b, rng=2)["clean"], mixup(b, rng=2)["clean"])
    cb = cutblur(b, alpha=0.5, rng=0)
    changed = (cb["degraded"] != b["degraded"]).any(dim=(0, 1))
    assert 0 < int(changed.sum()) < 64 and torch.equal(cb["clean"], b["clean"])
    # the pasted region holds the clean (or the degraded in a clean image) content
    region = changed
    assert torch.equal(cb["degraded"][..., region], b["clean"][..., region]) or torch.equal(
        cb["degraded"][..., ~region], b["clean"][..., ~region]
    )


def test_batch_augment_probabilities_and_state() -> None:
    aug = BatchAugment(dmix=1.0, num_classes=5, seed=4)
    state = aug.state_dict()
    first = aug(_batch())["label"]
    aug.load_state_dict(state)
    assert torch.equal(aug(_batch())["label"], first)
    assert BatchAugment()(_batch())["label"].ndim == 1  # nothing enabled: unchanged
    with pytest.raises(ValueError, match="sum to more than 1"):
        BatchAugment(mixup=0.6, cutblur=0.6)
    with pytest.raises(ValueError, match="num_classes"):
        BatchAugment(dmix=0.5)


def test_validate_at_construction_lists_every_problem_at_once(course: Path) -> None:
    (course / "clean" / "rain_clean-2.png").unlink()  # a missing partner
    (course / "clean" / "rain_clean-1.png").unlink()
    _write(course / "clean" / "rain_clean-1.png", torch.rand(3, 21, 24))  # a size mismatch
    (course / "degraded" / "snow-2.png").write_bytes(b"not a png")  # an unreadable file
    with pytest.raises(DatasetError) as exc:
        PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP, validate=True)
    msg = str(exc.value)
    assert msg.startswith("3 problem(s) in the dataset:")
    assert "no clean partner: " in msg and "rain-2.png" in msg
    assert "rain-1.png is 24x20 but its clean partner" in msg
    assert "snow-2.png" in msg and "cannot read" in msg
    with pytest.raises(
        DatasetError, match=r"^1 degraded image\(s\) without a clean partner"
    ):  # without validate
        PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP)


def test_long_problem_lists_are_capped_with_a_count(tmp_path: Path) -> None:
    for i in range(25):
        _write(tmp_path / "deg" / f"rain-{i:02d}.png", torch.rand(3, 4, 4))
    (tmp_path / "clean").mkdir()
    with pytest.raises(DatasetError) as exc:
        PairedImageDataset(tmp_path / "deg", tmp_path / "clean", validate=True)
    msg = str(exc.value)
    assert msg.startswith("25 problem(s) in the dataset: (1) no clean partner: ") and "\n" not in msg
    assert "(20) no clean partner: " in msg and "(21)" not in msg and msg.endswith("; ... and 5 more")


def test_labels_are_matched_by_name_to_a_network(course: Path) -> None:
    from allinone_ir.data.datasets import _label_classes, _match_labels

    ds = PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP)
    assert ds.classes == {"rain": 1, "snow": 5} and _label_classes(ds) == ["rain", "snow"]
    _match_labels(ds, ("snow", "derain"))  # the network's names, an alias among them
    assert {s["degradation"]: s["label"] for s in ds} == {"rain": 1, "snow": 0}
    ds = PairedImageDataset(course / "degraded", course / "clean", name_map=COURSE_MAP)
    with pytest.raises(DatasetError, match=r"cannot represent the degradation\(s\) \['snow'\].*"
                                           r"\['rain', 'snow'\].*\['noise', 'rain', 'haze', 'blur', 'lowlight'\]"):  # fmt: skip
        _match_labels(ds, ("noise", "rain", "haze", "blur", "lowlight"), "PIPRestormer")
    synth = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["noise_25", "derain"], patch_size=8)
    mixed = MixedDataset([synth, ds])
    assert _label_classes(mixed) == ["noise", "rain", "snow"]
    _match_labels(mixed, ("rain", "snow", "noise"))
    assert [synth[i]["label"] for i in range(2)] == [2, 0] and synth[1]["degradation"] == "rain"


def test_prefixes_that_name_no_degradation_are_refused_for_a_labelled_network(tmp_path: Path) -> None:
    from allinone_ir.data.datasets import _label_classes, _match_labels

    for i in range(2):
        _write(tmp_path / "deg" / f"img_{i:03d}.png", torch.rand(3, 8, 8))
        _write(tmp_path / "clean" / f"img_{i:03d}.png", torch.rand(3, 8, 8))
    ds = PairedImageDataset(tmp_path / "deg", tmp_path / "clean")
    assert ds.classes == {"img": 0} and ds.unrecognised_prefixes == {"img": tmp_path / "deg" / "img_000.png"}
    with pytest.raises(DatasetError, match=r"file names such as img_000\.png give none: their prefix 'img'"):
        _match_labels(ds, ("noise", "rain"), "PIPRestormer")
    named = PairedImageDataset(tmp_path / "deg", tmp_path / "clean", classes=["img"])  # the user's own class
    assert named.unrecognised_prefixes == {} and _label_classes(named) == ["img"]
    rain = PairedImageDataset(tmp_path / "deg", tmp_path / "clean", label_from="rain")
    _match_labels(rain, ("noise", "rain"))
    assert rain[0]["label"] == 1


def test_one_spec_grammar_for_synthetic_tasks() -> None:
    x = [torch.rand(3, 16, 16)]
    ds = SyntheticDegradationDataset(x, tasks=["Noise 15", "denoise-50", "derain"], patch_size=8)
    assert [(ds[i]["degradation"], ds[i]["label"]) for i in range(3)] == [
        ("noise", 0),
        ("noise", 0),
        ("rain", 1),
    ]
    with pytest.raises(
        ValueError, match=r"unknown task 'rain_15': degradation 'rain_15': rain takes no level"
    ):
        SyntheticDegradationDataset(x, tasks=["rain_15"])


def test_synthetic_dataset_refuses_tensors_on_another_scale() -> None:
    with pytest.raises(
        UsageError,
        match=r"clean image 1: expected a float \(C, H, W\) tensor .* torch.uint8 \(x.float\(\) / 255",
    ):
        SyntheticDegradationDataset(
            [torch.rand(3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8)], tasks=["rain"]
        )
    with pytest.raises(UsageError, match=r"clean image 0 holds values from 0 to 255; expected \[0, 1\]"):
        SyntheticDegradationDataset([torch.linspace(0, 255, 192).reshape(3, 8, 8)], tasks=["rain"])
    ds = SyntheticDegradationDataset([torch.rand(3, 8, 8)], tasks=["rain"], patch_size=8)
    assert float(ds[0]["clean"].max()) <= 1.0


def test_paired_crops_are_aligned_and_sizes_checked() -> None:
    a = torch.arange(2 * 3 * 7 * 9.0).view(2, 3, 7, 9)
    for seed in range(5):
        c1, c2 = paired_random_crop([a, a + 1000], (3, 4), rng=seed)
        assert c1.shape == (2, 3, 3, 4) and torch.equal(c2 - 1000, c1)
    assert paired_random_crop([a], (7, 9), rng=0)[0].shape == a.shape
    # a size of 0 or below gave empty crops; a float size was a TypeError of unpacking
    for bad in (0, -2, (3, 0), 4.0, (2, 3, 4)):
        with pytest.raises(ValueError, match="crop size"):
            paired_random_crop([a, a], bad, rng=0)  # type: ignore[arg-type]


def test_mixup_checks_alpha_and_the_label_count() -> None:
    b = _batch()
    # alpha=nan gave NaN images; labels of another length an IndexError
    with pytest.raises(ValueError, match="alpha"):
        mixup(b, alpha=float("nan"), rng=0)
    for fn in (mixup, dmix):
        with pytest.raises(ValueError, match="4 images"):
            fn({**b, "label": torch.tensor([0, 1])}, num_classes=5, rng=0)


def test_alpha_dropped_is_one_warning_for_the_dataset_not_one_per_file(tmp_path: Path) -> None:
    import warnings

    for i in range(3):
        for sub in ("deg", "clean"):
            write_image(tmp_path / sub / f"rain_{i}.png", torch.rand(4, 16, 16))  # RGBA
    ds = PairedImageDataset(tmp_path / "deg", tmp_path / "clean")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs
            assert all(ds[i]["degraded"].shape == (3, 16, 16) for i in range(len(ds)))
    # one text, which Python's warning registry shows once per process (a worker's epoch): was 6 per epoch
    assert {str(w.message) for w in caught} == {"images with an alpha channel: it is dropped"}
