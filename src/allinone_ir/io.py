"""Image files in and out (Pillow, an optional dependency: ``pip install 'allinone-ir[data]'``).

Images are exchanged as float32 tensors of shape ``(C, H, W)`` with values in
``[0, 1]``. 8-bit and 16-bit PNG (and anything else Pillow reads) are supported;
grayscale is promoted to RGB and an alpha channel is dropped with a warning.
Writing is atomic and never replaces an existing file unless asked to.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ImageReadError, require

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "array_to_tensor",
    "atomic_write",
    "list_images",
    "read_image",
    "read_image_array",
    "require_pillow",
    "tensor_to_array",
    "write_image",
]

#: File endings treated as images when scanning folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def require_pillow() -> Any:
    """Import and return ``PIL.Image``, or raise an ``ImportError`` saying how to install it."""
    return require("PIL.Image", extra="data", purpose="reading and writing image files")


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file in the same folder, then it is renamed.

    A crash or an exception inside ``write`` never leaves a half-written ``path``; the temporary
    file is removed. Missing parent folders are created. Used for images, checkpoints, configs
    and logs alike.

    Args:
        path: The destination (replaced if it exists: callers decide whether that is allowed).
        write: Called with the temporary file's path; must write the whole content there.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile
        >>> p = atomic_write(Path(tempfile.mkdtemp()) / "a.txt", lambda tmp: Path(tmp).write_text("hi"))
        >>> p.read_text()
        'hi'
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by extension, case-insensitive)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image_array(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` array, ``uint8`` or ``uint16`` as stored.

    Grayscale becomes RGB; an alpha channel is dropped with a warning.

    Raises:
        FileNotFoundError: If the file does not exist.
        ImageReadError: If the file is not a readable image (the path is in the message).
    """
    Image = require_pillow()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                warnings.warn(f"{p}: alpha channel dropped", stacklevel=2)
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int64)
                arr = np.clip(arr, 0, 65535).astype(np.uint16)
            elif mode in ("L", "RGB"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGBA" if "A" in mode or mode == "P" else "RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image file {p}: {exc}") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr)


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` (or ``(H, W)``) uint8 / uint16 / float array -> float32 ``(C, H, W)`` tensor in [0, 1].

    Floats are taken as already in [0, 1].
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    elif arr.dtype == np.uint16:
        x = torch.from_numpy(arr.astype(np.float32) / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        x = torch.from_numpy(arr.astype(np.float32, copy=False))
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    return x.permute(2, 0, 1).contiguous()


def tensor_to_array(x: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Float ``(C, H, W)`` tensor in [0, 1] -> ``(H, W, C)`` array of ``dtype`` (uint8, uint16 or float32).

    Values are clamped to [0, 1] and rounded to the nearest integer level.
    """
    if x.ndim != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(x.shape)}")
    arr = x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return np.rint(arr * 255.0).astype(np.uint8)
    if dt == np.uint16:
        return np.rint(arr * 65535.0).astype(np.uint16)
    if np.issubdtype(dt, np.floating):
        return arr.astype(dt)
    raise ValueError(f"unsupported output dtype {dt}")


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a float32 ``(3, H, W)`` tensor in [0, 1] (8- and 16-bit files).

    Shape:
        - output: :math:`(3, H, W)`
    """
    return array_to_tensor(read_image_array(path))


def write_image(
    path: str | os.PathLike[str],
    image: torch.Tensor | np.ndarray,
    *,
    bits: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write a ``(C, H, W)`` float tensor in [0, 1] (or an ``(H, W, C)`` array) to an image file, atomically.

    The file is written to a temporary name in the same folder and renamed, so a
    crash never leaves a half-written image.

    Args:
        path: Destination; the format follows the extension (16-bit needs ``.png``).
        image: Tensor ``(C, H, W)`` in [0, 1] or array ``(H, W, C)`` (uint8, uint16 or float in [0, 1]).
        bits: 8 or 16 (16-bit is written as 16-bit grayscale or, for RGB, as 8-bit with a warning
            where Pillow cannot store 16-bit RGB).
        overwrite: Replace an existing file; otherwise ``FileExistsError``.

    Returns:
        The path written.
    """
    Image = require_pillow()
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {p} (pass overwrite=True)")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if isinstance(image, torch.Tensor):
        arr = tensor_to_array(image, np.uint16 if bits == 16 else np.uint8)
    else:
        arr = image
        if np.issubdtype(arr.dtype, np.floating):
            arr = tensor_to_array(array_to_tensor(arr), np.uint16 if bits == 16 else np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint16 and arr.ndim == 3:
        warnings.warn(f"{p}: Pillow cannot write 16-bit RGB; writing 8-bit", stacklevel=2)
        arr = (arr // 257).astype(np.uint8)
    im = Image.fromarray(arr.astype(np.uint16) if arr.dtype == np.uint16 else arr)
    if arr.dtype == np.uint16:
        im = im.convert("I;16") if im.mode != "I;16" else im
    image_format = Image.registered_extensions().get(p.suffix.lower())
    return atomic_write(p, lambda tmp: im.save(tmp, format=image_format))
