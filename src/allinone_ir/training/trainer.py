"""The training loop: AMP, accumulation, clipping, EMA, warm-up and cosine, validation, exact resume, DDP."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
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
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, default_collate

from .. import inference
from .. import losses as L
from .._runtime import PRECISIONS, autocast, progress_bar
from ..data.datasets import _match_labels
from ..errors import (
    AllInOneIRError,
    CheckpointError,
    ConfigError,
    DatasetError,
    TrainingDivergedError,
    UnknownNameError,
    UsageError,
    UsageTypeError,
)
from ..io import _check_float_image
from ..metrics import get_protocol
from ..models._base import AuxiliaryLoss, RestorationModel
from . import checkpoint as ck
from .config import TrainerConfig
from .finetune import freeze, unfreeze
from .logs import RunLog, _write_json, plot_training_curves
from .signals import TrainingInterrupted, _StopSignals

__all__ = ["LOSSES", "LossTerm", "ModelEMA", "Trainer", "build_loss", "warmup_cosine_factor"]

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
        UnknownNameError: For an unknown name.
        UsageError: For keyword arguments the loss does not take.

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

    Attributes:
        fn: The term, given the unwrapped network, the batch on the device and the restored image.
        weight: Its weight.
        name: Name in the logs (``loss_<name>``); must differ from the family's own terms.
    """

    fn: Callable[[nn.Module, dict[str, Any], torch.Tensor], torch.Tensor]
    weight: float = 1.0
    name: str = "extra"


def warmup_cosine_factor(
    step: int,
    *,
    max_steps: int,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.1,
    min_factor: float = 0.0,
    cosine: bool = True,
) -> float:
    """Multiplier of the peak learning rate at update ``step`` (0-based): a linear warm-up from
    ``warmup_start_factor`` over ``warmup_steps``, then a cosine to ``min_factor`` at ``max_steps`` (or 1).

    Examples:
        >>> [round(warmup_cosine_factor(s, max_steps=10, warmup_steps=2, min_factor=0.0), 3) for s in (0, 1, 2, 6, 10)]
        [0.1, 0.55, 1.0, 0.5, 0.0]
    """
    if warmup_steps and step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if not cosine:
        return 1.0
    t = min(max(step - warmup_steps, 0) / max(max_steps - warmup_steps, 1), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class ModelEMA(nn.Module):
    r"""A frozen copy of a model whose floating-point weights track :math:`w_{ema} \leftarrow d\,w_{ema} + (1 - d)\,w`
    (other buffers are copied); calling it runs the copy.

    Args:
        model: The model to track (its current weights start the average).
        decay: The decay ``d``, in (0, 1).

    Examples:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> ema = ModelEMA(net, decay=0.5)
        >>> w0 = float(ema.module.weight)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> ema.update(net)
        >>> round(float(ema.module.weight), 4) == round(0.5 * w0 + 0.5, 4)
        True
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise UsageError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        src = model.state_dict()
        for name, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[name].detach().to(v.dtype), 1.0 - self.decay)
            else:
                v.copy_(src[name])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


@dataclass(frozen=True)
class _DistInfo:
    """This process's ``rank`` of ``world_size``; rank 0 logs, validates and writes checkpoints."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _distributed(name: str) -> tuple[torch.device, _DistInfo]:
    """This process's device (``"auto"``: its GPU, else MPS, else CPU) and the ``torchrun`` group it joins."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # "cuda": this process's GPU (torchrun's LOCAL_RANK)
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return device, _DistInfo()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return device, _DistInfo(dist.get_rank(), dist.get_world_size())


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    def move(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        layout = torch.channels_last if channels_last and v.ndim == 4 else torch.preserve_format
        return v.to(device, non_blocking=True, memory_format=layout)

    return {k: move(v) for k, v in batch.items()}


def _batches(loader: DataLoader) -> Iterator[Any]:
    """``loader``'s batches; an error of a worker is raised with its own message, not the worker's traceback."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (AllInOneIRError, OSError) as exc:  # torch's message: "Caught ... Traceback ... Type: message"
            text = str(exc).strip()
            if "in DataLoader worker process" not in text:
                raise
            raise type(exc)(text.splitlines()[-1].split(": ", 1)[-1]) from exc
        yield batch


def _collate(samples: list[Any], *, batch_size: str) -> Any:
    """``default_collate``, or one line naming two images of different sizes (whole images in a batch of 2+)."""
    first, name = samples[0]["degraded"], samples[0].get("name", "sample 0")
    for i, sample in enumerate(samples[1:], 1):
        if (image := sample["degraded"]).shape != first.shape:
            raise DatasetError(
                f"{name} is {first.shape[-1]}x{first.shape[-2]} but {sample.get('name', f'sample {i}')} is "
                f"{image.shape[-1]}x{image.shape[-2]}: images of different sizes cannot share a batch; set "
                f"{batch_size} to 1, or a patch_size"
            )
    return default_collate(samples)


def _check_sample(data: Any, where: str) -> None:
    """The first sample of ``data``: a mapping with float ``"degraded"`` and ``"clean"`` images in [0, 1]."""
    sample = data[0] if data is not None and len(data) else None
    if sample is None:
        return
    if not isinstance(sample, Mapping) or not {"degraded", "clean"} <= set(sample):
        got = (
            f"keys {sorted(map(str, sample))}"
            if isinstance(sample, Mapping)
            else f"a {type(sample).__name__}"
        )
        raise DatasetError(
            f"{where}: a sample must be a mapping with 'degraded' and 'clean' image tensors (and 'label' for "
            f"PIP), got {got}"
        )
    for key in ("degraded", "clean"):
        _check_float_image(sample[key], f"{where}: sample 0's {key!r}")


class Trainer:
    """Train a restoration network on a dataset of ``{"degraded", "clean", "label", ...}`` samples.

    Checkpoints are written every ``save_every`` updates / ``save_every_minutes`` and on SIGINT / SIGTERM, and
    resumed bit for bit; the family's training terms are added (``config.aux_weights``).

    Args:
        loss: Main loss (default: ``build_loss(config.loss, **config.loss_kwargs)``).
        batch_augment: Applied to every batch on the device; its ``state_dict`` (if any) is checkpointed.

    Attributes:
        start_message: The line printed at construction (where the run starts).
        aux_losses: The family's training terms with their weights.

    Raises:
        ConfigError: Naming the setting (``trainer.<field>: ...``).
        CheckpointError: If the checkpoint to resume from is missing, unreadable or does not fit.
        UsageError: If another run holds the output folder (locked until :meth:`fit` returns).
        DatasetError: When a degradation of the data is not one of a PIP network's (``data.train: ...``).

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

    #: Not compared on resume: where a run is and how it shows progress.
    _UNCOMPARED = frozenset({"output_dir", "resume", "progress_bar", "plot", "num_workers", "device"})
    #: Fields whose value on resume is the checkpoint's, with the reason.
    _KEPT_ON_RESUME = {"init_weights": "the weights come from the checkpoint"}
    #: Fields that shape the optimizer's hyper-parameters and the learning-rate schedule.
    _OPTIMIZATION = frozenset(
        {"optimizer", "lr", "weight_decay", "betas"}  # the optimizer's
        | {"min_lr", "max_steps", "warmup_steps", "warmup_start_factor", "schedule"}  # the schedule's
    )

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
        for where, data in (("data.train", train_data), ("data.val", val_data)):
            _check_sample(data, where)
        degradations = getattr(model, "degradations", None)
        if getattr(model, "accepts_degradation", False) and degradations:
            # labels become positions in the network's degradations; an error names the data as a config does
            for where, data in (("data.train", train_data), ("data.val", val_data)):
                try:
                    _match_labels(data, degradations, type(model).__name__)
                except DatasetError as exc:
                    raise DatasetError(f"{where}: {exc}") from None
        self.config, self.train_data, self.val_data = config, train_data, val_data
        self.extra_losses, self.batch_augment = list(extra_losses), batch_augment
        self.out_dir = Path(config.output_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.device, self.dist = _distributed(config.device)
        if self.device.type == "cuda" and self.dist.enabled:  # nccl's collectives use the current device
            torch.cuda.set_device(self.device)
        self.precision = config.precision
        if self.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            warnings.warn("bf16 is not supported on this GPU; training in fp32", stacklevel=2)
            self.precision = "fp32"
        elif self.device.type == "cpu" and not inference.native_low_precision(
            PRECISIONS[self.precision], "cpu"
        ):
            slow = (
                f"{self.precision} is emulated on this CPU (no native support), so training runs much slower "
                "than in fp32; use precision fp32 here (trainer: {precision: fp32} in a config)"
            )
            warnings.warn(slow, RuntimeWarning, stacklevel=2)
        #: Whether the network and batches are channels-last (``config.channels_last``, else the device's choice).
        last = config.channels_last
        self.channels_last = inference.prefers_channels_last(self.device) if last is None else last
        # held from before the resume reads the folder until fit() returns
        self._lock = ck.RunFolderLock(self.out_dir)
        if self.dist.is_main:
            self._lock.acquire()
        try:
            self.model = self._prepare_model(model)
            self.optimizer, self.scheduler = self._build_optimization()
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
            self.ema = ModelEMA(self.model, config.ema_decay) if config.ema_decay else None
            try:
                self.loss_fn = loss if loss is not None else build_loss(config.loss, **config.loss_kwargs)
            except ValueError as exc:
                raise ConfigError(f"trainer.loss: {exc}") from exc
            if isinstance(self.loss_fn, nn.Module):
                self.loss_fn = self.loss_fn.to(self.device)
            self.aux_losses: list[AuxiliaryLoss] = self._family_terms()
            self.protocol = get_protocol(config.metric_protocol)
            self.net: nn.Module = self.model
            if self.dist.enabled:
                cuda = self.device.type == "cuda"
                self.net = DDP(self.model, device_ids=[self.device.index] if cuda else None)
            if config.compile:
                self.net = torch.compile(self.net)  # type: ignore[assignment]
            n = len(train_data)  # type: ignore[arg-type]
            if n // self.dist.world_size < config.batch_size:
                raise ConfigError(
                    f"trainer.batch_size: the training set has {n} samples, fewer than one global batch of "
                    f"{config.batch_size * self.dist.world_size}; lower batch_size or add data"
                )
            self.step = self.epoch = self.batch_in_epoch = 0
            self.best: dict[str, Any] = {"psnr": -math.inf, "step": -1}
            self.log = RunLog(self.out_dir)
            self.last_checkpoint: Path | None = None
            self._iter: Iterator[dict[str, Any]] | None = None
            self._bar: Any = None
            self.start_message, notes = self._resume()
        except BaseException:
            self._lock.release(remove_empty_folder=True)
            raise
        if self.dist.is_main:
            print(self.start_message, file=sys.stderr, flush=True)
            for note in notes:
                warnings.warn(note, UserWarning, stacklevel=2)

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """The network on the device and layout, with its initial weights, recomputation and frozen parts."""
        cfg = self.config
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        if cfg.init_weights:
            ck.load_init_weights(model, cfg.init_weights)
        if cfg.grad_checkpointing:
            set_grad_checkpointing = getattr(model, "set_grad_checkpointing", None)
            if set_grad_checkpointing is None:
                raise ConfigError(
                    f"trainer.grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing()"
                )
            set_grad_checkpointing(True)
        if cfg.trainable is not None:
            freeze(model)
            try:
                unfreeze(model, cfg.trainable)
            except ValueError as exc:
                raise ConfigError(f"trainer.trainable: {exc}") from exc
        return model

    def _build_optimization(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("trainer.trainable: the model has no trainable parameters")
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: warmup_cosine_factor(
                s,
                max_steps=cfg.max_steps,
                warmup_steps=cfg.warmup_steps,
                warmup_start_factor=cfg.warmup_start_factor,
                min_factor=cfg.min_lr / cfg.lr,
                cosine=cfg.schedule == "cosine",
            ),
        )
        return optimizer, scheduler

    def _family_terms(self) -> list[AuxiliaryLoss]:
        declared = self.model.auxiliary_losses() if isinstance(self.model, RestorationModel) else []
        weights, aux = {t.name: t.weight for t in declared}, self.config.aux_weights
        family = type(self.model).__name__
        unknown = sorted(set(aux) - set(weights))
        if unknown:
            raise ConfigError(
                f"trainer.aux_weights: {unknown[0]!r} is not a training term of {family}; "
                + (f"its terms are {list(weights)}" if weights else "it declares none")
            )
        for term in self.extra_losses:
            if term.name in weights:
                raise ConfigError(
                    f"extra loss {term.name!r} is already a training term of {family} (weight "
                    f"{weights[term.name]}); remove it from the extra losses and set its weight with "
                    f"trainer.aux_weights = {{{term.name} = ...}} instead"
                )
        return [dataclasses.replace(t, weight=float(aux.get(t.name, t.weight))) for t in declared]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every logged row of the run (``{"kind": "train" | "val", "step", ...}``), as in ``history.json``."""
        return self.log.history

    def checkpoint_size(self) -> int:
        """Approximate bytes of one training checkpoint: the weights, Adam's two moments, the EMA copy."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        trainable = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        return weights * (2 if self.ema is not None else 1) + trainable * 2

    def _resume(self) -> tuple[str, list[str]]:
        """Where the run starts, and the warnings to give after saying so."""
        mode, found = self.config.resume, [p for _, p in reversed(ck._periodic(self.ckpt_dir))]
        if mode == "never":  # they are removed when fit() starts
            n = len(found)
            old = f"; this run replaces the {n} checkpoint(s) and the logs of an earlier run" if n else ""
            return f"resume=never: starting at step 0{old} in {self.out_dir}", []
        if mode == "auto" and not found:
            return f"no checkpoint in {self.ckpt_dir}: starting at step 0", []
        bad: list[tuple[Path, str]] = []
        for path in found if mode == "auto" else [Path(mode)]:  # auto: the newest intact one
            try:
                state = ck._read_checkpoint(path)
            except CheckpointError as exc:
                if mode != "auto":
                    raise
                bad.append((path, str(exc)))
                continue
            notes = self._load_state(path, state)  # first why this checkpoint, then what differs from it
            # a path given: fit() rotates away the folder's newer checkpoints (all of them: another run's path)
            foreign = path.resolve().parent != self.ckpt_dir.resolve()
            others = [p for s, p in ck._periodic(self.ckpt_dir) if foreign or s > self.step]
            if mode != "auto" and others:
                notes.append(
                    f"{self.out_dir} holds {len(others)} other checkpoint(s) (newest {others[-1].name}); resuming "
                    f"from {path}, this run replaces them and cuts the logs back to step {self.step}"
                )
            for p, reason in reversed(bad):  # set aside as NAME.unreadable, never rotated away
                kept = p.with_name(p.name + ".unreadable")
                try:
                    if self.dist.is_main:
                        os.replace(p, kept)
                except OSError:  # another process of the run moved it, or the folder is read-only
                    kept = p
                used = f"resumed from the newest intact checkpoint {path} instead"
                notes.insert(0, f"{reason}; {used}; the unreadable file is kept as {kept}")
            return f"resumed from {path} at step {self.step}", notes
        raise CheckpointError(
            f"no readable checkpoint in {self.ckpt_dir} ({'; '.join(r for _, r in bad)}); start again with "
            "--resume never (resume='never') or use another --output-dir"
        )

    def _load_state(self, path: str | os.PathLike[str], state: dict[str, Any]) -> list[str]:
        """Restore ``state``, read from ``path``, then apply this run's settings; the notes."""
        misfit = ck._describe_misfit(self.model, state["model"], state.get("model_config"))
        if misfit is not None:
            raise CheckpointError(
                f"checkpoint {path} does not fit the configured model ({misfit}); start again with "
                "--resume never (resume='never') or use another --output-dir"
            )
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
        if self.ema is not None:  # switched on at this resume: it starts from the restored weights
            self.ema.module.load_state_dict(state.get("ema") or self.model.state_dict())
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best = dict(state["best"])
        self.log.load_state_dict(state)
        ck._set_rng_state(state["rng"])
        if "batch_augment" in state and hasattr(self.batch_augment, "load_state_dict"):
            self.batch_augment.load_state_dict(state["batch_augment"])  # type: ignore[union-attr]
        saved = state.get("config") or {}
        same_loss = saved.get("loss", self.config.loss) == self.config.loss
        if "loss" in state and isinstance(self.loss_fn, nn.Module) and same_loss:
            self.loss_fn.load_state_dict(state["loss"])
        self.last_checkpoint = Path(path)
        return self._reconcile_config(path, saved, fresh_groups)

    def _reconcile_config(
        self, path: str | os.PathLike[str], saved: Mapping[str, Any], fresh_groups: list[dict[str, Any]]
    ) -> list[str]:
        """Apply this run's settings (the schedule at the restored step) where they differ from the checkpoint's."""
        ours = self.config.to_dict()
        changed = [k for k in ours if k in saved and k not in self._UNCOMPARED and saved[k] != ours[k]]
        if not changed:
            return []
        kept = [k for k in changed if k in self._KEPT_ON_RESUME]
        used = [k for k in changed if k not in kept]
        if kept:
            self.config = dataclasses.replace(self.config, **{k: saved[k] for k in kept})
        optimization = any(k in self._OPTIMIZATION for k in used)
        if optimization:
            for group, fresh in zip(self.optimizer.param_groups, fresh_groups, strict=True):
                group.update({k: v for k, v in fresh.items() if k != "lr"})  # this run's betas, decay, ...
                group["lr"] = group["initial_lr"] * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # get_last_lr()
        if "batch_size" in used:
            self.batch_in_epoch = self.batch_in_epoch * int(saved["batch_size"]) // self.config.batch_size
        shown = {k: f"{k} {saved[k]!r} -> {ours[k]!r}" for k in changed}
        parts = [f"{shown[k]}: the checkpoint's value is kept ({self._KEPT_ON_RESUME[k]})" for k in kept]
        if used:
            lr = self.optimizer.param_groups[0]["lr"]
            how = f"the learning-rate schedule is this run's, continued at step {self.step}: lr {lr:.3g} now"
            values = ", ".join(shown[k] for k in used)
            parts.insert(0, f"{values}: this run's values are used" + (f" ({how})" if optimization else ""))
        text = "; ".join(parts)
        return [f"the config differs from checkpoint {path}'s: {text}; config.json records what runs"]

    def _next_batch(self) -> dict[str, Any]:
        cfg = self.config
        while True:
            if self._iter is None:
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(self.epoch)
                # one permutation per (seed, epoch) dealt to the processes: the same batches at any world size
                n, world = len(self.train_data), self.dist.world_size  # type: ignore[arg-type]
                g = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch)
                indices = torch.randperm(n, generator=g).tolist()[: n - n % world][self.dist.rank :: world]
                loader = DataLoader(
                    self.train_data,
                    batch_size=cfg.batch_size,
                    sampler=indices[self.batch_in_epoch * cfg.batch_size :],
                    drop_last=True,
                    num_workers=cfg.num_workers,
                    collate_fn=functools.partial(_collate, batch_size="trainer.batch_size"),
                    pin_memory=self.device.type == "cuda",
                )
                self._iter = _batches(loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch_in_epoch += 1
            return batch

    def _forward(self, net: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        if getattr(self.model, "accepts_degradation", False) and "label" in batch:
            out = net(batch["degraded"], degradation=batch["label"])
        else:
            out = net(batch["degraded"])
        if not isinstance(out, torch.Tensor):
            raise UsageTypeError(
                f"{type(self.model).__name__}'s forward must return the restored image tensor, got a "
                f"{type(out).__name__}; return the image alone (or subclass RestorationModel and split the "
                "outputs in split_training_output)"
            )
        return out

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training forward pass through the (DDP) wrapper, and the weighted loss with its parts."""
        with autocast(self.device, self.precision):
            if isinstance(self.model, RestorationModel):
                output = self.net(batch["degraded"], **self.model.training_forward_kwargs(batch))
                out, extras = self.model.split_training_output(output)
            else:
                out, extras = self._forward(self.net, batch), {}
        total = self.loss_fn(out.float(), batch["clean"].float())
        parts = {"loss_main": float(total.detach())}
        terms = [(a.name, a.weight, a.fn(self.model, batch, extras)) for a in self.aux_losses]
        terms += [(t.name, t.weight, t.fn(self.model, batch, out)) for t in self.extra_losses]
        for name, weight, value in terms:
            parts[f"loss_{name}"] = float(value.detach())
            total = total + weight * value  # weight 0 still uses the term's parameters (DDP)
        return total, parts

    def _train_step(self) -> dict[str, float]:
        """One optimizer update (``grad_accum_steps`` batches); returns the logged values."""
        cfg, n = self.config, self.config.grad_accum_steps
        self.net.train()
        if hasattr(self.loss_fn, "set_progress"):
            self.loss_fn.set_progress(self.step / cfg.max_steps)  # type: ignore[operator]
        sums: dict[str, float] = {}
        for micro in range(n):
            batch = _to_device(self._next_batch(), self.device, self.channels_last)
            if self.batch_augment is not None:
                batch = self.batch_augment(batch)
            no_sync = getattr(self.net, "no_sync", contextlib.nullcontext)
            sync = no_sync() if self.dist.enabled and micro < n - 1 else contextlib.nullcontext()
            with sync, warnings.catch_warnings():
                # channels-last: DDP copies gradients that come in either stride order into its buckets, and warns
                warnings.filterwarnings("ignore", message=".*Grad strides do not match bucket view strides")
                loss, parts = self._loss(batch)
                self._check_finite(loss)
                self.scaler.scale(loss / n).backward()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v / n
        if self.dist.enabled:  # the logged losses are the global batch's, as in one process
            values = torch.tensor(list(sums.values()), dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            sums = dict(zip(sums, (values / self.dist.world_size).tolist(), strict=True))
        row: dict[str, float] = {}
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return {"step": self.step, "loss": sums.pop("loss"), "lr": lr, **sums, **row}

    def _max_over_ranks(self, value: float) -> float:
        """``value``'s maximum over the processes, so that they all stop at the same update."""
        if not self.dist.enabled:
            return value
        flag = torch.tensor(float(value), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item()

    def _last_good(self, prefix: str) -> str:
        good = self.last_checkpoint or next((p for _, p in reversed(ck._periodic(self.ckpt_dir))), None)
        return f"{prefix} {good}" if good else "no checkpoint had been written yet"

    def _check_finite(self, loss: torch.Tensor) -> None:
        if self._max_over_ranks(0.0 if torch.isfinite(loss.detach()).all() else 1.0):
            good = self._last_good("the last good checkpoint is")
            raise TrainingDivergedError(
                f"loss is {float(loss.detach())} at step {self.step + 1} (epoch {self.epoch}); training stopped "
                f"without saving the broken weights; {good}. Try a lower lr, grad_clip, or bf16/fp32 instead of fp16."
            )

    def fit(self, steps: int | None = None) -> dict[str, Any]:
        """Train until ``config.max_steps`` (or only until update ``steps``, to simulate an interruption).

        Returns:
            ``step``, ``loss``, ``best`` (validation PSNR and step), ``val``, ``output_dir`` and ``checkpoint``.

        Raises:
            TrainingInterrupted: On SIGINT / SIGTERM, after writing the checkpoint (every process raises it).
            TrainingDivergedError: If the loss becomes NaN or infinite.
            UsageError: If another run holds the output folder (``OUTPUT_DIR/.train.lock``).
            OSError: With ``errno.ENOSPC`` when the disk fills up (the earlier checkpoints are intact).
        """
        cfg, main = self.config, self.dist.is_main
        stop_at = cfg.max_steps if steps is None else min(steps, cfg.max_steps)
        if main:
            self._lock.acquire()
        last_val: dict[str, Any] = {}
        row: dict[str, Any] = {}
        try:
            if main:  # the config; the checkpoints (resume=never: none) and logs cut back to this step
                model_config = getattr(self.model, "config", None)
                _write_json(self.out_dir / "config.json", {"trainer": cfg.to_dict(), "model": model_config})
                ck._rotate(self.ckpt_dir, self.step, cfg.keep_last)
                self.log.start(self.step)
                if cfg.progress_bar:
                    options: dict[str, Any] = {"desc": "train", "unit": "step", "dynamic_ncols": True}
                    self._bar = progress_bar(total=stop_at, initial=self.step, file=sys.stderr, **options)
            t0, seen, self._last_save_time = time.perf_counter(), 0, time.monotonic()
            with _StopSignals(announce=main) as stop:
                while self.step < stop_at:
                    row = self._train_step()
                    seen += cfg.batch_size * cfg.grad_accum_steps * self.dist.world_size
                    self.log.accumulate(row)
                    speed = seen / max(time.perf_counter() - t0, 1e-9)
                    if self._bar is not None:
                        self._bar.update(1)
                        self._bar.set_postfix(
                            loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", img_s=f"{speed:.1f}"
                        )
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        if main:
                            means = self.log.window_means()
                            self.log.log_train({**row, **means, "epoch": self.epoch, "images_per_s": speed})
                        self.log.reset_window()
                    every = cfg.val_every and self.step % cfg.val_every == 0
                    if self.val_data is not None and (every or self.step == cfg.max_steps):
                        last_val = self._validate()
                    due = cfg.save_every and self.step % cfg.save_every == 0
                    late = 0 < cfg.save_every_minutes <= (time.monotonic() - self._last_save_time) / 60
                    if saved := bool(due or late or self.step == stop_at):
                        self._save_checkpoint()
                    if signum := int(self._max_over_ranks(stop.requested)):
                        path = self.last_checkpoint if saved else self._save_checkpoint()
                        if self.dist.enabled:  # gloo aborts a process that leaves before rank 0 has saved
                            dist.barrier()
                        raise TrainingInterrupted(signum, self.step, path)
            if main and cfg.plot:
                self.plot_curves()
        except RuntimeError as exc:
            if not self.dist.enabled or not (isinstance(exc, dist.DistError) or "by peer" in str(exc)):
                raise
            raise ConnectionError(
                f"training process {self.dist.rank} of {self.dist.world_size} lost another process of the run at "
                f"step {self.step + 1} (that process's own error says why it stopped); "
                f"{self._last_good('the last checkpoint is')}"
            ) from exc
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._lock.release()
        return {
            "step": self.step,
            "loss": row.get("loss"),
            "best": dict(self.best),
            "val": last_val,
            "output_dir": str(self.out_dir),
            "checkpoint": self.last_checkpoint,
        }

    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, dict[str, float]]:
        """PSNR / SSIM of the (EMA) model and of the inputs on ``dataset`` (default: the validation set).

        Returns:
            ``{group: {"psnr", "ssim", "input_psnr", "input_ssim", "count"}}`` by ``sample["task"]`` (else
            ``sample["degradation"]``), then ``"all"``.
        """
        data = dataset if dataset is not None else self.val_data
        if data is None:
            raise UsageError("no validation dataset given")
        net = self.ema.module if self.ema is not None else self.model
        was_training = net.training
        net.eval()
        collate = functools.partial(_collate, batch_size="trainer.val_batch_size")
        loader = DataLoader(
            data,
            batch_size=self.config.val_batch_size,
            num_workers=self.config.num_workers,
            collate_fn=collate,
        )
        rows: dict[str, list[torch.Tensor]] = {}  # per group, the values of each image
        for batch in _batches(loader):
            batch = _to_device(batch, self.device, self.channels_last)
            with autocast(self.device, self.precision):
                out = self._forward(net, batch)
            m = self.protocol.compute_per_image(out.float(), batch["clean"])
            mi = self.protocol.compute_per_image(batch["degraded"], batch["clean"])
            values = torch.stack([m["psnr"], m["ssim"], mi["psnr"], mi["ssim"]], dim=1).double().cpu()
            groups = batch.get("task", batch.get("degradation", ["all"] * out.shape[0]))
            for g, v in zip(groups, values, strict=True):
                for key in {str(g), "all"}:
                    rows.setdefault(key, []).append(v)
        net.train(was_training)
        keys = ("psnr", "ssim", "input_psnr", "input_ssim")
        return {
            g: {**dict(zip(keys, torch.stack(rows[g]).mean(0).tolist())), "count": len(rows[g])}
            for g in sorted(rows, key=lambda g: (g == "all", g))
        }

    def _validate(self) -> dict[str, Any]:
        """Evaluate on the validation set (main process), log it and update ``best.pt``."""
        res: dict[str, Any] = {}
        if self.dist.is_main:
            res = self.evaluate()
            self.log.log_val(self.step, res)
            if self.config.progress_bar:
                gains = [
                    f"{g} {m['psnr']:.2f} dB (input {m['input_psnr']:.2f}, {m['psnr'] - m['input_psnr']:+.2f})"
                    for g, m in res.items()
                ]
                write = self._bar.write if self._bar is not None else print  # above the progress bar
                write(f"[step {self.step}] val PSNR: {', '.join(gains)}", file=sys.stderr)
            if res["all"]["psnr"] > self.best["psnr"]:
                self.best = {"psnr": res["all"]["psnr"], "ssim": res["all"]["ssim"], "step": self.step}
                weights = self.ema.module if self.ema is not None else self.model
                state = ck.best_weights_state(
                    weights, self.model, step=self.step, best=self.best, ema_weights=self.ema is not None
                )
                ck.write_checkpoint(self.ckpt_dir / "best.pt", state)
        if self.dist.enabled:
            dist.barrier()
        return res

    def plot_curves(self) -> Path | None:
        """Save ``curves.png`` (loss, validation PSNR); ``None`` without matplotlib or logged values."""
        return plot_training_curves(self.history, self.out_dir / "curves.png")

    def _state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": dict(self.best),
            "rng": ck._rng_state(),
            "config": self.config.to_dict(),
            "model_config": getattr(self.model, "config", None),
            "arch": type(self.model).__name__,
            **self.log.state_dict(),
        }
        if hasattr(self.batch_augment, "state_dict"):
            state["batch_augment"] = self.batch_augment.state_dict()  # type: ignore[union-attr]
        if isinstance(self.loss_fn, nn.Module):
            state["loss"] = self.loss_fn.state_dict()
        return state

    def _save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX.pt`` and rotate down to ``keep_last`` (main process only)."""
        self._last_save_time = time.monotonic()
        if not self.dist.is_main:
            return None
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        self.last_checkpoint = ck.write_checkpoint(path, self._state_dict())
        ck._rotate(self.ckpt_dir, self.step, self.config.keep_last)
        return self.last_checkpoint
