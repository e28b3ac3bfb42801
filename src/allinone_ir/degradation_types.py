"""The degradation vocabulary: names, aliases, integer labels and display names, and reading specifications.

One table, :data:`DEGRADATION_TABLE`, defines every degradation type the library knows. The PIP
layers' users (the PIP networks), the data synthesis, the datasets and the demo all take their
names and labels from it:

=====  ============  ==============  ============  ===============================================
label  name          display name    aliases       used by
=====  ============  ==============  ============  ===============================================
0      ``noise``     noise           ``denoise``   PIP (default), synthesis, PromptIR/PIP data
1      ``rain``      rain            ``derain``    PIP (default), synthesis, PromptIR/PIP data
2      ``haze``      haze            ``dehaze``    PIP (default), synthesis, PromptIR/PIP data
3      ``blur``      blur            ``deblur``    PIP (default), synthesis, PIP data
4      ``lowlight``  low light       ``enhance``   PIP (default), synthesis, PIP data
5      ``snow``      snow            ``desnow``    synthesis, demo
=====  ============  ==============  ============  ===============================================

Labels 0-4 are the five classes of the PIP paper and its official code (noise 0, rain 1, haze 2,
blur 3, low-light 4), which a PIP network's degradation-aware prompts and classifier are indexed
by; snow comes after them so that no PIP label moves.
:data:`DEFAULT_DEGRADATIONS` is the first five names: the degradations of a PIP network unless
it is built with ``degradations=[...]``.

The labels of a *network* are positions in its own ``degradations`` list (a PIP network built with
``degradations=("noise", "rain", "haze", "snow")`` calls snow 3); the
:class:`~allinone_ir.training.Trainer` matches a dataset's degradations to the network's by name.

Names are matched without regard to case, spaces, ``-`` and ``_`` (``"Low-Light"`` is
``lowlight``); the aliases are the task names of the official code. :func:`parse_degradation` reads
a degradation specification (a name or alias; for noise an optional level in 8-bit units,
``noise_25``); :func:`resolve_degradation_weights` reads every form a user may give (labels, names,
``"rain+noise"`` mixtures, mappings, tensors) into PIP's degradation weights ``omega``.
"""

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
    "canonical_name",
    "parse_degradation",
    "resolve_degradation_weights",
]


@dataclass(frozen=True)
class Degradation:
    """One degradation type of the vocabulary.

    Args:
        label: Integer class label (the row of PIP's degradation prompts for the default networks).
        name: Canonical name, lower case without spaces (``"lowlight"``).
        display_name: Name for people (figures, tables): ``"low light"``.
        aliases: Other names accepted for it (the task names of the official code).

    Examples:
        >>> DEGRADATION_TABLE[4]
        Degradation(label=4, name='lowlight', display_name='low light', aliases=('enhance',))
    """

    label: int
    name: str
    display_name: str
    aliases: tuple[str, ...] = ()


#: Every degradation type, in label order (see the module's table).
DEGRADATION_TABLE: tuple[Degradation, ...] = (
    Degradation(0, "noise", "noise", ("denoise",)),
    Degradation(1, "rain", "rain", ("derain",)),
    Degradation(2, "haze", "haze", ("dehaze",)),
    Degradation(3, "blur", "blur", ("deblur",)),
    Degradation(4, "lowlight", "low light", ("enhance",)),
    Degradation(5, "snow", "snow", ("desnow",)),
)

#: Canonical name -> label, for every degradation of :data:`DEGRADATION_TABLE`.
DEGRADATION_LABELS: dict[str, int] = {d.name: d.label for d in DEGRADATION_TABLE}

#: The degradations of a PIP network by default: the five of the paper, labels 0-4.
DEFAULT_DEGRADATIONS: tuple[str, ...] = tuple(d.name for d in DEGRADATION_TABLE if d.label < 5)

#: What :func:`resolve_degradation_weights` accepts (see there).
DegradationSpec = int | str | Mapping[Any, float] | Sequence[Any] | torch.Tensor


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in " -_")


# normalised name or alias -> the Degradation
_LOOKUP: dict[str, Degradation] = {
    _normalise_name(key): d for d in DEGRADATION_TABLE for key in (d.name, d.display_name, *d.aliases)
}


def _unknown(name: str, known: Sequence[str], what: str) -> UnknownNameError:
    close = difflib.get_close_matches(
        _normalise_name(name), [_normalise_name(k) for k in known], n=3, cutoff=0.6
    )
    by_key = {_normalise_name(k): k for k in known}
    hint = f"; did you mean {', '.join(repr(by_key[c]) for c in close)}?" if close else ""
    return UnknownNameError(f"unknown degradation name {name!r}; {what} {list(known)}{hint}")


def canonical_name(name: str) -> str:
    """The canonical name of a degradation given by name, display name or alias.

    Case, spaces, ``-`` and ``_`` are ignored.

    Args:
        name: E.g. ``"Low-Light"``, ``"derain"``, ``"haze"``.

    Returns:
        The canonical name (``"lowlight"``, ``"rain"``, ``"haze"``).

    Raises:
        UnknownNameError: For a name the vocabulary does not know (with the closest known names);
            also a ``ValueError``.

    Examples:
        >>> canonical_name("Low light"), canonical_name("derain")
        ('lowlight', 'rain')
    """
    found = _LOOKUP.get(_normalise_name(name))
    if found is None:
        raise _unknown(name, [d.name for d in DEGRADATION_TABLE], "the known degradations are")
    return found.name


# a name followed by a number: "noise_25", "denoise-50", "Noise 15", "noise25"
_WITH_LEVEL = re.compile(r"^(.*?[^\d\s_-])[\s_-]*(\d+(?:\.\d+)?)$")

#: The degradations whose specification may carry a level, and what the level is.
_LEVELS: dict[str, str] = {"noise": "sigma"}


def parse_degradation(spec: str) -> tuple[str, float | None]:
    """Read a degradation specification: a name or alias, and for noise an optional level.

    The one grammar of the library (synthesis, the synthetic dataset's ``tasks``, ``evaluate``'s
    groups, PIP's ``degradation=``): ``<name>`` or ``noise_<sigma>``, the name being any name,
    display name or alias of the vocabulary (case, spaces, ``-`` and ``_`` ignored) and ``sigma`` the
    noise standard deviation on the 0-255 scale, separated by ``_``, ``-``, a space or nothing.

    Args:
        spec: E.g. ``"rain"``, ``"derain"``, ``"noise_25"``, ``"denoise-50"``, ``"Low light"``.

    Returns:
        ``(canonical name, level)``; the level is ``None`` when the specification has none.

    Raises:
        ValueError: For a name the vocabulary does not know (with the closest known names), or a level
            given to a degradation that takes none (``"rain_15"``).

    Examples:
        >>> parse_degradation("noise_15"), parse_degradation("Denoise 50"), parse_degradation("derain")
        (('noise', 15.0), ('noise', 50.0), ('rain', None))
    """
    if not isinstance(spec, str):
        raise UsageTypeError(f"a degradation specification must be a string, got {type(spec).__name__}")
    found = _LOOKUP.get(_normalise_name(spec))
    if found is not None:
        return found.name, None
    m = _WITH_LEVEL.match(spec.strip())
    base = _LOOKUP.get(_normalise_name(m.group(1))) if m else None
    if m is None or base is None:
        known = [d.name for d in DEGRADATION_TABLE]
        err = _unknown(spec, known, "the known degradations are")
        raise UsageError(f"{err}; noise also takes a level: noise_<sigma>, e.g. noise_25")
    if base.name not in _LEVELS:
        raise UsageError(
            f"degradation {spec!r}: {base.name} takes no level; only "
            + ", ".join(f"{n}_<{what}>" for n, what in _LEVELS.items())
            + " does (e.g. noise_25)"
        )
    return base.name, float(m.group(2))


def degradation_label(name: str) -> int:
    """The label of :data:`DEGRADATION_TABLE` for a name, display name or alias.

    Examples:
        >>> degradation_label("snow"), degradation_label("enhance")
        (5, 4)
    """
    return DEGRADATION_LABELS[canonical_name(name)]


def display_name(name: str) -> str:
    """The name to show people for a degradation; a name outside the vocabulary is returned as is.

    Examples:
        >>> display_name("lowlight"), display_name("derain"), display_name("fog")
        ('low light', 'rain', 'fog')
    """
    found = _LOOKUP.get(_normalise_name(name))
    return name if found is None else found.display_name


def default_names(count: int) -> tuple[str, ...]:
    """Names for ``count`` degradation classes whose names are unknown (e.g. read from bare weights).

    The table's names in label order, then ``degradation6``, ``degradation7``, ...

    Examples:
        >>> default_names(2)
        ('noise', 'rain')
        >>> default_names(7)[-2:]
        ('snow', 'degradation6')
    """
    if count < 0:
        raise UsageError(f"count must be >= 0, got {count}")
    names = [d.name for d in DEGRADATION_TABLE]
    return tuple(names[:count] + [f"degradation{i}" for i in range(len(names), count)])


# ----------------------------------------------------------------------------------------------------------
# Degradation specifications -> PIP's degradation weights
# ----------------------------------------------------------------------------------------------------------
def _canonical_or_self(name: str) -> str:
    """The normalised canonical name of ``name`` (level dropped: ``noise_25`` is noise), else ``name`` normalised."""
    try:
        return parse_degradation(name)[0]
    except (ValueError, TypeError):
        return _normalise_name(name)


def _name_index(name: str, names: Sequence[str]) -> int:
    """Position of ``name`` in a network's ``names``, both sides read through the vocabulary.

    ``derain`` finds a network's ``rain`` and ``rain`` a network's ``derain``; ``noise_25`` finds
    ``noise``; a name outside the vocabulary (a user's ``fog``) is matched as written.
    """
    exact = {_normalise_name(n): i for i, n in enumerate(names)}
    key = _normalise_name(name)
    if key in exact:
        return exact[key]
    table: dict[str, int] = {}
    for i, n in enumerate(names):
        table.setdefault(_canonical_or_self(n), i)
    key = _canonical_or_self(name)
    if key not in table:
        raise _unknown(name, names, "this network knows")
    return table[key]


def _match_names(classes: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    """Each of ``classes`` (a dataset's degradation names) -> its position in a network's ``names``.

    Raises:
        ValueError: Listing the classes the network cannot represent and both vocabularies.
    """
    out: dict[str, int] = {}
    missing: list[str] = []
    for c in classes:
        try:
            out[c] = _name_index(c, names)
        except ValueError:
            missing.append(c)
    if missing:
        raise UsageError(
            f"the network cannot represent the degradation(s) {missing} of the data: the data's degradations "
            f"are {list(classes)}, the network's are {list(names)} (labels are matched by name, aliases "
            "included)"
        )
    return out


def _label_index(label: int, names: Sequence[str]) -> int:
    if not 0 <= label < len(names):
        raise UsageError(
            f"degradation label {label} out of range: labels are 0..{len(names) - 1} for {list(names)}"
        )
    return label


def _one_sample(spec: Any, names: Sequence[str]) -> list[float]:
    """Weights of one sample from an int label, a name (``"rain+noise"`` for a mixture) or a mapping."""
    t = len(names)
    row = [0.0] * t
    if isinstance(spec, bool):
        raise UsageTypeError("a degradation label must be an int or a name, got a bool")
    if isinstance(spec, int):
        row[_label_index(spec, names)] = 1.0
        return row
    if isinstance(spec, str):
        parts = spec.split("+")
        if any(not p.strip() for p in parts):
            raise UsageError(f"empty degradation name in {spec!r}; use e.g. 'rain' or 'rain+noise'")
        for p in parts:  # an equal mixture, as the official code mixes two labels
            row[_name_index(p, names)] += 1.0 / len(parts)
        return row
    if isinstance(spec, Mapping):
        if not spec:
            raise UsageError("an empty mapping gives no degradation weights; use e.g. {'rain': 1.0}")
        for key, value in spec.items():
            idx = _name_index(key, names) if isinstance(key, str) else _label_index(int(key), names)
            w = float(value)
            if not w >= 0.0 or w == float("inf"):
                raise UsageError(f"degradation weights must be finite and non-negative, got {key!r}: {value}")
            row[idx] += w
        return row
    raise UsageTypeError(
        f"cannot read a degradation from {type(spec).__name__}; use an int label, a name such as "
        f"{names[0]!r}, 'a+b' for a mixture, or a mapping {{name: weight}}"
    )


def resolve_degradation_weights(
    degradation: DegradationSpec,
    *,
    batch_size: int,
    names: Sequence[str] = DEFAULT_DEGRADATIONS,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn the user's degradation control into PIP's degradation weights ``omega``.

    Accepted forms (``T = len(names)``, ``N = batch_size``):

    - an ``int`` label or a name (``"rain"``; ``"rain+noise"`` is an equal mixture; the
      vocabulary's aliases, e.g. the official task names ``denoise/derain/dehaze/deblur/enhance``,
      are accepted, and case, spaces, ``-`` and ``_`` are ignored), or a mapping
      ``{"rain": 0.5, "noise": 0.5}``: the same weights for every sample;
    - a list/tuple of ``N`` such entries: one per sample;
    - an integer tensor of shape ``(N,)`` (or a 0-d one): one-hot labels;
    - a floating tensor of shape ``(N, T)``, ``(1, T)`` or ``(T,)``: the weights themselves
      (one-hot, or soft mixtures), broadcast over the batch where needed.

    Labels are positions in ``names`` (the network's own degradation list). Weights are used as
    given (not renormalised), so ``{"rain": 2.0}`` is a stronger rain prompt.

    Args:
        degradation: The control, see above.
        batch_size: ``N``.
        names: Degradation names of the network, in label order.
        device: Device of the result (defaults to the tensor's own or the CPU).
        dtype: Floating dtype of the result.

    Returns:
        ``omega``, non-negative.

    Raises:
        ValueError: Wrong shape or length, negative or non-finite weights, labels out of
            range, unknown names.
        TypeError: An unsupported type (e.g. ``None`` or a bool tensor).

    Shape:
        - output: :math:`(N, T)`

    Examples:
        >>> resolve_degradation_weights("rain", batch_size=2)
        tensor([[0., 1., 0., 0., 0.],
                [0., 1., 0., 0., 0.]])
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
    if not bool(torch.isfinite(w).all()):
        raise UsageError("degradation weights must be finite")
    if bool((w < 0).any()):
        raise UsageError(f"degradation weights must be non-negative, got minimum {float(w.min())}")
    return w.expand(n, t)
