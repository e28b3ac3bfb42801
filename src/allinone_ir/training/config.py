"""The trainer's typed configuration."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["TrainerConfig", "normalize_resume"]

Precision = Literal["fp32", "bf16", "fp16"]


_NEVER = ("never", "none", "false", "no", "off")


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
        raise ValueError(f"TrainerConfig.resume must be 'auto', 'never' or a checkpoint path, got {value!r}")
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
        """Check every field; raise ``ValueError`` / ``TypeError`` naming the offending one."""
        positive = ("max_steps", "batch_size", "grad_accum_steps", "val_batch_size", "log_every", "keep_last")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TrainerConfig.{name} must be an integer, got {v!r}")
            if v < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {v}")
        for name in ("warmup_steps", "val_every", "save_every", "num_workers", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TrainerConfig.{name} must be an integer, got {v!r}")
            if v < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {v}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_start_factor", "save_every_minutes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"TrainerConfig.{name} must be a number, got {v!r}")
            if v < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {v}")
        if self.lr <= 0:
            raise ValueError(f"TrainerConfig.lr must be > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise ValueError(f"TrainerConfig.min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        choices = {
            "optimizer": ("adamw", "adam"),
            "schedule": ("cosine", "constant"),
            "precision": ("fp32", "bf16", "fp16"),
            "metric_protocol": ("promptir", "basicsr"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainerConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )
        if self.grad_clip is not None and not (
            isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0
        ):
            raise ValueError(
                f"TrainerConfig.grad_clip must be a positive number or None, got {self.grad_clip!r}"
            )
        if self.ema_decay is not None and not (
            isinstance(self.ema_decay, float) and 0.0 < self.ema_decay < 1.0
        ):
            raise ValueError(
                f"TrainerConfig.ema_decay must be a float in (0, 1) or None, got {self.ema_decay!r}"
            )
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"TrainerConfig.betas must have two numbers, got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if not isinstance(self.loss_kwargs, dict):
            raise TypeError(f"TrainerConfig.loss_kwargs must be a mapping, got {self.loss_kwargs!r}")
        self.resume = normalize_resume(self.resume)
        if not isinstance(self.aux_weights, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in self.aux_weights.items()
        ):
            raise TypeError(
                f"TrainerConfig.aux_weights must map term names to weights >= 0, got {self.aux_weights!r}"
            )
        self.aux_weights = {k: float(v) for k, v in self.aux_weights.items()}
        if self.trainable is not None:
            if isinstance(self.trainable, str) or not all(isinstance(t, str) for t in self.trainable):
                raise TypeError(f"TrainerConfig.trainable must be a list of names, got {self.trainable!r}")
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
            raise ValueError(f"unknown TrainerConfig key(s) {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        if "betas" in data and data["betas"] is not None:
            data["betas"] = tuple(data["betas"])
        return cls(**data)
