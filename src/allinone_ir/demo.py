"""``allinone-ir demo``: the whole library end to end on the bundled photographs, no downloads.

The demo synthesises noise, rain, haze and snow on the sample photographs shipped with the package
(:mod:`allinone_ir.assets`), trains a small all-in-one network (PromptIR or PIP in a reduced
configuration) with :class:`~allinone_ir.training.Trainer` for a time budget, restores a photograph
that training never saw, and writes to the output folder:

- ``grid.png``: one labelled row per degradation, columns clean | degraded | restored, with the PSNR /
  SSIM of every degraded and restored image against the clean one;
- ``metrics.md`` / ``metrics.json``: PSNR and SSIM before and after, and the mean colour of the clean,
  degraded and restored images, per degradation (PromptIR protocol);
- ``curves.png``: the training-loss curve (when matplotlib is installed);
- ``model/``: the trained network (``model.safetensors`` + ``config.json``), usable with
  ``allinone-ir restore --checkpoint OUT/model``;
- ``inputs/``: the degraded test images, to try that command on;
- the trainer's logs (``train_log.csv``, ``history.json``, ``config.json``) and last checkpoint.

The summary it prints is honest: the PSNR gain *and* the SSIM change of every degradation, a note
for each one that did not improve in both (an SSIM drop is a regression even when PSNR rose), and
whether each restored image keeps the clean image's mean colour within :data:`COLOUR_TOLERANCE`
levels per channel.

The training recipe comes from measuring why the haze row once had a strong warm cast (mean RGB
156/100/73 against 153/118/95):

- The network "dehazed" photographs that had no haze: the *clean* test cat came out 21-31 levels
  too dark in green and blue, the cast itself. Its three training photographs all have deep shadows,
  so it had learnt that a photograph without them is hazy (the dark-channel prior's known failure on
  soft, bright subjects). It now also trains on brighter tones of them (:func:`tone_variants`).
- It painted the colours of its training photographs onto the result: a lightly hazed cat came out
  with the mean colour of the coffee cup. Every training pair now has its colour channels shuffled
  (:func:`~allinone_ir.data.augment.channel_shuffle`, exact for these degradations).
- Removing haze is a global, multiplicative change (contrast and colour must be scaled back up by
  ``1 / t``), and how strongly the network does it depends on the size of what it sees: trained on
  48-pixel crops it darkened the whole photograph by 25-55 levels but not 48-pixel tiles of it. It
  trains on 64-pixel crops, with haze drawn twice as often as the other degradations.

The summary prints the restored haze colour next to the clean one, so a run that did not get there
says so.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .assets import sample_images

# The command line (``allinone-ir demo``) lives in allinone_ir.commands.demo; importable from here as before.
from .commands.demo import add_parser, run
from .data.degradations import Rng, make_generator
from .errors import require

__all__ = [
    "COLOUR_TOLERANCE",
    "DEMO_DEGRADATIONS",
    "SMALL_GAIN_DB",
    "CaptionLine",
    "DemoResult",
    "add_parser",
    "check_dependencies",
    "demo_models",
    "make_grid",
    "mean_rgb",
    "render_grid",
    "run",
    "run_demo",
    "summary_lines",
    "tone_variants",
    "verdicts",
]

#: The degradations the demo synthesises and learns, in label order.
DEMO_DEGRADATIONS: tuple[str, ...] = ("noise", "rain", "haze", "snow")


def demo_models(smoke: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """The networks the demo offers: ``--model`` choice -> (registered model name, constructor overrides).

    Every registered family that lists :attr:`~allinone_ir.models.RestorationModel.demo_choices` is
    offered, built with its :meth:`~allinone_ir.models.RestorationModel.small_config` for
    :data:`DEMO_DEGRADATIONS`; the demo names no family itself, so a new family appears here
    without an edit.

    Args:
        smoke: The families' smallest configurations (``--smoke``).

    Examples:
        >>> sorted(demo_models())
        ['pip', 'promptir']
        >>> demo_models()["pip"][0]
        'pip_restormer'
    """
    from .models import get_model_class, list_architectures

    offered: dict[str, tuple[str, dict[str, Any]]] = {}
    for arch in list_architectures():
        cls = get_model_class(arch)
        for choice, model_name in getattr(cls, "demo_choices", {}).items():
            overrides = cls.small_config(degradations=DEMO_DEGRADATIONS, smoke=smoke)
            offered[choice] = (model_name, overrides)
    return offered


def __getattr__(name: str) -> Any:
    if name == "DEMO_MODELS":  # the demo's networks, from the registry at the time of asking
        return demo_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --smoke without --steps: this many updates, whatever --minutes says.
_SMOKE_STEPS = 2

# The training tasks: haze twice as often as the others. It is the hardest to learn (a global, multiplicative
# change: removing the veil is not enough, contrast and colour must be scaled back up by 1 / transmission),
# and with an equal share the restored test cat came out grey (mean red 15-35 levels too low).
_TRAIN_TASKS = ("noise", "rain", "haze", "haze", "snow")

# Exponential moving average of the weights that the demo tests and saves: a window of about 50 updates,
# shorter in short runs (1 - 10 / steps), so that the initial weights weigh e^-10 at most.
_EMA_DECAY = 0.98

# Each training photograph is used in this many tones (itself and brighter gamma curves), see tone_variants.
_TONE_VARIANTS = 8

# Files and folders the demo writes; --overwrite removes exactly these before a new run.
_OUTPUTS = ("grid.png", "metrics.md", "metrics.json", "curves.png", "model", "inputs", "train_log.csv",
            "val_log.csv", "history.json", "config.json", "checkpoints")  # fmt: skip

#: A degradation counts as improved when PSNR rose by at least this many dB (and SSIM did not drop).
SMALL_GAIN_DB = 1.0

#: Largest difference, in 8-bit levels per channel, between the restored and the clean image's mean colour
#: that the summary accepts as "the colour is kept"; more is reported as a colour cast.
COLOUR_TOLERANCE = 6.0

_COLUMNS = ("clean", "degraded", "restored")


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out_dir: The output folder.
        metrics: Per degradation: ``psnr_in``, ``psnr_out``, ``ssim_in``, ``ssim_out``, ``gain_db``
            (``psnr_out - psnr_in``), ``ssim_change`` (``ssim_out - ssim_in``) and ``colour_error``
            (largest per-channel difference, in 0-255 levels, between the restored and the clean mean
            colour).
        steps: Optimizer updates done.
        train_seconds: Wall-clock time of the training.
        total_seconds: Wall-clock time of the whole demo.
        model_name: Registered name of the network trained.
        num_parameters: Its parameter count.
        files: Name -> path of every file written (``curves`` is missing without matplotlib).
        colours: Per degradation: the mean RGB colour (0-255) of the ``clean``, ``degraded`` and
            ``restored`` test image.
    """

    out_dir: Path
    metrics: dict[str, dict[str, float]]
    steps: int
    train_seconds: float
    total_seconds: float
    model_name: str
    num_parameters: int
    files: dict[str, Path] = field(default_factory=dict)
    colours: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)


def mean_rgb(image: torch.Tensor) -> tuple[float, float, float]:
    """The mean colour of a ``(3, H, W)`` image in [0, 1], in 8-bit levels (0-255) per channel.

    Args:
        image: An RGB image (values outside [0, 1] are clamped first, as when it is saved).

    Returns:
        ``(red, green, blue)`` means on the 0-255 scale.

    Raises:
        ValueError: If ``image`` is not a 3-channel ``(3, H, W)`` tensor.

    Examples:
        >>> mean_rgb(torch.stack([torch.full((2, 2), 1.0), torch.zeros(2, 2), torch.full((2, 2), 0.5)]))
        (255.0, 0.0, 127.5)
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"mean_rgb needs a (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    r, g, b = (image.detach().float().clamp(0, 1).mean(dim=(1, 2)) * 255).tolist()
    return (r, g, b)


def make_grid(rows: Sequence[Sequence[torch.Tensor]], pad: int = 4, value: float = 1.0) -> torch.Tensor:
    """Tile images into one picture, row by row, with ``pad`` pixels of ``value`` between them.

    Images of a row may differ in size; each cell is as large as the largest image of its row and
    column, and smaller images are placed at its top-left.

    Args:
        rows: Rows of ``(C, H, W)`` images with the same number of channels.
        pad: Gap (and border) in pixels.
        value: Fill value of the gaps.

    Returns:
        The grid, a ``(C, H_total, W_total)`` tensor.

    Raises:
        ValueError: If there are no images, rows of different lengths or different channel counts.

    Examples:
        >>> a, b = torch.zeros(3, 4, 5), torch.ones(3, 4, 5)
        >>> make_grid([[a, b], [b, a]], pad=1).shape
        torch.Size([3, 11, 13])
    """
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one row with one image")
    ncol = len(rows[0])
    if any(len(r) != ncol for r in rows):
        raise ValueError(f"every row needs {ncol} images, got {[len(r) for r in rows]}")
    chans = {img.shape[0] for r in rows for img in r}
    if len(chans) != 1 or any(img.ndim != 3 for r in rows for img in r):
        raise ValueError("make_grid needs (C, H, W) images with the same number of channels")
    heights = [max(img.shape[1] for img in r) for r in rows]
    widths = [max(r[j].shape[2] for r in rows) for j in range(ncol)]
    ref = rows[0][0]
    out = torch.full((ref.shape[0], sum(heights) + pad * (len(rows) + 1), sum(widths) + pad * (ncol + 1)),
                     value, dtype=ref.dtype)  # fmt: skip
    y = pad
    for r, h in zip(rows, heights):
        x = pad
        for img, w in zip(r, widths):
            out[:, y : y + img.shape[1], x : x + img.shape[2]] = img.to(out.dtype).cpu()
            x += w + pad
        y += h + pad
    return out


#: A caption line: its text, or ``(text, colour)`` with a Pillow colour such as ``"#b00000"``.
CaptionLine = str | tuple[str, str]


def _font(size: int) -> Any:
    """Pillow's default font at ``size`` px (its scalable version where FreeType is there, else the bitmap one)."""
    font_mod = require("PIL.ImageFont", extra="data", purpose="drawing the labels of the demo's grid")
    try:
        return font_mod.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        return font_mod.load_default()


def render_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    *,
    row_names: Sequence[str],
    column_titles: Sequence[str],
    captions: Sequence[Sequence[Sequence[CaptionLine]]] | None = None,
    title: str = "",
    pad: int = 6,
    font_size: int = 14,
) -> torch.Tensor:
    """A labelled comparison figure: a title, column titles, row names and captions under the images.

    Each image is pasted unscaled in its cell (cells are as large as the largest image of their
    row and column, or as wide as their widest caption); text is drawn in black on white with
    Pillow's default font, so no font file is needed.

    Args:
        rows: Rows of ``(3, H, W)`` images in [0, 1].
        row_names: One name per row, written left of it.
        column_titles: One title per column, written above it.
        captions: ``captions[r][c]``: the lines under image ``(r, c)`` (each a string or
            ``(text, colour)``); ``None`` for none.
        title: A line above everything (empty for none).
        pad: Gap in pixels between cells and around the figure.
        font_size: Text height in pixels.

    Returns:
        The figure, a ``(3, H_total, W_total)`` float tensor in [0, 1] (write it with
        :func:`allinone_ir.io.write_image`).

    Raises:
        ValueError: If the rows, names, titles or captions do not match, or an image is not ``(3, H, W)``.
        MissingDependencyError: If Pillow is not installed.

    Examples:
        >>> img = torch.zeros(3, 20, 30)
        >>> fig = render_grid([[img, img]], row_names=["noise"], column_titles=["clean", "restored"])
        >>> fig.shape[0], fig.shape[1] > 20, fig.shape[2] > 2 * 30
        (3, True, True)
        >>> int(fig.eq(0).all(0).sum()) >= 2 * 20 * 30  # both black images are on the white canvas
        True
    """
    if not rows or not rows[0]:
        raise ValueError("render_grid needs at least one row with one image")
    ncol = len(rows[0])
    if any(len(r) != ncol for r in rows):
        raise ValueError(f"every row needs {ncol} images, got {[len(r) for r in rows]}")
    if len(row_names) != len(rows) or len(column_titles) != ncol:
        raise ValueError(
            f"need {len(rows)} row names and {ncol} column titles, got {len(row_names)} and {len(column_titles)}"
        )
    if any(img.ndim != 3 or img.shape[0] != 3 for r in rows for img in r):
        raise ValueError("render_grid needs (3, H, W) RGB images")
    caps: list[list[list[CaptionLine]]] = (
        [[[] for _ in range(ncol)] for _ in rows]
        if captions is None
        else [[list(c) for c in r] for r in captions]
    )
    if len(caps) != len(rows) or any(len(r) != ncol for r in caps):
        raise ValueError(f"captions must be {len(rows)} rows of {ncol} cells")
    image_mod = require("PIL.Image", extra="data", purpose="drawing the demo's grid")
    draw_mod = require("PIL.ImageDraw", extra="data", purpose="drawing the demo's grid")
    font = _font(font_size)
    probe = draw_mod.Draw(image_mod.new("RGB", (1, 1)))

    def text_width(text: str) -> int:
        left, _, right, _ = probe.textbbox((0, 0), text, font=font)
        return int(right - left)

    def line_text(line: CaptionLine) -> str:
        return line if isinstance(line, str) else line[0]

    line_h = font_size + 4
    n_lines = max((len(c) for r in caps for c in r), default=0)
    widths = [
        max([r[j].shape[2] for r in rows] + [text_width(line_text(t)) for r in caps for t in r[j]]
            + [text_width(column_titles[j])])
        for j in range(ncol)
    ]  # fmt: skip
    heights = [max(img.shape[1] for img in r) for r in rows]
    label_w = max(text_width(n) for n in row_names) + 2 * pad
    title_h = line_h + pad if title else 0
    top = pad + title_h + line_h
    cell_h = [h + n_lines * line_h for h in heights]
    width = max(label_w + sum(widths) + pad * (ncol + 1), text_width(title) + 2 * pad)
    height = top + sum(cell_h) + pad * (len(rows) + 1)
    canvas = image_mod.new("RGB", (width, height), (255, 255, 255))
    draw = draw_mod.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0), font=font)
    x = label_w + pad
    for j, w in enumerate(widths):
        tw = text_width(column_titles[j])
        draw.text((x + (w - tw) // 2, pad + title_h), column_titles[j], fill=(0, 0, 0), font=font)
        x += w + pad
    y = top + pad
    for r, (row, h) in enumerate(zip(rows, heights)):
        draw.text((pad, y + h // 2 - line_h // 2), row_names[r], fill=(0, 0, 0), font=font)
        x = label_w + pad
        for j, (img, w) in enumerate(zip(row, widths)):
            arr = (
                (img.detach().float().clamp(0, 1) * 255)
                .round()
                .to(torch.uint8)
                .permute(1, 2, 0)
                .cpu()
                .numpy()
            )
            canvas.paste(image_mod.fromarray(arr, "RGB"), (x, y))
            for k, line in enumerate(caps[r][j]):
                text, colour = (line, "#000000") if isinstance(line, str) else line
                draw.text((x, y + img.shape[1] + 2 + k * line_h), text, fill=colour, font=font)
            x += w + pad
        y += cell_h[r] + pad
    import numpy as np

    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255.0


def check_dependencies() -> None:
    """Fail fast, before any training, when a package the demo needs is missing.

    The demo reads the bundled photographs and writes ``grid.png`` with Pillow and saves the
    trained model with safetensors; both come with the ``train`` extra (matplotlib, for the loss
    curve, is optional: the demo says when it is missing).

    Raises:
        MissingDependencyError: Naming ``pip install 'allinone-ir[train]'``.
    """
    require(
        "PIL.Image", extra="train", purpose="allinone-ir demo (reading the bundled photos, drawing grid.png)"
    )
    require("safetensors.torch", extra="train", purpose="allinone-ir demo (saving the trained model)")


def tone_variants(image: torch.Tensor, count: int, rng: Rng = None) -> list[torch.Tensor]:
    """The image and ``count - 1`` brighter versions of it (gamma curves ``x ** g``, ``g`` in [0.5, 1)).

    Three training photographs, all with deep shadows, teach a network that a clean photograph
    has deep shadows, and it then "dehazes" a clean but soft, bright one (the demo's test cat came
    out 20-30 levels too dark in green and blue with nothing to remove). Brighter tones of the same
    photographs (black and white points kept, mid-tones lifted) show it clean images without deep
    shadows. The same curve applies to the three channels, so it commutes with
    :func:`~allinone_ir.data.augment.channel_shuffle`.

    Args:
        image: A clean ``(C, H, W)`` image in [0, 1].
        count: How many images to return (the first is ``image`` itself).
        rng: Seed or generator of the exponents.

    Returns:
        ``count`` images of the same shape.

    Raises:
        ValueError: If ``count < 1``.

    Examples:
        >>> x = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 3)
        >>> [v.flatten().tolist() for v in tone_variants(x, 2, rng=0)][0]
        [0.0, 0.25, 1.0]
        >>> bright = tone_variants(x, 2, rng=0)[1].flatten().tolist()
        >>> bright[0], bright[1] > 0.25, bright[2]
        (0.0, True, 1.0)
    """
    if count < 1:
        raise ValueError(f"tone_variants: count must be >= 1, got {count}")
    g = make_generator(rng)
    gammas = (0.5 + 0.5 * torch.rand(count - 1, generator=g)).tolist()
    return [image] + [image.clamp(0, 1).pow(gamma) for gamma in gammas]


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output folder {out} is not empty; choose another --out or pass --overwrite "
                "(which replaces only the demo's own files)"
            )
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _build_model(choice: str, smoke: bool) -> tuple[str, nn.Module]:
    from .models import create_model

    offered = demo_models(smoke)
    if choice not in offered:
        raise ValueError(f"--model must be one of {sorted(offered)}, got {choice!r}")
    name, kwargs = offered[choice]
    return name, create_model(name, **kwargs)


def _seconds_per_step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> float:
    """Time one training forward + backward on a real batch (gradients are discarded, weights unchanged).

    The network and the batch are put in the channels-last layout, as the trainer does (it is 1.4-2x
    faster on a CPU than the default layout, so timing the default layout halves the updates done).
    """
    from .models import RestorationModel

    cl = torch.channels_last
    on_device = {
        k: (v.to(device).contiguous(memory_format=cl) if v.ndim == 4 else v.to(device))
        if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }  # fmt: skip
    x, y = on_device["degraded"], on_device["clean"]
    family = isinstance(model, RestorationModel)
    model.to(device=device, memory_format=cl).train()
    times = []
    for _ in range(3):  # the first pass warms up the kernels; the fastest of the others is the steady state
        t0 = time.perf_counter()
        out = model(x, **model.training_forward_kwargs(on_device)) if family else model(x)
        image = model.split_training_output(out)[0] if family else out
        (image - y).abs().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return min(times[1:]) * 1.15  # optimizer step, data loading and logging on top of forward + backward


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    minutes: float = 3.0,
    steps: int | None = None,
    model: str = "promptir",
    device: str = "auto",
    holdout: str = "chelsea",
    patch_size: int = 64,
    batch_size: int = 8,
    lr: float = 2e-3,
    loss: str = "psnr",
    seed: int = 0,
    overwrite: bool = False,
    smoke: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Synthesise, train, restore and report, as ``allinone-ir demo`` does.

    Training uses every bundled photograph except ``holdout``; the table and the grid are computed
    on ``holdout`` (the whole photograph, one seeded degradation each), which training never saw.
    The number of optimizer updates is chosen from a timed step so that training takes about
    ``minutes`` (at least 2 updates).

    Args:
        out_dir: Output folder; must be empty or missing unless ``overwrite``.
        minutes: Training time budget in minutes.
        steps: Number of optimizer updates; overrides ``minutes`` (for reproducible runs).
        model: ``"promptir"`` or ``"pip"`` (see :func:`demo_models`).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        holdout: Stem of the bundled photograph kept for testing.
        patch_size: Side of the random training crops.
        batch_size: Crops per update.
        lr: Peak learning rate (AdamW, short warm-up, cosine decay).
        loss: Training loss (see :data:`allinone_ir.training.LOSSES`). The default, ``"psnr"`` (the log of
            each image's MSE), weighs every image alike, so the strong haze does not drown the
            gradients of the other degradations as it does with L1.
        seed: Seed of the initialisation, the crops and the degradations.
        overwrite: Allow a non-empty ``out_dir``; only the demo's own files in it are replaced.
        smoke: The smallest networks and crops, 2 updates unless ``steps`` is given and the test image's
            corner (for tests): the pipeline runs in seconds, the results mean little.
        progress: Show the trainer's progress bar.
        log: Where the summary lines go.

    Returns:
        A :class:`DemoResult`.

    Raises:
        FileExistsError: If ``out_dir`` is not empty and ``overwrite`` is ``False``.
        ValueError: For an unknown model or holdout name, or a non-positive budget.
    """
    from .data import SyntheticDegradationDataset
    from .data.augment import channel_shuffle
    from .hub import save_pretrained
    from .inference import restore
    from .io import read_image, write_image
    from .metrics import PROMPTIR_PROTOCOL
    from .training import Trainer, TrainerConfig
    from .training.distributed import resolve_device

    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    check_dependencies()
    t_start = time.perf_counter()
    photos = sample_images()
    names = [p.stem for p in photos]
    if holdout not in names:
        raise ValueError(f"holdout must be one of the bundled photographs {names}, got {holdout!r}")
    if smoke:
        patch_size, batch_size = min(patch_size, 32), min(batch_size, 4)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    torch.manual_seed(seed)
    model_name, net = _build_model(model, smoke)
    n_params = sum(p.numel() for p in net.parameters())
    dev = resolve_device(device)

    classes = list(DEMO_DEGRADATIONS)
    tone_rng = make_generator(seed + 3)
    clean_train = [
        v for p in photos if p.stem != holdout for v in tone_variants(read_image(p), _TONE_VARIANTS, tone_rng)
    ]
    train_set = SyntheticDegradationDataset(
        clean_train, tasks=_TRAIN_TASKS, patch_size=patch_size, seed=seed, repeat=64 // _TONE_VARIANTS,
        classes=classes,
    )  # fmt: skip
    test_set = SyntheticDegradationDataset(
        [p for p in photos if p.stem == holdout], tasks=DEMO_DEGRADATIONS, patch_size=None, augment_modes=(0,),
        seed=seed + 1, fixed=True, classes=classes,
    )  # fmt: skip

    if smoke and steps is None:
        steps = _SMOKE_STEPS
    probe = torch.utils.data.default_collate([train_set[i] for i in range(batch_size)])
    per_step = _seconds_per_step(net, probe, dev)
    if steps is None:
        steps = max(2, int(minutes * 60 / per_step))
        budget = f"~{minutes:g} min"
    else:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        budget = f"~{steps * per_step / 60:.1f} min"
    log(
        f"allinone-ir demo: {model_name} ({n_params:,} parameters) on {dev}, "
        f"{len(photos) - 1} training photos, degradations {', '.join(DEMO_DEGRADATIONS)}; "
        f"about {per_step:.2f} s per update -> {steps} updates of {batch_size} crops of {patch_size} px "
        f"({budget}); testing on '{holdout}', which training never sees"
    )
    # Shuffle the colour channels of every training pair: three photographs are too few for a colour
    # prior, and without it the network paints their colours (the warm coffee cup) onto the test photo.
    shuffle_rng = make_generator(seed + 2)

    def augment(batch: dict[str, Any]) -> dict[str, Any]:
        return channel_shuffle(batch, rng=shuffle_rng)

    config = TrainerConfig(
        output_dir=str(out), max_steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 100,
        warmup_steps=min(50, steps // 10), grad_clip=1.0, loss=loss, seed=seed, device=str(dev),
        ema_decay=max(0.5, min(_EMA_DECAY, 1 - 10 / steps)), log_every=max(1, min(10, steps // 20)),
        progress_bar=progress, plot=False,
    )  # fmt: skip
    trainer = Trainer(net, config, train_set, batch_augment=augment)
    t0 = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - t0

    # the weights averaged over the last ~50 updates: the colour of the last few batches does not tint them
    trained = trainer.ema.module if trainer.ema is not None else trainer.model
    files: dict[str, Path] = {}
    metrics: dict[str, dict[str, float]] = {}
    colours: dict[str, dict[str, tuple[float, float, float]]] = {}
    rows, captions = [], []
    (out / "inputs").mkdir()
    pip = getattr(net, "accepts_degradation", False)
    for i in range(len(test_set)):
        sample = test_set[i]
        degraded, clean, name = sample["degraded"], sample["clean"], sample["degradation"]
        if smoke:  # a corner is enough to check the pipeline
            degraded, clean = degraded[:, :64, :96], clean[:, :64, :96]
        # PIP is told the degradation, as the trainer's validation does; PromptIR restores blind.
        restored = restore(trained, degraded, progress=False, **({"degradation": name} if pip else {}))
        before, after = PROMPTIR_PROTOCOL.compute(degraded, clean), PROMPTIR_PROTOCOL.compute(restored, clean)
        colours[name] = {
            "clean": mean_rgb(clean),
            "degraded": mean_rgb(degraded),
            "restored": mean_rgb(restored),
        }
        metrics[name] = {
            "psnr_in": before["psnr"], "psnr_out": after["psnr"], "ssim_in": before["ssim"],
            "ssim_out": after["ssim"], "gain_db": after["psnr"] - before["psnr"],
            "ssim_change": after["ssim"] - before["ssim"],
            "colour_error": max(abs(r - c) for r, c in zip(colours[name]["restored"], colours[name]["clean"])),
        }  # fmt: skip
        rows.append([clean, degraded, restored])
        captions.append([_caption(metrics[name], colours[name], c) for c in _COLUMNS])
        files[f"input_{name}"] = Path(write_image(out / "inputs" / f"{holdout}_{name}.png", degraded))
    title = (
        f"allinone-ir demo: {model_name}, {trainer.step} updates; test photo '{holdout}' (unseen in training)"
    )
    grid = render_grid(rows, row_names=list(metrics), column_titles=_COLUMNS, captions=captions, title=title)
    files["grid"] = Path(write_image(out / "grid.png", grid))
    files["model"] = save_pretrained(trained, out / "model")
    curves = _plot_loss(trainer.history, out / "curves.png", loss)
    if curves is not None:
        files["curves"] = curves
    total_seconds = time.perf_counter() - t_start
    result = DemoResult(
        out, metrics, trainer.step, train_seconds, total_seconds, model_name, n_params, files, colours
    )
    files["metrics_json"], files["metrics_md"] = _write_metrics(result, holdout)
    for line in summary_lines(result, holdout):
        log(line)
    return result


def _caption(
    m: dict[str, float], colours: dict[str, tuple[float, float, float]], column: str
) -> list[CaptionLine]:
    """The lines under a grid cell: PSNR / SSIM against clean (with the change, red if worse), mean colour."""
    red, black = "#b00000", "#000000"
    if column == "clean":
        return ["reference", f"mean RGB {_rgb(colours['clean'])}"]
    if column == "degraded":
        return [
            f"PSNR {m['psnr_in']:.2f} dB",
            f"SSIM {m['ssim_in']:.3f}",
            f"mean RGB {_rgb(colours['degraded'])}",
        ]
    return [
        (f"PSNR {m['psnr_out']:.2f} dB ({m['gain_db']:+.2f})", red if m["gain_db"] < 0 else black),
        (f"SSIM {m['ssim_out']:.3f} ({m['ssim_change']:+.3f})", red if m["ssim_change"] < 0 else black),
        (f"mean RGB {_rgb(colours['restored'])}", red if m["colour_error"] > COLOUR_TOLERANCE else black),
    ]


def _plot_loss(history: list[dict[str, Any]], path: Path, loss: str) -> Path | None:
    """The training-loss curve as a PNG (linear axis: the PSNR loss is negative); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [h for h in history if h.get("kind") == "train"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in rows], [h["loss"] for h in rows])
    label = "PSNR loss (minus the training PSNR, dB)" if loss == "psnr" else f"{loss} loss"
    ax.set(xlabel="update", ylabel=label, title="allinone-ir demo: training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _rgb(c: Sequence[float]) -> str:
    return "/".join(f"{v:.0f}" for v in c)


def _write_metrics(result: DemoResult, holdout: str) -> tuple[Path, Path]:
    out = result.out_dir
    data = {
        "model": result.model_name, "parameters": result.num_parameters, "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1), "test_image": holdout, "protocol": "promptir",
        "colour_tolerance": COLOUR_TOLERANCE,
        "metrics": {d: {k: round(v, 4) for k, v in m.items()} for d, m in result.metrics.items()},
        "mean_rgb": {d: {k: [round(v, 2) for v in c] for k, c in cs.items()} for d, cs in result.colours.items()},
    }  # fmt: skip
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# allinone-ir demo: {result.model_name}, {result.steps} updates in {result.train_seconds / 60:.1f} min",
        "",
        f"Test image: `{holdout}` (not used for training). PSNR / SSIM: PromptIR protocol "
        "(RGB, data range 1, 7x7 uniform SSIM window). Mean colour: RGB, 0-255.",
        "",
        "| degradation | PSNR before | PSNR after | gain (dB) | SSIM before | SSIM after | SSIM change "
        "| mean RGB clean | mean RGB restored | colour error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d, m in result.metrics.items():
        c = result.colours.get(d, {})
        clean_rgb, restored_rgb = (_rgb(c[k]) if k in c else "-" for k in ("clean", "restored"))
        lines.append(
            f"| {d} | {m['psnr_in']:.2f} | {m['psnr_out']:.2f} | {m['gain_db']:+.2f} | "
            f"{m['ssim_in']:.4f} | {m['ssim_out']:.4f} | {m['ssim_change']:+.4f} | {clean_rgb} | {restored_rgb} | "
            f"{m['colour_error']:.1f} |"
        )
    md_path = out / "metrics.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def verdicts(metrics: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    """What went wrong per degradation: an empty list when it improved in both PSNR and SSIM.

    A degradation is *improved* when its PSNR rose by at least :data:`SMALL_GAIN_DB` dB, its SSIM
    did not drop and (where ``colour_error`` is given) its mean colour stayed within
    :data:`COLOUR_TOLERANCE` levels of the clean one; otherwise each failing measure gets a phrase.

    Args:
        metrics: Per degradation, the ``gain_db``, ``ssim_in``, ``ssim_out``, ``ssim_change`` and
            optionally ``colour_error`` of :attr:`DemoResult.metrics`.

    Returns:
        Degradation -> phrases such as ``"SSIM dropped 0.839 -> 0.829"``, in the order of ``metrics``.

    Examples:
        >>> verdicts({"snow": dict(gain_db=1.5, ssim_in=0.839, ssim_out=0.829, ssim_change=-0.01)})
        {'snow': ['SSIM dropped 0.839 -> 0.829']}
    """
    out: dict[str, list[str]] = {}
    for d, m in metrics.items():
        problems = []
        g = m["gain_db"]
        if g < 0:
            problems.append(f"PSNR worse than the input ({g:+.2f} dB)")
        elif g < SMALL_GAIN_DB:
            problems.append(f"only a small PSNR gain ({g:+.2f} dB)")
        if m["ssim_change"] < 0:
            problems.append(f"SSIM dropped {m['ssim_in']:.3f} -> {m['ssim_out']:.3f}")
        if m.get("colour_error", 0.0) > COLOUR_TOLERANCE:
            problems.append(f"colour cast (mean colour off by {m['colour_error']:.1f} levels)")
        out[d] = problems
    return out


def summary_lines(result: DemoResult, holdout: str) -> list[str]:
    """The human-readable end-of-run summary: PSNR and SSIM per degradation, colour, honest notes, files.

    Args:
        result: What :func:`run_demo` produced.
        holdout: Name of the test photograph.

    Returns:
        The lines, without newlines.
    """
    lines = ["", f"Test photo '{holdout}' (never seen in training), before -> after restoration:"]
    for d, m in result.metrics.items():
        lines.append(
            f"  {d:6s} PSNR {m['psnr_in']:6.2f} -> {m['psnr_out']:6.2f} dB ({m['gain_db']:+.2f})   "
            f"SSIM {m['ssim_in']:.3f} -> {m['ssim_out']:.3f} ({m['ssim_change']:+.3f})"
        )
    if result.colours:
        lines.append(
            f"Mean colour (RGB, 0-255), restored vs clean; kept if within {COLOUR_TOLERANCE:g} levels per channel:"
        )
        for d, c in result.colours.items():
            err = result.metrics[d]["colour_error"]
            verdict = "kept" if err <= COLOUR_TOLERANCE else "COLOUR CAST"
            lines.append(
                f"  {d:6s} restored {_rgb(c['restored']):>11s}  clean {_rgb(c['clean']):>11s}  "
                f"(degraded {_rgb(c['degraded'])})  largest difference {err:4.1f}: {verdict}"
            )
    problems = verdicts(result.metrics)
    for d, p in problems.items():
        if p:
            lines.append(f"  note: {d}: {'; '.join(p)}")
    if any(problems.values()):
        lines.append(
            f"  after {result.steps} updates this small network has not learnt these yet: "
            "try --minutes 15, or a GPU with --device cuda"
        )
    names = list(result.metrics)
    better = [
        d
        for d in names
        if result.metrics[d]["gain_db"] >= SMALL_GAIN_DB and result.metrics[d]["ssim_change"] >= 0
    ]
    kept = [d for d in names if result.metrics[d].get("colour_error", 0.0) <= COLOUR_TOLERANCE]
    if len(better) == len(kept) == len(names):
        lines.append(
            f"  every degradation gained at least {SMALL_GAIN_DB:g} dB PSNR, kept or raised its SSIM "
            "and kept its colour"
        )
    else:

        def split(good: list[str]) -> str:
            bad = [d for d in names if d not in good]
            return (
                f"{len(good)} of {len(names)}"
                + (f" ({', '.join(good)})" if good else "")
                + (f"; not {', '.join(bad)}" if bad else "")
            )

        lines.append(f"  improved (PSNR +{SMALL_GAIN_DB:g} dB or more and SSIM not lower): {split(better)}")
        lines.append(f"  mean colour kept (within {COLOUR_TOLERANCE:g} levels per channel): {split(kept)}")
    lines.append("")
    lines.append(f"wrote to {result.out_dir}/ in {result.total_seconds / 60:.1f} min:")
    f = result.files
    lines.append(
        f"  grid.png      rows: {', '.join(result.metrics)}; columns: {' | '.join(_COLUMNS)}, with PSNR/SSIM"
    )
    lines.append("  metrics.md    the table above, with the mean colours (also metrics.json)")
    lines.append(
        "  curves.png    training loss"
        if "curves" in f
        else "  (no loss curve: it needs matplotlib: pip install 'allinone-ir[train]')"
    )
    lines.append(f"  model/        try: allinone-ir restore --checkpoint {f['model']} {f['grid'].parent}/inputs "
                 f"--out {result.out_dir}/restored")  # fmt: skip
    return lines
