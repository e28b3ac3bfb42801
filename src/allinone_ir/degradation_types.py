"""The degradation vocabulary: names and aliases (any case, spaces, ``-``, ``_``), labels (PIP's 0-4, snow 5)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UnknownNameError, UsageError, UsageTypeError

__all__ = [
    "DEFAULT_DEGRADATIONS",
    "DEGRADATION_TABLE",
    "Degradation",
    "parse_degradation",
    "resolve_degradation_weights",
]


@dataclass(frozen=True)
class Degradation:
    """One degradation type: its label (PIP's prompt row), canonical name and aliases.

    Examples:
        >>> DEGRADATION_TABLE[4]
        Degradation(label=4, name='lowlight', aliases=('enhance',))
    """

    label: int
    name: str
    aliases: tuple[str, ...] = ()


#: Every degradation type, in label order.
DEGRADATION_TABLE: tuple[Degradation, ...] = (
    Degradation(0, "noise", ("denoise",)),
    Degradation(1, "rain", ("derain",)),
    Degradation(2, "haze", ("dehaze",)),
    Degradation(3, "blur", ("deblur",)),
    Degradation(4, "lowlight", ("enhance",)),
    Degradation(5, "snow", ("desnow",)),
)

#: Canonical name -> label.
DEGRADATION_LABELS: dict[str, int] = {d.name: d.label for d in DEGRADATION_TABLE}

#: The degradations of a PIP network by default: the five of the paper, labels 0-4.
DEFAULT_DEGRADATIONS: tuple[str, ...] = tuple(d.name for d in DEGRADATION_TABLE if d.label < 5)

#: What :func:`resolve_degradation_weights` accepts.
DegradationSpec = int | str | Mapping[Any, float] | Sequence[Any] | torch.Tensor


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_-]", "", name.lower())


_LOOKUP = {_normalise_name(k): d for d in DEGRADATION_TABLE for k in (d.name, *d.aliases)}


def _unknown(name: str, known: Sequence[str], what: str) -> UnknownNameError:
    by_key = {_normalise_name(k): k for k in known}
    close = difflib.get_close_matches(_normalise_name(name), list(by_key), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(by_key[c]) for c in close)}?" if close else ""
    return UnknownNameError(f"unknown degradation name {name!r}; {what} {list(known)}{hint}")


# a name followed by a number: "noise_25", "denoise-50", "Noise 15", "noise25"
_WITH_LEVEL = re.compile(r"^(.*?[^\d\s_-])([\s_-]*)(\d+(?:\.\d+)?)$")


def parse_degradation(spec: str) -> tuple[str, float | None]:
    """Read ``<name>`` or ``noise_<sigma>`` (0-255 scale; ``_``, ``-``, a space or nothing between).

    Returns:
        ``(canonical name, level or None)``.

    Raises:
        UsageError: For an unknown name (with the closest known names), or a level on another than noise.

    Examples:
        >>> parse_degradation("noise_15"), parse_degradation("Denoise 50"), parse_degradation("derain")
        (('noise', 15.0), ('noise', 50.0), ('rain', None))
    """
    if not isinstance(spec, str):
        raise UsageTypeError(f"a degradation specification must be a string, got {type(spec).__name__}")
    if found := _LOOKUP.get(_normalise_name(spec)):
        return found.name, None
    m = _WITH_LEVEL.match(spec.strip())
    base = _LOOKUP.get(_normalise_name(m.group(1))) if m else None
    if m is None or base is None:
        err = _unknown(spec, list(DEGRADATION_LABELS), "the known degradations are")
        raise UsageError(f"{err}; noise also takes a level: noise_<sigma>, e.g. noise_25")
    if base.name != "noise":
        raise UsageError(
            f"degradation {spec!r}: {base.name} takes no level; only noise_<sigma> does (e.g. noise_25)"
        )
    if len(m.group(2)) > 1 and m.group(2).endswith("-"):  # "noise_-5": a minus sign, not a separator
        raise UsageError(f"degradation {spec!r}: the noise sigma must be >= 0, e.g. noise_25")
    return base.name, float(m.group(3))


def default_names(count: int) -> tuple[str, ...]:
    """Names for ``count`` unnamed classes: the table's, then ``degradation6``, ..."""
    if count < 0:
        raise UsageError(f"count must be >= 0, got {count}")
    names = list(DEGRADATION_LABELS)
    return tuple(names[:count] + [f"degradation{i}" for i in range(len(names), count)])


def _canonical_or_self(name: str) -> str:
    try:
        return parse_degradation(name)[0]
    except (ValueError, TypeError):
        return _normalise_name(name)


def _name_index(name: str, names: Sequence[str]) -> int:
    """Position of ``name`` in ``names``: exact match first, then the first through the vocabulary."""
    for key in (_normalise_name, _canonical_or_self):
        table = {key(n): i for i, n in reversed(list(enumerate(names)))}
        if key(name) in table:
            return table[key(name)]
    raise _unknown(name, names, "this network knows")


def _label_index(label: int, names: Sequence[str]) -> int:
    if not 0 <= label < len(names):
        raise UsageError(
            f"degradation label {label} out of range: labels are 0..{len(names) - 1} for {list(names)}"
        )
    return label


def _one_sample(spec: Any, names: Sequence[str]) -> list[float]:
    """Weights of one sample from an int label, a name (``"rain+noise"`` for a mixture) or a mapping."""
    row = [0.0] * len(names)
    if isinstance(spec, bool):
        raise UsageTypeError("a degradation label must be an int or a name, got a bool")
    if isinstance(spec, int):
        row[_label_index(spec, names)] = 1.0
    elif isinstance(spec, str):
        parts = spec.split("+")
        if any(not p.strip() for p in parts):
            raise UsageError(f"empty degradation name in {spec!r}; use e.g. 'rain' or 'rain+noise'")
        for p in parts:
            row[_name_index(p, names)] += 1.0 / len(parts)
    elif isinstance(spec, Mapping):
        if not spec:
            raise UsageError("an empty mapping gives no degradation weights; use e.g. {'rain': 1.0}")
        for key, value in spec.items():
            idx = _name_index(key, names) if isinstance(key, str) else _label_index(int(key), names)
            w = float(value)
            if not w >= 0.0 or w == float("inf"):
                raise UsageError(f"degradation weights must be finite and non-negative, got {key!r}: {value}")
            row[idx] += w
    else:
        raise UsageTypeError(
            f"cannot read a degradation from {type(spec).__name__}; use an int label, a name such as "
            f"{names[0]!r}, 'a+b' for a mixture, or a mapping {{name: weight}}"
        )
    return row


def resolve_degradation_weights(
    degradation: DegradationSpec,
    *,
    batch_size: int,
    names: Sequence[str] = DEFAULT_DEGRADATIONS,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn the user's degradation control into PIP's non-negative degradation weights ``omega``.

    Args:
        degradation: An ``int`` label, a name or alias (``"rain+noise"``: an equal mixture) or a mapping
            ``{"rain": 0.5, "noise": 0.5}`` for the whole batch; a list of ``N`` such entries; an integer
            tensor ``(N,)`` of labels; float weights ``(N, T)``, ``(1, T)`` or ``(T,)`` (not renormalised).
        names: Degradation names of the network, in label order.
        device: Device of the result (default the tensor's own or the CPU).

    Raises:
        UsageError: Wrong shape or length, negative or non-finite weights, labels out of range, unknown names.
        UsageTypeError: An unsupported type (e.g. ``None`` or a bool tensor).

    Shape:
        - output: :math:`(N, T)`

    Examples:
        >>> resolve_degradation_weights(["noise", "rain+haze"], batch_size=2)
        tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                [0.0000, 0.5000, 0.5000, 0.0000, 0.0000]])
    """
    names = tuple(names)
    if not names:
        raise UsageError("the network has no degradation names")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if degradation is None:
        raise UsageTypeError(
            "degradation is None; pass labels, names or weights (or let the network classify)"
        )
    if isinstance(degradation, torch.Tensor):
        out = _weights_from_tensor(degradation, batch_size, names)
        return out.to(device=device if device is not None else out.device, dtype=dtype)
    if isinstance(degradation, (str, int, Mapping)):
        rows = [_one_sample(degradation, names)] * batch_size
    elif isinstance(degradation, Sequence):
        if len(degradation) != batch_size:
            raise UsageError(
                f"got {len(degradation)} degradations for a batch of {batch_size} images; pass one per "
                "image, or a single name/label for all"
            )
        rows = [_one_sample(d.item() if isinstance(d, torch.Tensor) else d, names) for d in degradation]
    else:
        raise UsageTypeError(
            f"cannot read degradation weights from {type(degradation).__name__}; expected an int, a name, "
            "a mapping, a list of those, or a tensor"
        )
    return torch.tensor(rows, dtype=dtype, device=device)


def _weights_from_tensor(w: torch.Tensor, n: int, names: tuple[str, ...]) -> torch.Tensor:
    t = len(names)
    if w.dtype == torch.bool or w.is_complex():
        raise UsageTypeError(f"degradation tensor must hold integer labels or float weights, got {w.dtype}")
    if not w.is_floating_point():
        if w.ndim == 0:
            w = w.reshape(1).expand(n)
        if w.ndim != 1 or w.shape[0] != n:
            raise UsageError(
                f"integer degradation labels must have shape ({n},) for a batch of {n}, got {tuple(w.shape)}"
            )
        if w.numel() and (int(w.min()) < 0 or int(w.max()) >= t):
            raise UsageError(f"degradation labels must lie in 0..{t - 1} for {list(names)}, got {w.tolist()}")
        return F.one_hot(w.long(), t).float()
    if w.ndim == 1 and w.shape[0] == t:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[1] != t or w.shape[0] not in (1, n):
        raise UsageError(
            f"degradation weights must have shape ({n}, {t}), (1, {t}) or ({t},) for {list(names)}, "
            f"got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise UsageError(f"degradation weights must be finite and non-negative, got minimum {float(w.min())}")
    return w.expand(n, t)
