"""Image files (Pillow; 16-bit colour by pypng, tifffile) in and out as float32 ``(C, H, W)`` tensors in [0, 1]."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ImageReadError, UsageError, UsageTypeError, require

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "array_to_tensor",
    "list_images",
    "read_image",
    "read_image_array",
    "tensor_to_array",
    "write_image",
]

#: File endings treated as images when scanning folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error)  # damaged files


def _pillow() -> Any:
    return require("PIL.Image", extra="data", purpose="reading and writing image files")


def _pypng() -> Any:  # Pillow reads 16-bit colour PNG as 8-bit and cannot write it
    return require("png", extra="data", purpose="reading and writing 16-bit colour PNG files")


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Write ``path`` by ``write(tmp)`` of a temporary file beside it, renamed: never half-written, parents
    created, permissions :func:`file_mode_for`'s; a full disk raises :func:`_disk_full`'s ``OSError``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_dir():  # else os.replace names the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(p))
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, file_mode_for(p))
        os.replace(tmp, p)
    except OSError as exc:
        if (full := _disk_full(exc, p)) is None:
            raise
        raise full from exc
    finally:
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)
    return p


def _disk_full(exc: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """``exc`` in words when it means a full disk or quota (its errno kept), else ``None``."""
    code = getattr(exc, "errno", None)
    if code not in (errno.ENOSPC, errno.EDQUOT):
        return None
    what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
    err = OSError(f"{what} while writing {path}")
    err.errno = code  # set afterwards: the message stays the line above
    return err


def file_mode_for(path: str | os.PathLike[str]) -> int:
    """The permission bits ``open(path, "w")`` would give: an existing file's own, else ``0o666 & ~umask``."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(old)
    return old


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by extension; broken links too, to be reported), ``recursive`` or not.

    Hidden files and folders (``.DS_Store``, macOS's ``._x.png``) are left out.

    Raises:
        FileNotFoundError: If ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    found = root.rglob("*") if recursive else root.iterdir()
    named = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    named = [p for p in named if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(p for p in named if p.is_file() or (p.is_symlink() and not p.is_dir()))


def _images_by_stem(folder: str | os.PathLike[str], recursive: bool = False) -> dict[str, list[Path]]:
    """:func:`list_images` by stem (to find a partner of any extension; more than one is ambiguous)."""
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(folder, recursive=recursive):
        by_stem.setdefault(p.stem, []).append(p)
    return by_stem


def read_image_array(path: str | os.PathLike[str], *, keep_channels: bool = False) -> np.ndarray:
    """Read an image file as EXIF-oriented ``(H, W, C)`` pixels, ``uint8``, ``uint16`` or ``float32`` as stored.

    ``C`` is 3 (grayscale as RGB, alpha dropped with a warning), or with ``keep_channels`` the stored 1 to 4.
    32-bit integer grayscale must fit 16 bits, float grayscale [0, 1]: other values are refused.

    Raises:
        FileNotFoundError: If the file does not exist (or is a link to nothing).
        ImageReadError: If the file is not a readable image; its ``reason`` says why.

    Examples:
        >>> import tempfile
        >>> gray = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
        >>> p = write_image(Path(tempfile.mkdtemp()) / "g16.png", gray)
        >>> read_image_array(p, keep_channels=True).shape, read_image_array(p).shape
        ((3, 4, 1), (3, 4, 3))
        >>> int(read_image_array(p, keep_channels=True)[2, 3, 0])
        55000
    """
    Image = _pillow()
    p = Path(path)
    _check_is_file(p)
    try:
        with Image.open(p) as im:
            arr = _oriented(_pixels(im, p), im)
    except ImageReadError:
        raise
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise _refuse(p, _read_failure(exc, p)) from exc
    arr = np.atleast_3d(arr)
    if not keep_channels and arr.shape[2] in (2, 4):
        warnings.warn(f"{p}: alpha channel dropped", stacklevel=2)
        arr = arr[:, :, : arr.shape[2] - 1]
    if not keep_channels and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _check_is_file(p: Path) -> None:
    """Raise ``FileNotFoundError`` (missing, a broken link) or ``ImageReadError`` (a link loop, no access)."""
    try:
        os.stat(p)
    except (FileNotFoundError, NotADirectoryError) as exc:
        link = f" is a link to {os.readlink(p)}, which does not exist" if p.is_symlink() else ""
        raise FileNotFoundError(f"image file not found: {p}{link}") from exc
    except OSError as exc:
        raise _refuse(p, "symbolic link loop" if exc.errno == errno.ELOOP else _read_failure(exc, p)) from exc
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")


#: EXIF orientation -> (quarter turns, mirrored first) that give the picture viewers show.
_ORIENT = {2: (0, 1), 3: (2, 0), 4: (2, 1), 5: (1, 1), 6: (3, 0), 7: (3, 1), 8: (1, 0)}


def _oriented(arr: np.ndarray, im: Any) -> np.ndarray:
    """``arr`` turned by the EXIF orientation of ``im`` (Pillow drops a loaded TIFF's tag: turned once)."""
    try:
        turns, mirror = _ORIENT.get(int(im.getexif().get(0x0112, 1)), (0, 0))
    except Exception:  # a damaged EXIF block: the pixels as stored
        return arr
    return np.ascontiguousarray(np.rot90(arr[:, ::-1] if mirror else arr, turns)) if turns or mirror else arr


def _pixels(im: Any, p: Path) -> np.ndarray:
    """The stored pixels of an open Pillow image: (H, W) or (H, W, C), uint8, uint16 or float32."""
    if im.mode in ("RGB", "RGBA") and _stored_16bit(im):  # Pillow would keep 8 of the 16 bits
        if im.format == "PNG":  # 16-bit colour, grey with alpha (mode RGBA) too
            arr = _read_png16(p)
            im.load()  # for the EXIF block, which may follow the pixels
            return arr
        if im.format != "TIFF":
            raise _refuse(p, f"16-bit colour {im.format}, which Pillow reads as 8-bit; save it as 16-bit PNG")
        return _read_tiff16(p)  # not loaded: the caller applies the orientation tag
    im.load()
    return _mode_pixels(im, p)


def _read_tiff16(p: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise _refuse(
            p,
            "16-bit colour TIFF, which Pillow reads as 8-bit; pip install tifffile to read it at 16 bits, "
            "or save it as 16-bit PNG",
        ) from None
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[0]
        arr, axes = page.asarray(), page.axes
    if axes.startswith("S"):  # planar: one plane per channel
        arr, axes = np.moveaxis(arr, 0, -1), axes[1:] + "S"
    if axes != "YXS" or arr.dtype != np.uint16:
        raise _refuse(
            p, f"16-bit colour TIFF of layout {page.axes} and type {arr.dtype}; save it as 16-bit PNG"
        )
    return np.ascontiguousarray(arr)


def _mode_pixels(im: Any, where: str | os.PathLike[str]) -> np.ndarray:
    """The pixels of a loaded Pillow image by its mode: (H, W) or (H, W, C), uint8, uint16 or float32."""
    p, mode = Path(where), im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.uint16)  # native byte order
    if mode[0] in "IF" and (len(mode) == 1 or mode[1] == ";"):  # 32-bit integer or float grayscale
        is_int = mode[0] == "I"
        arr = np.asarray(im, dtype=np.int64 if is_int else np.float32)
        what = f"32-bit {'integer' if is_int else 'float'} pixels (mode {mode})"
        if not is_int and arr.size and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "infinite"
            raise _refuse(p, f"{what} contain {bad} values; expected values in [0, 1]")
        lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
        if is_int and (lo < 0 or hi > 65535):
            rule = (
                "integer pixels must be in 0..65535 (16-bit); save the image as 16-bit or as float in [0, 1]"
            )
            raise _refuse(p, f"{what} from {lo} to {hi}; {rule}")
        if not is_int and (lo < 0 or hi > 1):
            rule = "float images must hold values in [0, 1] (scale them first)"
            raise _refuse(p, f"{what} from {lo:g} to {hi:g}; {rule}")
        return arr.astype(np.uint16) if is_int else arr
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
    if mode == "P" and has_alpha and im.palette is not None and im.palette.mode.startswith("L"):
        return np.asarray(im.convert("LA"))
    # premultiplied La: Pillow converts it to LA only
    return np.asarray(im.convert({"1": "L", "La": "LA"}.get(mode, "RGBA" if has_alpha else "RGB")))


def _refuse(p: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image file {p}: {reason}", path=p, reason=reason)


def _stored_16bit(im: Any) -> bool:
    """Whether Pillow decodes this image from 16-bit samples (and so drops the low 8 bits of colour)."""
    try:
        if im.format == "TIFF":  # planar TIFF tiles name no bit depth
            return max(im.tag_v2.get(258, (8,))) > 8
        return any(";16" in str(tile[3]) for tile in im.tile or ())
    except (AttributeError, IndexError, TypeError, ValueError):
        return False


def _read_failure(exc: BaseException, p: Path) -> str:
    """Why ``p`` could not be read, in words and without the file name."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    with contextlib.suppress(OSError):
        if p.stat().st_size == 0:
            return "empty file (0 bytes)"
    if type(exc).__name__ == "UnidentifiedImageError":
        with contextlib.suppress(OSError), open(p, "rb") as f:
            if f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                return (
                    "a TIFF layout Pillow cannot read (e.g. colour with 32-bit float samples); save it as "
                    "16-bit PNG or one float channel"
                )
        return "not an image file (or a format Pillow cannot read)"
    return " ".join(str(exc).replace(str(p), "").split()).strip(" :") or type(exc).__name__


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` (or ``(H, W)``) uint8 / uint16 / float array -> float32 ``(C, H, W)`` tensor in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise UsageError(f"expected an (H, W, C) image array, got shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        x = torch.from_numpy(arr.astype(np.float32) / float(np.iinfo(arr.dtype).max))
    elif np.issubdtype(arr.dtype, np.floating):
        x = torch.from_numpy(arr.astype(np.float32, copy=not arr.flags.writeable))
    else:
        raise UsageError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    return x.permute(2, 0, 1).contiguous()


# how far outside [0, 1] an image may reach (a resampled image overshoots a little) before it is refused
_RANGE_SLACK = 0.25


def _check_unit_range(x: torch.Tensor, what: str) -> None:
    """Refuse NaN or infinite values, and values far outside [0, 1] (another scale), with a UsageError."""
    if x.numel() == 0:
        raise UsageError(f"{what} is empty: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise UsageError(f"{what} contains {bad} values; expected finite values in [0, 1]")
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise UsageError(
            f"{what} holds values from {lo:.4g} to {hi:.4g}; expected [0, 1] "
            "(x / 255 for 8-bit, (x + 1) / 2 for [-1, 1])"
        )


def _check_float_image(x: Any, what: str) -> None:
    """Refuse anything but a float ``(C, H, W)`` tensor in [0, 1] (as :func:`_check_unit_range`)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        got = (
            f"shape {tuple(x.shape)} and dtype {x.dtype}"
            if isinstance(x, torch.Tensor)
            else f"a {type(x).__name__}"
        )
        raise UsageError(
            f"{what}: expected a float (C, H, W) tensor in [0, 1], got {got} (x.float() / 255 for 8-bit images)"
        )
    _check_unit_range(x, what)


def tensor_to_array(x: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Float ``(C, H, W)`` tensor in [0, 1] -> ``(H, W, C)`` array of ``dtype`` (clamped, rounded to levels)."""
    if x.ndim != 3:
        raise UsageError(f"expected a (C, H, W) tensor, got shape {tuple(x.shape)}")
    arr = x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    dt = np.dtype(dtype)
    if dt in (np.uint8, np.uint16):
        return np.rint(arr * float(np.iinfo(dt).max)).astype(dt)
    if np.issubdtype(dt, np.floating):
        return arr.astype(dt)
    raise UsageError(f"unsupported output dtype {dt}")


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor in [0, 1]; raises as :func:`read_image_array`.

    Shape:
        - output: :math:`(3, H, W)`
    """
    return array_to_tensor(read_image_array(path))


def write_image(
    path: str | os.PathLike[str], image: torch.Tensor | np.ndarray, *, bits: int = 8, overwrite: bool = False
) -> Path:
    """Write a float tensor in [0, 1] or an array to an image file (format by extension), atomically.

    16-bit colour is written as 16-bit PNG, 16-bit grayscale as PNG or TIFF, in other formats as 8-bit with
    a warning. An alpha channel needs PNG, TIFF or WebP; WebP is written lossless, JPEG at quality 95 (4:4:4).

    Args:
        image: Tensor ``(C, H, W)`` or array ``(H, W, C)`` / ``(H, W)``, ``C`` in 1..4 (uint8, uint16 or float
            in [0, 1]); an integer array is written at its own bit depth.
        bits: 8 or 16: the bit depth of a tensor or float array.
        overwrite: Replace an existing file; otherwise ``FileExistsError``.

    Raises:
        UsageTypeError: If ``path`` is an image (the arguments in torchvision's ``save_image`` order).
        UsageError: If the image cannot be written faithfully (NaN, another scale, alpha in JPEG or BMP).

    Examples:
        >>> import tempfile
        >>> rgb16 = np.full((2, 3, 3), 40000, dtype=np.uint16)
        >>> p = write_image(Path(tempfile.mkdtemp()) / "rgb16.png", rgb16)
        >>> back = read_image_array(p)
        >>> back.dtype, back.shape, int(back[1, 2, 0])
        (dtype('uint16'), (2, 3, 3), 40000)
    """
    if isinstance(path, (torch.Tensor, np.ndarray)):  # torchvision's save_image takes the image first
        raise UsageTypeError(
            f"write_image(path, image) takes the path first, got a {type(path).__name__} as the path"
        )
    Image = _pillow()
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {p} (pass overwrite=True)")
    if bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {bits}")
    depth = np.uint16 if bits == 16 else np.uint8
    image_format = Image.registered_extensions().get(p.suffix.lower())
    if image_format is None:
        raise UsageError(
            f"{p}: unknown image file extension {p.suffix!r}; use .png, .jpg, .tif, .bmp or .webp"
        )
    if isinstance(image, torch.Tensor):
        given = f"shape {tuple(image.shape)} and dtype {image.dtype}"
        _check_float_image(image, "the image")
        arr = image.detach().float().cpu().permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(image)
        given = f"shape {arr.shape} and dtype {arr.dtype}"
        if np.issubdtype(arr.dtype, np.floating):
            _check_unit_range(torch.from_numpy(np.ascontiguousarray(arr)), "the image")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(np.clip(arr, 0, 1) * float(np.iinfo(depth).max)).astype(depth)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.dtype not in (np.uint8, np.uint16):
        raise UsageError(
            f"expected an image with 1 to 4 channels (a (C, H, W) tensor, an (H, W, C) or (H, W) array) of "
            f"uint8, uint16 or float, got {given}"
        )
    if arr.shape[2] in (2, 4) and image_format not in ("PNG", "TIFF", "WEBP"):
        raise UsageError(
            f"{p}: {image_format} files cannot hold an alpha channel; write .png, .tif or .webp, "
            "or drop the alpha channel"
        )
    if arr.dtype == np.uint16 and arr.shape[2] != 1 and image_format == "PNG":
        return atomic_write(p, lambda tmp: _write_png16(tmp, arr))
    keeps_16bit = ("PNG", "TIFF") if arr.shape[2] == 1 else ()
    if arr.dtype == np.uint16 and image_format not in keeps_16bit:
        kind = (
            "grayscale can only be written as PNG or TIFF"
            if arr.shape[2] == 1
            else "colour can only be written as PNG"
        )
        warnings.warn(f"{p}: 16-bit {kind}; writing 8-bit", stacklevel=2)
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if arr.dtype == np.uint16 and im.mode != "I;16":
        im = im.convert("I;16")
    # restored pixels kept: lossless WebP, and JPEG at quality 95 without chroma subsampling (Pillow: 75, 4:2:0)
    by_format: dict[str, dict[str, Any]] = {
        "WEBP": {"lossless": True, "exact": True},
        "JPEG": {"quality": 95, "subsampling": 0},
    }
    options = by_format.get(image_format, {})
    return atomic_write(p, lambda tmp: im.save(tmp, format=image_format, **options))


def _read_png16(p: Path) -> np.ndarray:
    """``(H, W, C)`` uint16 pixels decoded by pypng; ``ValueError`` if damaged."""
    png = _pypng()
    try:
        with open(p, "rb") as f:
            width, height, rows, info = png.Reader(file=f).read()
            data = b"".join(rows)  # rows of array("H"): native byte order
    except png.Error as exc:
        raise ValueError(f"corrupt or truncated PNG file ({' '.join(map(str, exc.args))})") from exc
    if info["bitdepth"] != 16:
        raise ValueError(f"expected a 16-bit PNG file, got {info['bitdepth']}-bit")
    if len(data) != width * height * info["planes"] * 2:
        raise ValueError("truncated PNG file (too little image data)")
    return np.frombuffer(data, dtype=np.uint16).reshape(height, width, info["planes"]).copy()


def _write_png16(path: str, arr: np.ndarray) -> None:
    h, w, c = arr.shape
    writer = _pypng().Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16, compression=6)
    rows = np.ascontiguousarray(arr, dtype=">u2").reshape(h, w * c)  # PNG samples are big-endian
    with open(path, "wb") as f:
        writer.write_packed(f, (row.tobytes() for row in rows))
