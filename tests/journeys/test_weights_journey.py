"""Journey: restore a folder with the official PromptIR weights by name, through a mirror, then offline.

The user runs ``allinone-ir weights``, then ``allinone-ir restore --weights promptir.three_task
photos/ --out restored/`` with ``ALLINONE_IR_MIRROR`` pointing at a loopback server that holds a file
in the official format (PromptIR's Lightning ``.ckpt``: ``state_dict`` with ``net.`` keys). A second
run works with the server gone (the cache). On a machine without the mirror, the error says where
the file is and how to import it; ``allinone-ir weights import`` then makes the journey work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from allinone_ir import create_model
from tests.journeys.conftest import assert_no_traceback, journey_env
from tests.test_weights import _Server

NAME = "promptir.three_task"


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PromptIR file in the official Lightning layout (random weights: the journey checks the plumbing)."""
    torch.manual_seed(0)
    net = create_model("promptir")
    path = tmp_path_factory.mktemp("official") / "model.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save(
        {"epoch": 119, "global_step": 1, "state_dict": state, "pytorch-lightning_version": "2.0.0"}, path
    )
    return path


def _photos(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (24, 20), (200, 120, 40)).save(folder / "a.png")
    Image.new("RGB", (17, 30), (10, 90, 160)).save(folder / "b.png")
    return folder


@pytest.mark.slow
def test_restore_with_weights_from_a_mirror_then_offline(run_cli, tmp_path, official_ckpt):
    server = _Server()
    server.files[f"/{NAME}/model.ckpt"] = official_ckpt.read_bytes()
    cache = tmp_path / "cache"
    env = journey_env(ALLINONE_IR_CACHE=str(cache), ALLINONE_IR_MIRROR=server.base)
    try:
        listing = run_cli("weights", env=env)
        assert listing.returncode == 0, listing.output
        assert NAME in listing.stdout and f"cache: {cache}" in listing.stdout
        photos = _photos(tmp_path / "photos")
        first = run_cli("restore", "--weights", NAME, photos, "--out", tmp_path / "restored", env=env)
        assert first.returncode == 0, first.output
        assert_no_traceback(first)
    finally:
        server.stop()
    assert Image.open(tmp_path / "restored" / "a.png").size == (24, 20)
    assert Image.open(tmp_path / "restored" / "b.png").size == (17, 30)
    assert sorted(p.name for p in (cache / NAME).iterdir()) == [
        "config.json",
        "model.ckpt",
        "model.safetensors",
    ]
    again = run_cli("restore", "--weights", NAME, photos, "--out", tmp_path / "again", env=env)
    assert again.returncode == 0, again.output  # the server is gone: the cache answers
    assert (tmp_path / "again" / "a.png").is_file()


@pytest.mark.slow
def test_offline_message_then_import(run_cli, tmp_path, official_ckpt):
    cache = tmp_path / "cache"
    env = journey_env(ALLINONE_IR_CACHE=str(cache), ALLINONE_IR_MIRROR="http://127.0.0.1:9")
    photos = _photos(tmp_path / "photos")
    failed = run_cli("restore", "--weights", NAME, photos, "--out", tmp_path / "restored", env=env)
    assert failed.returncode == 2
    assert_no_traceback(failed)
    line = failed.stderr.strip()
    assert line.startswith(
        "error: cannot download promptir.three_task: http://127.0.0.1:9/promptir.three_task/model.ckpt"
    )
    assert (
        "1j-b5Od70pGF7oaCqKAfUzmf-N-xEAjYl" in line
        and "allinone-ir weights import promptir.three_task FILE" in line
    )
    assert str(cache / NAME / "model.ckpt") in line
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())

    imported = run_cli("weights", "import", NAME, official_ckpt, env=env)
    assert imported.returncode == 0, imported.output
    assert "verified and converted" in imported.stdout
    done = run_cli("restore", "--weights", NAME, photos, "--out", tmp_path / "restored", env=env)
    assert done.returncode == 0, done.output
    assert (tmp_path / "restored" / "b.png").is_file()
