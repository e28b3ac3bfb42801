"""Model registry in the style of timm: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

from ..errors import UnknownNameError, UsageError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ARCHITECTURES: dict[str, type[nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])
C = TypeVar("C", bound=type)


def register_model(fn: F) -> F:
    """Register a factory function under its ``__name__`` (decorator); keyword arguments override its defaults.

    Raises:
        UsageError: If a different function is already registered under the same name.
    """
    old = _MODELS.get(fn.__name__)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise UsageError(f"a model named {fn.__name__!r} is already registered by {old.__module__}")
    _MODELS[fn.__name__] = fn
    return fn


def register_architecture(cls: C) -> C:
    """Register a network class under ``cls.__name__`` (decorator): saved configs rebuild it by name and
    :func:`~allinone_ir.hub.load_checkpoint` recognises its state dicts (``detect``, ``filter_state_dict``)."""
    _ARCHITECTURES[cls.__name__] = cls
    return cls


def list_architectures() -> list[str]:
    """Names of the registered network classes, in registration order (the built-in ones first).

    Examples:
        >>> {"NAFNet", "PromptIR", "Restormer"} <= set(list_architectures())
        True
    """
    return list(_ARCHITECTURES)


def get_model_class(name: str) -> type[nn.Module]:
    """The registered network class called ``name`` (e.g. ``"PromptIR"``).

    Raises:
        UnknownNameError: If no such class is registered (the message lists close matches).
    """
    if name not in _ARCHITECTURES:
        raise UnknownNameError(_unknown("architecture", name, _ARCHITECTURES))
    return _ARCHITECTURES[name]


def _unknown(kind: str, name: object, known: Iterable[str]) -> str:
    """``"unknown <kind> 'x'. Did you mean: a, b? Known: ..."`` (close matches found case-insensitively)."""
    known = sorted(known)
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(lower), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(lower[c] for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}."


def is_model(name: str) -> bool:
    return name in _MODELS


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell-style pattern (``"nafnet*"``).

    Examples:
        >>> list_models("restormer*")[0]
        'restormer'
    """
    return [n for n in sorted(_MODELS) if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model with random weights, keyword arguments overriding its defaults.

    Raises:
        UnknownNameError: If the name is unknown (the message lists close matches).
        ModelArgumentError: If the network does not take one of ``overrides``.

    Examples:
        >>> net = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> net(torch.rand(1, 3, 20, 20)).shape
        torch.Size([1, 3, 20, 20])
    """
    if name not in _MODELS:
        raise UnknownNameError(_unknown("model", name, _MODELS))
    model = _MODELS[name](**overrides)
    model.model_name = name  # type: ignore[assignment]
    return model
