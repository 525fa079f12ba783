"""Stress: many loads with small read-ahead windows, page recycling, hedged stragglers and
consumers that keep some tensors across loads, with the garbage collector forced to run at
almost every allocation (finalizers fire anywhere, on any thread) and fresh mappings made between
loads (they land wherever a freed range left room). Each run is a child process, so a
use-after-unmap is a SIGSEGV there and a failure here; one child runs under ``PYTHONMALLOC=debug``.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANGE = 64 * 1024


def _make_checkpoint(directory: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    for shard in range(2):
        tensors = {}
        for i in range(24):
            # From under a page to several ranges; odd sizes leave shared pages at both ends.
            numel = rng.choice([7, 900, 5000, 40_000, 70_001, 150_000])
            tensors[f"s{shard}.t{i}"] = torch.randn(numel, generator=g).to(rng.choice([torch.float32, torch.bfloat16]))
        save_file(tensors, directory / f"model-{shard + 1:05d}-of-00002.safetensors")


def _stress(directory: Path, loads: int, seed: int) -> dict[str, int]:
    import torch

    from loader.checkpoint import resolve_checkpoint
    from loader.config import LoaderConfig
    from loader.sources import LocalSource
    from loader.sources.base import ReadCancelled
    from loader.stream import LoadReport, stream_checkpoint

    class StallingSource(LocalSource):
        """Stalls one read in twenty long enough to be hedged."""

        def __init__(self, root: Path, rng: random.Random) -> None:
            super().__init__(root)
            self._rng, self._lock = rng, threading.Lock()

        def read_into(self, name, offset, buf, etag, cancelled=None):  # type: ignore[override]
            with self._lock:
                stall = self._rng.random() < 1 / 20
            deadline = time.monotonic() + (0.15 if stall else 0.0)
            while time.monotonic() < deadline:
                if cancelled is not None and cancelled():
                    raise ReadCancelled
                time.sleep(0.002)
            super().read_into(name, offset, buf, etag, cancelled)

    from safetensors.torch import load_file

    want = {}
    for path in sorted(directory.glob("*.safetensors")):
        want.update({k: v.view(torch.uint8).clone() for k, v in load_file(path).items()})
    rng = random.Random(seed)
    kept: list[tuple[str, torch.Tensor]] = []
    mappings: list[mmap.mmap] = []
    totals = {"loads": 0, "tensors": 0, "recycled_bytes": 0, "hedges": 0}
    gc.set_threshold(1, 1, 1)
    for number in range(loads):
        config = LoaderConfig(
            range_bytes=RANGE, memory_limit_bytes=rng.choice([4, 6, 12]) * RANGE, concurrency=rng.choice([1, 3, 6]),
            direct_host_reads=number % 5 != 4, map_local_files=False, huge_pages=rng.random() < 0.5,
            hedge_min_s=0.05, hedge_factor=2.0, max_hedges=2,
        )
        report = LoadReport(location=str(directory))
        source = StallingSource(directory, random.Random(seed * 1000 + number))
        for name, tensor in stream_checkpoint(resolve_checkpoint(source), "cpu", config, report=report):
            if not torch.equal(tensor.view(torch.uint8) if tensor.numel() else tensor.view(torch.uint8), want[name]):
                raise AssertionError(f"load {number}: tensor {name} differs")
            if rng.random() < 0.08:
                kept.append((name, tensor))
            del tensor
            totals["tensors"] += 1
        totals["loads"] += 1
        totals["recycled_bytes"] += report.recycled_bytes
        totals["hedges"] += report.fetch.hedges
        # Fresh mappings land in whatever room freed ranges left; write them and check later.
        for _ in range(3):
            m = mmap.mmap(-1, rng.choice([1, 3, 16, 64]) * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            m[:] = bytes([number % 251]) * len(m)
            mappings.append(m)
        rng.shuffle(kept)
        for name, tensor in kept[: len(kept) // 2]:
            if not torch.equal(tensor.view(torch.uint8), want[name]):
                raise AssertionError(f"kept tensor {name} changed after later loads")
        del kept[: len(kept) // 2]
        gc.collect()
    for m in mappings:
        if m[:] != bytes([m[0]]) * len(m):
            raise AssertionError("a mapping made between loads was changed")
    return totals


def _run_child(tmp_path: Path, loads: int, env: dict[str, str]) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path), str(loads)], capture_output=True, text=True, timeout=120,
        cwd=ROOT, env={**os.environ, **env},
    )
    assert proc.returncode == 0, f"stress child ended with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("stress")
    _make_checkpoint(directory, seed=3)
    return directory


def test_many_small_loads_with_forced_collection(checkpoint_dir: Path) -> None:
    totals = _run_child(checkpoint_dir, loads=12, env={})
    assert totals["loads"] == 12 and totals["tensors"] == 12 * 48
    assert totals["recycled_bytes"] > 0 and totals["hedges"] > 0  # both risky paths ran


def test_loads_under_the_debug_allocator(checkpoint_dir: Path) -> None:
    totals = _run_child(checkpoint_dir, loads=6, env={"PYTHONMALLOC": "debug"})
    assert totals["loads"] == 6 and totals["recycled_bytes"] > 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_stress(Path(sys.argv[1]), int(sys.argv[2]), seed=int(sys.argv[2]))))
