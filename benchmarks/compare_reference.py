"""Ours against the official implementation and against ``torch.compile``: same weights, one process.

The official files are not part of this repository; put them in one folder yourself (see
``docs/benchmarks.md`` for the commits used)::

    promptir_model.py   PromptIR  net/model.py
    restormer_arch.py   Restormer basicsr/models/archs/restormer_arch.py
    NAFNet_arch.py      NAFNet    basicsr/models/archs/NAFNet_arch.py (+ arch_util.py, local_arch.py,
                                  their ``basicsr.`` imports made local)

Variants, timed in turn (interleaved) after one warm-up call each:

- ``official``: the official network as constructed (NCHW, eager);
- ``ours``: ours with the official weights (``load_checkpoint(official.state_dict(), arch)``), eager,
  in the memory format ``restore()`` and the ``Trainer`` use by default;
- ``ours_nchw`` / ``ours_cl``: ours forced to NCHW / channels-last;
- ``compile``: ``torch.compile(ours_nchw)`` (inductor, default mode; the warm-up call compiles).

Modes: ``infer`` (fp32, ``inference_mode``) and ``train`` (forward, L1, backward, AdamW with lr 0 so
the weights stay equal). Each call reports wall and process CPU time (with ``--threads 1`` the CPU
time does not count the time other processes hold the core) and the peak rise of the resident set
(sampled every 2 ms, heap trimmed before; run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that it
follows live tensors)::

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/compare_reference.py --model promptir \\
        --official /work/scratch/official --mode infer --size 256 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import allinone_ir
from allinone_ir import load_checkpoint

#: Modules the official PromptIR builds but never calls (not in our network).
_PROMPTIR_UNUSED = ("chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1",
                    "reduce_noise_channel_2", "reduce_noise_channel_3")  # fmt: skip


def official(model: str, folder: Path) -> nn.Module:
    """The official network of ``model`` in its default configuration (NAFNet: SIDD width 32)."""
    sys.path.insert(0, str(folder))
    if model == "promptir":
        import promptir_model

        net = promptir_model.PromptIR(decoder=True)
        for name in _PROMPTIR_UNUSED:
            delattr(net, name)
        return net
    if model == "restormer":
        import restormer_arch

        return restormer_arch.Restormer()
    import NAFNet_arch

    return NAFNet_arch.NAFNet(
        img_channel=3, width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2]
    )


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


class _PeakRSS:
    """Largest resident set seen while the block runs, minus the level at its start."""

    def __enter__(self) -> _PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("promptir", "restormer", "nafnet"), default="promptir")
    p.add_argument("--official", type=Path, required=True, help="folder with the official model files")
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", default="official,ours_nchw,ours_cl,compile")
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA: wall time and max_memory_allocated)")
    p.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: every variant under autocast"
    )
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    ref = official(a.model, a.official).to(dev)
    nets: dict[str, nn.Module] = {}
    for v in a.variants.split(","):
        if v == "official":
            nets[v] = ref
            continue
        net = load_checkpoint(ref.state_dict(), a.model).to(dev)
        if v in ("ours_cl", "ours_nchw", "compile"):
            fmt = torch.channels_last if v == "ours_cl" else torch.contiguous_format
            net = net.to(memory_format=fmt)  # type: ignore[call-overload]
        nets[v] = torch.compile(net) if v == "compile" else net
    for net in nets.values():
        net.train(a.mode == "train")
    opts = {v: torch.optim.AdamW(n.parameters(), lr=0.0) for v, n in nets.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.rand(a.batch, 3, a.size, a.size, generator=g).to(dev)
    target = torch.rand(a.batch, 3, a.size, a.size, generator=g).to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def call(v: str) -> torch.Tensor:
        if a.mode == "infer":
            with torch.inference_mode(), autocast:
                out = nets[v](x)
        else:
            with autocast:
                out = nets[v](x)
            F.l1_loss(out.float(), target).backward()
            opts[v].step()
            opts[v].zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(dev)
        return out.detach()

    outs, first = {}, {}
    for v in nets:  # warm-up: compilation, optimizer state, cuDNN's algorithm search
        t0 = time.perf_counter()
        outs[v] = call(v)
        if cuda:
            call(v)
        first[v] = time.perf_counter() - t0
        print(f"first call {v}: {first[v]:.1f} s", flush=True)
    wall: dict[str, list[float]] = {v: [] for v in nets}
    cpu: dict[str, list[float]] = {v: [] for v in nets}
    peak: dict[str, list[float]] = {v: [] for v in nets}
    for r in range(a.repeats):
        for v in nets:
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
                base_mem = torch.cuda.memory_allocated(dev)
            else:
                _trim()
            with contextlib.nullcontext() if cuda else _PeakRSS() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                call(v)
                wall[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
            rise = torch.cuda.max_memory_allocated(dev) - base_mem if cuda else mem.peak - mem.base
            peak[v].append(rise / 2**20)
        if not cuda:
            print(
                f"repeat {r}: " + ", ".join(f"{v} {wall[v][-1]:.2f}/{cpu[v][-1]:.2f} s" for v in nets),
                flush=True,
            )
    base = "official" if "official" in nets else next(iter(nets))
    ref_out = outs[base].float()
    load = open("/proc/loadavg").read().split()[:3]
    res: dict[str, Any] = {
        "package": str(Path(allinone_ir.__file__).parent),
        "model": a.model, "mode": a.mode, "size": a.size, "batch": a.batch, "threads": a.threads,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "dtype": a.dtype,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32, "torch": torch.__version__, "load": load,
        "first_call_s": first, "wall_s": wall, "cpu_s": cpu,
        "peak_rss_mib": peak,
    }  # fmt: skip
    print(f"\n{res['package']}: {a.model} {a.mode} {a.dtype} {a.batch}x3x{a.size}x{a.size} on {res['device']}, "
          f"{a.threads} thread(s), torch {torch.__version__}, load average {' '.join(load)}\n")  # fmt: skip
    # on a GPU the wall time is what counts; on a shared CPU the process's CPU time
    clock, times, mem_name = ("wall", wall, "peak allocated") if cuda else ("CPU", cpu, "peak RSS rise")
    print(
        f"| variant | median wall | median {clock} | {base} / variant ({clock}) | {mem_name} | max abs diff |"
    )
    print("|---|---|---|---|---|---|")
    med_base = statistics.median(times[base])
    unit, scale = ("ms", 1e3) if cuda else ("s", 1.0)
    for v in nets:
        med = statistics.median(times[v])
        diff = (outs[v].float() - ref_out).abs().max().item()
        print(f"| {v} | {statistics.median(wall[v]) * scale:.2f} {unit} | {med * scale:.2f} {unit} | "
              f"{med_base / med:.2f}x | {statistics.median(peak[v]):,.0f} MiB | {diff:.1e} |")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
