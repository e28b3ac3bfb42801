"""``allinone-ir restore``: restore files, folders and globs; PNG outputs and/or one ``.npz`` archive.

Also holds the model options shared by ``restore``, ``evaluate`` and ``info``
(``--model`` / ``--checkpoint`` / ``--model-args``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_model_arguments", "add_parser", "collect_inputs", "load_model_from_args", "run"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--checkpoint``, ``--model-args`` and ``--device`` to a sub-command parser."""
    g = p.add_argument_group("network")
    g.add_argument(
        "--model",
        help="registered model name (see `allinone-ir models`) or a save_pretrained folder; with --checkpoint "
        "it names the architecture",
    )
    g.add_argument(
        "--checkpoint", help="weights: official .ckpt/.pth, .safetensors or a save_pretrained folder"
    )
    g.add_argument("--model-args", default=None, help="JSON constructor overrides, e.g. '{\"dim\": 24}'")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Build the network chosen by the options of :func:`add_model_arguments` (eval mode, on ``--device``).

    Raises:
        SystemExit: (via ``argparse``-style message) if neither ``--model`` nor ``--checkpoint`` is given.
    """
    import torch

    from ..hub import from_pretrained, load_checkpoint
    from ..models import create_model

    overrides = json.loads(args.model_args) if args.model_args else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"--model-args must be a JSON object, got {args.model_args!r}")
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, args.model, **overrides)
    elif args.model and Path(args.model).is_dir():
        model = from_pretrained(args.model)
    elif args.model:
        model = create_model(args.model, **overrides)
        print(
            f"warning: {args.model} has random weights; pass --checkpoint for trained ones",
            file=sys.stderr,
        )
    else:
        raise ValueError("give --model NAME|FOLDER or --checkpoint PATH")
    return model.to(torch.device(args.device)).eval()


def collect_inputs(items: Iterable[str]) -> list[Path]:
    """Image files named by paths, folders (their images, sorted) and glob patterns, without duplicates.

    Raises:
        FileNotFoundError: If an item matches nothing.
    """
    from ..io import IMAGE_EXTENSIONS, list_images

    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths = list_images(p)
        elif p.is_file():
            paths = [p]
        else:
            paths = sorted(
                Path(m) for m in glob.glob(item, recursive=True) if Path(m).suffix.lower() in IMAGE_EXTENSIONS
            )
        if not paths:
            raise FileNotFoundError(f"no images found for {item!r}")
        found.extend(paths)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``restore`` sub-command."""
    p = subparsers.add_parser(
        "restore",
        help="restore images, folders or globs (tiling, TTA, npz export)",
        description="Restore images with a network. Inputs are never overwritten.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    add_model_arguments(p)
    p.add_argument("--out", help="output folder for PNG files (<input stem>.png)")
    p.add_argument("--npz", help="also write all results to this .npz archive, keyed by input file name")
    p.add_argument("--layout", choices=("chw", "hwc"), default="hwc", help="array layout in the npz (uint8)")
    p.add_argument("--tile", type=int, default=None, help="tile size in pixels (default: whole image)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default: 32)")
    p.add_argument(
        "--tta", nargs="?", const="x8", default=None, choices=("flip", "x8"),
        help="test-time augmentation: x8 self-ensemble (default when given) or flip",
    )  # fmt: skip
    p.add_argument("--degradation", default=None, help="degradation name for PIP networks, e.g. rain")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _plan_outputs(inputs: list[Path], out_dir: Path | None) -> list[Path | None]:
    if out_dir is None:
        return [None] * len(inputs)
    outs = [out_dir / f"{p.stem}.png" for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, outs):
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}; restore them separately")
        seen[dst] = src
    resolved_inputs = {p.resolve() for p in inputs}
    clash = [str(d) for d in outs if d.resolve() in resolved_inputs]
    if clash:
        raise ValueError(
            f"refusing to overwrite input files: {', '.join(clash)}; choose another --out folder"
        )
    return outs  # type: ignore[return-value]


def _npz_keys(inputs: list[Path]) -> list[str]:
    keys = [p.name for p in inputs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"several inputs share the file name(s) {dup}; the npz is keyed by file name")
    return keys


class _NpzWriter:
    """Writes arrays one by one into an .npz (a zip of .npy files), atomically on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    def close(self, commit: bool) -> None:
        self.zip.close()
        if commit:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)


def run(args: argparse.Namespace) -> int:
    """Restore every input; write PNGs to ``--out`` and/or the ``--npz`` archive. Returns the exit status."""
    from ..inference import restore
    from ..io import read_image_array, tensor_to_array, write_image

    try:
        if not args.out and not args.npz:
            raise ValueError("give --out DIR and/or --npz FILE")
        inputs = collect_inputs(args.inputs)
        out_dir = Path(args.out) if args.out else None
        outs = _plan_outputs(inputs, out_dir)
        npz = Path(args.npz) if args.npz else None
        keys = _npz_keys(inputs) if npz else []
        if npz is not None:
            if npz.resolve() in {p.resolve() for p in inputs}:
                raise ValueError(f"refusing to overwrite input file {npz}")
            if npz.suffix != ".npz":
                raise ValueError(f"--npz must end with .npz, got {npz}")
            if npz.exists() and not args.overwrite:
                raise FileExistsError(f"{npz} exists; pass --overwrite to replace it")
        existing = [str(o) for o in outs if o is not None and o.exists()]
        if existing and not args.overwrite:
            raise FileExistsError(f"output files exist ({', '.join(existing[:5])}); pass --overwrite")
        model = load_model_from_args(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import torch

    from ..io import array_to_tensor

    writer = _NpzWriter(npz) if npz is not None else None
    ok = False
    files = inputs
    try:
        if not args.quiet and len(inputs) > 1:
            try:
                from tqdm.auto import tqdm

                files = tqdm(inputs, desc="images", unit="img")
            except ImportError:
                pass
        for i, src in enumerate(files):
            arr = read_image_array(src)
            x = array_to_tensor(arr)
            y = restore(
                model, x, tile=args.tile, overlap=args.overlap, tta=args.tta or False,
                degradation=args.degradation, batch_size=args.batch_size, device=torch.device(args.device),
                progress=False if args.quiet else None,
            )  # fmt: skip
            if outs[i] is not None:
                write_image(outs[i], y, overwrite=args.overwrite)
            if writer is not None:
                a = tensor_to_array(y, np.uint8)
                writer.add(keys[i], a.transpose(2, 0, 1) if args.layout == "chw" else a)
        ok = True
    finally:
        if writer is not None:
            writer.close(commit=ok)
    where = [str(x) for x in (out_dir, npz) if x is not None]
    print(f"restored {len(inputs)} image(s) -> {', '.join(where)}", file=sys.stderr)
    return 0
