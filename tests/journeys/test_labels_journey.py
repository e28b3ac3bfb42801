"""Journey: PIP trained from a config learns the prompts its data names, and restores with them.

A PIP network is told the degradation of every training image; the dataset's labels are matched to
the network's degradations *by name*. The user switches the course config (rain and snow pairs named
``rain-N.png`` / ``snow-N.png``) to ``pip_restormer``: the network gets prompts named rain and snow,
``restore --degradation rain`` uses the prompt the rain pairs trained, and every label that cannot be
matched is refused before training, naming both vocabularies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from allinone_ir.data import synthesize
from allinone_ir.io import read_image, write_image

from .conftest import assert_no_traceback

# classifier_widths of at least 8 (oneDNN's channels-last stride-2 1x1 weight gradient; see test_pip_config_journey)
TINY_PIP = (
    "dim = 8, num_blocks = [1, 1, 1, 1], num_refinement_blocks = 1, heads = [1, 2, 2, 4], "
    "prompt_dims = [8, 8, 16], prompt_sizes = [8, 4, 4], p2f_heads = 2, classifier_widths = [8, 16]"
)


def _pairs(
    root: Path, kinds: tuple[str, ...] = ("rain", "snow"), n: int = 3, prefix: str | None = None
) -> None:
    g = torch.Generator().manual_seed(0)
    for kind in kinds:
        for i in range(1, n + 1):
            clean = torch.rand(3, 32, 32, generator=g)
            stem = f"{prefix or kind}-{kind}{i}" if prefix else f"{kind}-{i}"
            write_image(root / "train" / "clean" / f"{stem}.png", clean)
            write_image(root / "train" / "degraded" / f"{stem}.png", synthesize(clean, kind, rng=i))


def _config(root: Path, *, extra_args: str = "", data: str = "", trainer: str = "") -> Path:
    """The course config's data section with a tiny PIP and two updates."""
    text = f"""
[model]
name = "pip_restormer"
args = {{ {TINY_PIP}{extra_args} }}

[data.train]
type = "paired"
degraded_dir = "train/degraded"
clean_dir = "train/clean"
label_from = "prefix"
patch_size = 16
{data}

[trainer]
output_dir = "run"
max_steps = 2
batch_size = 2
precision = "fp32"
device = "cpu"
progress_bar = false
plot = false
{trainer}
"""
    path = root / "pip.toml"
    path.write_text(text)
    return path


@pytest.mark.slow  # trains
def test_pip_from_the_course_config_gets_prompts_named_rain_and_snow(run_cli, tmp_path: Path) -> None:
    _pairs(tmp_path)
    config = _config(tmp_path, data='classes = ["rain", "snow"]')  # as the shipped course config
    result = run_cli("train", "--config", config)
    assert_no_traceback(result)
    assert result.returncode == 0, result.output
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert ckpt["model_config"]["degradations"] == ["rain", "snow"]
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "x.png", read_image(tmp_path / "train" / "degraded" / "snow-1.png"))
    outs = {}
    for name in ("rain", "snow"):  # snow was refused when rain took PIP's noise slot and snow its rain slot
        r = run_cli("restore", "--checkpoint", tmp_path / "run" / "checkpoints" / "step_00000002.pt",
                    "--degradation", name, "--out", f"out_{name}", "in")  # fmt: skip
        assert r.returncode == 0, r.output
        outs[name] = read_image(tmp_path / f"out_{name}" / "x.png")
    assert not torch.equal(outs["rain"], outs["snow"])
    r = run_cli("restore", "--checkpoint", tmp_path / "run" / "checkpoints" / "step_00000002.pt",
                "--degradation", "haze", "--out", "out_haze", "in")  # fmt: skip
    assert r.returncode == 2 and "haze" in r.stderr and "'rain', 'snow'" in r.stderr, r.output
    assert_no_traceback(r)


@pytest.mark.slow  # trains
def test_restore_degradation_rain_uses_the_prompt_the_rain_pairs_trained(run_cli, tmp_path: Path) -> None:
    from allinone_ir import create_model, load_checkpoint

    _pairs(tmp_path, kinds=("rain",), n=4)
    # the network's names fixed by the config, rain first: the vocabulary's label of rain (1) is snow here
    config = _config(
        tmp_path, extra_args=', degradations = ["rain", "snow"]',
        trainer="weight_decay = 0.0\naux_weights = { ddl = 0.0, classifier = 0.0 }\nlr = 1e-2",
    )  # fmt: skip
    result = run_cli("train", "--config", config)
    assert result.returncode == 0, result.output
    ckpt_path = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    trained = load_checkpoint(ckpt_path).eval()
    torch.manual_seed(0)  # the config's seed: the initial weights of the run
    initial = create_model("pip_restormer", **trained.config).eval()
    before = initial.prompt1.degradation_prompts.detach()
    after = trained.prompt1.degradation_prompts.detach()
    assert trained.degradations == ("rain", "snow")
    assert not torch.equal(after[0], before[0])  # rain pairs trained the prompt named rain...
    assert torch.equal(after[1], before[1])  # ...and never the one named snow
    (tmp_path / "in").mkdir()
    x = read_image(tmp_path / "train" / "degraded" / "rain-1.png")
    write_image(tmp_path / "in" / "x.png", x)
    r = run_cli("restore", "--checkpoint", ckpt_path, "--degradation", "rain", "--out", "out", "in")
    assert r.returncode == 0, r.output
    with torch.no_grad():
        rain = trained(x[None], degradation=torch.tensor([[1.0, 0.0]]))[0].clamp(0, 1)
        snow = trained(x[None], degradation=torch.tensor([[0.0, 1.0]]))[0].clamp(0, 1)
    got = read_image(tmp_path / "out" / "x.png")
    assert (got - rain).abs().max() <= 1 / 255 + 1e-6
    assert (got - snow).abs().max() > 1 / 255


def test_a_degradation_the_network_cannot_represent_is_refused_before_training(
    run_cli, tmp_path: Path
) -> None:
    _pairs(tmp_path)
    names = '["noise", "rain", "haze", "blur", "lowlight"]'
    config = _config(tmp_path, extra_args=f", degradations = {names}", data='classes = ["rain", "snow"]')
    result = run_cli("train", "--config", config)
    assert result.returncode == 2, result.output
    assert_no_traceback(result)
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith(
        "error: data.train: PIPRestormer: the network cannot represent the degradation(s) ['snow']"
    )
    assert "['rain', 'snow']" in err and "['noise', 'rain', 'haze', 'blur', 'lowlight']" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_file_names_without_a_degradation_are_not_a_class_for_pip(run_cli, tmp_path: Path) -> None:
    _pairs(tmp_path, prefix="img")  # img-rain1.png, img-snow1.png: the prefix names no degradation
    result = run_cli("train", "--config", _config(tmp_path))
    assert result.returncode == 2, result.output
    assert_no_traceback(result)
    err = result.stderr.strip().splitlines()[-1]
    assert "data.train.label_from: PIPRestormer is told the degradation of every image" in err
    assert "prefix 'img' names no degradation" in err
    assert "label_from: subfolder" in err and "classes: [...]" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
