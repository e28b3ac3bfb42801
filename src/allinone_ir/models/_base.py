"""Common behaviour of the restoration networks: input checks, padding, recorded config, family declarations,
the per-level hook points of the U-Net skeletons."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ..errors import AllInOneIRError, ModelArgumentError, UsageError
from ..layers.padding import pad_to_multiple
from ..layers.stage import Stage

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class AuxiliaryLoss:
    """A training term of a model family, added to the main loss: ``weight * fn(model, batch, extras)``.

    Attributes:
        name: Name in the logs (``loss_<name>``) and in ``trainer.aux_weights``.
        fn: ``(unwrapped network, batch on the device, extras of split_training_output) -> scalar``.
    """

    name: str
    weight: float
    fn: Callable[[nn.Module, Mapping[str, Any], Mapping[str, torch.Tensor]], torch.Tensor]


def _plain(value: Any) -> Any:
    """A config value as JSON gives it back: sequences as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return value


def _argument_problem(
    init: Callable[..., None], sig: inspect.Signature, kwargs: Mapping[str, Any], exc: Exception
) -> str:
    """Why a constructor call does not bind, with the arguments it takes and close matches."""
    owner = init.__qualname__.split(".")[-2]  # Class.__init__
    takes = [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in kwargs if k not in sig.parameters]
    if not unknown:
        return f"{owner}: {exc}"
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, takes, n=3, cutoff=0.6)
        hints.append(f"{k!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return f"{owner} does not take the argument{'s' * (len(unknown) > 1)} {', '.join(hints)}; it takes: {', '.join(takes)}"


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a constructor so that it stores its keyword-only arguments as ``self.config``."""
    sig = inspect.signature(init)
    names = [n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise ModelArgumentError(_argument_problem(init, sig, kwargs, exc)) from None
        bound.apply_defaults()
        own = {n: _plain(bound.arguments[n]) for n in names}
        # the outermost constructor records; an inner one adds what the outer forwarded as **kwargs
        outer = "config" not in self.__dict__
        if outer:
            object.__setattr__(self, "config", own)
            object.__setattr__(self, "_config_merge", var_kw)
        elif self.__dict__.pop("_config_merge", False):
            self.config.update({k: v for k, v in own.items() if k not in self.config})
        try:
            init(self, *args, **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            if not outer or isinstance(exc, (AllInOneIRError, torch.cuda.OutOfMemoryError)):
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its defaults"
            raise ModelArgumentError(f"{type(self).__name__} cannot be built with {given}: {exc}") from exc
        if outer:
            self.__dict__.pop("_config_merge", None)

    __init__.__records_config__ = True  # type: ignore[attr-defined]
    return __init__


class RecordsConfig:
    """Mixin: every subclass's constructor records its keyword-only arguments (defaults filled in, sequences
    as lists) as ``self.config``: ``type(model)(**model.config)`` rebuilds the network.

    Examples:
        >>> class Net(RecordsConfig, nn.Module):
        ...     def __init__(self, *, width: int = 8, depths: Sequence[int] = (1, 2)) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, width, 1)
        >>> Net(depths=(3,)).config
        {'width': 8, 'depths': [3]}
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__records_config__", False):
            cls.__init__ = _recording(init)  # type: ignore[method-assign]


class RestorationModel(RecordsConfig, nn.Module):
    """Base class of the networks: validates inputs, pads to ``pad_multiple``, records its config.

    Subclasses set ``in_channels`` and ``out_channels`` and implement ``forward``; the members below declare
    what the hub, the trainer and the CLI need to know about the family.

    Attributes:
        accepts_degradation: Whether ``forward`` takes a ``degradation`` argument (PIP networks).
        finetune_groups: ``{name: (pattern, ...)}`` for :func:`~allinone_ir.training.finetune.unfreeze`.
        demo_choices: How ``allinone-ir demo`` offers the family: ``{"--model choice": "registered model"}``.
        unused_modules: Modules the official network builds but never uses (checkpoint keys dropped).
    """

    accepts_degradation: ClassVar[bool] = False
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    demo_choices: ClassVar[Mapping[str, str]] = {}
    unused_modules: ClassVar[Sequence[str]] = ()

    in_channels: int
    out_channels: int
    pad_multiple: int = 1
    pad_mode: str = "reflect"

    def _pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        c, tensor = self.in_channels, isinstance(x, torch.Tensor)
        if not (tensor and x.ndim == 4 and x.shape[1] == c and x.is_floating_point() and x.numel()):
            got = f"{x.dtype} of shape {tuple(x.shape)}" if tensor else type(x).__name__
            hint = "; add a batch dimension with x.unsqueeze(0)" if tensor and x.ndim == 3 else ""
            raise UsageError(
                f"input must be a floating-point torch.Tensor with {c} channels, shape (N, {c}, H, W), "
                f"N, H, W >= 1 and values in [0, 1] (x.float() / 255 for 8-bit images); got {got}{hint}"
            )
        w, kind = next(self.parameters(), x), x.device.type
        mixed = torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)  # casts on purpose
        if w.device != x.device or (w.dtype != x.dtype and not mixed):
            raise UsageError(
                f"the input is {x.dtype} on {x.device}, the network's weights are {w.dtype} on {w.device}; "
                "move one to the other with x.to(...) or net.to(...)"
            )
        x, size = pad_to_multiple(x, self.pad_multiple, self.pad_mode)
        if self.uses_channels_last() and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # keep the whole network in one layout
        return x, size

    def uses_channels_last(self) -> bool:
        """Whether the convolution weights are stored channels-last (then the input is converted too).

        Examples:
            >>> from allinone_ir.models import NAFNet
            >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
            >>> net.uses_channels_last(), net.to(memory_format=torch.channels_last).uses_channels_last()
            (False, True)
        """
        for p in self.parameters():
            # 1x1 kernels are both NCHW and channels-last contiguous: look further
            if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) != p.is_contiguous():
                return p.is_contiguous(memory_format=torch.channels_last)
        return False

    @staticmethod
    def _crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x[..., : size[0], : size[1]]

    def grad_checkpointing_stages(self) -> list[str]:
        """Names of the levels (:class:`~allinone_ir.layers.stage.Stage` modules) that can be checkpointed."""
        return [name for name, m in self.named_modules() if isinstance(m, Stage)]

    def set_grad_checkpointing(self, enable: bool = True, stages: Iterable[str] | None = None) -> None:
        """Recompute the activations of the levels ``stages`` (default all) in the backward pass.

        Raises:
            UsageError: If a name is not a level of this network.
        """
        known = {name: m for name, m in self.named_modules() if isinstance(m, Stage)}
        names = list(known) if stages is None else list(stages)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"not checkpointable levels: {unknown}; levels are {list(known)}")
        for n in names:
            known[n].grad_checkpointing = enable

    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for ``forward`` in a training step, read from the batch (default: none)."""
        return {}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split what ``forward(**training_forward_kwargs(batch))`` returned into the image and extras."""
        return output, {}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """The family's auxiliary training terms, added to the main loss by the trainer (default: none)."""
        return []

    @classmethod
    def small_config(cls, *, degradations: Sequence[str], smoke: bool = False) -> dict[str, Any]:
        """Overrides for a small network learning ``degradations`` in minutes on a CPU (``smoke``: smallest)."""
        raise NotImplementedError(f"{cls.__name__} declares no small configuration")

    @property
    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in getattr(self, "config", {}).items())

    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Constructor arguments read from a state dict (prefixes removed), or ``None`` if not of this class.

        Raises:
            CheckpointError: If the keys are of this class but a hyper-parameter cannot be read.
        """
        return None

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """A new dict of a checkpoint's weights under ``model``'s keys (official renames, dropped modules)."""
        own = dict(model.named_modules())
        drop = tuple(f"{m}." for m in cls.unused_modules if m not in own)
        return {k: v for k, v in state_dict.items() if not k.startswith(drop)}


def _to_official_5d(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    key = prefix + str(module.official_5d)
    if key in state_dict and state_dict[key].dim() == 4:
        state_dict[key] = state_dict[key].unsqueeze(0)


def _from_official_5d(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    key = prefix + str(module.official_5d)
    if key in state_dict and state_dict[key].dim() == 5 and state_dict[key].shape[0] == 1:
        state_dict[key] = state_dict[key][0]


def official_5d_keys(module: nn.Module) -> None:
    """Show the 4-D parameter ``module.official_5d`` as the official ``(1, ...)`` tensor in state dicts."""
    module.register_state_dict_post_hook(_to_official_5d)
    module.register_load_state_dict_pre_hook(_from_official_5d)


def as_buffers(module: M, *names: str) -> M:
    """``module`` with its parameters ``names`` turned into buffers of the same keys."""
    for full in names:
        owner_name, _, name = full.rpartition(".")
        owner = module.get_submodule(owner_name)
        p = getattr(owner, name)
        delattr(owner, name)
        owner.register_buffer(name, p.detach())
    return module


class UNetHooks:
    """Hook points of a U-Net skeleton (levels count from 1, full resolution; ``ctx``: what ``forward`` hands
    the skeleton); each returns its input unchanged unless a subclass overrides it."""

    def _latent_hook(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the latent (bottleneck) feature before the decoder upsamples it."""
        return x

    def _skip_hook(self, level: int, skip: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the encoder's skip feature of ``level`` before the decoder merges it."""
        return skip

    def _decoder_hook(self, level: int, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Transform the output of decoder ``level`` before it is upsampled (or refined, at level 1)."""
        return x
