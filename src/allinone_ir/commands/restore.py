"""``allinone-ir restore``: restore files, folders and globs; PNG outputs and/or one ``.npz`` archive."""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, UsageError
from . import _common

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``restore`` sub-command."""
    p = subparsers.add_parser(
        "restore",
        help="restore images, folders or globs (tiling, TTA, npz export)",
        description="Restore images with a network; inputs are never overwritten. Each PNG keeps its input's "
        "bit depth (8/16) and channels (alpha is copied back). An unreadable file is reported as "
        "'skipped FILE: reason', the others are still restored, and the exit status is 1.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    _common.add_model_arguments(p, random_weights_option=True)
    p.add_argument("--out", help="output folder for PNG files (<input stem>.png)")
    p.add_argument("--npz", help="also write the results to this .npz archive, keyed by input file name")
    p.add_argument("--layout", choices=("chw", "hwc"), default="hwc", help="npz array layout (default: hwc)")
    p.add_argument(
        "--npz-dtype", choices=("uint8", "uint16", "float32"), default="uint8", help="npz array type"
    )
    _common.add_restore_arguments(p)
    p.add_argument("--degradation", help="degradation name for PIP networks, e.g. rain")
    p.add_argument("--batch-size", type=_common.positive_int, default=4, help="tiles per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def collect_inputs(items: Iterable[str]) -> list[Path]:
    """Image files named by paths, folders and glob patterns, without duplicates."""
    from ..io import IMAGE_EXTENSIONS, list_images

    found: dict[str, Path] = {}
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths = list_images(p)
        elif p.is_file():
            paths = [p]
        else:
            matches = [Path(m) for m in glob.glob(item, recursive=True) if not os.path.isdir(m)]
            paths = sorted(m for m in matches if m.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"no images found for {item!r}")
        for path in paths:
            found.setdefault(os.path.realpath(path), path)
    return list(found.values())


def _check_outputs(inputs: list[Path], outs: list[Path], npz: Path | None, overwrite: bool) -> None:
    """Refuse outputs that clash with each other or with an input, and existing ones without ``overwrite``."""
    sources: dict[Path, Path] = {}
    for src, dst in zip(inputs, outs):
        if (first := sources.setdefault(dst, src)) != src:
            raise UsageError(f"{first} and {src} would both be written to {dst}; restore them separately")
    real_inputs = {os.path.realpath(p) for p in inputs}
    if clash := [str(d) for d in outs if os.path.realpath(d) in real_inputs]:
        raise UsageError(
            f"refusing to overwrite input files: {', '.join(clash)}; choose another --out folder"
        )
    if npz is not None:
        names = [p.name for p in inputs]
        if dup := sorted({k for k in names if names.count(k) > 1}):
            raise UsageError(f"several inputs share the file name(s) {dup}; the npz is keyed by file name")
        if os.path.realpath(npz) in real_inputs:
            raise UsageError(f"refusing to overwrite input file {npz}")
        if npz.suffix != ".npz":
            raise UsageError(f"--npz must end with .npz, got {npz}")
        if npz.exists() and not overwrite:
            raise FileExistsError(f"{npz} exists; pass --overwrite to replace it")
    if (existing := [str(o) for o in outs if o.exists()]) and not overwrite:
        raise FileExistsError(f"output files exist ({', '.join(existing[:5])}); pass --overwrite")


@contextlib.contextmanager
def _npz_writer(path: Path) -> Iterator[Callable[[str, np.ndarray], None]]:
    """``add(key, array)`` into a temporary archive, renamed to ``path`` if the block succeeds and added any."""
    from ..io import _disk_full, file_mode_for

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    zf = zipfile.ZipFile(tmp, "w", allowZip64=True)

    def add(key: str, array: np.ndarray) -> None:
        try:
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        except OSError as exc:
            raise _disk_full(exc, path) or exc from exc

    try:
        yield add
        try:
            zf.close()  # writes the central directory: may fail on a full disk too
        except OSError as exc:
            raise _disk_full(exc, path) or exc from exc
        if zf.namelist():
            os.chmod(tmp, file_mode_for(path))  # mkstemp made it 0600
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError, ValueError):
            zf.close()  # after a failure: closed quietly
        if os.path.lexists(tmp):
            os.unlink(tmp)


def run(args: argparse.Namespace) -> int:
    from ..inference import restore, restore_array
    from ..io import read_image_array, tensor_to_array, write_image

    if not args.out and not args.npz:
        raise UsageError("give --out DIR and/or --npz FILE")
    if args.out and os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise UsageError(
            f"--out {args.out} is a file; give a folder (an image is written as <its stem>.png in it)"
        )
    for flag, value in (("--out", args.out), ("--npz", args.npz)):
        if value:
            _common.check_parents(flag, value)
    if args.npz and os.path.isdir(args.npz):
        raise UsageError(f"--npz {args.npz} is a folder; give a file name ending in .npz")
    inputs = collect_inputs(args.inputs)
    outs = [Path(args.out) / f"{p.stem}.png" for p in inputs] if args.out else []
    npz = Path(args.npz) if args.npz else None
    _check_outputs(inputs, outs, npz, args.overwrite)
    options = {
        "degradation": args.degradation,
        "batch_size": args.batch_size,
        **_common.restore_options(args),
    }
    model = _common.load_model_from_args(args, require_weights=True)
    network = functools.partial(restore, model, **options, progress=False if args.quiet else None)
    files, say = _common.with_progress(inputs, quiet=args.quiet, desc="images", unit="img")
    skipped: list[Path] = []
    with _npz_writer(npz) if npz is not None else contextlib.nullcontext() as add:
        for i, src in enumerate(files):
            try:
                arr = read_image_array(src, keep_channels=True)
            except (ImageReadError, FileNotFoundError) as exc:  # FileNotFoundError: gone since it was listed
                skipped.append(src)
                gone = f"a link to {os.readlink(src)}, which does not exist" if src.is_symlink() else None
                reason = exc.reason if isinstance(exc, ImageReadError) else gone or "no such file (removed?)"
                say(f"skipped {src}: {reason}", file=sys.stderr)
                continue
            try:
                y, pixels = restore_array(model, arr, network)
            except UsageError as exc:  # the network's or restore()'s own checks: not the file's fault
                raise UsageError(f"cannot restore {src}: {exc}") from exc
            if outs:  # float files (values in [0, 1]) as 16-bit PNG
                with _common.overwrite_flag():  # a file that appeared since the check above
                    bits = 8 if pixels.dtype == np.uint8 else 16
                    write_image(outs[i], pixels, bits=bits, overwrite=args.overwrite)
            if add is not None:
                a = tensor_to_array(y, np.dtype(args.npz_dtype))
                add(src.name, a.transpose(2, 0, 1) if args.layout == "chw" else a)
    done = len(inputs) - len(skipped)
    where = ", ".join(str(x) for x in (Path(args.out) if args.out else None, npz if done else None) if x)
    if not skipped:
        print(f"restored {done} image(s) -> {where}", file=sys.stderr)
        return 0
    target = f" -> {where}" if done else " (nothing written)"
    print(f"restored {done} of {len(inputs)} image(s){target}; skipped {len(skipped)}", file=sys.stderr)
    return 1
