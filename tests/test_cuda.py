"""The GPU suite: channels-last, low-precision training, ``restore()`` and DDP on CUDA.

Every test is marked ``cuda`` and skipped without a GPU. Run it on a GPU machine with::

    PYTHONPATH=src python -m pytest -m cuda tests/test_cuda.py

Comparisons with fp32 turn TF32 off (cuDNN uses it for convolutions by default), so that
"equal" means equal within float32 rounding. No timing thresholds: speed is measured by
``python benchmarks/bench.py --device cuda`` (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import create_model, load_checkpoint, restore
from allinone_ir.data import SyntheticDegradationDataset
from allinone_ir.inference import native_low_precision, prefers_channels_last
from allinone_ir.io import read_image, write_image
from allinone_ir.training import Trainer, TrainerConfig

from .journeys.conftest import cli_command, journey_env
from .tiny_configs import TINY, tiny_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CL = torch.channels_last
DEV = torch.device("cuda")
MODELS = ["restormer", "promptir", "nafnet", "pip_restormer"]


@pytest.fixture(autouse=True)
def _exact_fp32() -> Iterator[None]:
    """No TF32 in convolutions and matmuls, so fp32 results agree to float32 rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x, degradation="rain") if getattr(model, "accepts_degradation", False) else model(x)


def _kw(model: nn.Module) -> dict[str, str]:
    return {"degradation": "rain"} if getattr(model, "accepts_degradation", False) else {}


class _LocalNet(nn.Module):
    """Two 3x3 convolutions: each output pixel sees 5x5 input pixels (tiling is exact with enough overlap)."""

    in_channels = out_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# ----------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("name", MODELS)
def test_cuda_channels_last_equals_cpu_fp32(name: str) -> None:
    model = tiny_model(name).eval()
    x = torch.rand(2, 3, 19, 26)
    with torch.no_grad():
        ref = _call(model, x)
        gpu = model.to(DEV).to(memory_format=CL)
        out = _call(gpu, x.to(DEV))
    assert out.is_cuda and out.stride(1) == 1
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_low_precision_autocast_close_to_fp32(name: str, dtype: torch.dtype) -> None:
    if not native_low_precision(dtype, DEV):
        pytest.skip(f"{dtype} is not native on this GPU")
    model = tiny_model(name).eval().to(DEV).to(memory_format=CL)
    x = torch.rand(1, 3, 24, 24, device=DEV)
    with torch.no_grad():
        ref = _call(model, x)
        with torch.autocast("cuda", dtype=dtype):
            out = _call(model, x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 and (out.float() - ref).abs().mean() < 0.02


# ----------------------------------------------------------------------------- low-precision training


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_low_precision_training_learns(precision: str) -> None:
    """A few autocast steps on one batch (fp16 with the gradient scaler) lower the loss and stay finite."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if not native_low_precision(dtype, DEV):
        pytest.skip(f"{dtype} is not native on this GPU")
    model = tiny_model("promptir").to(DEV).to(memory_format=CL).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    x = torch.rand(4, 3, 32, 32, device=DEV)
    y = (x * 0.8).clamp(0, 1)
    losses = []
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = F.l1_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    if precision == "fp16":
        assert 0 < scaler.get_scale() < float("inf")


# ----------------------------------------------------------------------------- restore()


def test_cuda_restore_default_fast_path_and_tiling() -> None:
    assert not prefers_channels_last(DEV)  # channels-last paid 0.89-1.09x on an H200 (docs/benchmarks.md)
    net = create_model("promptir", **TINY["promptir"]).eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        ref = net(x)
    out = restore(net, x, device="cuda", clamp=False)
    assert not net.uses_channels_last() and next(net.parameters()).is_cuda
    assert out.device.type == "cpu" and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    xg = x.to(DEV)
    assert restore(net, xg).is_cuda  # the result lives where the input does
    local = _LocalNet().to(DEV)
    whole = restore(local, xg, clamp=False)
    tiled = restore(local, xg, tile=24, overlap=16, batch_size=2, clamp=False)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_restore_low_precision(dtype: torch.dtype) -> None:
    if not native_low_precision(dtype, DEV):
        pytest.skip(f"{dtype} is not native on this GPU")
    net = create_model("restormer", **TINY["restormer"]).eval()
    x = torch.rand(2, 3, 32, 32)
    # the same tiles in both: tiling alone moves a global-attention network's output by ~0.1
    ref = restore(net, x, device="cuda", tile=16, overlap=4)
    out = restore(net, x, device="cuda", dtype=dtype, tile=16, overlap=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0)


def test_cuda_restore_compiled() -> None:
    """compile=True: inductor (default mode); tiles of one size and TTA give the eager result."""
    torch._dynamo.reset()
    net = create_model("restormer", **TINY["restormer"]).eval().to(DEV)
    x = torch.rand(1, 3, 48, 48)
    eager = restore(net, x, tile=16, overlap=4, tta="flip", clamp=False)
    for _ in range(2):  # the second call reuses the compiled code
        out = restore(net, x, tile=16, overlap=4, tta="flip", clamp=False, compile=True)
        torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cuda_ddp_nccl_single_process_matches_plain() -> None:
    """DDP over nccl with one process: no unused parameters (find_unused_parameters=False) and the plain gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no nccl")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        for name in ("promptir", "restormer"):
            model = tiny_model(name).to(DEV).to(memory_format=CL).train()
            x = torch.rand(2, 3, 32, 32, device=DEV)
            model(x).square().mean().backward()
            ref = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            ddp = DDP(model, device_ids=[0], find_unused_parameters=False)
            ddp(x).square().mean().backward()
            for n, p in model.named_parameters():
                torch.testing.assert_close(p.grad, ref[n], atol=1e-5, rtol=1e-4, msg=n)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- benchmark


def test_cuda_bench_row() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from harness import benchmark

    row = benchmark("promptir", size=32, batch=2, dtype="bf16", mode="train", repeats=1, warmup=0, device="cuda",
                    model_kwargs=TINY["promptir"], peak_gflops=1.0)  # fmt: skip
    assert row.device == "cuda" and row.peak_mem_mib > 0 and row.images_per_s > 0


# ----------------------------------------------------------------------------- the Trainer and the command line


def _trainer_run(
    folder: Path, device: str, steps: int, fit_steps: int | None = None, seed: int = 0,
    channels_last: bool | None = True,
) -> Trainer:  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = SyntheticDegradationDataset(
        [torch.rand(3, 24, 24, generator=g) for _ in range(4)], tasks=["noise_25", "rain"], patch_size=16
    )
    torch.manual_seed(seed)
    cfg = TrainerConfig(output_dir=str(folder), max_steps=steps, batch_size=2, save_every=2, lr=1e-3,
                        device=device, channels_last=channels_last,
                        precision="bf16" if device.startswith("cuda") else "fp32", ema_decay=0.9,
                        progress_bar=False, plot=False, log_every=1)  # fmt: skip
    trainer = Trainer(tiny_model("nafnet"), cfg, data)
    trainer.fit(steps=fit_steps)
    return trainer


def test_cuda_trainer_bf16_channels_last_resumes_and_loads_on_cpu(tmp_path: Path) -> None:
    """The Trainer on CUDA (bf16 autocast, channels-last): a resumed run equals an uninterrupted one, and its
    checkpoint restores on the CPU to what the GPU computes. NAFNet: its CUDA kernels are deterministic with
    cuDNN's deterministic algorithms (PromptIR's bilinear upsampling backward is not)."""
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        full = _trainer_run(tmp_path / "a", "cuda", steps=6)
        _trainer_run(tmp_path / "b", "cuda", steps=6, fit_steps=4)
        resumed = _trainer_run(tmp_path / "b", "cuda", steps=6, seed=123)
    finally:
        torch.backends.cudnn.deterministic = saved
    assert next(full.model.parameters()).is_cuda, "the Trainer left the network on the CPU"
    assert full.model.uses_channels_last(), "the Trainer did not store the network channels-last"  # type: ignore[operator]
    default = _trainer_run(tmp_path / "c", "cuda", steps=1, channels_last=None)
    assert not default.model.uses_channels_last()  # type: ignore[operator]  # the CUDA default
    assert resumed.step == 6
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, atol=1e-5, rtol=0, msg=k)
    assert full.ema is not None and resumed.ema is not None
    for k, v in full.ema.module.state_dict().items():
        torch.testing.assert_close(resumed.ema.module.state_dict()[k], v, atol=1e-5, rtol=0, msg=k)
    cpu_net = load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000006.pt", "nafnet", **TINY["nafnet"])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        gpu_out = full.ema.module.eval()(x.to(DEV)).cpu()  # a checkpoint restores its EMA weights
        cpu_out = cpu_net.eval()(x)
    torch.testing.assert_close(cpu_out, gpu_out, atol=1e-4, rtol=1e-4)


def test_cuda_cli_train_then_restore_folder(tmp_path: Path) -> None:
    """The journey on a GPU: ``train --config`` with ``device = "cuda"``, then ``restore --device cuda``."""
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.png", torch.rand(3, 24, 24, generator=g))
    (tmp_path / "c.toml").write_text(
        '[model]\nname = "nafnet"\nargs = { width = 8, middle_blk_num = 1, enc_blk_nums = [1, 1], dec_blk_nums = [1, 1] }\n'
        '[data.train]\ntype = "synthetic"\nclean_dir = "photos"\ntasks = ["noise_25", "rain"]\npatch_size = 16\n'
        '[trainer]\noutput_dir = "run"\nmax_steps = 4\nbatch_size = 2\nprogress_bar = false\nplot = false\n'
        'device = "cuda"\nprecision = "bf16"\n'
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*cli_command(), *args], cwd=tmp_path, env=journey_env(), capture_output=True, text=True
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done

    run("train", "--config", "c.toml")
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000004.pt"
    assert ckpt.is_file()
    for device in ("cuda", "cpu"):
        run("restore", "--checkpoint", str(ckpt), "photos", "--out", f"out_{device}", "--device", device)
    for i in range(3):
        a = read_image(tmp_path / "out_cuda" / f"p{i}.png")
        b = read_image(tmp_path / "out_cpu" / f"p{i}.png")
        assert a.shape == (3, 24, 24)
        # 8-bit files; cuDNN's TF32 convolutions (PyTorch's default) may move a pixel by a level or two
        assert (a - b).abs().mean() < 0.5 / 255 and (a - b).abs().max() <= 3 / 255 + 1e-6, (a - b).abs().max()
