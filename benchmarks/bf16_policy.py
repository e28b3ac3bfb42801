"""bf16 policies: accuracy against fp32 on a trained network, and the casts each policy adds.

Restores every image of a folder with ``restore(model, x)`` (fp32) and ``restore(model, x,
dtype=torch.bfloat16)`` under four policies, and prints per image the PSNR against the clean image (the
PromptIR protocol), the difference from fp32 in dB, and how close the bf16 output is to the fp32 output
(PSNR of bf16 against fp32, and the largest absolute difference)::

    allinone-ir demo --steps 400 --out demo400           # a trained PromptIR and its held-out inputs
    python benchmarks/bf16_policy.py demo400/model demo400/inputs

``--casts SIZE`` instead counts, under each policy, the bytes every ``aten::_to_copy`` of one forward of
the full-size PromptIR at ``1x3xSIZExSIZE`` reads and writes (``torch.profiler``; the same on any
machine, since it is what autocast dispatches, not how fast it runs)::

    python benchmarks/bf16_policy.py --casts 64

The policies (Restormer family: PromptIR, Restormer, PIP-Restormer):

- ``plain``: bf16 autocast everywhere;
- ``policy``: what ``restore(dtype=torch.bfloat16)`` runs (``low_precision_policy``): the patch embedding
  in float32, whose float32 output keeps the full-resolution levels' residual stream in float32, the
  attention's depthwise convolution at those levels in float32;
- ``bf16-stream``: the same float32 layers, but the patch embedding's output cast back to bf16, so the
  residual stream is bf16 everywhere;
- ``embed-only``: the patch embedding alone in float32 (float32 stream, depthwise convolutions in bf16);
- ``float32:A+B``: ``policy`` with the top-level modules ``A`` and ``B`` of the network (``encoder_level1``,
  ``latent``, ``noise_level1``, ...) computed entirely in float32, to find where drift comes from.

On a CPU without native bf16 the bf16 runs are emulated (slow, same rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from allinone_ir import from_pretrained
from allinone_ir import inference as inf
from allinone_ir.assets import sample_images
from allinone_ir.io import read_image
from allinone_ir.layers import OverlapPatchEmbed
from allinone_ir.metrics import PROMPTIR_PROTOCOL

POLICIES = ("plain", "policy", "bf16-stream", "embed-only")


def _in_float32(module: torch.nn.Module) -> Callable[..., Any]:
    """``module.forward`` with autocast off and its floating-point tensor arguments in float32."""
    forward = module.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        device = next(a.device.type for a in args if torch.is_tensor(a))
        with torch.autocast(device, enabled=False):
            return forward(
                *(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args), **kwargs
            )

    return run


@contextlib.contextmanager
def policy(name: str, model: torch.nn.Module | None = None) -> Iterator[None]:
    """Run ``restore(dtype=bf16)`` under the named policy (see the module docstring).

    ``float32:A+B`` needs the ``model`` whose top-level modules ``A`` and ``B`` run in float32.
    """
    if name.startswith("float32:"):
        if model is None:
            raise ValueError("a float32:MODULES policy needs the model")
        modules = [model.get_submodule(m) for m in name.split(":", 1)[1].split("+")]
        for m in modules:
            m.forward = _in_float32(m)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for m in modules:
                del m.forward
    elif name == "policy":
        yield
    elif name == "plain":
        real = inf.low_precision_policy
        with mock.patch.object(inf, "low_precision_policy", lambda model, enabled=True: real(model, False)):
            yield
    elif name == "bf16-stream":
        real_forward = OverlapPatchEmbed.forward

        def forward(self: OverlapPatchEmbed, x: torch.Tensor) -> torch.Tensor:
            y = real_forward(self, x)
            return y.to(torch.get_autocast_dtype(x.device.type)) if self.float32 else y

        with mock.patch.object(OverlapPatchEmbed, "forward", forward):
            yield
    elif name == "embed-only":
        from allinone_ir.models import restormer

        real_flags = restormer.restormer_low_precision_flags

        def embed_only(model: torch.nn.Module) -> list:
            return [f for f in real_flags(model) if f[0] == "patch_embed"]

        with mock.patch.object(restormer.RestormerUNet, "low_precision_flags", embed_only):
            yield
    else:
        raise ValueError(f"policy must be one of {POLICIES} or float32:MODULES, got {name!r}")


def _db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def count_casts(size: int, names: list[str]) -> None:
    """Print the MiB read plus written by the dtype casts of one bf16 forward under each policy."""
    from torch.profiler import ProfilerActivity, profile

    from allinone_ir import PromptIR

    model = inf.prepare_for_inference(PromptIR().eval(), "cpu")
    x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    width = {"float": 4, "c10::BFloat16": 2, "c10::Half": 2}
    for name in names:
        with policy(name, model), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                with inf.low_precision_policy(model, name != "plain"):
                    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                        model(x)
        moved = 0
        for e in prof.events():
            if e.name == "aten::_to_copy" and e.input_shapes and e.input_shapes[0]:
                src = width.get(e.input_dtypes[0], 4)
                moved += math.prod(e.input_shapes[0]) * (src + (2 if src == 4 else 4))
        print(
            f"{name}: {moved / 2**20:.0f} MiB cast (read + written), PromptIR, 1x3x{size}x{size}", flush=True
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", nargs="?", help="a save_pretrained folder or checkpoint (e.g. demo400/model)"
    )
    parser.add_argument("inputs", nargs="?", type=Path, help="folder of degraded PNG images")
    parser.add_argument("--casts", type=int, metavar="SIZE", help="count the casts at SIZE px instead")
    parser.add_argument("--clean", type=Path, default=None, help="clean image (default: the bundled chelsea)")
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma-separated: " + ", ".join(POLICIES) + ", float32:MODULE+MODULE",
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.policies.split(",")
    if args.casts:
        count_casts(args.casts, names)
        return
    if args.model is None or args.inputs is None:
        parser.error("give a model and a folder of inputs, or --casts SIZE")
    model = from_pretrained(args.model)
    clean = read_image(args.clean or next(p for p in sample_images() if p.stem == "chelsea"))
    print("| image | fp32 PSNR | " + " | ".join(f"{n}: PSNR (diff), vs fp32 dB, max" for n in names) + " |")
    print("|---" * (2 + len(names)) + "|")
    for path in sorted(args.inputs.glob("*.png")):
        x = read_image(path)
        ref = inf.restore(model, x, clamp=False, progress=False)
        base = PROMPTIR_PROTOCOL.compute(ref.clamp(0, 1), clean)["psnr"]
        cells = [path.stem, f"{base:.3f}"]
        for name in names:
            with policy(name, model), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 warns
                y = inf.restore(model, x, dtype=torch.bfloat16, clamp=False, progress=False)
            psnr = PROMPTIR_PROTOCOL.compute(y.clamp(0, 1), clean)["psnr"]
            cells.append(f"{psnr:.3f} ({psnr - base:+.3f}), {_db(y, ref):.1f}, {(y - ref).abs().max():.4f}")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
