"""Process-group plumbing for DDP under ``torchrun`` (CPU gloo or CUDA nccl) and the epoch sampler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import UsageError

__all__: list[str] = []


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which logs, validates and writes checkpoints)."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA (this process's GPU), else MPS, else CPU; other names as given.

    Raises:
        ValueError: If the requested device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r} requested but MPS is not available")
    return dev


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``
    through ``init_method="env://"``); uses nccl for CUDA and gloo otherwise. Without those
    variables (or with ``WORLD_SIZE=1``) nothing happens. An existing process group is reused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class EpochSampler(Sampler[int]):
    """Seeded shuffling per epoch, sharded across processes, resumable mid-epoch.

    The permutation of epoch ``e`` depends only on ``(seed, e)``; process ``rank`` takes
    every ``world_size``-th index (the tail that does not divide evenly is dropped), so the
    union of the processes' ``k``-th batches of size ``B`` is the ``k``-th batch of size
    ``B * world_size`` of a single process: one process and several give the same run.
    ``start`` skips indices already consumed (exact resume).

    Args:
        length: Dataset size.
        seed: Base seed.
        rank: This process's rank.
        world_size: Number of processes.
        shuffle: Shuffle (otherwise dataset order).
    """

    def __init__(
        self, length: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.length, self.seed, self.rank, self.world_size, self.shuffle = (
            length,
            seed,
            rank,
            world_size,
            shuffle,
        )
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and the number of this process's indices to skip."""
        self.epoch, self.start = int(epoch), int(start)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(self.length, generator=g).tolist()
        else:
            perm = list(range(self.length))
        usable = self.length - self.length % self.world_size
        return perm[:usable][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return self.length // self.world_size - self.start
