"""``allinone-ir train --config FILE.yaml|.toml``: training driven by a config file.

Schema (YAML shown; TOML has the same tables)::

    model:                      # required
      name: promptir            # a registered model (allinone-ir models)
      args: {dim: 48}           # optional constructor overrides
    data:                       # required
      train:                    # required; "type" picks the dataset
        type: paired            # paired | synthetic | promptir
        degraded_dir: data/train/degraded
        clean_dir: data/train/clean
        name_map: ['^(\\w+)-(\\d+)', '\\1_clean-\\2']   # optional (regex, replacement)
        label_from: prefix      # prefix | subfolder | <degradation name>
        classes: [rain, snow]   # optional label order
        patch_size: 128
        augment_modes: [0, 1]   # optional flip/rot90 modes (default all 8)
        validate: true          # read every pair before training (default true)
      val: {...}                # optional, same keys (patch_size null for whole images)
    trainer: {...}              # TrainerConfig fields (max_steps, batch_size, lr, precision, ...)
    augment: {cutblur: 0.0, mixup: 0.0, dmix: 0.0}           # optional batch augmentations
    extra_losses: [{name: ddl, weight: 0.002}]               # optional; "ddl" = PIP's loss

``type: synthetic`` takes ``clean_dir`` (clean photos), ``tasks`` (e.g. ``[noise_25, rain, haze]``),
``patch_size``, ``repeat``, ``fixed``; ``type: promptir`` takes ``root``, ``tasks``
(``denoise``, ``derain``, ``dehaze``, ``deblur``, ``lowlight``), ``patch_size``, ``sigmas``,
``repeats``, ``layout``. Relative paths are resolved against the config file's folder.
Every error names the offending key (``data.train.patch_size: expected int, got 'big'``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, require

__all__ = ["ConfigError", "add_parser", "build_from_config", "load_config", "run"]


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


def _take(
    sec: dict[str, Any],
    key: str,
    where: str,
    kind: type | tuple[type, ...],
    default: Any = ...,
    *,
    nullable: bool = False,
) -> Any:
    if key not in sec:
        if default is ...:
            raise ConfigError(f"{where}.{key}: missing (required)")
        return default
    v = sec[key]
    if v is None and nullable:
        return None
    ok = isinstance(v, kind) and not (isinstance(v, bool) and kind in (int, float, (int, float)))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {names}, got {v!r}")
    return v


def _path(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


_DATA_KEYS = {
    "paired": {"type", "degraded_dir", "clean_dir", "name_map", "label_from", "classes", "patch_size", "augment_modes",
               "recursive", "seed", "validate"},
    "synthetic": {"type", "clean_dir", "tasks", "patch_size", "augment_modes", "repeat", "fixed", "seed", "classes"},
    "promptir": {"type", "root", "tasks", "patch_size", "sigmas", "repeats", "layout", "augment_modes", "seed",
                 "validate"},
}  # fmt: skip


def _build_dataset(sec: dict[str, Any], where: str, base: Path, seed: int) -> Any:
    from ..data import PairedImageDataset, SyntheticDegradationDataset, promptir_dataset

    kind = _take(sec, "type", where, str, "paired")
    if kind not in _DATA_KEYS:
        raise ConfigError(f"{where}.type: must be one of {sorted(_DATA_KEYS)}, got {kind!r}")
    unknown = sorted(set(sec) - _DATA_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key for type {kind!r}; known: {sorted(_DATA_KEYS[kind])}"
        )
    common: dict[str, Any] = {
        "patch_size": _take(sec, "patch_size", where, int, 128, nullable=True),
        "seed": _take(sec, "seed", where, int, seed),
    }
    if "augment_modes" in sec:
        modes = _take(sec, "augment_modes", where, list)
        if not all(isinstance(m, int) and 0 <= m < 8 for m in modes):
            raise ConfigError(f"{where}.augment_modes: expected integers in 0..7, got {modes!r}")
        common["augment_modes"] = tuple(modes)
    try:
        if kind == "paired":
            name_map = _take(sec, "name_map", where, list, None, nullable=True)
            if name_map is not None and (len(name_map) != 2 or not all(isinstance(s, str) for s in name_map)):
                raise ConfigError(f"{where}.name_map: expected [regex, replacement], got {name_map!r}")
            ds = PairedImageDataset(
                _path(base, _take(sec, "degraded_dir", where, str)), _path(base, _take(sec, "clean_dir", where, str)),
                name_map=tuple(name_map) if name_map else None,
                label_from=_take(sec, "label_from", where, (str, dict), "prefix"),
                classes=_take(sec, "classes", where, (list, dict), None, nullable=True),
                recursive=_take(sec, "recursive", where, bool, False), **common,
            )  # fmt: skip
        elif kind == "synthetic":
            ds = SyntheticDegradationDataset(
                _path(base, _take(sec, "clean_dir", where, str)),
                tasks=_take(sec, "tasks", where, list, ["noise", "rain", "haze", "snow"]),
                repeat=_take(sec, "repeat", where, int, 1), fixed=_take(sec, "fixed", where, bool, False),
                classes=_take(sec, "classes", where, (list, dict), None, nullable=True), **common,
            )  # fmt: skip
        else:
            ds = promptir_dataset(
                _path(base, _take(sec, "root", where, str)),
                tasks=_take(sec, "tasks", where, list, ["denoise", "derain", "dehaze"]),
                sigmas=_take(sec, "sigmas", where, list, [15, 25, 50]),
                repeats=_take(sec, "repeats", where, dict, None, nullable=True),
                layout=_take(sec, "layout", where, dict, None, nullable=True),
                **{k: v for k, v in common.items() if v is not None},
            )  # fmt: skip
    except ConfigError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if _take(sec, "validate", where, bool, True) and hasattr(ds, "validate"):
        try:
            ds.validate()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return ds


def _extra_losses(items: Any) -> list[Any]:
    from ..losses import DirectionalDecoupledLoss
    from .trainer import LossTerm

    if not isinstance(items, list):
        raise ConfigError(f"extra_losses: expected a list of {{name, weight}} mappings, got {items!r}")
    factories: dict[str, Callable[..., Any]] = {"ddl": DirectionalDecoupledLoss}
    terms = []
    for i, item in enumerate(items):
        where = f"extra_losses[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping, got {item!r}")
        name = _take(item, "name", where, str)
        if name not in factories:
            raise ConfigError(f"{where}.name: unknown extra loss {name!r}; known: {sorted(factories)}")
        kwargs = _take(item, "args", where, dict, {})
        try:
            fn = factories[name](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.args: {exc}") from exc
        weight = float(_take(item, "weight", where, (int, float), getattr(fn, "alpha", 1.0)))
        terms.append(LossTerm(lambda model, batch, out, f=fn: f(model), weight=weight, name=name))
    return terms


def build_from_config(cfg: Mapping[str, Any], base_dir: str | os.PathLike[str] = ".") -> Any:
    """Build a :class:`~allinone_ir.training.Trainer` from a parsed config (see the module docstring).

    Raises:
        ConfigError: Naming the offending key.
    """
    from ..data import BatchAugment
    from ..models import create_model, list_models
    from .config import TrainerConfig
    from .trainer import Trainer

    base = Path(base_dir)
    unknown = sorted(set(cfg) - {"model", "data", "trainer", "augment", "extra_losses"})
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown top-level section; known: augment, data, extra_losses, model, trainer"
        )
    tsec = _section(cfg, "trainer", "", required=False)
    try:
        tcfg = TrainerConfig.from_dict(tsec)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        key = msg.split("TrainerConfig.", 1)[1].split(" ", 1)[0] if "TrainerConfig." in msg else ""
        raise ConfigError(f"trainer.{key}: {msg}" if key else f"trainer: {msg}") from exc
    if tcfg.output_dir and not Path(tcfg.output_dir).is_absolute():
        tcfg.output_dir = str(base / tcfg.output_dir)
    for k in ("init_weights",):
        v = getattr(tcfg, k)
        if v and not Path(v).is_absolute():
            setattr(tcfg, k, str(base / v))
    msec = _section(cfg, "model", "")
    name = _take(msec, "name", "model", str)
    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {list_models()}")
    margs = _take(msec, "args", "model", dict, {})
    bad = sorted(set(msec) - {"name", "args"})
    if bad:
        raise ConfigError(f"model.{bad[0]}: unknown key; known: args, name")
    import torch

    torch.manual_seed(tcfg.seed)
    try:
        model = create_model(name, **margs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.args: {exc}") from exc
    dsec = _section(cfg, "data", "")
    bad = sorted(set(dsec) - {"train", "val"})
    if bad:
        raise ConfigError(f"data.{bad[0]}: unknown key; known: train, val")
    train = _build_dataset(_section(dsec, "train", "data."), "data.train", base, tcfg.seed)
    val = _build_dataset(dsec["val"], "data.val", base, tcfg.seed) if dsec.get("val") is not None else None
    if val is not None and not isinstance(dsec["val"], dict):
        raise ConfigError("data.val: expected a mapping")
    asec = _section(cfg, "augment", "", required=False)
    augment = None
    if asec:
        bad = sorted(set(asec) - {"cutblur", "mixup", "dmix", "num_classes"})
        if bad:
            raise ConfigError(f"augment.{bad[0]}: unknown key; known: cutblur, dmix, mixup, num_classes")
        num_classes = asec.get("num_classes") or getattr(model, "num_degradations", None)
        try:
            augment = BatchAugment(
                cutblur=float(asec.get("cutblur", 0.0)), mixup=float(asec.get("mixup", 0.0)),
                dmix=float(asec.get("dmix", 0.0)), num_classes=num_classes, seed=tcfg.seed,
            )  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augment: {exc}") from exc
    extra = _extra_losses(cfg["extra_losses"]) if cfg.get("extra_losses") else []
    return Trainer(model, tcfg, train, val, extra_losses=extra, batch_augment=augment)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on the ``allinone-ir`` dispatcher."""
    p = subparsers.add_parser(
        "train", help="train a network from a YAML/TOML config file", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--config", required=True, help="training config (.yaml, .yml or .toml)")
    p.add_argument("--resume", default=None, help="'auto' or a checkpoint path (overrides trainer.resume)")
    p.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    p.add_argument("--output-dir", default=None, help="override trainer.output_dir")
    p.add_argument("--device", default=None, help="override trainer.device (auto, cpu, cuda, mps)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``allinone-ir train``; returns the exit status (2 for config errors)."""
    from .trainer import TrainingDivergedError

    try:
        cfg = load_config(args.config)
        tsec = dict(cfg.get("trainer") or {})
        for key, value in (("resume", args.resume), ("max_steps", args.max_steps), ("output_dir", args.output_dir),
                           ("device", args.device)):  # fmt: skip
            if value is not None:
                tsec[key] = value
        cfg["trainer"] = tsec
        base = Path(args.config).resolve().parent
        if args.output_dir is not None:
            tsec["output_dir"] = str(Path(args.output_dir).resolve())
        trainer = build_from_config(cfg, base)
    except (ConfigError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = trainer.fit()
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        best = summary["best"]
        extra = (
            f", best val PSNR {best['psnr']:.2f} dB at step {best['step']}"
            if best.get("step", -1) >= 0
            else ""
        )
        print(f"done: {summary['step']} steps in {summary['output_dir']}{extra}")
    return 0
