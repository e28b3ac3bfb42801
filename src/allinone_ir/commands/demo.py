"""``allinone-ir demo``: train a small all-in-one network on the bundled photographs and show the result."""

from __future__ import annotations

import argparse
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError, require
from ._common import write_json

__all__ = ["add_parser"]

_DEGRADATIONS = ("noise", "rain", "haze", "snow")
_HOLDOUT = "chelsea"  # the bundled photograph kept out of training and restored at the end
_STEPS, _SMOKE_STEPS = 600, 2
_PATCH, _BATCH, _LR, _LOSS = 48, 8, 2e-3, "psnr"  # psnr: log MSE per image, each image weighs alike
# haze (a global change) and snow (dense streaks) are drawn twice as often as noise and rain
_TASKS = ("noise", "rain", "haze", "haze", "snow", "snow")
# each training photograph also in 7 other tones, gamma log-uniform in [1/1.5, 1.2]: mostly brighter (clean
# need not mean deep shadows), sometimes darker (a washed-out photograph must not pass for clean)
_TONES, _GAMMA_LOW, _GAMMA_HIGH = 8, 1 / 1.5, 1.2
_MIN_GAIN_DB, _COLOUR_TOLERANCE = 1.0, 6.0  # "restored": PSNR +1 dB, SSIM not lower, mean colour within 6/255
_COLUMNS = ("clean", "degraded", "restored")
# the files --overwrite replaces: the demo's own, then the Trainer's
_DEMO_FILES = ("grid.png", "metrics.md", "metrics.json", "curves.png", "model", "inputs", "restored")
_TRAINER_FILES = ("train_log.csv", "val_log.csv", "history.json", "config.json", "checkpoints")
# what the demo (and `allinone-ir restore` of its inputs) writes in those folders: --overwrite removes no other
_OWN_IN_FOLDER = {
    "inputs": rf"{_HOLDOUT}_\w+\.png",
    "restored": rf"{_HOLDOUT}_\w+\.png",
    "model": r"model\.safetensors|config\.json",
    "checkpoints": r"\.?step_\d+\.pt(\..+\.tmp)?",
}


def _choices(smoke: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
    """``--model`` choice -> (registered model, small configuration), for every family that offers a demo."""
    from ..models import RestorationModel, get_model_class, list_architectures

    families = [c for c in map(get_model_class, list_architectures()) if issubclass(c, RestorationModel)]
    return {
        choice: (name, cls.small_config(degradations=_DEGRADATIONS, smoke=smoke))
        for cls in families
        for choice, name in cls.demo_choices.items()
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="train a small model on the bundled photos and show the results",
        description="Synthesise noise, rain, haze and snow on the bundled photographs, train a small "
        "all-in-one network, restore a photograph training never saw, and write a comparison grid, a "
        "PSNR/SSIM table, the loss curve and the trained model.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--steps", type=int, help=f"training updates (default: {_STEPS}; --smoke: {_SMOKE_STEPS})")
    p.add_argument(
        "--model",
        choices=sorted(_choices()),
        default="promptir",
        help="promptir (default; restores blind) or pip (told each image's degradation)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, crops and degradations")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out (replacing demo files)")
    p.add_argument(
        "--smoke", action="store_true", help=f"tiny network, {_SMOKE_STEPS} updates: checks the pipeline"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require(
        "PIL.Image", extra="train", purpose="allinone-ir demo (reading the bundled photos, drawing grid.png)"
    )
    require("safetensors.torch", extra="train", purpose="allinone-ir demo (saving the trained model)")
    from .._runtime import device_problem
    from ..assets import sample_images
    from ..data import SyntheticDegradationDataset
    from ..data.augment import channel_shuffle
    from ..hub import save_pretrained
    from ..inference import restore
    from ..io import read_image, write_image
    from ..metrics import PROMPTIR_PROTOCOL
    from ..models import create_model
    from ..training import Trainer, TrainerConfig

    steps = args.steps if args.steps is not None else _SMOKE_STEPS if args.smoke else _STEPS
    if steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {steps}")
    if (problem := device_problem(args.device, "the demo", auto=True)) is not None:
        raise UsageError(f"--device {args.device}: {problem}")
    patch, batch = (32, 4) if args.smoke else (_PATCH, _BATCH)
    out = Path(args.out)
    _prepare(out, args.overwrite)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    model_name, kwargs = _choices(args.smoke)[args.model]
    net = create_model(model_name, **kwargs)
    told = bool(getattr(net, "accepts_degradation", False))
    photos = sample_images()
    train_images = [read_image(p) for p in photos if p.stem != _HOLDOUT]
    tone_rng = torch.Generator().manual_seed(args.seed + 3)
    log_range = math.log(_GAMMA_HIGH / _GAMMA_LOW)
    gammas = _GAMMA_LOW * torch.exp(log_range * torch.rand(len(train_images), _TONES - 1, generator=tone_rng))
    toned = [img.pow(g) for img, gs in zip(train_images, gammas.tolist()) for g in [1.0, *gs]]
    train_set = SyntheticDegradationDataset(
        toned, tasks=_TASKS, patch_size=patch, seed=args.seed, repeat=8, classes=_DEGRADATIONS
    )
    holdout = [p for p in photos if p.stem == _HOLDOUT]  # restored whole, once per degradation
    test_set = SyntheticDegradationDataset(
        holdout, tasks=_DEGRADATIONS, patch_size=None, augment_modes=(0,), seed=args.seed + 1, fixed=True
    )
    how = "told each image's degradation" if told else "blind: not told the degradation"
    print(
        f"allinone-ir demo: {model_name} ({net.num_parameters:,} parameters; {how}); {steps} updates of "
        f"{batch} crops of {patch} px from {len(train_images)} photos; testing on '{_HOLDOUT}', "
        "which training never sees",
        flush=True,
    )
    shuffle_rng = torch.Generator().manual_seed(args.seed + 2)
    config = TrainerConfig(
        output_dir=str(out),
        max_steps=steps,
        batch_size=batch,
        lr=_LR,
        min_lr=_LR / 100,
        warmup_steps=min(50, steps // 10),
        grad_clip=1.0,
        loss=_LOSS,
        seed=args.seed,
        device=args.device,
        ema_decay=max(0.5, min(0.98, 1 - 10 / steps)),
        log_every=max(1, min(10, steps // 20)),
        progress_bar=not args.quiet,
    )
    trainer = Trainer(net, config, train_set, batch_augment=lambda b: channel_shuffle(b, rng=shuffle_rng))
    trainer.fit()
    train_seconds = time.perf_counter() - t_start
    trained = trainer.ema.module if trainer.ema is not None else trainer.model

    metrics: dict[str, dict[str, Any]] = {}
    rows: dict[str, tuple[torch.Tensor, ...]] = {}
    for sample in (test_set[i] for i in range(len(test_set))):
        degraded, clean, name = sample["degraded"], sample["clean"], sample["degradation"]
        if args.smoke:  # a corner is enough to check the pipeline
            degraded, clean = degraded[:, :64, :96], clean[:, :64, :96]
        restored = restore(trained, degraded, progress=False, **({"degradation": name} if told else {}))
        before, after = (PROMPTIR_PROTOCOL.compute(x, clean) for x in (degraded, restored))
        rows[name] = (clean, degraded, restored)
        rgb = {k: (v.clamp(0, 1).mean(dim=(1, 2)) * 255).tolist() for k, v in zip(_COLUMNS, rows[name])}
        metrics[name] = {
            "psnr_in": before["psnr"],
            "psnr_out": after["psnr"],
            "gain_db": after["psnr"] - before["psnr"],
            "ssim_in": before["ssim"],
            "ssim_out": after["ssim"],
            "ssim_change": after["ssim"] - before["ssim"],
            "colour_error": max(abs(a - b) for a, b in zip(rgb["restored"], rgb["clean"])),
            "mean_rgb": rgb,
        }
        write_image(out / "inputs" / f"{_HOLDOUT}_{name}.png", degraded)
    title = (
        f"allinone-ir demo: {model_name} ({how}), {trainer.step} updates; test photo '{_HOLDOUT}' (unseen)"
    )
    _grid(rows, metrics, title).save(out / "grid.png")
    save_pretrained(trained, out / "model")
    rounded = {
        d: {k: v if k == "mean_rgb" else round(v, 4) for k, v in m.items()} for d, m in metrics.items()
    }
    doc = {
        "model": model_name,
        "parameters": net.num_parameters,
        "told_degradation": told,
        "steps": trainer.step,
        "batch_size": batch,
        "patch_size": patch,
        "train_seconds": round(train_seconds, 1),
        "test_image": _HOLDOUT,
        "protocol": "promptir",
        "colour_tolerance": _COLOUR_TOLERANCE,
        "metrics": rounded,
    }
    write_json(out / "metrics.json", doc)
    lines = _summary(metrics)
    intro = (
        f"{how.capitalize()}. Test image `{_HOLDOUT}` (not used for training). "
        "PSNR / SSIM: PromptIR protocol (RGB, data range 1). Mean colour: RGB, 0-255."
    )
    page = [f"# allinone-ir demo: {model_name}, {trainer.step} updates", "", intro, "", *_table(metrics), ""]
    (out / "metrics.md").write_text("\n".join(page + lines[1:]) + "\n", encoding="utf-8")
    minutes = (time.perf_counter() - t_start) / 60
    command = f"allinone-ir restore --checkpoint {out / 'model'} {out / 'inputs'} --out {out / 'restored'}"
    print("", *lines, "", f"wrote to {out}/ in {minutes:.1f} min ({trainer.step} updates):", sep="\n")
    print(f"  grid.png      rows {', '.join(metrics)}; columns {' | '.join(_COLUMNS)}, PSNR/SSIM under each")
    print("  metrics.md    this table (also metrics.json); curves.png: the training loss")
    print(f"  model/        try: {command}")
    return 0


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"output folder {out} is not empty; choose another --out or pass --overwrite "
                "(which replaces only the demo's own files)"
            )
        folders = [(out / name, own) for name, own in _OWN_IN_FOLDER.items() if (out / name).is_dir()]
        foreign = [p for d, own in folders for p in sorted(d.rglob("*")) if not re.fullmatch(own, p.name)]
        if foreign:
            raise UsageError(
                f"--overwrite would delete {foreign[0]} ({len(foreign)} such), which the demo did not write; "
                "choose another --out"
            )
        for p in (out / name for name in (*_DEMO_FILES, *_TRAINER_FILES)):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _problems(m: dict[str, Any]) -> list[str]:
    problems = []
    if m["gain_db"] < _MIN_GAIN_DB:
        how = "worse than the input" if m["gain_db"] < 0 else "gain under 1 dB"
        problems.append(f"PSNR {how} ({m['gain_db']:+.2f} dB)")
    if m["ssim_change"] < 0:
        problems.append(f"SSIM dropped {m['ssim_in']:.3f} -> {m['ssim_out']:.3f}")
    if m["colour_error"] > _COLOUR_TOLERANCE:
        problems.append(f"colour cast (mean colour off by {m['colour_error']:.1f} levels)")
    return problems


def _summary(metrics: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"Test photo '{_HOLDOUT}' (never seen in training), before -> after restoration:"]
    for d, m in metrics.items():
        psnr = f"PSNR {m['psnr_in']:6.2f} -> {m['psnr_out']:6.2f} dB ({m['gain_db']:+.2f})"
        ssim = f"SSIM {m['ssim_in']:.3f} -> {m['ssim_out']:.3f} ({m['ssim_change']:+.3f})"
        lines.append(f"  {d:6s} {psnr}   {ssim}   mean colour off by {m['colour_error']:.1f}")
    bad = {d: p for d, m in metrics.items() if (p := _problems(m))}
    lines += [f"  note: {d}: {'; '.join(p)}" for d, p in bad.items()]
    gain = f"PSNR +{_MIN_GAIN_DB:g} dB or more"
    colour = f"mean colour within {_COLOUR_TOLERANCE:g} levels"
    if bad:
        restored = f"restored {len(metrics) - len(bad)} of {len(metrics)}"
        lines.append(f"{restored} ({gain}, SSIM not lower, {colour}); not {', '.join(bad)}")
    else:
        lines.append(f"every degradation restored: {gain}, SSIM not lower, {colour}")
    return lines


def _table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    head = "degradation | PSNR before | PSNR after | gain (dB) | SSIM before | SSIM after | SSIM change"
    rows = [f"| {head} | mean colour error |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    return rows + [
        f"| {d} | {m['psnr_in']:.2f} | {m['psnr_out']:.2f} | {m['gain_db']:+.2f} | {m['ssim_in']:.4f} | "
        f"{m['ssim_out']:.4f} | {m['ssim_change']:+.4f} | {m['colour_error']:.1f} |"
        for d, m in metrics.items()
    ]


def _grid(rows: dict[str, tuple[torch.Tensor, ...]], metrics: dict[str, dict[str, Any]], title: str) -> Any:
    """The comparison figure: a row per degradation, columns clean | degraded | restored, scores under each."""
    from PIL import Image, ImageDraw, ImageFont

    from ..io import tensor_to_array

    try:
        font = ImageFont.load_default(size=14)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType
        font = ImageFont.load_default()
    pad, line, red = 6, 18, "#b00000"  # a score that got worse is red
    h, w = (max(img.shape[i] for imgs in rows.values() for img in imgs) for i in (1, 2))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(name, font=font)) for name in rows) + 2 * pad
    cell_w, cell_h = max(w, 170), h + 2 * line + pad
    width = max(label_w + 3 * (cell_w + pad), int(probe.textlength(title, font=font)) + 2 * pad)
    top = pad + 2 * line
    canvas = Image.new("RGB", (width, top + len(rows) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill="black", font=font)
    for j, col in enumerate(_COLUMNS):
        draw.text((label_w + j * (cell_w + pad), pad + line), col, fill="black", font=font)
    for r, (name, images) in enumerate(rows.items()):
        y, m = top + r * (cell_h + pad), metrics[name]
        draw.text((pad, y + h // 2 - line // 2), name, fill="black", font=font)
        captions = [
            [("reference", "black")],
            [(f"PSNR {m['psnr_in']:.2f} dB", "black"), (f"SSIM {m['ssim_in']:.3f}", "black")],
            [
                (f"PSNR {m['psnr_out']:.2f} dB ({m['gain_db']:+.2f})", red if m["gain_db"] < 0 else "black"),
                (
                    f"SSIM {m['ssim_out']:.3f} ({m['ssim_change']:+.3f})",
                    red if m["ssim_change"] < 0 else "black",
                ),
            ],
        ]
        for j, (img, caption) in enumerate(zip(images, captions)):
            x = label_w + j * (cell_w + pad)
            canvas.paste(Image.fromarray(tensor_to_array(img), "RGB"), (x, y))
            for k, (text, colour) in enumerate(caption):
                draw.text((x, y + img.shape[1] + 2 + k * line), text, fill=colour, font=font)
    return canvas
