"""The node warm pool: staging, reuse, LRU eviction within a budget, concurrent pulls, preference."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loader.cache import CacheBudgetError, WarmCache
from loader.config import LoaderConfig
from loader.stream import LoadReport, load_checkpoint

CONFIG = LoaderConfig(range_bytes=64 * 1024, memory_limit_bytes=512 * 1024, concurrency=2)


def _model(directory: Path, seed: int, n: int = 40_000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"a": torch.randn(n, generator=g), "b": torch.randn(n // 2, generator=g)}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"seed": seed}))
    return directory


def test_warm_stages_every_object_and_reuses_it(tmp_path: Path) -> None:
    src = _model(tmp_path / "src", 1)
    cache = WarmCache(tmp_path / "cache")
    first = cache.warm(str(src), CONFIG)
    size = sum(p.stat().st_size for p in src.iterdir())
    assert first.downloaded_bytes == first.bytes == size
    assert (first.path / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (first.path / "config.json").exists()
    again = cache.warm(str(src), CONFIG)
    assert again.downloaded_bytes == 0 and again.path == first.path
    assert cache.verify(str(src))


def test_source_change_invalidates_the_copy(tmp_path: Path) -> None:
    src = _model(tmp_path / "src", 1)
    cache = WarmCache(tmp_path / "cache")
    cache.warm(str(src), CONFIG)
    assert cache.lookup(str(src), CONFIG) is not None
    _model(src, 2)
    os.utime(src / "model.safetensors", ns=(10**18, 10**18))
    assert cache.lookup(str(src), CONFIG) is None
    assert cache.warm(str(src), CONFIG).downloaded_bytes > 0


def test_corrupted_copy_is_not_used(tmp_path: Path) -> None:
    src = _model(tmp_path / "src", 1)
    cache = WarmCache(tmp_path / "cache")
    staged = cache.warm(str(src), CONFIG).path
    with (staged / "model.safetensors").open("ab") as f:
        f.write(b"x")
    assert cache.lookup(str(src), CONFIG) is None


def test_lru_eviction_keeps_within_budget(tmp_path: Path) -> None:
    models = [_model(tmp_path / f"m{i}", i) for i in range(3)]
    one = sum(p.stat().st_size for p in models[0].iterdir())
    cache = WarmCache(tmp_path / "cache", budget_bytes=int(2.5 * one))
    cache.warm(str(models[0]), CONFIG)
    cache.warm(str(models[1]), CONFIG)
    assert cache.lookup(str(models[0]), CONFIG) is not None  # m0 is now the most recently used
    result = cache.warm(str(models[2]), CONFIG)
    assert result.evicted == [str(models[1])]
    assert cache.used_bytes() <= cache.budget_bytes
    assert cache.lookup(str(models[0]), CONFIG) is not None
    assert cache.lookup(str(models[1]), CONFIG) is None


def test_entry_in_use_is_not_evicted(tmp_path: Path) -> None:
    models = [_model(tmp_path / f"m{i}", i) for i in range(2)]
    one = sum(p.stat().st_size for p in models[0].iterdir())
    cache = WarmCache(tmp_path / "cache", budget_bytes=int(1.5 * one))
    cache.warm(str(models[0]), CONFIG)
    with cache.reading(str(models[0])), pytest.raises(CacheBudgetError, match="budget"):
        cache.warm(str(models[1]), CONFIG)
    assert cache.lookup(str(models[0]), CONFIG) is not None


def test_loader_prefers_the_staged_copy(tmp_path: Path) -> None:
    src = _model(tmp_path / "src", 3)
    cache = WarmCache(tmp_path / "cache")
    staged = cache.warm(str(src), CONFIG).path
    report = LoadReport(location=str(src))
    got = load_checkpoint(str(src), "cpu", CONFIG.model_copy(update={"cache_dir": tmp_path / "cache"}), report=report)
    assert report.resolved_from == str(staged)
    want = load_file(src / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)


def _warm_in_process(src: str, cache_dir: str, queue: multiprocessing.Queue) -> None:
    result = WarmCache(cache_dir).warm(src, CONFIG)
    queue.put(result.downloaded_bytes)


def test_concurrent_pulls_download_once(tmp_path: Path) -> None:
    src = _model(tmp_path / "src", 4, n=400_000)
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_warm_in_process, args=(str(src), str(tmp_path / "cache"), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    downloaded = sorted(queue.get(timeout=5) for _ in procs)
    size = sum(p.stat().st_size for p in src.iterdir())
    assert downloaded == [0, 0, size]
    assert WarmCache(tmp_path / "cache").verify(str(src))
