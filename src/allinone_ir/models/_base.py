"""Common behaviour of the restoration networks: input checks, padding, recorded config, family declarations."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ModelArgumentError, UsageError
from ..layers.padding import pad_to_multiple
from ..layers.stage import Stage


def check_image_batch(x: Any, channels: int, name: str = "input") -> None:
    """Raise :class:`~allinone_ir.errors.UsageError` unless ``x`` is a floating ``(N, channels, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise UsageError(
            f"{name} must be a torch.Tensor of shape (N, {channels}, H, W), got {type(x).__name__}"
        )
    if x.ndim != 4:
        raise UsageError(
            f"{name} must have shape (N, {channels}, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if x.ndim == 3 else "")
        )
    if x.shape[1] != channels:
        raise UsageError(
            f"{name} must have {channels} channels (shape (N, {channels}, H, W)), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise UsageError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert with x.float() / 255 for 8-bit images"
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise UsageError(f"{name} must have N, H, W >= 1, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class AuxiliaryLoss:
    """A training term that a model family declares: ``weight * fn(model, batch, extras)``.

    The trainer, the config files and the demo add a family's terms (:meth:`RestorationModel.auxiliary_losses`)
    to the main loss.

    Attributes:
        name: Name in the logs (``loss_<name>``) and in config overrides (``trainer.aux_weights``).
        weight: Default weight of the term.
        fn: ``fn(model, batch, extras) -> scalar tensor``: ``model`` is the unwrapped network,
            ``batch`` the batch on the device, ``extras`` what :meth:`RestorationModel.split_training_output`
            returned besides the image (e.g. PIP's ``{"logits": ...}``).
    """

    name: str
    weight: float
    fn: Callable[[nn.Module, Mapping[str, Any], Mapping[str, torch.Tensor]], torch.Tensor]


def _plain(value: Any) -> Any:
    """A config value as JSON writes it back: sequences (not strings) as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return value


def _argument_problem(
    init: Callable[..., None], sig: inspect.Signature, kwargs: Mapping[str, Any], exc: TypeError
) -> str:
    """Why a constructor call does not bind, with the keyword arguments it takes (and close matches)."""
    owner = init.__qualname__.rsplit(".", 2)[-2] if "." in init.__qualname__ else init.__qualname__
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
    """Wrap a constructor so that it stores its keyword-only arguments (defaults filled in) as ``self.config``."""
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
        # The outermost constructor records first; the constructors it reaches through super() leave
        # the record alone, unless the outer one forwards ``**kwargs`` to them: then their record
        # (the forwarded arguments with their defaults) is merged in after.
        outer = "config" not in self.__dict__
        if outer:
            object.__setattr__(self, "config", {n: _plain(bound.arguments[n]) for n in names})
            if var_kw:
                object.__setattr__(self, "_config_merge", True)
        elif self.__dict__.pop("_config_merge", False):
            own = {n: _plain(bound.arguments[n]) for n in names}
            self.__dict__["config"].update({k: v for k, v in own.items() if k not in self.__dict__["config"]})
        init(self, *args, **kwargs)
        if outer:
            self.__dict__.pop("_config_merge", None)

    __init__.__records_config__ = True  # type: ignore[attr-defined]
    return __init__


class RecordsConfig:
    """Mixin: every subclass's constructor records its keyword-only arguments as ``self.config``.

    The keyword-only arguments of the outermost constructor call, defaults filled in, sequences as
    lists and mappings as dicts (as JSON gives them back), so ``type(model)(**model.config)`` rebuilds
    the network. Positional arguments (e.g. a wrapped backbone) are not configuration.

    Attributes:
        config: The keyword-only constructor arguments of the instance.

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
    """Base class of the networks: validates inputs, pads to the needed multiple, records its config.

    Subclasses set ``in_channels``, ``out_channels`` and ``pad_multiple`` and implement ``forward``.
    A family declares what the rest of the library needs to know about it (so that the hub, the
    trainer and the CLI name no family): :meth:`detect`, :meth:`filter_state_dict`,
    :attr:`finetune_groups`, :meth:`auxiliary_losses` (with :meth:`training_forward_kwargs` and
    :meth:`split_training_output`) and, for bf16/fp16, ``low_precision_flags``.

    Attributes:
        in_channels: Channels of the input image.
        out_channels: Channels of the output image.
        pad_multiple: ``H`` and ``W`` are padded to a multiple of this.
        pad_mode: How the input is padded (``"reflect"`` by default).
        config: Constructor arguments.
        accepts_degradation: Whether ``forward`` takes a ``degradation`` argument (PIP networks);
            :func:`allinone_ir.restore` and the trainer pass the user's degradation only to those.
    """

    accepts_degradation: ClassVar[bool] = False
    #: Module groups for staged fine-tuning: ``{name: (pattern, ...)}``, patterns as
    #: :func:`~allinone_ir.training.finetune.unfreeze` reads them; names must not be module names.
    finetune_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: How ``allinone-ir demo`` offers the family: ``{"--model choice": "registered model name"}``,
    #: built with the overrides of :meth:`small_config`; empty: the demo does not offer it.
    demo_choices: ClassVar[Mapping[str, str]] = {}

    in_channels: int
    out_channels: int
    pad_multiple: int = 1
    pad_mode: str = "reflect"
    config: dict[str, Any]

    def _pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_batch(x, self.in_channels)
        x, size = pad_to_multiple(x, self.pad_multiple, self.pad_mode)
        if self.uses_channels_last() and not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # keep the whole network in one layout
        return x, size

    def uses_channels_last(self) -> bool:
        """Whether the convolution weights are stored channels-last (then the input is converted too).

        Returns:
            ``True`` if the first 4-D parameter whose layout is unambiguous is channels-last.

        Examples:
            >>> from allinone_ir.models import NAFNet
            >>> net = NAFNet(width=8, middle_blk_num=1, enc_blk_nums=(1,), dec_blk_nums=(1,))
            >>> net.uses_channels_last(), net.to(memory_format=torch.channels_last).uses_channels_last()
            (False, True)
        """
        for p in self.parameters():
            if p.dim() == 4:  # 1x1 kernels are both NCHW and channels-last contiguous: look further
                channels_last, nchw = p.is_contiguous(memory_format=torch.channels_last), p.is_contiguous()
                if channels_last != nchw:
                    return channels_last
        return False

    @staticmethod
    def _crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x[..., : size[0], : size[1]]

    def grad_checkpointing_stages(self) -> list[str]:
        """Names of the levels (:class:`~allinone_ir.layers.stage.Stage` modules) that can be checkpointed."""
        return list(self._stages())

    def _stages(self) -> dict[str, Stage]:
        return {name: m for name, m in self.named_modules() if isinstance(m, Stage)}

    def set_grad_checkpointing(self, enable: bool = True, stages: Iterable[str] | None = None) -> None:
        """Recompute the activations of U-Net levels in the backward pass to save memory.

        Args:
            enable: Switch checkpointing on or off.
            stages: Level names (see :meth:`grad_checkpointing_stages`), e.g. ``["encoder_level1"]``;
                ``None`` means all levels.

        Raises:
            UsageError: If a name is not a level of this network.
        """
        known = self._stages()
        names = list(known) if stages is None else list(stages)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"not checkpointable levels: {unknown}; levels are {list(known)}")
        for n in names:
            known[n].grad_checkpointing = enable

    # ------------------------------------------------------------------ training recipe of the family
    def training_forward_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for ``forward`` in a training step, read from the batch (default: none).

        Everything a step needs comes out of the one ``forward`` call, so that DDP sees every parameter used.
        """
        return {}

    def split_training_output(self, output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split what ``forward(**training_forward_kwargs(batch))`` returned into the image and extras.

        Shape:
            - image: :math:`(N, C_{out}, H, W)`
        """
        return output, {}

    def auxiliary_losses(self) -> list[AuxiliaryLoss]:
        """The family's auxiliary training terms, added to the main loss by the trainer (default: none)."""
        return []

    @classmethod
    def small_config(cls, *, degradations: Sequence[str], smoke: bool = False) -> dict[str, Any]:
        """Constructor overrides of a small network (about a million parameters) that learns in minutes on a CPU.

        Args:
            degradations: The degradations the network will learn, in label order.
            smoke: The smallest configuration that still runs (tests and CI), instead.

        Raises:
            NotImplementedError: If the family declares no small configuration.
        """
        raise NotImplementedError(f"{cls.__name__} declares no small configuration")

    @property
    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in getattr(self, "config", {}).items())

    # ------------------------------------------------------------------ checkpoints of the family
    @classmethod
    def detect(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
        """Recognise a state dict of this class and read its constructor arguments (default: never).

        When several classes claim a state dict, the one whose network matches its keys and shapes best wins.

        Args:
            state_dict: Weights with the wrapper prefixes removed, possibly official, possibly on the
                ``meta`` device (read shapes, not values).

        Returns:
            Keyword arguments for ``cls(**kwargs)``, or ``None`` if the keys are not of this class.

        Raises:
            CheckpointError: If the keys are of this class but a hyper-parameter cannot be read.
        """
        return None

    @classmethod
    def filter_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], model: nn.Module
    ) -> dict[str, torch.Tensor]:
        """Turn a checkpoint's weights into ``model``'s keys (official renames, dropped modules; default: as is).

        Args:
            state_dict: Weights with the wrapper prefixes removed.
            model: The network they are loaded into.

        Returns:
            A new dict (``state_dict`` is not modified).
        """
        return dict(state_dict)


def _to_official_5d(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    key = prefix + str(module.official_5d)
    if key in state_dict and state_dict[key].dim() == 4:
        state_dict[key] = state_dict[key].unsqueeze(0)


def _from_official_5d(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    key = prefix + str(module.official_5d)
    if key in state_dict and state_dict[key].dim() == 5 and state_dict[key].shape[0] == 1:
        state_dict[key] = state_dict[key][0]


def official_5d_keys(module: nn.Module) -> None:
    """Show ``module``'s 4-D parameter named by its ``official_5d`` as the official ``(1, ...)`` 5-D tensor
    in state dicts, and load either shape (the 4-D storage lets ``channels_last`` conversion work)."""
    module.register_state_dict_post_hook(_to_official_5d)
    module.register_load_state_dict_pre_hook(_from_official_5d)


def drop_unused_modules(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, modules: Iterable[str]
) -> dict[str, torch.Tensor]:
    """``state_dict`` without the keys of ``modules`` (dotted names of official modules that the forward
    never uses) that ``model`` does not build."""
    own = dict(model.named_modules())
    drop = tuple(f"{m}." for m in modules if m not in own)
    return {k: v for k, v in state_dict.items() if not k.startswith(drop)}
