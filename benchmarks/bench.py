"""Throughput and memory benchmark of the allinone-ir networks (models x sizes x batch x dtype x layout x compile).

Prints a Markdown table and writes JSON with the environment; ``--reference FILE`` times the official
implementation side by side (see ``benchmarks/README.md``). The measuring is in ``harness.py``. Example::

    python benchmarks/bench.py --models promptir,restormer --sizes 256 \\
        --dtypes fp32,bf16 --memory-formats contiguous,channels_last --threads 2 --json bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import REFERENCE_MODELS, BenchResult, environment, format_table, run_grid
from heap import retain_cpu_heap

from allinone_ir.commands._common import comma_list


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", type=comma_list(str), default=["promptir"], help="comma-separated registered names"
    )
    p.add_argument("--sizes", type=comma_list(int), default=[256], help="comma-separated image sides")
    p.add_argument("--batch", type=comma_list(int), default=[1], help="comma-separated batch sizes")
    p.add_argument("--dtypes", type=comma_list(str), default=["fp32"], help="fp32, bf16, fp16 (autocast)")
    p.add_argument(
        "--memory-formats", type=comma_list(str), default=["channels_last"], help="contiguous, channels_last"
    )
    p.add_argument(
        "--compile", choices=["off", "on", "both"], default="off", help="torch.compile the network"
    )
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--grad-checkpointing", action="store_true", help="checkpoint every level (train mode)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--model-kwargs", type=json.loads, default=None, help="JSON overrides, e.g. '{\"dim\": 16}'"
    )
    p.add_argument("--json", default=None, help="write the rows and the environment to this file")
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="[MODEL=]FILE",
        help=f"time the official implementation from FILE side by side ({', '.join(REFERENCE_MODELS)}); "
        "repeat as MODEL=FILE for several models",
    )


def _references(args: argparse.Namespace) -> dict[str, str] | int:
    """``--reference`` as ``{model: file}``, or the exit status after printing what is wrong."""
    references: dict[str, str] = {}
    for item in args.reference:
        model, sep, file = item.partition("=")
        if not sep:
            if len(args.models) != 1:
                print("error: with several --models give --reference MODEL=FILE", file=sys.stderr)
                return 2
            model, file = args.models[0], item
        if model not in REFERENCE_MODELS:
            print(f"error: no reference implementation for {model!r}; known: {sorted(REFERENCE_MODELS)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        references[model] = file
    return references


def _print_comparisons(rows: Sequence[BenchResult]) -> None:
    """One line per row of ours that has an official row of the same model, size, batch and dtype."""
    for ref in (r for r in rows if r.implementation == "official"):
        for ours in rows:
            same = (ours.model, ours.size, ours.batch, ours.dtype) == (
                ref.model,
                ref.size,
                ref.batch,
                ref.dtype,
            )
            if ours.implementation != "official" and same:
                print(
                    f"{ours.model} {ours.mode} {ours.size}px x{ours.batch} {ours.dtype} {ours.memory_format}"
                    f"{' compiled' if ours.compiled else ''}: {ours.images_per_s / ref.images_per_s:.2f}x "
                    f"the official images/s, peak memory {ours.peak_mem_mib / max(ref.peak_mem_mib, 1e-9):.2f}x"
                )


def run(args: argparse.Namespace) -> int:
    """Run the grid described by the parsed arguments, print the table, optionally write JSON."""
    import torch

    from allinone_ir.models import list_models

    unknown = [m for m in args.models if m not in list_models()]
    if unknown:
        print(f"error: unknown models {unknown}; see `allinone-ir models`", file=sys.stderr)
        return 2
    path = Path(args.json) if args.json else None
    if path is not None and path.exists():
        print(f"error: {path} exists; not overwriting it", file=sys.stderr)
        return 1
    references = _references(args)
    if isinstance(references, int):
        return references
    if args.threads:
        torch.set_num_threads(args.threads)
    compile_options = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows: list[BenchResult] = []
    for row in run_grid(
        args.models, args.sizes, args.batch, args.dtypes, args.memory_formats, compile_options,
        references=references, mode=args.mode, grad_checkpointing=args.grad_checkpointing,
        repeats=args.repeats, warmup=args.warmup, device=args.device, model_kwargs=args.model_kwargs,
    ):  # fmt: skip
        rows.append(row)
        print(format_table([row]).splitlines()[-1] if len(rows) > 1 else format_table([row]), flush=True)
    _print_comparisons(rows)
    if path is not None:
        payload = {"environment": environment(args.device), "results": [dataclasses.asdict(r) for r in rows]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(path)  # atomic; the existence check above keeps user files safe
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/bench.py``.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="bench", description="allinone-ir throughput and memory benchmark")
    _add_arguments(parser)
    with retain_cpu_heap():  # freed feature maps are reused, as with jemalloc/tcmalloc
        return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
