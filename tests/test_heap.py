"""retain_cpu_heap: freed memory is kept while the block runs and given back when it ends."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from allinone_ir import _heap, restore
from allinone_ir.benchmark import _PeakMemory
from allinone_ir.inference import retain_cpu_heap

MiB = 2**20
glibc = pytest.mark.skipif(_heap._glibc() is None, reason="needs Linux with glibc's malloc")


def _rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


def _alloc_free(mib: int) -> float:
    """Allocate and touch ``mib`` MiB, free it; the resident set's rise that remains, in MiB."""
    before = _rss()
    t = torch.ones(mib * MiB // 4)  # every page touched
    del t
    return _rss() - before


@pytest.fixture(autouse=True)
def _no_user_malloc_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key in ("GLIBC_TUNABLES", "LD_PRELOAD"):
            monkeypatch.delenv(key)
    _heap.malloc_trim()  # free memory left resident by earlier tests would absorb the allocations below


@glibc
def test_freed_memory_is_kept_inside_and_returned_at_the_end() -> None:
    assert _alloc_free(200) < 50  # glibc's default: a 200 MiB buffer goes back at once
    start = _rss()
    with retain_cpu_heap() as applied:
        assert applied is True
        kept = _alloc_free(200)
        assert kept > 150  # kept for the next layer
        more = [_alloc_free(200) for _ in range(10)]
        # ... and reused: posix_memalign's padding can make a freed block miss the next request of
        # the same size a few times, but the heap then stops growing (not 200 MiB per allocation)
        assert sum(more[-4:]) < 50 and kept + sum(more) < 4.5 * 200, more
    assert _rss() - start < 50  # given back when the block ends


def test_a_disabled_block_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # glibc's settings are recorded rather than measured: what the heap does with them depends on the
    # free regions earlier tests left in it (a freed 200 MiB hole is reused whatever the thresholds say)
    calls: list[tuple[str, tuple[int, ...]]] = []

    class Spy:
        def mallopt(self, *args: int) -> None:
            calls.append(("mallopt", args))

        def malloc_trim(self, *args: int) -> None:
            calls.append(("malloc_trim", args))

    monkeypatch.setattr(_heap, "_allocator", lambda: Spy())
    monkeypatch.setattr(_heap, "_user_settings", lambda: False)
    with retain_cpu_heap(enabled=False) as applied:
        assert applied is False and _heap._depth == 0
    assert calls == []
    with retain_cpu_heap() as applied:  # the spy sees what an enabled block does
        assert applied is True and _heap._depth == 1
    assert [name for name, _ in calls] == ["mallopt", "mallopt", "mallopt", "mallopt", "malloc_trim"]


@glibc
def test_only_the_outermost_block_gives_memory_back() -> None:
    with retain_cpu_heap():
        with retain_cpu_heap() as inner:
            assert inner is True and _heap._depth == 2
        assert _heap._depth == 1
        assert _alloc_free(200) > 150  # the inner block's end changed nothing
    assert _heap._depth == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("MALLOC_TRIM_THRESHOLD_", "131072"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
     ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")],
)  # fmt: skip
def test_user_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with retain_cpu_heap() as applied:
        assert applied is False and _heap._depth == 0
        if _heap._glibc() is not None and key != "LD_PRELOAD":
            assert _alloc_free(200) < 50  # glibc's own behaviour


class _DepthProbe(nn.Module):
    """Records the nesting depth of retain_cpu_heap seen by each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.depths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.depths.append(_heap._depth)
        return self.conv(x)


@glibc
def test_restore_runs_inside_and_gives_the_memory_back() -> None:
    net = _DepthProbe()
    out = restore(net, torch.rand(1, 3, 32, 32), tile=16, overlap=4, progress=False)
    assert out.shape == (1, 3, 32, 32)
    assert len(net.depths) >= 3 and set(net.depths) == {1}  # every batch of tiles inside the block
    assert _heap._depth == 0


@glibc
def test_trainer_fit_leaves_the_heap_settings_alone(tmp_path) -> None:
    """A library call leaves the process as it found it: fit() does not change glibc's thresholds."""
    from allinone_ir.training import Trainer, TrainerConfig

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            g = torch.Generator().manual_seed(i)
            return {
                "degraded": torch.rand(3, 16, 16, generator=g),
                "clean": torch.rand(3, 16, 16, generator=g),
            }

    net = _DepthProbe()
    cfg = TrainerConfig(output_dir=str(tmp_path), max_steps=2, batch_size=2, num_workers=0, progress_bar=False,
                        device="cpu", plot=False)  # fmt: skip
    Trainer(net, cfg, Pairs()).fit()
    assert net.depths and set(net.depths) == {0}
    assert _heap._depth == 0


@glibc
def test_peak_memory_sees_allocations_that_reuse_kept_memory() -> None:
    mem = _PeakMemory(torch.device("cpu"))
    with retain_cpu_heap():
        _alloc_free(200)  # 200 MiB now free inside the heap
        mem.reset()  # gives it back first, so that the next allocation shows
        t = torch.ones(100 * MiB // 4)
        peak = mem.peak_bytes() / MiB
        del t
    assert 80 < peak < 160


@glibc
def test_every_command_runs_inside(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from allinone_ir import cli
    from allinone_ir.commands import models as models_command

    seen: list[int] = []
    run = models_command.run
    monkeypatch.setattr(models_command, "run", lambda args: seen.append(_heap._depth) or run(args))
    assert cli.main(["models", "promptir"]) == 0
    assert capsys.readouterr().out.split() == ["promptir"]
    assert seen == [1] and _heap._depth == 0
