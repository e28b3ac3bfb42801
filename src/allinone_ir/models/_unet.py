"""The per-level hook points of the library's U-Net skeletons.

Two skeletons implement a family's encoder/decoder loop once: :class:`~allinone_ir.models.restormer.RestormerUNet`
(Restormer, PromptIR, PIP-Restormer) and :class:`~allinone_ir.models.NAFNet` (NAFNet, PIP-NAFNet). A
network of a family differs from the plain U-Net only in what it does at these points, so it overrides
the hooks below and keeps the skeleton's forward; the modules keep their official attribute names (and
so their state-dict keys), since the skeleton reads them from the network itself.

Levels are numbered from the shallowest (1, full resolution) to the deepest; the latent lies below the
deepest level. The decoder visits the levels from the deepest up: at each level the skeleton upsamples,
merges the skip (after :meth:`UNetHooks._skip_hook`), runs the level's blocks and then calls
:meth:`UNetHooks._decoder_hook`. ``ctx`` is what the network's ``forward`` hands the skeleton for
this call (PIP: the degradation weights ``omega``; ``None`` for the others).
"""

from __future__ import annotations

from typing import Any

import torch


class UNetHooks:
    """Hook points of a U-Net skeleton; each returns its input unchanged unless a subclass overrides it.

    - :meth:`_latent_hook`: on the bottleneck feature, before the first upsampling (PromptIR's
      deepest prompt block; PIP-Restormer's ``chnl_reduce3``);
    - :meth:`_skip_hook`: on each skip feature, before the decoder merges it (PIP's blocks);
    - :meth:`_decoder_hook`: on the output of each decoder level (PromptIR's prompt blocks at
      levels 3 and 2).

    A hook must return a tensor the skeleton's next module accepts (same channels unless the
    network built that module for other channels, as PromptIR and PIP-Restormer do for ``up4_3``).
    Hooks are plain method calls with Python ints for ``level``, so ``torch.compile(fullgraph=True)``
    and ``torch.export`` trace them like the rest of the forward.
    """

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the latent (bottleneck) feature before the decoder upsamples it."""
        return x

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the encoder's skip feature of ``level`` before the decoder merges it."""
        return skip

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the output of decoder ``level`` before it is upsampled (or refined, at level 1)."""
        return x
