"""Journey: docs/tutorials/paired_folders.md as a user with their own folders follows it.

The user's folders (``my_data/degraded/rain-001.png`` with ``my_data/clean/rain-001.png``, the same
for snow), the tutorial's config as written (a tiny network and a few updates instead of the full
size), ``allinone-ir train``, then the held-out pairs restored and scored with ``evaluate``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import torch

from allinone_ir.data import synthesize
from allinone_ir.io import write_image

from .conftest import assert_no_traceback

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "paired_folders.md"
TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 2, 4],
        "prompt_dims": [8, 8, 16], "prompt_sizes": [8, 4, 4], "prompt_len": 2}  # fmt: skip


def _tutorial_config() -> str:
    blocks = re.findall(r"^```toml\n(.*?)^```", TUTORIAL.read_text(), flags=re.M | re.S)
    assert len(blocks) == 1, "the tutorial's config block is gone or doubled"
    return blocks[0]


def _toml(value: object) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else repr(value)


@pytest.mark.slow
def test_own_folders_train_restore_score(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    for kind in ("rain", "snow"):
        for i in range(1, 11):
            clean = torch.rand(3, 32, 32, generator=g)
            write_image(tmp_path / "my_data" / "clean" / f"{kind}-{i:03d}.png", clean)
            write_image(
                tmp_path / "my_data" / "degraded" / f"{kind}-{i:03d}.png", synthesize(clean, kind, rng=i)
            )
    text = _tutorial_config()
    cfg = tomllib.loads(text)  # what the tutorial says, checked before it is shrunk
    assert cfg["data"]["train"] == {"type": "paired", "degraded_dir": "my_data/degraded", "clean_dir": "my_data/clean",
                                    "label_from": "prefix", "patch_size": 128, "val_split": 0.05}  # fmt: skip
    for old, new in [("patch_size = 128", "patch_size = 16"), ("val_split = 0.05", "val_split = 0.1"),
                     ("max_steps = 100000", "max_steps = 4"), ("batch_size = 8", "batch_size = 2"),
                     ("val_every = 2000", "val_every = 4"),
                     ("save_every = 2000", 'save_every = 4\nprogress_bar = false\nplot = false\ndevice = "cpu"'),
                     ('name = "promptir"', 'name = "promptir"\nargs = { ' + ", ".join(f"{k} = {_toml(v)}" for k, v in TINY.items()) + " }")]:  # fmt: skip
        assert text.count(old) == 1, f"the tutorial's config no longer has {old!r}"
        text = text.replace(old, new)
    (tmp_path / "my.toml").write_text(text)

    result = run_cli("train", "--config", "my.toml")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    run = tmp_path / "runs" / "mine"
    held_out = run / "held_out.txt"
    assert (
        f"held out 2 of 20 pairs for validation (1 rain, 1 snow) on whole images; listed in {held_out}"
        in result.stderr
    )
    files = held_out.read_text().split()

    result = run_cli(
        "restore", "--checkpoint", run / "checkpoints" / "best.pt", *files, "--out", "held_out_pred"
    )
    assert result.returncode == 0, result.output
    result = run_cli("evaluate", "--pred", "held_out_pred", "--target", "my_data/clean")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    for name, count in (("rain", 1), ("snow", 1), ("average", 2)):
        assert re.search(rf"^{name}\s+{count}\s+[\d.]+\s+[\d.]+", result.stdout, re.M), result.stdout
