"""Checkpoints: official PromptIR / Restormer / NAFNet files, safetensors, architecture detection.

- :func:`load_checkpoint` reads the official PromptIR Lightning ``.ckpt`` (``state_dict`` with a
  ``net.`` prefix, the six unused modules' keys dropped), the official Restormer and NAFNet ``.pth``
  files (``params`` / ``params_ema`` / ``state_dict`` wrappers, ``module.`` prefixes) and this
  library's own files, and builds the network; without ``arch`` the architecture and its
  hyper-parameters are detected from the key names and tensor shapes. What a family's files
  look like is known by the family (its ``detect`` and ``filter_state_dict`` classmethods, see
  :class:`~allinone_ir.models.RestorationModel`); this module asks every registered class and
  names none.
- :func:`save_pretrained` / :func:`from_pretrained`: a folder with ``model.safetensors`` and
  ``config.json`` from which the network is rebuilt without knowing its class.
- :func:`convert_checkpoint`: official checkpoint in, safetensors out.

Every ``torch.load`` here uses ``weights_only=True``. safetensors is an optional dependency
(``pip install 'allinone-ir[hub]'``).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .errors import (
    CheckpointError,
    ModelArgumentError,
    UnknownNameError,
    UsageError,
    UsageTypeError,
    require,
)
from .io import atomic_write
from .models import create_model, get_model_class, list_architectures, list_models
from .models._registry import _unknown, is_model

__all__ = [
    "CheckpointError",
    "convert_checkpoint",
    "detect_architecture",
    "extract_state_dict",
    "from_pretrained",
    "load_checkpoint",
    "save_pretrained",
]

#: File names inside a :func:`save_pretrained` folder.
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: safetensors metadata key holding the JSON config (so a single ``.safetensors`` file is self-describing).
_META_KEY = "allinone_ir_config"
_FORMAT_VERSION = 1
#: Wrapper keys of checkpoint dicts, in order of preference (EMA weights first).
_WRAPPER_KEYS = ("params_ema", "params", "ema", "state_dict", "model_state_dict", "model", "net", "network")
_PREFIXES = ("module.", "_orig_mod.", "net.", "model.")
#: Prefixes of a training wrapper's network (Lightning's ``self.net``): stripped even when the wrapper
#: keeps entries of its own beside them (see :data:`_NON_NETWORK`).
_WRAPPER_PREFIXES = ("net.", "model.")
#: Top-level names of what a training wrapper keeps beside its network: losses, metrics, a discriminator.
_NON_NETWORK = re.compile(
    r"^(loss|losses|loss_fn|\w*_loss|criterion\w*|metrics?|\w*discriminator\w*|net_d|perceptual\w*|lpips)\."
)


def _require_safetensors() -> Any:
    return require("safetensors.torch", extra="hub", purpose="safetensors files")


# --------------------------------------------------------------------------- reading


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        unsafe = _disallowed_globals(path, exc)
        if unsafe and not any(_is_missing_torch_name(name) for name in unsafe):
            raise CheckpointError(
                f"{path} contains Python objects that torch.load(weights_only=True) refuses to load"
                f" ({', '.join(unsafe)}). If you trust the file, extract the weights once: "
                "torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pth')"
            ) from exc
        raise CheckpointError(f"cannot read checkpoint {path}: {_torch_load_problem(path, exc)}") from exc


def _disallowed_globals(path: Path, exc: Exception) -> list[str]:
    """The Python objects a well-formed pickle names that ``weights_only`` refuses (empty: not that problem)."""
    if not isinstance(exc, pickle.UnpicklingError):
        return []
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file, or a torch without the function: read the message
        found = []
    return found or re.findall(r"Unsupported global: GLOBAL (\S+) was not an allowed global", str(exc))


def _is_missing_torch_name(name: str) -> bool:
    """Whether a pickled global names something of torch that does not exist (a cut-off name: truncation)."""
    module, _, attr = name.rpartition(".")
    if not module.startswith("torch"):
        return False
    try:
        return not hasattr(importlib.import_module(module), attr)
    except ImportError:
        return True


def _torch_load_problem(path: Path, exc: Exception) -> str:
    """What is wrong with a file ``torch.load`` could not read, from its first bytes and the error."""
    with open(path, "rb") as f:
        head = f.read(8)
    first = " ".join(str(exc).split()).split(". ")[0]
    if head.startswith(b"PK\x03\x04"):
        return f"truncated or corrupt PyTorch checkpoint (a zip archive that cannot be read: {first or type(exc).__name__})"
    if head[:1] == b"\x80":
        return "truncated or corrupt PyTorch checkpoint (a pickle in the legacy format that cannot be read)"
    return (
        f"not a PyTorch checkpoint: neither a zip archive nor a pickle (it starts with {head!r}); "
        "the file is corrupt or of another format"
    )


def _empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: empty file (0 bytes)")


def _looks_like_safetensors(path: Path) -> bool:
    """Whether a file starts like safetensors (an 8-byte header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    st = _require_safetensors()
    from safetensors import safe_open

    _empty(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = st.load_file(str(path))
    except Exception as exc:  # safetensors' SafetensorError (header, truncation), or an OSError
        if isinstance(exc, OSError):
            raise
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a valid safetensors file, truncated or corrupt "
            f"({' '.join(str(exc).split())})"
        ) from exc
    config = _parse_config(meta[_META_KEY], f"the metadata of {path}") if _META_KEY in meta else None
    return state, config


def _parse_config(text: str, where: str) -> dict[str, Any]:
    """A saved config (``{"architecture": ..., "config": {...}}``) read from JSON text, checked."""
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{where} must hold a JSON object, got {type(saved).__name__}")
    if not isinstance(saved.get("architecture"), str) or not isinstance(saved.get("config"), Mapping):
        raise CheckpointError(
            f'{where} must name the network: {{"architecture": "ClassName", "config": {{...}}}} '
            f"(it has the keys {sorted(saved)})"
        )
    return dict(saved)


def _read(source: Any, map_location: str | torch.device) -> tuple[Any, dict[str, Any] | None, str]:
    """Raw checkpoint object, its saved config (if any) and a description for messages."""
    if isinstance(source, Mapping):
        return source, None, "the given state dict"
    if not isinstance(source, (str, os.PathLike)):
        raise UsageTypeError(f"expected a path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.is_file() or not cfg_file.is_file():
            raise CheckpointError(
                f"{path} is not a save_pretrained folder (needs {WEIGHTS_NAME} and {CONFIG_NAME})"
            )
        saved = _parse_config(cfg_file.read_text(), str(cfg_file))
        state, _ = _read_safetensors(weights)
        return state, saved, str(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _empty(path)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        state, config = _read_safetensors(path)
        sidecar = path.with_name(CONFIG_NAME)
        if config is None and sidecar.is_file():
            config = _parse_config(sidecar.read_text(), str(sidecar))
        return state, config, str(path)
    return _torch_load(path, map_location), None, str(path)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The network weights inside a checkpoint object, with wrapper prefixes removed.

    Unwraps ``params_ema`` / ``params`` (BasicSR: Restormer, NAFNet; EMA weights preferred),
    ``ema`` (this library's :class:`~allinone_ir.training.Trainer` checkpoints, EMA preferred too),
    ``state_dict`` (Lightning: PromptIR), ``model_state_dict`` / ``model`` / ``net``; strips
    ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) when every key carries it,
    and a training wrapper's ``net.`` / ``model.`` prefix (Lightning's ``self.net``). No key is
    dropped silently: entries a wrapper keeps beside its network that are known not to be weights
    of it (top-level names such as ``loss``, ``loss_fn``, ``*_loss``, ``criterion``, ``metrics``,
    ``discriminator``) are dropped with a warning naming them; any other key is kept as it is, so
    loading reports it as an unexpected key.

    Args:
        checkpoint: What ``torch.load`` returned, or a state dict.

    Returns:
        A flat ``{name: tensor}`` dict.

    Raises:
        CheckpointError: If no tensors are found, or a key is there both with and without the
            wrapper prefix (two networks in one file).

    Warns:
        UserWarning: When a wrapper's non-network entries are dropped (the message names them).

    Examples:
        >>> w = torch.zeros(1)
        >>> ckpt = {"state_dict": {"net.conv.weight": w, "net.conv.bias": w}, "epoch": 119}
        >>> list(extract_state_dict(ckpt))
        ['conv.weight', 'conv.bias']
    """
    obj = checkpoint
    for _ in range(3):
        if _is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"expected a dict of tensors in the checkpoint, got {type(obj).__name__}")
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointError(
                    f"no weights found in the checkpoint; its top-level keys are {sorted(map(str, obj))[:20]}"
                )
            obj = tensors
            break
        obj = inner
    return _strip_prefixes({str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)})


def _is_non_network(key: str) -> bool:
    """Whether a key belongs to what a training wrapper keeps beside the network (a loss, a metric, ...)."""
    return _NON_NETWORK.match(key) is not None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, ``net.``, ``model.``); never drop a key silently."""
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            hits = [k for k in state if k.startswith(prefix)]
            others = [k for k in state if not k.startswith(prefix)]
            if not hits or (others and prefix not in _WRAPPER_PREFIXES):
                continue
            unknown = [k for k in others if not _is_non_network(k)]
            if unknown and len(hits) < len(others):
                continue  # mostly other keys: ``net.`` is a module of the network, not a wrapper
            stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            clash = sorted(k for k in unknown if k in stripped)
            if clash:
                raise CheckpointError(
                    f"the checkpoint has both {prefix}{clash[0]} and {clash[0]} ({len(clash)} such keys): "
                    "it holds two networks; extract the one you want and pass its state dict"
                )
            dropped = [k for k in others if _is_non_network(k)]
            if dropped:
                warnings.warn(
                    f"ignored {len(dropped)} checkpoint entries beside the network's {prefix!r} weights that "
                    f"belong to the training wrapper (losses, metrics): {_show(dropped, 6)}",
                    stacklevel=3,
                )
            # keys that are neither are kept: loading reports them as unexpected keys
            state = {**stripped, **{k: state[k] for k in unknown}}
            changed = True
    return state


def _show(items: list[str], limit: int = 12) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# --------------------------------------------------------------------------- detection


def _claims(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[list[tuple[type[nn.Module], dict[str, Any]]], list[str]]:
    """``(class, config)`` of every registered class whose ``detect`` recognises the state dict, and errors."""
    claims: list[tuple[type[nn.Module], dict[str, Any]]] = []
    errors: list[str] = []
    for name in list_architectures():
        cls = get_model_class(name)
        detect = getattr(cls, "detect", None)
        if detect is None:
            continue
        try:
            config = detect(state_dict)
        except CheckpointError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if config is not None:
            claims.append((cls, dict(config)))
    return claims, errors


def _filter(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as ``model``'s family reads it (its ``filter_state_dict``: official renames, dropped keys)."""
    filt = getattr(type(model), "filter_state_dict", None)
    return dict(state_dict) if filt is None else dict(filt(state_dict, model))


def _mismatches(cls: type[nn.Module], config: dict[str, Any], state_dict: Mapping[str, torch.Tensor]) -> int:
    """Missing + unexpected + wrongly shaped keys of ``state_dict`` for ``cls(**config)`` (built on ``meta``)."""
    try:
        with torch.device("meta"):
            model = cls(**config)
        state = _filter(model, state_dict)
        expected = model.state_dict()
    except Exception:  # a claim whose config does not even build (or whose filter fails): the worst match
        return len(state_dict) + 1
    wrong = sum(1 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape))
    return len(expected.keys() ^ state.keys()) + wrong


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Recognise the network of a state dict and recover its constructor arguments.

    Every registered class (see :func:`~allinone_ir.models.register_architecture`) with a
    ``detect`` classmethod is asked (see :meth:`allinone_ir.models.RestorationModel.detect`):
    each family reads its own hyper-parameters from the key names and tensor shapes (widths,
    blocks per level from the largest block index, heads from the ``temperature`` shapes, PromptIR's
    prompts, PIP's prompt sizes and classifier, ...). When several classes recognise the state
    dict (Restormer's reader accepts PromptIR's keys, say), each candidate network is built on the
    ``meta`` device and the one whose keys and shapes match the state dict best wins (the earlier
    registered one on a tie). This module names no family: a class registered by your own code
    takes part in the same way.

    Args:
        state_dict: Weights with the official key names (prefixes already removed, see
            :func:`extract_state_dict`).

    Returns:
        ``(class_name, config)``: e.g. ``("PromptIR", {"dim": 48, ...})`` for
        ``get_model_class(class_name)(**config)``.

    Raises:
        CheckpointError: If the keys belong to no registered architecture (the message lists
            the families that can be detected), or a family recognises them but cannot read
            a hyper-parameter.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1, 2), dec_blk_nums=(1, 1))
        >>> name, cfg = detect_architecture(net.state_dict())
        >>> name, cfg["width"], cfg["enc_blk_nums"]
        ('NAFNet', 8, [1, 2])
    """
    claims, errors = _claims(state_dict)
    # a family that knows the keys could not read them: say why, unless another family fits exactly
    if claims and errors:
        scores = [_mismatches(cls, cfg, state_dict) for cls, cfg in claims]
        claims = [claims[scores.index(min(scores))]] if min(scores) == 0 else []
    if not claims:
        if errors:  # families sharing a layout give the same reason once
            by_reason: dict[str, list[str]] = {}
            for entry in errors:
                name, _, reason = entry.partition(": ")
                by_reason.setdefault(reason, []).append(name)
            raise CheckpointError("; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items()))
        keys = sorted(state_dict)
        known = [n for n in list_architectures() if getattr(get_model_class(n), "detect", None) is not None]
        raise CheckpointError(
            f"cannot detect the architecture of this checkpoint (known: {', '.join(known)}; register "
            "yours with @register_architecture and a detect() classmethod, or pass arch= for others); "
            f"it has {len(keys)} keys, e.g. {keys[:8]}"
        )
    if len(claims) > 1:
        scores = [_mismatches(cls, cfg, state_dict) for cls, cfg in claims]
        claims = [claims[scores.index(min(scores))]]
    cls, config = claims[0]
    return cls.__name__, config


# --------------------------------------------------------------------------- building


def _load_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool, *, detected: bool = False
) -> nn.Module:
    raw, state = state, _filter(model, state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        cls, cfg = type(model), getattr(model, "config", None)
        odd = _explain_odd_tensors(cls, dict(cfg), raw) if detected and mismatched and cfg else None
        if odd is not None:
            raise CheckpointError(f"{source}: {odd}; the file is corrupt or was edited")
        problems = [
            f"{n} {what} [{_show(items)}]"
            for n, what, items in (
                (len(missing), "missing keys", missing),
                (len(unexpected), "unexpected keys", unexpected),
                (len(mismatched), "shape mismatches", mismatched),
            )
            if n
        ]
        raise CheckpointError(
            f"{source} does not match {cls.__name__}"
            + (f" with config {cfg}" if cfg else "")
            + f": {'; '.join(problems)}."
            + ("" if detected else " Is it a checkpoint of another architecture? Try arch=None to detect it.")
        )
    model.load_state_dict(state, strict=strict)
    return model


def _shape_misfits(
    cls: type[nn.Module], config: dict[str, Any], state: Mapping[str, torch.Tensor]
) -> tuple[int, list[tuple[str, tuple[int, ...], tuple[int, ...]]]] | None:
    """Missing + unexpected key count and ``(key, checkpoint shape, network shape)`` of ``cls(**config)`` on ``meta``."""
    try:
        with torch.device("meta"):
            model = cls(**config)
        state = _filter(model, state)
    except Exception:  # a candidate that does not build: no answer
        return None
    expected = model.state_dict()
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return len(expected.keys() ^ state.keys()), wrong


def _votes(config: dict[str, Any], wrong: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> Counter:
    """For each integer hyper-parameter (or list entry), the values that would fit the mismatched tensors."""
    votes: Counter[tuple[str, int | None, int]] = Counter()
    for field, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool):
            entries: list[tuple[int | None, int]] = [(None, value)]
        elif isinstance(value, list):
            entries = [(i, v) for i, v in enumerate(value) if isinstance(v, int) and not isinstance(v, bool)]
        else:
            continue
        for idx, v in entries:
            for _, ours, theirs in wrong:
                for a, b in zip(ours, theirs) if len(ours) == len(theirs) else ():
                    if a != b and b > 0 and v * a % b == 0 and v * a // b > 0:
                        votes[(field, idx, v * a // b)] += 1
    return votes


def _explain_odd_tensors(
    cls: type[nn.Module], config: dict[str, Any], state: Mapping[str, torch.Tensor]
) -> str | None:
    """Name the few tensors whose shapes disagree with the rest, when a detected config does not fit.

    A family reads a hyper-parameter from one tensor (the width from the first convolution, say):
    when that tensor alone has a wrong shape, the network built from the reading mismatches nearly
    every key (or does not build). Each mismatch votes for the value of an integer hyper-parameter
    (or list entry) that would fit it; the most voted values are tried, on the ``meta`` device, in
    the detected class and in every other class that claims the keys, and the candidate that leaves
    the fewest tensors mismatched (at most three) names them. ``None`` when there is none.
    """
    claims = [(cls, config)] + [(c, cfg) for c, cfg in _claims(state)[0] if c is not cls]
    bases = [_shape_misfits(c, cfg, state) for c, cfg in claims]
    votes: Counter[tuple[str, int | None, int]] = Counter()
    for (_, cfg), base in zip(claims, bases):
        if base is not None:
            votes.update(_votes(cfg, base[1]))
    best: tuple[tuple[int, int], str] | None = None
    for (c, cfg), base in zip(claims, bases):
        if best is not None and best[0] == (0, 1):  # one odd tensor, every key known: nothing explains more
            break
        for (field, idx, new), _ in votes.most_common(6):
            if field not in cfg or (
                idx is not None and not (isinstance(cfg[field], list) and idx < len(cfg[field]))
            ):
                continue
            candidate = dict(cfg)
            candidate[field] = new if idx is None else [*cfg[field][:idx], new, *cfg[field][idx + 1 :]]
            found = _shape_misfits(c, candidate, state)
            if found is None or not 0 < len(found[1]) <= 3:
                continue
            if base is not None and (found[0] > base[0] or len(found[1]) >= len(base[1])):
                continue
            score = (found[0], len(found[1]))
            if best is None or score < best[0]:
                wrong = ", ".join(
                    f"key {k} has shape {ours}, expected {theirs}" for k, ours, theirs in found[1]
                )
                n_fit = len(state) - len(found[1])
                best = (
                    score,
                    f"{wrong} (the other {n_fit} tensors fit {c.__name__} with {field}={candidate[field]})",
                )
    return None if best is None else best[1]


def _own_claim(cls: type[nn.Module], state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """What ``cls.detect`` reads from the state dict (``None``: not its keys, no ``detect``, unreadable)."""
    detect = getattr(cls, "detect", None)
    try:
        return None if detect is None else detect(state_dict)
    except CheckpointError:
        return None


def load_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    arch: str | nn.Module | None = None,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Build a network from a checkpoint: official PromptIR / Restormer / NAFNet files or our own.

    Args:
        path_or_state_dict: A ``.ckpt`` / ``.pth`` / ``.safetensors`` file, a :func:`save_pretrained`
            folder, or an already loaded checkpoint dict / state dict.
        arch: ``None`` to use the file's saved config or detect the architecture and its
            hyper-parameters from the weights; a registered model name (``"promptir"``,
            ``"nafnet_width64"``) or class name (``"PromptIR"``); or a network to load into.
            A name takes the hyper-parameters that its class reads from the weights (its
            ``detect``), or the saved config when that is of the same class; otherwise it builds
            the network with its defaults (plus ``overrides``), which then fails with the list of
            missing and unexpected keys.
        strict: Require every key to match (shape mismatches always fail).
        map_location: Where ``torch.load`` puts the tensors.
        **overrides: Constructor arguments replacing detected / default ones.

    Returns:
        The network in eval mode, on the CPU (or ``map_location``).

    Raises:
        CheckpointError: If the file cannot be read safely (the message names the file and says
            what is wrong: empty, truncated, not a checkpoint, Python objects in it, a bad saved
            config), the architecture cannot be detected, or the weights do not match the network
            (the message names the tensors whose shapes disagree with the rest, or lists missing,
            unexpected and mismatched keys).
        UnknownNameError: If ``arch`` names no registered model or class (also a ``KeyError``).
        ModelArgumentError: If the network does not take one of ``overrides`` (also a ``TypeError``).
        FileNotFoundError: If the path does not exist.
        ImportError: For ``.safetensors`` files without the safetensors package.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("restormer", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> official = {"params": {"module." + k: v for k, v in net.state_dict().items()}}
        >>> type(load_checkpoint(official)).__name__
        'Restormer'
    """
    raw, saved, source = _read(path_or_state_dict, map_location)
    if (
        saved is None
        and isinstance(raw, Mapping)
        and isinstance(raw.get("architecture"), str)
        and "config" in raw
    ):
        saved = {"architecture": raw["architecture"], "config": raw["config"]}
    if (  # a Trainer checkpoint: rebuild from its recorded class and config (EMA weights preferred)
        saved is None
        and isinstance(raw, Mapping)
        and isinstance(raw.get("arch"), str)
        and isinstance(raw.get("model_config"), Mapping)
    ):
        saved = {"architecture": raw["arch"], "config": raw["model_config"]}
    state = extract_state_dict(raw)
    if isinstance(arch, nn.Module):
        return _load_into(arch, state, source, strict).eval()

    if arch is None:
        if saved is not None:
            cls, config = _saved_class(saved, source), dict(saved["config"])
        else:
            name, config = detect_architecture(state)
            cls = get_model_class(name)
        model = _build(cls, {**config, **overrides}, source, detected=saved is None)
    else:
        if not is_model(arch) and arch not in list_architectures():
            raise UnknownNameError(
                _unknown("model or architecture", arch, [*list_models(), *list_architectures()])
            )
        if is_model(arch):
            with torch.device("meta"):
                cls = type(create_model(arch))
        else:
            cls = get_model_class(arch)
        if saved is not None:
            found = dict(saved["config"]) if saved["architecture"] == cls.__name__ else None
        else:
            found = _own_claim(cls, state)
        kwargs = {**(found or {}), **overrides}
        model = create_model(arch, **kwargs) if is_model(arch) else cls(**kwargs)
    if saved is not None and saved.get("model_name"):
        model.model_name = saved["model_name"]  # type: ignore[assignment]
    detected = arch is None and saved is None
    return _load_into(model, state, source, strict, detected=detected).eval().to(map_location)


def _saved_class(saved: Mapping[str, Any], source: str) -> type[nn.Module]:
    """The registered class a saved config names."""
    try:
        return get_model_class(saved["architecture"])
    except UnknownNameError as exc:
        raise CheckpointError(
            f"{source} was saved from {exc}; is the module that registers it imported?"
        ) from exc


def _build(cls: type[nn.Module], config: dict[str, Any], source: str, *, detected: bool) -> nn.Module:
    """``cls(**config)``; a config read from the file that the class refuses is the file's problem."""
    try:
        return cls(**config)
    except ModelArgumentError as exc:
        where = "the weights" if detected else "its saved config"
        raise CheckpointError(
            f"{source}: {where} name {cls.__name__} with arguments it refuses: {exc}"
        ) from exc
    except (ValueError, TypeError) as exc:  # a constructor's check (heads dividing the width, ...)
        what = (
            f"the hyper-parameters read from its weights {config}"
            if detected
            else f"its saved config {config}"
        )
        raise CheckpointError(f"{source}: {cls.__name__} cannot be built with {what}: {exc}") from exc


# --------------------------------------------------------------------------- writing


def _model_config(model: nn.Module, protocol: str) -> dict[str, Any]:
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, Mapping):
        raise UsageTypeError(
            f"{name} has no `config` dict of constructor arguments; it cannot be saved for rebuilding"
        )
    try:
        registered = get_model_class(name)
    except KeyError as exc:
        raise UsageTypeError(f"{name} is not a registered architecture (use @register_architecture)") from exc
    if registered is not type(model):
        raise UsageTypeError(f"the architecture registered as {name!r} is {registered}, not {type(model)}")
    from .metrics import get_protocol

    get_protocol(protocol)  # validate the name
    out = {
        "architecture": name,
        "config": dict(cfg),
        "model_name": getattr(model, "model_name", None),
        "library": "allinone-ir",
        "library_version": __version__,
        "format_version": _FORMAT_VERSION,
        "input_range": [0.0, 1.0],
        "metric_protocol": protocol,
    }
    try:
        json.dumps(out)
    except TypeError as exc:
        raise UsageTypeError(f"{name}.config is not JSON-serialisable: {exc}") from exc
    return out


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing storage and non-contiguous views
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _save_safetensors(path: Path, model: nn.Module, config: dict[str, Any]) -> None:
    st = _require_safetensors()
    meta = {"format": "pt", _META_KEY: json.dumps(config)}
    atomic_write(path, lambda tmp: st.save_file(_tensors(model), tmp, metadata=meta))


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    protocol: str = "promptir",
) -> Path:
    """Save a network as ``directory/model.safetensors`` + ``directory/config.json``.

    ``config.json`` holds the architecture class name, the constructor arguments
    (``model.config``), the registered model name, the library version, the input range
    ``[0, 1]`` and the metric protocol the network is meant to be evaluated with; the same
    JSON is stored in the safetensors metadata. Both files are written atomically.

    Args:
        model: A registered network with a ``config`` dict.
        directory: Folder to write (created if missing).
        overwrite: Replace existing files; otherwise ``FileExistsError``.
        protocol: Name of the metric protocol (see :func:`allinone_ir.metrics.get_protocol`).

    Returns:
        The folder.

    Raises:
        FileExistsError: If a file would be replaced and ``overwrite`` is ``False``.
        TypeError: If the network cannot be rebuilt from a config.
        ImportError: Without the safetensors package.
    """
    _require_safetensors()
    folder = Path(directory)
    config = _model_config(model, protocol)
    weights, cfg_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    existing = [str(p) for p in (weights, cfg_file) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True)")
    folder.mkdir(parents=True, exist_ok=True)
    _save_safetensors(weights, model, config)
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(cfg_file, lambda tmp: Path(tmp).write_text(text))
    return folder


def from_pretrained(
    directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", strict: bool = True
) -> nn.Module:
    """Rebuild a network saved by :func:`save_pretrained` (or a self-describing ``.safetensors`` file).

    Args:
        directory: The folder (or a ``.safetensors`` file written by :func:`convert_checkpoint`).
        map_location: Device of the loaded weights.
        strict: Require every key to match.

    Returns:
        The network in eval mode.

    Raises:
        CheckpointError: If the folder has no saved config, its files cannot be read (the
            message names the file: truncated weights, ``config.json`` that is not valid JSON or
            names an unknown class or arguments the class does not take), or the weights do not
            match it.
    """
    raw, saved, source = _read(directory, map_location)
    if saved is None:
        raise CheckpointError(
            f"{source} has no saved config; use load_checkpoint() to detect the architecture"
        )
    model = _build(_saved_class(saved, source), dict(saved["config"]), source, detected=False)
    model = load_checkpoint(raw, model, strict=strict)
    if saved.get("model_name"):
        model.model_name = saved["model_name"]  # type: ignore[assignment]
    return model.to(map_location)


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    arch: str | None = None,
    overwrite: bool = False,
    protocol: str = "promptir",
    **overrides: Any,
) -> Path:
    """Convert a checkpoint (e.g. the official PromptIR ``.ckpt``) to safetensors.

    Args:
        src: Any file :func:`load_checkpoint` reads.
        dst: A ``.safetensors`` file (self-describing: the config is in its metadata) or a folder
            (written by :func:`save_pretrained`).
        arch: Architecture, see :func:`load_checkpoint` (``None``: detect).
        overwrite: Replace existing files.
        protocol: Metric protocol name recorded in the config.
        **overrides: Constructor arguments for :func:`load_checkpoint`.

    Returns:
        The path written.

    Raises:
        FileExistsError: If ``dst`` exists and ``overwrite`` is ``False``.
        ValueError: If ``dst`` is ``src``.
    """
    src_p, dst_p = Path(src), Path(dst)
    if dst_p.resolve() == src_p.resolve():
        raise UsageError("the converted checkpoint must not replace its source")
    model = load_checkpoint(src_p, arch, **overrides)
    if dst_p.suffix != ".safetensors":
        return save_pretrained(model, dst_p, overwrite=overwrite, protocol=protocol)
    if dst_p.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite {dst_p} (pass overwrite=True)")
    dst_p.parent.mkdir(parents=True, exist_ok=True)
    _save_safetensors(dst_p, model, _model_config(model, protocol))
    return dst_p
