"""The pretrained weights registry: each family file declares the files its authors released."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnknownNameError
from ._registry import _unknown

_WEIGHTS: dict[str, PretrainedWeights] = {}
_NOTES: dict[str, str] = {}

_THREE = "BSD400 + WED (noise), Rain100L (rain), SOTS/RESIDE outdoor (haze)"
#: ``(tasks, training data)`` of the three-task (PromptIR's) and five-task (AdaIR's) all-in-one settings.
ALL_IN_ONE: dict[str, tuple[tuple[str, ...], str]] = {
    "three_task": (("noise", "rain", "haze"), _THREE),
    "five_task": (
        ("noise", "rain", "haze", "blur", "lowlight"),
        _THREE + ", GoPro (blur), LOL-v1 (low light)",
    ),
}


@dataclass(frozen=True)
class WeightsSource:
    """Where a released file can be fetched.

    Args:
        kind: ``"url"``, ``"hf"`` (fetched by the library), ``"gdrive"``, ``"baidu"`` or ``"page"`` (by hand).
        location: The URL, the Hugging Face ``owner/repo``, the Drive file id, the Baidu link or the page.
        file: The file name inside a Hugging Face repository.
        note: Anything a user should know about this copy.
    """

    kind: str
    location: str
    file: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("url", "hf", "gdrive", "baidu", "page") or (self.kind == "hf" and not self.file):
            raise ValueError(f"bad WeightsSource {self.kind!r} (url, hf with file=, gdrive, baidu, page)")

    @property
    def downloadable(self) -> bool:
        """Whether the library can fetch it."""
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
        name: ``family.variant``, e.g. ``"promptir.three_task"``.
        arch: The registered model name; ``create_model(arch, **config)`` builds the network.
        sources: Every known copy, the library-fetchable ones first.
        sha256: SHA-256 of the file, and ``size`` its bytes, where published.
        reported: The paper's scores for this file, measured as ``protocol`` says.
        default: The file that ``create_model(arch, pretrained=True)`` loads.
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
        if "." not in self.name or not re.fullmatch(r"[^/\\]+", self.file_name) or not self.sources:
            raise ValueError(f"{self.name!r}: give a 'family.variant' name, a plain file_name and a source")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")

    @property
    def downloadable(self) -> bool:
        """Whether some source can be fetched by the library."""
        return any(s.downloadable for s in self.sources)


def register_weights(entry: PretrainedWeights) -> PretrainedWeights:
    """Register a released weights file under ``entry.name`` and return it.

    Raises:
        ValueError: If a different entry is already registered under the name.
    """
    if _WEIGHTS.get(entry.name, entry) != entry:
        raise ValueError(f"pretrained weights named {entry.name!r} are already registered")
    _WEIGHTS[entry.name] = entry
    return entry


def register_weights_note(family: str, text: str) -> None:
    """Record a line of the weights listing about a family that has no entries."""
    _NOTES[family] = text


def weights_notes() -> dict[str, str]:
    return dict(_NOTES)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered pretrained weights, optionally filtered by a shell-style pattern.

    Examples:
        >>> list_pretrained("nafnet.sidd*")
        ['nafnet.sidd_width32', 'nafnet.sidd_width64']
    """
    return [n for n in sorted(_WEIGHTS) if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def get_weights(name: str) -> PretrainedWeights:
    """The registered entry called ``name``.

    Raises:
        UnknownNameError: If there is none (the message lists close matches).
    """
    if name not in _WEIGHTS:
        raise UnknownNameError(_unknown("pretrained weights", name, _WEIGHTS))
    return _WEIGHTS[name]


def default_weights(arch: str) -> PretrainedWeights:
    """The entry ``create_model(arch, pretrained=True)`` loads: the only one, or the one marked default.

    Raises:
        UnknownNameError: If ``arch`` has no released weights, or several and none is the default.
    """
    entries = sorted((e for e in _WEIGHTS.values() if e.arch == arch), key=lambda e: e.name)
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
        + " or ".join(repr(e.name) for e in entries)
    )
