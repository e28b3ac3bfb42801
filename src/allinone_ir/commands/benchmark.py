"""``allinone-ir benchmark``: a paper's table on the standard test sets, with the official layout and protocol.

Suites: ``three-task``, ``five-task``, ``restormer-deraining``. ``--root`` is the ``test/`` folder of the PromptIR
layout (``denoise/bsd68``, ``derain/Rain100L``, ``dehaze``, ...); ``--check`` reports what of it is there and runs
no network. The layouts and the protocols: docs/tutorials/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from . import _common

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``benchmark`` sub-command."""
    p = subparsers.add_parser(
        "benchmark",
        help="a paper's table on the standard test sets",
        description=_common._plain_text(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suite", required=True, help="three-task, five-task or restormer-deraining")
    p.add_argument("--root", required=True, help="the test/ folder of the layout")
    p.add_argument(
        "--tasks", type=_common.comma_list(str), help="task keys (default: all), e.g. derain,dehaze"
    )
    p.add_argument("--check", action="store_true", help="say what of the layout is there; run no network")
    _common.add_model_arguments(p)
    _common.add_restore_arguments(p)
    p.add_argument(
        "--dtype", choices=_common.DTYPE_NAMES, default="fp32", help="compute dtype (default: fp32)"
    )
    p.add_argument("--save-images", metavar="DIR", help="write the outputs to DIR/<task>/<name>.png")
    p.add_argument("--protocol", choices=("promptir", "moce_ir", "matlab_y"), help="default: the suite's")
    p.add_argument("--compare", action="store_true", help="print the papers' rows and the differences")
    p.add_argument("--json", help="also write the results to this JSON file (a new file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _print_check(report: dict[str, dict[str, Any]]) -> bool:
    """Print the layout report; True when every task is complete."""
    for key, r in report.items():
        state = "complete" if r["complete"] else ("partial" if r["ready"] else "absent")
        print(f"{key:<11s} {state:<8s} {r['found']:>5d} / {r['expected']:<5d} {r['folder']}")
        for kind in ("missing", "misnamed"):
            for line in r[kind][:10]:
                print(f"    {kind}: {line}")
            if len(r[kind]) > 10:
                print(f"    ... and {len(r[kind]) - 10} more {kind}")
    return all(r["complete"] for r in report.values())


def _print_compare(rows: list[dict[str, Any]], keys: list[str]) -> None:
    """The published rows: PSNR/SSIM per measured column and the PSNR difference (measured minus published)."""
    if not rows:
        print("no published rows are recorded for this suite")
        return
    print("published (PSNR/SSIM; in brackets: measured minus published, dB):")
    for row in rows:
        cells = []
        for key in [*keys, "average"]:
            cell = row["average"] if key == "average" else row["tasks"].get(key)
            diff = f" [{cell['diff_psnr']:+.2f}]" if cell and "diff_psnr" in cell else ""
            cells.append(f"{key} {cell['psnr']:.2f}/{cell['ssim']:.3f}{diff}" if cell else f"{key} -")
        print(f"  {row['method']:<14s} " + "  ".join(cells) + f"  ({row['source']})")


def run(args: argparse.Namespace) -> int:
    from .._runtime import progress_bar
    from .._version import __version__
    from ..suites import PROTOCOL_TEXT, check_suite, published_rows, run_suite

    report_path = _common.new_json_path(args.json)
    report = check_suite(args.suite, args.root, args.tasks)
    if args.check:
        complete = _print_check(report)
        n_ready = sum(r["ready"] for r in report.values())
        print(f"{n_ready} of {len(report)} task(s) can run" + ("" if complete else "; see the lines above"))
        return 0 if complete else 1
    if not any(r["ready"] for r in report.values()):
        _print_check(report)
        raise UsageError(f"no task of {args.suite} has images under {args.root} (the layout is above)")
    if args.save_images:  # checked before the first task runs
        out = Path(args.save_images)
        if taken := [k for k in report if (out / k).is_dir() and any((out / k).iterdir())]:
            raise FileExistsError(
                f"{out / taken[0]} holds outputs already; choose a new --save-images folder"
            )
    model = _common.load_model_from_args(args, require_weights=True)
    bars: dict[str, Any] = {}

    def progress(key: str, done: int, total: int) -> None:
        if key not in bars:
            bars[key] = None if args.quiet else progress_bar(total=total, desc=key, unit="img")
        if bars[key] is not None:
            bars[key].update(1)
            if done == total:
                bars[key].close()

    options = {k: getattr(args, k) for k in ("device", "dtype", "save_images", "protocol")}
    options |= _common.restore_options(args)
    results = run_suite(model, args.suite, args.root, args.tasks, progress=progress, **options)
    tasks, average, skipped = results["tasks"], results["average"], results["skipped"]
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}", file=sys.stderr)
    print(f"suite: {args.suite}  protocol: {PROTOCOL_TEXT[results['protocol']]}")
    label = "average" + (f" ({len(tasks)} of {len(tasks) + len(skipped)})" if skipped else "")
    w = max(11, len(label))
    print(
        f"{'task':<{w}s} {'images':>6s} {'PSNR':>8s} {'SSIM':>7s} {'input PSNR':>10s} {'input SSIM':>10s} {'img/s':>7s}"
    )
    for key, r in [*tasks.items(), (label, average)]:
        count, speed = (str(int(r["count"])), f" {r['images_per_s']:>7.2f}") if key in tasks else ("", "")
        scores = f"{r['psnr']:>8.2f} {r['ssim']:>7.4f} {r['input_psnr']:>10.2f} {r['input_ssim']:>10.4f}"
        print(f"{key:<{w}s} {count:>6s} {scores}{speed}")
    compare = published_rows(args.suite, results) if args.compare else None
    if compare is not None:
        _print_compare(compare, list(tasks))
    if report_path is not None:
        doc = {
            "suite": args.suite,
            "protocol": results["protocol"],
            "weights": args.weights or args.checkpoint or args.model,
            "version": __version__,
            "dtype": args.dtype,
            **tasks,
            "average": average,
            "skipped": skipped,
        }
        _common.write_json(report_path, doc if compare is None else {**doc, "compare": compare})
    return 0
