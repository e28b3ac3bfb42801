"""Throughput and memory benchmark of the networks (what ``benchmarks/bench.py`` runs).

A grid of models x image sizes x batch sizes x dtypes x memory formats x ``torch.compile``
is timed (median over repeats, after warm-up), and each row reports images per second,
the FLOPs of one call (counted with :class:`torch.utils.flop_counter.FlopCounterMode`),
the achieved GFLOP/s against a measured dense matmul peak, and the peak memory:

- CPU: the peak resident set size of the process during the timed calls, above the resident
  set before them (Linux ``/proc/self/status`` ``VmHWM``, reset through ``/proc/self/clear_refs``;
  elsewhere the lifetime peak from :mod:`resource`). The heap is trimmed first (free memory kept
  by glibc would hide the rise); ``benchmarks/bench.py`` runs inside ``heap.retain_cpu_heap``, so the
  figure is the high-water mark of the heap: the live tensors' peak plus fragmentation.
- CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the calls.

Examples:
    >>> row = benchmark("nafnet", size=16, batch=1, repeats=1, warmup=0, peak_gflops=100.0,
    ...                 model_kwargs=dict(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)))
    >>> row.model, row.images_per_s > 0, row.gflop > 0
    ('nafnet', True, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from heap import malloc_trim
from torch import nn

from allinone_ir._runtime import PRECISIONS, autocast
from allinone_ir.profiling import count_flops

__all__ = [
    "REFERENCE_MODELS",
    "BenchResult",
    "benchmark",
    "count_flops",
    "environment",
    "format_table",
    "load_reference",
    "measure_matmul_peak",
    "run_grid",
]

#: Models that :func:`load_reference` can build from an official file, and the file each one needs.
REFERENCE_MODELS: dict[str, str] = {
    "promptir": "va1shn9v/PromptIR: net/model.py",
    "restormer": "swz30/Restormer: basicsr/models/archs/restormer_arch.py",
    "pip_restormer": "longzilicart/pip_universal: src/net/PIP_Net.py (clip and torchvision are stubbed if missing)",
}

_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclasses.dataclass
class BenchResult:
    """One row of the benchmark.

    Attributes:
        model: Registered model name.
        mode: ``"infer"`` (forward under ``torch.inference_mode``) or ``"train"`` (forward, L1 loss,
            backward, AdamW step).
        size: Image side in pixels (square images).
        batch: Batch size.
        dtype: ``"fp32"``, or the autocast dtype ``"bf16"`` / ``"fp16"`` (weights stay fp32).
        memory_format: ``"contiguous"`` (NCHW) or ``"channels_last"`` (weights and input).
        compiled: Whether the model was wrapped in ``torch.compile``.
        grad_checkpointing: Whether activation checkpointing was on for every level (train only).
        device: ``"cpu"`` or ``"cuda"``.
        median_s: Median seconds per call.
        images_per_s: ``batch / median_s``.
        gflop: GFLOP of one call (multiply-add = 2 FLOP; convolutions and matmuls only).
        gflops: Achieved ``gflop / median_s``.
        peak_fraction: ``gflops`` over the measured matmul peak of the same dtype; ``None`` where the
            device only emulates that dtype (bf16 on CPUs without AVX-512 BF16 / AMX, see
            :func:`~allinone_ir.inference.native_low_precision`): its matmuls then run a fallback
            far slower than its convolutions, so no fraction would mean anything.
        peak_mem_mib: Peak memory of the timed calls above the memory in use before them (MiB).
        compile_s: Seconds of the first (compiling) call, if compiled.
        times_s: Every timed call.
        implementation: ``"allinone-ir"``, or ``"official"`` for a reference network
            (:func:`load_reference`).
    """

    model: str
    mode: str
    size: int
    batch: int
    dtype: str
    memory_format: str
    compiled: bool
    grad_checkpointing: bool
    device: str
    median_s: float
    images_per_s: float
    gflop: float
    gflops: float
    peak_fraction: float | None
    peak_mem_mib: float
    compile_s: float | None
    times_s: list[float]
    implementation: str = "allinone-ir"


def environment(device: str = "cpu") -> dict[str, Any]:
    """Describe the machine: CPU model, threads, torch version, and the GPU if ``device`` is CUDA.

    Returns:
        A JSON-serialisable dict.
    """
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", open("/proc/cpuinfo").read())
        cpu = match.group(1).strip() if match else cpu
    env: dict[str, Any] = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _native(dtype: str, device: torch.device) -> bool:
    from allinone_ir.inference import native_low_precision

    return native_low_precision(PRECISIONS[dtype], device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int = 2048, repeats: int = 5
) -> float:
    """Achieved GFLOP/s of a large square matmul: the practical peak the networks are compared with.

    Args:
        dtype: Element type of the matmul (``torch.float32``, ``torch.bfloat16``, ``torch.float16``).
        device: Where to run it.
        n: Matrix side.
        repeats: Timed calls (the best is kept: it is a peak).

    Returns:
        GFLOP/s of the fastest call.

    Raises:
        ValueError: If ``n`` or ``repeats`` is not positive.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be positive, got {n} and {repeats}")
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class _PeakMemory:
    """Peak memory above the starting point: CPU resident set (Linux) or CUDA max allocated."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0.0

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            text = open("/proc/self/status").read()
        except OSError:
            return None
        match = re.search(key + r":\s+(\d+)\s+kB", text)
        return float(match.group(1)) * 1024 if match else None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = float(torch.cuda.memory_allocated(self.device))
            return
        malloc_trim()  # free memory kept in the heap would hide the rise
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
        except OSError:
            pass
        self.base = self._status("VmRSS") or 0.0

    def peak_bytes(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device)) - self.base
        peak = self._status("VmHWM")
        if peak is None:
            import resource

            scale = 1 if sys.platform == "darwin" else 1024
            peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale
        return max(peak - self.base, 0.0)


def _import_file(path: str, extra_sys_path: str | None = None) -> Any:
    """Import a Python file by path (the official model files are not packages)."""
    import importlib.util
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such reference file: {path}")
    if extra_sys_path is not None and extra_sys_path not in sys.path:
        sys.path.insert(0, extra_sys_path)
    spec = importlib.util.spec_from_file_location(f"reference_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stub_modules(*names: str) -> None:
    """Empty stand-ins for optional imports of the official PIP code that the networks never use."""
    import importlib.util
    import types

    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = types.ModuleType(name)


class _OfficialPIP(nn.Module):
    """The official PIP-Restormer behind this library's calling convention: ``forward(x, degradation=labels)``.

    The official network needs integer degradation labels (``degradation_class``) and returns
    ``(image, prompts)``; this wrapper passes labels (default: 0 for every image) and returns the image.
    """

    accepts_degradation = True
    in_channels = out_channels = 3

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, degradation: Any = None) -> torch.Tensor:
        if not isinstance(degradation, torch.Tensor):
            degradation = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net(x, degradation_class=degradation.to(x.device))[0]


def load_reference(model: str, path: str) -> nn.Module:
    """Build the official implementation of ``model`` from its source file, in its default configuration.

    The official code is not part of this library; fetch it yourself (see :data:`REFERENCE_MODELS`)
    and pass the file. PromptIR is built as trained officially (``decoder=True``) without the six
    modules it never uses, so its state dict loads into ours; PIP-Restormer as the official trainer
    builds it (``pip_cross_topm`` interaction, prompt dims 64/128/256, sizes 64/32/16), wrapped to take
    ``degradation=`` labels (see :class:`_OfficialPIP`). Its ``clip`` and ``torchvision`` imports are
    replaced by empty modules when those packages are missing (the network does not use them).

    Args:
        model: A key of :data:`REFERENCE_MODELS`.
        path: The official source file.

    Returns:
        The official network (random weights, train mode, NCHW as constructed).

    Raises:
        ValueError: For a model without a reference.
        FileNotFoundError: If ``path`` does not exist.
    """
    from pathlib import Path

    if model == "promptir":
        from allinone_ir.models import PROMPTIR_UNUSED_MODULES

        ref = _import_file(path).PromptIR(decoder=True)
        for name in PROMPTIR_UNUSED_MODULES:  # built but never used by the official code
            delattr(ref, name)
        return ref
    if model == "restormer":
        return _import_file(path).Restormer()
    if model == "pip_restormer":
        _stub_modules("clip", "torchvision")
        src = str(Path(path).resolve().parent.parent)  # the official files import `net.PIP` from src/
        official = _import_file(path, extra_sys_path=src)
        net = official.PIPNet_Restormer_onskip_inter(
            inp_channels=3, out_channels=3, decoder=True, use_detask_label=True, use_detask_prompt=True,
            use_CLIP_prompt=False, use_SAM_prompt=False, use_degradation_sensor=False, high_prompt_dim=1,
            low_prompt_dims=[64, 128, 256], prompt_interaction_mode="pip_cross_topm", degradation_num=5,
            low_prompt_sizes=[64, 32, 16],
        )  # fmt: skip
        return _OfficialPIP(net)
    raise ValueError(f"no reference implementation for {model!r}; known: {sorted(REFERENCE_MODELS)}")


def benchmark(
    model: str | nn.Module,
    *,
    size: int = 256,
    batch: int = 1,
    dtype: str = "fp32",
    memory_format: str = "channels_last",
    compile: bool = False,
    mode: str = "infer",
    grad_checkpointing: bool = False,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    model_kwargs: dict[str, Any] | None = None,
    peak_gflops: float | None = None,
    implementation: str = "allinone-ir",
) -> BenchResult:
    """Time one configuration of one network.

    Networks that take a ``degradation`` (PIP) are given integer labels (0 for every image), as the
    official PIP code requires. fp16 training uses a gradient scaler.

    Args:
        model: A registered model name (built with ``model_kwargs``) or a network.
        size: Side of the square input images.
        batch: Batch size.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (the last two through autocast; inference with
            :func:`~allinone_ir.inference.low_precision_policy`, as ``restore(dtype=...)``).
        memory_format: ``"contiguous"`` or ``"channels_last"``.
        compile: Wrap the network in ``torch.compile`` (the first call is timed separately).
        mode: ``"infer"`` or ``"train"`` (forward, L1 loss, backward and an AdamW step).
        grad_checkpointing: Recompute every level's activations in the backward pass (train only).
        repeats: Timed calls; the median is reported.
        warmup: Untimed calls before timing.
        device: ``"cpu"`` or ``"cuda"``.
        model_kwargs: Constructor overrides when ``model`` is a name.
        peak_gflops: The matmul peak to compare with (measured if ``None``). Not used, nor measured,
            for a dtype the device only emulates (``peak_fraction`` is then ``None``).
        implementation: Label of the row (``"official"`` for a reference network).

    Returns:
        The result row.

    Raises:
        ValueError: For an unknown dtype, memory format or mode, or non-positive sizes.
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {sorted(PRECISIONS)}, got {dtype!r}")
    if memory_format not in _FORMATS:
        raise ValueError(f"memory_format must be one of {sorted(_FORMATS)}, got {memory_format!r}")
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if size < 1 or batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"size, batch, repeats must be >= 1 and warmup >= 0, got {size}, {batch}, {repeats}, {warmup}"
        )
    dev = torch.device(device)
    if isinstance(model, str):
        from allinone_ir.models import create_model

        name, net = model, create_model(model, **(model_kwargs or {}))
    else:
        name, net = getattr(model, "model_name", type(model).__name__), model
    fmt = _FORMATS[memory_format]
    net = net.to(device=dev, memory_format=fmt)
    if hasattr(net, "set_grad_checkpointing"):
        net.set_grad_checkpointing(grad_checkpointing and mode == "train")
    net.train(mode == "train")
    x = torch.rand(batch, getattr(net, "in_channels", 3), size, size, device=dev).contiguous(
        memory_format=fmt
    )
    runner = torch.compile(net) if compile else net
    kwargs: dict[str, Any] = {}
    if getattr(net, "accepts_degradation", False):
        kwargs["degradation"] = torch.zeros(batch, dtype=torch.long, device=dev)

    if mode == "infer":
        from allinone_ir.inference import low_precision_policy

        def call() -> None:
            # bf16/fp16: what restore(dtype=...) runs, the float32-sensitive layers kept in float32
            with torch.inference_mode(), autocast(dev, dtype), low_precision_policy(net, dtype != "fp32"):
                runner(x, **kwargs)

    else:
        target = torch.rand_like(x)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-6)
        scaler = torch.amp.GradScaler(dev.type, enabled=dtype == "fp16")

        def call() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast(dev, dtype):
                loss = F.l1_loss(runner(x, **kwargs).float(), target)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    compile_s = None
    if compile:
        _sync(dev)
        t0 = time.perf_counter()
        call()
        _sync(dev)
        compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        call()
    flops = count_flops(call) if not compile else count_flops(_eager_twin(net, x, mode, dtype, dev, kwargs))
    mem = _PeakMemory(dev)
    times = []
    mem.reset()
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        call()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    peak_mem = mem.peak_bytes()
    med = statistics.median(times)
    gflops = flops / med / 1e9
    fraction = None
    if _native(dtype, dev):
        peak = measure_matmul_peak(PRECISIONS[dtype], dev) if peak_gflops is None else peak_gflops
        fraction = gflops / peak
    return BenchResult(
        model=name, mode=mode, size=size, batch=batch, dtype=dtype, memory_format=memory_format,
        compiled=compile, grad_checkpointing=grad_checkpointing and mode == "train", device=dev.type,
        median_s=med, images_per_s=batch / med, gflop=flops / 1e9, gflops=gflops,
        peak_fraction=fraction, peak_mem_mib=peak_mem / 2**20, compile_s=compile_s, times_s=times,
        implementation=implementation,
    )  # fmt: skip


def _eager_twin(
    net: nn.Module, x: torch.Tensor, mode: str, dtype: str, dev: torch.device, kwargs: dict[str, Any]
) -> Callable[[], Any]:
    """The uncompiled computation, for counting the FLOPs of a compiled network."""

    def call() -> None:
        if mode == "infer":
            with torch.inference_mode(), autocast(dev, dtype):
                net(x, **kwargs)
            return
        with autocast(dev, dtype):
            out = net(x, **kwargs)
        out.float().sum().backward()
        net.zero_grad(set_to_none=True)

    return call


def run_grid(
    models: Sequence[str],
    sizes: Sequence[int],
    batches: Sequence[int],
    dtypes: Sequence[str] = ("fp32",),
    memory_formats: Sequence[str] = ("channels_last",),
    compile_options: Sequence[bool] = (False,),
    references: dict[str, str] | None = None,
    **kwargs: Any,
) -> Iterator[BenchResult]:
    """Benchmark every combination; yields rows as they are measured.

    With ``references`` (model name -> official file, see :func:`load_reference`), each
    configuration of such a model is first timed on the official network (as constructed: NCHW,
    eager, the same dtype), then on ours, so the two rows are side by side.

    Args:
        models: Registered model names.
        sizes: Image sides.
        batches: Batch sizes.
        dtypes: Any of ``"fp32"``, ``"bf16"``, ``"fp16"``.
        memory_formats: Any of ``"contiguous"``, ``"channels_last"``.
        compile_options: ``False`` and/or ``True``.
        references: Official files to compare with, by model name.
        **kwargs: Passed to :func:`benchmark` (``mode``, ``repeats``, ``device``, ...).

    Yields:
        One :class:`BenchResult` per combination.
    """
    device = torch.device(kwargs.get("device", "cpu"))
    peaks: dict[str, float | None] = {}
    for d in dict.fromkeys(dtypes):
        if _native(d, device):
            peaks[d] = measure_matmul_peak(PRECISIONS[d], device)
        else:  # its matmul fallback takes minutes at 2048 and says nothing about bf16 hardware
            peaks[d] = None
            warnings.warn(
                f"{d} is emulated on this {device.type} (no native support): its rows show this machine's "
                "fallback, far slower than float32 and than bf16 hardware, and no peak_fraction",
                RuntimeWarning,
                stacklevel=2,
            )
    references = references or {}
    done: set[tuple[Any, ...]] = set()
    for model, size, batch, dtype, fmt, comp in itertools.product(
        models, sizes, batches, dtypes, memory_formats, compile_options
    ):
        if model in references and (model, size, batch, dtype) not in done:
            done.add((model, size, batch, dtype))
            ref = load_reference(model, references[model])
            ref.model_name = model  # type: ignore[assignment]
            opts = {k: v for k, v in kwargs.items() if k not in ("model_kwargs", "grad_checkpointing")}
            yield benchmark(
                ref, size=size, batch=batch, dtype=dtype, memory_format="contiguous", compile=False,
                peak_gflops=peaks[dtype], implementation="official", **opts,
            )  # fmt: skip
            del ref
        yield benchmark(
            model, size=size, batch=batch, dtype=dtype, memory_format=fmt, compile=comp,
            peak_gflops=peaks[dtype], **kwargs,
        )  # fmt: skip


_COLUMNS = (
    ("model", "{}"), ("implementation", "{}"), ("mode", "{}"), ("size", "{}"), ("batch", "{}"), ("dtype", "{}"),
    ("memory_format", "{}"), ("compiled", "{}"), ("median_s", "{:.4f}"), ("images_per_s", "{:.2f}"),
    ("gflop", "{:.1f}"), ("gflops", "{:.1f}"), ("peak_fraction", "{:.0%}"), ("peak_mem_mib", "{:.0f}"),
)  # fmt: skip


def format_table(rows: Sequence[BenchResult]) -> str:
    """A Markdown table of the rows (one line per configuration).

    Args:
        rows: Benchmark results.

    Returns:
        The table as a string (header, separator, one line per row); ``peak_fraction`` reads
        ``emulated`` where the dtype is not native to the device.
    """
    header = [name for name, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [
            "emulated"
            if name == "peak_fraction" and r.peak_fraction is None
            else fmt.format(getattr(r, name))
            for name, fmt in _COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
