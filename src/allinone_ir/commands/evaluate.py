"""``allinone-ir evaluate``: PSNR / SSIM over paired folders, per degradation, with a named protocol.

Folder layout: ``TARGET`` holds the clean images. If it has sub-folders with images, each
sub-folder is one degradation (``TARGET/rain/*.png``, ``TARGET/haze/*.png``, ...) and the
predictions (``--pred``) or degraded inputs (``--input``) use the same sub-folder names;
otherwise the whole folder is one group. Images are paired by file stem, so ``x.jpg`` and
``x.png`` match.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .restore import add_model_arguments, load_model_from_args

__all__ = ["add_parser", "evaluate_folders", "pair_folders", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="PSNR/SSIM over paired folders, per degradation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", required=True, help="folder of clean images (sub-folders = degradations)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="folder of restored images to score")
    src.add_argument(
        "--input", help="folder of degraded images to restore with --model/--checkpoint, then score"
    )
    add_model_arguments(p)
    p.add_argument("--protocol", default="promptir", help="metric protocol: promptir (default) or basicsr")
    p.add_argument("--tile", type=int, default=None, help="tile size for --input restoration")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap")
    p.add_argument(
        "--tta", nargs="?", const="x8", default=None, choices=("flip", "x8"), help="test-time augmentation"
    )
    p.add_argument(
        "--degradation-from-folder",
        action="store_true",
        help="with --input and a PIP network: pass each sub-folder's name (rain, haze, ...) as the "
        "degradation instead of restoring blind",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run)


def _groups(root: Path) -> dict[str, Path]:
    from ..io import list_images

    subs = sorted(d for d in root.iterdir() if d.is_dir() and list_images(d))
    return {d.name: d for d in subs} if subs else {root.name: root}


def pair_folders(source: str | Path, target: str | Path) -> dict[str, list[tuple[Path, Path]]]:
    """Pair images of ``source`` and ``target`` by degradation sub-folder and file stem.

    Returns:
        ``{degradation: [(source_image, target_image), ...]}``.

    Raises:
        FileNotFoundError: If a folder is missing or a target image has no partner.
    """
    from ..io import list_images

    src_root, tgt_root = Path(source), Path(target)
    for r in (src_root, tgt_root):
        if not r.is_dir():
            raise FileNotFoundError(f"not a folder: {r}")
    tgt_groups = _groups(tgt_root)
    single = list(tgt_groups.values()) == [tgt_root]
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for name, tgt_dir in tgt_groups.items():
        src_dir = src_root if single else src_root / name
        if not src_dir.is_dir():
            raise FileNotFoundError(f"{src_dir} is missing (target has the degradation folder {name!r})")
        by_stem = {p.stem: p for p in list_images(src_dir)}
        missing = [t.name for t in list_images(tgt_dir) if t.stem not in by_stem]
        if missing:
            raise FileNotFoundError(f"no image in {src_dir} for {len(missing)} target(s): {missing[:5]}")
        pairs[name] = [(by_stem[t.stem], t) for t in list_images(tgt_dir)]
    return pairs


def evaluate_folders(
    pairs: dict[str, list[tuple[Path, Path]]],
    protocol: str = "promptir",
    restore_fn: Any = None,
) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM per degradation (and ``"average"`` over degradations).

    Args:
        pairs: From :func:`pair_folders`.
        protocol: Metric protocol name.
        restore_fn: ``None`` to score the source images as they are, or a function
            ``(image, group) -> image`` (``(3, H, W)`` tensors; ``group`` is the degradation
            sub-folder's name) applied to each source image first.

    Returns:
        ``{degradation: {"n": count, "psnr": dB, "ssim": value}}`` plus an ``"average"`` entry
        (unweighted mean over degradations, as the papers' tables).
    """
    from ..io import read_image
    from ..metrics import get_protocol

    proto = get_protocol(protocol)
    results: dict[str, dict[str, float]] = {}
    for name, items in pairs.items():
        psnrs, ssims = [], []
        for src, tgt in items:
            pred, target = read_image(src), read_image(tgt)
            if restore_fn is not None:
                pred = restore_fn(pred, name)
            if pred.shape != target.shape:
                raise ValueError(f"{src} has shape {tuple(pred.shape)}, {tgt} has {tuple(target.shape)}")
            m = proto.compute(pred, target)
            psnrs.append(m["psnr"])
            ssims.append(m["ssim"])
        results[name] = {"n": len(items), "psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}
    if len(results) > 1:
        groups = list(results.values())
        results["average"] = {
            "n": sum(g["n"] for g in groups),
            "psnr": sum(g["psnr"] for g in groups) / len(groups),
            "ssim": sum(g["ssim"] for g in groups) / len(groups),
        }
    return results


def run(args: argparse.Namespace) -> int:
    """Score predictions (or restore ``--input`` first) and print a table. Returns the exit status."""
    try:
        pairs = pair_folders(args.pred or args.input, args.target)
        restore_fn = None
        if args.input:
            from ..inference import restore

            model = load_model_from_args(args)
            by_folder = getattr(args, "degradation_from_folder", False)
            if by_folder and not getattr(model, "accepts_degradation", False):
                raise ValueError(
                    f"--degradation-from-folder needs a network that takes a degradation (PIP); "
                    f"{type(model).__name__} does not"
                )

            def restore_fn(x: Any, group: str) -> Any:
                return restore(
                    model, x, tile=args.tile, overlap=args.overlap, tta=args.tta or False, progress=False,
                    degradation=group if by_folder else None,
                )  # fmt: skip

        results = evaluate_folders(pairs, args.protocol, restore_fn)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"protocol: {args.protocol}")
    print(f"{'degradation':<16s} {'images':>6s} {'PSNR':>8s} {'SSIM':>7s}")
    for name, r in results.items():
        print(f"{name:<16s} {int(r['n']):>6d} {r['psnr']:>8.3f} {r['ssim']:>7.4f}")
    if args.json:
        out = Path(args.json)
        if out.exists():
            print(f"error: {out} exists; not overwritten", file=sys.stderr)
            return 2
        out.write_text(json.dumps({"protocol": args.protocol, "results": results}, indent=2) + "\n")
    return 0
