"""``allinone-ir train --config FILE|NAME``: training from a config (its schema: :mod:`allinone_ir.training.cli`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from ._common import _plain_text

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``allinone-ir`` dispatcher."""
    from ..training import cli as config_schema

    p = subparsers.add_parser(
        "train",
        help="train a network from a YAML/TOML config file",
        description=_plain_text(config_schema.__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE|NAME",
        help="a config file, or a name from allinone-ir config list",
    )
    p.add_argument(
        "--resume",
        metavar="auto|never|PATH",
        help="auto: from the newest checkpoint in the output folder (default); never: from step 0; "
        "PATH: from that checkpoint (overrides trainer.resume)",
    )
    p.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    p.add_argument("--output-dir", help="override trainer.output_dir")
    p.add_argument("--device", help="override trainer.device (auto, cpu, cuda, mps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (trainer.progress_bar = false)")
    p.set_defaults(func=run)


def _leave_process_group(*, barrier: bool) -> None:
    """Leave torchrun's process group (joined by the Trainer) before exiting: gloo's threads abort otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write
    from ..training.checkpoint import format_bytes
    from ..training.cli import build_from_config, load_config
    from ..training.signals import TrainingInterrupted
    from .config import _resolve_config

    path, shipped = _resolve_config(args.config)
    if shipped and os.environ.get("RANK", "0") == "0":
        print(
            f"config {args.config}: the shipped {path.name}; relative paths in it are resolved against "
            f"the working directory {Path.cwd()}",
            file=sys.stderr,
        )
    cfg = load_config(path)
    options = {k: getattr(args, k) for k in ("resume", "max_steps", "output_dir", "device")}  # trainer.*
    options["progress_bar"] = False if args.quiet else None
    cfg["trainer"] = {**(cfg.get("trainer") or {}), **{k: v for k, v in options.items() if v is not None}}
    trainer = build_from_config(cfg, Path.cwd())
    main = trainer.dist.is_main
    if main:
        n = sum(p.numel() for p in trainer.model.parameters())
        print(
            f"{type(trainer.model).__name__}: {n:,} parameters; a training checkpoint weighs about "
            f"{format_bytes(trainer.checkpoint_size())} (the newest {trainer.config.keep_last} kept, plus best.pt)",
            file=sys.stderr,
        )
        if "val_split" in cfg["data"]["train"]:  # built: the held-out pairs are the validation set
            pairs, listed = trainer.val_data.pairs, Path(trainer.out_dir) / "held_out.txt"
            atomic_write(listed, lambda tmp: Path(tmp).write_text("".join(f"{p.degraded}\n" for p in pairs)))
            per = ", ".join(f"{n} {d}" for d, n in sorted(Counter(p.degradation for p in pairs).items()))
            held = f"held out {len(pairs)} of {len(pairs) + len(trainer.train_data)} pairs for validation"
            print(f"{held} ({per}) on whole images; listed in {listed}", file=sys.stderr)
    try:
        summary = trainer.fit()
    except TrainingInterrupted as exc:
        _leave_process_group(barrier=False)
        if main:
            print(f"{exc}; run the same command to resume", file=sys.stderr)
        return exc.exit_status
    _leave_process_group(barrier=True)
    if main:
        best, ckpt = summary["best"], summary["checkpoint"]
        size = f" ({format_bytes(Path(ckpt).stat().st_size)})" if ckpt and Path(ckpt).is_file() else ""
        if best["step"] >= 0:
            size += f", best val PSNR {best['psnr']:.2f} dB at step {best['step']} ({trainer.ckpt_dir / 'best.pt'})"
        print(f"done: {summary['step']} steps in {summary['output_dir']}; checkpoint {ckpt}{size}")
    return 0
