"""Synthetic degradations of float ``(C, H, W)`` or ``(N, C, H, W)`` images in [0, 1], random only by ``rng``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..degradation_types import DEGRADATION_LABELS, parse_degradation
from ..errors import UsageError, UsageTypeError
from ..io import _check_unit_range

__all__ = ["DEGRADATIONS", "DEGRADATION_LABELS", "synthesize"]

Rng = int | torch.Generator | None
Generator = torch.Generator | None


def make_generator(rng: Rng) -> Generator:
    """A generator seeded by ``rng``; a generator or ``None`` is returned as is."""
    if rng is None or isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int):
        raise UsageTypeError(f"rng must be an int seed, a torch.Generator or None, got {type(rng).__name__}")
    return torch.Generator().manual_seed(rng)


def _on_images(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` of a float32 ``(N, C, H, W)`` batch, taking and giving either layout, clamped, in its dtype."""

    @functools.wraps(fn)
    def apply(image: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            raise UsageTypeError(f"{fn.__name__}: image must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim not in (3, 4) or not image.is_floating_point():
            raise UsageError(
                f"{fn.__name__}: image must be a float tensor (C, H, W) or (N, C, H, W) in [0, 1], "
                f"got {image.dtype} of shape {tuple(image.shape)}"
            )
        if 0 in image.shape[-3:]:
            raise UsageError(f"{fn.__name__}: image is empty, of shape {tuple(image.shape)}")
        if image.numel():
            _check_unit_range(image, f"{fn.__name__}: image")
        out = fn((image[None] if image.ndim == 3 else image).float(), *args, **kwargs)
        return out.clamp(0, 1).to(image.dtype).reshape(image.shape)

    return apply


@_on_images
def add_gaussian_noise(image: torch.Tensor, sigma: float = 25.0, *, rng: Rng = None) -> torch.Tensor:
    """Gaussian noise of ``sigma`` (0-255 scale) on 8-bit levels, clipped and truncated as PromptIR / PIP."""
    if sigma < 0:
        raise UsageError(f"add_gaussian_noise: sigma must be >= 0, got {sigma}")
    noise = torch.randn(image.shape, generator=make_generator(rng), dtype=torch.float32).to(image.device)
    return torch.floor(torch.clamp(torch.round(image * 255.0) + noise * sigma, 0.0, 255.0)) / 255.0


def motion_kernel(length: float, angle: float) -> torch.Tensor:
    """A float32 ``(s, s)`` kernel summing to one, ``s`` odd: a line of ``length`` pixels at ``angle`` degrees
    (0 horizontal, counter-clockwise)."""
    if not 1 <= length < float("inf"):
        raise UsageError(f"motion_kernel: length must be a finite number >= 1 pixel, got {length}")
    size = math.ceil(length) // 2 * 2 + 1
    k = torch.zeros(size, size, dtype=torch.float64)
    c = (size - 1) / 2
    n = max(int(length * 8), 8)
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * length - length / 2
    a = math.radians(angle)
    xi = torch.round(c + t * math.cos(a)).long().clamp(0, size - 1)
    yi = torch.round(c - t * math.sin(a)).long().clamp(0, size - 1)
    k.index_put_((yi, xi), torch.ones(n, dtype=torch.float64), accumulate=True)
    return (k / k.sum()).float()


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    s, c = kernel.shape[-1], x.shape[1]
    p = s // 2
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    w = kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, s, s)
    return F.conv2d(F.pad(x, (p, p, p, p), mode=mode), w, groups=c)


@_on_images
def motion_blur(image: torch.Tensor, length: float = 9.0, angle: float = 0.0) -> torch.Tensor:
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (:func:`motion_kernel`), reflect-padded."""
    return _filter(image, motion_kernel(length, angle))


@_on_images
def add_rain(
    image: torch.Tensor,
    *,
    density: float = 0.004,
    length: float = 15.0,
    angle: float = 75.0,
    intensity: float = 0.7,
    rng: Rng = None,
) -> torch.Tensor:
    """Rain streaks screen-blended (``1 - (1 - x)(1 - s)``): a ``density`` share of the pixels seeds a streak
    of ``length`` pixels at ``angle`` degrees (90 vertical) and brightness ``intensity``."""
    if not 0 <= density <= 1:
        raise UsageError(f"add_rain: density must be in [0, 1], got {density}")
    g = make_generator(rng)
    n, _, h, w = image.shape
    seeds = (torch.rand(n, 1, h, w, generator=g) < density).float()
    seeds = seeds * (0.5 + 0.5 * torch.rand(n, 1, h, w, generator=g))
    streaks = _filter(seeds, motion_kernel(length, angle)) * length
    s = (streaks * intensity).clamp(0, 1).to(image.device)
    return 1 - (1 - image) * (1 - s)


@_on_images
def add_haze(
    image: torch.Tensor,
    *,
    beta: float = 1.2,
    airlight: float = 0.85,
    depth: torch.Tensor | None = None,
    rng: Rng = None,
) -> torch.Tensor:
    r"""Haze by the atmospheric scattering model, :math:`I = J t + A (1 - t)`, :math:`t = e^{-\beta d}`.

    ``airlight`` is the grey ``A``; ``depth`` ``d`` in [0, 1] is ``(H, W)``, ``(1, H, W)`` or ``(N, 1, H, W)``,
    by default a smooth random map in [0.2, 1], far at the top.
    """
    n, _, h, w = image.shape
    if depth is None:
        coarse = torch.rand(n, 1, 4, 4, generator=make_generator(rng))
        f = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        lo, hi = f.amin(dim=(2, 3), keepdim=True), f.amax(dim=(2, 3), keepdim=True)
        ramp = torch.linspace(1.0, 0.0, h).view(1, 1, h, 1).expand(n, 1, h, w)
        d = 0.2 + 0.8 * (0.6 * ramp + 0.4 * (f - lo) / (hi - lo + 1e-8))
    else:
        if not isinstance(depth, torch.Tensor):
            raise UsageTypeError(f"add_haze: depth must be a torch.Tensor, got {type(depth).__name__}")
        d = depth.float().reshape(-1, 1, *depth.shape[-2:])
        if d.shape[-2:] != (h, w) or d.shape[0] not in (1, n):
            raise UsageError(
                f"add_haze: depth has shape {tuple(depth.shape)}; expected (H, W), (1, H, W) or (N, 1, H, W) "
                f"for {n} image(s) of size {(h, w)}"
            )
    t = torch.exp(-beta * d.to(image.device))
    return image * t + airlight * (1 - t)


@_on_images
def add_snow(
    image: torch.Tensor,
    *,
    density: float = 0.003,
    flake_size: float = 1.2,
    motion: float = 4.0,
    angle: float = 70.0,
    opacity: float = 0.9,
    rng: Rng = None,
) -> torch.Tensor:
    """Snow: soft white flakes of Gaussian radius ``flake_size`` seeded at a ``density`` share of the pixels,
    twice as large at a quarter of it, smeared ``motion`` pixels (below 1: none) at ``angle`` degrees, of
    core whiteness ``opacity``."""
    if not flake_size > 0:
        raise UsageError(f"add_snow: flake_size must be positive, got {flake_size}")
    g = make_generator(rng)
    n, _, h, w = image.shape
    mask = torch.zeros(n, 1, h, w)
    for dens, sigma in ((density, flake_size), (density / 4, flake_size * 2)):
        seeds = (torch.rand(n, 1, h, w, generator=g) < dens).float()
        r = max(math.ceil(3 * sigma), 1)
        k1 = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
        k = torch.outer(k1, k1) / torch.outer(k1, k1).sum()
        layer = _filter(seeds, k) / k.max()
        if motion >= 1:
            layer = _filter(layer, motion_kernel(motion, angle)) * (0.5 + 0.5 * math.sqrt(motion))
        mask = torch.maximum(mask, layer.clamp(0, 1))
    m = (mask * opacity).to(image.device)
    return image * (1 - m) + m


@_on_images
def low_light(
    image: torch.Tensor, *, gamma: float = 2.0, scale: float = 0.4, noise_sigma: float = 0.0, rng: Rng = None
) -> torch.Tensor:
    r"""Low light: :math:`y = s \cdot image^{\gamma} + \mathcal{N}(0, \sigma)` (``noise_sigma`` on [0, 1])."""
    if gamma <= 0 or scale <= 0:
        raise UsageError(f"low_light: gamma and scale must be positive, got {gamma}, {scale}")
    y = scale * image.clamp(0, 1).pow(gamma)
    if noise_sigma > 0:
        y = y + noise_sigma * torch.randn(image.shape, generator=make_generator(rng)).to(image.device)
    return y


def _random_noise(x: torch.Tensor, g: Generator) -> torch.Tensor:
    return add_gaussian_noise(x, (15.0, 25.0, 50.0)[int(torch.randint(3, (), generator=g))], rng=g)


def _drawn(fn: Callable[..., torch.Tensor], seeded: bool = True, **ranges: tuple[float, float]) -> Callable:
    """``fn`` with each keyword drawn uniformly from its range, in order (and ``rng=g`` when ``seeded``)."""

    def apply(x: torch.Tensor, g: Generator) -> torch.Tensor:
        kwargs = {k: lo + (hi - lo) * float(torch.rand((), generator=g)) for k, (lo, hi) in ranges.items()}
        return fn(x, **kwargs, rng=g) if seeded else fn(x, **kwargs)

    return apply


#: Name -> ``f(image, generator)`` with random parameters; one per degradation of the vocabulary.
DEGRADATIONS: dict[str, Callable[[torch.Tensor, Generator], torch.Tensor]] = {
    "noise": _random_noise,
    "rain": _drawn(add_rain, density=(0.002, 0.008), length=(8, 25), angle=(60, 120), intensity=(0.5, 0.9)),
    "haze": _drawn(add_haze, beta=(0.6, 1.8), airlight=(0.7, 1.0)),
    "blur": _drawn(motion_blur, False, length=(5, 17), angle=(0, 180)),
    "lowlight": _drawn(low_light, gamma=(1.5, 3.0), scale=(0.25, 0.6), noise_sigma=(0.0, 0.02)),
    "snow": _drawn(
        add_snow,
        density=(0.001, 0.006),
        flake_size=(0.8, 1.8),
        motion=(1, 6),
        angle=(60, 120),
        opacity=(0.7, 1.0),
    ),
}


def synthesize(image: torch.Tensor, degradation: str, *, rng: Rng = None) -> torch.Tensor:
    """Apply a degradation (:func:`~allinone_ir.degradation_types.parse_degradation`) with random parameters.

    Raises:
        UsageError: For an unknown name, or a level given to a degradation other than noise.

    Examples:
        >>> x = torch.rand(3, 16, 16)
        >>> torch.equal(synthesize(x, "noise_15", rng=4), add_gaussian_noise(x, 15, rng=4))
        True
    """
    name, level = parse_degradation(degradation)
    if level is not None:
        return add_gaussian_noise(image, level, rng=make_generator(rng))
    return DEGRADATIONS[name](image, make_generator(rng))
