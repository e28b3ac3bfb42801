"""Plug PIP (Prompt-In-Prompt) into a U-Net of your own, train it briefly, and control it by degradation.

Run ``python examples/pip_custom_unet.py`` (a few minutes on CPU) or with ``--smoke`` (seconds).

The U-Net below is ordinary PyTorch. The only PIP-specific line is the ``PIPUNet(...)`` call: it
names the modules whose outputs are the skip features (here the ``skip1`` / ``skip2`` identities,
which lie on the skip path only) and inserts a PIP block on each.

The training loop is written out to show what PIP's recipe is; the recipe itself comes from the
network: ``model.training_forward_kwargs(batch)`` (pass the labels, ask for the classifier's logits),
``model.split_training_output(...)`` and ``model.auxiliary_losses()`` (the directional decoupled loss,
weight 0.002, and the classifier's cross-entropy, weight 0.1). ``allinone_ir.Trainer`` does the same
by itself: ``Trainer(model, config, dataset).fit()``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from allinone_ir import PIPUNet


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1))


class SmallUNet(nn.Module):
    """A two-level U-Net with concatenated skips and a global residual."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.enc1, self.enc2 = conv_block(3, width), conv_block(width, width * 2)
        self.down1, self.down2 = (
            nn.Conv2d(width, width, 2, stride=2),
            nn.Conv2d(width * 2, width * 2, 2, stride=2),
        )
        self.middle = conv_block(width * 2, width * 2)
        self.up2 = nn.ConvTranspose2d(width * 2, width * 2, 2, stride=2)
        self.up1 = nn.ConvTranspose2d(width * 2, width, 2, stride=2)
        self.dec2, self.dec1 = conv_block(width * 4, width * 2), conv_block(width * 2, width)
        self.skip1, self.skip2 = nn.Identity(), nn.Identity()  # PIP goes here
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.down1(e1))
        m = self.middle(self.down2(e2))
        d2 = self.dec2(torch.cat([self.up2(m), self.skip2(e2)], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), self.skip1(e1)], 1))
        return x + self.out(d1)


def degrade(clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Toy degradations: 0 noise, 1 darkening (low light)."""
    noisy = clean + 0.1 * torch.randn_like(clean)
    dark = clean * 0.3
    return torch.where(labels.view(-1, 1, 1, 1) == 0, noisy, dark)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny, fast run (for CI)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    steps, size, width = (3, 16, 8) if args.smoke else (args.steps, 48, 16)
    torch.manual_seed(0)

    model = PIPUNet(
        SmallUNet(width),
        skips={"skip1": width, "skip2": width * 2},  # module name -> feature channels
        prompt_dims=(16, 16),
        prompt_sizes=(16, 8),
        degradations=("noise", "lowlight"),
        pad_multiple=4,  # two 2x downsamplings
    )
    terms = model.auxiliary_losses()  # PIP's own training terms, declared by the family
    print("PIP's training terms:", ", ".join(f"{t.name} x {t.weight:g}" for t in terms))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        clean = torch.rand(8, 3, size, size)
        labels = torch.randint(0, 2, (8,))
        batch = {"degraded": degrade(clean, labels), "clean": clean, "label": labels}
        # one forward: the labels drive the prompts, and the classifier's logits come out too
        output = model(batch["degraded"], **model.training_forward_kwargs(batch))
        out, extras = model.split_training_output(output)
        parts = {"l1": F.l1_loss(out, clean)}
        parts.update({t.name: t.weight * t.fn(model, batch, extras) for t in terms})
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            detail = "  ".join(f"{k} {v.item():.4f}" for k, v in parts.items())
            print(f"step {step:4d}  loss {loss.item():.4f}  ({detail})")

    model.eval()
    clean = torch.rand(2, 3, size + 3, size + 1)  # any size works
    x = degrade(clean, torch.tensor([0, 1]))
    with torch.no_grad():
        by_label = model(x, degradation=["noise", "lowlight"])
        mixture = model(x, degradation={"noise": 0.5, "lowlight": 0.5})
        blind, omega = model(x, return_weights=True)
    for name, y in [("labels", by_label), ("mixture", mixture), ("blind", blind)]:
        print(
            f"{name:8s} L1 to clean {F.l1_loss(y, clean).item():.4f} (degraded {F.l1_loss(x, clean).item():.4f})"
        )
    print("estimated degradation weights:", [[round(v, 2) for v in row] for row in omega.tolist()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
