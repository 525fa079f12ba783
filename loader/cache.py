"""The node warm pool: checkpoints staged on local storage (NVMe or /dev/shm) within a size budget.

Layout under ``root``::

    entries/<key>/<object files...>   the staged objects, same relative names as at the source
    entries/<key>/entry.json          location, per-object size/ETag/SHA-256, last use
    locks/<key>.stage                 exclusive while one process downloads the entry
    locks/<key>.use                   shared by every process staging or reading the entry

Concurrent pulls of one location download each object once: the first takes ``.stage``, the
others block on it and then find the entry complete. Eviction (least recently used first) takes
``.use`` exclusively without blocking, so an entry being read is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loader.checkpoint import Checkpoint, resolve_checkpoint
from loader.config import LoaderConfig
from loader.errors import LoaderError, SourceError
from loader.fetch import FetchStats
from loader.sources import open_source
from loader.sources.base import ObjectInfo, ObjectSource
from loader.staging import download_objects, file_sha256

log = logging.getLogger(__name__)
ENTRY_FILE = "entry.json"


class CacheBudgetError(LoaderError):
    """The checkpoint does not fit in the cache budget even after evicting every idle entry."""


@dataclass
class WarmResult:
    """What one ``warm`` did."""

    location: str
    path: Path
    bytes: int
    downloaded_bytes: int
    seconds: float
    evicted: list[str]
    fetch: FetchStats

    def to_json(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "location": self.location, "path": str(self.path), "bytes": self.bytes,
            "downloaded_bytes": self.downloaded_bytes, "seconds": round(self.seconds, 3),
            "gb_per_s": round(self.downloaded_bytes / self.seconds / 1e9, 3) if self.seconds else 0.0,
            "evicted": self.evicted, "retries": self.fetch.retries, "hedges": self.fetch.hedges,
        }


def cache_key(location: str) -> str:
    """Stable directory name for a location."""
    normalized = location.rstrip("/")
    return hashlib.sha256(normalized.encode()).hexdigest()[:32]


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class WarmCache:
    """A warm pool rooted at ``root`` with an optional byte budget."""

    def __init__(self, root: Path | str, budget_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self.entries = self.root / "entries"
        self.locks = self.root / "locks"

    def entry_dir(self, location: str) -> Path:
        """Where ``location`` is (or would be) staged."""
        return self.entries / cache_key(location)

    def _read_entry(self, directory: Path) -> dict | None:
        try:
            return json.loads((directory / ENTRY_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write_entry(self, directory: Path, entry: dict) -> None:
        tmp = directory / (ENTRY_FILE + ".tmp")
        tmp.write_text(json.dumps(entry, indent=1, sort_keys=True))
        os.replace(tmp, directory / ENTRY_FILE)

    def _touch(self, directory: Path, entry: dict) -> None:
        entry["last_used"] = time.time()
        self._write_entry(directory, entry)

    def _valid(self, directory: Path, entry: dict | None, remote: dict[str, ObjectInfo] | None) -> bool:
        if not entry or not entry.get("complete"):
            return False
        for name, record in entry["objects"].items():
            path = directory / name
            if not path.is_file() or path.stat().st_size != record["size"]:
                return False
            if remote is not None and name in remote and remote[name].etag != record.get("etag"):
                return False
        return True

    def used_bytes(self) -> int:
        """Bytes held by complete entries."""
        total = 0
        for directory in self.entries.glob("*"):
            entry = self._read_entry(directory)
            if entry:
                total += entry.get("bytes", 0)
        return total

    def lookup(self, location: str, config: LoaderConfig | None = None) -> Path | None:
        """The staged directory of ``location`` if it holds a complete, current copy; else None.

        "Current": each object's ETag still matches the source's, when the source can be reached
        (an unreachable source leaves the local copy as the best one there is).
        """
        directory = self.entry_dir(location)
        entry = self._read_entry(directory)
        if not entry or not entry.get("complete"):
            return None
        remote: dict[str, ObjectInfo] | None = None
        try:
            source, _ = open_source(
                location, endpoint_url=config.endpoint_url if config else None, region=config.region if config else None
            )
            remote = {name: source.stat(name) for name in entry["objects"] if name.endswith(".safetensors")}
        except SourceError as exc:
            log.info("source of %s unreachable (%s); using the local copy", location, exc)
        if not self._valid(directory, entry, remote):
            return None
        self._touch(directory, entry)
        return directory / entry["name"] if entry.get("name") else directory

    def locations(self) -> list[str]:
        """The locations of every entry in the cache (complete or not), sorted."""
        found = []
        for directory in self.entries.glob("*"):
            entry = self._read_entry(directory)
            found.append(str(entry["location"]) if entry and entry.get("location") else directory.name)
        return sorted(found)

    def evict(self, location: str) -> bool:
        """Remove ``location``'s entry unless it is being read or staged; True when it is gone."""
        directory = self.entry_dir(location)
        if not directory.exists():
            directory = self.entries / location  # an entry without entry.json is listed by its key
            if location != directory.name or not directory.exists():
                return True
        return self._remove(directory)

    def _remove(self, directory: Path) -> bool:
        with _flock(self.locks / f"{directory.name}.use", fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
            if not got:
                return False  # in use by a reader or a stager
            shutil.rmtree(directory, ignore_errors=True)
        return True

    def _evict_for(self, needed: int, keep: Path) -> list[str]:
        if self.budget_bytes is None:
            return []
        candidates = []
        for directory in self.entries.glob("*"):
            if directory == keep:
                continue
            entry = self._read_entry(directory) or {"bytes": _dir_bytes(directory), "last_used": 0, "location": directory.name}
            candidates.append((entry.get("last_used", 0), directory, entry))
        candidates.sort(key=lambda c: c[0])
        used = sum(c[2].get("bytes", 0) for c in candidates)
        evicted: list[str] = []
        for _, directory, entry in candidates:
            if used + needed <= self.budget_bytes:
                break
            if not self._remove(directory):
                continue  # in use by a reader or a stager
            used -= entry.get("bytes", 0)
            evicted.append(str(entry.get("location", directory.name)))
        if used + needed > self.budget_bytes:
            raise CacheBudgetError(
                f"{needed} bytes do not fit in the {self.budget_bytes}-byte budget "
                f"({used} bytes still held by entries in use)"
            )
        return evicted

    def warm(
        self,
        location: str,
        config: LoaderConfig,
        *,
        progress: Callable[[int], None] | None = None,
        on_plan: Callable[[int], None] | None = None,
    ) -> WarmResult:
        """Stage ``location`` (all objects under it) and return where it lives locally."""
        started = time.perf_counter()
        key = cache_key(location)
        directory = self.entries / key
        with _flock(self.locks / f"{key}.use", fcntl.LOCK_SH), _flock(self.locks / f"{key}.stage", fcntl.LOCK_EX):
            source, name = open_source(
                location, endpoint_url=config.endpoint_url, region=config.region,
                max_connections=config.concurrency + config.max_hedges + 4,
            )
            checkpoint = resolve_checkpoint(source, name, verify_sha256=config.verify_sha256)
            objects = _objects_to_stage(source, checkpoint)
            entry = self._read_entry(directory)
            if self._valid(directory, entry, objects):
                assert entry is not None
                self._touch(directory, entry)
                if on_plan:
                    on_plan(0)
                return WarmResult(location, directory, entry["bytes"], 0, time.perf_counter() - started, [], FetchStats())
            total = sum(info.size for info in objects.values())
            if on_plan:
                on_plan(total)
            evicted = self._evict_for(total, directory)
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            expected = {s.name: s.sha256 for s in checkpoint.shards if s.sha256} if config.verify_sha256 else {}
            staged, stats = download_objects(
                source, objects, {n: directory / n for n in objects}, config,
                expected_sha256=expected, progress=progress,
            )
            entry = {
                "location": location, "name": name, "complete": True, "bytes": total,
                "created": time.time(), "last_used": time.time(),
                "objects": {s.name: {"size": s.size, "etag": s.etag, "sha256": s.sha256} for s in staged},
            }
            self._write_entry(directory, entry)
            return WarmResult(location, directory, total, total, time.perf_counter() - started, evicted, stats)

    @contextlib.contextmanager
    def reading(self, location: str) -> Iterator[None]:
        """Hold ``location``'s entry against eviction while it is read."""
        with _flock(self.locks / f"{cache_key(location)}.use", fcntl.LOCK_SH):
            yield

    def verify(self, location: str) -> bool:
        """Re-hash every staged object against its recorded SHA-256."""
        directory = self.entry_dir(location)
        entry = self._read_entry(directory)
        if not self._valid(directory, entry, None):
            return False
        assert entry is not None
        return all(file_sha256(directory / n) == rec["sha256"] for n, rec in entry["objects"].items())


def _objects_to_stage(source: ObjectSource, checkpoint: object) -> dict[str, ObjectInfo]:
    """Every object under the source's root when it can be listed (config, tokenizer, weights),
    else the checkpoint's own objects."""
    shards = {s.name: s.info for s in checkpoint.shards}  # type: ignore[attr-defined]
    objects = dict(shards)
    index_name = checkpoint.index_name  # type: ignore[attr-defined]
    if index_name:
        objects[index_name] = source.stat(index_name)
    try:
        names = source.list()
    except SourceError:
        return objects
    for name in names:
        if name not in objects and not name.endswith(".partial"):
            objects[name] = source.stat(name)
    return objects


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def open_checkpoint(location: str, config: LoaderConfig, stack: contextlib.ExitStack | None = None) -> Checkpoint:
    """Resolve ``location``, preferring a valid warm-pool copy when ``config.cache_dir`` is set
    (held against eviction until ``stack`` closes)."""
    if config.cache_dir is not None:
        cache = WarmCache(config.cache_dir)
        if stack is not None:
            stack.enter_context(cache.reading(location))
        local = cache.lookup(location, config)
        if local is not None:
            log.info("loading %s from the warm pool at %s", location, local)
            location = str(local)
    source, name = open_source(
        location, endpoint_url=config.endpoint_url, region=config.region,
        max_connections=config.concurrency + config.max_hedges + 4,
    )
    return resolve_checkpoint(source, name, verify_sha256=config.verify_sha256)
