"""Benchmark suites: the all-in-one papers' test sets, laid out and scored as their official test code does.

The protocols are described in ``docs/tutorials/benchmarks.md``.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ._runtime import low_precision_dtype
from .errors import DatasetError, UnknownNameError, UsageError
from .inference import restore
from .io import _images_by_stem, array_to_tensor, list_images, read_image, tensor_to_array, write_image
from .metrics import PROMPTIR_PROTOCOL, psnr, ssim, ssim_map

__all__ = ["check_suite", "list_suites", "published_rows", "run_suite"]

#: The order the official ``test.py`` draws the noise in, after ``np.random.seed(0)``.
_SIGMA_ORDER = (15, 25, 50)


@dataclass(frozen=True)
class _Task:  # one column of a suite's table
    key: str
    folder: str
    expected: int
    pairing: str  # "noise" (clean images only), "same_name" (input/ and target/), "sots" (the id before "_")
    sigma: int | None = None


# Folders and pairing: PromptIR's test.py and utils/dataset_utils.py, AdaIR's test.py (deblur, enhance),
# Restormer's Deraining/test.py; see docs/tutorials/benchmarks.md.
_DENOISE = {s: _Task(f"denoise_{s}", "denoise/bsd68", 68, "noise", s) for s in _SIGMA_ORDER}
_DERAIN = _Task("derain", "derain/Rain100L", 100, "same_name")
_DEHAZE = _Task("dehaze", "dehaze", 500, "sots")
_DEBLUR = _Task("deblur", "deblur/gopro", 1111, "same_name")
_LOWLIGHT = _Task("lowlight", "enhance/lol", 15, "same_name")
_RESTORMER_SETS = {"Test100": 100, "Rain100H": 100, "Rain100L": 100, "Test2800": 2800, "Test1200": 1200}
_RESTORMER_DERAIN = tuple(_Task(n.lower(), n, count, "same_name") for n, count in _RESTORMER_SETS.items())


@dataclass(frozen=True)
class _Suite:
    tasks: tuple[_Task, ...]
    protocol: str  # "promptir" (RGB, scikit-image) or "matlab_y" (Restormer's evaluate_PSNR_SSIM.m)
    crop: int  # centre crop to a multiple of this (1: none)


#: What each protocol measures, for the tables' headers.
PROTOCOL_TEXT = {
    "promptir": "promptir (RGB, scikit-image SSIM, crop to a multiple of 16)",
    "moce_ir": "moce_ir (RGB, Gaussian-window SSIM, crop to a multiple of 16; MoCE-IR's src/test.py)",
    "matlab_y": "matlab_y (Y of rgb2ycbcr on 8-bit outputs, Gaussian SSIM, no crop; Restormer's evaluate_PSNR_SSIM.m)",
}

_SUITES: dict[str, _Suite] = {
    "three-task": _Suite((_DENOISE[15], _DENOISE[25], _DENOISE[50], _DERAIN, _DEHAZE), "promptir", 16),
    "five-task": _Suite((_DENOISE[25], _DERAIN, _DEHAZE, _DEBLUR, _LOWLIGHT), "promptir", 16),
    "restormer-deraining": _Suite(_RESTORMER_DERAIN, "matlab_y", 1),
}

# SOTS outdoor hazy images are named <clean id>_<atmospheric light>_<beta>: 0001_0.8_0.2.jpg -> 0001.png.
_SOTS_NAME = re.compile(r"^(\d+)_[\d.]+_[\d.]+$")
_SOTS_HINT = "SOTS hazy images are named <id>_<A>_<beta> (0001_0.8_0.2.jpg pairs with 0001.png)"
# Rain100L as downloaded names the pairs rain-001.png / norain-001.png; the PromptIR layout wants equal names.
_RAIN100L_NAME = re.compile(r"^(?:no)?rain-(\d+)$")


def list_suites() -> dict[str, list[str]]:
    """``{suite: [task key, ...]}`` in the order of the papers' tables.

    Examples:
        >>> list_suites()["three-task"]
        ['denoise_15', 'denoise_25', 'denoise_50', 'derain', 'dehaze']
    """
    return {name: [t.key for t in suite.tasks] for name, suite in _SUITES.items()}


def _suite(name: str, tasks: Sequence[str] | None = None) -> tuple[_Suite, list[_Task]]:
    if name not in _SUITES:
        raise UnknownNameError(f"unknown benchmark suite {name!r}; known: {', '.join(_SUITES)}")
    keys = [t.key for t in _SUITES[name].tasks]
    if tasks is not None and not tasks:
        raise UsageError(f"no task given; the tasks of {name!r}: {', '.join(keys)}")
    if unknown := [t for t in tasks or () if t not in keys]:
        raise UnknownNameError(f"suite {name!r} has no task {', '.join(map(repr, unknown))}; tasks: {keys}")
    return _SUITES[name], [t for t in _SUITES[name].tasks if tasks is None or t.key in tasks]


def _scan(task: _Task, root: Path) -> tuple[list[tuple[Path, Path]], list[str], list[str]]:
    """``(pairs (degraded, target), missing, misnamed)`` of a task; a noise task's clean image is its target."""
    folder = root / task.folder
    subs = [folder] if task.pairing == "noise" else [folder / "input", folder / "target"]
    missing = [f"folder {sub}" for sub in subs if not sub.is_dir()]
    # sorted by name: the official code takes os.listdir's order
    sources = list_images(subs[0]) if subs[0].is_dir() else []
    if task.pairing == "noise":
        return [(p, p) for p in sources], missing, []
    misnamed: list[str] = []
    # by stem, so that a target may have another extension than its input
    targets = _images_by_stem(subs[1]) if subs[1].is_dir() else {}
    pairs: list[tuple[Path, Path]] = []
    for src in sources:
        sots = _SOTS_NAME.match(src.stem) if task.pairing == "sots" else None
        stem = sots.group(1) if sots else src.stem
        rain = _RAIN100L_NAME.match(stem)
        if task.pairing == "sots" and sots is None:
            misnamed.append(f"{src.name}: {_SOTS_HINT}")
        elif len(targets.get(stem, [])) > 1:
            names = ", ".join(t.name for t in targets[stem])
            misnamed.append(f"{src.name}: {len(targets[stem])} targets of its name ({names}); keep one")
        elif stem in targets:
            pairs.append((src, targets[stem][0]))
        elif rain is not None:
            misnamed.append(
                f"{src.name}: rename the pair to the same name in input/ and target/ (e.g. {rain.group(1)}.png)"
            )
        else:
            missing.append(f"target {subs[1] / (stem + '.png')} (for {src.name})")
    return pairs, missing, misnamed


def _root(root: str | Path, tasks: Sequence[_Task]) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"benchmark root {root} is not a folder (expected the test/ folder of the layout)")
    # accept the folder above test/ (PromptIR: test/..., AdaIR: data/test/..., Restormer: Datasets/test/...)
    if any((root / t.folder.split("/")[0]).is_dir() for t in tasks):
        return root
    return next((root / a for a in ("test", "data/test", "Datasets/test") if (root / a).is_dir()), root)


def check_suite(name: str, root: str | Path, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """What of a suite's layout is under ``root``: per task, the images found, missing and misnamed.

    Args:
        root: The layout's ``test/`` folder, or the one holding ``test/``, ``data/test/`` or ``Datasets/test/``.
        tasks: Task keys to check (default: all).

    Returns:
        ``{task key: {"folder", "expected", "found", "missing", "misnamed", "ready", "complete"}}``, in order.

    Raises:
        DatasetError: If ``root`` is not a folder.
        UnknownNameError: If the suite or a task is unknown.

    Examples:
        >>> import tempfile
        >>> check_suite("three-task", tempfile.mkdtemp())["derain"]["found"]
        0
    """
    _, chosen = _suite(name, tasks)
    base = _root(root, chosen)
    report: dict[str, dict[str, Any]] = {}
    for task in chosen:
        pairs, missing, misnamed = _scan(task, base)
        report[task.key] = {
            "folder": str(base / task.folder),
            "expected": task.expected,
            "found": len(pairs),
            "missing": missing,
            "misnamed": misnamed,
            "ready": bool(pairs),
            "complete": len(pairs) == task.expected and not missing and not misnamed,
        }
    return report


def _crop(arr: np.ndarray, base: int = 16) -> np.ndarray:
    """Centre crop to a multiple of ``base``, as PromptIR's ``crop_img`` (the odd pixel goes at the end)."""
    h, w = arr.shape[:2]
    ch, cw = h % base, w % base
    return arr[ch // 2 : h - ch + ch // 2, cw // 2 : w - cw + cw // 2]


def _noisy_images(
    cleans: Sequence[np.ndarray], sigma: int, order: Sequence[int] = _SIGMA_ORDER
) -> Iterator[np.ndarray]:
    """The official noisy inputs of one sigma, truncated to uint8: the stream of ``np.random.seed(0)`` after
    the sigmas before it in ``order`` (the process's random state is untouched)."""
    rng = np.random.RandomState(0)
    for clean in list(cleans) * order.index(sigma):  # the draws of the sigmas before
        rng.randn(*clean.shape)
    for clean in cleans:
        yield np.clip(clean + rng.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)


def _read_cropped(path: Path, crop: int) -> np.ndarray:
    arr = _crop(tensor_to_array(read_image(path)), crop)
    if arr.size == 0:
        raise DatasetError(
            f"{path} is smaller than {crop}x{crop}: nothing is left after the crop to a multiple of {crop}"
        )
    return arr


def _task_inputs(
    task: _Task, pairs: list[tuple[Path, Path]], crop: int, order: Sequence[int]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    if task.pairing == "noise":
        cleans = [_read_cropped(p, crop) for p, _ in pairs]
        yield from zip((p.stem for p, _ in pairs), _noisy_images(cleans, task.sigma or 0, order), cleans)
        return
    for src, tgt in pairs:
        degraded, clean = (_read_cropped(p, crop) for p in (src, tgt))
        if degraded.shape != clean.shape:
            raise DatasetError(
                f"size mismatch{f' after the crop to a multiple of {crop}' if crop > 1 else ''}: {src} is "
                f"{degraded.shape[1]}x{degraded.shape[0]}, its target {tgt} {clean.shape[1]}x{clean.shape[0]}"
            )
        yield src.stem, degraded, clean


def _matlab_y(image: torch.Tensor) -> torch.Tensor:
    """The luma of MATLAB's ``rgb2ycbcr`` of a ``(3, H, W)`` image saved as 8 bits, as ``(1, 1, H, W)``."""
    rgb = torch.round(image.clamp(0, 1).double() * 255)  # img_as_ubyte
    y = 16.0 + (65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2]) / 255.0
    return torch.floor(y + 0.5)[None, None]  # MATLAB rounds halves away from zero


def _scores(protocol: str, output: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    if protocol == "matlab_y":
        a, b = _matlab_y(output), _matlab_y(target)
        return float(psnr(a, b, data_range=255.0)), float(ssim(a, b, data_range=255.0, window="gaussian"))
    scores = PROMPTIR_PROTOCOL.compute(output, target)
    if protocol == "moce_ir":  # src/test.py's calc_ssim: scikit-image's SSIM with gaussian_weights=True
        pair = output.double().clamp(0, 1)[None], target.double()[None]
        return scores["psnr"], float(ssim_map(*pair, window="gaussian", sample_covariance=True).mean())
    return scores["psnr"], scores["ssim"]


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
    """Score a network on a suite's tasks with the official protocol; tasks without images are skipped.

    Args:
        model: The network (run blind with :func:`~allinone_ir.inference.restore`, whose ``tile``,
            ``overlap``, ``tta``, ``device`` these are), or a function ``(1, 3, H, W) tensor -> tensor``.
        root: The layout's ``test/`` folder (see :func:`check_suite`).
        tasks: Task keys to run (default: all).
        dtype: ``None`` / ``"fp32"`` (as the papers), ``"bf16"`` or ``"fp16"`` (autocast).
        save_images: A folder to write the outputs to as ``<task key>/<name>.png`` (8-bit; no file replaced).
        progress: Called as ``progress(task key, done, total)`` after each image.
        protocol: ``None`` (the suite's), or ``"moce_ir"`` for the all-in-one suites (MoCE-IR's SSIM and noise).

    Returns:
        ``{"suite", "protocol", "tasks": {key: {"psnr", "ssim", "input_psnr", "input_ssim", "count", "seconds",
        "images_per_s"}}, "average": {"psnr", "ssim", "input_psnr", "input_ssim", "count"}, "skipped"}``.

    Raises:
        DatasetError: If no task of ``tasks`` has an image, or a pair's sizes differ.
        UnknownNameError: If the suite, a task or the protocol is unknown.
    """
    opts: dict[str, Any] = dict(
        tile=tile, overlap=overlap, tta=tta, device=device, dtype=low_precision_dtype(dtype)
    )
    suite, chosen = _suite(name, tasks)
    protocol = protocol or suite.protocol
    allowed = ("promptir", "moce_ir") if suite.protocol == "promptir" else (suite.protocol,)
    if protocol not in allowed:
        raise UnknownNameError(f"suite {name!r} is scored with {' or '.join(allowed)}, not {protocol!r}")
    order = _SIGMA_ORDER if protocol == "promptir" else tuple(t.sigma for t in suite.tasks if t.sigma)
    base = _root(root, chosen)
    scans = {task: _scan(task, base) for task in chosen}
    found = {task: pairs for task, (pairs, _, _) in scans.items() if pairs}
    for task, pairs in found.items():
        if left_out := [*scans[task][1], *scans[task][2]]:  # inputs without a target, misnamed inputs
            more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
            warnings.warn(
                f"{task.key}: {len(left_out)} image(s) left out, the scores are of the other {len(pairs)} "
                f"(not the papers' set): {left_out[0]}{more}; check_suite() or `--check` lists them",
                stacklevel=2,
            )
    skipped = {task.key: f"no images under {base / task.folder}" for task in chosen if task not in found}
    if not found:
        raise DatasetError(
            f"no task of suite {name!r} has images under {base}; run `allinone-ir benchmark --suite {name} "
            f"--root {root} --check` to see the layout expected"
        )
    metric_keys = ("psnr", "ssim", "input_psnr", "input_ssim")
    results: dict[str, dict[str, float]] = {}
    for task, pairs in found.items():
        key, total = task.key, len(pairs)
        sums = np.zeros(4)
        start = time.perf_counter()
        for done, (stem, degraded, clean) in enumerate(_task_inputs(task, pairs, suite.crop, order), 1):
            x, target = array_to_tensor(degraded), array_to_tensor(clean)
            if isinstance(model, torch.nn.Module):
                y = restore(model, x, progress=False, **opts)
            else:
                with torch.no_grad():
                    y = model(x.unsqueeze(0))[0]
            y = y.detach().float().cpu()
            sums += (*_scores(protocol, y, target), *_scores(protocol, x, target))
            if save_images is not None:
                write_image(Path(save_images) / key / f"{stem}.png", y.clamp(0, 1))
            if progress is not None:
                progress(key, done, total)
        seconds = time.perf_counter() - start
        results[key] = {
            **{k: float(v) / total for k, v in zip(metric_keys, sums)},
            "count": total,
            "seconds": seconds,
            "images_per_s": total / seconds if seconds > 0 else float("inf"),
        }
    average = {k: sum(r[k] for r in results.values()) / len(results) for k in metric_keys}
    average["count"] = sum(int(r["count"]) for r in results.values())
    return {"suite": name, "protocol": protocol, "tasks": results, "average": average, "skipped": skipped}


# The papers' published rows: (method, source, "PSNR/SSIM" per task of the suite in its order, then the average or
# "-" where the paper averages other columns). AdaIR's and MoCE-IR's tables could not be read: no row of theirs.
_PIP1, _PIP2 = "PIP paper, Table 1", "PIP paper, Table 2 (trained on five tasks by PIP's authors)"
_PROMPTIR1 = "PromptIR paper, Table 1 (as in PIP's Table 1)"
_DFPIR3 = "DFPIR paper (TxpHome/DFPIR README, fig/3D.png)"
_DFPIR5 = "DFPIR paper (TxpHome/DFPIR README, fig/5D.jpg)"
_BARYIR1 = "BaryIR paper, Table 1, Restormer backbone (xl-tang3/BaryIR README, figs/5Dquant.png)"
_BARYIR2 = "BaryIR paper, Table 2, Restormer backbone (xl-tang3/BaryIR README, figs/5Dquant.png)"
_PUBLISHED = {
    "three-task": (
        ("BRDNet", _PIP1, "32.26/0.898 29.76/0.836 26.34/0.836 27.42/0.895 23.23/0.895 27.80/0.843"),
        ("LPNet", _PIP1, "26.47/0.778 24.77/0.748 21.26/0.552 24.88/0.784 20.84/0.828 23.64/0.738"),
        ("FDGAN", _PIP1, "30.25/0.910 28.81/0.868 26.43/0.776 29.89/0.933 24.71/0.924 28.02/0.883"),
        ("MPRNet", _PIP1, "33.54/0.927 30.89/0.880 27.56/0.779 33.57/0.954 25.28/0.954 30.17/0.899"),
        ("DL", _PIP1, "33.05/0.914 30.41/0.861 26.90/0.740 32.62/0.931 26.92/0.391 29.98/0.875"),
        ("AirNet", _PIP1, "33.92/0.933 31.26/0.888 28.00/0.797 34.90/0.967 27.94/0.962 31.20/0.910"),
        ("PromptIR", _PROMPTIR1, "33.98/0.933 31.31/0.888 28.06/0.799 36.37/0.972 30.58/0.974 32.06/0.913"),
        ("PIP-Restormer", _PIP1, "34.24/0.936 31.60/0.893 28.35/0.806 38.29/0.984 32.09/0.981 32.91/0.920"),
        ("DFPIR", _DFPIR3, "34.14/0.935 31.47/0.893 28.25/0.806 38.65/0.982 31.87/0.980 32.88/0.919"),
        ("BaryIR", _BARYIR1, "34.16/0.935 31.54/0.892 28.25/0.802 39.02/0.985 31.40/0.980 32.86/0.919"),
    ),
    "five-task": (
        ("Restormer", _PIP2, "30.96/0.879 36.53/0.974 29.50/0.973 27.31/0.835 23.00/0.841 -"),
        ("NAFNet", _PIP2, "31.12/0.884 37.17/0.976 30.67/0.975 28.32/0.863 23.18/0.856 -"),
        ("PromptIR", _PIP2, "31.08/0.883 37.16/0.977 30.16/0.977 28.73/0.868 23.91/0.848 -"),
        ("PIP-NAFNet", _PIP2, "31.45/0.893 37.67/0.980 31.75/0.978 28.08/0.853 23.37/0.854 -"),
        ("PIP-Restormer", _PIP2, "31.48/0.891 38.09/0.983 32.11/0.979 28.61/0.861 24.06/0.859 -"),
        ("DFPIR", _DFPIR5, "31.29/0.889 37.62/0.978 31.64/0.979 28.82/0.873 23.82/0.843 30.64/0.913"),
        ("BaryIR", _BARYIR2, "31.43/0.891 38.10/0.982 31.20/0.979 29.51/0.889 23.37/0.854 30.72/0.919"),
    ),
    "restormer-deraining": (("Restormer", "Restormer paper, Table 1", "33.96/0.935"),),
}


def published_rows(name: str, results: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The papers' published rows of a suite, with their differences from a run's results.

    Args:
        results: What :func:`run_suite` returned: adds ``diff_psnr`` / ``diff_ssim`` (measured minus
            published) to every column both have, and to the average when the run covers every column.

    Returns:
        ``[{"method", "source", "tasks": {key: {"psnr", "ssim"}}, "average"}]``; ``average`` is ``None`` where
        the paper averages other columns than the suite's.

    Raises:
        UnknownNameError: If the suite is unknown.

    Examples:
        >>> [r["method"] for r in published_rows("three-task")][-4:]
        ['PromptIR', 'PIP-Restormer', 'DFPIR', 'BaryIR']
    """
    keys = [t.key for t in _suite(name)[0].tasks]
    measured = (results or {}).get("tasks", {})
    whole = results["average"] if results is not None and set(measured) == set(keys) else None

    def cell(text: str, got: dict[str, float] | None) -> dict[str, float]:
        p, q = map(float, text.split("/"))
        diff = {} if got is None else {"diff_psnr": got["psnr"] - p, "diff_ssim": got["ssim"] - q}
        return {"psnr": p, "ssim": q, **diff}

    rows = []
    for method, source, text in _PUBLISHED.get(name, ()):
        *cells, avg = text.split()
        tasks = {key: cell(c, measured.get(key)) for key, c in zip(keys, cells)}
        average = None if avg == "-" else cell(avg, whole)
        rows.append({"method": method, "source": source, "tasks": tasks, "average": average})
    return rows
