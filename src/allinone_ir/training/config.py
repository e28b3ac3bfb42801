"""The trainer's typed configuration, checked field by field against its annotations."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._runtime import device_problem
from ..errors import ConfigError, UsageTypeError

__all__ = ["TrainerConfig"]

_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_PLURALS = {
    int: "integers",
    float: "finite numbers",
    str: "strings",
    bool: "true/false values",
    Any: "values",
}


def _describe(hint: Any) -> str:
    """How a message says what a type hint expects: ``an integer``, ``a list of integers``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type):
        names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
        return "null" if hint is type(None) else names.get(hint, hint.__name__)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin in _SEQUENCES:
        return f"a list of {_PLURALS.get(args[0], _describe(args[0]))}" if args else "a list"
    if origin in _MAPPINGS and args:
        k, v = (_PLURALS.get(a, _describe(a)) for a in args)
        return f"a mapping of {k} to {v}"
    return str(hint)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config file's ``value`` fits ``hint`` (floats finite, bools not numbers, lists for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (str, bool, type(None)):
        return isinstance(value, hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in _MAPPINGS:
        return isinstance(value, dict) and (
            not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        )
    return True


def _normalize_resume(value: Any) -> str:
    """``"auto"``, ``"never"`` (also ``None``, ``False``, ``none``, ``false``, ``no``, ``off``) or a path."""
    if value is None or isinstance(value, bool):
        return "auto" if value else "never"
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"TrainerConfig.resume: expected 'auto', 'never' or a checkpoint path, got {value!r}"
        )
    low = value.strip().lower()
    if low in ("never", "none", "false", "no", "off"):
        return "never"
    return "auto" if low == "auto" else value


def _check_device(name: str) -> str:
    """``"auto"`` or a device string that torch reads and this machine has (:class:`ConfigError` otherwise)."""
    if (problem := device_problem(name, "the Trainer", auto=True)) is not None:
        raise ConfigError(f"TrainerConfig.device: {problem}")
    return name


_AT_LEAST_1 = ("an integer >= 1", lambda v: v >= 1)
_AT_LEAST_0 = ("an integer >= 0", lambda v: v >= 0)
_NON_NEGATIVE = ("a finite number >= 0", lambda v: v >= 0)
#: What a field's value must be beyond its type: the message, and the check.
_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **dict.fromkeys(
        ("max_steps", "batch_size", "grad_accum_steps", "val_batch_size", "log_every", "keep_last"),
        _AT_LEAST_1,
    ),
    **dict.fromkeys(("warmup_steps", "val_every", "save_every", "num_workers", "seed"), _AT_LEAST_0),
    **dict.fromkeys(("min_lr", "weight_decay", "warmup_start_factor", "save_every_minutes"), _NON_NEGATIVE),
    "lr": ("a finite positive number", lambda v: v > 0),
    "grad_clip": ("a finite positive number or null", lambda v: v is None or v > 0),
    "ema_decay": ("a number in (0, 1) or null", lambda v: v is None or 0.0 < v < 1.0),
    "betas": ("two numbers in [0, 1)", lambda v: all(0.0 <= b < 1.0 for b in v)),
    "aux_weights": ("a mapping of term names to numbers >= 0", lambda v: all(w >= 0 for w in v.values())),
    "metric_protocol": ("'promptir' or 'basicsr'", lambda v: v in ("promptir", "basicsr")),
}


@dataclass
class TrainerConfig:
    """Everything that shapes a training run; saved in every checkpoint and checked when built.

    Steps count optimizer updates of ``batch_size * grad_accum_steps * world_size`` images.

    Attributes:
        output_dir: Folder for checkpoints, logs and curves.
        max_steps: Number of optimizer updates; the learning-rate schedule spans them.
        batch_size: Images per batch per process.
        grad_accum_steps: Batches accumulated per update.
        min_lr: Floor the cosine decays to.
        warmup_steps: Linear warm-up length in updates.
        warmup_start_factor: Warm-up starts at ``lr * warmup_start_factor``.
        schedule: ``"cosine"`` (warm-up then cosine to ``min_lr``) or ``"constant"``.
        grad_clip: Max global gradient norm (``None``: no clipping).
        precision: Autocast precision (fp16 with a gradient scaler); a CPU that only emulates it is warned about.
        ema_decay: Keep an EMA of the weights (``None``: off); validation and ``best.pt`` then use it.
        channels_last: Store the network and its batches channels-last (``None``: on a CPU).
        grad_checkpointing: Recompute activations in the backward pass (``set_grad_checkpointing``).
        loss: Name of the main loss (:data:`allinone_ir.training.LOSSES`), unless one is passed in.
        val_every: Validate every this many updates (0: only at the end).
        val_batch_size: Batch size of validation (1 allows images of different sizes).
        metric_protocol: ``"promptir"`` or ``"basicsr"`` (see :mod:`allinone_ir.metrics`).
        save_every: Write a checkpoint every this many updates (0: by time, on a signal and at the end).
        save_every_minutes: Also write one after this many minutes since the last (0: off).
        keep_last: How many periodic checkpoints (``checkpoints/step_*.pt``) to keep, besides ``best.pt``.
        seed: Seed of the data order and augmentation (and the model where the config builds it).
        device: ``"auto"`` (CUDA, else MPS, else CPU), or a device string.
        resume: ``"auto"`` (the newest checkpoint in ``output_dir``), ``"never"`` (also ``None``, ``"none"``) or a path.
        init_weights: Checkpoint whose weights start the run (staged fine-tuning).
        trainable: If set, freeze everything but these module groups (see :func:`~allinone_ir.training.unfreeze`).
        progress_bar: Show a tqdm progress bar on the main process.
        plot: Save loss / PSNR curves as PNG (with matplotlib).
        aux_weights: Weights of the network family's training terms by name (0 switches one off).

    Raises:
        UsageTypeError: ``TrainerConfig.<field>: expected <what>, got <value>`` for a value of the wrong type.
        ConfigError: The same for a value out of range or an unavailable ``device``.
    """

    output_dir: str = "runs/train"
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum_steps: int = 1
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 2e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    warmup_start_factor: float = 0.1
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema_decay: float | None = None
    channels_last: bool | None = None
    grad_checkpointing: bool = False
    compile: bool = False
    loss: str = "l1"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    val_every: int = 0
    val_batch_size: int = 1
    metric_protocol: str = "promptir"
    save_every: int = 0
    save_every_minutes: float = 5.0
    keep_last: int = 1
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    resume: str = "auto"
    init_weights: str | None = None
    trainable: list[str] | None = None
    progress_bar: bool = True
    plot: bool = True
    aux_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resume = _normalize_resume(self.resume)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                what = _RANGES[f.name][0] if f.name in _RANGES else _describe(hints[f.name])
                raise UsageTypeError(f"TrainerConfig.{f.name}: expected {what}, got {value!r}")
        for name, (what, ok) in _RANGES.items():
            if not ok(getattr(self, name)):
                raise ConfigError(f"TrainerConfig.{name}: expected {what}, got {getattr(self, name)!r}")
        if self.min_lr > self.lr:
            raise ConfigError(f"TrainerConfig.min_lr: {self.min_lr} must not exceed lr ({self.lr})")
        self.device = _check_device(self.device)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.aux_weights = {k: float(v) for k, v in self.aux_weights.items()}
        if self.trainable is not None:
            self.trainable = list(self.trainable)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (saved in checkpoints and ``config.json``)."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError` naming them.

        Examples:
            >>> TrainerConfig.from_dict({"max_steps": 5}).max_steps
            5
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainerConfig key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)
