"""Journey: the quality study of issue 13 (``benchmarks/study.py``) run as a user runs it, in its smoke form."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "study.py"

pytestmark = pytest.mark.slow  # trains: run by CI and `python -m pytest`, not by `-m "not slow"`

pytest.importorskip("PIL")


def _load_study() -> Any:
    spec = importlib.util.spec_from_file_location("study_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # One thread: the smoke workloads are tiny, and several threads per process only oversubscribe the cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::UserWarning"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "out"
    # run from elsewhere (no reliance on the cwd), two runs at a time in worker processes
    proc = _run(["--smoke", "--out", str(out), "--jobs", "2", "--threads", "1"], cwd=out.parent)
    assert proc.returncode == 0, f"study.py --smoke failed:\n{proc.stdout}\n{proc.stderr}"
    assert "done in" in proc.stdout, proc.stdout
    assert "2 runs at a time" in proc.stdout and "(11/11 done)" in proc.stdout, proc.stdout
    return out


def test_a_run_in_a_worker_equals_the_same_run_in_process(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "sequential"
    args = ["--smoke", "--out", str(out), "--jobs", "1", "--threads", "1", "--only", "models",
            "--models", "nafnet,pip_restormer"]  # fmt: skip
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "at a time" not in proc.stdout
    for model in ("nafnet", "pip_restormer"):
        seq = json.loads((out / "runs" / "models" / model / "seed0" / "result.json").read_text())
        par = json.loads((smoke / "runs" / "models" / model / "seed0" / "result.json").read_text())
        assert seq["metrics"] == par["metrics"], model  # same seeds, same thread count: same numbers
        assert seq["curve"]["train"] == par["curve"]["train"], model


def test_smoke_writes_every_file(smoke: Path) -> None:
    for name in ("results.json", "study.md", "grid_models.png", "grid_losses.png"):
        assert (smoke / name).is_file(), name
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("fig_models.png", "fig_curves_models.png", "fig_pip_control.png", "fig_angles.png",
                     "fig_losses.png", "fig_curves_losses.png", "fig_tta.png"):  # fmt: skip
            assert (smoke / name).is_file(), name


def test_smoke_results_are_complete_and_finite(smoke: Path) -> None:
    study = _load_study()
    res = json.loads((smoke / "results.json").read_text())
    seeds = res["settings"]["seeds"]
    runs = {
        (r["spec"]["part"], r["spec"]["model"], r["spec"]["variant"], r["spec"]["seed"]): r
        for r in res["runs"]
    }
    for model in study.MODEL_LABELS:
        for seed in seeds:
            r = runs[("models", model, "", seed)]
            assert r["params"] > 0 and r["train_seconds"] > 0
            for task in (*study.THREE_TASKS, "average"):
                assert math.isfinite(r["metrics"][task]["psnr"]), (model, task)
                assert 0 < r["metrics"][task]["ssim"] <= 1, (model, task)
    for seed in seeds:
        pip = runs[("models", "pip_restormer", "", seed)]
        assert set(pip["control"]) == {"label", "blind", "wrong"}
        assert 0 <= pip["classifier"]["all"] <= 1
        angles = pip["angles"]["final"]["level1"]
        assert set(angles) == {"noise-rain", "noise-haze", "rain-haze"}
        assert all(0 <= a <= 180 for a in angles.values())
        off = runs[("pip_control", "pip_restormer", "ddl0", seed)]
        assert off["spec"]["aux_weights"] == {"ddl": 0.0}
        for loss in study.STUDY_LOSSES:
            r = runs[("losses", res["settings"]["loss_model"], loss, seed)]
            assert all(math.isfinite(r["metrics"][t]["psnr"]) for t in (*study.WEATHER_TASKS, "average"))
            tta = res["tta"][r["run_id"]]
            assert all(math.isfinite(tta[m]["average"]["psnr"]) for m in ("False", "flip", "x8"))
            # one transform at a time: the identity is the plain restoration, the others differ from it
            assert list(tta["transforms"]) == list(study.X8_TRANSFORM_NAMES)
            assert tta["transforms"]["identity"] == tta["False"]
            assert tta["transforms"]["rot90"] != tta["False"]
    # every claim of the issue is measured, with a verdict
    assert len(res["claims"]) == 14
    assert all(c["diffs"] and c["verdict"] != "not measured" for c in res["claims"])
    # the split: no test photograph is trained on
    assert res["photos"]["test"] and not set(res["photos"]["test"]) & set(res["photos"]["train"])


def test_smoke_tables_name_every_model_task_and_loss(smoke: Path) -> None:
    study = _load_study()
    md = (smoke / "study.md").read_text()
    for label in study.MODEL_LABELS.values():
        assert f"| {label} |" in md, label
    for task in (*study.THREE_TASKS, *study.WEATHER_TASKS, "average"):
        assert f" {task} |" in md, task
    for label in study.LOSS_LABELS.values():
        assert f"| {label} |" in md, label
    for row in ("right label, ddl on", "blind (classifier), ddl off", "wrong label, ddl on", "x8 gain",
                "The claims at a glance", "PIP-Restormer - PromptIR", "x8 TTA - none",
                "One transform at a time", "| rot270+hflip |"):  # fmt: skip
        assert row in md, row
    assert "nan" not in md.lower()


def test_rerun_skips_finished_runs(smoke: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (smoke / "runs").rglob("result.json")}
    proc = _run(["--smoke", "--out", str(smoke), "--only", "models"], cwd=smoke)
    assert proc.returncode == 0, proc.stderr
    assert "starting at step 0" not in proc.stderr  # nothing was trained again
    assert before == {p: p.stat().st_mtime_ns for p in (smoke / "runs").rglob("result.json")}


def test_rerun_with_other_settings_refuses(smoke: Path) -> None:
    proc = _run(
        ["--smoke", "--out", str(smoke), "--only", "models", "--models", "nafnet", "--steps", "3"], cwd=smoke
    )
    assert proc.returncode != 0
    assert "other settings" in proc.stderr


def test_photo_split_is_fixed() -> None:
    study = _load_study()
    inv = study.photo_inventory()
    train = {n for n, _ in inv["train"]}
    test = {n for n, _ in inv["test"]}
    assert test and train and not train & test
    assert test <= set(study.TEST_PHOTOS)
    assert "chelsea" in test  # bundled with the package: held out on every machine
    # the stereo pair never straddles the split
    assert not ({"motorcycle_left", "motorcycle_right"} & test)


def test_figures_are_drawn_from_results_json_alone(smoke: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    study = _load_study()
    names = study.figures_from_results(smoke / "results.json", tmp_path / "figs")
    expected = {"fig_models.png", "fig_curves_models.png", "fig_pip_control.png", "fig_angles.png",
                "fig_losses.png", "fig_curves_losses.png", "fig_tta.png"}  # fmt: skip
    assert set(names) == expected  # the grids need the weights: not drawn from the results
    for name in expected:  # the same figures as the study run itself drew
        assert (tmp_path / "figs" / name).stat().st_size > 5000, name
