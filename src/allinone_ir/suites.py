"""Benchmark suites: the all-in-one papers' test sets, laid out and scored as their official test code does.

A suite is a list of tasks (one column of a paper's table each). Every task names a folder under
the suite's root (the ``test/`` folder of the PromptIR / AdaIR layouts), the number of images the
full test set has, how degraded and clean images pair, and where its degraded inputs come from
(files, or Gaussian noise drawn from the clean images). The protocol is the official one of
PromptIR (``va1shn9v/PromptIR``: ``test.py``, ``utils/dataset_utils.py``, ``utils/image_utils.py``,
``utils/val_utils.py``), which AdaIR (``c-yn/AdaIR``) keeps and extends to five tasks:

- every image is read as RGB and centre-cropped to a multiple of 16 (``crop_img(..., base=16)``),
  the degraded input and the clean image alike;
- denoising: the noisy input is ``np.clip(clean + np.random.randn(*clean.shape) * sigma, 0, 255)
  .astype(np.uint8)`` (truncated, not rounded) on the cropped uint8 image, with the random state
  seeded once, ``np.random.seed(0)``, before everything, and the noise drawn image after image for
  sigma 15, then 25, then 50 (``test.py`` runs the three sigmas in that order in one process). The
  official code walks the images in ``os.listdir`` order, which depends on the file system; here
  they are walked in sorted name order, so an image's noise is the same on every machine (and may
  differ from the official run on a given machine: the average over the set moves by a few
  hundredths of a dB at most, the same noise statistics being drawn). The noise of sigma 25 is
  the second pass over the images even when only sigma 25 is scored (the five-task suite), as in
  AdaIR's five-task test (``test.py --mode 6`` scores sigma 15 and 50 too);
- PSNR and SSIM as scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity`` on RGB
  in [0, 1] (data range 1, 7x7 uniform window), the output clipped to [0, 1], averaged over the
  images (:data:`allinone_ir.metrics.PROMPTIR_PROTOCOL`); a table's average is the mean of its
  columns.

The ``restormer-deraining`` suite is Restormer's (``swz30/Restormer``: ``Deraining/test.py``,
``Deraining/evaluate_PSNR_SSIM.m``): no crop, the output rounded to 8 bits (``img_as_ubyte``, PNG),
PSNR and SSIM on MATLAB's ``rgb2ycbcr`` luma (rounded to 8 bits) with Wang et al.'s Gaussian SSIM
(11x11, sigma 1.5, data range 255), averaged over the images, then over the five test sets.

``protocol="moce_ir"`` scores as MoCE-IR's ``src/test.py``: SSIM with a Gaussian window (scikit-image's
``gaussian_weights=True``) and the noise of the suite's own sigmas only (its README runs five-task's
sigma 25 alone: the first pass). PIP's test code draws unseeded noise and scores 50 GoPro images: it
cannot be reproduced exactly, and the ``promptir`` protocol is the closest.

Use :func:`check_suite` to see what of a layout is there, :func:`run_suite` to score a network and
:func:`published_rows` for the papers' published rows of a suite.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import DatasetError, UnknownNameError

__all__ = ["check_suite", "list_suites", "published_rows", "run_suite"]

#: The image extensions a task's folders are searched for (``os.listdir`` takes every file in the official code).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Crop base of ``crop_img(..., base=16)`` in PromptIR's ``utils/dataset_utils.py`` (test datasets).
_CROP_BASE = 16
#: Seed of ``np.random.seed(0)`` in PromptIR's and AdaIR's ``test.py``, set once before the tests.
_NOISE_SEED = 0
#: The order the official ``test.py`` draws the noise in: sigma 15, then 25, then 50.
_SIGMA_ORDER = (15, 25, 50)


@dataclass(frozen=True)
class _Task:
    """One column of a suite's table."""

    key: str  # the JSON key: denoise_15, derain, dehaze, deblur, lowlight
    title: str  # the table's column title
    folder: str  # under the suite's root
    expected: int  # images in the full test set
    pairing: str  # "noise" (clean images only), "same_name" (input/ and target/), "sots" (prefix to "_")
    degradation: str  # the library's degradation name (for the docs; networks run blind)
    sigma: int | None = None


# Sources: PromptIR test.py (denoise_path "test/denoise/" + "bsd68/", derain_path "test/derain/" + "Rain100L/",
# dehaze_path "test/dehaze/"); utils/dataset_utils.py DenoiseTestDataset (every file of bsd68/, noise per
# image) and DerainDehazeDataset._get_gt_path (derain: "input" -> "target" in the path, same file name;
# dehaze: target/<input name up to the first "_">.png). Counts: CBSD68 has 68 images, Rain100L's test set
# 100 pairs, SOTS outdoor 500 hazy images (PromptIR paper, section 4; README "Datasets").
_DENOISE = {
    s: _Task(f"denoise_{s}", f"CBSD68 s={s}", "denoise/bsd68", 68, "noise", f"noise_{s}", s)
    for s in _SIGMA_ORDER
}
_DERAIN = _Task("derain", "Rain100L", "derain/Rain100L", 100, "same_name", "rain")
_DEHAZE = _Task("dehaze", "SOTS", "dehaze", 500, "sots", "haze")
# AdaIR test.py: gopro_path "data/test/deblur/" + "gopro/", enhance_path "data/test/enhance/" + "lol/";
# dataset_utils.py DerainDehazeDataset._get_gt_path for "deblur" and "enhance": "input" -> "target", same
# file name; the same crop_img(base=16) and compute_psnr_ssim (RGB, scikit-image). GoPro's test set has
# 1111 pairs, LOL-v1's evaluation set 15 (AdaIR paper, section 4.1).
_DEBLUR = _Task("deblur", "GoPro", "deblur/gopro", 1111, "same_name", "blur")
_LOWLIGHT = _Task("lowlight", "LOL", "enhance/lol", 15, "same_name", "lowlight")

# Restormer Deraining/test.py: datasets = ['Rain100L', 'Rain100H', 'Test100', 'Test1200', 'Test2800'], read from
# <input_dir>/test/<dataset>/input/ (*.png and *.jpg, natsorted), each padded (reflect) to a multiple of 8,
# restored, clamped and saved as <input stem>.png via img_as_ubyte; no crop. Deraining/evaluate_PSNR_SSIM.m pairs
# results/<dataset>/ with Datasets/test/<dataset>/target/ by their position in MATLAB's dir() listings, scores the
# luma of rgb2ycbcr (uint8) with compute_psnr (peak 255) and SSIM_index (fspecial('gaussian', 11, 1.5), L = 255,
# 'valid' filtering), averages over the images, then over the five sets. The columns follow the paper's Table 1
# order (Test100, Rain100H, Rain100L, Test2800, Test1200); the counts are those the sets are named after.
_RESTORMER_DERAIN = tuple(
    _Task(name.lower(), name, name, count, "same_name", "rain")
    for name, count in (
        ("Test100", 100),
        ("Rain100H", 100),
        ("Rain100L", 100),
        ("Test2800", 2800),
        ("Test1200", 1200),
    )
)


@dataclass(frozen=True)
class _Suite:
    tasks: tuple[_Task, ...]
    protocol: str  # "promptir" (RGB, scikit-image) or "matlab_y" (Restormer's evaluate_PSNR_SSIM.m)
    crop: int  # centre crop to a multiple of this (0: none)


#: What each protocol measures, for the tables' headers.
PROTOCOL_TEXT = {
    "promptir": "promptir (RGB, scikit-image SSIM, crop to a multiple of 16)",
    "moce_ir": "moce_ir (RGB, Gaussian-window SSIM, crop to a multiple of 16; MoCE-IR's src/test.py)",
    "matlab_y": "matlab_y (Y of rgb2ycbcr on 8-bit outputs, Gaussian SSIM, no crop; Restormer's evaluate_PSNR_SSIM.m)",
}

_SUITES: dict[str, _Suite] = {
    # PromptIR / AdaIR / MoCE-IR / PIP three-task table: CBSD68 15, 25, 50, Rain100L, SOTS (PromptIR Table 1).
    "three-task": _Suite(
        (_DENOISE[15], _DENOISE[25], _DENOISE[50], _DERAIN, _DEHAZE),
        "promptir",
        _CROP_BASE,
    ),
    # AdaIR five-task table (Table 2): dehazing, deraining, denoising (sigma 25), deblurring, low-light; here in
    # the three-task order followed by the two new columns, as AdaIR's test.py --mode 6 runs them.
    "five-task": _Suite(
        (_DENOISE[25], _DERAIN, _DEHAZE, _DEBLUR, _LOWLIGHT),
        "promptir",
        _CROP_BASE,
    ),
    "restormer-deraining": _Suite(
        _RESTORMER_DERAIN,
        "matlab_y",
        0,
    ),
}

# SOTS outdoor hazy images are named <clean id>_<atmospheric light>_<beta>: 0001_0.8_0.2.jpg -> 0001.png.
_SOTS_NAME = re.compile(r"^(\d+)_[\d.]+_[\d.]+$")
# Rain100L as downloaded names the pairs rain-001.png / norain-001.png; the PromptIR layout wants equal names.
_RAIN100L_NAME = re.compile(r"^(?:no)?rain-(\d+)$")


def list_suites() -> dict[str, list[str]]:
    """The suites and their tasks' keys, in the order of the papers' tables.

    Returns:
        ``{suite: [task key, ...]}``.

    Examples:
        >>> list_suites()["three-task"]
        ['denoise_15', 'denoise_25', 'denoise_50', 'derain', 'dehaze']
    """
    return {name: [t.key for t in suite.tasks] for name, suite in _SUITES.items()}


def _suite(name: str) -> _Suite:
    if name not in _SUITES:
        raise UnknownNameError(f"unknown benchmark suite {name!r}; known: {', '.join(_SUITES)}")
    return _SUITES[name]


def _suite_tasks(name: str, tasks: Sequence[str] | None) -> list[_Task]:
    all_tasks = _suite(name).tasks
    if tasks is None:
        return list(all_tasks)
    keys = [t.key for t in all_tasks]
    unknown = [t for t in tasks if t not in keys]
    if unknown:
        raise UnknownNameError(
            f"suite {name!r} has no task {', '.join(map(repr, unknown))}; its tasks: {', '.join(keys)}"
        )
    return [t for t in all_tasks if t.key in tasks]  # the suite's order, whatever the order asked


def _images(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name (the official code takes ``os.listdir``'s order)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _target_for(task: _Task, source: Path, targets: dict[str, Path]) -> Path | None:
    """The target of a degraded image under the task's pairing rule (a target of another extension too)."""
    stem = source.stem
    if task.pairing == "sots":
        m = _SOTS_NAME.match(stem)
        if m is None:
            return None
        stem = m.group(1)
    return targets.get(stem)


def _misnamed_hint(task: _Task, source: Path) -> str | None:
    """Why a degraded image without a target is misnamed, when its name says so."""
    if task.pairing == "sots" and _SOTS_NAME.match(source.stem) is None:
        return f"{source.name}: SOTS hazy images are named <id>_<A>_<beta> (0001_0.8_0.2.jpg pairs with 0001.png)"
    m = _RAIN100L_NAME.match(source.stem)
    if task.pairing == "same_name" and m is not None:
        return (
            f"{source.name}: rename the pair to the same name in input/ and target/ (e.g. {m.group(1)}.png)"
        )
    return None


@dataclass
class _Layout:
    task: _Task
    folder: Path
    pairs: list[tuple[Path, Path | None]]  # (degraded or clean image, target); target None for noise tasks
    missing: list[str]
    misnamed: list[str]


def _scan(task: _Task, root: Path) -> _Layout:
    folder = root / task.folder
    missing: list[str] = []
    misnamed: list[str] = []
    if task.pairing == "noise":
        images = _images(folder)
        if not folder.is_dir():
            missing.append(f"folder {folder}")
        return _Layout(task, folder, [(p, None) for p in images], missing, misnamed)
    inputs, target_dir = _images(folder / "input"), folder / "target"
    for sub in (folder / "input", target_dir):
        if not sub.is_dir():
            missing.append(f"folder {sub}")
    targets: dict[str, Path] = {}
    for t in _images(target_dir):
        targets.setdefault(t.stem, t)
    pairs: list[tuple[Path, Path | None]] = []
    for src in inputs:
        tgt = _target_for(task, src, targets)
        if tgt is not None:
            pairs.append((src, tgt))
            continue
        hint = _misnamed_hint(task, src)
        if hint is not None:
            misnamed.append(hint)
        else:
            expected = _SOTS_NAME.match(src.stem).group(1) if task.pairing == "sots" else src.stem  # type: ignore[union-attr]
            missing.append(f"target {target_dir / (expected + '.png')} (for {src.name})")
    return _Layout(task, folder, pairs, missing, misnamed)


def _root(root: str | Path, tasks: Sequence[_Task]) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"benchmark root {root} is not a folder (expected the test/ folder of the layout)")
    # accept the folder above test/ (PromptIR: test/..., AdaIR: data/test/..., Restormer: Datasets/test/...)
    tops = {t.folder.split("/")[0] for t in tasks}
    if not any((root / top).is_dir() for top in tops):
        for above in ("test", "data/test", "Datasets/test"):
            if (root / above).is_dir():
                return root / above
    return root


def check_suite(name: str, root: str | Path, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """What of a suite's layout is under ``root``: per task, the images found, missing and misnamed.

    Args:
        name: The suite (see :func:`list_suites`).
        root: The ``test/`` folder of the layout (or the folder holding ``test/``, ``data/test/`` or
            ``Datasets/test/``).
        tasks: Task keys to check (default: all of the suite's).

    Returns:
        ``{task key: {"folder", "expected", "found", "missing", "misnamed", "ready", "complete"}}`` in the
        suite's order: ``found`` is the number of usable images (noise tasks) or pairs, ``missing`` and
        ``misnamed`` lists of lines naming a folder or file, ``ready`` says the task can run (at least one
        image), ``complete`` that it has the full test set and nothing missing or misnamed.

    Raises:
        DatasetError: If ``root`` is not a folder.
        UnknownNameError: If the suite or a task is unknown.

    Examples:
        >>> import tempfile
        >>> check_suite("three-task", tempfile.mkdtemp())["derain"]["found"]
        0
    """
    chosen = _suite_tasks(name, tasks)
    base = _root(root, chosen)
    report: dict[str, dict[str, Any]] = {}
    for task in chosen:
        lay = _scan(task, base)
        found = len(lay.pairs)
        report[task.key] = {
            "folder": str(lay.folder),
            "expected": task.expected,
            "found": found,
            "missing": lay.missing,
            "misnamed": lay.misnamed,
            "ready": found > 0,
            "complete": found == task.expected and not lay.missing and not lay.misnamed,
        }
    return report


def _crop(arr: np.ndarray, base: int = _CROP_BASE) -> np.ndarray:
    """Centre crop to a multiple of ``base``, as PromptIR's ``crop_img`` (the odd pixel goes at the end)."""
    h, w = arr.shape[:2]
    ch, cw = h % base, w % base
    return arr[ch // 2 : h - ch + ch // 2, cw // 2 : w - cw + cw // 2]


def _read_rgb(path: Path, crop: int = _CROP_BASE) -> np.ndarray:
    """An image as cropped ``(H, W, 3)`` uint8 (8-bit files as stored; 16-bit ones scaled to 8 bits)."""
    from .io import read_image_array

    arr = read_image_array(path)
    if arr.dtype != np.uint8:
        arr = np.clip(
            np.rint(arr.astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 1.0) * 255), 0, 255
        )
        arr = arr.astype(np.uint8)
    return _crop(arr, crop) if crop else arr


def _noisy_images(
    cleans: Sequence[np.ndarray], sigma: int, order: Sequence[int] = _SIGMA_ORDER
) -> Iterator[np.ndarray]:
    """The official noisy inputs of one sigma, for the cropped clean images in their (sorted) order.

    A private ``RandomState(0)`` gives the stream of ``np.random.seed(0)``; the passes of the sigmas before
    ``sigma`` in ``order`` are drawn (and dropped) first. The process's random state is untouched.
    """
    rng = np.random.RandomState(_NOISE_SEED)
    for _earlier in order[: list(order).index(sigma)]:
        for clean in cleans:
            rng.randn(*clean.shape)
    for clean in cleans:
        noise = rng.randn(*clean.shape)
        yield np.clip(clean + noise * sigma, 0, 255).astype(np.uint8)


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _task_inputs(
    lay: _Layout, crop: int, order: Sequence[int] = _SIGMA_ORDER
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, degraded, clean)`` cropped uint8 arrays of a task, in sorted name order."""
    if lay.task.pairing == "noise":
        cleans = [_read_rgb(p, crop) for p, _ in lay.pairs]
        noisy_images = _noisy_images(cleans, lay.task.sigma or 0, order)
        for (path, _), clean, noisy in zip(lay.pairs, cleans, noisy_images):
            yield path.stem, noisy, clean
        return
    for src, tgt in lay.pairs:
        assert tgt is not None  # paired tasks always have a target
        degraded, clean = _read_rgb(src, crop), _read_rgb(tgt, crop)
        if degraded.shape != clean.shape:
            raise DatasetError(
                f"size mismatch{f' after the crop to a multiple of {crop}' if crop else ''}: {src} is "
                f"{degraded.shape[1]}x{degraded.shape[0]}, its target {tgt} {clean.shape[1]}x{clean.shape[0]}"
            )
        yield src.stem, degraded, clean


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` image in [0, 1] as ``(H, W, 3)`` uint8, rounded as ``img_as_ubyte``."""
    return np.rint(image.clamp(0, 1).permute(1, 2, 0).double().numpy() * 255).astype(np.uint8)


def _matlab_y(arr: np.ndarray) -> torch.Tensor:
    """The luma of MATLAB's ``rgb2ycbcr`` on uint8 RGB (rounded to 8 bits as MATLAB does), as ``(1, 1, H, W)``."""
    rgb = arr.astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return torch.from_numpy(np.floor(y + 0.5))[None, None]  # MATLAB rounds halves away from zero


def _ssim_gaussian_sample(output: torch.Tensor, target: torch.Tensor) -> float:
    """scikit-image's ``structural_similarity(..., gaussian_weights=True, data_range=1)`` of two RGB images.

    An 11x11 Gaussian window (sigma 1.5) with the sample covariance (121 / 120), as MoCE-IR's ``calc_ssim``.
    """
    import torch.nn.functional as F

    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    kernel = torch.outer(g, g).div(torch.outer(g, g).sum()).expand(3, 1, 11, 11)
    x, y = output.double().clamp(0, 1)[None], target.double()[None]

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=3)

    mx, my, norm = filt(x), filt(y), 121 / 120
    vx, vy = norm * (filt(x * x) - mx * mx), norm * (filt(y * y) - my * my)
    vxy = norm * (filt(x * y) - mx * my)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def _scores(protocol: str, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of a ``(3, H, W)`` output in [0, 1] against its target, under the suite's protocol."""
    from .metrics import PROMPTIR_PROTOCOL, psnr, ssim

    if protocol == "promptir":
        return PROMPTIR_PROTOCOL.compute(output, target)
    if protocol == "moce_ir":  # src/test.py: the same PSNR, SSIM with gaussian_weights=True
        return {
            "psnr": PROMPTIR_PROTOCOL.compute(output, target)["psnr"],
            "ssim": _ssim_gaussian_sample(output, target),
        }
    # evaluate_PSNR_SSIM.m: the results are 8-bit PNGs (img_as_ubyte rounds), the luma is uint8
    a, b = (_matlab_y(_to_uint8(t)) for t in (output, target))
    return {
        "psnr": float(psnr(a, b, data_range=255.0)),
        "ssim": float(ssim(a, b, data_range=255.0, window="gaussian")),
    }


def run_suite(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    name: str,
    root: str | Path,
    tasks: Sequence[str] | None = None,
    *,
    tile: int | None = None,
    overlap: int = 32,
    tta: bool | Literal["flip", "x8"] = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    save_images: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    """Score a network on a suite's tasks with the official protocol (see the module's description).

    Tasks are run in the suite's order; those of ``tasks`` (default: all) without any image under
    ``root`` are skipped, and listed under ``"skipped"``.

    Args:
        model: The network (run with :func:`allinone_ir.inference.restore`, blind: no degradation is given),
            or a function ``(1, 3, H, W) tensor -> tensor`` used as it is.
        name: The suite (see :func:`list_suites`).
        root: The layout's ``test/`` folder (see :func:`check_suite`).
        tasks: Task keys to run.
        tile: Tile size for :func:`~allinone_ir.inference.restore` (``None``: whole images, as the papers).
        overlap: Tile overlap.
        tta: Test-time augmentation (``False``, ``"flip"``, ``"x8"``).
        device: Where the network runs (default: its own device).
        dtype: Compute dtype: ``None`` / ``"fp32"`` (float32, as the papers), ``"bf16"`` or ``"fp16"``
            (autocast, see :func:`~allinone_ir.inference.restore`).
        save_images: A folder to write the outputs to, as ``<folder>/<task key>/<name>.png`` (8-bit); an
            existing file is not replaced.
        progress: Called as ``progress(task key, done, total)`` after each image.
        protocol: ``None`` (the suite's), or ``"moce_ir"`` for the all-in-one suites: MoCE-IR's
            ``src/test.py`` (SSIM with a Gaussian window; the noise of the suite's sigmas drawn in the
            suite's order only, so five-task's sigma 25 is the first pass).

    Returns:
        ``{"tasks": {key: {"psnr", "ssim", "count", "input_psnr", "input_ssim", "seconds", "images_per_s"}},
        "average": {"psnr", "ssim", "input_psnr", "input_ssim", "count"} (mean over the tasks run),
        "skipped": {key: reason}, "suite": name, "protocol": the protocol's name}``.

    Raises:
        DatasetError: If no task of ``tasks`` has an image, or a pair's sizes differ.
        UnknownNameError: If the suite, a task or the protocol is unknown.
    """
    from ._runtime import low_precision_dtype
    from .inference import restore
    from .io import write_image

    autocast_dtype = low_precision_dtype(dtype)
    suite = _suite(name)
    chosen = _suite_tasks(name, tasks)
    protocol = protocol or suite.protocol
    allowed = ("promptir", "moce_ir") if suite.protocol == "promptir" else (suite.protocol,)
    if protocol not in allowed:
        raise UnknownNameError(f"suite {name!r} is scored with {' or '.join(allowed)}, not {protocol!r}")
    order = _SIGMA_ORDER if protocol == "promptir" else tuple(t.sigma for t in suite.tasks if t.sigma)
    base = _root(root, chosen)
    layouts = [_scan(t, base) for t in chosen]
    skipped = {lay.task.key: f"no images under {lay.folder}" for lay in layouts if not lay.pairs}
    if len(skipped) == len(layouts):
        raise DatasetError(
            f"no task of suite {name!r} has images under {base}; run `allinone-ir benchmark --suite {name} "
            f"--root {root} --check` to see the layout expected"
        )
    out_dir = Path(save_images) if save_images is not None else None
    results: dict[str, dict[str, float]] = {}
    for lay in layouts:
        if not lay.pairs:
            continue
        key, total = lay.task.key, len(lay.pairs)
        sums = dict.fromkeys(("psnr", "ssim", "input_psnr", "input_ssim"), 0.0)
        start = time.perf_counter()
        for done, (stem, degraded, clean) in enumerate(_task_inputs(lay, suite.crop, order), 1):
            x, target = _to_tensor(degraded), _to_tensor(clean)
            if isinstance(model, torch.nn.Module):
                y = restore(
                    model,
                    x,
                    tile=tile,
                    overlap=overlap,
                    tta=tta,
                    device=device,
                    dtype=autocast_dtype,
                    progress=False,
                )
            else:
                with torch.no_grad():
                    y = model(x.unsqueeze(0))[0]
            y = y.detach().float().cpu()
            m, m_in = _scores(protocol, y, target), _scores(protocol, x, target)
            sums["psnr"] += m["psnr"]
            sums["ssim"] += m["ssim"]
            sums["input_psnr"] += m_in["psnr"]
            sums["input_ssim"] += m_in["ssim"]
            if out_dir is not None:
                write_image(out_dir / key / f"{stem}.png", y.clamp(0, 1))
            if progress is not None:
                progress(key, done, total)
        seconds = time.perf_counter() - start
        results[key] = {
            **{k: v / total for k, v in sums.items()},
            "count": total,
            "seconds": seconds,
            "images_per_s": total / seconds if seconds > 0 else float("inf"),
        }
    metric_keys = ("psnr", "ssim", "input_psnr", "input_ssim")
    average = {k: sum(r[k] for r in results.values()) / len(results) for k in metric_keys}
    average["count"] = sum(int(r["count"]) for r in results.values())
    return {
        "suite": name,
        "protocol": protocol,
        "tasks": results,
        "average": average,
        "skipped": skipped,
    }


@dataclass(frozen=True)
class _Row:
    """One published row of a paper's table: ``{task key: (PSNR, SSIM)}`` and the paper's average."""

    method: str
    source: str
    scores: dict[str, tuple[float, float]]
    average: tuple[float, float] | None  # None where the paper's average covers other columns


def _three(method: str, s15: str, s25: str, s50: str, haze: str, rain: str, avg: str, source: str) -> _Row:
    def pair(text: str) -> tuple[float, float]:
        p, q = text.split("/")
        return float(p), float(q)

    keys = ("denoise_15", "denoise_25", "denoise_50", "dehaze", "derain")
    return _Row(method, source, dict(zip(keys, map(pair, (s15, s25, s50, haze, rain)))), pair(avg))


# The PIP paper (arXiv 2312.05038; ../shared/reference/seeds/004, Table 1 "noise-rain-haze"), columns
# BSD68 sigma 15, 25, 50, SOTS, Rain100L, average; its PromptIR row equals PromptIR's own Table 1.
_PIP_T1 = "PIP paper, Table 1"
_THREE_TASK_ROWS = (
    _three("BRDNet", "32.26/0.898", "29.76/0.836", "26.34/0.836", "23.23/0.895", "27.42/0.895", "27.80/0.843", _PIP_T1),
    _three("LPNet", "26.47/0.778", "24.77/0.748", "21.26/0.552", "20.84/0.828", "24.88/0.784", "23.64/0.738", _PIP_T1),
    _three("FDGAN", "30.25/0.910", "28.81/0.868", "26.43/0.776", "24.71/0.924", "29.89/0.933", "28.02/0.883", _PIP_T1),
    _three("MPRNet", "33.54/0.927", "30.89/0.880", "27.56/0.779", "25.28/0.954", "33.57/0.954", "30.17/0.899", _PIP_T1),
    _three("DL", "33.05/0.914", "30.41/0.861", "26.90/0.740", "26.92/0.391", "32.62/0.931", "29.98/0.875", _PIP_T1),
    _three("AirNet", "33.92/0.933", "31.26/0.888", "28.00/0.797", "27.94/0.962", "34.90/0.967", "31.20/0.910", _PIP_T1),
    _three("PromptIR", "33.98/0.933", "31.31/0.888", "28.06/0.799", "30.58/0.974", "36.37/0.972", "32.06/0.913",
           "PromptIR paper, Table 1 (as in PIP's Table 1)"),
    _three("PIP-Restormer", "34.24/0.936", "31.60/0.893", "28.35/0.806", "32.09/0.981", "38.29/0.984",
           "32.91/0.920", _PIP_T1),
    # the newer methods' own three-task tables (the registry's weights entries give the same numbers)
    _three("DFPIR", "34.14/0.935", "31.47/0.893", "28.25/0.806", "31.87/0.980", "38.65/0.982", "32.88/0.919",
           "DFPIR paper (TxpHome/DFPIR README, fig/3D.png)"),
    _three("BaryIR", "34.16/0.935", "31.54/0.892", "28.25/0.802", "31.40/0.980", "39.02/0.985", "32.86/0.919",
           "BaryIR paper, Table 1, Restormer backbone (xl-tang3/BaryIR README, figs/5Dquant.png)"),
)  # fmt: skip
# PIP paper, Table 2 ("noise-rain-haze-blur-enhance", multi-task rows, all retrained by PIP's authors): columns
# sigma 15, 25, 50, SOTS, Rain100L, GoPro, LOL; its average is over those seven columns, not this suite's five.
_PIP_T2 = "PIP paper, Table 2 (trained on five tasks by PIP's authors)"
_FIVE_TASK_ROWS = (
    *(_Row(method, _PIP_T2, dict(zip(("denoise_25", "dehaze", "derain", "deblur", "lowlight"),
                                   ((a, b), (c, d), (e, f), (g, h), (i, j)))), None)
    for method, a, b, c, d, e, f, g, h, i, j in (
        ("Restormer", 30.96, 0.879, 29.50, 0.973, 36.53, 0.974, 27.31, 0.835, 23.00, 0.841),
        ("NAFNet", 31.12, 0.884, 30.67, 0.975, 37.17, 0.976, 28.32, 0.863, 23.18, 0.856),
        ("PromptIR", 31.08, 0.883, 30.16, 0.977, 37.16, 0.977, 28.73, 0.868, 23.91, 0.848),
        ("PIP-NAFNet", 31.45, 0.893, 31.75, 0.978, 37.67, 0.980, 28.08, 0.853, 23.37, 0.854),
        ("PIP-Restormer", 31.48, 0.891, 32.11, 0.979, 38.09, 0.983, 28.61, 0.861, 24.06, 0.859),
    )),
    # the newer methods' own five-task tables, whose averages are over this suite's five columns
    _Row("DFPIR", "DFPIR paper (TxpHome/DFPIR README, fig/5D.jpg)",
         dict(denoise_25=(31.29, 0.889), dehaze=(31.64, 0.979), derain=(37.62, 0.978), deblur=(28.82, 0.873),
              lowlight=(23.82, 0.843)), (30.64, 0.913)),
    _Row("BaryIR", "BaryIR paper, Table 2, Restormer backbone (xl-tang3/BaryIR README, figs/5Dquant.png)",
         dict(denoise_25=(31.43, 0.891), dehaze=(31.20, 0.979), derain=(38.10, 0.982), deblur=(29.51, 0.889),
              lowlight=(23.37, 0.854)), (30.72, 0.919)),
)  # fmt: skip
# AdaIR's and MoCE-IR's tables are images in their READMEs (figs/adair3d.PNG, assets/results_aio_3.png) and
# their papers' tables could not be read here: no row of theirs is printed rather than an unchecked one.
_PUBLISHED: dict[str, tuple[_Row, ...]] = {
    "three-task": _THREE_TASK_ROWS,
    "five-task": _FIVE_TASK_ROWS,
    # Restormer paper, Table 1 (the average of the five sets, as the registry's restormer.deraining reports it).
    "restormer-deraining": (_Row("Restormer", "Restormer paper, Table 1", {}, (33.96, 0.935)),),
}


def published_rows(name: str, results: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The papers' published rows of a suite, with their differences from a run's results.

    Args:
        name: The suite (see :func:`list_suites`).
        results: What :func:`run_suite` returned; adds ``diff_psnr`` / ``diff_ssim`` (measured minus
            published) to every column both have, and to the average when the run covers every column.

    Returns:
        ``[{"method", "source", "tasks": {key: {"psnr", "ssim"[, "diff_psnr", "diff_ssim"]}},
        "average": {...} or None}]`` in the papers' order; ``average`` is ``None`` where the paper's
        average covers other columns than the suite's.

    Raises:
        UnknownNameError: If the suite is unknown.

    Examples:
        >>> [r["method"] for r in published_rows("three-task")][-4:]
        ['PromptIR', 'PIP-Restormer', 'DFPIR', 'BaryIR']
    """
    keys = {t.key for t in _suite(name).tasks}
    measured = (results or {}).get("tasks", {})
    complete = results is not None and set(measured) == keys
    rows = []
    for row in _PUBLISHED.get(name, ()):
        tasks: dict[str, dict[str, float]] = {}
        for key, (p, q) in row.scores.items():
            tasks[key] = {"psnr": p, "ssim": q}
            if key in measured:
                tasks[key].update(diff_psnr=measured[key]["psnr"] - p, diff_ssim=measured[key]["ssim"] - q)
        average: dict[str, float] | None = None
        if row.average is not None:
            average = {"psnr": row.average[0], "ssim": row.average[1]}
            if complete and results is not None:
                got = results["average"]
                average.update(diff_psnr=got["psnr"] - row.average[0], diff_ssim=got["ssim"] - row.average[1])
        rows.append({"method": row.method, "source": row.source, "tasks": tasks, "average": average})
    return rows
