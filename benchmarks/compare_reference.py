"""Side by side with the official implementations: same weights, same input, one process, interleaved.

The official files are *not* part of this repository; fetch them yourself and pass their paths::

    git clone https://github.com/va1shn9v/PromptIR            # net/model.py
    git clone https://github.com/swz30/Restormer              # basicsr/models/archs/restormer_arch.py
    git clone https://github.com/longzilicart/pip_universal   # src/net/PIP_Net.py
    python benchmarks/compare_reference.py --model promptir \\
        --reference PromptIR/net/model.py --mode infer --size 256 --repeats 5 --threads 2

Ours runs the way users get it: inference through ``allinone_ir.restore()`` with no options (the
default fast path; ``--path module`` calls the network directly instead, in channels-last), training
on a channels-last network as ``Trainer`` does by default. The reference runs as constructed (NCHW,
fp32, eager).

Modes: ``infer`` (fp32), ``bf16`` (ours with ``restore(..., dtype=torch.bfloat16)`` against the reference
in fp32), ``compile`` (ours through ``restore(..., compile=True)``), ``train`` (forward, L1 loss, backward,
AdamW step), ``train_bf16`` (ours under bf16 autocast against the reference in fp32), ``ckpt`` (``train``
with activation checkpointing on every level of ours). Each repeat times the reference then ours; the
medians and the per-repeat ratios are printed (and written with ``--json``). Outputs are compared (max
absolute difference) for PromptIR and Restormer, which carry the same weights; PIP-Restormer differs from
the official network by design (same speed and memory questions, different function), so only speed and
memory are compared, both given degradation labels. Peak memory in the training modes is the rise of the
resident set during one step, after the heap is trimmed (Linux only; see ``harness.py``) or
``max_memory_allocated`` on CUDA.

CPU memory: ours runs inside ``heap.retain_cpu_heap()`` (freed feature maps are reused instead of being
returned to the system at every layer, as jemalloc or tcmalloc in ``LD_PRELOAD`` would do); the reference
with the process's default allocator settings, as its users run it. ``--allocator retained`` runs both inside it,
which leaves only the difference in computation (and ``--path module`` calls ours without it).

On a shared machine use ``--clock cpu --threads 1``: the process CPU time of each call does not count the
time other processes hold the cores, so the ratios stay meaningful under load (wall-clock ratios do not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from harness import _PeakMemory, environment, load_reference
from heap import retain_cpu_heap

from allinone_ir import restore
from allinone_ir.models import create_model

MODES = ("infer", "bf16", "compile", "train", "train_bf16", "ckpt")


def build(model: str, reference: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The reference network and ours; PromptIR and Restormer carry the same (random) weights."""
    ref = load_reference(model, reference)
    ours = create_model(model)
    if model in ("promptir", "restormer"):
        ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["promptir", "restormer", "pip_restormer"], default="promptir")
    p.add_argument("--reference", required=True, help="path of the official model file")
    p.add_argument("--mode", choices=MODES, default="infer")
    p.add_argument("--path", choices=["restore", "module"], default="restore",
                   help="inference modes: ours through restore() (default) or the network called directly")  # fmt: skip
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall-clock time, or the process CPU time (robust on a loaded machine; use --threads 1)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--allocator", choices=["as-used", "retained"], default="as-used",
                   help="CPU: the reference with default allocator settings and ours as restore()/Trainer run it "
                        "(as-used), or both with freed memory retained (retained)")  # fmt: skip
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    ref, ours = build(a.model, a.reference)
    ref, ours = ref.to(dev), ours.to(dev)
    x = torch.rand(a.batch, 3, a.size, a.size, device=dev)
    kwargs: dict[str, Any] = {}
    if a.model == "pip_restormer":  # both networks get labels (the official one needs them)
        kwargs["degradation"] = torch.zeros(a.batch, dtype=torch.long, device=dev)
    clock: Callable[[], float] = time.process_time if a.clock == "cpu" else time.perf_counter
    res: dict[str, Any] = {"model": a.model, "mode": a.mode, "path": a.path, "size": a.size, "batch": a.batch,
                           "clock": a.clock, "allocator": a.allocator, "environment": environment(a.device)}  # fmt: skip
    times: dict[str, list[float]] = {"reference": [], "ours": []}

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        _sync(dev)
        t0 = clock()
        out = fn()
        _sync(dev)
        return clock() - t0, out

    if a.mode in ("infer", "bf16", "compile"):
        ref.eval()
        ours.eval()
        dtype = torch.bfloat16 if a.mode == "bf16" else None
        if a.path == "module":
            ours.to(memory_format=torch.channels_last)
            runner = torch.compile(ours) if a.mode == "compile" else ours

            def run_ours() -> torch.Tensor:
                with (
                    torch.inference_mode(),
                    torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype is not None),
                ):
                    return runner(x, **kwargs)

        else:

            def run_ours() -> torch.Tensor:
                return restore(ours, x, clamp=False, progress=False, dtype=dtype, compile=a.mode == "compile",
                               **kwargs)  # fmt: skip

        def run_ref() -> torch.Tensor:
            with torch.inference_mode():
                return ref(x, **kwargs)

        res["first_call_s"], _ = timed(run_ours)  # warm-up (and compilation, and the layout conversion)
        expected = run_ref()
        with retain_cpu_heap(enabled=a.allocator == "retained"):
            for _ in range(a.repeats):
                for name, fn in (("reference", run_ref), ("ours", run_ours)):
                    times[name].append(timed(fn)[0])
        if a.model != "pip_restormer":
            res["max_abs_diff"] = (run_ours().float() - expected).abs().max().item()
    else:
        ours.to(memory_format=torch.channels_last)  # as Trainer(channels_last=True), its default
        if a.mode == "ckpt":
            ours.set_grad_checkpointing(True)
        target = torch.rand_like(x)
        nets = {"reference": ref.train(), "ours": ours.train()}
        opts = {name: torch.optim.AdamW(net.parameters()) for name, net in nets.items()}

        def step(name: str) -> None:
            with retain_cpu_heap(enabled=name == "ours" or a.allocator == "retained"):
                opts[name].zero_grad(set_to_none=True)
                bf16 = a.mode == "train_bf16" and name == "ours"
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    out = nets[name](x, **kwargs)
                F.l1_loss(out.float(), target).backward()
                opts[name].step()

        for name in nets:
            step(name)  # warm-up: optimizer state
        mem = _PeakMemory(dev)
        peaks: dict[str, list[float]] = {"reference": [], "ours": []}
        for _ in range(a.repeats):
            for name in nets:
                mem.reset()
                times[name].append(timed(lambda name=name: step(name))[0])
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
