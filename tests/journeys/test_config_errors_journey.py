"""Journey: a mistyped value in a training config is one ``error:`` line naming the key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from allinone_ir.io import write_image

from .conftest import assert_no_traceback

pytest.importorskip("yaml")

CONFIG = """\
model:
  name: nafnet
  args: {{width: {width}, middle_blk_num: 1, enc_blk_nums: [1], dec_blk_nums: [1]}}
data:
  train: {{type: synthetic, clean_dir: photos, tasks: [rain], patch_size: 16}}
trainer:
  output_dir: run
  max_steps: 1
  batch_size: 1
  {trainer}
"""


@pytest.mark.parametrize(
    ("width", "trainer", "error"),
    [
        ("8", "lr: .nan", "error: trainer.lr: expected a finite positive number, got nan"),
        ("8", "lr: .inf", "error: trainer.lr: expected a finite positive number, got inf"),
        ("8", "device: banana", "error: trainer.device: expected 'auto' or a device such as 'cpu', 'cuda', "
                                "'cuda:1' or 'mps', got 'banana'"),
        ("8", "betas: 0.9", "error: trainer.betas: expected two numbers in [0, 1), got 0.9"),
        ('"eight"', "seed: 0", "error: model.args.width: expected an integer, got 'eight'"),
    ],
)  # fmt: skip
def test_a_bad_config_value_is_one_line_naming_the_key(
    run_cli, tmp_path: Path, width: str, trainer: str, error: str
) -> None:
    write_image(tmp_path / "photos" / "a.png", torch.rand(3, 24, 24))
    (tmp_path / "c.yaml").write_text(CONFIG.format(width=width, trainer=trainer))
    result = run_cli("train", "--config", "c.yaml")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == error + "\n"
    assert not (tmp_path / "run").exists()
