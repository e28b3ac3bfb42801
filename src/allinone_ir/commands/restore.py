"""``allinone-ir restore``: restore files, folders and globs; PNG outputs and/or one ``.npz`` archive."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageReadError, UsageError
from ._common import (
    add_model_arguments,
    load_model_from_args,
    non_negative_int,
    overwrite_flag,
    positive_int,
    with_progress,
)

__all__ = ["add_parser"]


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
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(os.path.realpath(p), p)
    return list(unique.values())


def _not_found(src: Path) -> str:
    if src.is_symlink():
        return f"a link to {os.readlink(src)}, which does not exist"
    return "no such file (removed?)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``restore`` sub-command."""
    p = subparsers.add_parser(
        "restore",
        help="restore images, folders or globs (tiling, TTA, npz export)",
        description="Restore images with a network. Inputs are never overwritten. Each PNG written keeps "
        "its input's bit depth (8/16) and channels (grayscale stays grayscale, alpha is copied back). "
        "A file that cannot be read is reported as 'skipped FILE: reason' and the others are still "
        "restored; the exit status is then 1.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    add_model_arguments(p, random_weights_option=True)
    p.add_argument("--out", help="output folder for PNG files (<input stem>.png)")
    p.add_argument(
        "--npz",
        help="also write all results to this .npz archive, keyed by input file name (the network's output "
        "channels; only the images restored)",
    )
    p.add_argument(
        "--layout", choices=("chw", "hwc"), default="hwc", help="array layout in the npz (default: hwc)"
    )
    p.add_argument(
        "--npz-dtype",
        choices=("uint8", "uint16", "float32"),
        default="uint8",
        help="array type in the npz (default: uint8, whatever the inputs' bit depth; float32 in [0, 1])",
    )
    p.add_argument(
        "--tile", type=positive_int, default=None, help="tile size in pixels (default: whole image)"
    )
    p.add_argument(
        "--overlap", type=non_negative_int, default=32, help="tile overlap in pixels (default: 32)"
    )
    p.add_argument(
        "--tta", nargs="?", const="x8", default=None, choices=("flip", "x8"),
        help="test-time augmentation: x8 self-ensemble (default when given) or flip",
    )  # fmt: skip
    p.add_argument("--degradation", default=None, help="degradation name for PIP networks, e.g. rain")
    p.add_argument("--batch-size", type=positive_int, default=4, help="tiles per forward pass")
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
            raise UsageError(f"{seen[dst]} and {src} would both be written to {dst}; restore them separately")
        seen[dst] = src
    resolved_inputs = {os.path.realpath(p) for p in inputs}
    clash = [str(d) for d in outs if os.path.realpath(d) in resolved_inputs]
    if clash:
        raise UsageError(
            f"refusing to overwrite input files: {', '.join(clash)}; choose another --out folder"
        )
    return outs  # type: ignore[return-value]


def _npz_keys(inputs: list[Path]) -> list[str]:
    keys = [p.name for p in inputs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise UsageError(f"several inputs share the file name(s) {dup}; the npz is keyed by file name")
    return keys


class _NpzWriter:
    """Writes arrays one by one into an .npz in a temporary file, renamed on a committed close, else removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self.zip: zipfile.ZipFile | None = zipfile.ZipFile(
                self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True
            )
        except BaseException:
            os.unlink(self.tmp)
            raise

    def add(self, key: str, array: np.ndarray) -> None:
        assert self.zip is not None
        try:
            with self.zip.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        except OSError as exc:
            raise self._said(exc) from exc
        self.count += 1

    def close(self, commit: bool) -> None:
        """Finish the archive and rename it to ``path`` (``commit``), or drop it; never leaves the temporary."""
        from ..io import file_mode_for

        zf, self.zip = self.zip, None
        try:
            if zf is not None:
                try:
                    zf.close()  # writes the central directory: may fail on a full disk too
                except (OSError, ValueError) as exc:
                    if zf.fp is not None:  # left open by a failed close (its flush may fail too)
                        with contextlib.suppress(OSError):
                            zf.fp.close()
                    if commit:
                        raise self._said(exc) from exc
            if commit:
                os.chmod(self.tmp, file_mode_for(self.path))  # mkstemp made it 0600
                os.replace(self.tmp, self.path)
        except OSError as exc:
            raise self._said(exc) from exc
        finally:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)

    def _said(self, exc: BaseException) -> BaseException:
        from ..io import _disk_full

        return _disk_full(exc, self.path) or exc


def run(args: argparse.Namespace) -> int:
    """Restore every input to ``--out`` and/or ``--npz``; returns 0, or 1 when some file was skipped (unreadable)."""
    import torch

    from ..inference import restore, restore_array
    from ..io import read_image_array, tensor_to_array, write_image

    if not args.out and not args.npz:
        raise UsageError("give --out DIR and/or --npz FILE")
    inputs = collect_inputs(args.inputs)
    out_dir = Path(args.out) if args.out else None
    outs = _plan_outputs(inputs, out_dir)
    npz = Path(args.npz) if args.npz else None
    keys = _npz_keys(inputs) if npz else []
    if npz is not None:
        if os.path.realpath(npz) in {os.path.realpath(p) for p in inputs}:
            raise UsageError(f"refusing to overwrite input file {npz}")
        if npz.suffix != ".npz":
            raise UsageError(f"--npz must end with .npz, got {npz}")
        if npz.exists() and not args.overwrite:
            raise FileExistsError(f"{npz} exists; pass --overwrite to replace it")
    existing = [str(o) for o in outs if o is not None and o.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"output files exist ({', '.join(existing[:5])}); pass --overwrite")
    model = load_model_from_args(args, require_weights=True)
    device = torch.device(args.device)

    def run_network(x: Any) -> Any:
        return restore(
            model, x, tile=args.tile, overlap=args.overlap, tta=args.tta or False,
            degradation=args.degradation, batch_size=args.batch_size, device=device,
            progress=False if args.quiet else None,
        )  # fmt: skip

    files, say = with_progress(inputs, quiet=args.quiet, desc="images", unit="img")
    writer = _NpzWriter(npz) if npz is not None else None
    skipped: list[Path] = []
    ok = False
    try:
        for i, src in enumerate(files):
            try:
                arr = read_image_array(src, keep_channels=True)
            except (ImageReadError, FileNotFoundError) as exc:  # unreadable, or gone since it was listed
                skipped.append(src)
                reason = exc.reason if isinstance(exc, ImageReadError) else _not_found(src)
                say(f"skipped {src}: {reason}", file=sys.stderr)
                continue
            try:
                y, pixels = restore_array(model, arr, run_network)
            except UsageError as exc:  # the network's or restore()'s own checks: not the file's fault
                raise UsageError(f"cannot restore {src}: {exc}") from exc
            out_path = outs[i]
            if out_path is not None:  # float files (values in [0, 1]) as 16-bit PNG
                bits = 8 if pixels.dtype == np.uint8 else 16
                with overwrite_flag():  # a file that appeared since the check above
                    write_image(out_path, pixels, bits=bits, overwrite=args.overwrite)
            if writer is not None:
                a = tensor_to_array(y, np.dtype(args.npz_dtype))
                writer.add(keys[i], a.transpose(2, 0, 1) if args.layout == "chw" else a)
        ok = True
    finally:
        if writer is not None:
            writer.close(commit=ok and writer.count > 0)
    done = len(inputs) - len(skipped)
    where = [str(x) for x in (out_dir, npz if writer is not None and writer.count else None) if x is not None]
    if not skipped:
        print(f"restored {done} image(s) -> {', '.join(where)}", file=sys.stderr)
        return 0
    target = f" -> {', '.join(where)}" if done else " (nothing written)"
    print(f"restored {done} of {len(inputs)} image(s){target}; skipped {len(skipped)}", file=sys.stderr)
    return 1
