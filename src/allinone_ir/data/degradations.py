"""Synthetic degradations of float images in [0, 1]: noise, rain, haze, snow, motion blur, low light.

Each function takes a ``(C, H, W)`` or ``(N, C, H, W)`` image and returns one of the same shape and dtype.
Randomness comes only from ``rng``: an ``int`` seed, a ``torch.Generator``, or ``None`` (torch's global one).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..degradation_types import DEGRADATION_LABELS, parse_degradation
from ..errors import UsageError, UsageTypeError

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


def _check(image: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    if not isinstance(image, torch.Tensor):
        raise UsageTypeError(f"{name}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (3, 4) or not image.is_floating_point():
        raise UsageError(
            f"{name}: image must be a float tensor (C, H, W) or (N, C, H, W) in [0, 1], "
            f"got {image.dtype} of shape {tuple(image.shape)}"
        )
    return (image.unsqueeze(0) if image.ndim == 3 else image), image.ndim == 3


def _out(x: torch.Tensor, like: torch.Tensor, single: bool) -> torch.Tensor:
    x = x.clamp(0, 1).to(like.dtype)
    return x[0] if single else x


def add_gaussian_noise(image: torch.Tensor, sigma: float = 25.0, *, rng: Rng = None) -> torch.Tensor:
    """Gaussian noise of ``sigma`` (0-255 scale) on 8-bit levels, clipped and truncated as PromptIR / PIP."""
    x, single = _check(image, "add_gaussian_noise")
    if sigma < 0:
        raise UsageError(f"add_gaussian_noise: sigma must be >= 0, got {sigma}")
    noise = torch.randn(x.shape, generator=make_generator(rng), dtype=torch.float32).to(x.device)
    levels = torch.round(x.float() * 255.0)
    return _out(torch.floor(torch.clamp(levels + noise * sigma, 0.0, 255.0)) / 255.0, image, single)


def motion_kernel(length: float, angle: float) -> torch.Tensor:
    """A float32 ``(s, s)`` kernel summing to one: a line of ``length`` pixels at ``angle`` degrees.

    ``s`` is the smallest odd size holding the line; 0 degrees is horizontal, counter-clockwise.
    """
    if length < 1:
        raise UsageError(f"motion_kernel: length must be >= 1 pixel, got {length}")
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


def motion_blur(image: torch.Tensor, length: float = 9.0, angle: float = 0.0) -> torch.Tensor:
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (:func:`motion_kernel`), reflect-padded."""
    x, single = _check(image, "motion_blur")
    return _out(_filter(x.float(), motion_kernel(length, angle)), image, single)


def add_rain(
    image: torch.Tensor,
    *,
    density: float = 0.004,
    length: float = 15.0,
    angle: float = 75.0,
    intensity: float = 0.7,
    rng: Rng = None,
) -> torch.Tensor:
    """Rain streaks: sparse drops smeared by a motion kernel, screen-blended (``1 - (1 - x)(1 - s)``).

    Args:
        density: Fraction of pixels seeding a streak.
        length: Streak length in pixels.
        angle: Streak direction in degrees (90 = vertical).
        intensity: Streak brightness.
    """
    x, single = _check(image, "add_rain")
    if not 0 <= density <= 1:
        raise UsageError(f"add_rain: density must be in [0, 1], got {density}")
    g = make_generator(rng)
    n, _, h, w = x.shape
    seeds = (torch.rand(n, 1, h, w, generator=g) < density).float()
    seeds = seeds * (0.5 + 0.5 * torch.rand(n, 1, h, w, generator=g))
    streaks = _filter(seeds, motion_kernel(length, angle)) * length
    s = (streaks * intensity).clamp(0, 1).to(x.device)
    return _out(1 - (1 - x.float()) * (1 - s), image, single)


def add_haze(
    image: torch.Tensor,
    *,
    beta: float = 1.2,
    airlight: float = 0.85,
    depth: torch.Tensor | None = None,
    rng: Rng = None,
) -> torch.Tensor:
    r"""Haze by the atmospheric scattering model, :math:`I = J t + A (1 - t)`, :math:`t = e^{-\beta d}`.

    Args:
        beta: Scattering coefficient (larger is denser haze).
        airlight: Grey atmospheric light ``A``.
        depth: Depth in [0, 1], ``(H, W)``, ``(1, H, W)`` or ``(N, 1, H, W)``; default a smooth random
            map in [0.2, 1], far at the top.
    """
    x, single = _check(image, "add_haze")
    n, _, h, w = x.shape
    if depth is None:
        coarse = torch.rand(n, 1, 4, 4, generator=make_generator(rng))
        f = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        lo, hi = f.amin(dim=(2, 3), keepdim=True), f.amax(dim=(2, 3), keepdim=True)
        ramp = torch.linspace(1.0, 0.0, h).view(1, 1, h, 1).expand(n, 1, h, w)
        d = 0.2 + 0.8 * (0.6 * ramp + 0.4 * (f - lo) / (hi - lo + 1e-8))
    else:
        d = depth.float().reshape(-1, 1, *depth.shape[-2:])
        if d.shape[-2:] != (h, w):
            raise UsageError(f"add_haze: depth has size {tuple(d.shape[-2:])}, the image {(h, w)}")
    t = torch.exp(-beta * d.to(x.device))
    return _out(x.float() * t + airlight * (1 - t), image, single)


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
    """Snow: two layers of soft white flakes (small, and large at a quarter of the density), smeared.

    Args:
        density: Fraction of pixels seeding a small flake.
        flake_size: Gaussian radius of the small flakes in pixels (large ones are twice as big).
        motion: Falling-motion smear in pixels (below 1: none).
        angle: Falling direction in degrees.
        opacity: How white the flake cores get.
    """
    x, single = _check(image, "add_snow")
    g = make_generator(rng)
    n, _, h, w = x.shape
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
    m = (mask * opacity).to(x.device)
    return _out(x.float() * (1 - m) + m, image, single)


def low_light(
    image: torch.Tensor, *, gamma: float = 2.0, scale: float = 0.4, noise_sigma: float = 0.0, rng: Rng = None
) -> torch.Tensor:
    r"""Low light: :math:`y = s \cdot x^{\gamma} + \mathcal{N}(0, \sigma)` (``noise_sigma`` on [0, 1])."""
    x, single = _check(image, "low_light")
    if gamma <= 0 or scale <= 0:
        raise UsageError(f"low_light: gamma and scale must be positive, got {gamma}, {scale}")
    y = scale * x.float().clamp(0, 1).pow(gamma)
    if noise_sigma > 0:
        y = y + noise_sigma * torch.randn(x.shape, generator=make_generator(rng)).to(x.device)
    return _out(y, image, single)


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
