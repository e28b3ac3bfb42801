"""Side by side with the official implementations: same weights, same input, one process, interleaved.

The official files are *not* part of this repository; fetch them yourself and pass their paths::

    git clone https://github.com/va1shn9v/PromptIR            # net/model.py
    git clone https://github.com/swz30/Restormer              # basicsr/models/archs/restormer_arch.py
    python benchmarks/compare_reference.py --model promptir \\
        --reference PromptIR/net/model.py --mode infer --size 256 --repeats 5 --threads 2

Modes: ``infer`` (fp32; ours channels-last), ``bf16`` (ours channels-last under bf16 autocast against
the reference in fp32), ``compile`` (ours through ``torch.compile``), ``train`` (forward, L1 loss,
backward, AdamW step), ``ckpt`` (``train`` with activation checkpointing on every level of ours).
Each repeat times the reference then ours; the medians and the per-repeat ratios are printed (and
written with ``--json``). Outputs are compared (max absolute difference). Peak memory in the training
modes is the rise of the resident set during one step (Linux only; see ``allinone_ir.benchmark``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from allinone_ir.benchmark import _PeakMemory, environment
from allinone_ir.models import PROMPTIR_UNUSED_MODULES, create_model


def _load_module(path: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"reference_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(model: str, reference: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The reference network and ours, carrying the same (random) weights."""
    ref_module = _load_module(reference)
    if model == "promptir":
        ref = ref_module.PromptIR(decoder=True)
        for name in PROMPTIR_UNUSED_MODULES:  # built but never used by the official code
            delattr(ref, name)
    elif model == "restormer":
        ref = ref_module.Restormer()
    else:
        raise SystemExit(f"no reference comparison for {model!r}")
    ours = create_model(model)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["promptir", "restormer"], default="promptir")
    p.add_argument("--reference", required=True, help="path of the official model file")
    p.add_argument("--mode", choices=["infer", "bf16", "compile", "train", "ckpt"], default="infer")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ref, ours = build(a.model, a.reference)
    ours = ours.to(memory_format=torch.channels_last)
    x = torch.rand(a.batch, 3, a.size, a.size)
    res: dict[str, Any] = {"model": a.model, "mode": a.mode, "size": a.size, "batch": a.batch,
                           "environment": environment()}  # fmt: skip
    times: dict[str, list[float]] = {"reference": [], "ours": []}

    if a.mode in ("infer", "bf16", "compile"):
        ref.eval()
        ours.eval()
        runner = torch.compile(ours) if a.mode == "compile" else ours

        def run_ours() -> torch.Tensor:
            if a.mode == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return runner(x)
            return runner(x)

        with torch.inference_mode():
            t0 = time.perf_counter()
            run_ours()  # warm-up (and compilation)
            res["first_call_s"] = time.perf_counter() - t0
            expected = ref(x)
            for _ in range(a.repeats):
                for name, fn in (("reference", lambda: ref(x)), ("ours", run_ours)):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            res["max_abs_diff"] = (run_ours().float() - expected).abs().max().item()
    else:
        if a.mode == "ckpt":
            ours.set_grad_checkpointing(True)
        target = torch.rand_like(x)
        opts = {
            "reference": torch.optim.AdamW(ref.parameters()),
            "ours": torch.optim.AdamW(ours.parameters()),
        }
        nets = {"reference": ref, "ours": ours}

        def step(name: str) -> None:
            opts[name].zero_grad(set_to_none=True)
            F.l1_loss(nets[name](x), target).backward()
            opts[name].step()

        for name in nets:
            step(name)  # warm-up: optimizer state
        mem = _PeakMemory(torch.device("cpu"))
        peaks: dict[str, list[float]] = {"reference": [], "ours": []}
        for _ in range(a.repeats):
            for name in nets:
                mem.reset()
                t0 = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - t0)
                peaks[name].append(mem.peak_bytes() / 2**20)
        res["peak_mib"] = {k: statistics.median(v) for k, v in peaks.items()}
        res["peak_ratio"] = res["peak_mib"]["ours"] / res["peak_mib"]["reference"]
    res["times_s"] = times
    res["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    res["speedup"] = res["median_s"]["reference"] / res["median_s"]["ours"]
    res["per_repeat_speedup"] = [r / o for r, o in zip(times["reference"], times["ours"], strict=True)]
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
