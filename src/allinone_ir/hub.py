"""Loading official checkpoints and ours (``torch.load`` always with ``weights_only=True``); saving ours."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import pkgutil
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._runtime import device_problem
from ._version import __version__
from .errors import CheckpointError, UnknownNameError, UsageError, UsageTypeError, require
from .io import atomic_write
from .metrics import get_protocol
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

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_META_KEY = "allinone_ir_config"  # safetensors metadata key of the JSON config
#: Wrapper keys of checkpoint dicts, in order of preference (EMA weights first).
_WRAPPER_KEYS = ("params_ema", "params", "ema", "state_dict", "model_state_dict", "model", "net", "network")
#: ``module.`` / ``_orig_mod.`` are stripped when every key has them; a training wrapper's ``net.`` /
#: ``model.`` also when they are the majority.
_PREFIXES = ("module.", "_orig_mod.", "net.", "model.")
#: What a training wrapper keeps beside its network: losses, metrics, a discriminator.
_NON_NETWORK = re.compile(
    r"^(loss|losses|loss_fn|\w*_loss|criterion\w*|metrics?|\w*discriminator\w*|net_d|perceptual\w*|lpips)\."
)
_Misfit = tuple[str, tuple[int, ...], tuple[int, ...]]
_FOLDER = f"a folder (for {WEIGHTS_NAME} and {CONFIG_NAME})"


def _torch_load(path: Path, head: bytes, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if unsafe := _disallowed_globals(path, exc):
            raise CheckpointError(
                f"{path} contains Python objects that torch.load(weights_only=True) refuses to load"
                f" ({', '.join(unsafe)}). If you trust the file, extract the weights once: "
                "torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pth')"
            ) from exc
        corrupt = "truncated or corrupt PyTorch checkpoint"
        if head.startswith(b"PK\x03\x04"):
            first = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
            problem = f"{corrupt} (a zip archive that cannot be read: {first})"
        elif head[:1] == b"\x80":
            problem = f"{corrupt} (a pickle in the legacy format that cannot be read)"
        elif head.lstrip().lower().startswith((b"<!doc", b"<html")):
            problem = (
                "an HTML page, not a checkpoint: a web page (such as Google Drive's download warning) "
                "was saved instead of the file"
            )
        else:
            problem = (
                f"not a PyTorch checkpoint: neither a zip archive nor a pickle (it starts with {head[:8]!r}); "
                "the file is corrupt or of another format"
            )
        raise CheckpointError(f"cannot read checkpoint {path}: {problem}") from exc


def _disallowed_globals(path: Path, exc: Exception) -> list[str]:
    """The Python objects a pickle names that ``weights_only`` refuses (none if a torch name is cut: corrupt)."""
    if not isinstance(exc, pickle.UnpicklingError):
        return []
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file: read the message
        found = re.findall(r"Unsupported global: GLOBAL (\S+) was not an allowed global", str(exc))
    try:
        for name in found:
            if name.startswith("torch"):
                pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError):
        return []
    return found


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    safe_open = require("safetensors", extra="hub", purpose="safetensors files").safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except OSError:
        raise
    except Exception as exc:  # safetensors' SafetensorError: header, truncation
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a valid safetensors file, truncated or corrupt "
            f"({' '.join(str(exc).split())})"
        ) from exc
    return state, _parse_config(meta[_META_KEY], f"the metadata of {path}") if _META_KEY in meta else None


def _parse_config(text: str, where: str) -> dict[str, Any]:
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
    """The raw checkpoint, its saved config (metadata, ``config.json``, a Trainer's ``arch``) and its name."""
    config = None
    if isinstance(source, Mapping):
        raw, where = source, "the given state dict"
    elif not isinstance(source, (str, os.PathLike)):
        order = (
            "; the checkpoint comes first: load_checkpoint(path, model)"
            if isinstance(source, nn.Module)
            else ""
        )
        raise UsageTypeError(f"expected a path or a state dict, got {type(source).__name__}{order}")
    else:
        path, where = Path(source), str(source)
        if folder := path.is_dir():
            if not (path / WEIGHTS_NAME).is_file() or not (path / CONFIG_NAME).is_file():
                raise CheckpointError(
                    f"{path} is not a save_pretrained folder (needs {WEIGHTS_NAME} and {CONFIG_NAME})"
                )
            path = path / WEIGHTS_NAME
        elif not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if (size := path.stat().st_size) == 0:
            raise CheckpointError(f"cannot read checkpoint {path}: empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(9)  # safetensors: an 8-byte header length, then a JSON object
        if path.suffix == ".safetensors" or (head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size):
            raw, config = _read_safetensors(path)
            sidecar = path.with_name(CONFIG_NAME)  # a folder's config.json wins over the metadata
            if (folder or config is None) and sidecar.is_file():
                config = _parse_config(sidecar.read_text(), str(sidecar))
            return raw, config, where
        raw = _torch_load(path, head, map_location)
    arch, cfg = (raw.get("arch"), raw.get("model_config")) if isinstance(raw, Mapping) else (None, None)
    if isinstance(arch, str) and isinstance(cfg, Mapping):  # a Trainer checkpoint
        config = {"architecture": arch, "config": cfg}
    return raw, config, where


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The network weights in a checkpoint or state dict, without wrappers (``params_ema``, ``module.``...).

    Raises:
        CheckpointError: If no tensors are found, or a key is there with and without the wrapper prefix.

    Examples:
        >>> w = torch.zeros(1)
        >>> ckpt = {"state_dict": {"net.conv.weight": w, "net.conv.bias": w}, "epoch": 119}
        >>> list(extract_state_dict(ckpt))
        ['conv.weight', 'conv.bias']
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"expected a dict of tensors in the checkpoint, got {type(checkpoint).__name__}"
        )
    obj = checkpoint
    for _ in range(3):  # nested wrappers
        obj = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), obj)
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(
            f"no weights found in the checkpoint; its top-level keys are {sorted(map(str, obj))[:20]}"
        )
    changed = True
    while changed:  # wrapper prefixes, in any nesting; a key is never dropped silently
        changed = False
        for prefix in _PREFIXES:
            stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            rest = [k for k in state if not k.startswith(prefix)]
            if not stripped or (rest and (prefix in _PREFIXES[:2] or len(stripped) < len(rest))):
                continue  # absent, or mostly other keys: ``net.`` is then a module of the network
            dropped = [k for k in rest if _NON_NETWORK.match(k)]
            kept = [k for k in rest if k not in dropped]
            if clash := sorted(k for k in kept if k in stripped):
                raise CheckpointError(
                    f"the checkpoint has both {prefix}{clash[0]} and {clash[0]} ({len(clash)} such keys): "
                    "it holds two networks; extract the one you want and pass its state dict"
                )
            if dropped:
                warnings.warn(
                    f"ignored {len(dropped)} checkpoint entries beside the network's {prefix!r} weights that "
                    f"belong to the training wrapper (losses, metrics): {_show(dropped, 6)}",
                    stacklevel=2,
                )
            state = {**stripped, **{k: state[k] for k in kept}}
            changed = True
    return state


def _show(items: list[str], limit: int = 12) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _claims(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[list[tuple[type[nn.Module], dict[str, Any]]], dict[str, list[str]]]:
    claims = []
    errors: dict[str, list[str]] = {}
    for name in list_architectures():
        cls = get_model_class(name)
        try:
            config = cls.detect(state_dict) if hasattr(cls, "detect") else None
        except CheckpointError as exc:
            errors.setdefault(str(exc), []).append(name)
            continue
        if config is not None:
            claims.append((cls, dict(config)))
    return claims, errors


def _fit(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str], list[str], list[_Misfit]]:
    """The weights under ``model``'s keys (``filter_state_dict``), the missing, unexpected and misshapen keys."""
    filt = getattr(type(model), "filter_state_dict", None)
    state, expected = dict(state_dict) if filt is None else dict(filt(state_dict, model)), model.state_dict()
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    return state, [k for k in expected if k not in state], [k for k in state if k not in expected], wrong


def _misfits(
    cls: type[nn.Module], config: dict[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> tuple[int, list[_Misfit]] | None:
    try:
        with torch.device("meta"):
            model = cls(**config)
        _, missing, unexpected, wrong = _fit(model, state_dict)
    except Exception:  # a candidate that does not build
        return None
    return len(missing) + len(unexpected), wrong


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Recognise the network of a state dict (prefixes removed) and recover its constructor arguments.

    Returns:
        ``(class_name, config)`` for ``get_model_class(class_name)(**config)``.

    Raises:
        CheckpointError: If no registered architecture recognises the keys, or one cannot read them.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("nafnet", width=8, middle_blk_num=1, enc_blk_nums=(1, 2), dec_blk_nums=(1, 1))
        >>> name, cfg = detect_architecture(net.state_dict())
        >>> name, cfg["width"], cfg["enc_blk_nums"]
        ('NAFNet', 8, [1, 2])
    """
    claims, errors = _claims(state_dict)
    if claims:  # a family that knows the keys but cannot read them is heard unless another fits exactly
        fits = [_misfits(cls, cfg, state_dict) for cls, cfg in claims]
        scores = [len(state_dict) + 1 if fit is None else fit[0] + len(fit[1]) for fit in fits]
        best = scores.index(min(scores))  # the first on a tie
        if scores[best] == 0 or not errors:
            return claims[best][0].__name__, claims[best][1]
    if errors:  # families sharing a layout give the same reason once
        raise CheckpointError("; ".join(f"{', '.join(names)}: {why}" for why, names in errors.items()))
    keys = sorted(state_dict)
    known = [n for n in list_architectures() if hasattr(get_model_class(n), "detect")]
    raise CheckpointError(
        f"cannot detect the architecture of this checkpoint (known: {', '.join(known)}; register "
        "yours with @register_architecture and a detect() classmethod, or pass arch= for others); "
        f"it has {len(keys)} keys, e.g. {keys[:8]}"
    )


def _load_into(
    model: nn.Module, raw: dict[str, torch.Tensor], source: str, strict: bool, *, detected: bool = False
) -> nn.Module:
    state, missing, unexpected, wrong = _fit(model, raw)
    mismatched = [f"{k}: checkpoint {ours} vs network {theirs}" for k, ours, theirs in wrong]
    if mismatched or (strict and (missing or unexpected)):
        cls, cfg = type(model), getattr(model, "config", None)
        if detected and mismatched and cfg and (odd := _explain_odd_tensors(cls, dict(cfg), raw)):
            raise CheckpointError(f"{source}: {odd}; the file is corrupt or was edited")
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
        problems = "; ".join(
            f"{len(items)} {what} [{_show(items)}]" for what, items in found.items() if items
        )
        with_config = f" with config {cfg}" if cfg else ""
        hint = "" if detected else " Is it a checkpoint of another architecture? Try arch=None to detect it."
        raise CheckpointError(f"{source} does not match {cls.__name__}{with_config}: {problems}.{hint}")
    if missing and len(unexpected) == len(state):
        raise CheckpointError(
            f"{source} shares no key with {type(model).__name__}: strict=False would load none of its "
            f"{len(state)} tensors (it has e.g. {_show(sorted(state), 4)}); is it another architecture?"
        )
    model.load_state_dict(state, strict=strict)
    return model


def _votes(config: dict[str, Any], wrong: list[_Misfit]) -> Counter[tuple[str, int | None, int]]:
    """For each integer hyper-parameter (or list entry), the values that would fit the mismatched tensors."""
    votes: Counter[tuple[str, int | None, int]] = Counter()
    for field, value in config.items():
        for idx, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if not isinstance(v, int) or isinstance(v, bool):
                continue
            for _, ours, theirs in wrong:
                for a, b in zip(ours, theirs) if len(ours) == len(theirs) else ():
                    if a != b and b > 0 and v * a % b == 0 and v * a // b > 0:
                        votes[(field, idx, v * a // b)] += 1
    return votes


def _explain_odd_tensors(
    cls: type[nn.Module], config: dict[str, Any], state: Mapping[str, torch.Tensor]
) -> str | None:
    """The (at most three) tensors whose shapes disagree with the rest: mismatches vote for hyper-parameters."""
    claims = [(cls, config)] + [(c, cfg) for c, cfg in _claims(state)[0] if c is not cls]
    bases = [_misfits(c, cfg, state) for c, cfg in claims]
    votes: Counter[tuple[str, int | None, int]] = Counter()
    for (_, cfg), base in zip(claims, bases):
        if base is not None:
            votes.update(_votes(cfg, base[1]))
    found: list[tuple[tuple[int, int], str]] = []  # (missing + unexpected, misshapen), the explanation
    for (c, cfg), base in zip(claims, bases):
        for (field, idx, new), _ in votes.most_common(6):
            value = cfg.get(field)
            if value is None or (idx is not None and not (isinstance(value, list) and idx < len(value))):
                continue
            candidate = {**cfg, field: new if idx is None else [*value[:idx], new, *value[idx + 1 :]]}
            fit = _misfits(c, candidate, state)
            if fit is None or not 0 < len(fit[1]) <= 3:
                continue
            if base is None or (fit[0] <= base[0] and len(fit[1]) < len(base[1])):
                wrong = ", ".join(
                    f"key {k} has shape {ours}, expected {theirs}" for k, ours, theirs in fit[1]
                )
                rest = f"{len(state) - len(fit[1])} tensors fit {c.__name__} with {field}={candidate[field]}"
                found.append(((fit[0], len(fit[1])), f"{wrong} (the other {rest})"))
    return min(found, key=lambda f: f[0])[1] if found else None


def load_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    arch: str | nn.Module | None = None,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Build a network from a checkpoint (an official file or one of ours), in eval mode on ``map_location``.

    Args:
        path_or_state_dict: A ``.ckpt`` / ``.pth`` / ``.safetensors`` file, a save_pretrained folder, or a dict.
        arch: ``None``: the saved config, else detected; a registered model or class name; or a network.
        strict: Require every key to match (shape mismatches always fail).
        **overrides: Constructor arguments replacing detected / default ones.

    Raises:
        CheckpointError: If the file cannot be read safely, the network is not detected or does not fit.
        UnknownNameError: If ``arch`` names no registered model or class.
        ModelArgumentError: If the network does not take one of ``overrides``.
        FileNotFoundError: If the path does not exist.

    Examples:
        >>> from allinone_ir import create_model
        >>> net = create_model("restormer", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> official = {"params": {"module." + k: v for k, v in net.state_dict().items()}}
        >>> type(load_checkpoint(official)).__name__
        'Restormer'
    """
    return _load(path_or_state_dict, arch, strict, map_location, overrides, saved_only=False)


def _load(
    source: Any, arch: str | nn.Module | None, strict: bool, device: Any, overrides: dict, saved_only: bool
) -> nn.Module:
    if str(device) != "meta" and (problem := device_problem(device)) is not None:  # meta: shapes only
        raise UsageError(f"map_location: {problem}")
    raw, saved, source = _read(source, device)
    if saved is None and saved_only:
        raise CheckpointError(
            f"{source} has no saved config; use load_checkpoint() to detect the architecture"
        )
    state = extract_state_dict(raw)
    if isinstance(arch, nn.Module):
        return _load_into(arch, state, source, strict).eval()
    detected = arch is None and saved is None
    if arch is None:
        name, read = detect_architecture(state) if saved is None else (saved["architecture"], saved["config"])
        config = {**read, **overrides}
        try:
            cls = get_model_class(name)
        except UnknownNameError as exc:
            raise CheckpointError(
                f"{source} was saved from {exc}; is the module that registers it imported?"
            ) from exc
        try:
            model = cls(**config)
        except (ValueError, TypeError) as exc:  # arguments it does not take, a check (heads dividing width)
            what = "the hyper-parameters read from its weights" if detected else "its saved config"
            raise CheckpointError(
                f"{source}: {cls.__name__} cannot be built with {what} {config}: {exc}"
            ) from exc
    else:
        if is_model(arch):
            with torch.device("meta"):
                cls = type(create_model(arch))
        elif arch in list_architectures():
            cls = get_model_class(arch)
        else:
            raise UnknownNameError(
                _unknown("model or architecture", arch, [*list_models(), *list_architectures()])
            )
        found = saved["config"] if saved is not None and saved["architecture"] == cls.__name__ else None
        if saved is None and hasattr(cls, "detect"):
            with contextlib.suppress(CheckpointError):  # the class's defaults, then
                found = cls.detect(state)
        kwargs = {**(found or {}), **overrides}
        model = create_model(arch, **kwargs) if is_model(arch) else cls(**kwargs)
    if saved is not None and saved.get("model_name"):
        model.model_name = saved["model_name"]
    return _load_into(model, state, source, strict, detected=detected).eval().to(device)


def _save(
    model: nn.Module, path: Path, protocol: str, overwrite: bool, *, folder: bool, accepts: str
) -> Path:
    name, cfg = type(model).__name__, getattr(model, "config", None)
    registered = name in list_architectures() and get_model_class(name) is type(model)
    if not isinstance(cfg, Mapping) or not registered:
        raise UsageTypeError(
            f"{type(model)} cannot be saved for rebuilding: it needs a `config` dict of its constructor "
            "arguments and registration with @register_architecture"
        )
    get_protocol(protocol)  # validate the name
    config = {
        "architecture": name,
        "config": dict(cfg),
        "model_name": getattr(model, "model_name", None),
        "library": "allinone-ir",
        "library_version": __version__,
        "format_version": 1,
        "input_range": [0.0, 1.0],
        "metric_protocol": protocol,
    }
    try:
        meta = {"format": "pt", _META_KEY: json.dumps(config)}
    except TypeError as exc:
        raise UsageTypeError(f"{name}.config is not JSON-serialisable: {exc}") from exc
    if folder and (path.is_file() or path.suffix in (".pth", ".pt", ".ckpt", ".safetensors")):
        what = "is a file" if path.is_file() else f"ends in {path.suffix}"
        raise UsageError(f"{path} {what}: give {accepts}")
    files = [path / WEIGHTS_NAME, path / CONFIG_NAME] if folder else [path]
    if (existing := [str(p) for p in files if p.exists()]) and not overwrite:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True)")
    st = require("safetensors.torch", extra="hub", purpose="safetensors files")
    # clone: safetensors refuses tensors sharing storage and non-contiguous views
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(files[0], lambda tmp: st.save_file(tensors, tmp, metadata=meta))
    if folder:
        atomic_write(files[1], lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    return path


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    protocol: str = "promptir",
) -> Path:
    """Save a registered network as ``directory/model.safetensors`` + ``config.json`` (written atomically).

    Raises:
        FileExistsError: If a file would be replaced and ``overwrite`` is ``False``.
        TypeError: If the network cannot be rebuilt from a config.
        ImportError: Without the safetensors package.
    """
    return _save(model, Path(directory), protocol, overwrite, folder=True, accepts=_FOLDER)


def from_pretrained(
    directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", strict: bool = True
) -> nn.Module:
    """Rebuild a network saved by :func:`save_pretrained` (or a self-describing ``.safetensors``), in eval mode.

    Raises:
        CheckpointError: If there is no saved config, a file cannot be read, or the weights do not match.
    """
    return _load(directory, None, strict, map_location, {}, saved_only=True)


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    arch: str | None = None,
    overwrite: bool = False,
    protocol: str = "promptir",
    **overrides: Any,
) -> Path:
    """Convert a checkpoint (e.g. the official PromptIR ``.ckpt``) to safetensors; return the path written.

    Args:
        src: Any file :func:`load_checkpoint` reads (``arch`` and ``**overrides`` as there).
        dst: A ``.safetensors`` file (its metadata holds the config) or a folder (:func:`save_pretrained`).

    Raises:
        FileExistsError: If ``dst`` exists and ``overwrite`` is ``False``.
        UsageError: If ``dst`` is ``src``.
    """
    dst_path = Path(dst)
    if dst_path.resolve() == Path(src).resolve():
        raise UsageError("the converted checkpoint must not replace its source")
    model = load_checkpoint(src, arch, **overrides)
    folder = dst_path.suffix != ".safetensors"
    return _save(
        model, dst_path, protocol, overwrite, folder=folder, accepts=f"a .safetensors file or {_FOLDER}"
    )
