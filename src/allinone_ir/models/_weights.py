"""The pretrained weights registry: one entry per released file, declared by the family that owns it.

A family file (``models/<family>.py``) describes each file its authors released with a
:class:`PretrainedWeights` and :func:`register_weights`; a family whose authors released none says
so with :func:`register_weights_note`. :mod:`allinone_ir.weights` downloads, verifies and loads
them; it names no family.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnknownNameError
from ._registry import _unknown

_WEIGHTS: dict[str, PretrainedWeights] = {}
_NOTES: dict[str, str] = {}

#: Kinds of :class:`WeightsSource`: fetched by the library (``url``, ``hf``) or by a person (the others).
SOURCE_KINDS = ("url", "hf", "gdrive", "baidu", "page")


@dataclass(frozen=True)
class WeightsSource:
    """Where a released file can be fetched.

    Args:
        kind: ``"url"`` (a direct HTTP(S) link), ``"hf"`` (a Hugging Face repository and file),
            ``"gdrive"`` (a Google Drive file id), ``"baidu"`` (a Baidu Pan link) or ``"page"`` (a
            page, such as the authors' README, that links the file): the last three need a person.
        location: The URL, the ``owner/repo`` of the Hugging Face repository, the Drive file id,
            the Baidu link or the page.
        file: The file name inside a Hugging Face repository.
        note: Anything a user should know about this copy (a mirror's provenance, a replacement).
    """

    kind: str
    location: str
    file: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"WeightsSource kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.kind == "hf" and not self.file:
            raise ValueError("a Hugging Face WeightsSource needs the file name (file=...)")

    @property
    def downloadable(self) -> bool:
        """Whether the library can fetch it over HTTP (``url`` and ``hf``)."""
        return self.kind in ("url", "hf")

    @property
    def url(self) -> str:
        """The address of the file (what a person opens for Drive and Baidu)."""
        if self.kind == "hf":
            return f"https://huggingface.co/{self.location}/resolve/main/{self.file}"
        if self.kind == "gdrive":
            return f"https://drive.google.com/file/d/{self.location}/view"
        return self.location


@dataclass(frozen=True)
class PretrainedWeights:
    """One released weights file: what network it is, where it is, and what the paper reports.

    Args:
        name: ``family.variant`` (timm style), e.g. ``"promptir.three_task"``.
        arch: The registered model name that builds the network (see ``list_models()``).
        config: Constructor arguments for ``create_model(arch, **config)``.
        file_name: The released file's name (kept in the cache).
        sources: Every known copy, the library-fetchable ones first.
        sha256: SHA-256 of the file where published (``None``: unpublished; the architecture
            check still protects the user).
        size: Bytes of the file where published.
        num_params: Parameters of the network (checked against the architecture by the tests).
        tasks: What the network restores, e.g. ``("noise", "rain", "haze")``.
        license: The license of the released weights.
        training_data: The training sets.
        reported: The paper's scores for this file, e.g. ``("Rain100L 36.37 dB / 0.972",)``.
        protocol: How ``reported`` was measured (channel, crop, datasets).
        default: The file that ``create_model(arch, pretrained=True)`` loads.
        notes: Anything else a user should know (a replaced file, a known issue).
    """

    name: str
    arch: str
    config: Mapping[str, Any] = field(default_factory=dict)
    file_name: str = ""
    sources: tuple[WeightsSource, ...] = ()
    sha256: str | None = None
    size: int | None = None
    num_params: int | None = None
    tasks: tuple[str, ...] = ()
    license: str = ""
    training_data: str = ""
    reported: tuple[str, ...] = ()
    protocol: str = ""
    default: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        if "." not in self.name or self.name != self.name.strip():
            raise ValueError(f"weights names are 'family.variant', got {self.name!r}")
        if not self.file_name or "/" in self.file_name or "\\" in self.file_name:
            raise ValueError(f"{self.name}: file_name must be a plain file name, got {self.file_name!r}")
        if self.sha256 is not None and (len(self.sha256) != 64 or not _is_hex(self.sha256)):
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")
        if not self.sources:
            raise ValueError(f"{self.name}: give at least one source")

    @property
    def downloadable(self) -> bool:
        """Whether some source can be fetched by the library (not only by a person)."""
        return any(s.downloadable for s in self.sources)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def register_weights(entry: PretrainedWeights) -> PretrainedWeights:
    """Register a released weights file under ``entry.name``.

    Args:
        entry: The file's description.

    Returns:
        ``entry``.

    Raises:
        ValueError: If a different entry is already registered under the name.
    """
    old = _WEIGHTS.get(entry.name)
    if old is not None and old != entry:
        raise ValueError(f"pretrained weights named {entry.name!r} are already registered")
    _WEIGHTS[entry.name] = entry
    return entry


def register_weights_note(family: str, text: str) -> None:
    """Record a line for the weights listing about a family without released weights.

    Args:
        family: The family as users know it, e.g. ``"PIP"``.
        text: The line, e.g. ``"the authors released no weights"``.
    """
    _NOTES[family] = text


def weights_notes() -> dict[str, str]:
    """``{family: note}`` of the families that declared a note (e.g. no released weights)."""
    return dict(_NOTES)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered pretrained weights, optionally filtered by a shell-style pattern.

    Args:
        pattern: e.g. ``"restormer.*"``; ``None`` lists all.

    Examples:
        >>> "promptir.three_task" in list_pretrained()
        True
        >>> list_pretrained("nafnet.sidd*")
        ['nafnet.sidd_width32', 'nafnet.sidd_width64']
    """
    names = sorted(_WEIGHTS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def is_pretrained(name: str) -> bool:
    """Whether ``name`` is a registered weights name."""
    return name in _WEIGHTS


def get_weights(name: str) -> PretrainedWeights:
    """The registered entry called ``name``.

    Raises:
        UnknownNameError: If there is none; the message lists close matches and the known names.
    """
    if name not in _WEIGHTS:
        raise UnknownNameError(_unknown("pretrained weights", name, _WEIGHTS))
    return _WEIGHTS[name]


def default_weights(arch: str) -> PretrainedWeights:
    """The entry ``create_model(arch, pretrained=True)`` loads.

    The one entry of ``arch``, or the one marked ``default`` among several.

    Raises:
        UnknownNameError: If ``arch`` has no released weights, or several and none is the default.
    """
    entries = [e for e in _WEIGHTS.values() if e.arch == arch]
    chosen = [e for e in entries if e.default] or (entries if len(entries) == 1 else [])
    if len(chosen) == 1:
        return chosen[0]
    if not entries:
        raise UnknownNameError(
            f"no pretrained weights are registered for the model {arch!r}; the models with weights are "
            f"{', '.join(sorted({e.arch for e in _WEIGHTS.values()}))}"
        )
    raise UnknownNameError(
        f"the model {arch!r} has several pretrained weights; pass one by name: pretrained="
        + " or ".join(repr(e.name) for e in sorted(entries, key=lambda e: e.name))
    )
