"""Quick start: build a network, degrade a photo, restore it (tiled), measure, save and reload.

Runs on a CPU in seconds with an untrained network (the point is the API, not the result); pass
``--checkpoint DIR`` to use a trained one, e.g. the ``model/`` folder written by ``allinone-ir demo``:

    allinone-ir demo --out demo_out
    python examples/quickstart.py --checkpoint demo_out/model

``--smoke`` uses the smallest network (for CI).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from allinone_ir import create_model, from_pretrained, restore, save_pretrained
from allinone_ir.assets import sample_image
from allinone_ir.data.degradations import synthesize
from allinone_ir.io import read_image, write_image
from allinone_ir.metrics import PROMPTIR_PROTOCOL


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a folder written by save_pretrained (e.g. demo_out/model)")
    parser.add_argument("--degradation", default="rain", choices=["noise", "rain", "haze", "snow"])
    parser.add_argument("--out", default=None, help="folder for the images (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="smallest network, for CI")
    args = parser.parse_args()

    # 1. A network: a trained one from disk, or a freshly built PromptIR (any constructor argument can change).
    if args.checkpoint:
        model = from_pretrained(args.checkpoint)
    elif args.smoke:
        model = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                             prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), prompt_len=3)  # fmt: skip
    else:
        model = create_model("promptir", dim=24, num_blocks=(2, 2, 2, 2), num_refinement_blocks=2)
    model.eval()
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters")

    # 2. A clean photo (bundled with the package) and a synthetic degradation of it, seeded.
    clean = read_image(sample_image("coffee"))  # (3, H, W) float32 in [0, 1]
    degraded = synthesize(clean, args.degradation, rng=0)

    # 3. Restore: whole image, then in overlapping tiles blended without seams (for large images).
    kwargs = {"degradation": args.degradation} if model.accepts_degradation else {}
    whole = restore(model, degraded, **kwargs)
    tiled = restore(model, degraded, tile=64, overlap=16, **kwargs)

    # 4. Measure with the protocol the PromptIR and PIP papers use (RGB, 7x7 uniform SSIM window).
    before = PROMPTIR_PROTOCOL.compute(degraded[None], clean[None])
    for how, restored in (("whole", whole), ("tiled", tiled)):
        after = PROMPTIR_PROTOCOL.compute(restored[None], clean[None])
        print(f"{args.degradation} ({how}): PSNR {float(before['psnr']):.2f} -> {float(after['psnr']):.2f} dB, "
              f"SSIM {float(before['ssim']):.3f} -> {float(after['ssim']):.3f}")  # fmt: skip
    if not args.checkpoint:
        print(
            "(an untrained network makes the image worse: train one with `allinone-ir demo` and pass --checkpoint)"
        )

    # 5. Save the images and the network (safetensors + config.json), reload it and check it is the same.
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="allinone_quickstart_"))
    out.mkdir(parents=True, exist_ok=True)
    for name, img in (("degraded", degraded), ("restored", whole)):
        write_image(out / f"{name}.png", img, overwrite=True)
    save_pretrained(model, out / "model", overwrite=True)
    again = from_pretrained(out / "model").eval()
    with torch.inference_mode():  # restore() stored `model` channels-last (the fast path): same values
        diff = float((again(degraded[None], **kwargs) - model(degraded[None], **kwargs)).abs().max())
    same = diff <= 1e-5
    print(
        f"wrote {out}/degraded.png, restored.png and model/ (reloaded model gives the same output: {same}, "
        f"max difference {diff:.1e})"
    )
    if not same:
        raise SystemExit("reloaded model differs")


if __name__ == "__main__":
    main()
