"""Loading through the pipeline gives exactly what safetensors gives, in both host paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loader.config import LoaderConfig
from loader.errors import IntegrityError, LoaderError, ObjectNotFoundError
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.stream import LoadReport, load_checkpoint, stream_checkpoint

SMALL_RING = {"range_bytes": 64 * 1024, "memory_limit_bytes": 192 * 1024, "concurrency": 3}
# The three host paths: local files mapped, ranges read straight into the tensors, ranges staged in a ring.
PATHS = {"mapped": {}, "direct": {"map_local_files": False}, "ring": {"direct_host_reads": False}}


def reference(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name].view(torch.uint8) if tensor.numel() else got[name],
                           tensor.view(torch.uint8) if tensor.numel() else tensor), name


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sharded")
    make_checkpoint(directory, CheckpointSpec(total_bytes=6_000_000, shards=3, hidden=128, sha256_sidecars=True))
    return directory


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mixed")
    g = torch.Generator().manual_seed(1)
    save_file(
        {
            "big": torch.randn(300, 700, generator=g),  # 840 KB: larger than the small ring
            "half": torch.randn(33, 17, generator=g).half(),
            "bf": torch.randn(5, 3, generator=g).bfloat16(),
            "ids": torch.arange(-50, 77, dtype=torch.int64),
            "mask": torch.rand(19, generator=g) > 0.5,
            "bytes": torch.randint(0, 255, (13,), dtype=torch.uint8, generator=g),
            "empty": torch.zeros(0, 4),
            "i8": torch.randint(-100, 100, (9,), dtype=torch.int8, generator=g),
        },
        directory / "model.safetensors",
    )
    return directory


@pytest.mark.parametrize("host_path", PATHS)
def test_sharded_checkpoint_matches_safetensors(sharded: Path, host_path: str) -> None:
    config = LoaderConfig(**SMALL_RING, **PATHS[host_path])
    report = LoadReport(location=str(sharded))
    got = load_checkpoint(str(sharded), "cpu", config, report=report)
    assert_same(got, reference(sharded))
    assert report.tensors == len(got)
    if host_path == "mapped":
        assert report.fetch.requests == 0
    else:
        assert report.fetch.requests >= report.bytes // (64 * 1024)


@pytest.mark.parametrize("host_path", PATHS)
def test_every_dtype_and_a_tensor_larger_than_the_ring(mixed: Path, host_path: str) -> None:
    config = LoaderConfig(**SMALL_RING, **PATHS[host_path])
    assert config.memory_limit_bytes < 300 * 700 * 4
    assert_same(load_checkpoint(str(mixed / "model.safetensors"), "cpu", config), load_file(mixed / "model.safetensors"))


def test_tensors_are_handed_over_before_the_load_finishes(sharded: Path) -> None:
    config = LoaderConfig(direct_host_reads=False, range_bytes=64 * 1024, memory_limit_bytes=128 * 1024, concurrency=1)
    report = LoadReport(location=str(sharded))
    fetched_at_first: int | None = None
    for _ in stream_checkpoint(str(sharded), "cpu", config, report=report):
        if fetched_at_first is None:
            fetched_at_first = report.fetch.bytes
    total = sum(p.stat().st_size for p in sharded.glob("*.safetensors"))
    first_tensor_bytes = max(t.numel() * t.element_size() for t in load_file(sorted(sharded.glob("*.safetensors"))[0]).values())
    # The ring holds two ranges, so the fetcher can be at most that far ahead of the consumer.
    assert fetched_at_first is not None
    assert fetched_at_first <= first_tensor_bytes + 3 * 64 * 1024 < total


@pytest.mark.parametrize("host_path", PATHS)
def test_sha256_verified_load(sharded: Path, host_path: str) -> None:
    config = LoaderConfig(verify_sha256=True, **SMALL_RING, **PATHS[host_path])
    assert_same(load_checkpoint(str(sharded), "cpu", config), reference(sharded))


@pytest.mark.parametrize("host_path", PATHS)
def test_sha256_mismatch_returns_nothing(sharded: Path, tmp_path: Path, host_path: str) -> None:
    for path in sharded.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    shard = sorted(tmp_path.glob("*.safetensors"))[1]
    (tmp_path / f"{shard.name}.sha256").write_text("0" * 64 + f"  {shard.name}\n")
    config = LoaderConfig(verify_sha256=True, **SMALL_RING, **PATHS[host_path])
    received: list[str] = []
    with pytest.raises(IntegrityError, match=shard.name):
        for name, _ in stream_checkpoint(str(tmp_path), "cpu", config):
            received.append(name)
    second_shard_tensors = set(load_file(shard))
    assert not second_shard_tensors & set(received)


def test_sha256_from_the_index(sharded: Path, tmp_path: Path) -> None:
    for path in sharded.glob("*.safetensors"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["sha256"] = {name: "f" * 64 for name in set(index["weight_map"].values())}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(IntegrityError, match="does not match"):
        load_checkpoint(str(tmp_path), "cpu", LoaderConfig(verify_sha256=True))
    # Without verification the same checkpoint loads.
    assert_same(load_checkpoint(str(tmp_path), "cpu", LoaderConfig()), reference(sharded))


def test_missing_shard_fails_before_any_tensor(sharded: Path, tmp_path: Path) -> None:
    for path in sharded.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    victim = sorted(tmp_path.glob("*.safetensors"))[2]
    victim.unlink()
    with pytest.raises(ObjectNotFoundError, match=victim.name):
        next(iter(stream_checkpoint(str(tmp_path), "cpu", LoaderConfig())))


def test_object_changed_mid_load(sharded: Path, tmp_path: Path) -> None:
    for path in sharded.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    config = LoaderConfig(direct_host_reads=False, range_bytes=64 * 1024, memory_limit_bytes=128 * 1024, concurrency=1)
    stream = stream_checkpoint(str(tmp_path), "cpu", config)
    next(stream)
    last = sorted(tmp_path.glob("*.safetensors"))[-1]
    data = last.read_bytes()
    last.write_bytes(data)  # same bytes, new version tag
    import os

    os.utime(last, ns=(1, 1))
    with pytest.raises(LoaderError, match="changed"):
        for _ in stream:
            pass


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="no model.safetensors"):
        load_checkpoint(str(tmp_path), "cpu", LoaderConfig())


def test_direct_reads_hold_a_range_lease_until_every_tensor_it_feeds_is_handed_over(mixed: Path) -> None:
    from loader.assemble import DeviceAssembler, plan_load
    from loader.checkpoint import resolve_checkpoint
    from loader.hostmem import HostBuffer
    from loader.ring import DirectTargets
    from loader.sources import LocalSource

    checkpoint = resolve_checkpoint(LocalSource(mixed))
    plan = plan_load(checkpoint, 64 * 1024)
    big = next(i for i, (_, spec) in enumerate(plan.tensors) if spec.name == "big")
    big_jobs = [job for job in plan.jobs if any(p.tensor == big for p in plan.pieces[job.seq])]
    assert len(big_jobs) == plan.most_ranges_per_tensor() >= 13  # 840,000 bytes over 64 KiB ranges
    shard = checkpoint.shards[0]
    targets = DirectTargets({0: (HostBuffer(shard.header.object_size), 0)}, leases=len(big_jobs) + 1)
    assembler = DeviceAssembler(checkpoint, plan, targets, torch.device("cpu"))
    leases = len(big_jobs) + 1
    for job in big_jobs[:-1]:
        assert big not in assembler.consume(job, targets.acquire(), release=True)
    # Every range of "big" but its last is in: their bytes are resident, so their leases stay out.
    taken = list(iter(lambda: targets.acquire(block=False), None))
    assert len(taken) == leases - (len(big_jobs) - 1)
    for lease in taken:
        targets.release(lease)
    assert big in assembler.consume(big_jobs[-1], targets.acquire(), release=True)
    # "big" is complete but not handed over yet: its bytes are still the loader's, so are its leases.
    waiting = list(iter(lambda: targets.acquire(block=False), None))
    assert len(waiting) == leases - len(big_jobs)
    for lease in waiting:
        targets.release(lease)
    assembler.finish(big)
    # handed over: the leases of its ranges come back (the first and the last may also feed a neighbour
    # not handed over yet).
    assert len(list(iter(lambda: targets.acquire(block=False), None))) >= leases - 2


def test_pages_of_dropped_tensors_are_reused_for_later_reads_without_changing_a_byte(sharded: Path) -> None:
    want = reference(sharded)
    config = LoaderConfig(range_bytes=64 * 1024, memory_limit_bytes=1024 * 1024, concurrency=3, map_local_files=False)
    report = LoadReport(location=str(sharded))
    for name, tensor in stream_checkpoint(str(sharded), "cpu", config, report=report):
        copy = tensor.clone()  # what a model's weight loader does, before it drops the tensor
        del tensor
        assert torch.equal(copy.view(torch.uint8), want[name].view(torch.uint8)), name
    assert report.recycled_bytes > 0
    off = LoadReport(location=str(sharded))
    assert_same(load_checkpoint(str(sharded), "cpu", config.model_copy(update={"recycle_pages": False}), report=off), want)
    assert off.recycled_bytes == 0
