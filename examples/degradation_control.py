"""Control a PIP network with degradation labels, weights and mixtures (or let it decide, blind).

PIP networks take ``model(image, degradation=...)``: a name (``"rain"``), an integer label, a mixture
(``{"rain": 0.5, "noise": 0.5}`` or ``"rain+noise"``), one entry per image, or an ``(N, T)`` weight
tensor; with ``degradation=None`` the built-in classifier estimates the weights. This script

1. trains a small PIP-Restormer on synthetic noise and rain made from the bundled photos, or loads
   one (``--checkpoint``, e.g. after ``allinone-ir demo --model pip``). The trainer applies PIP's
   recipe as the network declares it (``model.auxiliary_losses()``): the labels drive the prompts,
   the directional decoupled loss (weight 0.002) keeps the prompts apart and the classifier is
   trained jointly on its cross-entropy (weight 0.1), so blind restoration works afterwards;
2. restores a rainy and a noisy version of a photo it never saw with every kind of control;
3. sweeps the weights from "all noise" to "all rain" to show how the output follows them.

``--smoke`` trains a tiny network for two updates (the numbers then mean nothing; for CI).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from allinone_ir import create_model, from_pretrained, restore
from allinone_ir.assets import sample_images
from allinone_ir.data import SyntheticDegradationDataset
from allinone_ir.data.degradations import synthesize
from allinone_ir.io import read_image
from allinone_ir.metrics import psnr
from allinone_ir.training import Trainer, TrainerConfig

DEGRADATIONS = ("noise", "rain")


def train_small_pip(steps: int, smoke: bool) -> torch.nn.Module:
    """PIP-Restormer in a reduced size, trained on noise + rain crops of three bundled photos."""
    size = dict(dim=8, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), classifier_widths=(4, 8)) if smoke else \
        dict(dim=16, prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4), classifier_widths=(8, 16, 32))  # fmt: skip
    model = create_model("pip_restormer", num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, p2f_heads=2,
                         degradations=DEGRADATIONS, **size)  # fmt: skip
    photos = [p for p in sample_images() if p.stem != "coffee"]
    data = SyntheticDegradationDataset(photos, tasks=DEGRADATIONS, patch_size=32 if smoke else 48, repeat=32,
                                       classes=DEGRADATIONS)  # fmt: skip
    # PIP's recipe comes with the network; the Trainer adds these terms by itself (change a weight
    # with TrainerConfig(aux_weights={"classifier": 0.5}))
    print("PIP's training terms:", ", ".join(f"{t.name} x {t.weight:g}" for t in model.auxiliary_losses()))
    config = TrainerConfig(output_dir=tempfile.mkdtemp(prefix="allinone_pip_"), max_steps=steps,
                           batch_size=4 if smoke else 8, lr=1e-3, min_lr=1e-5, warmup_steps=steps // 10,
                           grad_clip=1.0, progress_bar=not smoke, plot=False)  # fmt: skip
    Trainer(model, config, data).fit()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a PIP network saved with save_pretrained")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="tiny network, two updates (for CI)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = from_pretrained(args.checkpoint) if args.checkpoint else train_small_pip(
        2 if args.smoke else args.steps, args.smoke)  # fmt: skip
    if not model.accepts_degradation:
        raise SystemExit(f"{type(model).__name__} takes no degradation control; use a PIP network")
    model.eval()
    names = model.degradations
    print(f"{type(model).__name__} with degradations {list(names)}")

    clean = read_image(sample_images()[2])[:, :128, :128]  # coffee: not used for training
    for actual in DEGRADATIONS:
        degraded = synthesize(clean, actual, rng=1)
        print(f"\n{actual} image: input PSNR {float(psnr(degraded, clean)):.2f} dB")
        controls = {
            "right label": actual,
            "wrong label": next(n for n in DEGRADATIONS if n != actual),
            "50/50 mixture": "noise+rain",  # the model itself also takes {"noise": 0.5, "rain": 0.5}
            "weight tensor": torch.tensor([[0.8 if n == actual else 0.2 for n in names]]),
            "blind": None,
        }
        for how, control in controls.items():
            out = restore(model, degraded, degradation=control, progress=False)
            print(f"  {how:14s} -> {float(psnr(out, clean)):.2f} dB")
        with torch.no_grad():
            _, omega = model(degraded[None], return_weights=True)
        print("  classifier's weights:", {n: round(float(w), 2) for n, w in zip(names, omega[0])})

        sweep = []
        for a in torch.linspace(0, 1, 5).tolist():
            w = torch.tensor([[1 - a if n == "noise" else a if n == "rain" else 0.0 for n in names]])
            sweep.append(
                f"{a:.2f}:{float(psnr(restore(model, degraded, degradation=w, progress=False), clean)):.2f}"
            )
        print("  rain weight : PSNR  ", "  ".join(sweep))


if __name__ == "__main__":
    main()
