"""Restoring whole images: seamless overlapping tiles, test-time augmentation, any input kind.

:func:`restore` runs a network on an image of any size. With ``tile`` set, the image is
cut into overlapping tiles that are restored in batches and blended with a smooth
separable window, normalised by the accumulated weight, so that no seam is visible
and peak memory depends on the tile size, not on the image size. ``tta`` averages the
outputs over flips (and 90-degree rotations for the x8 self-ensemble).

:func:`prepare_for_inference` (called by :func:`restore`) moves the network to its device and
stores its weights channels-last where that is faster (CPU, CUDA). ``dtype=torch.bfloat16`` runs
under autocast with the network's :func:`low_precision_policy`; ``compile=True`` wraps the network in
``torch.compile``. :func:`restore` changes no process-wide state (allocator, threads, environment).

Blending window (per axis, for a tile edge that borders another tile; ``O`` = overlap):
the outermost ``O // 4`` pixels get weight 0 (they see the tile's padding), the next
``O - 2 * (O // 4)`` pixels a raised-cosine ramp from 0 to 1, the rest weight 1. Ramps of
two neighbouring tiles sum to one, and a network whose receptive field reaches less
than ``O // 4`` pixels gives exactly the whole-image result.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._runtime import autocast, low_precision_dtype, progress_bar
from .errors import UsageError, UsageTypeError
from .io import _mode_pixels, array_to_tensor, read_image_array, tensor_to_array, write_image

__all__ = ["low_precision_policy", "native_low_precision", "restore", "restore_array", "tta_transforms"]

TTAMode = Literal["flip", "x8"]
#: Accepted ``tta`` values other than ``False``/``None``: ``True`` is ``"x8"``.
TTA_MODES: tuple[str, ...] = ("flip", "x8")

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def tta_transforms(mode: TTAMode | bool) -> list[Transform]:
    """Forward and inverse transforms of a test-time augmentation mode.

    Args:
        mode: ``"x8"`` (or ``True``): the eight flips / 90-degree rotations (the dihedral group);
            ``"flip"``: identity, horizontal, vertical and both flips (4 runs, no transposition).

    Returns:
        A list of ``(forward, inverse)`` pairs acting on ``(N, C, H, W)`` tensors; the first is the identity.

    Raises:
        ValueError: On an unknown mode.

    Examples:
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)
        >>> all(torch.equal(inv(fwd(x)), x) for fwd, inv in tta_transforms("x8"))
        True
        >>> len(tta_transforms("flip"))
        4
    """
    if mode is True:
        mode = "x8"
    if mode not in TTA_MODES:
        raise UsageError(f"tta must be False, True, 'flip' or 'x8', got {mode!r}")
    pairs: list[Transform] = []
    rotations = (0, 1, 2, 3) if mode == "x8" else (0, 2)
    for k in rotations:
        for flip in (False, True):  # with rotations (0, 2): identity, h-flip, both flips, v-flip

            def fwd(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = torch.rot90(t, k, dims=(-2, -1)) if k else t
                return t.flip(-1) if flip else t

            def inv(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = t.flip(-1) if flip else t
                return torch.rot90(t, -k, dims=(-2, -1)) if k else t

            pairs.append((fwd, inv))
    return pairs


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` pixels with at least ``overlap`` overlap.

    The last tile is shifted back so that it ends at the border (it then overlaps its
    neighbour by more than ``overlap``).

    Args:
        length: Image size along the axis.
        tile: Tile size (clipped to ``length``).
        overlap: Minimum overlap of neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Sorted start offsets.

    Examples:
        >>> tile_starts(100, 40, 8)
        [0, 32, 60]
        >>> tile_starts(30, 40, 8)
        [0]
    """
    tile = min(tile, length)
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """One axis of the tile blending window (see the module docstring).

    Args:
        size: Tile size along the axis.
        overlap: Overlap ``O`` with the neighbouring tiles.
        ramp_start: Whether the tile has a neighbour before it (its start is not the image border).
        ramp_end: Whether the tile has a neighbour after it.

    Returns:
        float32 weights of shape ``(size,)`` in [0, 1].

    Examples:
        >>> w = blend_window(16, 8, True, False)
        >>> [round(float(v), 3) for v in w[:8]]
        [0.0, 0.0, 0.038, 0.309, 0.691, 0.962, 1.0, 1.0]
        >>> float(w[2] + w[5])  # neighbouring ramps sum to one
        1.0
    """
    w = torch.ones(size, dtype=torch.float64)
    if overlap > 0:
        margin = overlap // 4
        length = overlap - 2 * margin
        j = torch.arange(overlap, dtype=torch.float64)
        ramp = torch.sin(0.5 * math.pi * ((j - margin + 0.5) / length).clamp(0, 1)) ** 2
        ramp[:margin] = 0.0
        n = min(overlap, size)
        if ramp_start:
            w[:n] *= ramp[:n]
        if ramp_end:
            w[size - n :] *= ramp[:n].flip(0)
    return w.float()


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def prefers_channels_last(device: str | torch.device) -> bool:
    """Whether the channels-last memory format is the fast layout for these networks on ``device``.

    True on CPU (oneDNN's depthwise and 1x1 convolutions) and on CUDA (tensor-core convolutions);
    false elsewhere (e.g. MPS), where NCHW is kept. The figures are in ``docs/benchmarks.md``.

    Args:
        device: The device the network runs on.

    Returns:
        Whether to store weights and activations channels-last.

    Examples:
        >>> prefers_channels_last("cpu"), prefers_channels_last("mps")
        (True, False)
    """
    return torch.device(device).type in ("cpu", "cuda")


def native_low_precision(dtype: torch.dtype, device: str | torch.device) -> bool:
    """Whether ``device`` computes ``dtype`` (bf16 / fp16) convolutions and matmuls natively (fast).

    On CPU this needs AVX-512 BF16 / AMX (bf16) or AVX-512 FP16 / AMX-FP16 (fp16), as oneDNN reports;
    elsewhere the convolutions are emulated and much slower than float32. On CUDA bf16 needs compute
    capability 8.0 or newer; fp16 always runs natively.

    Args:
        dtype: ``torch.bfloat16`` or ``torch.float16`` (``torch.float32`` is always native).
        device: The device.

    Returns:
        Whether the low-precision path can be faster than float32 there.

    Examples:
        >>> native_low_precision(torch.float32, "cpu")
        True
    """
    dev = torch.device(device)
    if dtype in (torch.float32, torch.float64):
        return True
    if dev.type == "cpu":
        ops = torch.ops.mkldnn
        if dtype == torch.bfloat16:
            return bool(ops._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(ops._is_mkldnn_fp16_supported())
        return False
    if dev.type == "cuda":
        return dtype == torch.float16 or (dtype == torch.bfloat16 and torch.cuda.is_bf16_supported())
    return False


def prepare_for_inference(
    model: nn.Module, device: str | torch.device | None = None, *, channels_last: bool | None = None
) -> nn.Module:
    """Put a network on its device in the fastest memory format there, in place (values are unchanged).

    What :func:`restore` does before running a network. 4-D weights are stored channels-last where
    :func:`prefers_channels_last` says so, and the networks then keep every feature map in that
    layout; only strides change, not values or the state dict.

    Args:
        model: The network (modified in place, like ``model.to``).
        device: Where it runs; ``None`` keeps its device.
        channels_last: ``True``/``False`` forces the layout; ``None`` (default) picks the fastest for
            the device.

    Returns:
        ``model`` itself.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> prepare_for_inference(net, "cpu").uses_channels_last()
        True
    """
    dev = _device_of(model) if device is None else torch.device(device)
    if _device_of(model) != dev:
        model.to(dev)
    want = prefers_channels_last(dev) if channels_last is None else channels_last
    fmt = torch.channels_last if want else torch.contiguous_format
    if _is_channels_last(model) != want:
        model.to(memory_format=fmt)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    return model


def _is_channels_last(model: nn.Module) -> bool:
    uses = getattr(model, "uses_channels_last", None)
    if callable(uses):
        return bool(uses())
    for p in model.parameters():  # first 4-D parameter whose layout is unambiguous
        if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) != p.is_contiguous():
            return p.is_contiguous(memory_format=torch.channels_last)
    return False


@contextlib.contextmanager
def low_precision_policy(model: nn.Module, enabled: bool = True) -> Iterator[list[str]]:
    """Keep the parts of a network that bf16/fp16 perturbs most in float32 while autocast runs the rest.

    The network's family declares them: ``model.low_precision_flags()`` returns
    ``(name, module, attribute)`` triples, and each ``module.attribute`` is set to ``True`` inside this
    context (the Restormer family's choice: :func:`~allinone_ir.models.restormer.restormer_low_precision_flags`).
    A network that declares nothing is left as it is. :func:`restore` uses it for ``dtype=`` bf16/fp16.

    Args:
        model: The network (its flags are restored on exit).
        enabled: ``False`` makes this a no-op.

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
    saved = [(m, attr, m.__dict__.get(attr, None)) for _, m, attr in flags]
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


_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = weakref.WeakKeyDictionary()


def compiled_for_inference(model: nn.Module, mode: bool | str = True) -> nn.Module:
    """``torch.compile(model)`` for inference, cached per network and mode.

    ``mode=True`` uses ``"reduce-overhead"`` (CUDA graphs) on a GPU and the default mode on CPU;
    a string is passed to ``torch.compile`` as its ``mode``. The first call of every new input shape
    compiles (minutes for the full networks on a CPU); tiles of one size compile once.

    Args:
        model: The network.
        mode: ``True`` or a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``,
            ``"max-autotune"``, ...).

    Returns:
        The compiled module (it shares the network's parameters).
    """
    if mode is True:
        mode = "reduce-overhead" if _device_of(model).type == "cuda" else "default"
    if not isinstance(mode, str):
        raise UsageError(f"compile must be True, False or a torch.compile mode, got {mode!r}")
    cache = _COMPILED.setdefault(model, {})
    if mode not in cache:
        cache[mode] = torch.compile(model, mode=mode)  # type: ignore[assignment]
    return cache[mode]


def _progress(total: int, enabled: bool | None, desc: str) -> Any:
    """A tqdm bar (or ``None``): ``enabled=None`` shows it on a terminal for more than one step."""
    if enabled is False or (enabled is None and total <= 1):
        return None
    return progress_bar(
        total=total, desc=desc, unit="tile", disable=None if enabled is None else False, leave=False,
        warn=bool(enabled), stacklevel=3,
    )  # fmt: skip


class _Runner:
    """Runs the network on batches: device transfer, layout, autocast, degradation and TTA."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype | None,
        tta: TTAMode | bool,
        degradation: Any,
        channels_last: bool = False,
        compile: bool | str = False,
    ) -> None:
        self.model = compiled_for_inference(model, compile) if compile else model
        self.policy_model = model
        self.cuda_graphs = bool(compile) and device.type == "cuda" and compile in (True, "reduce-overhead")
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.transforms = tta_transforms(tta) if tta else None
        self.degradation = degradation
        self.takes_degradation = bool(getattr(model, "accepts_degradation", False))
        if degradation is not None and not self.takes_degradation:
            raise UsageError(
                f"{type(model).__name__} does not take a degradation (only PIP networks do); "
                "drop the degradation argument"
            )
        self.autocast_dtype = low_precision_dtype(dtype)
        if self.autocast_dtype is not None and not native_low_precision(self.autocast_dtype, device):
            warnings.warn(
                f"{self.autocast_dtype} is emulated on this {device.type} (no native support), so it runs "
                "much slower than float32; use dtype=None here",
                RuntimeWarning,
                stacklevel=4,
            )

    def _degradation_for(self, index: Sequence[int]) -> Any:
        deg = self.degradation
        if deg is None or isinstance(deg, (str, int, Mapping)):  # one spec for every image
            return deg
        if isinstance(deg, torch.Tensor) and deg.ndim == 0:
            return deg
        if isinstance(deg, torch.Tensor):
            return deg[torch.as_tensor(index, device=deg.device)].to(self.device)
        return [deg[i] for i in index]

    def _forward(self, x: torch.Tensor, deg: Any) -> torch.Tensor:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self.model(x, degradation=deg) if self.takes_degradation else self.model(x)
        return out.clone() if self.cuda_graphs else out  # CUDA graphs reuse their output buffers

    def _backend_flags(self) -> contextlib.AbstractContextManager[Any]:
        """cuDNN autotuning for the fixed shapes of whole images and tiles (unless determinism is asked for)."""
        cudnn = torch.backends.cudnn
        if self.device.type != "cuda" or cudnn.deterministic or torch.are_deterministic_algorithms_enabled():
            return nullcontext()
        return cudnn.flags(
            enabled=cudnn.enabled, benchmark=True, deterministic=False, allow_tf32=cudnn.allow_tf32
        )

    def __call__(self, x: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
        """Restore the batch ``x`` (on CPU, float32) of images ``index``; returns float32 on CPU."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        deg = self._degradation_for(index)
        ctx = autocast(self.device, self.autocast_dtype)
        policy = low_precision_policy(self.policy_model, enabled=self.autocast_dtype is not None)
        with ctx, self._backend_flags(), policy:
            if self.transforms is None:
                out = self._forward(x, deg).float()
            else:
                acc: torch.Tensor | None = None
                for fwd, inv in self.transforms:
                    y = inv(self._forward(fwd(x), deg).float())
                    acc = y if acc is None else acc + y
                assert acc is not None  # there is always at least one transform
                out = acc / len(self.transforms)
        return out.contiguous().cpu()  # NCHW whatever layout the network computed in


def _restore_whole(x: torch.Tensor, run: _Runner, batch_size: int, progress: bool | None) -> torch.Tensor:
    n = x.shape[0]
    outs = []
    bar = _progress(math.ceil(n / batch_size), progress, "restore")
    for i in range(0, n, batch_size):
        outs.append(run(x[i : i + batch_size], list(range(i, min(i + batch_size, n)))))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return torch.cat(outs)


def _tiles(n: int, ys: list[int], xs: list[int]) -> Iterator[tuple[int, int, int]]:
    for b in range(n):
        for y in ys:
            for x in xs:
                yield b, y, x


def _restore_tiled(
    x: torch.Tensor,
    run: _Runner,
    tile: tuple[int, int],
    overlap: int,
    batch_size: int,
    progress: bool | None,
    out_channels: int,
) -> torch.Tensor:
    n, _, h, w = x.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    oy, ox = min(overlap, th - 1), min(overlap, tw - 1)
    ys, xs = tile_starts(h, th, oy), tile_starts(w, tw, ox)
    wy = {y: blend_window(th, oy, y > 0, y + th < h) for y in ys}
    wx = {s: blend_window(tw, ox, s > 0, s + tw < w) for s in xs}
    # The window is separable and the tiles form a grid, so the accumulated weight is the outer
    # product of the per-axis sums; only the weighted outputs need a full-size buffer.
    norm_y = torch.zeros(h)
    for y in ys:
        norm_y[y : y + th] += wy[y]
    norm_x = torch.zeros(w)
    for s in xs:
        norm_x[s : s + tw] += wx[s]
    acc = torch.zeros(n, out_channels, h, w)
    jobs = list(_tiles(n, ys, xs))
    bar = _progress(len(jobs), progress, "tiles")
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        batch = torch.stack([x[b, :, y : y + th, s : s + tw] for b, y, s in chunk])
        out = run(batch, [b for b, _, _ in chunk])
        for (b, y, s), o in zip(chunk, out):
            acc[b, :, y : y + th, s : s + tw].addcmul_(o, wy[y][:, None] * wx[s][None, :])
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return acc.div_(norm_y[:, None] * norm_x[None, :])


def _check_finite(x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise UsageError(f"the input image contains {bad} values; restore() needs finite values in [0, 1]")


def _to_tiles_arg(tile: int | Sequence[int] | None) -> tuple[int, int] | None:
    if tile is None:
        return None
    size = (tile, tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"tile must be a positive int or (height, width), got {tile!r}")
    return size  # type: ignore[return-value]


def _restore_tensor(
    model: nn.Module,
    x: torch.Tensor,
    *,
    tile: int | Sequence[int] | None,
    overlap: int,
    tta: TTAMode | bool,
    degradation: Any,
    batch_size: int,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    channels_last: bool | None,
    compile: bool | str,
    clamp: bool,
    progress: bool | None,
) -> torch.Tensor:
    """Restore an ``(N, C, H, W)`` float tensor; returns float32 on the CPU."""
    tile_hw = _to_tiles_arg(tile)
    if overlap < 0:
        raise UsageError(f"overlap must be >= 0, got {overlap}")
    if tile_hw is not None and overlap >= min(tile_hw):
        raise UsageError(f"overlap ({overlap}) must be smaller than the tile size ({tile_hw})")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    _check_finite(x)
    dev = _device_of(model) if device is None else torch.device(device)
    prepare_for_inference(model, dev, channels_last=channels_last)
    run = _Runner(model, dev, dtype, tta, degradation, _is_channels_last(model), compile)
    out_channels = int(getattr(model, "out_channels", x.shape[1]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = x.detach().to("cpu", torch.float32)
            if tile_hw is None:
                out = _restore_whole(x, run, batch_size, progress)
            else:
                out = _restore_tiled(x, run, tile_hw, overlap, batch_size, progress, out_channels)
    finally:
        model.train(was_training)
    return out.clamp_(0, 1) if clamp else out


def _pil_image_class() -> Any:
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image.Image


#: ITU-R BT.601 luma weights (R, G, B): how a colour network's output becomes a grayscale file
#: (the weights Pillow's ``convert("L")`` uses). A grayscale input is given to a colour network as
#: three equal channels, so its output is nearly gray and the weights barely matter.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def restore_array(
    model: Any, arr: np.ndarray, restore_fn: Callable[[Any], Any] | None = None
) -> tuple[Any, np.ndarray]:
    """Restore the pixels of one file, keeping its bit depth and channels.

    Colour channels go through the network; a grayscale image is given to a 3-channel network as
    three equal channels and its output turned back to one channel with :data:`LUMA_WEIGHTS`; an
    alpha channel is copied back untouched.

    Args:
        model: The network (its ``in_channels`` attribute, default 3, is the channels it takes).
        arr: ``(H, W, C)`` pixels as stored (``read_image_array(path, keep_channels=True)``): C is 1
            (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA); uint8, uint16 or float32 in [0, 1].
        restore_fn: ``(C, H, W) float tensor -> (C, H, W) tensor`` running the network (default:
            :func:`~allinone_ir.inference.restore` with its defaults).

    Returns:
        The network's output, a float ``(C_out, H, W)`` tensor in [0, 1], and the pixels to write:
        ``(H, W, C)`` with the input's C and dtype.

    Raises:
        UsageError: If the network takes another number of channels than the image has (a 1-channel
            network and a colour image).

    Shape:
        - arr: :math:`(H, W, C)`, C in 1..4
        - outputs: :math:`(C_{out}, H, W)` and :math:`(H, W, C)`

    Examples:
        >>> import torch
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
    if restore_fn is None:

        def restore_fn(t: Any) -> Any:
            return restore(model, t, progress=False)

    y = restore_fn(x)
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
    compile: bool | str = False,
    clamp: bool = True,
    progress: bool | None = None,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Any:
    """Restore an image of any size with a network, optionally tiled and with test-time augmentation.

    The network runs in eval mode under ``torch.no_grad`` (its mode is restored afterwards) and is
    prepared in place by :func:`prepare_for_inference`. Tiles are sent to ``device`` ``batch_size``
    at a time and blended into a float32 CPU buffer, so the device holds one batch of tiles.

    Args:
        model: A restoration network taking ``(N, C, H, W)`` images in [0, 1].
        image: One of

            - a float tensor ``(C, H, W)`` or ``(N, C, H, W)`` with values in [0, 1];
            - a numpy array ``(H, W, C)`` (or ``(H, W)``): ``uint8``, ``uint16`` or float in [0, 1];
            - a ``PIL.Image.Image``;
            - a path to an image file.

        tile: Tile size (``int`` or ``(height, width)``); ``None`` restores the whole image at once.
            Multiples of the network's padding multiple (8 for Restormer/PromptIR) avoid padding.
        overlap: Overlap of neighbouring tiles in pixels (the blending width), ``< tile``.
        tta: ``False``; ``"flip"`` (average over 4 flips); ``"x8"`` or ``True`` (self-ensemble over the
            8 flips and 90-degree rotations). Prefer ``"flip"`` for degradations with a direction
            (rain, snow) unless the network was trained on rotated pairs: x8 also shows it sideways
            streaks (see ``docs/study.md``).
        degradation: For networks with ``accepts_degradation`` (PIP): ``None`` (blind), a name such
            as ``"rain"``, an int label, a list of names / a tensor with one entry per image, or
            ``(N, T)`` weights. Other networks reject it.
        batch_size: Tiles (or, untiled, images) per forward pass.
        device: Where the network runs; ``None`` uses the network's device. The network is moved
            there if it is elsewhere.
        dtype: Compute dtype for autocast (``torch.bfloat16`` or ``torch.float16``): convolutions and
            matmuls run in it, attention statistics and softmax in float32, and the layers that low
            precision perturbs most stay float32 (:func:`low_precision_policy`); ``None`` runs in the
            network's dtype. A dtype the device only emulates (bf16 on CPUs without AVX-512 BF16 /
            AMX, see :func:`native_low_precision`) is slower than float32 and warns.
        channels_last: Memory format of the weights and activations: ``None`` (default) picks the
            fastest for the device (:func:`prefers_channels_last`); ``True``/``False`` forces it.
        compile: ``True`` runs the network through ``torch.compile`` (``"reduce-overhead"`` on a
            GPU), or a ``torch.compile`` mode string; cached per network. Each new input shape
            compiles once.
        clamp: Clamp the result to [0, 1]; ``False`` keeps raw values for float outputs (integer
            outputs are always clamped).
        progress: Show a tqdm progress bar: ``None`` shows it on a terminal for jobs of more than
            one step (when tqdm is installed), ``True`` always, ``False`` never.
        output: For a path ``image`` only: where to write the result, as ``allinone-ir restore`` writes
            it: PNG of the input's bit depth (8 or 16; float files as 16-bit) and channels
            (grayscale stays grayscale, an alpha channel is copied back; :func:`restore_array`).
            Without it nothing is written.
        overwrite: Allow ``output`` to replace an existing file.

    Returns:
        A tensor, an array or a PIL image comes back as the same kind: a float tensor of the same
        shape, dtype and device; a numpy array of the same shape and dtype; a PIL image of the
        same mode (palette and bilevel images come back as RGB / RGBA / ``L``, premultiplied
        alpha as straight alpha). A path is a file, not an image: without ``output`` the result
        is the restored pixels as a numpy array, exactly those ``output=`` would write (as
        ``read_image_array(path, keep_channels=True)`` reads them: ``(H, W, C)`` with the file's
        channels and dtype, ``uint8``, ``uint16`` or ``float32``, EXIF orientation applied); with
        ``output``, the path written.

    Raises:
        ValueError: On NaN/infinite input, a wrong shape or channel count, a bad tile/overlap, or a
            degradation given to a network that does not take one.
        TypeError: On an unsupported image type.
        FileNotFoundError: If a path ``image`` does not exist.
        ImageReadError: If a path ``image`` is not a readable image (:func:`~allinone_ir.io.read_image_array`).
        FileExistsError: If ``output`` exists and ``overwrite`` is ``False``.

    Shape:
        - tensor image: :math:`(C, H, W)` or :math:`(N, C, H, W)`; output of the same shape.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> restore(net, torch.rand(3, 40, 50), tile=24, overlap=8).shape
        torch.Size([3, 40, 50])
        >>> import tempfile
        >>> from pathlib import Path
        >>> from allinone_ir.io import write_image
        >>> gray = write_image(Path(tempfile.mkdtemp()) / "gray16.png", np.zeros((20, 30), np.uint16))
        >>> pixels = restore(net, gray)  # a file: its restored pixels, its channels and depth
        >>> pixels.shape, pixels.dtype
        ((20, 30, 1), dtype('uint16'))
    """
    opts: dict[str, Any] = dict(
        tile=tile, overlap=overlap, tta=tta, degradation=degradation, batch_size=batch_size,
        device=device, dtype=dtype, channels_last=channels_last, compile=compile, progress=progress,
    )  # fmt: skip
    in_ch = int(getattr(model, "in_channels", 3))

    if output is not None and not isinstance(image, (str, os.PathLike)):
        raise UsageError("output= is only used with a path input; write the returned image yourself")

    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4):
            raise UsageError(
                f"a tensor image must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise UsageError(
                f"a tensor image must be floating point in [0, 1], got {image.dtype}; use x.float() / 255"
            )
        batch = image if image.ndim == 4 else image.unsqueeze(0)
        if batch.shape[1] != in_ch:
            raise UsageError(f"the network takes {in_ch} channels, the image has shape {tuple(image.shape)}")
        out = _restore_tensor(model, batch, clamp=clamp, **opts)
        out = out if image.ndim == 4 else out[0]
        return out.to(device=image.device, dtype=image.dtype)

    if isinstance(image, np.ndarray):
        return _restore_array(model, image, clamp, opts, in_ch)

    pil_cls = _pil_image_class()
    if pil_cls is not None and isinstance(image, pil_cls):
        return _restore_pil(model, image, lambda t: restore(model, t, clamp=True, **opts))

    if isinstance(image, (str, os.PathLike)):
        if output is not None and _same_file(output, image):
            raise UsageError(f"output {output} is the input file; refusing to overwrite an input")
        # the pixels keep the file's channels (grayscale stays grayscale, alpha is copied back) and depth
        _, res = restore_array(
            model,
            read_image_array(image, keep_channels=True),
            lambda t: restore(model, t, clamp=clamp, **opts),
        )
        if output is None:
            return res
        return write_image(output, res, bits=8 if res.dtype == np.uint8 else 16, overwrite=overwrite)

    raise UsageTypeError(
        "image must be a torch.Tensor, a numpy array, a PIL image or a path, got " + type(image).__name__
    )


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)  # Path.resolve raises on a link loop


#: Pillow modes a restored PIL image is converted back to (from the RGB / 16-bit pixels restored).
_PIL_MODES_BACK: tuple[str, ...] = ("CMYK", "YCbCr", "LAB", "HSV", "I", "RGBX")


def _restore_pil(model: nn.Module, image: Any, restore_fn: Callable[[Any], Any]) -> Any:
    """Restore a PIL image through its pixels (as a file of that mode is read); same mode where Pillow can."""
    from PIL import Image

    from .errors import ImageReadError

    mode = image.mode
    try:
        arr = _mode_pixels(image, "the PIL image")
    except ImageReadError as exc:
        raise UsageError(f"cannot restore the PIL image: {exc.reason}") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    _, res = restore_array(model, arr, restore_fn)
    if res.shape[2] == 1:
        pil = Image.fromarray(res[:, :, 0])
    else:
        pil = Image.fromarray(res, "LA" if res.shape[2] == 2 else None)
    if pil.mode != mode and (mode in _PIL_MODES_BACK or mode.startswith("I;16")):
        pil = pil.convert(mode)
    return pil


def _restore_array(
    model: nn.Module, arr: np.ndarray, clamp: bool, opts: dict[str, Any], in_ch: int
) -> np.ndarray:
    squeeze = arr.ndim == 2
    if arr.ndim not in (2, 3):
        raise UsageError(f"a numpy image must be (H, W, C) or (H, W), got shape {arr.shape}")
    x = array_to_tensor(arr)
    if x.shape[0] != in_ch:
        raise UsageError(f"the network takes {in_ch} channels, the array has shape {arr.shape} (H, W, C)")
    out = _restore_tensor(model, x.unsqueeze(0), clamp=clamp, **opts)[0]
    if np.issubdtype(arr.dtype, np.floating):
        res = out.permute(1, 2, 0).numpy().astype(arr.dtype)
    else:
        res = tensor_to_array(out, arr.dtype)
    return res[:, :, 0] if squeeze else res
