"""The public loading API: stream a checkpoint's tensors onto a device, or load them all."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loader.assemble import DeviceAssembler, LoadPlan, plan_load
from loader.cache import open_checkpoint
from loader.checkpoint import Checkpoint, resolve_checkpoint
from loader.config import LoaderConfig
from loader.errors import IntegrityError, LoaderError, UsageError
from loader.fetch import FetchStats, RangeFetcher, RangeJob
from loader.hostmem import HostBuffer, PageRecycler
from loader.mapped import stream_mapped
from loader.ring import DirectTargets, Slot, SlotRing
from loader.sources import LocalSource

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int], None]


@dataclass
class LoadReport:
    """What one load did; filled in as the load runs."""

    location: str
    resolved_from: str = ""
    device: str = "cpu"
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    first_tensor_s: float | None = None
    fetch: FetchStats = field(default_factory=FetchStats)
    recycled_bytes: int = 0  # pages of dropped tensors moved to where later reads landed
    mapped: bool = False  # a local file mapped, not read: its bytes are read when the consumer touches them

    @property
    def gb_per_s(self) -> float:
        """Decimal GB of tensor data per second."""
        return self.bytes / self.seconds / 1e9 if self.seconds else 0.0


class _InOrderDigest:
    """SHA-256 of one shard, fed ranges that complete out of order."""

    def __init__(self, uri: str, expected: str, size: int) -> None:
        self.uri, self.expected, self.size = uri, expected, size
        self.hash = hashlib.sha256()
        self.next_offset = 0
        self.waiting: dict[int, tuple[RangeJob, Slot, memoryview]] = {}

    def add(self, job: RangeJob, slot: Slot, data: memoryview) -> list[tuple[RangeJob, Slot]]:
        """Queue a range whose bytes are ``data``; returns the ranges now hashed, in order."""
        self.waiting[job.offset] = (job, slot, data)
        ready = []
        while self.next_offset in self.waiting:
            job, slot, data = self.waiting.pop(self.next_offset)
            self.hash.update(data)
            self.next_offset += job.length
            ready.append((job, slot))
        if self.next_offset == self.size:
            digest = self.hash.hexdigest()
            if digest != self.expected:
                raise IntegrityError(self.uri, f"SHA-256 {digest} does not match the expected {self.expected}")
        return ready

    @property
    def verified(self) -> bool:
        return self.next_offset == self.size


def check_device(device: str | torch.device) -> torch.device:
    """The device to load to (``cuda`` means the current CUDA device); UsageError if this machine has no such device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"device {str(device)!r}: not a device name ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise UsageError(f"device {str(device)!r}: the loader loads to cpu or cuda[:N], not {dev.type}")
    if not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise UsageError(f"device {str(device)!r}: this machine has {count} CUDA device(s)")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def stream_checkpoint(
    location: str | Checkpoint,
    device: str | torch.device = "cpu",
    config: LoaderConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    report: LoadReport | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for every tensor of the checkpoint, each as soon as it is complete.

    On any error the iterator raises and yields nothing further; partially loaded tensors are
    dropped. With ``config.verify_sha256``, a shard's tensors are held back until its digest checks.
    """
    config = config or LoaderConfig.from_env()
    dev = check_device(device)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        checkpoint = location if isinstance(location, Checkpoint) else open_checkpoint(location, config, stack)
        yield from _stream(checkpoint, dev, config, started, progress, report or LoadReport(location=str(location)))


def _stream(
    checkpoint: Checkpoint,
    dev: torch.device,
    config: LoaderConfig,
    started: float,
    progress: ProgressCallback | None,
    report: LoadReport,
) -> Iterator[tuple[str, torch.Tensor]]:
    report.resolved_from = checkpoint.source.root
    report.device = str(dev)
    if dev.type == "cpu" and config.direct_host_reads and config.map_local_files and isinstance(
        checkpoint.source, LocalSource
    ):
        report.mapped = True
        for nbytes, name, tensor in stream_mapped(
            checkpoint, Path(checkpoint.source.root), config.verify_sha256, config.local_readahead_bytes
        ):
            report.tensors += 1
            report.bytes += nbytes
            if report.first_tensor_s is None:
                report.first_tensor_s = time.perf_counter() - started
            if progress is not None:
                progress(nbytes)
            yield name, tensor
        report.seconds = time.perf_counter() - started
        return
    verified = {i for i, s in enumerate(checkpoint.shards) if config.verify_sha256 and s.sha256}
    spans = [s.header.object_size - (0 if i in verified else s.header.data_start) for i, s in enumerate(checkpoint.shards)]
    plan = plan_load(checkpoint, config.range_bytes_for(spans), whole_objects=frozenset(verified))
    digests = {
        i: _InOrderDigest(s.uri, s.sha256, s.info.size)  # type: ignore[arg-type]
        for i, s in enumerate(checkpoint.shards) if i in verified
    }
    held: dict[int, list[int]] = {i: [] for i in verified}
    ring: SlotRing | DirectTargets
    recycler: PageRecycler | None = None
    if dev.type == "cpu" and config.direct_host_reads:
        buffers = {
            i: (HostBuffer(
                s.header.object_size - base,
                prefault_window=config.prefault_window_bytes,
                huge_pages=config.huge_pages,
            ), base)
            for i, s in enumerate(checkpoint.shards)
            for base in [0 if i in verified else s.header.data_start]
        }
        if config.recycle_pages:
            recycler = PageRecycler([buf for buf, _ in buffers.values()], config.recycle_window_bytes)
        ring = DirectTargets(buffers, leases=max(config.read_ahead_ranges, _ranges_to_finish_any_tensor(plan, config)))
    elif dev.type == "cuda":
        ring = SlotRing(config.slots, config.effective_range_bytes, pinned=True)
    else:  # the tensors being assembled are host memory too: they share the ring's budget
        ring = SlotRing(config.slots, config.effective_range_bytes, pinned=False,
                        assembly_credits=max(config.slots, _ranges_to_finish_any_tensor(plan, config)))
    assembler = DeviceAssembler(checkpoint, plan, ring, dev)
    fetcher = RangeFetcher(checkpoint.source, list(plan.jobs), ring, config)
    report.fetch = fetcher.stats
    total_tensors = len(plan.tensors)
    handed = 0

    def ready(indices: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
        nonlocal handed
        for index in indices:
            shard_no = plan.tensors[index][0]
            if shard_no in digests and not digests[shard_no].verified:
                assembler.set_aside(index)
                held[shard_no].append(index)
                continue
            name, tensor = assembler.finish(index)
            handed += 1
            report.tensors = handed
            report.bytes += tensor.numel() * tensor.element_size()
            if report.first_tensor_s is None:
                report.first_tensor_s = time.perf_counter() - started
            yield name, tensor
            if recycler is not None:
                recycler.drain()  # the pages of tensors the consumer dropped meanwhile

    fetcher.start()
    remaining_jobs = len(plan.jobs)
    try:
        yield from ready(assembler.empty_tensors())
        while remaining_jobs or assembler.has_pending:
            if not remaining_jobs:
                yield from ready(assembler.drain(wait=True))
                continue
            try:
                item = fetcher.completed.get(timeout=0.001 if assembler.has_pending else None)
            except queue.Empty:
                yield from ready(assembler.drain(wait=False))
                continue
            if isinstance(item, BaseException):
                raise item
            job, slot = item
            remaining_jobs -= 1
            if progress is not None:
                progress(job.length)
            digest = digests.get(job.shard)
            batch = digest.add(job, slot, ring.view(slot, job)) if digest else [(job, slot)]
            for in_order_job, in_order_slot in batch:
                yield from ready(assembler.consume(in_order_job, in_order_slot, release=True))
            if digest is not None and digest.verified and held[job.shard]:
                indices, held[job.shard] = held[job.shard], []
                yield from ready(indices)
            yield from ready(assembler.drain(wait=False))
        if handed != total_tensors:
            raise LoaderError(f"{checkpoint.source.root}: handed over {handed} of {total_tensors} tensors")
    except BaseException:
        assembler.abort()
        raise
    finally:
        fetcher.stop()
        report.seconds = time.perf_counter() - started
        if recycler is not None:
            recycler.close()
            report.recycled_bytes = recycler.moved_bytes


def _ranges_to_finish_any_tensor(plan: LoadPlan, config: LoaderConfig) -> int:
    """Beyond the hedges' reserve, the workers need leases for every range of the largest tensor and one more."""
    return plan.most_ranges_per_tensor() + 1 + (config.max_hedges if config.hedge else 0)


def load_checkpoint(
    location: str | Checkpoint,
    device: str | torch.device = "cpu",
    config: LoaderConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    report: LoadReport | None = None,
) -> dict[str, torch.Tensor]:
    """Load every tensor; on any error raise and return nothing."""
    return dict(stream_checkpoint(location, device, config, progress=progress, report=report))
