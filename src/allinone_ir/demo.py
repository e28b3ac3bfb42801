"""``allinone-ir demo``: the whole library end to end on the bundled photographs, no downloads.

The demo synthesises noise, rain, haze and snow on the sample photographs shipped with the package
(:mod:`allinone_ir.assets`), trains a small all-in-one network (PromptIR or PIP in a reduced
configuration) with :class:`~allinone_ir.training.Trainer` for a time budget, restores a photograph
that training never saw, and writes to the output folder:

- ``grid.png``: one row per degradation, columns degraded | restored | clean;
- ``metrics.md`` / ``metrics.json``: PSNR and SSIM before and after, per degradation (PromptIR protocol);
- ``curves.png``: the training-loss curve (when matplotlib is installed);
- ``model/``: the trained network (``model.safetensors`` + ``config.json``), usable with
  ``allinone-ir restore --checkpoint OUT/model``;
- ``inputs/``: the degraded test images, to try that command on;
- the trainer's logs (``train_log.csv``, ``history.json``, ``config.json``) and last checkpoint.

A few CPU minutes give a network that clearly removes noise, rain streaks and haze; snow, which it
confuses with haze, needs much longer (the summary says so whenever a gain is small).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .assets import sample_images

__all__ = [
    "DEMO_DEGRADATIONS",
    "DEMO_MODELS",
    "DemoResult",
    "add_parser",
    "make_grid",
    "run",
    "run_demo",
    "summary_lines",
]

#: The degradations the demo synthesises and learns, in label order.
DEMO_DEGRADATIONS: tuple[str, ...] = ("noise", "rain", "haze", "snow")

#: ``--model`` choice -> (registered model name, reduced constructor arguments).
DEMO_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "promptir": (
        "promptir",
        dict(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
             prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4), prompt_len=4),
    ),
    "pip": (
        "pip_restormer",
        dict(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
             prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4), p2f_heads=2,
             classifier_widths=(8, 16, 32), degradations=DEMO_DEGRADATIONS),
    ),
}  # fmt: skip

# --smoke: the same networks, as small as they go (for tests and CI).
_SMOKE_OVERRIDES: dict[str, Any] = dict(dim=8, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4))

# Files and folders the demo writes; --overwrite removes exactly these before a new run.
_OUTPUTS = ("grid.png", "metrics.md", "metrics.json", "curves.png", "model", "inputs", "train_log.csv",
            "val_log.csv", "history.json", "config.json", "checkpoints")  # fmt: skip

_SMALL_GAIN_DB = 1.0


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out_dir: The output folder.
        metrics: Per degradation: ``psnr_in``, ``psnr_out``, ``ssim_in``, ``ssim_out``, ``gain_db``.
        steps: Optimizer updates done.
        train_seconds: Wall-clock time of the training.
        total_seconds: Wall-clock time of the whole demo.
        model_name: Registered name of the network trained.
        num_parameters: Its parameter count.
        files: Name -> path of every file written (``curves`` is missing without matplotlib).
    """

    out_dir: Path
    metrics: dict[str, dict[str, float]]
    steps: int
    train_seconds: float
    total_seconds: float
    model_name: str
    num_parameters: int
    files: dict[str, Path] = field(default_factory=dict)


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

    if choice not in DEMO_MODELS:
        raise ValueError(f"--model must be one of {sorted(DEMO_MODELS)}, got {choice!r}")
    name, kwargs = DEMO_MODELS[choice]
    kwargs = dict(kwargs)
    if smoke:
        kwargs.update(_SMOKE_OVERRIDES)
        if choice == "pip":
            kwargs["classifier_widths"] = (4, 8)
    return name, create_model(name, **kwargs)


def _extra_losses(model: nn.Module) -> list[Any]:
    """PIP: the directional decoupled loss on its prompts, and its degradation classifier trained jointly."""
    if not getattr(model, "accepts_degradation", False):
        return []
    from .losses import DEFAULT_DDL_ALPHA, DirectionalDecoupledLoss
    from .models.classifier import degradation_classification_loss
    from .training import LossTerm

    ddl = DirectionalDecoupledLoss()
    terms = [LossTerm(lambda m, _batch, _out: ddl(m), weight=DEFAULT_DDL_ALPHA, name="ddl")]
    if getattr(model, "classifier", None) is not None:

        def classification(m: nn.Module, batch: dict[str, Any], _out: torch.Tensor) -> torch.Tensor:
            return degradation_classification_loss(m.classify(batch["degraded"]), batch["label"])

        terms.append(LossTerm(classification, weight=0.1, name="classifier"))
    return terms


def _seconds_per_step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> float:
    """Time one forward + backward on a real batch (gradients are discarded, weights unchanged)."""
    x = batch["degraded"].to(device)
    y = batch["clean"].to(device)
    kwargs = (
        {"degradation": batch["label"].to(device)} if getattr(model, "accepts_degradation", False) else {}
    )
    model.to(device).train()
    times = []
    for _ in range(2):  # the first pass warms up the kernels
        t0 = time.perf_counter()
        (model(x, **kwargs) - y).abs().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return times[-1] * 1.15  # optimizer step, data loading and logging on top of forward + backward


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    minutes: float = 3.0,
    steps: int | None = None,
    model: str = "promptir",
    device: str = "auto",
    holdout: str = "chelsea",
    patch_size: int = 48,
    batch_size: int = 8,
    lr: float = 1e-3,
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
        model: ``"promptir"`` or ``"pip"`` (see :data:`DEMO_MODELS`).
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
        smoke: The smallest networks and crops (for tests): the pipeline runs, the results mean little.
        progress: Show the trainer's progress bar.
        log: Where the summary lines go.

    Returns:
        A :class:`DemoResult`.

    Raises:
        FileExistsError: If ``out_dir`` is not empty and ``overwrite`` is ``False``.
        ValueError: For an unknown model or holdout name, or a non-positive budget.
    """
    from .data import SyntheticDegradationDataset
    from .hub import save_pretrained
    from .inference import restore
    from .io import write_image
    from .metrics import PROMPTIR_PROTOCOL
    from .training import Trainer, TrainerConfig
    from .training.distributed import resolve_device

    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
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
    train_set = SyntheticDegradationDataset(
        [p for p in photos if p.stem != holdout], tasks=DEMO_DEGRADATIONS, patch_size=patch_size,
        seed=seed, repeat=64, classes=classes,
    )  # fmt: skip
    test_set = SyntheticDegradationDataset(
        [p for p in photos if p.stem == holdout], tasks=DEMO_DEGRADATIONS, patch_size=None, augment_modes=(0,),
        seed=seed + 1, fixed=True, classes=classes,
    )  # fmt: skip

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
    config = TrainerConfig(
        output_dir=str(out), max_steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 100,
        warmup_steps=min(50, steps // 10), grad_clip=1.0, loss=loss, seed=seed, device=str(dev),
        log_every=max(1, min(10, steps // 20)), progress_bar=progress, plot=False,
    )  # fmt: skip
    trainer = Trainer(net, config, train_set, extra_losses=_extra_losses(net))
    t0 = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - t0

    files: dict[str, Path] = {}
    metrics: dict[str, dict[str, float]] = {}
    rows = []
    (out / "inputs").mkdir()
    pip = getattr(net, "accepts_degradation", False)
    for i in range(len(test_set)):
        sample = test_set[i]
        degraded, clean, name = sample["degraded"], sample["clean"], sample["degradation"]
        if smoke:  # a corner is enough to check the pipeline
            degraded, clean = degraded[:, :64, :96], clean[:, :64, :96]
        # PIP is told the degradation, as the trainer's validation does; PromptIR restores blind.
        restored = restore(trainer.model, degraded, progress=False, **({"degradation": name} if pip else {}))
        before, after = PROMPTIR_PROTOCOL.compute(degraded, clean), PROMPTIR_PROTOCOL.compute(restored, clean)
        metrics[name] = {
            "psnr_in": before["psnr"], "psnr_out": after["psnr"], "ssim_in": before["ssim"],
            "ssim_out": after["ssim"], "gain_db": after["psnr"] - before["psnr"],
        }  # fmt: skip
        rows.append([degraded, restored, clean])
        files[f"input_{name}"] = Path(write_image(out / "inputs" / f"{holdout}_{name}.png", degraded))
    files["grid"] = Path(write_image(out / "grid.png", make_grid(rows)))
    files["model"] = save_pretrained(trainer.model, out / "model")
    curves = _plot_loss(trainer.history, out / "curves.png", loss)
    if curves is not None:
        files["curves"] = curves
    total_seconds = time.perf_counter() - t_start
    result = DemoResult(out, metrics, trainer.step, train_seconds, total_seconds, model_name, n_params, files)
    files["metrics_json"], files["metrics_md"] = _write_metrics(result, holdout)
    for line in summary_lines(result, holdout):
        log(line)
    return result


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


def _write_metrics(result: DemoResult, holdout: str) -> tuple[Path, Path]:
    out = result.out_dir
    data = {
        "model": result.model_name, "parameters": result.num_parameters, "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1), "test_image": holdout, "protocol": "promptir",
        "metrics": {d: {k: round(v, 4) for k, v in m.items()} for d, m in result.metrics.items()},
    }  # fmt: skip
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# allinone-ir demo: {result.model_name}, {result.steps} updates in {result.train_seconds / 60:.1f} min",
        "",
        f"Test image: `{holdout}` (not used for training). PSNR / SSIM: PromptIR protocol "
        "(RGB, data range 1, 7x7 uniform SSIM window).",
        "",
        "| degradation | PSNR before | PSNR after | gain (dB) | SSIM before | SSIM after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for d, m in result.metrics.items():
        lines.append(
            f"| {d} | {m['psnr_in']:.2f} | {m['psnr_out']:.2f} | {m['gain_db']:+.2f} | "
            f"{m['ssim_in']:.4f} | {m['ssim_out']:.4f} |"
        )
    md_path = out / "metrics.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def summary_lines(result: DemoResult, holdout: str) -> list[str]:
    """The human-readable end-of-run summary: gains per degradation, honest notes, files written."""
    lines = ["", f"PSNR on '{holdout}' (dB), before -> after restoration:"]
    small = []
    for d, m in result.metrics.items():
        lines.append(
            f"  {d:6s} {m['psnr_in']:6.2f} -> {m['psnr_out']:6.2f}  ({m['gain_db']:+.2f} dB)   "
            f"SSIM {m['ssim_in']:.3f} -> {m['ssim_out']:.3f}"
        )
        if m["gain_db"] < _SMALL_GAIN_DB:
            small.append(d)
    for d in small:
        g = result.metrics[d]["gain_db"]
        verdict = "worse than the input" if g < 0 else "only a small gain"
        lines.append(
            f"  note: {d}: {verdict} ({g:+.2f} dB) after {result.steps} updates; this network needs "
            "longer training for it (try --minutes 15, or a GPU with --device cuda)"
        )
    if not small:
        lines.append(f"  every degradation gained at least {_SMALL_GAIN_DB:g} dB")
    lines.append("")
    lines.append(f"wrote to {result.out_dir}/ in {result.total_seconds / 60:.1f} min:")
    f = result.files
    lines.append(f"  grid.png      rows: {', '.join(result.metrics)}; columns: degraded | restored | clean")
    lines.append("  metrics.md    the table above (also metrics.json)")
    lines.append(
        "  curves.png    training loss" if "curves" in f else "  (no loss curve: pip install matplotlib)"
    )
    lines.append(f"  model/        try: allinone-ir restore --checkpoint {f['model']} {f['grid'].parent}/inputs "
                 f"--out {result.out_dir}/restored")  # fmt: skip
    return lines


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="train a small all-in-one model on bundled photos and show the results",
        description=(
            "Synthesise noise, rain, haze and snow on the bundled photographs, train a small all-in-one "
            "network for a few minutes, restore a photograph training never saw, and write a comparison "
            "grid, a PSNR/SSIM table, the loss curve and the trained model."
        ),
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget (default: 3)")
    p.add_argument("--steps", type=int, default=None, help="number of updates instead of a time budget")
    p.add_argument(
        "--model", choices=sorted(DEMO_MODELS), default="promptir", help="network (default: promptir)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--holdout", default="chelsea", help="bundled photo kept for testing (default: chelsea)")
    p.add_argument("--patch-size", type=int, default=48, help="training crop size (default: 48)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per update (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    p.add_argument("--loss", default="psnr", help="training loss (default: psnr, i.e. log MSE per image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--overwrite", action="store_true", help="reuse a non-empty --out (replaces the demo's files)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="smallest network and crops: checks the pipeline only"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; returns the exit status."""
    try:
        run_demo(
            args.out, minutes=args.minutes, steps=args.steps, model=args.model, device=args.device, holdout=args.holdout,
            patch_size=args.patch_size, batch_size=args.batch_size, lr=args.lr,
            loss=args.loss, seed=args.seed,
            overwrite=args.overwrite, smoke=args.smoke, progress=not args.no_progress,
        )  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
