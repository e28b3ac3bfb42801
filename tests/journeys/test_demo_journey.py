"""Journey: a new user runs ``allinone-ir demo`` from the README, reads its summary and uses the model.

Through the console script in a subprocess: the smoke demo writes every file it announces, says
whether the network was told the degradation, prints PSNR, SSIM and mean colour per degradation
exactly as ``metrics.json`` records them, never claims success it did not have, and the
``allinone-ir restore`` command it suggests works; a second run into the same folder is refused
in one line; with only the core install, the demo stops at once naming the extra to install.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from allinone_ir.io import read_image

from .conftest import assert_no_traceback, journey_env

DEGRADATIONS = ["noise", "rain", "haze", "snow"]
_LINE = re.compile(
    r"^  (?P<d>\w+) +PSNR +(?P<pin>[\d.]+) -> +(?P<pout>[\d.]+) dB \((?P<gain>[+-][\d.]+)\) +"
    r"SSIM (?P<sin>[\d.]+) -> (?P<sout>[\d.]+) \((?P<dssim>[+-][\d.]+)\) +mean colour off by (?P<col>[\d.]+)$",
    re.MULTILINE,
)


def test_demo_smoke_journey(run_cli, tmp_path: Path) -> None:
    result = run_cli("demo", "--smoke", "--out", "demo_out")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    out = tmp_path / "demo_out"
    for name in ("grid.png", "metrics.md", "metrics.json", "curves.png", "model/model.safetensors",
                 "model/config.json", *(f"inputs/chelsea_{d}.png" for d in DEGRADATIONS)):  # fmt: skip
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert (data["steps"], data["test_image"], data["model"]) == (2, "chelsea", "promptir")
    text = result.stdout
    assert text.startswith(
        f"allinone-ir demo: promptir ({data['parameters']:,} parameters; blind: not told the degradation); "
        "2 updates of 4 crops of 32 px from 3 photos; testing on 'chelsea', which training never sees\n"
    )

    # the per-degradation lines say what metrics.json says, to the printed precision
    rows = {m["d"]: m for m in _LINE.finditer(text)}
    assert list(rows) == DEGRADATIONS
    for d, m in rows.items():
        rec = data["metrics"][d]
        for key, printed, tol in (("psnr_in", "pin", 0.006), ("psnr_out", "pout", 0.006), ("gain_db", "gain", 0.006),
                                  ("ssim_in", "sin", 6e-4), ("ssim_out", "sout", 6e-4),
                                  ("ssim_change", "dssim", 6e-4), ("colour_error", "col", 0.06)):  # fmt: skip
            assert abs(float(m[printed]) - rec[key]) <= tol, (d, key)

    # honesty: a note for every degradation that did not improve, no blanket claim unless all did
    good = [d for d, r in data["metrics"].items()
            if r["gain_db"] >= 1.0 and r["ssim_change"] >= 0 and r["colour_error"] <= 6.0]  # fmt: skip
    for d in DEGRADATIONS:
        assert (f"  note: {d}: " in text) == (d not in good)
    assert ("every degradation restored" in text) == (len(good) == 4)
    assert (f"restored {len(good)} of 4 " in text) == (len(good) < 4)
    assert (
        "restored 4 of 4" not in text and "every degradation restored" not in text
    )  # 2 updates restore nothing

    grid = read_image(out / "grid.png")  # labelled, larger than its 4 x 3 images of 64 x 96
    assert grid.shape[1] > 4 * 64 and grid.shape[2] > 3 * 96

    # the command the summary suggests works as printed
    suggested = re.search(r"try: allinone-ir (restore .+)$", text, re.MULTILINE)
    assert suggested is not None
    restored = run_cli(*shlex.split(suggested.group(1)))
    assert_no_traceback(restored)
    assert restored.returncode == 0, restored.output
    for d in DEGRADATIONS:
        assert read_image(out / "restored" / f"chelsea_{d}.png").shape == (3, 64, 96)


def test_demo_refuses_a_used_folder_in_one_line(run_cli, tmp_path: Path) -> None:
    (tmp_path / "demo_out").mkdir()
    (tmp_path / "demo_out" / "notes.txt").write_text("mine")
    result = run_cli("demo", "--smoke", "--out", "demo_out")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: output folder demo_out is not empty; choose another --out or pass --overwrite "
        "(which replaces only the demo's own files)"
    ]
    assert [p.name for p in (tmp_path / "demo_out").iterdir()] == ["notes.txt"]


def test_demo_with_the_core_install_names_the_extra(run_cli, tmp_path: Path) -> None:
    # the optional packages of the train extra, made unimportable as on a core-only install
    shim = tmp_path / "core_only"
    for package in ("PIL", "matplotlib", "tqdm", "safetensors"):
        (shim / package).mkdir(parents=True)
        (shim / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name={package!r})\n"
        )
    result = run_cli("demo", "--out", "demo_out", env=journey_env(PYTHONPATH=str(shim)))
    assert_no_traceback(result)
    assert result.returncode == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: allinone-ir demo (reading the bundled photos, drawing grid.png) needs Pillow: "
        "pip install 'allinone-ir[train]'"
    ]
    assert not (tmp_path / "demo_out").exists()  # stopped before training, nothing written
