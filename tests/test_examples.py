"""Every script in the repository's examples/ (not in the wheel) runs in its reduced form (``--smoke``) and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What each example must print (a line that only appears when its last step worked).
EXPECTED = {
    "quickstart.py": "reloaded model gives the same output: True",
    "train_paired_folders.py": "pred.npz (",
    "degradation_control.py": "rain weight : PSNR",
    "tiled_restoration.py": "tiled + TTA x8:",
    "ddp_training.py": "rank 0 saved",
    "pip_custom_unet.py": "estimated degradation weights:",
}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # One thread: the smoke workloads are tiny, and several threads per process only oversubscribe the cores.
    # TMPDIR: the examples' default output folders (tempfile.mkdtemp) go inside the test's folder, not /tmp.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::UserWarning", "TMPDIR": str(cwd)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_example_has_an_expectation() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED), "add the new example to EXPECTED"
    assert set(EXPECTED) > TRAINING


# The examples that train (20-70 s each on a busy 2-core CPU) are slow tests; the others stay in `-m "not slow"`.
TRAINING = {"train_paired_folders.py", "degradation_control.py", "pip_custom_unet.py", "ddp_training.py"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in TRAINING else p for p in EXAMPLES],
    ids=lambda p: p.name,
)
def test_example_smoke(script: Path, tmp_path: Path) -> None:
    proc = _run([str(script), "--smoke"], cwd=tmp_path)  # run from elsewhere: no reliance on the cwd
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert EXPECTED[script.name] in proc.stdout, proc.stdout
    assert "nan" not in proc.stdout.lower().replace("nafnet", "")
