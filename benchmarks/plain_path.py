"""The plain network against an earlier implementation and against ``torch.compile`` of itself.

One process, the variants timed in turn (interleaved), medians and ratios of medians:

- ``plain``: the network as the library builds it now (plain modules);
- ``compile``: ``torch.compile(plain)`` (inductor, default mode); its first call (compilation) is
  reported apart;
- ``before``: the same weights in the transformer blocks of an earlier checkout of the package
  (``--before SRC``, the ``src/allinone_ir`` folder of that checkout), e.g. the hand-written backward
  passes of commit 456b2c0: ``git worktree add /tmp/old 456b2c0`` then ``--before /tmp/old/src/allinone_ir``;
- ``textbook-attn``: ``plain`` with the attention computed as the official code writes it
  (normalise, ``q k^T``, softmax, ``@ v``, then ``project_out``), to weigh the fused attention.

Modes: ``infer`` (fp32, ``inference_mode``, batch 1) and ``train`` (forward, L1, backward, AdamW).
The networks are channels-last, as ``restore()`` and the ``Trainer`` prepare them. Peak memory is
the rise of the resident set during one call over its level before (sampled every 2 ms, heap trimmed
before each call; run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that the resident set follows live
tensors) and, for the eager variants in training, the bytes autograd saves for the backward pass.

    python benchmarks/plain_path.py --mode infer --size 256 --repeats 5 --before /tmp/old/src/allinone_ir
    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/plain_path.py --mode train --size 128 --batch 2 \\
        --repeats 3 --before /tmp/old/src/allinone_ir
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import create_model
from allinone_ir.layers import MDTA, TransformerBlock

_PAGE = 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


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

    @property
    def rise_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def _load_before_layers(src: Path):
    """The ``layers`` package of another checkout, imported as ``_before_layers``."""
    init = src / "layers" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "_before_layers", init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_before_layers"] = mod
    spec.loader.exec_module(mod)
    return mod


def _swap_blocks(net: nn.Module, layers, ffn_factor: float) -> nn.Module:
    """Replace every ``TransformerBlock`` by the other checkout's, with the same weights."""
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not TransformerBlock:
                continue
            body = child.norm1.body
            kind = "WithBias" if body.bias is not None else "BiasFree"
            other = layers.TransformerBlock(
                body.weight.shape[0], child.attn.num_heads, ffn_factor, child.attn.qkv.bias is not None, kind
            )
            other.load_state_dict(child.state_dict(), strict=True)
            setattr(module, child_name, other)
    return net


def _textbook_mdta(self: MDTA, x: torch.Tensor) -> torch.Tensor:
    """MDTA as the official Restormer code computes it."""
    n, c, h, w = x.shape
    q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
    q, k, v = (t.reshape(n, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
    return self.project_out((attn @ v).reshape(n, c, h, w))


def _textbook(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if type(m) is MDTA:
            m.forward = _textbook_mdta.__get__(m)  # type: ignore[method-assign]
    return net


def _saved_bytes(step: Callable[[], None]) -> float:
    """MiB of distinct storages autograd saves for the backward pass during ``step``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="promptir")
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--before", type=Path, help="src/allinone_ir folder of an earlier checkout")
    p.add_argument("--variants", default="before,plain,textbook-attn,compile")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    names = [v for v in a.variants.split(",") if v != "before" or a.before is not None]
    base = create_model(a.model)
    ffn_factor = float(base.config.get("ffn_expansion_factor", 2.66))
    state = base.state_dict()
    nets: dict[str, nn.Module] = {}
    for v in names:
        net = create_model(a.model)
        net.load_state_dict(state)
        if v == "before":
            net = _swap_blocks(net, _load_before_layers(a.before), ffn_factor)
        elif v == "textbook-attn":
            net = _textbook(net)
        net = net.to(memory_format=torch.channels_last).train(a.mode == "train")
        nets[v] = torch.compile(net) if v == "compile" else net
    opts = {v: torch.optim.AdamW(n.parameters(), lr=0.0) for v, n in nets.items()}  # lr 0: weights stay equal
    g = torch.Generator().manual_seed(1)
    x = torch.rand(a.batch, 3, a.size, a.size, generator=g)
    target = torch.rand(a.batch, 3, a.size, a.size, generator=g)

    def call(v: str) -> torch.Tensor:
        net = nets[v]
        if a.mode == "infer":
            with torch.inference_mode():
                return net(x)
        out = net(x)
        F.l1_loss(out, target).backward()
        opts[v].step()
        opts[v].zero_grad(set_to_none=True)
        return out.detach()

    outs, times, peaks = {}, {v: [] for v in names}, {v: [] for v in names}
    for v in names:  # warm-up (compilation for "compile"); optimizer state allocated
        t0 = time.perf_counter()
        outs[v] = call(v)
        print(f"first call {v}: {time.perf_counter() - t0:.1f} s", flush=True)
    saved = {}
    if a.mode == "train":
        for v in names:
            if v != "compile":
                saved[v] = _saved_bytes(lambda v=v: F.l1_loss(nets[v](x), target).backward())
                opts[v].zero_grad(set_to_none=True)
    for r in range(a.repeats):
        for v in names:
            _trim()
            with _PeakRSS() as peak:
                t0 = time.perf_counter()
                call(v)
                times[v].append(time.perf_counter() - t0)
            peaks[v].append(peak.rise_mib)
        print(f"repeat {r}: " + ", ".join(f"{v} {times[v][-1]:.2f} s" for v in names), flush=True)
    ref = outs["plain"] if "plain" in outs else next(iter(outs.values()))
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\n{a.model} {a.mode} {a.batch}x3x{a.size}x{a.size}, {a.threads} threads, torch {torch.__version__}, "
          f"load average {' '.join(load)}\n")  # fmt: skip
    med_plain = statistics.median(times["plain"]) if "plain" in times else None
    print(
        "| variant | median time | plain / variant | peak RSS rise | saved for backward | max abs diff vs plain |"
    )
    print("|---|---|---|---|---|---|")
    for v in names:
        med = statistics.median(times[v])
        ratio = f"{med_plain / med:.2f}x" if med_plain else "-"
        sv = f"{saved[v]:,.0f} MiB" if v in saved else "-"
        diff = (outs[v].float() - ref.float()).abs().max().item()
        print(f"| {v} | {med:.2f} s ({', '.join(f'{t:.2f}' for t in times[v])}) | {ratio} | "
              f"{statistics.median(peaks[v]):,.0f} MiB | {sv} | {diff:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
