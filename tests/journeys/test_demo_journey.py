"""Journey: a new user runs ``allinone-ir demo`` from the README, reads its summary and uses the model.

Through the console script in a subprocess: the smoke demo writes every file it announces, its
summary states PSNR, SSIM and mean colour per degradation exactly as ``metrics.json`` records them,
never claims success it did not have, and the ``allinone-ir restore`` command it suggests works;
a second run into the same folder is refused in one line; with only the core install, the demo
stops at once with one line naming the extra to install.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from allinone_ir.demo import COLOUR_TOLERANCE, DEMO_DEGRADATIONS, SMALL_GAIN_DB
from allinone_ir.io import read_image

from .conftest import assert_no_traceback, journey_env

_LINE = re.compile(
    r"^  (?P<d>\w+) +PSNR +(?P<pin>[\d.]+) -> +(?P<pout>[\d.]+) dB \((?P<gain>[+-][\d.]+)\) +"
    r"SSIM (?P<sin>[\d.]+) -> (?P<sout>[\d.]+) \((?P<dssim>[+-][\d.]+)\)$",
    re.MULTILINE,
)
_COLOUR = re.compile(
    r"^  (?P<d>\w+) +restored +(?P<r>\d+/\d+/\d+) +clean +(?P<c>\d+/\d+/\d+) +\(degraded \d+/\d+/\d+\) +"
    r"largest difference +(?P<err>[\d.]+): (?P<verdict>kept|COLOUR CAST)$",
    re.MULTILINE,
)


def test_demo_smoke_journey(run_cli, tmp_path: Path) -> None:
    result = run_cli("demo", "--smoke", "--out", "demo_out")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    out = tmp_path / "demo_out"
    for name in ("grid.png", "metrics.md", "metrics.json", "curves.png", "model/model.safetensors",
                 "model/config.json", *(f"inputs/chelsea_{d}.png" for d in DEMO_DEGRADATIONS)):  # fmt: skip
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert data["steps"] == 2 and data["test_image"] == "chelsea" and data["model"] == "promptir"
    text = result.stdout
    assert text.startswith(f"allinone-ir demo: promptir ({data['parameters']:,} parameters) on cpu")
    assert "-> 2 updates of 4 crops of 32 px" in text

    # the per-degradation lines say what metrics.json says (4 decimals), to the printed precision
    rows = {m["d"]: m for m in _LINE.finditer(text)}
    assert list(rows) == list(DEMO_DEGRADATIONS)
    for d, m in rows.items():
        rec = data["metrics"][d]
        assert (
            abs(float(m["pin"]) - rec["psnr_in"]) <= 0.006
            and abs(float(m["pout"]) - rec["psnr_out"]) <= 0.006
        )
        assert abs(float(m["gain"]) - rec["gain_db"]) <= 0.006
        assert abs(float(m["dssim"]) - rec["ssim_change"]) <= 0.0006
        assert (
            abs(float(m["sin"]) - rec["ssim_in"]) <= 0.0006
            and abs(float(m["sout"]) - rec["ssim_out"]) <= 0.0006
        )

    # the mean colour of every restored image against the clean one, with the verdict the numbers give
    colours = {m["d"]: m for m in _COLOUR.finditer(text)}
    assert list(colours) == list(DEMO_DEGRADATIONS)
    for d, m in colours.items():
        rgb = data["mean_rgb"][d]
        for printed, recorded in ((m["r"], rgb["restored"]), (m["c"], rgb["clean"])):
            assert all(abs(int(a) - b) <= 0.51 for a, b in zip(printed.split("/"), recorded, strict=True))
        err = max(abs(a - b) for a, b in zip(rgb["restored"], rgb["clean"]))
        assert abs(float(m["err"]) - err) <= 0.06
        assert m["verdict"] == ("kept" if err <= COLOUR_TOLERANCE else "COLOUR CAST")

    # honesty: a note for every degradation that did not improve, no blanket claim unless all did
    recs = data["metrics"]
    better = [d for d, r in recs.items() if r["gain_db"] >= SMALL_GAIN_DB and r["ssim_change"] >= 0]
    kept = [d for d, r in recs.items() if r["colour_error"] <= COLOUR_TOLERANCE]
    for d in DEMO_DEGRADATIONS:
        assert (f"  note: {d}: " in text) == (d not in better or d not in kept)
    n = len(DEMO_DEGRADATIONS)
    assert ("every degradation gained" in text) == (len(better) == len(kept) == n)
    if len(better) < n or len(kept) < n:
        assert f"improved (PSNR +1 dB or more and SSIM not lower): {len(better)} of {n}" in text
        assert f"mean colour kept (within 6 levels per channel): {len(kept)} of {n}" in text

    # the grid: labelled, larger than its 4 x 3 images of 64 x 96
    grid = read_image(out / "grid.png")
    assert grid.shape[1] > 4 * 64 and grid.shape[2] > 3 * 96

    # the command the summary suggests works as printed
    suggested = re.search(r"try: allinone-ir (restore .+)$", text, re.MULTILINE)
    assert suggested is not None
    restored = run_cli(*shlex.split(suggested.group(1)))
    assert_no_traceback(restored)
    assert restored.returncode == 0, restored.output
    for d in DEMO_DEGRADATIONS:
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
