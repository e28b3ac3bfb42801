"""``allinone-ir demo``: the command line of :func:`allinone_ir.demo.run_demo`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    from ..demo import demo_models

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
        "--model", choices=sorted(demo_models()), default="promptir", help="network (default: promptir)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--holdout", default="chelsea", help="bundled photo kept for testing (default: chelsea)")
    p.add_argument("--patch-size", type=int, default=64, help="training crop size (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per update (default: 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--loss", default="psnr", help="training loss (default: psnr, i.e. log MSE per image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--overwrite", action="store_true", help="reuse a non-empty --out (replaces the demo's files)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="smallest network and crops, 2 updates: checks the pipeline only"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; returns the exit status."""
    from ..demo import run_demo

    try:
        run_demo(
            args.out, minutes=args.minutes, steps=args.steps, model=args.model, device=args.device,
            holdout=args.holdout, patch_size=args.patch_size, batch_size=args.batch_size, lr=args.lr,
            loss=args.loss, seed=args.seed, overwrite=args.overwrite, smoke=args.smoke,
            progress=not args.no_progress,
        )  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
