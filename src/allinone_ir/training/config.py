"""The trainer's typed configuration."""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, UsageTypeError

__all__ = ["TrainerConfig"]

Precision = Literal["fp32", "bf16", "fp16"]


_NEVER = ("never", "none", "false", "no", "off")


def _describe(hint: Any) -> str:
    """How a message says what a type hint expects: ``int``, ``a list of int``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if hint is float:
        return "a finite number"
    if isinstance(hint, type):
        return {"int": "an integer", "str": "a string", "bool": "true or false"}.get(
            hint.__name__, hint.__name__
        )
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return f"a mapping of {_plural(args[0])} to {_plural(args[1])}" if args else "a mapping"
    return str(hint)


def _plural(hint: Any) -> str:
    names = {
        int: "integers",
        float: "finite numbers",
        str: "strings",
        bool: "true/false values",
        Any: "values",
    }
    return names.get(hint, _describe(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as a config file gives it) fits ``hint``; a hint this does not read fits anything.

    Floats must be finite; ints are accepted where floats are, bools are not numbers; lists are
    accepted for tuples and sequences, strings are not sequences here.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return True


def _type_problem(value: Any, hint: Any) -> str | None:
    """``"expected <what>, got <value>"`` when ``value`` does not fit ``hint``, else ``None``.

    Examples:
        >>> _type_problem("eight", int)
        "expected an integer, got 'eight'"
        >>> _type_problem([1, 2], collections.abc.Sequence[int]) is None
        True
    """
    return None if _matches(value, hint) else f"expected {_describe(hint)}, got {value!r}"


def normalize_resume(value: Any) -> str:
    """``"auto"``, ``"never"`` or a checkpoint path, from what a user or a config file wrote.

    ``None``, ``False`` and the strings ``never``, ``none``, ``false``, ``no``, ``off`` (any case) mean
    ``"never"``; ``True`` and ``"auto"`` mean ``"auto"``; any other non-empty string is a path.

    Raises:
        ValueError: For an empty string or another type (the message lists what is accepted).

    Examples:
        >>> normalize_resume(None), normalize_resume("None"), normalize_resume(True), normalize_resume("a.pt")
        ('never', 'never', 'auto', 'a.pt')
    """
    if value is None or value is False:
        return "never"
    if value is True:
        return "auto"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"TrainerConfig.resume: expected 'auto', 'never' or a checkpoint path, got {value!r}"
        )
    low = value.strip().lower()
    if low in _NEVER:
        return "never"
    if low == "auto":
        return "auto"
    return value


@dataclass
class TrainerConfig:
    """Everything that shapes a training run; saved in every checkpoint.

    Steps count optimizer updates; one update consumes ``grad_accum_steps`` batches of
    ``batch_size`` images per process (the global batch is
    ``batch_size * grad_accum_steps * world_size``).

    Attributes:
        output_dir: Folder for checkpoints, logs and curves (created).
        max_steps: Number of optimizer updates; the learning-rate schedule spans them.
        batch_size: Images per batch per process.
        grad_accum_steps: Batches accumulated per update.
        optimizer: ``"adamw"`` or ``"adam"``.
        lr: Peak learning rate.
        min_lr: Floor the cosine decays to.
        weight_decay: Weight decay (decoupled for AdamW).
        betas: Adam betas.
        warmup_steps: Linear warm-up length in updates.
        warmup_start_factor: Warm-up starts at ``lr * warmup_start_factor`` (PIP: 0.1).
        schedule: ``"cosine"`` (warm-up then cosine to ``min_lr``) or ``"constant"`` (warm-up then flat).
        grad_clip: Max global gradient norm (``None``: no clipping).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 uses a gradient scaler). On a
            CPU that only emulates the low-precision dtype (no AVX-512 BF16 / AMX; see
            :func:`~allinone_ir.inference.native_low_precision`) the Trainer warns: it runs ~20x slower.
        ema_decay: Keep an exponential moving average of the weights with this decay (``None``: off);
            validation and the best checkpoint then use the EMA weights.
        channels_last: Use the channels-last memory format (default on: 1.4-2x faster for these networks on
            CPU and GPU; ``False`` for NCHW).
        grad_checkpointing: Recompute activations in the backward pass (networks with
            ``set_grad_checkpointing``): much less memory for about a third more compute.
        compile: Wrap the model in ``torch.compile``.
        loss: Name of the main loss (see :data:`allinone_ir.training.LOSSES`), unless one is passed in.
        loss_kwargs: Keyword arguments of that loss.
        val_every: Validate every this many updates (0: only at the end).
        val_batch_size: Batch size of validation (1 allows images of different sizes).
        metric_protocol: ``"promptir"`` or ``"basicsr"`` (see :mod:`allinone_ir.metrics`).
        save_every: Write a checkpoint every this many updates (0: only by time, on a signal and at the end).
        save_every_minutes: Also write one when this many minutes have passed since the last one
            (0: off), so a killed run loses at most that much work.
        keep_last: How many periodic checkpoints (``checkpoints/step_*.pt``) to keep; ``best.pt`` (the
            validated weights only) is kept apart.
        log_every: Log the training loss every this many updates.
        seed: Seed of the model initialisation (where the trainer builds it), data order and augmentation.
        num_workers: DataLoader worker processes.
        device: ``"auto"`` (CUDA, else MPS, else CPU), or a device string.
        resume: ``"auto"`` (the latest checkpoint in ``output_dir/checkpoints`` if any, else step 0),
            ``"never"`` (start at step 0; ``None``, ``False``, ``"none"`` and ``"false"`` mean the same) or
            a checkpoint path.
        init_weights: Checkpoint whose model weights start the run (staged fine-tuning).
        trainable: If set, freeze everything but these module groups (names, dotted prefixes or globs),
            or the groups the family declares (``encoder``, ``decoder``, ``prompts``, PromptIR's
            ``stage2``: :func:`~allinone_ir.training.finetune_groups`).
        progress_bar: Show a tqdm progress bar (when tqdm is installed) on the main process.
        plot: Save loss / PSNR curves as PNG (when matplotlib is installed).
        aux_weights: Weights of the network family's own training terms by name, replacing their defaults
            (PIP: ``{"ddl": 0.002, "classifier": 0.1}``; see
            :meth:`~allinone_ir.models.RestorationModel.auxiliary_losses`); 0 switches a term off.
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
    precision: Precision = "fp32"
    ema_decay: float | None = None
    channels_last: bool = True
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
    resume: str | None = "auto"
    init_weights: str | None = None
    trainable: list[str] | None = None
    progress_bar: bool = True
    plot: bool = True
    aux_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field against its type and range.

        Raises:
            TypeError: ``TrainerConfig.<field>: expected <what>, got <value>`` for a value of the wrong
                type (every field is checked against its annotation; numbers must be finite).
            ValueError: The same form for a value out of range, an unparseable or unavailable
                ``device``, or ``min_lr`` above ``lr``.
        """
        ranges: dict[str, tuple[str, Any]] = {
            **dict.fromkeys(
                ("max_steps", "batch_size", "grad_accum_steps", "val_batch_size", "log_every", "keep_last"),
                ("an integer >= 1", lambda v: v >= 1),
            ),
            **dict.fromkeys(
                ("warmup_steps", "val_every", "save_every", "num_workers", "seed"),
                ("an integer >= 0", lambda v: v >= 0),
            ),
            "lr": ("a finite positive number", lambda v: v > 0),
            **dict.fromkeys(
                ("min_lr", "weight_decay", "warmup_start_factor", "save_every_minutes"),
                ("a finite number >= 0", lambda v: v >= 0),
            ),
            "grad_clip": ("a finite positive number or null", lambda v: v is None or v > 0),
            "ema_decay": ("a number in (0, 1) or null", lambda v: v is None or 0.0 < v < 1.0),
            "betas": ("two numbers in [0, 1)", lambda v: all(0.0 <= b < 1.0 for b in v)),
            "aux_weights": (
                "a mapping of term names to numbers >= 0",
                lambda v: all(w >= 0 for w in v.values()),
            ),
        }
        self.resume = normalize_resume(self.resume)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                what = ranges[f.name][0] if f.name in ranges else _describe(hints[f.name])
                raise UsageTypeError(f"TrainerConfig.{f.name}: expected {what}, got {value!r}")
        for name, (what, ok) in ranges.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"TrainerConfig.{name}: expected {what}, got {value!r}")
        if self.min_lr > self.lr:
            raise ConfigError(f"TrainerConfig.min_lr: {self.min_lr} must not exceed lr ({self.lr})")
        self.device = _check_device(self.device)
        if self.metric_protocol not in ("promptir", "basicsr"):
            raise ConfigError(
                f"TrainerConfig.metric_protocol: expected 'promptir' or 'basicsr', got {self.metric_protocol!r}"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.aux_weights = {k: float(v) for k, v in self.aux_weights.items()}
        if self.trainable is not None:
            self.trainable = list(self.trainable)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (saved in checkpoints and ``config.json``)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them.

        Examples:
            >>> TrainerConfig.from_dict({"max_steps": 5}).max_steps
            5
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainerConfig key(s) {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("betas"), list):
            data["betas"] = tuple(data["betas"])
        return cls(**data)


def _check_device(name: Any) -> str:
    """``"auto"`` or a device string ``torch.device`` reads and this machine has; the string as given.

    Raises:
        ValueError: ``TrainerConfig.device: ...`` for a string torch cannot read, or a device that is not
            available (no CUDA / MPS, or a GPU index beyond the GPUs present).
    """
    if name == "auto":
        return name
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(
            f"TrainerConfig.device: expected 'auto' or a device such as 'cpu', 'cuda', 'cuda:1' or 'mps', "
            f"got {name!r}"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            have = f"{count} CUDA device(s)" if count else "no CUDA"
            raise ConfigError(f"TrainerConfig.device: {name!r} is not available (this machine has {have})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError(f"TrainerConfig.device: {name!r} is not available (no MPS on this machine)")
    elif dev.type != "cpu":
        raise ConfigError(
            f"TrainerConfig.device: {name!r} is not a device the Trainer runs on (cpu, cuda, mps)"
        )
    return name
