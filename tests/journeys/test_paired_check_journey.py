"""Journey: every problem of a user's paired folders in one run, as the paired-folders tutorial promises.

A missing clean partner, a size mismatch and an unreadable file used to take one run each: the missing
partner stopped the run before the pairs were read. ``allinone-ir train`` now lists them all in one error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from allinone_ir.io import write_image

from .conftest import assert_no_traceback

CONFIG = """\
[model]
name = "nafnet"
args = { width = 8, middle_blk_num = 1, enc_blk_nums = [1], dec_blk_nums = [1] }

[data.train]
type = "paired"
degraded_dir = "my_data/degraded"
clean_dir = "my_data/clean"
label_from = "prefix"
patch_size = 16

[trainer]
output_dir = "run"
max_steps = 1
batch_size = 1
"""


def test_missing_partner_size_mismatch_and_unreadable_file_in_one_run(run_cli, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = tmp_path / "my_data"
    for name in ("rain-001.png", "rain-002.png", "snow-001.png", "snow-002.png"):
        write_image(data / "degraded" / name, torch.rand(3, 24, 24, generator=g))
        write_image(data / "clean" / name, torch.rand(3, 24, 24, generator=g))
    (data / "clean" / "rain-002.png").unlink()  # a missing partner
    write_image(
        data / "clean" / "snow-001.png", torch.rand(3, 24, 20, generator=g), overwrite=True
    )  # size mismatch
    (data / "degraded" / "snow-002.png").write_bytes(b"\x89PNG truncated")  # an unreadable file
    (tmp_path / "c.toml").write_text(CONFIG)
    result = run_cli("train", "--config", "c.toml")
    assert_no_traceback(result)
    assert result.returncode == 2
    line = result.stderr
    assert line.startswith("error: data.train: 3 problem(s) in the dataset: (1) no clean partner: ")
    assert line.count("\n") == 1 and "rain-002.png" in line
    assert "snow-001.png is 24x24 but its clean partner" in line and "snow-001.png is 20x24" in line
    assert "; (3) cannot read" in line and "snow-002.png" in line
    assert not (tmp_path / "run").exists()
