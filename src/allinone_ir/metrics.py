"""PSNR and SSIM, and the protocols of the papers (:data:`PROMPTIR_PROTOCOL`, :data:`BASICSR_PROTOCOL`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .errors import UnknownNameError, UsageError, UsageTypeError

__all__ = [
    "BASICSR_PROTOCOL",
    "PROMPTIR_PROTOCOL",
    "MetricProtocol",
    "get_protocol",
    "psnr",
    "rgb_to_y",
    "ssim",
]

Reduction = Literal["mean", "none"]
Window = Literal["uniform", "gaussian"]


def rgb_to_y(x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """BT.601 luma (studio swing) in the value scale of ``x``, as BasicSR's ``rgb2ycbcr(y_only=True)``.

    Shape:
        - x: :math:`(N, 3, H, W)`
        - output: :math:`(N, 1, H, W)`

    Examples:
        >>> float(rgb_to_y(torch.ones(1, 3, 1, 1)))  # white -> 235/255
        0.9215686...
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise UsageError(f"rgb_to_y expects (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
    w = torch.tensor([v / 255.0 for v in (65.481, 128.553, 24.966)], dtype=x.dtype, device=x.device)
    return (x * w.view(1, 3, 1, 1)).sum(dim=1, keepdim=True) + 16.0 / 255.0 * data_range


def check_pair(
    pred: torch.Tensor, target: torch.Tensor, name: str, *, floating: bool = False, ndim: int | None = None
) -> None:
    """Raise unless ``pred`` and ``target`` are tensors of one shape (``floating`` point, ``ndim``-D)."""
    for arg, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise UsageTypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if floating and not t.is_floating_point():
            raise UsageTypeError(f"{name}: {arg} must be a floating-point tensor, got {t.dtype}")
    if pred.shape != target.shape:
        raise UsageError(f"{name}: shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}")
    if ndim is not None and pred.ndim != ndim:
        raise UsageError(f"{name} expects (N, C, H, W) tensors, got shape {tuple(pred.shape)}")


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, data_range: float, crop_border: int, y_channel: bool, name: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    check_pair(pred, target, name)
    if pred.ndim not in (3, 4):
        raise UsageError(f"{name}: images must have shape (N, C, H, W) or (C, H, W), got {tuple(pred.shape)}")
    if data_range <= 0:
        raise UsageError(f"{name}: data_range must be positive, got {data_range}")
    lo, hi = (float(v) for v in torch.aminmax(target)) if target.numel() else (0.0, 0.0)
    if not -0.25 * data_range <= lo <= hi <= 1.25 * data_range:  # NaN fails too
        raise UsageError(
            f"{name}: target holds values from {lo:.4g} to {hi:.4g}, not in [0, data_range={data_range:g}]; "
            "pass data_range=255 for 8-bit values"
        )
    if not hasattr(crop_border, "__index__"):  # a slice needs an integer
        raise UsageTypeError(f"{name}: crop_border must be a whole number of pixels, got {crop_border!r}")
    h, w = pred.shape[-2:]
    if not 0 <= 2 * crop_border < min(h, w):
        raise UsageError(f"{name}: crop_border {crop_border} is negative or crops all of {h}x{w}")
    cut = (..., slice(crop_border, h - crop_border), slice(crop_border, w - crop_border))
    p, t = pred[cut].double(), target[cut].double()
    if pred.ndim == 3:
        p, t = p[None], t[None]
    if y_channel:
        p, t = rgb_to_y(p, data_range), rgb_to_y(t, data_range)
    return p, t, pred.ndim == 3


def _reduce(values: torch.Tensor, reduction: str, single: bool) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values[0] if single else values
    raise UsageError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (float64; ``inf`` for identical images), as scikit-image's.

    Args:
        data_range: Value span of the images (1 for [0, 1], 255 for 8-bit values).
        crop_border: Pixels removed on every side first.
        y_channel: Measure the BT.601 luma instead of RGB.
        reduction: ``"mean"`` (of the per-image values, a scalar) or ``"none"`` (``(N,)``).

    Raises:
        UsageError: On mismatched shapes, bad options, or a ``target`` outside ``[0, data_range]`` (NaN too).

    Shape:
        - pred, target: :math:`(N, C, H, W)` or :math:`(C, H, W)`

    Examples:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> round(float(psnr(x + 0.1, x)), 4)
        20.0
    """
    p, t, single = _prepare(pred, target, data_range, crop_border, y_channel, "psnr")
    mse = (p - t).pow(2).flatten(1).mean(dim=1)
    return _reduce(10.0 * torch.log10(data_range**2 / mse), reduction, single)


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: Window = "uniform",
    sample_covariance: bool | None = None,
) -> torch.Tensor:
    """The differentiable SSIM map of ``(N, C, H, W)`` images over the valid region, in ``pred``'s dtype;
    covariance by default: sample for the uniform window (scikit-image), population for the Gaussian (BasicSR)."""
    if window not in ("uniform", "gaussian"):
        raise UsageError(f"window must be 'uniform' or 'gaussian', got {window!r}")
    s = 7 if window == "uniform" else 11
    r = torch.arange(s, dtype=torch.float64) - s // 2
    w1 = torch.ones(s, dtype=torch.float64) if s == 7 else torch.exp(-(r**2) / (2 * 1.5**2))
    w1 = w1 / w1.sum()
    c, h, w = pred.shape[1:]
    if h < s or w < s:
        raise UsageError(f"SSIM with a {s}x{s} {window} window needs images of at least {s}x{s}, got {h}x{w}")
    kernel = torch.outer(w1, w1).to(device=pred.device, dtype=pred.dtype).expand(c, 1, s, s)
    sample = window == "uniform" if sample_covariance is None else sample_covariance
    cov_norm = s * s / (s * s - 1.0) if sample else 1.0
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target])
    mu_x, mu_y, xx, yy, xy = F.conv2d(stacked, kernel, groups=c).chunk(5)
    vx, vy, vxy = cov_norm * (xx - mu_x * mu_x), cov_norm * (yy - mu_y * mu_y), cov_norm * (xy - mu_x * mu_y)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mu_x * mu_y + c1) * (2 * vxy + c2) / ((mu_x * mu_x + mu_y * mu_y + c1) * (vx + vy + c2))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    window: Window = "uniform",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Structural similarity per image (float64), as scikit-image's ``structural_similarity``.

    Args:
        window: ``"uniform"`` (7x7, its default) or ``"gaussian"`` (11x11, sigma 1.5, population covariance, as
            BasicSR / MATLAB); the other arguments as :func:`psnr`'s.

    Raises:
        UsageError: As :func:`psnr`'s, and for images smaller than the window.

    Shape:
        - pred, target: :math:`(N, C, H, W)` or :math:`(C, H, W)`

    Examples:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(ssim(x, x))
        1.0
    """
    p, t, single = _prepare(pred, target, data_range, crop_border, y_channel, "ssim")
    values = ssim_map(p, t, data_range=data_range, window=window).flatten(1).mean(dim=1)
    return _reduce(values, reduction, single)


@dataclass(frozen=True)
class MetricProtocol:
    """How PSNR and SSIM are computed, so results can be compared with a paper.

    Attributes:
        name: Short name (see :func:`get_protocol`).
        data_range: Value span of the images the metric sees.
        crop_border: Pixels removed on every side.
        y_channel: Measure the BT.601 luma instead of RGB.
        ssim_window: ``"uniform"`` or ``"gaussian"``.
        quantize: Round predictions and targets to 8-bit levels first (BasicSR's ``tensor2img``).
        clamp: Clamp predictions to ``[0, 1]`` first (every official test script does).

    Examples:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> PROMPTIR_PROTOCOL.compute(x, x)["ssim"]
        1.0
    """

    name: str
    data_range: float = 1.0
    crop_border: int = 0
    y_channel: bool = False
    ssim_window: Window = "uniform"
    quantize: bool = False
    clamp: bool = True

    def compute_per_image(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """PSNR and SSIM of every image of a batch of [0, 1] images: ``{"psnr": (N,), "ssim": (N,)}``."""
        check_pair(pred, target, f"{self.name} protocol", floating=True)
        p, t = (x.detach().double().reshape(-1, *x.shape[-3:]) for x in (pred, target))
        if self.clamp:
            p = p.clamp(0, 1)
        if self.quantize:
            p, t = torch.round(p * 255.0) / 255.0, torch.round(t * 255.0) / 255.0
        p, t = p * self.data_range, t * self.data_range
        kw: dict[str, Any] = dict(data_range=self.data_range, crop_border=self.crop_border)
        kw.update(y_channel=self.y_channel, reduction="none")
        return {"psnr": psnr(p, t, **kw), "ssim": ssim(p, t, window=self.ssim_window, **kw)}

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over a batch of [0, 1] images: ``{"psnr": float, "ssim": float}``."""
        return {k: float(v.mean()) for k, v in self.compute_per_image(pred, target).items()}


#: PromptIR / PIP official evaluation: scikit-image on RGB floats, data range 1, 7x7 uniform SSIM.
PROMPTIR_PROTOCOL = MetricProtocol(name="promptir")
#: BasicSR / MATLAB style: Y channel of 8-bit images, Gaussian 11x11 sigma 1.5 SSIM.
BASICSR_PROTOCOL = MetricProtocol(name="basicsr", y_channel=True, ssim_window="gaussian", quantize=True)

PROTOCOLS: dict[str, MetricProtocol] = {"promptir": PROMPTIR_PROTOCOL, "basicsr": BASICSR_PROTOCOL}


def get_protocol(name: str | MetricProtocol) -> MetricProtocol:
    """A protocol by name (``"promptir"``, ``"basicsr"``); a protocol object is returned as is.

    Raises:
        UnknownNameError: For an unknown name.

    Examples:
        >>> get_protocol("basicsr").y_channel
        True
    """
    if isinstance(name, MetricProtocol):
        return name
    key = str(name).lower()
    if key not in PROTOCOLS:
        raise UnknownNameError(f"unknown metric protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[key]
