"""``allinone-ir evaluate``: PSNR / SSIM of predictions (or of restored ``--input`` images) against targets, per degradation."""

from __future__ import annotations

import argparse
import functools
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.datasets import _name_mapper, _name_prefix, _task_degradation
from ..errors import DatasetError, UnknownNameError, UsageError
from . import _common

__all__ = ["add_parser"]

_DESCRIPTION = """\
Each prediction (--pred) or degraded input (--input) is scored against the target of the same file
name (any image type), or of the name --name-map REGEX REPLACEMENT gives with re.sub (repeated: the
first REGEX that matches); --name-map '^(\\w+)-(\\d+)' '\\1_clean-\\2' pairs rain-6.png with rain_clean-6.png.

Degradations (--group-by): folder takes the first sub-folder (pred/rain/*.png); prefix the file name
up to the first -, _, space or dot (rain-6.png -> rain); none scores everything as one group; auto
(default) uses folder when there are sub-folders, prefix when every name has a prefix with a letter
and there are at least two of them, else none.
"""

_GROUPING_WORDS = {"folder": "sub-folder", "prefix": "file-name prefix", "none": "none"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="PSNR/SSIM over paired folders, per degradation",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", required=True, help="folder of clean images (targets)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="folder of restored images to score")
    src.add_argument("--input", help="folder of degraded images to restore with the network, then score")
    p.add_argument("--degraded", metavar="DIR", help="with --pred: the degraded inputs, scored too")
    p.add_argument(
        "--name-map", nargs=2, action="append", metavar=("REGEX", "REPLACEMENT"), help="(may be repeated)"
    )
    p.add_argument("--group-by", choices=("auto", *_GROUPING_WORDS), default="auto", help="(see above)")
    p.add_argument("--skip-unpaired", action="store_true", help="score images with a target, list the others")
    p.add_argument("--all-targets", action="store_true", help="fail unless every target has a prediction")
    _common.add_model_arguments(p, random_weights_option=True)
    p.add_argument("--protocol", default="promptir", help="metric protocol: promptir (default) or basicsr")
    _common.add_restore_arguments(p)
    p.add_argument(
        "--degradation-from-group",
        "--degradation-from-folder",
        dest="degradation_from_folder",
        action="store_true",
        help="with --input and a PIP network: each group's name is the degradation (not blind)",
    )
    p.add_argument("--json", help="also write the results to this JSON file (a new file)")
    p.set_defaults(func=run)


@dataclass
class Pairing:
    """Sorted ``{degradation: [(source, target), ...]}``, the grouping used and what is unpaired."""

    groups: dict[str, list[tuple[Path, Path]]]
    group_by: str
    unpaired: list[Path]
    unmatched_targets: list[Path]


def group_of(rel: Path, group_by: str) -> str:
    """The degradation of the image at ``rel`` under the source folder (``"all"`` if none)."""
    if group_by == "folder" and len(rel.parts) > 1:
        return rel.parts[0]
    return _name_prefix(rel.stem) if group_by == "prefix" else "all"


def _finder(root: Path) -> Callable[[Path, str], Path | None]:
    """``find(rel, name)``: the image ``name`` in ``root``'s folder of ``rel`` or at its top, else one of its stem."""
    from ..io import IMAGE_EXTENSIONS, _images_by_stem

    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    by_stem = functools.cache(lambda folder: _images_by_stem(folder) if folder.is_dir() else {})

    def find(rel: Path, name: str) -> Path | None:
        folders = (root / rel.parent, root)
        found = next((f / name for f in folders if (f / name).is_file()), None)
        if found is not None and found.suffix.lower() in IMAGE_EXTENSIONS:
            return found
        for f in folders:
            if len(hits := by_stem(f).get(Path(name).stem, [])) > 1:
                names = ", ".join(h.name for h in hits)
                raise DatasetError(
                    f"{rel}: {len(hits)} images of its name in {f} ({names}); keep the target only"
                )
            if hits:
                return hits[0]
        return None

    return find


def pair_images(
    source: str | Path,
    target: str | Path,
    *,
    name_map: Sequence[tuple[str, str]] = (),
    group_by: str = "auto",
    skip_unpaired: bool = False,
    all_targets: bool = False,
) -> Pairing:
    """Pair every image of ``source`` (and its sub-folders, unless by prefix) with its target."""
    from ..io import list_images

    src_root, tgt_root = Path(source), Path(target)
    sources = list_images(src_root)
    find = _finder(tgt_root)
    if group_by != "prefix":  # the target folder is no degradation when it lies in the source's
        folders = [d for d in sorted(src_root.iterdir()) if d.is_dir() and d.resolve() != tgt_root.resolve()]
        sources += [p for d in folders for p in list_images(d)]
    if not sources:
        raise DatasetError(f"no images in {src_root}")
    rels = [p.relative_to(src_root) for p in sources]
    if group_by == "auto":
        prefixes = [_name_prefix(r.stem) for r in rels]
        # a name has a prefix when a separator ends it (the prefix is then shorter than the stem)
        has_prefix = all(p != r.stem and any(ch.isalpha() for ch in p) for p, r in zip(prefixes, rels))
        by_prefix = "prefix" if has_prefix and len(set(prefixes)) >= 2 else "none"
        group_by = "folder" if any(len(r.parts) > 1 for r in rels) else by_prefix
    mapper = _name_mapper(name_map, "--name-map")
    groups: dict[str, list[tuple[Path, Path]]] = {}
    unpaired: list[tuple[Path, str]] = []
    for src, rel in zip(sources, rels):
        wanted = mapper(src.name)
        if (found := find(rel, wanted)) is None:
            unpaired.append((src, str(tgt_root / rel.parent / wanted)))
        else:
            groups.setdefault(group_of(rel, group_by), []).append((src, found))
    if unpaired and not skip_unpaired:
        shown = _first([f"{s} -> {t}" for s, t in unpaired], sep="; ")
        hint = "" if name_map else " (pass --name-map REGEX REPLACEMENT if the names differ)"
        raise DatasetError(
            f"{len(unpaired)} of {len(sources)} image(s) in {src_root} have no target{hint}: {shown}; "
            "pass --skip-unpaired to score only the others"
        )
    if not groups:
        raise DatasetError(f"no image in {src_root} has a target in {tgt_root}")
    used = {t.resolve() for pairs in groups.values() for _, t in pairs} | {s.resolve() for s in sources}
    unmatched = [t for t in list_images(tgt_root, recursive=True) if t.resolve() not in used]
    if all_targets and unmatched:
        names = _first([str(t.relative_to(tgt_root)) for t in unmatched])
        raise DatasetError(f"{len(unmatched)} target image(s) in {tgt_root} have no prediction: {names}")
    return Pairing(
        {g: sorted(groups[g]) for g in sorted(groups)}, group_by, [s for s, _ in unpaired], unmatched
    )


def evaluate_folders(
    pairs: dict[str, list[tuple[Path, Path]]],
    protocol: str,
    restore_fn: Callable[[Any, str], Any] | None,
    inputs: dict[Path, Path] | None,
) -> dict[str, dict[str, float]]:
    """``{degradation: {"n", "psnr", "ssim"}}``; the inputs' scores too with ``restore_fn`` or ``inputs``."""
    from ..io import read_image
    from ..metrics import get_protocol

    proto = get_protocol(protocol)

    def scores(path: Path, image: Any, tgt: Path, target: Any, prefix: str = "") -> dict[str, float]:
        if image.shape != target.shape:
            raise DatasetError(
                f"size mismatch: {path} is {image.shape[2]}x{image.shape[1]} but its target {tgt} is "
                f"{target.shape[2]}x{target.shape[1]}"
            )
        if _is_gray(image) and not _is_gray(target):
            gray.append(str(path))
        try:
            row = {prefix + k: v for k, v in proto.compute(image, target).items()}
        except UsageError as exc:  # an image smaller than the SSIM window: which one
            raise DatasetError(f"{path}: {exc}") from exc
        if math.isinf(row[prefix + "psnr"]):
            equal.append(str(path))
        return row

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:  # with the gain in dB over the inputs
        m = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k not in ("n", "gain_db")}
        return m | ({"gain_db": m["psnr"] - m["input_psnr"]} if "input_psnr" in m else {})

    results: dict[str, dict[str, float]] = {}
    equal: list[str] = []
    gray: list[str] = []
    for name, items in pairs.items():
        rows = []
        for src, tgt in items:
            source, target = read_image(src), read_image(tgt)
            row = scores(src, restore_fn(source, name) if restore_fn is not None else source, tgt, target)
            if restore_fn is not None:
                row |= scores(src, source, tgt, target, "input_")
            elif inputs is not None:
                row |= scores(inputs[src], read_image(inputs[src]), tgt, target, "input_")
            rows.append(row)
        results[name] = {"n": len(items), **mean(rows)}
    if gray:
        warnings.warn(
            f"{len(gray)} grayscale image(s) scored against colour targets: {_first(gray)}", stacklevel=2
        )
    if equal:
        warnings.warn(f"{len(equal)} image(s) equal their target (PSNR inf): {_first(equal)}", stacklevel=2)
    if len(results) > 1:
        results["average"] = {"n": sum(r["n"] for r in results.values()), **mean(list(results.values()))}
    return results


def _degraded_inputs(pairing: Pairing, pred_root: Path, root: Path) -> dict[Path, Path]:
    """Each prediction's degraded input in ``root``: the same relative name, or the same stem (any image type)."""
    find = _finder(root)
    inputs = {
        p: find(p.relative_to(pred_root), p.name) for pairs in pairing.groups.values() for p, _ in pairs
    }
    if missing := [str(p.relative_to(pred_root)) for p, found in inputs.items() if found is None]:
        raise DatasetError(
            f"{len(missing)} prediction(s) have no degraded input in {root} (the same file name, any image "
            f"type): {_first(missing)}"
        )
    return {p: d for p, d in inputs.items() if d is not None}


def run(args: argparse.Namespace) -> int:
    from ..metrics import get_protocol

    try:
        get_protocol(args.protocol)
    except UnknownNameError as exc:
        raise UsageError(f"--protocol: {exc}") from exc
    report = _common.new_json_path(args.json)
    if args.degraded and not args.pred:
        raise UsageError("--degraded goes with --pred (with --input the inputs are scored anyway)")
    source = args.pred or args.input
    if args.pred and Path(args.pred).resolve() == Path(args.target).resolve():
        raise UsageError(
            f"--pred and --target are the same folder ({args.target}): every image is its own target"
        )
    options = {k: getattr(args, k) for k in ("group_by", "skip_unpaired", "all_targets")}
    name_map = [(m[0], m[1]) for m in args.name_map or ()]
    pairing = pair_images(source, args.target, name_map=name_map, **options)
    restore_fn = _restorer(args) if args.input else None
    inputs = _degraded_inputs(pairing, Path(args.pred), Path(args.degraded)) if args.degraded else None
    results = evaluate_folders(pairing.groups, args.protocol, restore_fn, inputs)
    scored = sum(map(len, pairing.groups.values()))
    summary = f"scored {scored} image(s) of {source} against {args.target}"
    summary += f" (degradation from: {_GROUPING_WORDS[pairing.group_by]})"
    if pairing.unmatched_targets:
        summary += f"; {len(pairing.unmatched_targets)} target image(s) have no prediction"
    if pairing.unpaired:
        summary += f"; skipped {len(pairing.unpaired)} without a target"
        names = _first([p.name for p in pairing.unpaired], 10)
        print(f"skipped {len(pairing.unpaired)} image(s) without a target: {names}", file=sys.stderr)
    print(f"{summary}\nprotocol: {args.protocol}")
    with_input = bool(args.input or args.degraded)
    header = f"{'degradation':<16s} {'images':>6s} {'PSNR':>8s} {'SSIM':>7s}"
    print(header + (f" {'input PSNR':>10s} {'gain dB':>8s} {'input SSIM':>10s}" if with_input else ""))
    for name, r in results.items():
        row = f"{name:<16s} {int(r['n']):>6d} {r['psnr']:>8.3f} {r['ssim']:>7.4f}"
        if with_input:
            row += f" {r['input_psnr']:>10.3f} {r['gain_db']:>+8.3f} {r['input_ssim']:>10.4f}"
        print(row)
    if report is not None:
        _common.write_json(
            report,
            {
                "protocol": args.protocol,
                "group_by": pairing.group_by,
                "scored": scored,
                "skipped_without_target": [str(p) for p in pairing.unpaired],
                "targets_without_prediction": len(pairing.unmatched_targets),
                "results": results,
            },
        )
    return 0


def _restorer(args: argparse.Namespace) -> Callable[[Any, str], Any]:
    """``(image, group) -> restored image`` with the network of the options (told the group with PIP)."""
    from ..inference import restore

    model = _common.load_model_from_args(args, require_weights=True)
    by_group = args.degradation_from_folder
    if by_group and not getattr(model, "accepts_degradation", False):
        raise UsageError(
            f"--degradation-from-group needs a network that takes a degradation (PIP); "
            f"{type(model).__name__} does not"
        )

    def restore_fn(x: Any, group: str) -> Any:
        # noise_25 -> noise; a name of the network's own is passed as it is
        degradation = _task_degradation(group) if by_group else None
        try:
            return restore(model, x, **_common.restore_options(args), progress=False, degradation=degradation)
        except UsageError as exc:  # the network's own checks (channels, degradation name, tile)
            raise UsageError(f"cannot restore an image of group {group!r}: {exc}") from exc

    return restore_fn


def _is_gray(image: Any) -> bool:
    """Whether the ``(3, H, W)`` image is one grey picture in all its channels (as a grayscale file reads)."""
    same = (image[0] == image[1]).all() and (image[1] == image[2]).all()
    return bool(same and image.amax() > image.amin())


def _first(items: list[str], n: int = 5, sep: str = ", ") -> str:
    return sep.join(items[:n]) + (f"{sep}..." if len(items) > n else "")
