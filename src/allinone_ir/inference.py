"""Restoring whole images of any kind: seamless overlapping tiles, test-time augmentation."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._runtime import autocast, device_problem, low_precision_dtype, progress_bar
from .degradation_types import resolve_degradation_weights
from .errors import ImageReadError, UsageError, UsageTypeError
from .io import (
    _check_unit_range,
    _mode_pixels,
    array_to_tensor,
    read_image_array,
    tensor_to_array,
    write_image,
)

__all__ = ["low_precision_policy", "native_low_precision", "restore", "restore_array", "tta_transforms"]

TTAMode = Literal["flip", "x8"]
Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def tta_transforms(mode: TTAMode | bool) -> list[Transform]:
    """``(forward, inverse)`` pairs of a TTA mode (``"x8"`` or ``True``, ``"flip"``, ``False``), identity first.

    Raises:
        UsageError: On another mode.

    Examples:
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)
        >>> all(torch.equal(inv(fwd(x)), x) for fwd, inv in tta_transforms("x8"))
        True
    """
    rotations = {False: (0,), True: (0, 1, 2, 3), "x8": (0, 1, 2, 3), "flip": (0, 2)}
    if mode not in (False, True, "x8", "flip"):
        raise UsageError(f"tta must be False, True, 'flip' or 'x8', got {mode!r}")
    pairs: list[Transform] = []
    for k in rotations[mode]:
        for flip in (False, True) if mode else (False,):

            def fwd(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = torch.rot90(t, k, dims=(-2, -1)) if k else t
                return t.flip(-1) if flip else t

            def inv(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = t.flip(-1) if flip else t
                return torch.rot90(t, -k, dims=(-2, -1)) if k else t

            pairs.append((fwd, inv))
    return pairs


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels, overlapping by at least ``overlap``."""
    return [0] if tile >= length else [*range(0, length - tile, tile - overlap), length - tile]


def blend_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """One axis of a tile's weight: beside a neighbour, 0 then a raised-cosine ramp summing to 1 with its."""
    w = torch.ones(size, dtype=torch.float64)
    if overlap > 0:
        margin, n = overlap // 4, min(overlap, size)
        j = torch.arange(overlap, dtype=torch.float64)
        ramp = torch.sin(0.5 * math.pi * ((j - margin + 0.5) / (overlap - 2 * margin)).clamp(0, 1)) ** 2
        ramp[:margin] = 0.0
        if ramp_start:
            w[:n] *= ramp[:n]
        if ramp_end:
            w[size - n :] *= ramp[:n].flip(0)
    return w.float()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), next(model.buffers(), torch.empty(0))).device


def prefers_channels_last(device: str | torch.device) -> bool:
    """Whether :func:`restore` stores a network channels-last on ``device`` by default (CPU only)."""
    return torch.device(device).type == "cpu"


def native_low_precision(dtype: torch.dtype, device: str | torch.device) -> bool:
    """Whether ``device`` computes ``dtype`` convolutions and matmuls natively (else they are emulated, slow).

    Examples:
        >>> native_low_precision(torch.float32, "cpu")
        True
    """
    kind = torch.device(device).type
    if dtype in (torch.float32, torch.float64):
        return True
    if kind == "cpu":
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return dtype == torch.float16 and bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return kind == "cuda" and (
        dtype == torch.float16 or (dtype == torch.bfloat16 and torch.cuda.is_bf16_supported())
    )


def prepare_for_inference(
    model: nn.Module, device: str | torch.device | None = None, *, channels_last: bool | None = None
) -> nn.Module:
    """Move a network to ``device`` (``None``: keep) and to channels-last (``None``: if preferred there)."""
    if device is not None and (problem := device_problem(device)) is not None:
        raise UsageError(f"device: {problem}")
    dev = _device_of(model) if device is None else torch.device(device)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise UsageError(
            "the network's weights are on the meta device (shapes without values); load weights first"
        )
    want = prefers_channels_last(dev) if channels_last is None else channels_last
    fmt = torch.channels_last if want else torch.contiguous_format
    model.to(device=dev, memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    return model


@contextlib.contextmanager
def low_precision_policy(model: nn.Module, enabled: bool = True) -> Iterator[list[str]]:
    """Keep the parts of a network that bf16/fp16 perturbs most in float32 while autocast runs the rest.

    Each ``(name, module, attribute)`` of ``model.low_precision_flags()`` is ``True`` inside the context.

    Yields:
        The names of the modules kept in float32.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("restormer", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> with low_precision_policy(net) as names:
        ...     names
        ['patch_embed', 'encoder_level1.0.attn', 'decoder_level1.0.attn', 'refinement.0.attn']
    """
    declared = getattr(model, "low_precision_flags", None)
    flags: list[tuple[str, nn.Module, str]] = list(declared()) if enabled and callable(declared) else []
    saved = [(m, attr, m.__dict__.get(attr)) for _, m, attr in flags]
    try:
        for _, m, attr in flags:
            setattr(m, attr, True)
        yield [name for name, _, _ in flags]
    finally:
        for m, attr, old in saved:
            if old is None:
                m.__dict__.pop(attr, None)  # back to the class default
            else:
                setattr(m, attr, old)


_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _degradation_for(deg: Any, index: Sequence[int], device: torch.device) -> Any:
    if isinstance(deg, torch.Tensor) and deg.ndim > 0:
        if deg.is_floating_point() and (deg.ndim == 1 or deg.shape[0] == 1):
            return deg.to(device)  # (T,) or (1, T) weights: the same for every image
        return deg[torch.as_tensor(index, device=deg.device)].to(device)
    if deg is None or isinstance(deg, (str, int, Mapping, torch.Tensor)):
        return deg
    return [deg[i] for i in index]


def _tile_grid(
    h: int, w: int, tile: Sequence[int], overlap: int
) -> tuple[int, int, int, int, list[int], list[int]]:
    """Tile height and width, their overlaps, and the tiles' top and left edges in an ``h x w`` image."""
    th, tw = min(tile[0], h), min(tile[1], w)
    oy, ox = min(overlap, th - 1), min(overlap, tw - 1)
    return th, tw, oy, ox, tile_starts(h, th, oy), tile_starts(w, tw, ox)


def _restore_tiled(
    x: torch.Tensor,
    run: Callable[[torch.Tensor, Sequence[int]], torch.Tensor],
    tile: Sequence[int],
    overlap: int,
    batch_size: int,
    progress: bool | None,
) -> torch.Tensor:
    """Restore ``x`` in blended tiles, ``batch_size`` at a time (a tile of the image's size: whole images)."""
    n, _, h, w = x.shape
    th, tw, oy, ox, ys, xs = _tile_grid(h, w, tile, overlap)
    wy = {y: blend_window(th, oy, y > 0, y + th < h) for y in ys}
    wx = {s: blend_window(tw, ox, s > 0, s + tw < w) for s in xs}
    # separable window on a grid of tiles: the accumulated weight is the outer product of the axis sums
    norm_y = sum((F.pad(wy[y], (y, h - th - y)) for y in ys), torch.zeros(h))
    norm_x = sum((F.pad(wx[s], (s, w - tw - s)) for s in xs), torch.zeros(w))
    jobs = [(b, y, s) for b in range(n) for y in ys for s in xs]
    bar = None
    if progress or (progress is None and len(jobs) > batch_size):  # None: on a terminal, more than one step
        bar = progress_bar(
            total=len(jobs),
            desc="tiles",
            unit="tile",
            disable=None if progress is None else False,
            leave=False,
            warn=bool(progress),
            stacklevel=3,
        )
    acc = torch.zeros(0)
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        tiles = torch.stack([x[b, :, y : y + th, s : s + tw] for b, y, s in chunk])
        out = run(tiles, [b for b, _, _ in chunk])
        if i == 0:
            acc = torch.zeros(n, out.shape[1], h, w)
        for (b, y, s), o in zip(chunk, out):
            acc[b, :, y : y + th, s : s + tw].addcmul_(o, wy[y][:, None] * wx[s][None, :])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return acc.div_(norm_y[:, None] * norm_x[None, :])


def _blind_weights(
    classify: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: Sequence[int],
    overlap: int,
    batch_size: int,
) -> torch.Tensor:
    """``(N, T)`` degradation weights of each image: the softmax of its classifier logits averaged over its tiles."""
    n, _, h, w = x.shape
    th, tw, _, _, ys, xs = _tile_grid(h, w, tile, overlap)
    jobs = [(b, y, s) for b in range(n) for y in ys for s in xs]
    logits = []
    for i in range(0, len(jobs), batch_size):
        logits.append(
            classify(torch.stack([x[b, :, y : y + th, s : s + tw] for b, y, s in jobs[i : i + batch_size]]))
        )
    per_tile = torch.cat(logits).view(n, len(ys) * len(xs), -1)
    return per_tile.mean(dim=1).softmax(dim=-1)


#: ITU-R BT.601 luma weights (R, G, B): how a colour network's output becomes a grayscale file.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def restore_array(
    model: Any, arr: np.ndarray, restore_fn: Callable[[Any], Any] | None = None
) -> tuple[Any, np.ndarray]:
    """Restore the pixels of one file, keeping its bit depth and channels (alpha copied back untouched).

    Args:
        arr: Pixels as stored: uint8, uint16 or float32 in [0, 1].
        restore_fn: ``(C, H, W) tensor -> (C, H, W) tensor`` running the network (default: :func:`restore`).

    Returns:
        The network's float output, and the pixels to write (grayscale through :data:`LUMA_WEIGHTS`).

    Raises:
        UsageError: If the network takes another number of channels than the image has.

    Shape:
        - arr: :math:`(H, W, C)`, C in 1..4; outputs: :math:`(C_{out}, H, W)` and :math:`(H, W, C)`

    Examples:
        >>> class Identity(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x
        >>> gray = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)[:, :, None]
        >>> y, pixels = restore_array(Identity(), gray)
        >>> tuple(y.shape), pixels.dtype, pixels[:, :, 0].tolist()
        ((3, 2, 2), dtype('uint16'), [[0, 1000], [30000, 65535]])
    """
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise UsageError(f"expected (H, W, C) pixels with C in 1..4, got shape {arr.shape}")
    n_colour = 1 if arr.shape[2] <= 2 else 3
    x = array_to_tensor(arr[:, :, :n_colour])
    in_ch = int(getattr(model, "in_channels", 3))
    if n_colour == 1 and in_ch == 3:
        x = x.expand(3, -1, -1).contiguous()
    elif n_colour != in_ch:
        kind = "grayscale" if n_colour == 1 else "colour"
        raise UsageError(
            f"the network takes {in_ch}-channel images; this image is {kind} ({n_colour} channels)"
        )
    y = restore(model, x, progress=False) if restore_fn is None else restore_fn(x)
    y_file = y
    if n_colour == 1 and y.shape[0] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=y.dtype, device=y.device).view(3, 1, 1)
        y_file = (y * weights).sum(dim=0, keepdim=True)
    pixels = tensor_to_array(y_file, arr.dtype)
    if arr.shape[2] in (2, 4):
        pixels = np.concatenate([pixels, arr[:, :, n_colour:]], axis=2)
    return y, pixels


def restore(
    model: nn.Module,
    image: Any,
    *,
    tile: int | Sequence[int] | None = None,
    overlap: int = 32,
    tta: TTAMode | bool = False,
    degradation: Any = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    clamp: bool = True,
    progress: bool | None = None,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Any:
    """Restore an image of any size in eval mode and ``no_grad``, optionally in blended tiles and with TTA.

    Args:
        model: A network taking ``(N, C, H, W)`` images in [0, 1].
        image: A float tensor in [0, 1]; a uint8, uint16 or float ``(H, W[, C])`` numpy array (grayscale and
            alpha handled as in a file); a PIL image; or a path.
        tile: Tile size (``int`` or ``(height, width)``); ``None``: the whole image at once.
        overlap: Overlap of neighbouring tiles in pixels, ``< tile``.
        tta: ``False``, ``"flip"`` (4 flips), ``"x8"`` or ``True`` (flips and 90-degree rotations).
        degradation: For PIP networks: ``None`` (blind: in tiles, each image's classifier logits are averaged
            over its tiles), a name, an int label, one per image or weights.
        batch_size: Tiles (or images) per forward pass.
        device: Where the network runs (it is moved there); ``None``: its device.
        dtype: Autocast dtype (bf16 / fp16) under :func:`low_precision_policy`.
        channels_last: Memory format; ``None``: :func:`prefers_channels_last`.
        compile: Run the network through ``torch.compile`` (cached per network).
        clamp: Clamp the result to [0, 1] (integer outputs are always clamped).
        progress: tqdm progress bar: ``None`` on a terminal for more than one step, ``True``, ``False``.
        output: For a path ``image``: write the result there in the format of its extension
            (:func:`~allinone_ir.io.write_image`; an existing file if ``overwrite``).

    Returns:
        The kind of ``image`` (same shape, dtype, device or PIL mode); for a path, its pixels or ``output``.

    Raises:
        UsageError: On NaN/infinite input or values far outside [0, 1], a wrong shape, channel count, tile,
            overlap, device or dtype, or a stray degradation.
        UsageTypeError: On an unsupported image type.
        OSError: For a missing or unreadable path ``image``, or an existing ``output`` without ``overwrite``.

    Shape:
        - tensor image: :math:`(C, H, W)` or :math:`(N, C, H, W)`; output of the same shape.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> restore(net, torch.rand(3, 40, 50), tile=24, overlap=8).shape
        torch.Size([3, 40, 50])
        >>> import tempfile
        >>> gray = write_image(os.path.join(tempfile.mkdtemp(), "gray16.png"), np.zeros((20, 30), np.uint16))
        >>> pixels = restore(net, gray)  # a file: its restored pixels, its channels and depth
        >>> pixels.shape, pixels.dtype
        ((20, 30, 1), dtype('uint16'))
    """
    opts = dict(
        tile=tile,
        overlap=overlap,
        tta=tta,
        degradation=degradation,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        clamp=clamp,
        progress=progress,
    )  # for the tensor path that a path, an array or a PIL image comes back through
    in_ch = int(getattr(model, "in_channels", 3))
    if isinstance(image, (str, os.PathLike)):
        if output is not None and os.path.realpath(output) == os.path.realpath(image):
            raise UsageError(f"output {output} is the input file; refusing to overwrite an input")
        arr = read_image_array(image, keep_channels=True)
        _, res = restore_array(model, arr, lambda t: restore(model, t, **opts))
        if output is None:
            return res
        return write_image(output, res, bits=8 if res.dtype == np.uint8 else 16, overwrite=overwrite)
    if output is not None:
        raise UsageError("output= is only used with a path input; write the returned image yourself")
    if isinstance(image, np.ndarray):
        arr = image[:, :, None] if image.ndim == 2 else image
        if arr.ndim == 3 and arr.shape[2] != in_ch and arr.shape[2] <= 4:  # grayscale, alpha: as a file's
            res = restore_array(model, arr, lambda t: restore(model, t, **opts))[1]
            return res[:, :, 0] if image.ndim == 2 else res
        x = array_to_tensor(image)  # (H, W, C) or (H, W)
        if x.shape[0] != in_ch:
            raise UsageError(
                f"the network takes {in_ch} channels, the array has shape {image.shape} (H, W, C)"
            )
        y = restore(model, x, **opts)
        if np.issubdtype(image.dtype, np.floating):
            res = y.permute(1, 2, 0).numpy().astype(image.dtype)
        else:
            res = tensor_to_array(y, image.dtype)
        return res[:, :, 0] if image.ndim == 2 else res
    pil = sys.modules.get("PIL.Image")  # an image of it exists only once it is imported
    if pil is not None and isinstance(image, pil.Image):
        try:
            arr = _mode_pixels(image, "the PIL image")
        except ImageReadError as exc:
            raise UsageError(f"cannot restore the PIL image: {exc.reason}") from exc
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        _, res = restore_array(model, arr, lambda t: restore(model, t, **{**opts, "clamp": True}))
        out = pil.fromarray(res[:, :, 0] if res.shape[2] == 1 else res, "LA" if res.shape[2] == 2 else None)
        mode = image.mode  # back to it where Pillow can convert
        if out.mode != mode and (
            mode in ("CMYK", "YCbCr", "LAB", "HSV", "I", "RGBX") or mode.startswith("I;16")
        ):
            out = out.convert(mode)
        return out
    if not isinstance(image, torch.Tensor):
        raise UsageTypeError(
            "image must be a torch.Tensor, a numpy array, a PIL image or a path, got " + type(image).__name__
        )
    if image.ndim not in (3, 4):
        raise UsageError(f"a tensor image must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise UsageError(
            f"a tensor image must be floating point in [0, 1], got {image.dtype}; use x.float() / 255"
        )
    x = image if image.ndim == 4 else image.unsqueeze(0)
    if x.shape[1] != in_ch:
        raise UsageError(f"the network takes {in_ch} channels, the image has shape {tuple(image.shape)}")
    if min(x.shape) < 1:
        raise UsageError(f"the image is empty: shape {tuple(image.shape)}")
    try:
        size = (
            [tile, tile]
            if isinstance(tile, (int, np.integer))
            else list(x.shape[2:] if tile is None else map(int, tile))
        )
    except (TypeError, ValueError):
        size = []
    if len(size) != 2 or min(size) < 1 or isinstance(tile, (str, bytes, bool)):
        raise UsageError(f"tile must be a positive int or (height, width), got {tile!r}")
    if not isinstance(overlap, (int, np.integer)) or overlap < 0:
        raise UsageError(f"overlap must be an int >= 0, got {overlap!r}")
    if tile is not None and overlap >= min(size):
        raise UsageError(f"overlap ({overlap}) must be smaller than the tile size ({tuple(size)})")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError(f"batch_size must be an int >= 1, got {batch_size!r}")
    _check_unit_range(x, "the input image")
    takes_degradation = bool(getattr(model, "accepts_degradation", False))
    if degradation is not None and not takes_degradation:
        raise UsageError(
            f"{type(model).__name__} does not take a degradation (only PIP networks do); "
            "drop the degradation argument"
        )
    names = getattr(model, "degradations", None)
    if degradation is not None and names is not None:  # refused before any tile runs
        resolve_degradation_weights(degradation, batch_size=x.shape[0], names=names)
    prepare_for_inference(model, device, channels_last=channels_last)
    dev = _device_of(model) if device is None else torch.device(device)
    low = low_precision_dtype(dtype)
    if low is not None and not native_low_precision(low, dev):
        warnings.warn(
            f"{low} is emulated on this {dev.type} (no native support), so it runs much slower than "
            "float32; use dtype=None here",
            RuntimeWarning,
            stacklevel=2,
        )
    channels_last = prefers_channels_last(dev) if channels_last is None else channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if compile and model not in _COMPILED:
        _COMPILED[model] = torch.compile(model)  # type: ignore[assignment]  # once per network
    net = _COMPILED[model] if compile else model
    transforms = tta_transforms(tta)

    weights_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)

    def run(x: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
        x = x.to(dev, weights_dtype).contiguous(memory_format=fmt)
        kwargs = {"degradation": _degradation_for(degradation, index, dev)} if takes_degradation else {}
        out = torch.zeros((), device=dev)
        with autocast(dev, low), low_precision_policy(model, enabled=low is not None):
            for fwd, inv in transforms:
                out = out + inv(net(fwd(x), **kwargs).float())
        return (out / len(transforms)).contiguous().cpu()

    def classify(x: torch.Tensor) -> torch.Tensor:
        with autocast(dev, low):
            logits = model.classify(x.to(dev, weights_dtype).contiguous(memory_format=fmt))  # type: ignore[operator]
            return logits.float().cpu()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tiled = size[0] < x.shape[2] or size[1] < x.shape[3]
            if tiled and degradation is None and getattr(model, "classifier", None) is not None:
                # blind PIP in tiles: one degradation per image, not one guessed from each tile
                degradation = _blind_weights(classify, x.detach().float().cpu(), size, overlap, batch_size)
            out = _restore_tiled(x.detach().float().cpu(), run, size, overlap, batch_size, progress)
    finally:
        model.train(was_training)
    out = out.clamp_(0, 1) if clamp else out
    return (out if image.ndim == 4 else out[0]).to(device=image.device, dtype=image.dtype)
