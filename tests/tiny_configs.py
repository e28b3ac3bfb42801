"""Tiny constructor overrides for every registered model, so behaviour tests run fast on CPU.

Every name in :func:`allinone_ir.list_models` must have an entry here
(``tests/test_models.py`` checks it), so a new network cannot skip the shared tests.
"""

from __future__ import annotations

from typing import Any

import torch

from allinone_ir import create_model

_RESTORMER = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))
_MOCE = dict(
    dim=8, num_blocks=(1, 1, 1, 1), num_dec_blocks=(1, 1, 1), num_refinement_blocks=1, routing_noise=False
)
_MIRAGE = dict(dim=6, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, drop_path=0.0, spd_head=False)
_NAF = dict(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))

TINY: dict[str, dict[str, Any]] = {
    "adair": dict(_RESTORMER, dim=16),  # 16: the 1-unit ChannelGate of dim=8 can start dead
    "restormer": _RESTORMER,
    "restormer_biasfree": _RESTORMER,
    "promptir": dict(_RESTORMER, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), prompt_len=3),
    "nafnet": _NAF,
    "nafnet_width32": _NAF,
    "nafnet_width64": _NAF,
    "nafnet_sidd_width64": _NAF,
    "nafnet_gopro_width32": _NAF,
    "pip_restormer": dict(
        _RESTORMER, prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), p2f_heads=2, classifier_widths=(4, 8)
    ),
    "pip_nafnet": dict(_NAF, prompt_dims=(8, 8), prompt_sizes=(8, 4), p2f_heads=2, classifier_widths=(4, 8)),
    # in training every expert is selected (train_top_k == num_experts), so each gets a non-zero gradient, and no
    # routing noise, so two training forwards agree (tests/test_moce_ir.py covers top-1 training and the noise)
    "moce_ir": dict(_MOCE, num_experts=2, train_top_k=2),
    "moce_ir_s": dict(_MOCE, num_experts=3, train_top_k=3),
    # no stochastic depth (two training forwards must agree); the contrastive head only feeds the training
    # term, so the image-only backward cannot reach it (tests/test_mirage.py checks the training forward)
    "mirage_s": _MIRAGE,
    "mirage_t": _MIRAGE,
    "dfpir": dict(_RESTORMER, text_dim=16),
    "baryir": _RESTORMER,
}


def tiny_model(name: str) -> torch.nn.Module:
    """Seeded tiny network whose zero-initialised residual scales (NAFNet's beta, gamma, AdaIR's
    para1) are set to 0.1, so that every parameter influences the output."""
    torch.manual_seed(0)
    model = create_model(name, **TINY[name])
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("beta", "gamma", "para1")):
                p.fill_(0.1)
    return model


def randomise(module: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values (``scale * N(0, 1)``) so identity inits cannot hide bugs."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module
