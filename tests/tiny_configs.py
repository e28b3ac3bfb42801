"""Tiny constructor overrides for every registered model, so behaviour tests run fast on CPU.

Every name in :func:`allinone_ir.list_models` must have an entry here
(``tests/test_models.py`` checks it), so a new network cannot skip the shared tests.
"""

from __future__ import annotations

from typing import Any

_RESTORMER = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4))
_NAF = dict(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))

TINY: dict[str, dict[str, Any]] = {
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
}
