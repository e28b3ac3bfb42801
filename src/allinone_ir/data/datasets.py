"""Datasets of degraded / clean pairs: paired folders, the PromptIR layout, on-the-fly synthesis.

Samples are dicts ``{"degraded", "clean", "label", "degradation", "task", "name"}``, random by
``(seed, epoch, index)`` only: the same in any worker or after a resume."""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch.utils.data import ConcatDataset, Dataset

from ..degradation_types import DEGRADATION_LABELS, _name_index, parse_degradation
from ..errors import DatasetError, UnknownNameError, UsageError, UsageTypeError
from ..io import _check_float_image, _images_by_stem, list_images, read_image
from .augment import AUGMENT_MODES, augment_mode, paired_random_crop
from .degradations import synthesize

__all__ = [
    "PROMPTIR_LAYOUT",
    "DatasetError",
    "MixedDataset",
    "PairedImageDataset",
    "SyntheticDegradationDataset",
    "promptir_dataset",
]

PathLike = str | os.PathLike[str]
PatchSize = int | Literal["full"] | None
Classes = Mapping[str, int] | Sequence[str] | None


def normalize_patch_size(value: Any) -> int | None:
    """A crop side in pixels, or ``None`` for whole images (``"full"`` means ``None``, for TOML)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "full"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f'patch_size must be a positive integer, "full" or None (whole images), got {value!r}'
        )
    return value


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**63 - 1))


def _class_table(classes: Mapping[str, int] | Sequence[str], names: Sequence[str]) -> dict[str, int]:
    table = dict(classes) if isinstance(classes, Mapping) else {n: i for i, n in enumerate(classes)}
    for name in names:
        if name not in table:
            raise DatasetError(
                f"degradation {name!r} has no label; known: {sorted(table)} (pass classes=...)"
            )
    return table


def _task_degradation(task: str, strict: bool = False) -> str:
    """``"noise_25"`` -> ``"noise"``, ``"derain"`` -> ``"rain"``; a user's own task as is, unless ``strict``."""
    try:
        return parse_degradation(task)[0]
    except (TypeError, ValueError) as exc:
        if strict:
            raise UnknownNameError(f"unknown task {task!r}: {exc}") from None
        return task


def _check_val_split(val_split: Any) -> None:
    fraction = isinstance(val_split, float) and 0 < val_split < 1
    if not (fraction or (isinstance(val_split, int) and not isinstance(val_split, bool) and val_split > 0)):
        raise UsageError(
            f"val_split must be a fraction in (0, 1) or a whole number of pairs, got {val_split!r}"
        )


def _report(problems: list[str], raising: bool = True, what: str = "problem(s) in the dataset") -> list[str]:
    """``problems``; if ``raising``, any raised as ``N <what>: (1) ...; (2) ...; ... and M more`` on one line."""
    if problems and raising:
        shown = [f"({i}) {p}" for i, p in enumerate(problems[:20], 1)]
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise DatasetError(f"{len(problems)} {what}: " + "; ".join(shown + more))
    return problems


class _Geometry:
    def __init__(self, patch_size: PatchSize, augment_modes: Sequence[int], seed: int) -> None:
        self.patch_size = normalize_patch_size(patch_size)
        self.augment_modes, self.seed, self.epoch = tuple(augment_modes), seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which changes the random crops and augmentations (called by the trainer)."""
        self.epoch = int(epoch)

    def _geometry(
        self, images: list[torch.Tensor], g: torch.Generator, names: Sequence[str]
    ) -> list[torch.Tensor]:
        if self.patch_size:
            images = paired_random_crop(images, self.patch_size, rng=g, names=names)
        if self.augment_modes:
            mode = self.augment_modes[int(torch.randint(len(self.augment_modes), (), generator=g))]
            images = [augment_mode(im, mode) for im in images]
        return [im.contiguous() for im in images]


class _Pair(NamedTuple):
    degraded: Path
    clean: Path
    degradation: str


def _name_mapper(name_map: Sequence[tuple[str, str]], option: str = "name_map") -> Callable[[str], str]:
    """A name mapped by the first ``(regex, replacement)`` that matches it (:func:`re.sub`), else kept."""
    try:
        compiled = [(re.compile(pattern), replacement) for pattern, replacement in name_map]
    except re.error as exc:
        raise UsageError(f"{option}: {exc.pattern!r} is not a valid regular expression ({exc})") from exc

    def mapped(name: str) -> str:
        for pattern, replacement in compiled:
            if pattern.search(name) is not None:
                try:
                    return pattern.sub(replacement, name)
                except (re.error, IndexError) as exc:
                    raise UsageError(
                        f"{option}: cannot apply the replacement {replacement!r} to {name!r} ({exc})"
                    ) from exc
        return name

    return mapped


def _name_prefix(stem: str) -> str:
    """The degradation ``label_from="prefix"`` reads: ``stem`` up to the first ``-``, ``_``, space or dot."""
    return re.split(r"[-_ .]", stem, maxsplit=1)[0]


def _degradation_of(path: Path, rel: Path, label_from: str | Mapping[str, str]) -> str:
    if isinstance(label_from, Mapping):
        for key in (path.name, path.stem, str(rel)):
            if key in label_from:
                return str(label_from[key])
        raise DatasetError(f"label_from mapping has no entry for {path} (tried {path.name!r}, {path.stem!r})")
    if label_from == "subfolder":
        if len(rel.parts) < 2:
            raise DatasetError(
                f"label_from='subfolder' but {path} is not inside a sub-folder of the degraded folder"
            )
        return rel.parts[0]
    if label_from == "prefix":
        return _name_prefix(path.stem)
    return str(label_from)


def _read(path: str | os.PathLike[str]) -> torch.Tensor:
    """:func:`read_image`, its per-file alpha warning given as one for the dataset (once per process, not per
    file in every worker and epoch)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(path)
    for w in caught:
        alpha = str(w.message).endswith(": alpha channel dropped")
        warnings.warn(
            "images with an alpha channel: it is dropped" if alpha else w.message, w.category, stacklevel=3
        )
    return image


class PairedImageDataset(Dataset, _Geometry):
    """Degraded / clean image pairs from two folders (of one name or stem, after ``name_map``), each labelled.

    Args:
        name_map: A ``(regex, replacement)`` pair for :func:`re.sub` of the file name.
        label_from: ``"subfolder"``, ``"prefix"`` (the name up to the first ``-``, ``_``, space or dot; one
            naming no degradation is kept in ``unrecognised_prefixes``), a mapping from name or stem, or a name.
        classes: Degradation name -> label, or a sequence (its order); default the vocabulary's, else sorted.
        patch_size: Random crop side (``None`` or ``"full"``: whole images).
        augment_modes: Flip / rot90 modes to draw from (:func:`~allinone_ir.data.augment.augment_mode`).
        recursive: Scan the folders recursively (always on with ``label_from="subfolder"``).
        validate: Read every pair now and report all problems in one error.

    Raises:
        DatasetError: For missing folders, images or partners, a class outside ``classes``, bad pairs (``validate``).
        UsageError: For a ``name_map`` that does not compile or apply.
    """

    def __init__(
        self,
        degraded_dir: PathLike,
        clean_dir: PathLike,
        *,
        name_map: tuple[str, str] | None = None,
        label_from: str | Mapping[str, str] = "prefix",
        classes: Classes = None,
        patch_size: PatchSize = None,
        augment_modes: Sequence[int] = tuple(range(AUGMENT_MODES)),
        seed: int = 0,
        recursive: bool = False,
        validate: bool = False,
    ) -> None:
        self.degraded_dir, self.clean_dir = Path(degraded_dir), Path(clean_dir)
        for what, d in (("degraded_dir", self.degraded_dir), ("clean_dir", self.clean_dir)):
            if not d.is_dir():
                raise DatasetError(f"{what} is not a folder: {d}")
        _Geometry.__init__(self, patch_size, augment_modes, seed)
        if name_map is not None and (not isinstance(name_map, (tuple, list)) or len(name_map) != 2):
            raise UsageTypeError(f"name_map must be a (regex, replacement) pair, got {name_map!r}")
        recursive = recursive or label_from == "subfolder"
        degraded = list_images(self.degraded_dir, recursive=recursive)
        if not degraded:
            raise DatasetError(f"no images found in {self.degraded_dir}")
        by_stem = _images_by_stem(self.clean_dir, recursive=recursive)
        mapped = _name_mapper([name_map] if name_map else [])
        self.pairs: list[_Pair] = []
        missing: list[str] = []
        for d in degraded:
            rel = d.relative_to(self.degraded_dir)
            target = mapped(d.name)
            # the partner beside it (same sub-folder), at the top of clean_dir, or the only one of its stem
            here, top = self.clean_dir / rel.parent / target, self.clean_dir / target
            stem = by_stem.get(Path(target).stem, [])
            c = next((p for p in (here, top) if p.is_file()), stem[0] if len(stem) == 1 else None)
            if c is None:
                many = f"; ambiguous: {len(stem)} images of its stem ({', '.join(map(str, stem))})"
                missing.append(
                    f"{d} -> expected clean partner {self.clean_dir / target}{many if stem else ''}"
                )
            else:
                self.pairs.append(_Pair(d, c, _degradation_of(d, rel, label_from)))
        if validate:
            _report([f"no clean partner: {m}" for m in missing] + self.validate(raise_on_error=False))
        _report(missing, what="degraded image(s) without a clean partner")
        names = sorted({p.degradation for p in self.pairs})
        self.unrecognised_prefixes: dict[str, Path] = {}
        if classes is None:
            labels = {n: DEGRADATION_LABELS.get(_task_degradation(n)) for n in names}
            known = {n: v for n, v in labels.items() if v is not None}
            classes = known if len(known) == len(names) else names
            unknown = [
                p for p in reversed(self.pairs) if label_from == "prefix" and labels[p.degradation] is None
            ]
            self.unrecognised_prefixes = {p.degradation: p.degraded for p in unknown}
        self.classes = _class_table(classes, names)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, pair: _Pair) -> tuple[torch.Tensor, torch.Tensor]:
        deg, clean = _read(pair.degraded), _read(pair.clean)
        if deg.shape != clean.shape:
            raise DatasetError(
                f"size mismatch: {pair.degraded} is {deg.shape[2]}x{deg.shape[1]} but its clean partner "
                f"{pair.clean} is {clean.shape[2]}x{clean.shape[1]}"
            )
        return deg, clean

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        deg, clean = self._load(pair)
        g = _sample_generator(self.seed, self.epoch, index)
        deg, clean = self._geometry([deg, clean], g, (str(pair.degraded), str(pair.clean)))
        return {
            "degraded": deg,
            "clean": clean,
            "label": self.classes[pair.degradation],
            "degradation": pair.degradation,
            "task": pair.degradation,
            "name": pair.degraded.stem,
        }

    def split(
        self, val_split: float | int, *, seed: int | None = None
    ) -> tuple[PairedImageDataset, PairedImageDataset]:
        """Hold out ``val_split`` (a fraction, at least one pair, or a count) of the pairs as ``(train, val)``.

        Each degradation gives a share proportional to its size (largest remainders), keeping one pair; ``val``
        gives whole, unaugmented images; ``seed`` (default the dataset's) seeds the shuffle.

        Raises:
            UsageError: If ``val_split`` is not a fraction in (0, 1) or a count in ``[1, len - 1]``.
        """
        _check_val_split(val_split)
        n = len(self.pairs)
        total = max(1, round(val_split * n)) if isinstance(val_split, float) else val_split
        if n < 2:
            raise UsageError(f"val_split needs at least 2 pairs (one to train on), the dataset has {n}")
        if not 1 <= total <= n - 1:
            raise UsageError(
                f"val_split {val_split!r} holds out {total} of {n} pairs; hold out between 1 and {n - 1}"
            )
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(self.pairs):
            groups.setdefault(pair.degradation, []).append(i)
        names = sorted(groups)
        exact = {g: total * len(groups[g]) / n for g in names}
        take = {g: int(exact[g]) for g in names}
        for g in sorted(names, key=lambda g: (-(exact[g] - take[g]), g))[: total - sum(take.values())]:
            take[g] += 1
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        held: set[int] = set()
        for g in names:
            members = sorted(groups[g], key=lambda i: str(self.pairs[i].degraded))
            order = torch.randperm(len(members), generator=gen).tolist()
            held.update(members[j] for j in order[: min(take[g], len(members) - 1)])
        train, val = copy.copy(self), copy.copy(self)
        train.pairs = [p for i, p in enumerate(self.pairs) if i not in held]
        val.pairs = [self.pairs[i] for i in sorted(held)]
        val.patch_size, val.augment_modes = None, ()
        return train, val

    def validate(self, raise_on_error: bool = True) -> list[str]:
        """Read every pair; return (or raise in one :class:`DatasetError`) every problem found."""
        problems: list[str] = []
        for pair in self.pairs:
            try:
                deg, _ = self._load(pair)
            except (OSError, DatasetError) as exc:
                problems.append(str(exc))
                continue
            if self.patch_size and min(deg.shape[-2:]) < self.patch_size:
                problems.append(
                    f"{pair.degraded}: {deg.shape[2]}x{deg.shape[1]} is smaller than patch_size {self.patch_size}"
                )
        return _report(problems, raise_on_error)


class SyntheticDegradationDataset(Dataset, _Geometry):
    """Degraded / clean pairs synthesised (:func:`~allinone_ir.data.synthesize`) from cropped, augmented photos.

    Args:
        clean: A folder of clean images, a list of image paths, or a list of ``(3, H, W)`` tensors.
        tasks: Degradation specifications (:func:`~allinone_ir.degradation_types.parse_degradation`).
        repeat: How many times each (image, task) appears per epoch.
        classes: Degradation name -> label (default the vocabulary's labels).
        fixed: Ignore the epoch (the same samples every epoch: validation).
        cache: Keep decoded clean images in memory.

    Examples:
        >>> ds = SyntheticDegradationDataset([torch.rand(3, 32, 32)], tasks=["noise_25", "rain"], patch_size=16)
        >>> len(ds), ds[1]["degradation"], ds[0]["task"]
        (2, 'rain', 'noise_25')
    """

    def __init__(
        self,
        clean: PathLike | Sequence[PathLike] | Sequence[torch.Tensor],
        tasks: Sequence[str] = ("noise", "rain", "haze", "snow"),
        *,
        patch_size: PatchSize = 128,
        augment_modes: Sequence[int] = tuple(range(AUGMENT_MODES)),
        seed: int = 0,
        repeat: int = 1,
        classes: Classes = None,
        fixed: bool = False,
        cache: bool = True,
    ) -> None:
        self.images: list[Path | torch.Tensor] = (
            list(list_images(clean))
            if isinstance(clean, (str, os.PathLike))
            else [c if isinstance(c, torch.Tensor) else Path(c) for c in clean]
        )
        if not self.images:
            raise DatasetError(f"no images found in {clean}")
        for i, item in enumerate(self.images):
            if isinstance(item, torch.Tensor):
                _check_float_image(item, f"clean image {i}")
        if not tasks:
            raise UsageError("tasks must name at least one degradation")
        if repeat < 1:
            raise UsageError(f"repeat must be >= 1, got {repeat}")
        self.tasks = tuple(tasks)
        names = [_task_degradation(t, strict=True) for t in self.tasks]
        self.classes = _class_table(DEGRADATION_LABELS if classes is None else classes, names)
        _Geometry.__init__(self, patch_size, augment_modes, seed)
        self.repeat, self.fixed, self.cache = repeat, fixed, cache
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.images) * len(self.tasks) * self.repeat

    def _clean(self, i: int) -> tuple[torch.Tensor, str]:
        item = self.images[i]
        if isinstance(item, torch.Tensor):
            return item.float(), f"image{i:04d}"
        img = self._cache[i] if i in self._cache else _read(item)
        if self.cache:
            self._cache[i] = img
        return img, item.stem

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = index % (len(self.images) * len(self.tasks))
        img_i, task = k // len(self.tasks), self.tasks[k % len(self.tasks)]
        clean, name = self._clean(img_i)
        g = _sample_generator(self.seed, 0 if self.fixed else self.epoch, index)
        (clean,) = self._geometry([clean], g, (name,))
        degradation = _task_degradation(task, strict=True)
        return {
            "degraded": synthesize(clean, task, rng=g),
            "clean": clean,
            "label": self.classes[degradation],
            "degradation": degradation,
            "task": task,
            "name": name,
        }


class MixedDataset(ConcatDataset):
    """Several datasets as one, each repeated by a factor (the official recipes' task balancing).

    Args:
        parts: ``(dataset, repeat)`` pairs (or datasets, repeat 1).

    Examples:
        >>> a = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["rain"], patch_size=8)
        >>> b = SyntheticDegradationDataset([torch.rand(3, 16, 16)], tasks=["haze"], patch_size=8)
        >>> ds = MixedDataset([(a, 3), (b, 1)])
        >>> len(ds), [ds[i]["degradation"] for i in range(4)]
        (4, ['rain', 'rain', 'rain', 'haze'])
    """

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts: list[tuple[Any, int]] = [p if isinstance(p, tuple) else (p, 1) for p in parts]
        if not self.parts:
            raise UsageError("MixedDataset needs at least one dataset")
        if any(int(rep) < 1 for _, rep in self.parts):
            raise UsageError(f"repeat factors must be >= 1, got {[rep for _, rep in self.parts]}")
        super().__init__([ds for ds, rep in self.parts for _ in range(int(rep))])

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every part."""
        for ds, _ in self.parts:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def validate(self, raise_on_error: bool = True) -> list[str]:
        """Run ``validate`` on every part that has it; report all problems together."""
        parts = [ds for ds, _ in self.parts if hasattr(ds, "validate")]
        return _report([q for ds in parts for q in ds.validate(raise_on_error=False)], raise_on_error)


#: Each task's folders under the official PromptIR ``data/`` root: clean images to add noise to, or
#: ``(degraded folder, clean folder, name map)``.
PROMPTIR_LAYOUT: dict[str, Any] = {
    "denoise": "Train/Denoise",
    "derain": ("Train/Derain/rainy", "Train/Derain/gt", (r"^rain-", "norain-")),
    "dehaze": ("Train/Dehaze/synthetic", "Train/Dehaze/original", (r"^([^_]+)_.*$", r"\1")),
    "deblur": ("Train/Deblur/blur", "Train/Deblur/sharp", None),
    "lowlight": ("Train/LowLight/low", "Train/LowLight/high", None),
}

#: Resampling ratios of the PIP paper (Table S1); PromptIR uses the same for its three tasks.
PROMPTIR_REPEATS: dict[str, int] = {"denoise": 1, "derain": 120, "dehaze": 1, "deblur": 5, "lowlight": 20}


def promptir_dataset(
    root: PathLike,
    tasks: Sequence[str] = ("denoise", "derain", "dehaze"),
    *,
    patch_size: PatchSize = 128,
    sigmas: Sequence[float] = (15, 25, 50),
    repeats: Mapping[str, int] | None = None,
    layout: Mapping[str, Any] | None = None,
    augment_modes: Sequence[int] = tuple(range(1, AUGMENT_MODES)),
    seed: int = 0,
) -> MixedDataset:
    """The all-in-one training mix of PromptIR (three tasks) or PIP (five tasks), with PIP's labels.

    Args:
        root: Data root (the official ``data/`` folder).
        tasks: Any of ``"denoise"`` (noise of each of ``sigmas`` on clean images), ``"derain"``, ``"dehaze"``,
            ``"deblur"``, ``"lowlight"`` (paired folders of ``layout`` over :data:`PROMPTIR_LAYOUT`).
        repeats: Repeat factor per task (over :data:`PROMPTIR_REPEATS`).
        augment_modes: Flip / rotation modes (default the 7 non-identity ones, as the official code).

    Raises:
        UnknownNameError: For an unknown task.
        DatasetError: For missing folders or partners.
    """
    root = Path(root)
    lay = dict(PROMPTIR_LAYOUT, **(layout or {}))
    reps = dict(PROMPTIR_REPEATS, **(repeats or {}))
    parts: list[tuple[Any, int]] = []
    for i, task in enumerate(tasks):
        if task not in lay:
            raise UnknownNameError(f"unknown task {task!r}; known: {sorted(PROMPTIR_LAYOUT)}")
        geometry: dict[str, Any] = dict(
            patch_size=patch_size, augment_modes=augment_modes, seed=seed + 1000 * i
        )
        ds: Any
        if task == "denoise":
            folder = root / lay["denoise"]
            if not folder.is_dir():
                raise DatasetError(f"denoise task: clean image folder not found: {folder}")
            noise = [f"noise_{s:g}" for s in sigmas]
            ds = SyntheticDegradationDataset(folder, tasks=noise, cache=False, **geometry)
        else:
            deg, clean, name_map = lay[task]
            label = _task_degradation(task)
            ds = PairedImageDataset(
                root / deg, root / clean, name_map=name_map, label_from=label, recursive=True, **geometry
            )
        parts.append((ds, int(reps.get(task, 1))))
    return MixedDataset(parts)


def _parts(dataset: Any) -> list[Any]:
    """The datasets that make up ``dataset`` (through :class:`MixedDataset` and ``Subset``)."""
    if isinstance(dataset, MixedDataset):
        return [q for ds, _ in dataset.parts for q in _parts(ds)]
    if isinstance(dataset, torch.utils.data.Subset):
        return _parts(dataset.dataset)
    return [dataset]


def _part_classes(ds: Any) -> dict[str, int] | None:
    """The degradations and labels of one dataset's samples; ``None`` for a foreign dataset."""
    if isinstance(ds, PairedImageDataset):
        return {p.degradation: ds.classes[p.degradation] for p in ds.pairs}
    if isinstance(ds, SyntheticDegradationDataset):
        return {b: ds.classes[b] for b in map(_task_degradation, ds.tasks)}
    return None


def _label_classes(dataset: Any, network: str = "the network") -> list[str] | None:
    """The degradation names ``dataset``'s samples carry, in label order (``None`` if it cannot say)."""
    found: dict[str, int] = {}
    for ds in _parts(dataset):
        classes = _part_classes(ds)
        if classes is None:
            return None
        for name, path in getattr(ds, "unrecognised_prefixes", {}).items():
            raise DatasetError(
                f"{network} is told the degradation of every image, but file names such as {path.name} "
                f"give none: their prefix {name!r} names no degradation (known: "
                f"{', '.join(DEGRADATION_LABELS)}); put the images in sub-folders named by degradation "
                "(label_from: subfolder), give one degradation for all (label_from: rain), or name your "
                "prefixes as classes (classes: [...])"
            )
        for name, label in classes.items():
            found.setdefault(name, label)
    return sorted(found, key=lambda n: (found[n], n))


def _match_labels(dataset: Any, names: Sequence[str], network: str = "the network") -> None:
    """Relabel ``dataset`` by name (aliases too) for a network of degradations ``names``, or a DatasetError."""
    classes = _label_classes(dataset, network)
    if classes is None:
        return
    mapping: dict[str, int] = {}
    missing = []
    for c in classes:
        try:
            mapping[c] = _name_index(c, names)
        except ValueError:
            missing.append(c)
    if missing:
        raise DatasetError(
            f"{network}: the network cannot represent the degradation(s) {missing} of the data: the data's "
            f"degradations are {list(classes)}, the network's are {list(names)} (labels are matched by name, "
            "aliases included)"
        )
    for ds in _parts(dataset):
        ds.classes = {name: mapping[name] for name in _part_classes(ds) or {}}
