"""Config values are checked when the config is read: one line naming the key, for every field."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from allinone_ir.errors import ConfigError
from allinone_ir.io import write_image
from allinone_ir.training.cli import build_from_config
from allinone_ir.training.config import TrainerConfig, _describe, _matches

TINY_NAFNET = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1], "dec_blk_nums": [1]}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", math.nan, "TrainerConfig.lr: expected a finite positive number, got nan"),
        ("lr", math.inf, "TrainerConfig.lr: expected a finite positive number, got inf"),
        ("lr", 0.0, "TrainerConfig.lr: expected a finite positive number, got 0.0"),
        ("min_lr", -math.inf, "TrainerConfig.min_lr: expected a finite number >= 0, got -inf"),
        (
            "grad_clip",
            math.nan,
            "TrainerConfig.grad_clip: expected a finite positive number or null, got nan",
        ),
        ("betas", 0.9, "TrainerConfig.betas: expected two numbers in [0, 1), got 0.9"),
        ("betas", (0.9, math.nan), "TrainerConfig.betas: expected two numbers in [0, 1), got (0.9, nan)"),
        ("betas", (0.9, 1.5), "TrainerConfig.betas: expected two numbers in [0, 1), got (0.9, 1.5)"),
        ("batch_size", "eight", "TrainerConfig.batch_size: expected an integer >= 1, got 'eight'"),
        ("batch_size", True, "TrainerConfig.batch_size: expected an integer >= 1, got True"),
        ("seed", -1, "TrainerConfig.seed: expected an integer >= 0, got -1"),
        ("channels_last", "yes", "TrainerConfig.channels_last: expected true or false or null, got 'yes'"),
        ("output_dir", 3, "TrainerConfig.output_dir: expected a string, got 3"),
        ("schedule", "linear", "TrainerConfig.schedule: expected one of 'cosine', 'constant', got 'linear'"),
        ("trainable", "output", "TrainerConfig.trainable: expected a list of strings or null, got 'output'"),
        ("loss_kwargs", [1], "TrainerConfig.loss_kwargs: expected a mapping of strings to values, got [1]"),
        (
            "aux_weights",
            {"ddl": -1.0},
            "TrainerConfig.aux_weights: expected a mapping of term names to numbers",
        ),
        ("device", "banana", "TrainerConfig.device: expected 'auto' or a device such as 'cpu', 'cuda'"),
        ("device", "meta", "TrainerConfig.device: 'meta' is not a device the Trainer runs on"),
        (
            "metric_protocol",
            "psnr",
            "TrainerConfig.metric_protocol: expected 'promptir' or 'basicsr', got 'psnr'",
        ),
    ],
)
def test_every_field_is_checked_with_its_name(field: str, value: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as exc:
        TrainerConfig.from_dict({field: value})
    assert str(exc.value).startswith(message)


def test_every_field_has_a_type_the_checker_reads() -> None:
    import typing

    hints = typing.get_type_hints(TrainerConfig)
    defaults = TrainerConfig()
    for f in dataclasses.fields(TrainerConfig):  # the defaults fit, and a wrong type is refused
        assert _matches(getattr(defaults, f.name), hints[f.name]), f.name
        assert not _matches(object(), hints[f.name]), f.name


def test_unavailable_gpus_are_refused_at_reading_time() -> None:
    if torch.cuda.is_available():
        index = torch.cuda.device_count()
        with pytest.raises(ValueError, match=rf"TrainerConfig\.device: 'cuda:{index}' is not available"):
            TrainerConfig(device=f"cuda:{index}")
    else:
        with pytest.raises(
            ValueError, match=r"TrainerConfig\.device: 'cuda' is not available \(this machine has no CUDA\)"
        ):
            TrainerConfig(device="cuda")
    assert TrainerConfig(device="cpu").device == "cpu" and TrainerConfig(device="auto").device == "auto"


def test_type_descriptions() -> None:
    assert _describe(int | None) == "an integer or null"
    assert _describe(tuple[float, float]) == "a list of 2 (a finite number, a finite number)"
    assert _matches([0.9, 0.99], tuple[float, float]) and not _matches([0.9], tuple[float, float])
    assert not _matches("ab", list[str]) and _matches(("a", "b"), list[str])
    assert _matches(3, float) and not _matches(True, float) and not _matches(math.inf, float)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trainer": {"lr": math.nan}}, "trainer.lr: expected a finite positive number, got nan"),
        ({"trainer": {"lr": math.inf}}, "trainer.lr: expected a finite positive number, got inf"),
        ({"trainer": {"device": "banana"}}, "trainer.device: expected 'auto' or a device such as"),
        ({"trainer": {"betas": 0.9}}, "trainer.betas: expected two numbers in [0, 1), got 0.9"),
        ({"model": {"name": "nafnet", "args": dict(TINY_NAFNET, width="eight")}},
         "model.args.width: expected an integer, got 'eight'"),
        ({"model": {"name": "nafnet", "args": dict(TINY_NAFNET, enc_blk_nums=3)}},
         "model.args.enc_blk_nums: expected a list of integers, got 3"),
        ({"model": {"name": "nafnet", "args": dict(TINY_NAFNET, drop_out_rate=math.nan)}},
         "model.args.drop_out_rate: expected a finite number, got nan"),
        ({"model": {"name": "nafnet", "args": dict(TINY_NAFNET, widht=8)}},
         "model.args.widht: not an argument of NAFNet (nafnet); known: in_channels, width,"),
    ],
)  # fmt: skip
def test_config_values_are_one_line_naming_the_key(
    tmp_path: Path, patch: dict[str, Any], message: str
) -> None:
    write_image(tmp_path / "photos" / "a.png", torch.rand(3, 24, 24))
    cfg: dict[str, Any] = {
        "model": {"name": "nafnet", "args": TINY_NAFNET},
        "data": {"train": {"type": "synthetic", "clean_dir": "photos", "tasks": ["rain"], "patch_size": 16}},
        "trainer": {"max_steps": 1, "batch_size": 1, "output_dir": "run"},
    }
    for key, value in patch.items():
        cfg[key] = dict(cfg[key], **value)
    with pytest.raises(ConfigError) as exc:
        build_from_config(cfg, tmp_path)
    text = str(exc.value)
    assert text.startswith(message) and "\n" not in text, text
