"""``allinone-ir train --config FILE|NAME``: training driven by a ``.yaml`` / ``.toml`` config file.

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
        val_split: 0.05         # optional (paired): hold out this share (or number) of each degradation's
                                # pairs as data.val, listed in OUTPUT_DIR/held_out.txt
        validate: true          # read every pair before training (default true)
      val: {...}                # optional, same keys; default patch_size "full", no augmentation
    trainer: {...}              # TrainerConfig fields (max_steps, batch_size, lr, precision, resume, ...)
    augment: {cutblur: 0.0, mixup: 0.0, dmix: 0.0}           # optional batch augmentations
    extra_losses: [{name: ddl, weight: 0.002}]               # optional, for networks that lack the term

``type: synthetic`` takes ``clean_dir``, ``tasks`` (e.g. ``[noise_25, rain, haze]``), ``patch_size``,
``repeat``, ``fixed``; ``type: promptir`` takes ``root``, ``tasks`` (``denoise``, ``derain``, ``dehaze``,
``deblur``, ``lowlight``), ``patch_size``, ``sigmas``, ``repeats``, ``layout``. Relative paths are resolved
against the working directory, not the config file's folder.

A PIP network without ``model.args.degradations`` takes the training data's; a family's own training terms
(PIP: ``classifier``, ``ddl``) are added, weighted by ``trainer.aux_weights: {ddl: 0.004}`` (0: off).
Checkpoints are written every ``save_every`` steps, every ``save_every_minutes`` (default 5) and on Ctrl-C /
SIGTERM; ``--resume`` (``trainer.resume``: ``auto``, ``never`` or a path) says where a run continues from.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..data import BatchAugment, PairedImageDataset, SyntheticDegradationDataset, datasets, promptir_dataset
from ..data.augment import AUGMENT_MODES
from ..errors import ConfigError, DatasetError, UsageError, require
from ..losses import DirectionalDecoupledLoss
from ..models import _registry, create_model, list_models
from ..models._base import RestorationModel
from .config import TrainerConfig, _describe, _matches
from .trainer import LossTerm, Trainer

__all__ = ["build_from_config", "load_config"]

_MAPPING = dict[str, Any]  # a section of a config, as a type hint


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

        parse, error, kind = tomllib.loads, tomllib.TOMLDecodeError, "TOML"
    elif suffix in (".yaml", ".yml"):
        yaml = require("yaml", extra="train", purpose="YAML configs (or use TOML)")

        def unique_keys(self: Any, node: Any, deep: bool = False) -> Any:
            seen: set[tuple[str, str]] = set()
            for key in (k for k, _ in node.value if isinstance(k, yaml.ScalarNode)):
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark
                    )
                seen.add((key.tag, key.value))
            return yaml.SafeLoader.construct_mapping(self, node, deep)

        # a loader that reads 2e-4 as a number, as YAML 1.2 and TOML do (YAML 1.1: as text), and refuses a key
        # given twice (YAML 1.1: the second value silently replaces the first)
        loader: Any = type("Loader", (yaml.SafeLoader,), {"construct_mapping": unique_keys})
        exponent = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")
        loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
        parse, error, kind = functools.partial(yaml.load, Loader=loader), yaml.YAMLError, "YAML"
    else:
        raise ConfigError(f"{p}: config files must end in .yaml, .yml or .toml")
    try:
        data = parse(p.read_text())
    except error as exc:
        raise ConfigError(f"{p}: invalid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping with model, data and trainer sections")
    return data


def _no_unknown(sec: Mapping[str, Any], known: set[str], where: str, what: str = "unknown key") -> None:
    bad = sorted(set(sec) - known)
    if bad:
        raise ConfigError(f"{where}{bad[0]}: {what}; known: {', '.join(sorted(known))}")


def _check(value: Any, hint: Any, where: str) -> Any:
    """``value``, if it fits the type ``hint``; else a :class:`ConfigError` naming ``where``."""
    if not _matches(value, hint):
        raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")
    return value


def _take(sec: Mapping[str, Any], key: str, where: str, hint: Any, default: Any = ...) -> Any:
    """``sec[key]`` checked against ``hint``; ``default`` if absent or null, required without one."""
    name, value = f"{where}.{key}".lstrip("."), sec.get(key)
    if value is None and default is ...:
        raise ConfigError(f"{name}: missing (required)")
    return default if value is None else _check(value, hint, name)


def _check_args(
    params: Mapping[str, inspect.Parameter], args: Mapping[str, Any], where: str, unknown: str = "unknown key"
) -> None:
    """Check ``args`` against a signature's ``params``: their names, and their values against the annotations."""
    named = [k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key, value in args.items():
        if key in named and params[key].annotation is not inspect.Parameter.empty:
            _check(value, params[key].annotation, f"{where}{key}")
        elif key not in named and all(p.kind is not p.VAR_KEYWORD for p in params.values()):
            raise ConfigError(f"{where}{key}: {unknown}; known: {', '.join(named)}")


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


#: The dataset of each ``data.*.type``: its builder, the arguments a config does not give, its own extra keys.
_DATASETS: dict[str, tuple[Callable[..., Any], set[str], set[str]]] = {
    "paired": (PairedImageDataset, set(), {"val_split"}),
    "synthetic": (SyntheticDegradationDataset, {"clean", "cache"}, {"clean_dir"}),
    "promptir": (promptir_dataset, set(), {"validate"}),
}


def _build_dataset(sec: dict[str, Any], where: str, base: Path, seed: int) -> tuple[Any, Any]:
    """The dataset of a ``data`` section (values checked against its annotations) and any held-out pairs."""
    is_val = where.endswith(".val")
    kind = _take(sec, "type", where, str, "paired")
    if kind not in _DATASETS:
        raise ConfigError(f"{where}.type: must be one of {sorted(_DATASETS)}, got {kind!r}")
    build, hidden, extra = _DATASETS[kind]
    params = inspect.signature(build, eval_str=True).parameters
    keys = ({"type"} | set(params) | extra) - hidden
    if "val_split" in sec:  # checked before the folders are read
        if is_val or kind != "paired":
            raise ConfigError(
                f"{where}.val_split: only data.train of type 'paired' can hold out pairs"
                + ("" if is_val else f" (this is type {kind!r}: give a data.val section)")
            )
        try:
            datasets._check_val_split(sec["val_split"])
        except UsageError as exc:
            raise ConfigError(f"{where}.val_split: {exc}") from None
    _no_unknown(sec, keys, f"{where}.", f"unknown key for type {kind!r}")
    check = _take(sec, "validate", where, bool, True)
    args = {k: v for k, v in sec.items() if k not in ("type", "validate", "val_split")}
    patch = args.get("patch_size", None if is_val else 128)
    try:
        args["patch_size"] = datasets.normalize_patch_size(patch)
    except ValueError:
        raise ConfigError(
            f'{where}.patch_size: expected int or "full" (whole images), got {patch!r}'
        ) from None
    args.setdefault("seed", seed)
    if is_val:
        args.setdefault("augment_modes", ())
        if kind == "synthetic":
            args.setdefault("fixed", True)
    args.update({k: _folder(sec, k, where, base) for k in ("degraded_dir", "clean_dir", "root") if k in keys})
    if kind == "synthetic":
        args["clean"] = args.pop("clean_dir")
    if kind == "paired":
        args["validate"] = check
    _check_args(params, args, f"{where}.")
    if not all(0 <= m < AUGMENT_MODES for m in args.get("augment_modes", ())):
        raise ConfigError(f"{where}.augment_modes: expected integers in 0..7, got {args['augment_modes']!r}")
    try:
        ds, held_out = build(**args), None
        if "val_split" in sec:
            where += ".val_split"
            ds, held_out = ds.split(sec["val_split"], seed=args["seed"])
        elif check and kind == "promptir":  # paired folders are checked when built
            ds.validate()
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
        name = _take(_check(item, _MAPPING, where), "name", where, str)
        if name in family_terms:
            raise ConfigError(
                f"{where}.name: {name!r} is already a training term of {family} (weight {family_terms[name]:g}); "
                f"remove it from extra_losses (set its weight with trainer.aux_weights: {{{name}: ...}})"
            )
        if name != "ddl":
            raise ConfigError(f"{where}.name: unknown extra loss {name!r}; known: ['ddl']")
        try:
            fn = DirectionalDecoupledLoss(**_take(item, "args", where, _MAPPING, {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.args: {exc}") from exc
        weight = float(_take(item, "weight", where, float, fn.alpha))
        terms.append(LossTerm(functools.partial(_on_model, fn), weight=weight, name=name))
    return terms


def _check_model_args(name: str, margs: dict[str, Any]) -> None:
    """Check ``model.args`` against the constructor of the class the network ``name`` builds."""
    factory = _registry._MODELS[name]
    try:
        cls = typing.get_type_hints(factory).get("return")
        if not isinstance(cls, type) or any(
            p.kind is not p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
        ):
            return  # a factory with arguments of its own: build and see
        params = inspect.signature(cls, eval_str=True).parameters
    except (NameError, TypeError, ValueError):  # a constructor this cannot read: build and see
        return
    _check_args(params, margs, "model.args.", f"not an argument of {cls.__name__} ({name})")


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
        tcfg = TrainerConfig.from_dict(_take(cfg, "trainer", "", _MAPPING, {}))
    except (TypeError, ValueError) as exc:
        field = str(exc).removeprefix("TrainerConfig.")  # "TrainerConfig.lr: expected ...": named by field
        raise ConfigError(("trainer: " if field == str(exc) else "trainer.") + field) from None
    tcfg.output_dir = _path(base, tcfg.output_dir)
    if tcfg.init_weights:
        tcfg.init_weights = _path(base, tcfg.init_weights)
        if not Path(tcfg.init_weights).is_file():
            raise ConfigError(f"trainer.init_weights: file not found: {tcfg.init_weights}")
    if tcfg.resume not in ("auto", "never"):
        tcfg.resume = _path(base, tcfg.resume)
    msec = _take(cfg, "model", "", _MAPPING)
    name = _take(msec, "name", "model", str)
    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {list_models()}")
    margs = _take(msec, "args", "model", _MAPPING, {})
    _no_unknown(msec, {"name", "args"}, "model.")
    dsec = _take(cfg, "data", "", _MAPPING)
    _no_unknown(dsec, {"train", "val"}, "data.")
    train_sec, val_sec = _take(dsec, "train", "data", _MAPPING), _take(dsec, "val", "data", _MAPPING, {})
    if "val_split" in train_sec and val_sec:
        raise ConfigError(
            "data.train.val_split: give either data.train.val_split or a data.val section, not both"
        )
    train, val = _build_dataset(train_sec, "data.train", base, tcfg.seed)
    if val_sec:
        val, _ = _build_dataset(val_sec, "data.val", base, tcfg.seed)
    model = _build_model(name, margs, train, tcfg.seed)
    augment = None
    if asec := _take(cfg, "augment", "", _MAPPING, {}):
        _no_unknown(asec, {"cutblur", "mixup", "dmix", "num_classes"}, "augment.")
        _check_args(inspect.signature(BatchAugment, eval_str=True).parameters, asec, "augment.")
        num_classes = asec.get("num_classes") or getattr(model, "num_degradations", None)
        try:
            augment = BatchAugment(**{**asec, "num_classes": num_classes}, seed=tcfg.seed)
        except ValueError as exc:
            raise ConfigError(f"augment: {exc}") from exc
    extra = _extra_losses(cfg["extra_losses"], model) if cfg.get("extra_losses") else []
    try:
        return Trainer(model, tcfg, train, val, extra_losses=extra, batch_augment=augment)
    except DatasetError as exc:  # the data's degradations are not the network's (data.train / data.val)
        raise ConfigError(str(exc)) from None
