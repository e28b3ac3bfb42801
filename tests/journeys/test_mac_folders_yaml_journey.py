"""Journey: paired folders copied from a Mac (``._x.png`` and ``.DS_Store`` beside the images), a YAML
config written by hand (``lr: 2e-3``, a wrong key, then a key given twice), ``train``, then the
held-out folder restored and scored with ``evaluate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import assert_no_traceback

CONFIG = """\
model:
  name: nafnet
  args: {width: 8, middle_blk_num: 1, enc_blk_nums: [1, 1], dec_blk_nums: [1, 1]}
data:
  train: {type: paired, degraded_dir: train/noisy, CLEAN: train/clean, patch_size: 32}
  val: {type: paired, degraded_dir: test/noisy, clean_dir: test/clean}
trainer:
  output_dir: runs/a
  max_steps: 150
  batch_size: 4
  lr: 2e-3
  progress_bar: false
"""


def _folders(root: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            clean = np.stack([(xx * 5 + i * 20) % 256, (yy * 5) % 256, (xx + yy) * 2 % 256], -1).astype(
                np.uint8
            )
            noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
            for sub, pixels in (("noisy", noisy), ("clean", clean)):
                folder = root / split / sub
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"img{i}.png")
                (folder / f"._img{i}.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # not an image
                (folder / ".DS_Store").write_bytes(b"Bud1")


def test_mac_folders_and_a_hand_written_yaml(run_cli, tmp_path: Path) -> None:
    _folders(tmp_path)
    config = tmp_path / "my.yaml"
    config.write_text(CONFIG)
    wrong = run_cli("train", "--config", "my.yaml")
    assert_no_traceback(wrong)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert "error: data.train.CLEAN: unknown key for type 'paired'; known: " in wrong.stderr
    assert "clean_dir" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1

    config.write_text(CONFIG.replace("CLEAN:", "clean_dir:") + "trainer:\n  lr: 1.0e-3\n")  # a second section
    twice = run_cli("train", "--config", "my.yaml")
    assert twice.returncode == 2 and "duplicate key 'trainer'" in twice.stderr
    assert not (tmp_path / "runs").exists()

    config.write_text(CONFIG.replace("CLEAN:", "clean_dir:"))
    trained = run_cli("train", "--config", "my.yaml")
    assert_no_traceback(trained)
    assert trained.returncode == 0, trained.output
    assert "done: 150 steps" in trained.stdout and "._img" not in trained.output
    saved = json.loads((tmp_path / "runs/a/config.json").read_text())
    assert saved["trainer"]["lr"] == 2e-3  # a number, not the text '2e-3'

    best = "runs/a/checkpoints/best.pt"
    restored = run_cli("restore", "test/noisy", "--checkpoint", best, "--out", "out", "--quiet")
    assert_no_traceback(restored)
    assert restored.returncode == 0, restored.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]

    scored = run_cli("evaluate", "--pred", "out", "--target", "test/clean", "--degraded", "test/noisy")
    assert scored.returncode == 0, scored.output
    row = next(line for line in scored.stdout.splitlines() if line.startswith("all "))
    images, psnr, _, input_psnr, gain = row.split()[1:6]
    assert images == "2" and abs(float(gain) - (float(psnr) - float(input_psnr))) < 2e-3
    assert float(gain) > 0.5  # the noise is reduced
