"""Journey: a user with the installed package (no clone) finds a training config, copies it, runs it.

The configs ship inside the package (``allinone_ir/configs``): ``allinone-ir config list`` names them,
``allinone-ir config show NAME > my.toml`` gives an editable copy, ``allinone-ir train --config NAME``
uses one as is, with relative paths resolved against the working directory; a file that exists wins
over a name, and an unknown name lists the shipped ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import tomllib

from .conftest import assert_no_traceback

SHIPPED = [
    "adair_three_task",
    "course_rain_snow",
    "mirage_three_task",
    "moce_ir_three_task",
    "pip_five_task",
    "promptir_three_task",
]
ROOT = Path(__file__).resolve().parents[2]


def test_the_configs_are_package_data() -> None:
    folder = resources.files("allinone_ir") / "configs"
    assert sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir()) == SHIPPED
    # the wheel takes the whole package folder (hatchling: every file under it, not only .py)
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel == {"packages": ["src/allinone_ir"]}, (
        "the wheel target changed: check that configs/ is still in it"
    )
    assert not (ROOT / "configs").exists(), "configs/ is back at the top level, outside the wheel"


def test_list_show_and_train_by_name(run_cli, tmp_path: Path) -> None:
    result = run_cli("config", "list")
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    rows = result.stdout.splitlines()
    assert [r.split()[0] for r in rows] == SHIPPED
    course = rows[SHIPPED.index("course_rain_snow")].split(maxsplit=2)
    assert course[1] == "TOML" and course[2].startswith("The course task")
    assert rows[SHIPPED.index("pip_five_task")].split(maxsplit=2)[1:] == [
        "YAML", "PIP on Restormer, five tasks (noise, rain, haze, blur, low light), as the official PIP training:"
    ]  # fmt: skip
    assert "allinone-ir config show NAME > my.yaml" in result.stderr

    # `allinone-ir config show course_rain_snow > my.toml`: the shipped file, byte for byte, valid TOML
    result = run_cli("config", "show", "course_rain_snow")
    assert result.returncode == 0 and result.stderr == "", result.output
    shipped = (resources.files("allinone_ir") / "configs" / "course_rain_snow.toml").read_text()
    assert result.stdout == shipped
    cfg = tomllib.loads(result.stdout)
    assert cfg["model"]["name"] == "promptir" and cfg["data"]["train"]["degraded_dir"] == "train/degraded"
    assert run_cli("config", "show", "course_rain_snow.toml").stdout == shipped  # the file name works too

    # used by name from an empty folder: it says where the data paths are looked for, then that they are not there
    result = run_cli("train", "--config", "course_rain_snow")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"config course_rain_snow: the shipped course_rain_snow.toml; relative paths in it are resolved against "
        f"the working directory {tmp_path}",
        f"error: data.train.degraded_dir: folder not found: {tmp_path / 'train' / 'degraded'} (relative paths are "
        f"resolved against the working directory {tmp_path}, not the config file's folder)",
    ]


def test_unknown_names_list_the_shipped_configs(run_cli, tmp_path: Path) -> None:
    listing = ", ".join(SHIPPED)
    result = run_cli("train", "--config", "promptir_3task")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: config file not found: promptir_3task; give a config file or a shipped config's name "
        f"({listing}; allinone-ir config list)\n"
    )
    result = run_cli("train", "--config", "sub/missing.toml")
    assert result.returncode == 2 and "config file not found: sub/missing.toml;" in result.stderr
    result = run_cli("config", "show", "course")
    assert_no_traceback(result)
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr
        == f"error: no shipped config named 'course'; shipped: {listing} (allinone-ir config list)\n"
    )
    result = run_cli("config")
    assert result.returncode == 2 and "list" in result.stderr and "show" in result.stderr


def test_an_existing_file_wins_over_a_shipped_name(run_cli, tmp_path: Path) -> None:
    (tmp_path / "course_rain_snow.toml").write_text("[model\n")  # the user's own file, broken
    result = run_cli("train", "--config", "course_rain_snow.toml")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.startswith("error: course_rain_snow.toml: invalid TOML"), result.stderr
    assert "shipped" not in result.stderr
