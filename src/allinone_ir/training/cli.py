"""``allinone-ir train --config FILE.yaml|.toml``: training driven by a config file.

Schema (YAML shown; TOML has the same tables)::

    model:                      # required
      name: promptir            # a registered model (allinone-ir models)
      args: {dim: 48}           # optional constructor overrides
    data:                       # required
      train:                    # required; "type" picks the dataset
        type: paired            # paired | synthetic | promptir
        degraded_dir: train/degraded
        clean_dir: train/clean
        name_map: ['^(\\w+)-(\\d+)', '\\1_clean-\\2']   # optional (regex, replacement)
        label_from: prefix      # prefix | subfolder | <degradation name>
        classes: [rain, snow]   # optional: the degradations, in label order
        patch_size: 128         # crop side, or "full" for whole images
        augment_modes: [0, 1]   # optional flip/rot90 modes (default all 8)
        val_split: 0.05         # optional (paired): hold out this fraction (or number) of the pairs
        validate: true          # read every pair before training (default true)
      val: {...}                # optional, same keys; default patch_size "full", no augmentation
    trainer: {...}              # TrainerConfig fields (max_steps, batch_size, lr, precision, resume, ...)
    augment: {cutblur: 0.0, mixup: 0.0, dmix: 0.0}           # optional batch augmentations
    extra_losses: [{name: ddl, weight: 0.002}]               # optional, for networks that lack the term

``type: synthetic`` takes ``clean_dir``, ``tasks`` (e.g. ``[noise_25, rain, haze]``), ``patch_size``,
``repeat``, ``fixed``; ``type: promptir`` takes ``root``, ``tasks`` (``denoise``, ``derain``, ``dehaze``,
``deblur``, ``lowlight``), ``patch_size``, ``sigmas``, ``repeats``, ``layout``. Relative paths are resolved
against the working directory, not the config file's folder.

``val_split`` holds out a deterministic (by ``seed``) share of every degradation's pairs, validated on
whole images and listed in ``OUTPUT_DIR/held_out.txt``; it replaces ``data.val``.

A PIP network without ``model.args.degradations`` takes the training data's degradations as its own.
A family's own training terms (PIP: ``classifier``, ``ddl``) are always added; ``trainer.aux_weights:
{ddl: 0.004}`` changes their weights (0 switches one off).

Resume (``--resume`` or ``trainer.resume``): ``auto`` (default) continues from the newest checkpoint in
``OUTPUT_DIR/checkpoints``, ``never`` starts at step 0, a path continues from that file. Checkpoints are
written every ``save_every`` steps, every ``save_every_minutes`` (default 5) and on Ctrl-C / SIGTERM.

Every value is checked when the config is read, and every error names its key
(``data.train.patch_size: expected int or "full", got 'big'``).
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..data import BatchAugment, PairedImageDataset, SyntheticDegradationDataset, datasets, promptir_dataset
from ..errors import ConfigError, DatasetError, UsageError, require
from ..losses import DirectionalDecoupledLoss
from ..models import _registry, create_model, list_models
from ..models._base import RestorationModel
from .config import TrainerConfig, _describe, _matches
from .trainer import LossTerm, Trainer

__all__ = ["build_from_config", "load_config"]


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.yaml`` / ``.yml`` (needs PyYAML) or ``.toml`` file into a dict.

    Raises:
        ConfigError: For an unknown extension, a parse error or a top level that is not a mapping.
        ImportError: For YAML without PyYAML (says how to install it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    elif suffix in (".yaml", ".yml"):
        yaml = require("yaml", extra="train", purpose="YAML configs (or use TOML)")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    else:
        raise ConfigError(f"{p}: config files must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping with model, data and trainer sections")
    return data


def _section(cfg: Mapping[str, Any], key: str, where: str, required: bool = True) -> dict[str, Any]:
    v = cfg.get(key)
    if v is None:
        if required:
            raise ConfigError(f"{where}{key}: missing (required section)")
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{where}{key}: expected a mapping, got {type(v).__name__}")
    return v


def _no_unknown(sec: Mapping[str, Any], known: set[str], where: str, what: str = "unknown key") -> None:
    bad = sorted(set(sec) - known)
    if bad:
        raise ConfigError(f"{where}{bad[0]}: {what}; known: {', '.join(sorted(known))}")


def _take(
    sec: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """``sec[key]`` checked against ``kind`` (bools are not numbers); ``default`` if absent (``None`` also
    when the default is ``None``); required without a default."""
    if key not in sec:
        if default is ...:
            raise ConfigError(f"{where}.{key}: missing (required)")
        return default
    v = sec[key]
    if v is None and default is None:
        return None
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {names}, got {v!r}")
    return v


def _path(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _folder(sec: dict[str, Any], key: str, where: str, base: Path) -> str:
    path = Path(_path(base, _take(sec, key, where, str)))
    if not path.is_dir():
        cwd = base == Path.cwd().resolve()
        rule = f"the working directory {base}, not the config file's folder" if cwd else str(base)
        what = "not a folder" if path.exists() else "folder not found"
        raise ConfigError(f"{where}.{key}: {what}: {path} (relative paths are resolved against {rule})")
    return str(path)


_DATA_KEYS = {
    "paired": {"type", "degraded_dir", "clean_dir", "name_map", "label_from", "classes", "patch_size", "augment_modes",
               "recursive", "seed", "validate", "val_split"},
    "synthetic": {"type", "clean_dir", "tasks", "patch_size", "augment_modes", "repeat", "fixed", "seed", "classes"},
    "promptir": {"type", "root", "tasks", "patch_size", "sigmas", "repeats", "layout", "augment_modes", "seed",
                 "validate"},
}  # fmt: skip


def _build_dataset(sec: dict[str, Any], where: str, base: Path, seed: int) -> tuple[Any, Any]:
    """The dataset of ``data.train`` or ``data.val`` and the pairs ``val_split`` holds out (or ``None``)."""
    is_val = where.endswith(".val")
    kind = _take(sec, "type", where, str, "paired")
    if kind not in _DATA_KEYS:
        raise ConfigError(f"{where}.type: must be one of {sorted(_DATA_KEYS)}, got {kind!r}")
    if "val_split" in sec:
        if is_val or kind != "paired":
            raise ConfigError(
                f"{where}.val_split: only data.train of type 'paired' can hold out pairs"
                + ("" if is_val else f" (this is type {kind!r}: give a data.val section)")
            )
        try:
            datasets._check_val_split(sec["val_split"])
        except UsageError as exc:
            raise ConfigError(f"{where}.val_split: {exc}") from None
    _no_unknown(sec, _DATA_KEYS[kind], f"{where}.", f"unknown key for type {kind!r}")
    check = _take(sec, "validate", where, bool, True)
    patch = sec.get("patch_size", None if is_val else 128)
    try:
        common: dict[str, Any] = {"patch_size": datasets.normalize_patch_size(patch)}
    except ValueError:
        raise ConfigError(
            f'{where}.patch_size: expected int or "full" (whole images), got {patch!r}'
        ) from None
    common["seed"] = _take(sec, "seed", where, int, seed)
    if "augment_modes" in sec:
        modes = _take(sec, "augment_modes", where, list)
        if not all(isinstance(m, int) and 0 <= m < 8 for m in modes):
            raise ConfigError(f"{where}.augment_modes: expected integers in 0..7, got {modes!r}")
        common["augment_modes"] = tuple(modes)
    elif is_val:
        common["augment_modes"] = ()
    classes = _take(sec, "classes", where, (list, dict), None)
    ds: Any
    try:
        if kind == "paired":
            name_map = _take(sec, "name_map", where, list, None)
            if name_map is not None and (len(name_map) != 2 or not all(isinstance(s, str) for s in name_map)):
                raise ConfigError(f"{where}.name_map: expected [regex, replacement], got {name_map!r}")
            ds = PairedImageDataset(
                _folder(sec, "degraded_dir", where, base), _folder(sec, "clean_dir", where, base),
                name_map=tuple(name_map) if name_map else None,
                label_from=_take(sec, "label_from", where, (str, dict), "prefix"), classes=classes,
                recursive=_take(sec, "recursive", where, bool, False), validate=check, **common,
            )  # fmt: skip
        elif kind == "synthetic":
            ds = SyntheticDegradationDataset(
                _folder(sec, "clean_dir", where, base),
                tasks=_take(sec, "tasks", where, list, ["noise", "rain", "haze", "snow"]),
                repeat=_take(sec, "repeat", where, int, 1), fixed=_take(sec, "fixed", where, bool, is_val),
                classes=classes, **common,
            )  # fmt: skip
        else:
            ds = promptir_dataset(
                _folder(sec, "root", where, base),
                tasks=_take(sec, "tasks", where, list, ["denoise", "derain", "dehaze"]),
                sigmas=_take(sec, "sigmas", where, list, [15, 25, 50]),
                repeats=_take(sec, "repeats", where, dict, None), layout=_take(sec, "layout", where, dict, None),
                **common,
            )  # fmt: skip
        held_out = None
        if "val_split" in sec:
            where += ".val_split"
            ds, held_out = ds.split(sec["val_split"], seed=common["seed"])
        elif check and kind != "paired" and hasattr(ds, "validate"):  # paired folders are checked when built
            ds.validate()
    except ConfigError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return ds, held_out


def _on_model(fn: Callable[[Any], Any], model: Any, batch: Any, out: Any) -> Any:
    return fn(model)


def _extra_losses(items: Any, model: Any) -> list[LossTerm]:
    declared = model.auxiliary_losses() if isinstance(model, RestorationModel) else []
    family, family_terms = type(model).__name__, {t.name: t.weight for t in declared}
    if not isinstance(items, list):
        raise ConfigError(f"extra_losses: expected a list of {{name, weight}} mappings, got {items!r}")
    terms = []
    for i, item in enumerate(items):
        where = f"extra_losses[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping, got {item!r}")
        name = _take(item, "name", where, str)
        if name in family_terms:
            raise ConfigError(
                f"{where}.name: {name!r} is already a training term of {family} (weight {family_terms[name]:g}); "
                f"remove it from extra_losses (set its weight with trainer.aux_weights: {{{name}: ...}})"
            )
        if name != "ddl":
            raise ConfigError(f"{where}.name: unknown extra loss {name!r}; known: ['ddl']")
        try:
            fn = DirectionalDecoupledLoss(**_take(item, "args", where, dict, {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.args: {exc}") from exc
        weight = float(_take(item, "weight", where, (int, float), fn.alpha))
        terms.append(LossTerm(functools.partial(_on_model, fn), weight=weight, name=name))
    return terms


def _check_model_args(name: str, margs: dict[str, Any]) -> None:
    """Check ``model.args`` against the constructor of the class the network ``name`` builds: names and types."""
    factory = _registry._MODELS.get(name)
    try:
        cls = typing.get_type_hints(factory).get("return") if factory is not None else None
        own = inspect.signature(factory).parameters.values() if factory is not None else ()
        if not isinstance(cls, type) or any(p.kind is not inspect.Parameter.VAR_KEYWORD for p in own):
            return  # a factory with arguments of its own: build and see
        params = inspect.signature(cls, eval_str=True).parameters
    except (NameError, TypeError, ValueError):  # a constructor this cannot read: build and see
        return
    kinds = {p.kind for p in params.values()}
    known = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key, value in margs.items():
        if key not in params and inspect.Parameter.VAR_KEYWORD not in kinds:
            raise ConfigError(
                f"model.args.{key}: not an argument of {cls.__name__} ({name}); known: {', '.join(known)}"
            )
        hint = params[key].annotation if key in params else inspect.Parameter.empty
        if hint is not inspect.Parameter.empty and not _matches(value, hint):
            raise ConfigError(f"model.args.{key}: expected {_describe(hint)}, got {value!r}")


def _build_model(name: str, margs: dict[str, Any], train: Any, seed: int) -> Any:
    """The network of ``model``; one told the degradation (PIP) takes the data's degradations as its own."""
    _check_model_args(name, margs)

    def build(args: dict[str, Any]) -> Any:
        torch.manual_seed(seed)
        try:
            return create_model(name, **args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.args: {exc}") from exc

    model = build(margs)
    if "degradations" in margs or not getattr(model, "accepts_degradation", False):
        return model
    try:
        classes = datasets._label_classes(train, type(model).__name__)
    except DatasetError as exc:
        raise ConfigError(f"data.train.label_from: {exc}") from None
    if classes is None:
        return model
    names = list(dict.fromkeys(map(datasets._task_degradation, classes)))  # canonical names, aliases merged
    if names == list(model.degradations):
        return model
    return build({**margs, "degradations": names})


def build_from_config(cfg: Mapping[str, Any], base_dir: str | os.PathLike[str] = ".") -> Any:
    """Build a :class:`~allinone_ir.training.Trainer` from a parsed config; relative paths are resolved
    against ``base_dir`` (the command line passes the working directory).

    Raises:
        ConfigError: Naming the offending key.
        CheckpointError: If the checkpoint to resume from is missing or does not fit the model.
    """
    base = Path(base_dir).expanduser().resolve()
    _no_unknown(cfg, {"model", "data", "trainer", "augment", "extra_losses"}, "", "unknown top-level section")
    try:
        tcfg = TrainerConfig.from_dict(_section(cfg, "trainer", "", required=False))
    except (TypeError, ValueError) as exc:
        msg = str(exc)  # "TrainerConfig.lr: expected ..." names the field
        named = msg.startswith("TrainerConfig.")
        raise ConfigError(
            "trainer." + msg.removeprefix("TrainerConfig.") if named else f"trainer: {msg}"
        ) from None
    tcfg.output_dir = _path(base, tcfg.output_dir)
    if tcfg.init_weights:
        tcfg.init_weights = _path(base, tcfg.init_weights)
        if not Path(tcfg.init_weights).is_file():
            raise ConfigError(f"trainer.init_weights: file not found: {tcfg.init_weights}")
    if tcfg.resume not in ("auto", "never"):
        tcfg.resume = _path(base, tcfg.resume)
    msec = _section(cfg, "model", "")
    name = _take(msec, "name", "model", str)
    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {list_models()}")
    margs = _take(msec, "args", "model", dict, {})
    _no_unknown(msec, {"name", "args"}, "model.")
    dsec = _section(cfg, "data", "")
    _no_unknown(dsec, {"train", "val"}, "data.")
    train_sec, val_sec = _section(dsec, "train", "data."), _section(dsec, "val", "data.", required=False)
    if "val_split" in train_sec and val_sec:
        raise ConfigError(
            "data.train.val_split: give either data.train.val_split or a data.val section, not both"
        )
    train, val = _build_dataset(train_sec, "data.train", base, tcfg.seed)
    if val_sec:
        val, _ = _build_dataset(val_sec, "data.val", base, tcfg.seed)
    model = _build_model(name, margs, train, tcfg.seed)
    if getattr(model, "accepts_degradation", False):
        for where, data in (("data.train", train), ("data.val", val)):
            try:
                datasets._match_labels(data, model.degradations, type(model).__name__)
            except DatasetError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    asec = _section(cfg, "augment", "", required=False)
    augment = None
    if asec:
        _no_unknown(asec, {"cutblur", "mixup", "dmix", "num_classes"}, "augment.")
        num_classes = asec.get("num_classes") or getattr(model, "num_degradations", None)
        try:
            rates = {k: float(asec.get(k, 0.0)) for k in ("cutblur", "mixup", "dmix")}
            augment = BatchAugment(**rates, num_classes=num_classes, seed=tcfg.seed)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augment: {exc}") from exc
    extra = _extra_losses(cfg["extra_losses"], model) if cfg.get("extra_losses") else []
    return Trainer(model, tcfg, train, val, extra_losses=extra, batch_augment=augment)
