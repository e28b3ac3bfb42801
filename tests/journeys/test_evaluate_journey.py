"""Journey: the course task's validation score from the command line.

The course data is flat: ``train/degraded/rain-6.png`` pairs with ``train/clean/rain_clean-6.png``.
A student holds a few pairs out for validation, restores them with ``allinone-ir restore``,
and asks ``allinone-ir evaluate`` for the PSNR per degradation against the whole
``train/clean`` folder, with ``--name-map`` as in the training config. Then they score the
degraded inputs through the network in one go with ``--input``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone_ir import create_model, restore
from allinone_ir.hub import from_pretrained, save_pretrained
from allinone_ir.io import read_image, write_image
from allinone_ir.metrics import PROMPTIR_PROTOCOL

from .conftest import assert_no_traceback

pytest.importorskip("PIL")
pytest.importorskip("safetensors")

NAME_MAP = ("--name-map", r"^(\w+)-(\d+)", r"\1_clean-\2")  # as in the shipped course_rain_snow.toml


@pytest.fixture
def course(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    degraded, clean, val = tmp_path / "hw4/train/degraded", tmp_path / "hw4/train/clean", tmp_path / "val"
    for deg, noise in (("rain", 0.03), ("snow", 0.12)):
        for i in range(1, 5):
            x = torch.from_numpy(rng.random((3, 24, 24), dtype=np.float32))
            write_image(clean / f"{deg}_clean-{i}.png", x)
            write_image(degraded / f"{deg}-{i}.png", (x + noise * torch.randn_like(x)).clamp(0, 1))
    for name in ("rain-3.png", "rain-4.png", "snow-4.png"):  # held out for validation
        val.mkdir(exist_ok=True)
        shutil.copy(degraded / name, val / name)
    torch.manual_seed(0)
    net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_pretrained(net, tmp_path / "model")
    return {"clean": clean, "val": val, "model": tmp_path / "model"}


def _table(stdout: str) -> dict[str, tuple[int, float, float]]:
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)(?:\s|$)", line.strip())  # --input adds columns
        if m:
            rows[m[1]] = (int(m[2]), float(m[3]), float(m[4]))
    return rows


def _expected(pairs: dict[str, list[tuple[torch.Tensor, Path]]]) -> dict[str, float]:
    psnr = {}
    for deg, items in pairs.items():
        psnr[deg] = float(np.mean([PROMPTIR_PROTOCOL.compute(x, read_image(t))["psnr"] for x, t in items]))
    psnr["average"] = float(np.mean(list(psnr.values())))
    return psnr


def test_validation_psnr_of_the_course_task(tmp_path: Path, run_cli, course) -> None:
    restored = run_cli("restore", "val", "--checkpoint", "model", "--out", "pred", "--quiet")
    assert restored.returncode == 0, restored.output

    scored = run_cli(
        "evaluate", "--pred", "pred", "--target", "hw4/train/clean", *NAME_MAP, "--json", "val.json"
    )

    assert_no_traceback(scored)
    assert scored.returncode == 0, scored.output
    assert (
        "scored 3 image(s) of pred against hw4/train/clean (degradation from: file-name prefix)"
        in scored.stdout
    )
    assert "5 target image(s) have no prediction" in scored.stdout
    table = _table(scored.stdout)
    assert sorted(table) == ["average", "rain", "snow"]
    assert (table["rain"][0], table["snow"][0], table["average"][0]) == (2, 1, 3)
    clean = course["clean"]
    want = _expected({
        "rain": [(read_image(tmp_path / "pred" / f"rain-{i}.png"), clean / f"rain_clean-{i}.png") for i in (3, 4)],
        "snow": [(read_image(tmp_path / "pred" / "snow-4.png"), clean / "snow_clean-4.png")],
    })  # fmt: skip
    for deg in ("rain", "snow", "average"):
        assert table[deg][1] == pytest.approx(want[deg], abs=6e-4), deg  # printed with 3 decimals
    report = json.loads((tmp_path / "val.json").read_text())
    assert report["results"]["snow"]["psnr"] == pytest.approx(want["snow"], abs=1e-9)

    # restore and score in one go: the same pairs, the network's float output
    direct = run_cli(
        "evaluate", "--input", "val", "--target", "hw4/train/clean", *NAME_MAP, "--checkpoint", "model"
    )
    assert direct.returncode == 0, direct.output
    net = from_pretrained(course["model"])
    val = course["val"]
    want = _expected({
        "rain": [(restore(net, read_image(val / f"rain-{i}.png")), clean / f"rain_clean-{i}.png") for i in (3, 4)],
        "snow": [(restore(net, read_image(val / "snow-4.png")), clean / "snow_clean-4.png")],
    })  # fmt: skip
    table = _table(direct.stdout)
    for deg in ("rain", "snow", "average"):
        assert table[deg][1] == pytest.approx(want[deg], abs=2e-3), deg


def test_forgotten_name_map_says_what_to_do(tmp_path: Path, run_cli, course) -> None:
    result = run_cli("evaluate", "--pred", "val", "--target", "hw4/train/clean")

    assert_no_traceback(result)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: 3 of 3 image(s) in val have no target (pass --name-map REGEX REPLACEMENT")
    assert "val/rain-3.png -> hw4/train/clean/rain-3.png" in line
    assert result.stdout == ""
