#!/usr/bin/env python
"""Quality study (issue 13): do the papers' orderings hold when this library trains the networks?

One command trains and evaluates, through the library's own :class:`~allinone_ir.training.Trainer`,
:class:`~allinone_ir.training.TrainerConfig`, data synthesis and losses, small networks of about the
same size on the same budget, and writes tables, figures and example restorations:

- ``models``: Restormer, PromptIR and PIP-Restormer (and NAFNet vs PIP-NAFNet) on the 3-task
  all-in-one setting synthesised by the library (Gaussian noise sigma 15/25/50 by the official 8-bit
  recipe, rain streaks, haze), several seeds, PSNR / SSIM under the PromptIR protocol;
- ``pip_control``: the PIP-Restormer of ``models`` evaluated with the right degradation label, blind
  (its classifier) and a wrong label; its classifier's accuracy; the pairwise angles between its
  degradation prompts, with the directional decoupled loss on (``models``) and off (extra runs);
- ``losses``: the course recipes on the rain + snow setting: L1, Charbonnier, L1+SSIM, PSNR loss and
  the guided frequency loss, on the same network and budget;
- ``tta``: the gain of flip (x4) and x8 test-time augmentation on the ``losses`` networks.

Data: every natural colour photograph on the machine without a download (scikit-image's bundled data
images, matplotlib's sample photograph; the package's own sample photographs when scikit-image is
absent), with a fixed split: the test photographs are never trained on (see :func:`photo_inventory`).

Every run writes ``OUT/runs/<part>/<run>/result.json``; a rerun of the same command skips finished
runs and continues an interrupted one from its last checkpoint (the trainer's ``resume="auto"``).
At the end ``OUT/results.json``, ``OUT/study.md`` (tables), ``OUT/*.png`` (figures) are written.

Usage::

    python benchmarks/study.py                      # the default study (about 65 min on 2 CPU cores:
                                                    # one run per core at a time, --jobs)
    python benchmarks/study.py --smoke --out /tmp/s # the whole pipeline on tiny models, < 1 min (CI)
    python benchmarks/study.py --device cuda --scale large --out study_large
    python benchmarks/study.py --only losses,tta    # some parts only (the others' runs are kept)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

PARTS = ("models", "pip_control", "losses", "tta")

# --------------------------------------------------------------------------------------------- data
#: The natural colour photographs looked for, by name: (package, file inside it).
#: scikit-image's ``data`` folder ships these in its wheel (no download): astronaut, chelsea, coffee,
#: rocket and the motorcycle stereo pair are colour photographs. matplotlib ships grace_hopper.jpg.
#: Left out on purpose: grey-scale images (camera, moon, coins, page, text, clock_motion, and the
#: grass / gravel / brick textures), non-photographic or non-natural ones (hubble_deep_field: an
#: astronomical exposure; retina, ihc, cell, microaneurysms: medical / microscopy; horse, phantom, logo,
#: color, chessboard: drawn or synthetic; lfw_subset: 25 px grey faces).
PHOTO_SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}

#: Held out: never trained on. The motorcycle stereo pair (one scene seen from two viewpoints) stays
#: together on the training side, so no test photograph has a near-copy in training.
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "grace_hopper")

#: The 3-task setting (PromptIR / PIP Table 1) and the course's two-degradation setting.
THREE_TASKS: tuple[str, ...] = ("noise_15", "noise_25", "noise_50", "rain", "haze")
THREE_CLASSES: dict[str, int] = {"noise": 0, "rain": 1, "haze": 2}
WEATHER_TASKS: tuple[str, ...] = ("rain", "snow")
WEATHER_CLASSES: dict[str, int] = {"rain": 0, "snow": 1}

#: The losses compared (registered names of ``allinone_ir.training.LOSSES``).
STUDY_LOSSES: tuple[str, ...] = ("l1", "charbonnier", "l1_ssim", "psnr", "gfl")
LOSS_LABELS = {
    "l1": "L1",
    "charbonnier": "Charbonnier",
    "l1_ssim": "L1 + SSIM",
    "psnr": "PSNR loss",
    "gfl": "guided frequency",
}
TTA_MODES: tuple[Any, ...] = (False, "flip", "x8")
#: The eight transforms of x8 TTA, in the order of ``allinone_ir.inference.tta_transforms("x8")``:
#: rotation by k x 90 degrees, then an optional horizontal flip. "rot90" and "rot270" lay a vertical
#: streak horizontally; the flips keep the orientation of streaks.
X8_TRANSFORM_NAMES: tuple[str, ...] = (
    "identity", "hflip", "rot90", "rot90+hflip", "rot180", "rot180+hflip", "rot270", "rot270+hflip"
)  # fmt: skip

# Seed of the test degradations: the same test images for every run and seed.
TEST_SEED = 2026


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def photo_inventory() -> dict[str, Any]:
    """The photographs found on this machine and the fixed split.

    scikit-image's full-size photographs are preferred; the package's bundled 256 px copies of four of
    them (astronaut, chelsea, coffee, rocket) are used only where scikit-image is not installed (the
    same photographs, never both). Photographs whose package is missing are listed under ``missing``.

    Returns:
        ``{"train": [(name, path)], "test": [(name, path)], "missing": [names], "source": {name: package}}``.
    """
    from allinone_ir.assets import sample_images

    found: dict[str, tuple[str, Path]] = {}
    missing: list[str] = []
    for name, (pkg, rel) in PHOTO_SOURCES.items():
        root = _package_dir(pkg)
        path = root / rel if root is not None else None
        if path is not None and path.is_file():
            found[name] = (pkg, path)
        else:
            missing.append(name)
    for p in sample_images():
        if p.stem not in found:
            found[p.stem] = ("allinone_ir.assets", p)
            if p.stem in missing:
                missing.remove(p.stem)
    names = sorted(found)
    test = [n for n in names if n in TEST_PHOTOS]
    train = [n for n in names if n not in TEST_PHOTOS]
    return {
        "train": [(n, found[n][1]) for n in train],
        "test": [(n, found[n][1]) for n in test],
        "missing": missing,
        "source": {n: found[n][0] for n in names},
    }


def _centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    th, tw = min(size, h) // 8 * 8, min(size, w) // 8 * 8
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top : top + th, left : left + tw].contiguous()


# ------------------------------------------------------------------------------------------- models
def model_specs(scale: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Study name -> (registered name, constructor arguments) at a scale (``small``, ``large``, ``smoke``).

    ``small`` (CPU default): one Restormer backbone (dim 16, blocks 2/3/3/4, 2 refinement blocks) for
    Restormer, PromptIR and PIP-Restormer; PromptIR's prompts shrunk so that it is about as much larger
    than Restormer as in the papers (+26 %); one NAFNet backbone (width 16, blocks 1/1/2/2, 2 middle
    blocks) for NAFNet and PIP-NAFNet. Parameters: Restormer 1,728,382, PromptIR 2,174,023,
    PIP-Restormer 1,757,291, NAFNet 1,754,099, PIP-NAFNet 2,257,030. ``large`` doubles the widths
    (6.7-8.8 M); ``smoke`` is as small as the networks go (20-280 k).
    """
    three = tuple(THREE_CLASSES)
    if scale == "smoke":
        d = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2))
        e = dict(width=8, middle_blk_num=1, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))
        pr = dict(prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), prompt_len=2)
        pp = dict(prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), p2f_heads=2, classifier_widths=(4, 8, 8))
        pn = dict(prompt_dims=(8, 16), prompt_sizes=(8, 4), p2f_heads=2, classifier_widths=(4, 8, 8))
    else:
        k = 1 if scale == "small" else 2
        dim, width = 16 * k, 16 * k
        d = dict(dim=dim, num_blocks=(2, 3, 3, 4), num_refinement_blocks=2, heads=(1, 2, 4, 8))
        e = dict(width=width, middle_blk_num=2, enc_blk_nums=(1, 1, 2, 2), dec_blk_nums=(1, 1, 1, 1))
        pr = dict(prompt_dims=(dim, 2 * dim, 3 * dim), prompt_sizes=(32, 16, 8), prompt_len=3)
        pp = dict(
            prompt_dims=(dim, 2 * dim, 4 * dim), prompt_sizes=(32, 16, 8), classifier_widths=(8, 16, 32)
        )
        pn = dict(
            prompt_dims=(width, 2 * width, 4 * width, 4 * width),
            prompt_sizes=(32, 16, 8, 8),
            classifier_widths=(8, 16, 32),
        )
    return {
        "restormer": ("restormer", d),
        "promptir": ("promptir", {**d, **pr}),
        "pip_restormer": ("pip_restormer", {**d, **pp, "degradations": three}),
        "nafnet": ("nafnet", e),
        "pip_nafnet": ("pip_nafnet", {**e, **pn, "degradations": three}),
    }


MODEL_LABELS = {
    "restormer": "Restormer",
    "promptir": "PromptIR",
    "pip_restormer": "PIP-Restormer",
    "nafnet": "NAFNet",
    "pip_nafnet": "PIP-NAFNet",
}


@dataclass
class Settings:
    """Everything that shapes the study (saved in results.json)."""

    scale: str = "small"
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ("restormer", "promptir", "pip_restormer", "nafnet", "pip_nafnet")
    steps: int = 300
    loss_steps: int = 600
    loss_model: str = "nafnet"
    batch_size: int = 4
    patch_size: int = 64
    lr: float = 1e-3
    eval_size: int = 256
    val_size: int = 128
    test_draws: int = 2
    val_points: int = 5
    device: str = "auto"
    jobs: int = 1
    threads_per_job: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            scale="smoke",
            seeds=(0,),
            steps=2,
            loss_steps=2,
            batch_size=2,
            patch_size=32,
            eval_size=48,
            val_size=32,
            test_draws=1,
            val_points=1,
        )

    @classmethod
    def large(cls) -> Settings:
        return cls(scale="large", steps=4000, loss_steps=4000, batch_size=8, patch_size=128, lr=5e-4)


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One training run."""

    part: str  # "models", "pip_control" or "losses"
    model: str  # study model name (a key of model_specs)
    seed: int
    steps: int
    loss: str = "l1"
    aux_weights: tuple[tuple[str, float], ...] = ()
    variant: str = ""

    @property
    def run_id(self) -> str:
        tail = f"{self.model}{'-' + self.variant if self.variant else ''}"
        return f"{self.part}/{tail}/seed{self.seed}"


class Study:
    """Runs the parts of the study into one output folder."""

    def __init__(self, settings: Settings, out: Path, log: Any = print) -> None:
        from allinone_ir.io import read_image

        self.s, self.out, self.log = settings, out, log
        self.inventory = photo_inventory()
        if not self.inventory["train"] or not self.inventory["test"]:
            raise SystemExit(f"need training and test photographs, found {self.inventory}")
        self.train_images = [read_image(p) for _, p in self.inventory["train"]]
        self.test_images = [
            _centre_crop(read_image(p), settings.eval_size) for _, p in self.inventory["test"]
        ]
        self.val_images = [_centre_crop(read_image(p), settings.val_size) for _, p in self.inventory["test"]]
        self.specs = model_specs(settings.scale)
        self.results: dict[str, dict[str, Any]] = {}
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------- data
    def train_set(self, tasks: Sequence[str], classes: dict[str, int], seed: int) -> Any:
        from allinone_ir.data import MixedDataset, SyntheticDegradationDataset

        kw = dict(patch_size=self.s.patch_size, classes=classes)
        if tasks == WEATHER_TASKS:
            return SyntheticDegradationDataset(self.train_images, tasks=tasks, seed=seed, **kw)
        # one share per degradation (the sigmas share noise's), as the official recipes balance tasks
        noise = [t for t in tasks if t.startswith("noise")]
        parts = [(SyntheticDegradationDataset(self.train_images, tasks=noise, seed=seed * 10, **kw), 1)]
        for j, t in enumerate(t for t in tasks if not t.startswith("noise")):
            ds = SyntheticDegradationDataset(self.train_images, tasks=[t], seed=seed * 10 + j + 1, **kw)
            parts.append((ds, len(noise)))
        return MixedDataset(parts)

    def test_set(
        self, tasks: Sequence[str], classes: dict[str, int], images: list[torch.Tensor], draws: int
    ) -> list[dict[str, Any]]:
        from allinone_ir.data import SyntheticDegradationDataset

        ds = SyntheticDegradationDataset(
            images,
            tasks=tasks,
            patch_size=None,
            augment_modes=(0,),
            seed=TEST_SEED,
            repeat=draws,
            fixed=True,
            classes=classes,
        )
        names = [n for n, _ in self.inventory["test"]]
        samples = []
        for i in range(len(ds)):
            sample = ds[i]
            sample["photo"] = names[(i % (len(images) * len(tasks))) // len(tasks)]
            samples.append(sample)
        return samples

    def setting(self, part: str) -> tuple[tuple[str, ...], dict[str, int]]:
        return (WEATHER_TASKS, WEATHER_CLASSES) if part == "losses" else (THREE_TASKS, THREE_CLASSES)

    # ---------------------------------------------------------------- one run
    def build(self, model: str, seed: int) -> torch.nn.Module:
        from allinone_ir import create_model

        name, kwargs = self.specs[model]
        torch.manual_seed(seed)
        return create_model(name, **kwargs)

    def finished(self, spec: RunSpec) -> dict[str, Any] | None:
        """The result of a finished run made with these settings, else ``None`` (not finished).

        Raises:
            SystemExit: If the run's folder holds a result made with other settings.
        """
        run_dir = self.out / "runs" / spec.run_id
        result_file = run_dir / "result.json"
        if not result_file.is_file():
            return None
        done = json.loads(result_file.read_text())
        if {k: done.get(k) for k in self._want(spec)} != self._want(spec):
            raise SystemExit(
                f"{result_file} was made with other settings than this command's; use another --out "
                f"or delete {run_dir}"
            )
        self.results[spec.run_id] = done
        return done

    def _want(self, spec: RunSpec) -> dict[str, Any]:
        return _plain(
            {
                "spec": {**spec.__dict__, "aux_weights": dict(spec.aux_weights)},
                "model_kwargs": self.specs[spec.model][1],
                "settings": self._run_settings(),
            }
        )

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Train one run (or read its finished result) and evaluate it."""
        from allinone_ir import Trainer, TrainerConfig

        done = self.finished(spec)
        if done is not None:
            return done
        run_dir = self.out / "runs" / spec.run_id
        result_file = run_dir / "result.json"
        want = self._want(spec)
        tasks, classes = self.setting(spec.part)
        net = self.build(spec.model, spec.seed)
        params = sum(p.numel() for p in net.parameters())
        pip = bool(getattr(net, "accepts_degradation", False))
        angles_init = prompt_angles(net) if pip else None
        s = self.s
        cfg = TrainerConfig(
            output_dir=str(run_dir),
            max_steps=spec.steps,
            batch_size=s.batch_size,
            lr=s.lr,
            min_lr=s.lr / 100,
            warmup_steps=max(1, spec.steps // 20),
            grad_clip=1.0,
            loss=spec.loss,
            seed=spec.seed,
            device=s.device,
            log_every=max(1, spec.steps // 50),
            val_every=max(1, spec.steps // s.val_points),
            save_every_minutes=5.0,
            progress_bar=False,
            plot=False,
            aux_weights=dict(spec.aux_weights),
            resume="auto",
        )
        val = self.test_set(tasks, classes, self.val_images, 1)
        train = self.train_set(tasks, classes, spec.seed)
        trainer = Trainer(net, cfg, train, _ListDataset(val))
        t = time.perf_counter()
        trainer.fit()
        train_s = time.perf_counter() - t
        model = trainer.model.eval()
        torch.save(model.state_dict(), run_dir / "weights.pt")
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # optimizer state: not needed any more
        t = time.perf_counter()
        test = self.test_set(tasks, classes, self.test_images, s.test_draws)
        per_image = evaluate(model, test, "label" if pip else None, device=trainer.device)
        result: dict[str, Any] = {
            **want,
            "run_id": spec.run_id,
            "params": params,
            "train_seconds": train_s,
            "seconds_per_step": train_s / spec.steps,
            "device": str(trainer.device),
            "threads": torch.get_num_threads(),
            "metrics": summarise(per_image),
            "per_image": per_image,
            "curve": {
                "train": [
                    [h["step"], h.get("loss_main", h["loss"])]
                    for h in trainer.history
                    if h["kind"] == "train"
                ],
                "val": [
                    [h["step"], h["psnr"]]
                    for h in trainer.history
                    if h["kind"] == "val" and h["degradation"] == "all"
                ],
            },
        }
        if pip:
            names = list(model.degradations)
            result["control"] = {
                mode: summarise(evaluate(model, test, mode, device=trainer.device))
                for mode in ("blind", "wrong")
            }
            result["control"]["label"] = result["metrics"]
            result["classifier"] = classifier_accuracy(model, test, names, trainer.device)
            result["angles"] = {"init": angles_init, "final": prompt_angles(model)}
        result["eval_seconds"] = time.perf_counter() - t
        _write_json(result_file, result)
        self.results[spec.run_id] = result
        self.log(
            f"[{_clock(time.perf_counter() - self.t0)}] {spec.run_id}: {params:,} parameters, {spec.steps} steps "
            f"in {train_s:.0f} s ({train_s / spec.steps:.2f} s/step), test PSNR {result['metrics']['average']['psnr']:.2f} dB"
        )
        return result

    def _run_settings(self) -> dict[str, Any]:
        s = self.s
        return {
            k: getattr(s, k)
            for k in (
                "scale",
                "batch_size",
                "patch_size",
                "lr",
                "eval_size",
                "val_size",
                "test_draws",
                "val_points",
            )
        }

    # ---------------------------------------------------------------- parts
    def model_runs(self) -> list[RunSpec]:
        return [RunSpec("models", m, seed, self.s.steps) for m in self.s.models for seed in self.s.seeds]

    def ddl_off_runs(self) -> list[RunSpec]:
        return [
            RunSpec(
                "pip_control",
                "pip_restormer",
                seed,
                self.s.steps,
                aux_weights=(("ddl", 0.0),),
                variant="ddl0",
            )
            for seed in self.s.seeds
        ]

    def ddl_on_runs(self) -> list[RunSpec]:
        return [RunSpec("models", "pip_restormer", seed, self.s.steps) for seed in self.s.seeds]

    def loss_runs(self) -> list[RunSpec]:
        return [
            RunSpec("losses", self.s.loss_model, seed, self.s.loss_steps, loss=loss, variant=loss)
            for loss in STUDY_LOSSES
            for seed in self.s.seeds
        ]

    def tta(self, spec: RunSpec) -> dict[str, Any]:
        """Flip and x8 TTA on one finished run of the losses part (cached in ``tta.json``)."""
        run_dir = self.out / "runs" / spec.run_id
        path = run_dir / "tta.json"
        if path.is_file():
            cached = json.loads(path.read_text())
            if "transforms" in cached:  # else written by an earlier version: computed again
                return cached
        self.run(spec)
        net = self.build(spec.model, spec.seed)
        net.load_state_dict(torch.load(run_dir / "weights.pt", map_location="cpu", weights_only=True))
        net.eval()
        tasks, classes = self.setting(spec.part)
        test = self.test_set(tasks, classes, self.test_images, self.s.test_draws)
        device = _device(self.s.device)
        t = time.perf_counter()
        res: dict[str, Any] = {
            str(m): summarise(evaluate(net, test, None, device=device, tta=m)) for m in TTA_MODES
        }
        res["seconds"] = time.perf_counter() - t
        res["transforms"] = {
            name: summarise(evaluate(net, test, None, device=device, transform=k))
            for k, name in enumerate(X8_TRANSFORM_NAMES)
        }
        _write_json(path, res)
        return res

    def _eta(self, left: list[RunSpec]) -> str:
        """The time the remaining runs should take, from the seconds per update (and test time) measured so far."""
        per: dict[str, tuple[float, float]] = {}
        for r in self.results.values():
            per.setdefault(r["spec"]["model"], (r["seconds_per_step"], r["eval_seconds"]))
        todo = [r for r in left if self.finished(r) is None]
        if not per or not todo:
            return f"{len(todo)} runs left"
        worst = max(per.values())
        secs = sum(per.get(r.model, worst)[0] * r.steps + per.get(r.model, worst)[1] for r in todo)
        unseen = sorted({r.model for r in todo} - set(per))
        note = f" (guessing {', '.join(unseen)} from the slowest so far)" if unseen else ""
        return f"{len(todo)} runs left, about {secs / 60:.0f} min{note}"

    def execute(self, parts: Iterable[str]) -> dict[str, Any]:
        parts = list(parts)
        runs: list[RunSpec] = []
        if "models" in parts:
            runs += self.model_runs()
        if "pip_control" in parts:
            runs += self.ddl_on_runs() + self.ddl_off_runs()
        if "losses" in parts or "tta" in parts:
            runs += self.loss_runs()
        todo = list({r.run_id: r for r in runs}.values())  # each run once, in order
        jobs = max(1, min(self.s.jobs, len([r for r in todo if self.finished(r) is None])))
        self.log(
            f"study: {len(todo)} runs, parts {', '.join(parts)}, out {self.out}"
            + (f", {jobs} runs at a time" if jobs > 1 else "")
        )
        if jobs > 1:
            self._run_parallel(todo, jobs)
        for i, spec in enumerate(todo):
            self.run(spec)  # with jobs > 1: reads the results the workers wrote
            if jobs == 1 and i + 1 < len(todo):
                self.log(f"    {i + 1}/{len(todo)} done; {self._eta(todo[i + 1 :])}")
        tta = {r.run_id: self.tta(r) for r in self.loss_runs()} if "tta" in parts else {}
        # the report covers every finished run of this study in OUT, whichever parts this call ran
        for spec in self.model_runs() + self.ddl_on_runs() + self.ddl_off_runs() + self.loss_runs():
            if self.finished(spec) is not None and spec.part == "losses" and spec.run_id not in tta:
                path = self.out / "runs" / spec.run_id / "tta.json"
                if path.is_file():
                    tta[spec.run_id] = json.loads(path.read_text())
        return {"tta": tta}

    def _run_parallel(self, todo: list[RunSpec], jobs: int) -> None:
        """Train the unfinished runs of ``todo`` in ``jobs`` worker processes (``--jobs``).

        The runs are independent (each one seeds its own weights, data and test images), so a run gives
        the same result in a worker as in this process at the same thread count. Each worker uses
        ``threads_per_job`` CPU threads; the longest runs start first.
        """
        import concurrent.futures as cf
        import multiprocessing

        left = [r for r in todo if self.finished(r) is None]
        left.sort(key=lambda r: -r.steps * _COST.get(r.model, 1.0))  # longest first: less idle at the end
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
        with cf.ProcessPoolExecutor(
            jobs, mp_context=ctx, initializer=_worker_init, initargs=(self.s, str(self.out))
        ) as pool:
            pending = {pool.submit(_worker_run, spec): spec for spec in left}
            for n, fut in enumerate(cf.as_completed(pending), 1):
                fut.result()  # a failed run stops the study with its error
                spec = pending[fut]
                r = self.finished(spec)
                assert r is not None
                self.log(
                    f"[{_clock(time.perf_counter() - self.t0)}] {spec.run_id}: {r['params']:,} parameters, "
                    f"{spec.steps} steps in {r['train_seconds']:.0f} s ({r['seconds_per_step']:.2f} s/step), "
                    f"test PSNR {r['metrics']['average']['psnr']:.2f} dB ({n}/{len(left)} done)"
                )


#: Relative cost of one update (measured, 1 thread, 4 x 64 px): orders the parallel runs, longest first.
_COST = {"restormer": 8.0, "promptir": 9.0, "pip_restormer": 9.0, "nafnet": 1.0, "pip_nafnet": 2.5}

_WORKER: dict[str, Study] = {}


def _worker_init(settings: Settings, out: str) -> None:
    torch.set_num_threads(settings.threads_per_job)
    _WORKER["study"] = Study(settings, Path(out), log=lambda msg: None)


def _worker_run(spec: RunSpec) -> str:
    _WORKER["study"].run(spec)
    return spec.run_id


class _ListDataset(torch.utils.data.Dataset):
    """Precomputed samples as a dataset (the validation set of the curves)."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = [{k: v for k, v in s.items() if k != "photo"} for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


# ----------------------------------------------------------------------------------------- measures
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(
    net: torch.nn.Module,
    samples: list[dict[str, Any]],
    pip_mode: str | None,
    *,
    device: torch.device,
    tta: Any = False,
    transform: int | None = None,
) -> list[dict[str, Any]]:
    """PSNR / SSIM (PromptIR protocol) of every test sample, restored with :func:`allinone_ir.restore`.

    ``pip_mode`` for PIP networks: ``"label"`` (the right degradation), ``"blind"`` (the classifier) or
    ``"wrong"`` (the next degradation of the network's list); ``None`` for the other networks.
    ``transform``: restore through one of the x8 TTA transforms only (index into
    :data:`X8_TRANSFORM_NAMES`): the input transformed, restored, transformed back.
    """
    from allinone_ir import restore
    from allinone_ir.inference import tta_transforms
    from allinone_ir.metrics import PROMPTIR_PROTOCOL

    fwd, inv = tta_transforms("x8")[transform] if transform is not None else (None, None)

    rows = []
    names = list(getattr(net, "degradations", ()))
    for s in samples:
        kw: dict[str, Any] = {}
        if pip_mode == "label":
            kw["degradation"] = s["degradation"]
        elif pip_mode == "wrong":
            kw["degradation"] = names[(names.index(s["degradation"]) + 1) % len(names)]
        elif pip_mode == "blind":
            kw["degradation"] = None
        if fwd is None:
            out = restore(net, s["degraded"], tta=tta, progress=False, device=device, **kw)
        else:
            x = fwd(s["degraded"][None])[0].contiguous()
            out = inv(restore(net, x, progress=False, device=device, **kw)[None])[0]
        m = PROMPTIR_PROTOCOL.compute_per_image(out[None].float().cpu(), s["clean"][None])
        rows.append(
            {"task": s["task"], "photo": s["photo"], "psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0])}
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM per task, and ``average``: the mean over tasks (as the papers' tables)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = {
        t: {k: statistics.fmean(r[k] for r in rows if r["task"] == t) for k in ("psnr", "ssim")}
        for t in tasks
    }
    out["average"] = {k: statistics.fmean(out[t][k] for t in tasks) for k in ("psnr", "ssim")}
    return out


@torch.no_grad()
def classifier_accuracy(
    net: Any, samples: list[dict[str, Any]], names: list[str], device: torch.device
) -> dict:
    """Share of test images whose degradation PIP's classifier names correctly, per task and overall."""
    hits: dict[str, list[bool]] = {}
    for s in samples:
        logits = net.classify(s["degraded"][None].to(device))
        ok = names[int(logits.argmax(-1)[0])] == s["degradation"]
        hits.setdefault(s["task"], []).append(ok)
        hits.setdefault("all", []).append(ok)
    return {k: sum(v) / len(v) for k, v in hits.items()}


@torch.no_grad()
def prompt_angles(net: Any) -> dict[str, dict[str, float]]:
    """Pairwise angles (degrees) between the degradation prompts of every PIP block of ``net``."""
    from allinone_ir.losses import collect_degradation_prompts

    names = list(net.degradations)
    res: dict[str, dict[str, float]] = {}
    for level, p in enumerate(collect_degradation_prompts(net), start=1):
        v = p.detach().float().reshape(p.shape[0], -1)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (v @ v.T).clamp(-1, 1)
        res[f"level{level}"] = {
            f"{names[i]}-{names[j]}": math.degrees(math.acos(float(cos[i, j])))
            for i in range(len(names))
            for j in range(i + 1, len(names))
        }
    return res


# ------------------------------------------------------------------------------------------ reports
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = list(values)
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _by(
    runs: list[dict[str, Any]], part: str, model: str | None = None, variant: str | None = None
) -> list[dict]:
    return [
        r
        for r in runs
        if r["spec"]["part"] == part
        and (model is None or r["spec"]["model"] == model)
        and (variant is None or r["spec"]["variant"] == variant)
    ]


def metric_table(
    groups: dict[str, list[dict[str, dict[str, float]]]],
    tasks: Sequence[str],
    metric: str,
    first: str,
    digits: int,
    extra: dict[str, str] | None = None,
) -> str:
    cols = [*tasks, "average"]
    header = [first, *([next(iter(extra))] if extra else []), *cols]
    rows = []
    for name, metrics in groups.items():
        if not metrics:
            continue
        row = [name, *([extra[name]] if extra else [])]
        row += [_fmt([m[c][metric] for m in metrics], digits) for c in cols]
        rows.append(row)
    if extra:
        header[1] = extra.get("__title__", "")
    return _table(header, rows)


def _paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """Per-seed differences ``a - b`` over the seeds both have."""
    return [a[k] - b[k] for k in sorted(set(a) & set(b))]


def _verdict(diffs: Sequence[float]) -> str:
    """``holds`` / ``reversed`` when the mean difference is beyond twice its standard error, else unresolved."""
    if not diffs:
        return "not measured"
    m, sd = mean_std(diffs)
    if len(diffs) < 2:
        return "holds (one seed)" if m > 0 else "reversed (one seed)"
    if abs(m) <= 2 * sd / math.sqrt(len(diffs)):
        return "within the seed spread"
    return "holds" if m > 0 else "reversed"


def claims(study: Study, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every claim of the issue as a per-seed paired difference, with the paper's figure and a verdict."""
    runs = list(study.results.values())

    def avg(part: str, model: str, variant: str = "", key: str = "metrics") -> dict[int, float]:
        return {
            r["spec"]["seed"]: (r[key] if key == "metrics" else r["control"][key])["average"]["psnr"]
            for r in _by(runs, part, model, variant)
            if key == "metrics" or "control" in r
        }

    def angle(part: str, variant: str, which: str, reduce: Any = statistics.fmean) -> dict[int, float]:
        return {
            r["spec"]["seed"]: reduce([a for level in r["angles"][which].values() for a in level.values()])
            for r in _by(runs, part, "pip_restormer", variant)
            if "angles" in r
        }

    rows: list[tuple[str, list[float], str]] = [
        ("PIP-Restormer - PromptIR, 3-task average PSNR (dB)",
         _paired(avg("models", "pip_restormer"), avg("models", "promptir")), "+0.85 (32.91 vs 32.06, PIP Table 1)"),
        ("PIP-Restormer - Restormer, average PSNR (dB)",
         _paired(avg("models", "pip_restormer"), avg("models", "restormer")), "+0.87 on 5 tasks (PIP Table 2)"),
        ("PromptIR - Restormer, average PSNR (dB)",
         _paired(avg("models", "promptir"), avg("models", "restormer")), "> 0 (PromptIR paper)"),
        ("PIP-NAFNet - NAFNet, average PSNR (dB)",
         _paired(avg("models", "pip_nafnet"), avg("models", "nafnet")), "> 0 (PIP, prompts on another backbone)"),
        ("PIP-Restormer: right label - wrong label (dB)",
         _paired(avg("models", "pip_restormer", key="label"), avg("models", "pip_restormer", key="wrong")),
         "> 0 (prompts respond to the degradation)"),
        ("PIP-Restormer: right label - blind (dB)",
         _paired(avg("models", "pip_restormer", key="label"), avg("models", "pip_restormer", key="blind")),
         ">= 0 (classifier 98-100 % in the paper)"),
        ("mean prompt angle: decoupled loss on - off (degrees)",
         _paired(angle("models", "", "final"), angle("pip_control", "ddl0", "final")), "> 0 (spreads the prompts)"),
        ("smallest prompt angle: decoupled loss on - off (degrees)",
         _paired(angle("models", "", "final", min), angle("pip_control", "ddl0", "final", min)),
         "> 0 (its hinge pushes pairs under 90 degrees apart)"),
    ]  # fmt: skip
    loss = {
        name: {r["spec"]["seed"]: r["metrics"]["average"]["psnr"] for r in _by(runs, "losses", variant=name)}
        for name in STUDY_LOSSES
    }
    for name in STUDY_LOSSES[1:]:
        rows.append((f"{LOSS_LABELS[name]} - L1, rain + snow (dB)", _paired(loss[name], loss["l1"]),
                     "> 0 (course reports)"))  # fmt: skip
    tta = data.get("tta") or {}
    for mode, paper in (("x8", "about +0.5 (course reports)"), ("flip", "> 0")):
        diffs = [t[mode]["average"]["psnr"] - t["False"]["average"]["psnr"] for t in tta.values()]
        rows.append((f"{mode} TTA - none, rain + snow, all losses and seeds (dB)", diffs, paper))
    return [
        {"claim": c, "diffs": d, "paper": p, "verdict": _verdict(d), "mean_std": mean_std(d) if d else None}
        for c, d, p in rows
    ]


def write_report(study: Study, data: dict[str, Any], args_line: str, wall_s: float) -> str:
    """``OUT/study.md``: the tables; figures and grids are linked when they were written."""
    s, out = study.s, study.out
    runs = list(study.results.values())
    inv = study.inventory
    md = [
        "# Quality study results",
        "",
        f"Command: `{args_line}`  ",
        f"Wall time of this call: {wall_s / 60:.1f} min on {platform.processor() or platform.machine()} "
        f"({_jobs_text(s)}, device {', '.join(sorted({r['device'] for r in runs}))}); "
        f"torch {torch.__version__}. Training and testing time summed over the runs (finished runs that this "
        f"call read back included): {sum(r['train_seconds'] + r['eval_seconds'] for r in runs) / 60:.1f} min, "
        f"at {'/'.join(str(t) for t in sorted({r['threads'] for r in runs}))} thread(s) per run.  ",
        f"Scale `{s.scale}`; seeds {', '.join(map(str, s.seeds))}; {s.steps} updates per run of {s.batch_size} "
        f"crops of {s.patch_size} px (models, PIP control), {s.loss_steps} for the loss study ({s.loss_model}); "
        f"AdamW lr {s.lr:g}, warm-up then cosine to lr/100, gradient clipping 1.0.  ",
        f"Training photographs: {', '.join(n for n, _ in inv['train'])}; held-out test photographs: "
        f"{', '.join(n for n, _ in inv['test'])} (centre {s.eval_size} px crops, {s.test_draws} degradation "
        f"draws each). PSNR / SSIM: PromptIR protocol (RGB, data range 1, no border crop).",
        "",
    ]
    # ---- the claims, at a glance
    rows = [
        [c["claim"], _fmt(c["diffs"]) if c["diffs"] else "-", str(len(c["diffs"])), c["paper"], c["verdict"]]
        for c in claims(study, data)
    ]
    md += [
        "## The claims at a glance",
        "",
        "Differences paired by seed (mean ± standard deviation over the pairs); a claim *holds* or is "
        "*reversed* when the mean is beyond twice its standard error, else it is *within the seed spread*.",
        "",
        _table(["claim", "measured", "pairs", "paper / reports", "verdict"], rows),
        "",
    ]
    # ---- budget
    rows = []
    for part, m in dict.fromkeys((r["spec"]["part"], r["spec"]["model"]) for r in runs):
        rs = [r for r in runs if r["spec"]["model"] == m and r["spec"]["part"] == part]
        rows.append(
            [
                part,
                MODEL_LABELS[m],
                f"{rs[0]['params']:,}",
                str(rs[0]["spec"]["steps"]),
                f"{statistics.fmean(r['seconds_per_step'] for r in rs):.3f}",
                f"{statistics.fmean(r['train_seconds'] for r in rs):.0f}",
                f"{statistics.fmean(r['eval_seconds'] for r in rs):.0f}",
                str(len(rs)),
            ]
        )
    header = ["part", "model", "parameters", "updates", "s / update", "train s / run", "test s / run", "runs"]
    md += ["## Budget", "", _table(header, rows), ""]
    # ---- models
    mr = _by(runs, "models")
    if mr:
        groups = {MODEL_LABELS[m]: [r["metrics"] for r in _by(mr, "models", m)] for m in s.models}
        params = {
            MODEL_LABELS[m]: f"{_by(mr, 'models', m)[0]['params']:,}"
            for m in s.models
            if _by(mr, "models", m)
        }
        params["__title__"] = "parameters"
        md += [
            "## Three tasks: networks",
            "",
            "PSNR (dB), mean ± standard deviation over seeds; PIP networks are given the degradation label.",
            "",
            metric_table(groups, THREE_TASKS, "psnr", "model", 2, params),
            "",
            "SSIM:",
            "",
            metric_table(groups, THREE_TASKS, "ssim", "model", 4),
            "",
        ]
        md += _figure_links(out, ["fig_models.png", "fig_curves_models.png", "grid_models.png"])
    # ---- PIP control
    on = [r for r in _by(runs, "models", "pip_restormer") if "control" in r]
    off = _by(runs, "pip_control", "pip_restormer", "ddl0")
    if on:
        groups = {}
        for tag, rs in (("ddl on", on), ("ddl off", off)):
            for mode, label in (
                ("label", "right label"),
                ("blind", "blind (classifier)"),
                ("wrong", "wrong label"),
            ):
                groups[f"{label}, {tag}"] = [r["control"][mode] for r in rs]
        md += [
            "## PIP control",
            "",
            "PIP-Restormer, PSNR (dB) by what it is told about the degradation:",
            "",
            metric_table(groups, THREE_TASKS, "psnr", "PIP-Restormer", 2),
            "",
        ]
        acc_cols = [*THREE_TASKS, "all"]
        rows = [
            [tag, *[_fmt([100 * r["classifier"][c] for r in rs], 1) for c in acc_cols]]
            for tag, rs in (("ddl on", on), ("ddl off", off))
            if rs
        ]
        md += [
            "Classifier accuracy on the held-out photographs (%):",
            "",
            _table(["run", *acc_cols], rows),
            "",
        ]
        rows = []
        for tag, rs, key in (
            ("initialisation", on, "init"),
            ("ddl on", on, "final"),
            ("ddl off", off, "final"),
        ):
            if not rs:
                continue
            for level in rs[0]["angles"][key]:
                pairs = rs[0]["angles"][key][level]
                rows.append([tag, level, *[_fmt([r["angles"][key][level][p] for r in rs], 1) for p in pairs]])
        pairs = list(on[0]["angles"]["init"]["level1"])
        md += [
            "Pairwise angles between the degradation prompts (degrees):",
            "",
            _table(["weights", "block", *pairs], rows),
            "",
        ]
        md += _figure_links(out, ["fig_pip_control.png", "fig_angles.png"])
    # ---- losses
    lr_ = _by(runs, "losses")
    if lr_:
        groups = {LOSS_LABELS[x]: [r["metrics"] for r in _by(lr_, "losses", variant=x)] for x in STUDY_LOSSES}
        md += [
            f"## Rain + snow: losses ({MODEL_LABELS[s.loss_model]})",
            "",
            "PSNR (dB):",
            "",
            metric_table(groups, WEATHER_TASKS, "psnr", "loss", 2),
            "",
            "SSIM:",
            "",
            metric_table(groups, WEATHER_TASKS, "ssim", "loss", 4),
            "",
        ]
        md += _figure_links(out, ["fig_losses.png", "fig_curves_losses.png", "grid_losses.png"])
    # ---- TTA
    tta = data.get("tta") or {}
    if tta:
        rows = []
        for loss in STUDY_LOSSES:
            ids = [r["run_id"] for r in _by(lr_, "losses", variant=loss) if r["run_id"] in tta]
            if not ids:
                continue
            base = [tta[i]["False"]["average"]["psnr"] for i in ids]
            flip = [tta[i]["flip"]["average"]["psnr"] for i in ids]
            x8 = [tta[i]["x8"]["average"]["psnr"] for i in ids]
            rows.append(
                [
                    LOSS_LABELS[loss],
                    _fmt(base),
                    _fmt(flip),
                    _fmt(x8),
                    _fmt([a - b for a, b in zip(flip, base)]),
                    _fmt([a - b for a, b in zip(x8, base)]),
                ]
            )
        md += [
            "## Test-time augmentation (rain + snow)",
            "",
            "Average PSNR (dB) over rain and snow:",
            "",
            _table(["trained with", "no TTA", "flip (x4)", "x8", "flip gain", "x8 gain"], rows),
            "",
        ]
        with_t = [i for i in tta if "transforms" in tta[i]]
        if with_t:
            per = {
                name: {
                    task: [tta[i]["transforms"][name][task]["psnr"] for i in with_t]
                    for task in (*WEATHER_TASKS, "average")
                }
                for name in X8_TRANSFORM_NAMES
            }
            md += [
                "One transform at a time (the input transformed, restored, transformed back; no averaging), "
                f"PSNR (dB), mean ± standard deviation over all {len(with_t)} loss-study networks:",
                "",
                _table(
                    ["transform", *WEATHER_TASKS, "average"],
                    [
                        [name, *[_fmt(per[name][t]) for t in (*WEATHER_TASKS, "average")]]
                        for name in X8_TRANSFORM_NAMES
                    ],
                ),
                "",
            ]
        md += _figure_links(out, ["fig_tta.png"])
    text = "\n".join(md)
    (out / "study.md").write_text(text + "\n", encoding="utf-8")
    return text


def _jobs_text(s: Settings) -> str:
    threads = f"{s.threads_per_job} thread{'s' if s.threads_per_job > 1 else ''}"
    return f"{s.jobs} runs at a time, {threads} each" if s.jobs > 1 else f"one run at a time, {threads}"


def _figure_links(out: Path, names: Sequence[str]) -> list[str]:
    return [f"![{n[:-4]}]({n})" for n in names if (out / n).is_file()] + [""]


def make_figures(study: Study, data: dict[str, Any], *, grids: bool = True) -> list[str]:
    """Bar charts with error bars, training curves and example grids (matplotlib / Pillow when installed)."""
    written = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    s, out = study.s, study.out
    runs = list(study.results.values())
    if plt is not None:
        mr = _by(runs, "models")
        if mr:
            groups = {MODEL_LABELS[m]: [r["metrics"] for r in _by(mr, "models", m)] for m in s.models}
            written.append(
                _bars(
                    plt,
                    out / "fig_models.png",
                    groups,
                    [*THREE_TASKS, "average"],
                    "3-task setting: test PSNR by network",
                )
            )
            curves = {MODEL_LABELS[m]: _by(mr, "models", m) for m in s.models}
            written.append(_curves(plt, out / "fig_curves_models.png", curves, "3-task training", s.val_size))
        on = [r for r in _by(runs, "models", "pip_restormer") if "control" in r]
        if on:
            groups = {
                label: [r["control"][mode] for r in on]
                for mode, label in (("label", "right label"), ("blind", "blind"), ("wrong", "wrong label"))
            }
            written.append(
                _bars(
                    plt,
                    out / "fig_pip_control.png",
                    groups,
                    [*THREE_TASKS, "average"],
                    "PIP-Restormer told the right, no, or a wrong degradation",
                )
            )
            off = _by(runs, "pip_control", "pip_restormer", "ddl0")
            written.append(_angle_bars(plt, out / "fig_angles.png", on, off))
        lr_ = _by(runs, "losses")
        if lr_:
            groups = {
                LOSS_LABELS[x]: [r["metrics"] for r in _by(lr_, "losses", variant=x)] for x in STUDY_LOSSES
            }
            written.append(
                _bars(
                    plt,
                    out / "fig_losses.png",
                    groups,
                    [*WEATHER_TASKS, "average"],
                    f"rain + snow: test PSNR by training loss ({MODEL_LABELS[s.loss_model]})",
                )
            )
            curves = {LOSS_LABELS[x]: _by(lr_, "losses", variant=x) for x in STUDY_LOSSES}
            written.append(
                _curves(plt, out / "fig_curves_losses.png", curves, "rain + snow training", s.val_size)
            )
        tta = data.get("tta") or {}
        if tta:
            groups = {}
            for m in TTA_MODES:
                label = {"False": "no TTA", "flip": "flip (x4)", "x8": "x8"}[str(m)]
                groups[label] = [
                    {LOSS_LABELS[r["spec"]["variant"]]: tta[r["run_id"]][str(m)]["average"]}
                    for r in lr_
                    if r["run_id"] in tta
                ]
            written.append(
                _bars(
                    plt,
                    out / "fig_tta.png",
                    _by_seed(groups),
                    [LOSS_LABELS[x] for x in STUDY_LOSSES],
                    "rain + snow: average PSNR with test-time augmentation",
                )
            )
    if grids:
        written += _grids(study)
    return [w for w in written if w]


def figures_from_results(results: str | Path, out: str | Path) -> list[str]:
    """Draw the bar charts and training curves of a finished study from its ``results.json`` alone.

    The documentation draws its study figures this way at build time from the ``results.json`` it
    ships (``docs/study/results.json``); the example grids need the trained weights, so they are not
    drawn here.

    Args:
        results: A ``results.json`` written by this script.
        out: Folder for the PNG files (created).

    Returns:
        The names of the files written (none without matplotlib).
    """
    from types import SimpleNamespace

    res = json.loads(Path(results).read_text(encoding="utf-8"))
    known = {k: v for k, v in res["settings"].items() if k in Settings.__dataclass_fields__}
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = SimpleNamespace(s=settings, out=out, results={r["run_id"]: r for r in res["runs"]})
    return make_figures(study, {"tta": res["tta"]}, grids=False)  # type: ignore[arg-type]


def _by_seed(groups: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, list[dict]]:
    # one dict per (loss, seed) -> one dict per seed holding every loss (the shape _bars wants)
    res = {}
    for g, items in groups.items():
        per: dict[str, list[dict]] = {}
        for it in items:
            ((k, v),) = it.items()
            per.setdefault(k, []).append(v)
        n = min(len(v) for v in per.values())
        res[g] = [{k: per[k][i] for k in per} for i in range(n)]
    return res


def _bars(
    plt: Any, path: Path, groups: dict[str, list[dict]], cols: Sequence[str], title: str, metric: str = "psnr"
) -> str:
    groups = {k: v for k, v in groups.items() if v}
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols) * max(1, len(groups)) / 2), 3.6))
    width = 0.8 / max(1, len(groups))
    for i, (name, metrics) in enumerate(groups.items()):
        ms = [mean_std([m[c][metric] for m in metrics]) for c in cols]
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(cols))]
        ax.bar(xs, [m for m, _ in ms], width, yerr=[sd for _, sd in ms], capsize=3, label=name)
    lo = min(mean_std([m[c][metric] for m in ms_])[0] for ms_ in groups.values() for c in cols)
    hi = max(mean_std([m[c][metric] for m in ms_])[0] for ms_ in groups.values() for c in cols)
    ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1)), hi + 0.25 * (hi - lo + 1))
    ax.set_xticks(range(len(cols)), list(cols))
    ax.set_ylabel("PSNR (dB)" if metric == "psnr" else metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=min(5, len(groups)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _curves(plt: Any, path: Path, groups: dict[str, list[dict]], title: str, val_size: int) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, rs in groups.items():
        if not rs:
            continue
        for ax, key in zip(axes, ("train", "val")):
            series = [r["curve"][key] for r in rs if r["curve"][key]]
            if not series:
                continue
            n = min(len(c) for c in series)
            steps = [c[0] for c in series[0][:n]]
            ax.plot(
                steps,
                [statistics.fmean(c[i][1] for c in series) for i in range(n)],
                marker="." if n < 20 else None,
                label=name,
            )
    axes[0].set(xlabel="update", ylabel="main training loss (mean over seeds)", title=f"{title}: loss")
    axes[1].set(xlabel="update", ylabel="PSNR (dB)", title=f"PSNR on {val_size} px crops of the test photos")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _angle_bars(plt: Any, path: Path, on: list[dict], off: list[dict]) -> str:
    levels = list(on[0]["angles"]["init"])
    groups = {"initialisation": (on, "init"), "ddl on": (on, "final"), "ddl off": (off, "final")}
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.8 / len(groups)
    for i, (name, (rs, key)) in enumerate(groups.items()):
        if not rs:
            continue
        # per run: the mean pairwise angle of each block; then mean ± std over seeds
        ms = [mean_std([statistics.fmean(r["angles"][key][lv].values()) for r in rs]) for lv in levels]
        xs = [j + (i - 1) * width for j in range(len(levels))]
        ax.bar(xs, [m for m, _ in ms], width, yerr=[sd for _, sd in ms], capsize=3, label=name)
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel("mean pairwise angle (degrees)")
    ax.set_title("PIP degradation prompts: directional decoupled loss on / off", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _grids(study: Study) -> list[str]:
    """``grid_models.png`` / ``grid_losses.png``: one test photograph, one row per task, the first seed."""
    try:
        import PIL.Image  # noqa: F401  (the grids are drawn with Pillow)
    except ImportError:
        return []
    written = []
    s = study.s
    seed = s.seeds[0]
    for part, cols, label in (("models", s.models, MODEL_LABELS), ("losses", STUDY_LOSSES, LOSS_LABELS)):
        keys = [
            f"models/{c}/seed{seed}" if part == "models" else f"losses/{s.loss_model}-{c}/seed{seed}"
            for c in cols
        ]
        ids = [k for k in keys if k in study.results]
        if not ids:
            continue
        tasks, classes = study.setting(part)
        test = [t for t in study.test_set(tasks, classes, study.test_images[:1], 1)]
        nets = []
        for rid in ids:
            spec = study.results[rid]["spec"]
            net = study.build(spec["model"], spec["seed"])
            net.load_state_dict(
                torch.load(study.out / "runs" / rid / "weights.pt", map_location="cpu", weights_only=True)
            )
            nets.append(net.eval())
        rows, caps = [], []
        from allinone_ir import restore
        from allinone_ir.metrics import PROMPTIR_PROTOCOL

        for smp in test:
            row = [smp["clean"], smp["degraded"]]
            m = PROMPTIR_PROTOCOL.compute_per_image(smp["degraded"][None], smp["clean"][None])
            cap = [[], [f"{float(m['psnr'][0]):.2f} dB"]]
            for net in nets:
                kw = {"degradation": smp["degradation"]} if getattr(net, "accepts_degradation", False) else {}
                y = restore(net, smp["degraded"], progress=False, device=_device(s.device), **kw).cpu()
                m = PROMPTIR_PROTOCOL.compute_per_image(y[None], smp["clean"][None])
                row.append(y)
                cap.append([f"{float(m['psnr'][0]):.2f} dB"])
            rows.append(row)
            caps.append(cap)
        names = [
            "clean",
            "degraded",
            *[label[i.split("/")[1].split("-")[-1] if part == "losses" else i.split("/")[1]] for i in ids],
        ]
        fig = _render_grid(
            rows,
            row_names=[smp["task"] for smp in test],
            column_titles=names,
            captions=caps,
            title=f"{study.inventory['test'][0][0]} (held out), seed {seed}",
        )
        path = study.out / f"grid_{part}.png"
        tmp = path.with_name(path.name + ".tmp.png")
        fig.save(tmp)
        os.replace(tmp, path)
        written.append(path.name)
    return written


def _render_grid(
    rows: list[list[torch.Tensor]],
    *,
    row_names: list[str],
    column_titles: list[str],
    captions: list[list[list[str]]],
    title: str,
) -> Any:
    """A labelled grid of (3, H, W) images in [0, 1]: a title, column titles, row names, captions under each."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType
        font = ImageFont.load_default()
    pad, line = 6, 18
    h = max(img.shape[1] for row in rows for img in row)
    w = max(img.shape[2] for row in rows for img in row)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(name, font=font)) for name in row_names) + 2 * pad
    n_lines = max((len(c) for cap in captions for c in cap), default=0)
    cell_w, cell_h = max(w, 90), h + n_lines * line + pad
    ncol = max(len(row) for row in rows)
    width = max(label_w + ncol * (cell_w + pad), int(probe.textlength(title, font=font)) + 2 * pad)
    top = pad + 2 * line
    canvas = Image.new("RGB", (width, top + len(rows) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill="black", font=font)
    for j, col in enumerate(column_titles):
        draw.text((label_w + j * (cell_w + pad), pad + line), col, fill="black", font=font)
    for r, (name, row) in enumerate(zip(row_names, rows)):
        y = top + r * (cell_h + pad)
        draw.text((pad, y + h // 2 - line // 2), name, fill="black", font=font)
        for j, img in enumerate(row):
            x = label_w + j * (cell_w + pad)
            pixels = img.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            canvas.paste(Image.fromarray(pixels, "RGB"), (x, y))
            cap = captions[r][j] if j < len(captions[r]) else []
            for k, text in enumerate(cap):
                draw.text((x, y + img.shape[1] + 2 + k * line), text, fill="black", font=font)
    return canvas


# -------------------------------------------------------------------------------------------- main
def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain(data), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):d}:{int(seconds % 60):02d}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny networks, 1 seed, 2 updates, 32 px: the whole pipeline in < 1 min",
    )
    p.add_argument(
        "--scale",
        choices=("small", "large"),
        default="small",
        help="small: 1.7-2.3 M parameters, the CPU budget (default); large: 6.7-8.8 M, 128 px, 4000 updates (GPU)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument(
        "--out", default="study_out", help="output folder (default study_out); finished runs in it are kept"
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; smoke 0)")
    p.add_argument(
        "--steps", type=int, default=None, help="updates per run of the models and PIP parts (default 300)"
    )
    p.add_argument(
        "--loss-steps", type=int, default=None, help="updates per run of the loss study (default 600)"
    )
    p.add_argument(
        "--loss-model",
        choices=("nafnet", "restormer", "promptir"),
        default=None,
        help="network of the loss / TTA study (default nafnet: the one the CPU budget affords)",
    )
    p.add_argument(
        "--models", default=None, help="comma-separated networks of the models part (default all five)"
    )
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts out of {','.join(PARTS)} (default all)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per run (default: the cores divided among --jobs; torch's with one job)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at a time, in worker processes (default on CPU: one per core, at most 8, "
        "one thread each: these small networks use one core best; on a GPU: 1)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.smoke() if args.smoke else Settings.large() if args.scale == "large" else Settings()
    if args.seeds:
        settings.seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.steps:
        settings.steps = args.steps
    if args.loss_steps:
        settings.loss_steps = args.loss_steps
    if args.loss_model:
        settings.loss_model = args.loss_model
    if args.models:
        settings.models = tuple(args.models.split(","))
        unknown = set(settings.models) - set(MODEL_LABELS)
        if unknown:
            raise SystemExit(f"--models: unknown {sorted(unknown)}; choose from {list(MODEL_LABELS)}")
    settings.device = args.device
    parts = [x for x in args.only.split(",") if x]
    if set(parts) - set(PARTS):
        raise SystemExit(
            f"--only: unknown part(s) {sorted(set(parts) - set(PARTS))}; choose from {list(PARTS)}"
        )
    cores = os.cpu_count() or 1
    on_cpu = _device(args.device).type == "cpu"
    settings.jobs = args.jobs if args.jobs else (min(cores, 8) if on_cpu and not args.threads else 1)
    if settings.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif settings.jobs > 1:
        torch.set_num_threads(max(1, cores // settings.jobs))
    settings.threads_per_job = torch.get_num_threads()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    study = Study(settings, out, log=lambda msg: print(msg, flush=True))
    data = study.execute(parts)
    wall = time.perf_counter() - t0
    line = "python benchmarks/study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    figures = make_figures(study, data)
    specs = {m: {"registered": study.specs[m][0], "kwargs": _plain(study.specs[m][1])} for m in MODEL_LABELS}
    results = {
        "command": line.strip(),
        "wall_seconds": wall,
        "settings": _plain(settings.__dict__),
        "parts": parts,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "photos": {k: [n for n, _ in study.inventory[k]] for k in ("train", "test")},
        "photo_sources": study.inventory["source"],
        "missing_photos": study.inventory["missing"],
        "model_specs": specs,
        "runs": [{k: v for k, v in r.items() if k != "per_image"} for r in study.results.values()],
        "tta": data["tta"],
        "claims": claims(study, data),
        "figures": figures,
    }
    _write_json(out / "results.json", results)
    write_report(study, data, line.strip(), wall)
    print(f"done in {_clock(wall)}: {out / 'results.json'}, {out / 'study.md'}, {len(figures)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
