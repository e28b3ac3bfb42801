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

Use :func:`check_suite` to see what of a layout is there, :func:`run_suite` to score a network.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DatasetError, UnknownNameError

__all__ = ["check_suite", "list_suites", "run_suite"]

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

_SUITES: dict[str, tuple[_Task, ...]] = {
    # PromptIR / AdaIR / MoCE-IR / PIP three-task table: CBSD68 15, 25, 50, Rain100L, SOTS (PromptIR Table 1).
    "three-task": (_DENOISE[15], _DENOISE[25], _DENOISE[50], _DERAIN, _DEHAZE),
    # AdaIR five-task table (Table 2): dehazing, deraining, denoising (sigma 25), deblurring, low-light; here in
    # the three-task order followed by the two new columns, as AdaIR's test.py --mode 6 runs them.
    "five-task": (_DENOISE[25], _DERAIN, _DEHAZE, _DEBLUR, _LOWLIGHT),
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
    return {name: [t.key for t in tasks] for name, tasks in _SUITES.items()}


def _suite_tasks(name: str, tasks: Sequence[str] | None) -> list[_Task]:
    if name not in _SUITES:
        raise UnknownNameError(f"unknown benchmark suite {name!r}; known: {', '.join(_SUITES)}")
    all_tasks = _SUITES[name]
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


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"benchmark root {root} is not a folder (expected the test/ folder of the layout)")
    # accept the folder above test/ (PromptIR: test/..., AdaIR: data/test/...)
    for above in ("test", "data/test"):
        if not (root / "denoise").is_dir() and (root / above).is_dir():
            return root / above
    return root


def check_suite(name: str, root: str | Path, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """What of a suite's layout is under ``root``: per task, the images found, missing and misnamed.

    Args:
        name: The suite (see :func:`list_suites`).
        root: The ``test/`` folder of the layout (or the folder holding ``test/`` or ``data/test/``).
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
    base = _root(root)
    report: dict[str, dict[str, Any]] = {}
    for task in _suite_tasks(name, tasks):
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


def _read_rgb(path: Path) -> np.ndarray:
    """An image as cropped ``(H, W, 3)`` uint8 (8-bit files as stored; 16-bit ones scaled to 8 bits)."""
    from .io import read_image_array

    arr = read_image_array(path)
    if arr.dtype != np.uint8:
        arr = np.clip(
            np.rint(arr.astype(np.float64) / (65535.0 if arr.dtype == np.uint16 else 1.0) * 255), 0, 255
        )
        arr = arr.astype(np.uint8)
    return _crop(arr)


def _noisy_images(cleans: Sequence[np.ndarray], sigma: int) -> Iterator[np.ndarray]:
    """The official noisy inputs of one sigma, for the cropped clean images in their (sorted) order.

    A private ``RandomState(0)`` gives the stream of ``np.random.seed(0)``; the passes of the sigmas before
    ``sigma`` in 15, 25, 50 order are drawn (and dropped) first. The process's random state is untouched.
    """
    rng = np.random.RandomState(_NOISE_SEED)
    for _earlier in _SIGMA_ORDER[: _SIGMA_ORDER.index(sigma)]:
        for clean in cleans:
            rng.randn(*clean.shape)
    for clean in cleans:
        noise = rng.randn(*clean.shape)
        yield np.clip(clean + noise * sigma, 0, 255).astype(np.uint8)


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _task_inputs(lay: _Layout) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, degraded, clean)`` cropped uint8 arrays of a task, in sorted name order."""
    if lay.task.pairing == "noise":
        cleans = [_read_rgb(p) for p, _ in lay.pairs]
        for (path, _), clean, noisy in zip(lay.pairs, cleans, _noisy_images(cleans, lay.task.sigma or 0)):
            yield path.stem, noisy, clean
        return
    for src, tgt in lay.pairs:
        degraded, clean = _read_rgb(src), _read_rgb(tgt)  # type: ignore[arg-type]
        if degraded.shape != clean.shape:
            raise DatasetError(
                f"size mismatch after the crop to a multiple of {_CROP_BASE}: {src} is "
                f"{degraded.shape[1]}x{degraded.shape[0]}, its target {tgt} {clean.shape[1]}x{clean.shape[0]}"
            )
        yield src.stem, degraded, clean


def run_suite(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    name: str,
    root: str | Path,
    tasks: Sequence[str] | None = None,
    *,
    tile: int | None = None,
    overlap: int = 32,
    tta: bool | str = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    save_images: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
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

    Returns:
        ``{"tasks": {key: {"psnr", "ssim", "count", "input_psnr", "input_ssim", "seconds", "images_per_s"}},
        "average": {"psnr", "ssim", "input_psnr", "input_ssim", "count"} (mean over the tasks run),
        "skipped": {key: reason}, "suite": name}``.

    Raises:
        DatasetError: If no task of ``tasks`` has an image, or a pair's sizes differ.
        UnknownNameError: If the suite or a task is unknown.
    """
    from ._runtime import low_precision_dtype
    from .inference import restore
    from .io import write_image
    from .metrics import PROMPTIR_PROTOCOL

    autocast_dtype = low_precision_dtype(dtype)
    base = _root(root)
    chosen = _suite_tasks(name, tasks)
    layouts = [_scan(t, base) for t in chosen]
    skipped = {lay.task.key: f"no images under {lay.folder}" for lay in layouts if not lay.pairs}
    if len(skipped) == len(layouts):
        raise DatasetError(
            f"no task of suite {name!r} has images under {base}; run `allinone-ir benchmark --suite {name} "
            f"--root {root} --check` to see the layout expected"
        )
    out_dir = Path(save_images) if save_images is not None else None
    is_module = isinstance(model, torch.nn.Module)
    results: dict[str, dict[str, float]] = {}
    for lay in layouts:
        if not lay.pairs:
            continue
        key, total = lay.task.key, len(lay.pairs)
        sums = dict.fromkeys(("psnr", "ssim", "input_psnr", "input_ssim"), 0.0)
        start = time.perf_counter()
        for done, (stem, degraded, clean) in enumerate(_task_inputs(lay), 1):
            x, target = _to_tensor(degraded), _to_tensor(clean)
            if is_module:
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
                    y = model(x.unsqueeze(0))[0]  # type: ignore[operator]
            y = y.detach().float().cpu()
            m, m_in = PROMPTIR_PROTOCOL.compute(y, target), PROMPTIR_PROTOCOL.compute(x, target)
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
    return {"suite": name, "tasks": results, "average": average, "skipped": skipped}
