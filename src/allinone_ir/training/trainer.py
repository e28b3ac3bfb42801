"""The training loop: AMP, accumulation, clipping, EMA, validation, exact resume, signals, DDP.

A network family's own training terms (:meth:`~allinone_ir.models.RestorationModel.auxiliary_losses`,
e.g. PIP's classifier cross-entropy and directional decoupled loss) are added to the main loss
through one forward call (:meth:`~allinone_ir.models.RestorationModel.training_forward_kwargs`),
so DDP sees every parameter used. The trainer holds the loop; the files are other modules' work:
checkpoints in :mod:`allinone_ir.training.checkpoint`, logs in :mod:`allinone_ir.training.logs`, curves in
:mod:`allinone_ir.training.plots`, signals in :mod:`allinone_ir.training.signals`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import losses as L
from .._runtime import PRECISIONS, autocast, progress_bar
from ..data.datasets import _match_labels
from ..errors import (
    CheckpointError,
    ConfigError,
    TrainingDivergedError,
    UnknownNameError,
    UsageError,
    UsageTypeError,
)
from ..metrics import get_protocol
from ..models._base import AuxiliaryLoss, RestorationModel
from ._lock import RunFolderLock
from .checkpoint import (
    best_weights_state,
    checkpoint_bytes,
    find_latest_checkpoint,
    load_init_weights,
    periodic_checkpoints,
    plain_metrics,
    read_checkpoint,
    read_resume_checkpoint,
    remove_stale_temporaries,
    rng_state,
    rotate_checkpoints,
    set_rng_state,
    step_checkpoint_name,
    write_checkpoint,
)
from .config import TrainerConfig
from .distributed import DistInfo, EpochSampler, init_distributed, resolve_device
from .ema import ModelEMA
from .finetune import freeze, unfreeze
from .logs import RunLog, write_json
from .plots import plot_training_curves
from .schedule import warmup_cosine_factor
from .signals import StopSignals, TrainingInterrupted

__all__ = ["LOSSES", "LossTerm", "Trainer", "TrainingDivergedError", "TrainingInterrupted", "build_loss"]

#: Main losses by name (``TrainerConfig.loss``).
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "l1": L.L1Loss,
    "mse": L.MSELoss,
    "charbonnier": L.CharbonnierLoss,
    "psnr": L.PSNRLoss,
    "ssim": L.SSIMLoss,
    "l1_ssim": L.L1SSIMLoss,
    "fft": L.FFTLoss,
    "gfl": L.GuidedFrequencyLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """A loss module by name (see :data:`LOSSES`).

    Raises:
        ValueError: For an unknown name or bad keyword arguments (the message names them).

    Examples:
        >>> build_loss("charbonnier", eps=1e-3)
        CharbonnierLoss()
    """
    if name not in LOSSES:
        raise UnknownNameError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as exc:
        raise UsageError(f"bad arguments for loss {name!r}: {exc}") from exc


@dataclass
class LossTerm:
    """An extra loss added to the main one: ``weight * fn(model, batch, output)``.

    ``model`` is the unwrapped network, ``batch`` the batch dict on the device, ``output`` the
    restored image. A network family's own terms (PIP's) come from the network itself
    (:meth:`~allinone_ir.models.RestorationModel.auxiliary_losses`); ``LossTerm`` is for your own.

    Attributes:
        fn: The term.
        weight: Its weight.
        name: Name used in the logs (``loss_<name>``); must differ from the family's terms.
    """

    fn: Callable[[nn.Module, dict[str, Any], torch.Tensor], torch.Tensor]
    weight: float = 1.0
    name: str = "extra"


def _val_line(results: Mapping[str, Mapping[str, float]]) -> str:
    """``val PSNR: rain 27.10 dB (input 21.00, +6.10), ...``: each group's restored and degraded PSNR.

    Examples:
        >>> _val_line({"rain": {"psnr": 27.1, "input_psnr": 21.0}, "all": {"psnr": 25.0, "input_psnr": 25.5}})
        'val PSNR: rain 27.10 dB (input 21.00, +6.10), all 25.00 dB (input 25.50, -0.50)'
    """
    parts = [
        f"{g} {m['psnr']:.2f} dB (input {m['input_psnr']:.2f}, {m['psnr'] - m['input_psnr']:+.2f})"
        for g, m in results.items()
    ]
    return "val PSNR: " + ", ".join(parts)


def _collate_keys(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


class Trainer:
    """Train a restoration network on a dataset of ``{"degraded", "clean", "label", ...}`` samples.

    AdamW / Adam, linear warm-up and cosine decay to a floor (per update), gradient accumulation and
    clipping, bf16 / fp16 autocast (fp16 with a gradient scaler; bf16 falls back to fp32 where the GPU lacks it),
    EMA weights, channels-last (default), optional ``torch.compile``, validation with PSNR / SSIM per
    degradation under a named metric protocol, best-weights tracking, CSV / JSON logs,
    a progress bar, PNG curves, and DDP when launched by ``torchrun``.

    Never more than a few minutes lost: a checkpoint is written atomically every ``save_every``
    updates, every ``save_every_minutes`` and when SIGINT / SIGTERM arrives (the update in progress
    finishes, the checkpoint is written, :class:`TrainingInterrupted` is raised); ``resume="auto"``
    (the default) continues from the newest one, and the logs are cut back to that step, so a
    resumed run's weights and logs equal an uninterrupted run's. One line on standard error says
    where the run starts: ``resumed from FILE at step N`` or ``no checkpoint in DIR: starting at step 0``.

    A :class:`~allinone_ir.models.RestorationModel` is called as
    ``net(degraded, **model.training_forward_kwargs(batch))`` (PIP: with the labels and asking for
    the classifier's logits), the output split by ``model.split_training_output`` and the family's
    :meth:`~allinone_ir.models.RestorationModel.auxiliary_losses` added with their weights
    (``config.aux_weights`` overrides them by name; logged as ``loss_<name>``). Other modules are
    called as ``net(degraded)`` (with ``degradation=batch["label"]`` when ``accepts_degradation``).
    Extra terms of your own (:class:`LossTerm`) are added as well. A loss with a ``set_progress``
    method (the Guided Frequency Loss) is told the fraction of training done before every update.

    Args:
        model: The network.
        config: The run's settings.
        train_data: Training dataset (dict samples); the trainer builds its loader.
        val_data: Optional validation dataset.
        loss: Main loss (default: ``build_loss(config.loss, **config.loss_kwargs)``).
        extra_losses: Extra :class:`LossTerm` s.
        batch_augment: Optional callable applied to every batch on the device (e.g.
            :class:`~allinone_ir.data.BatchAugment`); its ``state_dict`` is checkpointed when it has one.

    Attributes:
        start_message: The line printed at construction (where the run starts).
        aux_losses: The family's training terms with the weights in use.
        log: The run's logs (:class:`~allinone_ir.training.logs.RunLog`): the history written to
            ``history.json`` and the CSV files.

    Raises:
        ConfigError: Naming the setting (``trainer.<field>: ...``): an unknown loss or unavailable device,
            ``trainable`` groups that match nothing, fewer samples than one batch, an ``aux_weights`` name the
            network does not declare, or an extra term named like one of the family's.
        CheckpointError: If the checkpoint to resume from is missing, unreadable, or does not fit the
            network (one line naming the file and the mismatch). With ``resume="auto"`` an unreadable
            newest checkpoint is set aside (renamed ``NAME.unreadable``, never deleted) and the newest
            intact one is used, with a warning naming both; the error comes when none is readable.
        UsageError: If another run holds the output folder: one run per folder, locked from construction
            until :meth:`fit` returns (the message names the holder's process id, host and start time).
        DatasetError: For a network told the degradation (PIP), before training, when a degradation of the
            data is not one of the network's (matched by name, aliases included; the datasets of
            :mod:`allinone_ir.data` are relabelled to the network's positions) or comes from file names
            that name none.

    Examples:
        >>> import tempfile
        >>> from allinone_ir import create_model
        >>> from allinone_ir.data import SyntheticDegradationDataset
        >>> data = SyntheticDegradationDataset([torch.rand(3, 32, 32)], tasks=["noise_25"], patch_size=16)
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
        >>> cfg = TrainerConfig(output_dir=tempfile.mkdtemp(), max_steps=2, batch_size=1, progress_bar=False)
        >>> Trainer(net, cfg, data).fit()["step"]
        2
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        train_data: Dataset,
        val_data: Dataset | None = None,
        *,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        extra_losses: Sequence[LossTerm] = (),
        batch_augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise UsageTypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if not isinstance(model, nn.Module):
            raise UsageTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if getattr(model, "accepts_degradation", False) and getattr(model, "degradations", None):
            # labels are positions in the network's degradations, matched by name before training
            for data in (train_data, val_data):
                _match_labels(data, model.degradations, type(model).__name__)
        self.config = config
        self.out_dir = Path(config.output_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self._setup_device()
        # one run per output folder, from before the resume reads it until fit() returns
        self._lock = RunFolderLock(self.out_dir)
        if self.dist.is_main:
            self._lock.acquire()
        try:
            self.model = self._prepare_model(model)
            self.optimizer, self.scheduler, self.scaler = self._build_optimization()
            self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay else None
            self.loss_fn = self._build_main_loss(loss)
            self.extra_losses = list(extra_losses)
            self.aux_losses: list[AuxiliaryLoss] = self._family_terms()
            self.batch_augment = batch_augment
            self.train_data, self.val_data = train_data, val_data
            self.protocol = get_protocol(config.metric_protocol)
            self.net = self._wrap_network()
            self.sampler = self._build_sampler()
            self._reset_counters()
            self._resume_notes: list[str] | None = []  # said after the start message
            self.start_message = self._resume()
        except BaseException:
            self._lock.release(remove_empty_folder=True)
            raise
        notes, self._resume_notes = self._resume_notes, None
        if self.dist.is_main:
            print(self.start_message, file=sys.stderr, flush=True)
            for note in notes:
                warnings.warn(note, UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ setup steps (in __init__'s order)
    def _setup_device(self) -> None:
        """The process group (under torchrun), this process's device and the precision it supports."""
        cfg = self.config
        try:
            probe = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError as exc:
            raise ConfigError(f"trainer.device: {exc}") from exc
        self.dist: DistInfo = init_distributed(probe.type)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.precision = self._resolve_precision(cfg.precision)

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """The network on the device and layout, with its initial weights, recomputation and frozen parts."""
        cfg = self.config
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        if cfg.init_weights:
            load_init_weights(model, cfg.init_weights)
        if cfg.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise ConfigError(
                    f"trainer.grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing()"
                )
            model.set_grad_checkpointing(True)
        if cfg.trainable is not None:
            freeze(model)
            try:
                unfreeze(model, cfg.trainable)
            except ValueError as exc:
                raise ConfigError(f"trainer.trainable: {exc}") from exc
        return model

    def _build_optimization(
        self,
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler]:
        """The optimizer of the trainable weights, its warm-up / cosine schedule and the gradient scaler."""
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("trainer.trainable: the model has no trainable parameters")
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        min_factor = cfg.min_lr / cfg.lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: warmup_cosine_factor(
                s, max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps,
                warmup_start_factor=cfg.warmup_start_factor, min_factor=min_factor,
                cosine=cfg.schedule == "cosine",
            ),
        )  # fmt: skip
        return optimizer, scheduler, torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _build_main_loss(
        self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The given main loss, or ``config.loss`` by name; a loss module goes to the device."""
        try:
            loss_fn = loss if loss is not None else build_loss(self.config.loss, **self.config.loss_kwargs)
        except ValueError as exc:
            raise ConfigError(f"trainer.loss: {exc}") from exc
        return loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn

    def _wrap_network(self) -> nn.Module:
        """What the training forward pass calls: the network, in DDP under torchrun, compiled if asked."""
        net: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(self.model, device_ids=ids)
        if self.config.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        return net

    def _build_sampler(self) -> EpochSampler:
        """This process's share of every epoch, resumable mid-epoch; at least one global batch per epoch."""
        cfg = self.config
        sampler = EpochSampler(
            len(self.train_data),  # type: ignore[arg-type]
            seed=cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if len(sampler) // cfg.batch_size < 1:
            raise ConfigError(
                f"trainer.batch_size: the training set has {len(self.train_data)} samples, fewer than one global "  # type: ignore[arg-type]
                f"batch of {cfg.batch_size * self.dist.world_size}; lower batch_size or add data"
            )
        return sampler

    def _reset_counters(self) -> None:
        """Step 0: the counters, the best validation, the logs in memory and the checkpoint bookkeeping."""
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: dict[str, Any] = {"psnr": -math.inf, "step": -1}
        self.log = RunLog(self.out_dir)
        self._iter: Iterator[dict[str, Any]] | None = None
        self._saved_step = -1
        self._replaced: list[Path] = []
        self.last_checkpoint: Path | None = None

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every logged row of the run (``{"kind": "train" | "val", "step", ...}``), as in ``history.json``."""
        return self.log.history

    @history.setter
    def history(self, rows: list[dict[str, Any]]) -> None:
        self.log.history = rows

    def _resolve_precision(self, precision: str) -> str:
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            warnings.warn("bf16 is not supported on this GPU; training in fp32", stacklevel=4)
            return "fp32"
        if precision != "fp32" and self.device.type == "cpu":
            from ..inference import native_low_precision

            if not native_low_precision(PRECISIONS[precision], self.device):
                warnings.warn(
                    f"{precision} is emulated on this CPU (no native support), so training runs much slower "
                    "than in fp32; use precision fp32 here (trainer: {precision: fp32} in a config)",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return precision

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.precision)

    def _family_terms(self) -> list[AuxiliaryLoss]:
        declared = self.model.auxiliary_losses() if isinstance(self.model, RestorationModel) else []
        names = [t.name for t in declared]
        family = type(self.model).__name__
        unknown = sorted(set(self.config.aux_weights) - set(names))
        if unknown:
            raise ConfigError(
                f"trainer.aux_weights: {unknown[0]!r} is not a training term of {family}; "
                + (f"its terms are {names}" if names else "it declares none")
            )
        for term in self.extra_losses:
            if term.name in names:
                raise ConfigError(
                    f"extra loss {term.name!r} is already a training term of {family} (weight "
                    f"{dict(zip(names, [t.weight for t in declared], strict=True))[term.name]}); remove it from "
                    f"the extra losses and set its weight with trainer.aux_weights = {{{term.name} = ...}} instead"
                )
        return [
            dataclasses.replace(t, weight=float(self.config.aux_weights.get(t.name, t.weight)))
            for t in declared
        ]

    def checkpoint_size(self) -> int:
        """Approximate bytes of one training checkpoint of this run (weights, optimizer state, EMA)."""
        return checkpoint_bytes(self.model, ema=self.ema is not None)

    # ------------------------------------------------------------------ resume
    def _resume(self) -> str:
        mode = self.config.resume
        if mode == "never":
            self._replaced = [p for _, p in periodic_checkpoints(self.ckpt_dir)]
            if self._replaced:
                return (
                    f"resume=never: starting at step 0; this run replaces the {len(self._replaced)} "
                    f"checkpoint(s) and the logs of an earlier run in {self.out_dir}"
                )
            return f"resume=never: starting at step 0 in {self.out_dir}"
        if mode != "auto":
            self.load_checkpoint(mode)
            return f"resumed from {mode} at step {self.step}"
        found = periodic_checkpoints(self.ckpt_dir)
        if not found:
            return f"no checkpoint in {self.ckpt_dir}: starting at step 0"
        bad: list[tuple[Path, str]] = []
        for _, path in reversed(found):  # the newest intact one
            try:
                state = read_checkpoint(path)
            except CheckpointError as exc:
                bad.append((path, str(exc)))
                continue
            self._load_state(path, state)
            if self._resume_notes is not None:  # first why this checkpoint, then what differs from it
                self._resume_notes[:0] = [self._set_aside(p, reason, used=path) for p, reason in bad]
            return f"resumed from {path} at step {self.step}"
        reasons = "; ".join(reason for _, reason in bad)
        raise CheckpointError(
            f"no readable checkpoint in {self.ckpt_dir} ({reasons}); start again with --resume never "
            "(resume='never') or use another --output-dir"
        )

    def _set_aside(self, path: Path, reason: str, *, used: Path) -> str:
        """Rename an unreadable periodic checkpoint to ``NAME.unreadable`` (kept, never rotated away); the note."""
        kept = path.with_name(path.name + ".unreadable")
        if self.dist.is_main:
            try:
                os.replace(path, kept)
            except OSError:
                kept = (
                    path  # left where it is (another process of the run moved it, or the folder is read-only)
                )
        return (
            f"{reason}; resumed from the newest intact checkpoint {used} instead; the unreadable file is kept "
            f"as {kept}"
        )

    # ------------------------------------------------------------------ data
    def _loader(self) -> Iterator[dict[str, Any]]:
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.config.batch_size)
        loader = DataLoader(
            self.train_data, batch_size=self.config.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        return iter(loader)

    def _next_batch(self) -> dict[str, Any]:
        if self._iter is None:
            self._iter = self._loader()
        try:
            batch = next(self._iter)
        except StopIteration:
            self.epoch += 1
            self.batch_in_epoch = 0
            self._iter = self._loader()
            batch = next(self._iter)
        self.batch_in_epoch += 1
        return batch

    # ------------------------------------------------------------------ forward
    def forward(self, net: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """Run ``net`` on ``batch["degraded"]`` for evaluation, passing ``batch["label"]`` to PIP networks.

        Shape:
            - Output: :math:`(N, C_{out}, H, W)`
        """
        if getattr(self.model, "accepts_degradation", False) and "label" in batch:
            return net(batch["degraded"], degradation=batch["label"])
        return net(batch["degraded"])

    def training_forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training forward pass through the (DDP) wrapper: the restored image and the family's extras.

        Returns:
            ``(image, extras)``; ``extras`` is what the family's auxiliary terms read (PIP: ``{"logits"}``).

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
        """
        if isinstance(self.model, RestorationModel):
            out = self.net(batch["degraded"], **self.model.training_forward_kwargs(batch))
            return self.model.split_training_output(out)
        return self.forward(self.net, batch), {}

    def _loss(
        self, batch: dict[str, Any], out: torch.Tensor, extras: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        main = self.loss_fn(out.float(), batch["clean"].float())
        parts = {"loss_main": float(main.detach())}
        total = main
        for aux in self.aux_losses:
            v = aux.fn(self.model, batch, extras)
            parts[f"loss_{aux.name}"] = float(v.detach())
            total = total + aux.weight * v  # weight 0 still uses the term's parameters (DDP)
        for term in self.extra_losses:
            v = term.fn(self.model, batch, out)
            parts[f"loss_{term.name}"] = float(v.detach())
            total = total + term.weight * v
        return total, parts

    # ------------------------------------------------------------------ training
    def train_step(self) -> dict[str, float]:
        """One optimizer update (``grad_accum_steps`` batches); returns the logged values.

        Raises:
            TrainingDivergedError: If the loss is NaN or infinite.
        """
        cfg = self.config
        self.net.train()
        if hasattr(self.loss_fn, "set_progress"):
            self.loss_fn.set_progress(self.step / cfg.max_steps)
        total, parts_sum = 0.0, dict[str, float]()
        for micro in range(cfg.grad_accum_steps):
            batch = _collate_keys(self._next_batch(), self.device, cfg.channels_last)
            if self.batch_augment is not None:
                batch = self.batch_augment(batch)
            last = micro == cfg.grad_accum_steps - 1
            sync = (
                self.net.no_sync()
                if (self.dist.enabled and not last and hasattr(self.net, "no_sync"))
                else contextlib.nullcontext()
            )
            with sync, warnings.catch_warnings():
                # channels-last: the gradients of weights whose layout is the same either way (depthwise
                # 3x3, 1x1) come in either stride order, and DDP then copies them into its buckets and warns
                warnings.filterwarnings("ignore", message=".*Grad strides do not match bucket view strides")
                with self._autocast():
                    out, extras = self.training_forward(batch)
                loss, parts = self._loss(batch, out, extras)
                self._check_finite(loss)
                self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            total += float(loss.detach()) / cfg.grad_accum_steps
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.grad_accum_steps
        grad_norm = None
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], cfg.grad_clip
                )
            )
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        row = {"step": self.step, "loss": total, "lr": lr, **parts_sum}
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        return row

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=self.device)
        if self.dist.enabled:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item() > 0:
            good = self.last_checkpoint or self.find_latest_checkpoint()
            where = f"the last good checkpoint is {good}" if good else "no checkpoint had been written yet"
            raise TrainingDivergedError(
                f"loss is {float(loss.detach())} at step {self.step + 1} (epoch {self.epoch}); training stopped "
                f"without saving the broken weights; {where}. Try a lower lr, grad_clip, or bf16/fp32 instead of fp16."
            )

    def _agreed_signal(self, stop: StopSignals) -> int:
        """The stop signal, agreed by every process (0: none); all ranks stop at the same update."""
        if not self.dist.enabled:
            return stop.requested or 0
        flag = torch.tensor(float(stop.requested or 0), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _start_run_folder(self) -> None:
        """Main process, before the first update: config, stale temporaries, logs cut back to this step."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.out_dir / "config.json",
            {"trainer": self.config.to_dict(), "model": getattr(self.model, "config", None)},
        )
        remove_stale_temporaries(self.ckpt_dir)
        for p in self._replaced:
            p.unlink(missing_ok=True)
        self._replaced = []
        self.log.start(self.step)

    def fit(self, steps: int | None = None) -> dict[str, Any]:
        """Train until ``config.max_steps`` (or only until update ``steps``, to simulate an interruption).

        SIGINT / SIGTERM (main thread only) stop training after the update in progress, with a
        checkpoint (see the class description). The output folder is locked while the run lasts
        (``OUTPUT_DIR/.train.lock``, an operating-system lock the system releases if the process dies):
        another trainer on the same folder, in this process or another, is refused at once.

        Returns:
            A summary: ``step``, ``loss`` (last logged), ``best`` (best validation PSNR and its step),
            ``val`` (last validation metrics), ``output_dir`` and ``checkpoint`` (the last one written).

        Raises:
            TrainingInterrupted: On SIGINT / SIGTERM, after writing the checkpoint (every process raises it).
            TrainingDivergedError: If the loss becomes NaN or infinite.
            UsageError: If another run holds the output folder (naming its process id, host and start time).
            OSError: If the disk fills up while a checkpoint is written (``errno.ENOSPC``; the message names
                the file; the earlier checkpoints are intact).
        """
        if self.dist.is_main:
            self._lock.acquire()
        try:
            return self._fit(steps)
        finally:
            self._lock.release()

    def _fit(self, steps: int | None) -> dict[str, Any]:
        cfg = self.config
        stop_at = cfg.max_steps if steps is None else min(steps, cfg.max_steps)
        main = self.dist.is_main
        if main:
            self._start_run_folder()
        bar = self._bar = self._progress_bar(stop_at) if main and cfg.progress_bar else None
        t0, seen = time.perf_counter(), 0
        self._last_save_time = time.monotonic()
        last_val: dict[str, Any] = {}
        row: dict[str, Any] = {}
        try:
            with StopSignals(announce=main) as stop:
                while self.step < stop_at:
                    row = self.train_step()
                    seen += cfg.batch_size * cfg.grad_accum_steps * self.dist.world_size
                    self.log.accumulate(row)
                    speed = seen / max(time.perf_counter() - t0, 1e-9)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{speed:.1f}"
                        )
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        if main:
                            self.log.log_train(
                                {**row, **self.log.window_means(), "epoch": self.epoch, "images_per_s": speed}
                            )
                        self.log.reset_window()
                    is_end = self.step == cfg.max_steps
                    if self.val_data is not None and (
                        (cfg.val_every and self.step % cfg.val_every == 0) or is_end
                    ):
                        last_val = self.validate()
                    minutes = (time.monotonic() - self._last_save_time) / 60
                    if (
                        (cfg.save_every and self.step % cfg.save_every == 0)
                        or self.step == stop_at
                        or (cfg.save_every_minutes and minutes >= cfg.save_every_minutes)
                    ):
                        self.save_checkpoint()
                    signum = self._agreed_signal(stop)
                    if signum:
                        path = (
                            self.save_checkpoint() if self._saved_step != self.step else self.last_checkpoint
                        )
                        if bar is not None:
                            bar.close()
                            bar = None
                        raise TrainingInterrupted(signum, self.step, path if main else None)
        finally:
            self._bar = None
            if bar is not None:
                bar.close()
        if main and cfg.plot:
            self.plot_curves()
        return {"step": self.step, "loss": row.get("loss"), "best": dict(self.best), "val": last_val,
                "output_dir": str(self.out_dir), "checkpoint": self.last_checkpoint}  # fmt: skip

    def _progress_bar(self, total: int) -> Any:
        """The training progress bar from the current step (``None`` without tqdm)."""
        return progress_bar(
            total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr
        )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, dict[str, float]]:
        """PSNR / SSIM of the (EMA) model on a dataset, per degradation task and overall.

        Also reports the metrics of the degraded inputs (``input_psnr``, ``input_ssim``), so
        the gain is visible. Groups come from ``sample["task"]`` (e.g. ``noise_25``) when
        present, else ``sample["degradation"]``.

        Returns:
            ``{group: {"psnr", "ssim", "input_psnr", "input_ssim", "count"}}``, groups by name and then ``"all"``.
        """
        data = dataset if dataset is not None else self.val_data
        if data is None:
            raise UsageError("no validation dataset given")
        net = self.ema.module if self.ema is not None else self.model
        was_training = net.training
        net.eval()
        loader = DataLoader(
            data, batch_size=self.config.val_batch_size, shuffle=False, num_workers=self.config.num_workers
        )
        sums: dict[str, dict[str, float]] = {}
        for batch in loader:
            batch = _collate_keys(batch, self.device, self.config.channels_last)
            with self._autocast():
                out = self.forward(net, batch)
            m = self.protocol.compute_per_image(out.float(), batch["clean"])
            mi = self.protocol.compute_per_image(batch["degraded"], batch["clean"])
            groups = batch.get("task", batch.get("degradation", ["all"] * out.shape[0]))
            for i, g in enumerate(groups):
                for key in (str(g), "all") if str(g) != "all" else ("all",):
                    s = sums.setdefault(
                        key, {"psnr": 0.0, "ssim": 0.0, "input_psnr": 0.0, "input_ssim": 0.0, "count": 0}
                    )
                    s["psnr"] += float(m["psnr"][i])
                    s["ssim"] += float(m["ssim"][i])
                    s["input_psnr"] += float(mi["psnr"][i])
                    s["input_ssim"] += float(mi["ssim"][i])
                    s["count"] += 1
        net.train(was_training)
        order = [*sorted(g for g in sums if g != "all"), "all"]  # degradations by name, then the average
        return {
            g: {k: (v / sums[g]["count"] if k != "count" else v) for k, v in sums[g].items()}
            for g in order
            if g in sums
        }

    def validate(self) -> dict[str, Any]:
        """Evaluate on the validation set (main process), log it and update the best checkpoint."""
        res: dict[str, Any] = {}
        if self.dist.is_main:
            res = self.evaluate()
            self.log.log_val(self.step, res)
            if self.config.progress_bar:
                line = f"[step {self.step}] {_val_line(res)}"
                bar = getattr(self, "_bar", None)
                if bar is not None and hasattr(bar, "write"):  # above the progress bar, not glued to it
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr)
            if res["all"]["psnr"] > self.best["psnr"]:
                self.best = {"psnr": res["all"]["psnr"], "ssim": res["all"]["ssim"], "step": self.step}
                self.save_best()
        if self.dist.enabled:
            dist.barrier()
        return res

    # ------------------------------------------------------------------ curves
    def plot_curves(self) -> Path | None:
        """Save ``curves.png`` (training loss; validation PSNR per degradation) if matplotlib is installed.

        Returns:
            The PNG path, or ``None`` without matplotlib or without logged values.
        """
        return plot_training_curves(self.history, self.out_dir / "curves.png")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (model, optimizer, scheduler, scaler, EMA, counters, RNG, config, logs)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": plain_metrics(self.best),
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "model_config": getattr(self.model, "config", None),
            "arch": type(self.model).__name__,
            **self.log.state_dict(),
        }
        if hasattr(self.batch_augment, "state_dict"):
            state["batch_augment"] = self.batch_augment.state_dict()  # type: ignore[union-attr]
        if hasattr(self.loss_fn, "state_dict") and isinstance(self.loss_fn, nn.Module):
            state["loss"] = self.loss_fn.state_dict()
        return state

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write a training checkpoint atomically (main process only).

        Without ``path`` it is ``checkpoints/step_XXXXXXXX.pt``, and older periodic checkpoints are
        removed down to ``keep_last`` (with any of a higher step left by an earlier run in the folder).

        Returns:
            The path written (``None`` on other processes).
        """
        self._last_save_time = time.monotonic()
        self._saved_step = self.step
        if not self.dist.is_main:
            return None
        periodic = path is None
        p = write_checkpoint(
            self.ckpt_dir / step_checkpoint_name(self.step) if path is None else path, self.state_dict()
        )
        if periodic:
            self.last_checkpoint = p
            rotate_checkpoints(self.ckpt_dir, self.step, self.config.keep_last)
        return p

    def save_best(self) -> Path | None:
        """Write ``checkpoints/best.pt``: the validated weights (EMA ones with ``ema_decay``), config and metrics.

        It holds no optimizer state (a quarter of a training checkpoint with Adam and EMA); load it with
        :func:`allinone_ir.load_checkpoint`, ``allinone-ir restore --checkpoint``, or ``trainer.init_weights``.

        Returns:
            The path written (``None`` on other processes).
        """
        if not self.dist.is_main:
            return None
        weights = self.ema.module if self.ema is not None else self.model
        state = best_weights_state(
            weights, self.model, step=self.step, best=self.best, ema_weights=self.ema is not None
        )
        return write_checkpoint(self.ckpt_dir / "best.pt", state)

    def find_latest_checkpoint(self) -> Path | None:
        """The periodic checkpoint with the highest step in ``output_dir/checkpoints``, if any."""
        return find_latest_checkpoint(self.ckpt_dir)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (``weights_only`` loading).

        When this run's :class:`TrainerConfig` differs from the checkpoint's, a warning names each
        changed field and the value used: this run's, made consistent with the restored state (the
        optimizer's settings and the learning-rate schedule are this run's, continued at the restored
        step), except ``init_weights`` (the weights come from the checkpoint). ``config`` then holds
        what actually runs, and so do ``config.json`` and later checkpoints.

        Raises:
            CheckpointError: If the file is missing or unreadable, is not a training checkpoint, or does not
                fit the configured network or optimizer (one line naming the file and the mismatch).
        """
        self._load_state(path, read_checkpoint(path))

    def _load_state(self, path: str | os.PathLike[str], state: dict[str, Any]) -> None:
        """Restore ``state``, read from ``path``, then make this run's settings and the restored state agree."""
        read_resume_checkpoint(path, self.model, state=state)  # the weights fit, or one line saying why not
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit the configured optimizer ({exc}; did trainer.trainable change?); "
                "start again with --resume never or use another --output-dir"
            ) from exc
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") or not self.scaler.is_enabled():  # empty: saved by a run without fp16
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.module.load_state_dict(state["ema"])
            else:  # EMA switched on at this resume: it starts from the restored weights
                self.ema = ModelEMA(self.model, self.ema.decay)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best = dict(state["best"])
        self.log.load_state_dict(state)
        set_rng_state(state["rng"])
        if "batch_augment" in state and hasattr(self.batch_augment, "load_state_dict"):
            self.batch_augment.load_state_dict(state["batch_augment"])  # type: ignore[union-attr]
        saved = state.get("config") or {}
        if (
            "loss" in state
            and isinstance(self.loss_fn, nn.Module)
            and saved.get("loss", self.config.loss) == self.config.loss
        ):
            self.loss_fn.load_state_dict(state["loss"])
        self._iter = None
        self.last_checkpoint = Path(path)
        self._saved_step = self.step
        note = self._reconcile_config(path, saved, fresh_groups)
        if note is None:
            return
        if self._resume_notes is not None:
            self._resume_notes.append(note)
        elif self.dist.is_main:
            warnings.warn(note, UserWarning, stacklevel=3)

    #: Fields that say where a run is and how it shows progress, not what it trains: not compared on resume.
    _UNCOMPARED = frozenset({"output_dir", "resume", "progress_bar", "plot", "num_workers", "device"})
    #: Fields whose value on resume is the checkpoint's, with the reason.
    _KEPT_ON_RESUME = {"init_weights": "the weights come from the checkpoint"}
    #: Fields that shape the optimizer's hyper-parameters and the learning-rate schedule.
    _OPTIMIZATION = frozenset(
        {"optimizer", "lr", "min_lr", "weight_decay", "betas", "warmup_steps", "warmup_start_factor", "schedule",
         "max_steps"}
    )  # fmt: skip

    def _reconcile_config(
        self, path: str | os.PathLike[str], saved: Mapping[str, Any], fresh_groups: list[dict[str, Any]]
    ) -> str | None:
        """After a resume: apply this run's settings where they differ from the checkpoint's; the note saying so.

        Every changed field takes this run's value, made consistent with the restored state: the
        optimizer's hyper-parameters and the learning-rate schedule are those of this run's config,
        evaluated at the restored step (never the old ``lr`` under a new schedule); a changed
        ``batch_size`` continues the epoch at the same sample (rounded down to a whole batch). The
        fields of ``_KEPT_ON_RESUME`` keep the checkpoint's value, and ``self.config`` is updated to
        what runs. Returns ``None`` when nothing differs.
        """
        ours = self.config.to_dict()
        changed = [k for k in ours if k in saved and k not in self._UNCOMPARED and saved[k] != ours[k]]
        if not changed:
            return None
        kept = [k for k in changed if k in self._KEPT_ON_RESUME]
        used = [k for k in changed if k not in kept]
        if kept:
            self.config = dataclasses.replace(self.config, **{k: saved[k] for k in kept})
        if any(k in self._OPTIMIZATION for k in used):
            for group, fresh in zip(self.optimizer.param_groups, fresh_groups, strict=True):
                group.update({k: v for k, v in fresh.items() if k != "lr"})  # this run's betas, decay, ...
            self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
            lrs = [
                base * f(self.scheduler.last_epoch)
                for base, f in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True)
            ]
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            self.scheduler._last_lr = lrs  # what get_last_lr() reports
        if "batch_size" in used:
            self.batch_in_epoch = self.batch_in_epoch * int(saved["batch_size"]) // self.config.batch_size

        def show(k: str) -> str:
            return f"{k} {saved[k]!r} -> {ours[k]!r}"

        parts = []
        if used:
            parts.append(
                f"{', '.join(show(k) for k in used)}: this run's values are used"
                + (
                    f" (the learning-rate schedule is this run's, continued at step {self.step}: "
                    f"lr {self.optimizer.param_groups[0]['lr']:.3g} now)"
                    if any(k in self._OPTIMIZATION for k in used)
                    else ""
                )
            )
        for k in kept:
            parts.append(f"{show(k)}: the checkpoint's value is kept ({self._KEPT_ON_RESUME[k]})")
        return (
            f"the config differs from checkpoint {path}'s: "
            + "; ".join(parts)
            + "; config.json records what runs"
        )
