"""Copying whole objects from a source to local files through the same ranged-read pipeline."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loader.config import LoaderConfig
from loader.errors import IntegrityError
from loader.fetch import FetchStats, RangeFetcher, RangeJob
from loader.ring import SlotRing
from loader.sources.base import ObjectInfo, ObjectSource


@dataclass(frozen=True, slots=True)
class StagedObject:
    """An object written to ``path``: its size, source ETag and SHA-256."""

    name: str
    path: Path
    size: int
    etag: str | None
    sha256: str


def download_objects(
    source: ObjectSource,
    objects: dict[str, ObjectInfo],
    dest: dict[str, Path],
    config: LoaderConfig,
    *,
    expected_sha256: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[StagedObject], FetchStats]:
    """Download ``objects`` to the paths in ``dest`` (written to ``<path>.partial``, renamed when verified).

    Every object's SHA-256 is computed as its ranges land in order; a mismatch with
    ``expected_sha256`` raises IntegrityError and leaves no file behind.
    """
    expected_sha256 = expected_sha256 or {}
    range_bytes = config.effective_range_bytes
    names = sorted(objects)
    jobs: list[RangeJob] = []
    for number, name in enumerate(names):
        size = objects[name].size
        for offset in range(0, size, range_bytes):
            jobs.append(RangeJob(len(jobs), number, name, offset, min(range_bytes, size - offset), objects[name].etag))
    partial = {name: dest[name].with_name(dest[name].name + ".partial") for name in names}
    fds: dict[str, int] = {}
    digests = {name: hashlib.sha256() for name in names}
    written = {name: 0 for name in names}
    waiting: dict[tuple[str, int], object] = {}
    ring = SlotRing(config.slots, range_bytes, pinned=False, tensors=False)
    fetcher = RangeFetcher(source, jobs, ring, config)
    try:
        for name in names:
            partial[name].parent.mkdir(parents=True, exist_ok=True)
            fds[name] = os.open(partial[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fds[name], objects[name].size)
        fetcher.start()
        for _ in range(len(jobs)):
            item = fetcher.completed.get()
            if isinstance(item, BaseException):
                raise item
            job, slot = item
            os.pwrite(fds[job.name], slot.view[: job.length], job.offset)
            if progress is not None:
                progress(job.length)
            # Hash in object order; keep out-of-order ranges' slots until their turn.
            waiting[(job.name, job.offset)] = (job, slot)
            while (job.name, written[job.name]) in waiting:
                ready_job, ready_slot = waiting.pop((job.name, written[job.name]))  # type: ignore[misc]
                digests[job.name].update(ready_slot.view[: ready_job.length])
                written[job.name] += ready_job.length
                ring.release(ready_slot)
        staged: list[StagedObject] = []
        for name in names:
            os.fsync(fds[name])
            digest = digests[name].hexdigest()
            want = expected_sha256.get(name)
            if want is not None and want.lower() != digest:
                raise IntegrityError(source.uri(name), f"SHA-256 {digest} does not match the expected {want}")
            if os.fstat(fds[name]).st_size != objects[name].size:
                raise IntegrityError(source.uri(name), "staged size differs from the object's size")
            staged.append(StagedObject(name, dest[name], objects[name].size, objects[name].etag, digest))
        for name in names:
            os.rename(partial[name], dest[name])
        return staged, fetcher.stats
    except BaseException:
        for name, path in partial.items():
            path.unlink(missing_ok=True)
        raise
    finally:
        fetcher.stop()
        for fd in fds.values():
            os.close(fd)


def file_sha256(path: Path, block: int = 8 * 1024 * 1024) -> str:
    """SHA-256 of a local file."""
    digest = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()
