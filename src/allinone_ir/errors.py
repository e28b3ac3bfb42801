"""The library's error types: one base class, :class:`AllInOneIRError`, each also a fitting built-in exception."""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = [
    "AllInOneIRError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DownloadError",
    "ImageReadError",
    "MissingDependencyError",
    "ModelArgumentError",
    "TrainingDivergedError",
    "UnknownNameError",
    "UsageError",
    "UsageTypeError",
]


class AllInOneIRError(Exception):
    """Base class of the errors this library raises on purpose; the message says what was expected.

    Examples:
        >>> isinstance(CheckpointError("model.ckpt: 3 missing keys"), (AllInOneIRError, ValueError))
        True
    """


class ConfigError(AllInOneIRError, ValueError):
    """A problem in a training config file; the message starts with the offending key."""


class CheckpointError(AllInOneIRError, ValueError):
    """A checkpoint could not be read or does not match the network."""


class UnknownNameError(AllInOneIRError, KeyError, ValueError):
    """A name that is not registered (a model, an architecture); prints as its message, unlike ``KeyError``.

    Examples:
        >>> str(UnknownNameError("unknown model 'promtir'. Did you mean: promptir?"))
        "unknown model 'promtir'. Did you mean: promptir?"
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelArgumentError(AllInOneIRError, TypeError):
    """A network was given a constructor argument it does not take; the message lists those it takes."""


class DatasetError(AllInOneIRError, ValueError):
    """A dataset problem (missing partner, size mismatch, unreadable file); the message names the files."""


class ImageReadError(AllInOneIRError, OSError):
    """An image file could not be read; the message names the file.

    Attributes:
        path: The file (``None`` if not given).
        reason: Why, without the file name (default: the whole message).

    Examples:
        >>> exc = ImageReadError("cannot read image file a.png: empty file", path="a.png", reason="empty file")
        >>> exc.reason, isinstance(exc, OSError)
        ('empty file', True)
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason or message


class TrainingDivergedError(AllInOneIRError, RuntimeError):
    """The loss became NaN or infinite; the message says at which step and which checkpoint is good."""


class UsageError(AllInOneIRError, ValueError):
    """A command-line option or an input the user gave cannot be used; the message names it."""


class UsageTypeError(AllInOneIRError, TypeError):
    """An argument of the wrong type; the message names the type expected."""


class DownloadError(AllInOneIRError, OSError):
    """Pretrained weights could not be fetched; the message names the URLs tried and what to do instead."""


class MissingDependencyError(AllInOneIRError, ImportError):
    """An optional package is not installed; the message names the ``pip install`` that adds it.

    Attributes:
        package: The importable name that is missing (e.g. ``"PIL"``).
        extra: The ``allinone-ir`` extra that provides it (e.g. ``"data"``).
    """

    def __init__(self, message: str, *, package: str = "", extra: str = "") -> None:
        super().__init__(message, name=package or None)
        self.package, self.extra = package, extra


#: Import name -> distribution name, where they differ.
_PACKAGE_NAMES = {"PIL": "Pillow", "png": "pypng", "yaml": "PyYAML", "skimage": "scikit-image"}
#: Import name -> the smallest ``allinone-ir`` extra that installs it (see ``pyproject.toml``).
_EXTRAS = {"PIL": "data", "png": "data", "tqdm": "progress", "safetensors": "hub", "yaml": "train"}
_EXTRAS.update(matplotlib="train", onnx="export", onnxscript="export", onnxruntime="export")
_EXTRAS.update(skimage="test", sphinx="docs")


def require(module: str, *, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs {_PACKAGE_NAMES.get(top, top)}: pip install 'allinone-ir[{extra}]'",
            package=top,
            extra=extra,
        ) from exc


def install_hint(module: str | None) -> str:
    """What installs the package providing ``module`` (``None``: unknown): its extra, else the package."""
    if not module:
        return "pip install 'allinone-ir[all]'"
    top = module.split(".")[0]
    extra = _EXTRAS.get(top)
    return f"pip install 'allinone-ir[{extra}]'" if extra else f"pip install {_PACKAGE_NAMES.get(top, top)}"
