"""Validated loader settings (pydantic): every error names the field and the value."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024
ENV_PREFIX = "WARMSCALE_LOADER_"
CONSUMER_RANGES = 2  # completed ranges the consumer may hold while it copies or assembles them
MIN_DERIVED_RANGE = 1 * MiB
MAX_DERIVED_RANGE = 64 * MiB
# Unset concurrency: one connection per CONNECTION_RANGE of the read budget, within [MIN_CONNECTIONS, MAX_CONNECTIONS].
CONNECTION_RANGE = 5 * MiB
MIN_CONNECTIONS = 16
MAX_CONNECTIONS = 64
HUGE_PAGE = 2 * MiB  # a transparent huge page (x86-64, arm64 with 4 KiB base pages)


class LoaderConfig(BaseModel):
    """How the loader fetches and stages bytes. Defaults are explained where they are not obvious."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # On loopback 4-8 streams already saturate 2 cores (bench/loader.py's sweep), but a remote object
    # store serves each connection at tens of MB/s with tens of ms to the first byte: throughput comes
    # from parallel connections, as many as the memory budget gives ranges of a useful size (see
    # derived_concurrency).
    concurrency: int = Field(
        None, ge=1, le=512,  # type: ignore[arg-type]  # None only until _derive_concurrency fills it in
        description="parallel ranged GETs in flight; unset: derived from the read budget (see derived_concurrency)",
    )
    range_bytes: int | None = Field(
        None, ge=64 * 1024, le=1024 * MiB,
        description="bytes per ranged GET; unset: derived from the read budget (see effective_range_bytes)",
    )
    memory_limit_bytes: int = Field(
        256 * MiB, ge=128 * 1024,
        description="host staging ring (pinned when the target is CUDA; on a CPU target the ring and the tensors "
        "being assembled share it); for direct host reads, the bytes read ahead of the consumer, partly assembled "
        "tensors included (both raised to fit the largest tensor)",
    )
    direct_host_reads: bool = Field(
        True, description="CPU targets: read straight into the tensors' memory instead of through the ring"
    )
    prefault_window_bytes: int = Field(
        0, ge=0,
        description="direct host reads: fault destination pages in this far ahead of the reads on a helper thread "
        "(0: off); counts against memory_limit_bytes",
    )
    huge_pages: bool = Field(
        True, description="direct host reads: back destination memory with transparent huge pages (fewer page faults)"
    )
    recycle_pages: bool = Field(
        True,
        description="direct host reads: move the pages of tensors the consumer drops to where the next reads land "
        "(mremap) instead of faulting in fresh ones; up to a quarter of memory_limit_bytes waits ahead of the reads",
    )
    map_local_files: bool = Field(
        True, description="CPU target, local file: map it copy-on-write instead of reading (as load_file does)"
    )
    # The kernel reads a mapped file ahead one stream at a time; advising a window ahead keeps several reads in
    # flight: a cold 1.98 GB checkpoint from this VM's disk at 1.32 GB/s against 0.64 (bench/results/pool_read.md).
    local_readahead_bytes: int = Field(
        64 * MiB, ge=0,
        description="mapped local files: have the kernel read this far ahead of the tensor being handed out "
        "(page cache, not counted in memory_limit_bytes; 0: the kernel's own readahead only)",
    )
    max_attempts: int = Field(6, ge=1, le=50, description="tries per range before the load fails")
    backoff_base_s: float = Field(0.05, gt=0, description="first retry delay; doubles each try, full jitter")
    backoff_max_s: float = Field(2.0, gt=0, description="largest retry delay")
    hedge: bool = Field(True, description="re-issue ranges that run much slower than their peers")
    # Under a per-connection rate cap, ranges of one size take about the same time; one that has run 3x
    # that is on a stalled or slow connection (bench/loader_shaped.py), and its hedge is aborted the
    # moment the primary finishes after all.
    hedge_factor: float = Field(
        3.0, gt=1,
        description="a range is slow after this many times the median time of completed ranges of its size",
    )
    hedge_min_s: float = Field(0.5, ge=0, description="never hedge a range younger than this (the floor)")
    # A slow connection delivers its first byte on time and then a trickle: at a tenth of the rate, 0.1 s of
    # body tells it apart (bench/loader_shaped.py), and each 0.1 s it is left holds up the ranges behind it.
    slow_body_after_s: float = Field(
        0.1, ge=0,
        description="a read whose body has come this long at a rate that would make it late is hedged then, "
        "before the floor",
    )
    max_hedges: int = Field(4, ge=1, le=64, description="hedged requests in flight at once")
    verify_sha256: bool = Field(False, description="check SHA-256 digests from sidecars or the index")
    endpoint_url: str | None = Field(None, description="S3 endpoint override")
    region: str | None = Field(None, description="S3 region")
    timeout_s: float = Field(30.0, gt=0, description="connect/read timeout of one request")
    cache_dir: Path | None = Field(None, description="warm-pool directory to prefer a valid local copy from")

    @model_validator(mode="after")
    def _derive_concurrency(self) -> LoaderConfig:
        if self.concurrency is None:
            self.__dict__["concurrency"] = self.derived_concurrency  # frozen: set once, here, before anyone reads it
        return self

    @property
    def derived_concurrency(self) -> int:
        """The concurrency when none is set: one connection per ``CONNECTION_RANGE`` (5 MiB) of the read budget,
        less the hedges' and the consumer's ranges, within [``MIN_CONNECTIONS``, ``MAX_CONNECTIONS``] (16-64).

        Object storage serves each connection at tens of MB/s (a per-connection rate, not a per-client one), so
        a load's throughput grows with its connections until the network or the CPU is full; AWS's guidance for
        S3 is many parallel ranged GETs per instance. Each connection needs a range in memory, and a range
        much smaller than 5 MiB (runai-model-streamer's smallest object-store chunk, S3's smallest multipart
        part) spends much of its time waiting for its first byte. So the budget sets the number: at the
        default 256 MiB limit, 23 connections of 5 MiB ranges on the host path (192 MiB before each read's
        2 MiB huge-page overhang) and 45 through the ring (256 MiB); from a limit of about 630 MiB (host) or
        350 MiB (ring), the cap of 64; below about 190 MiB (host) or 110 MiB (ring), the floor of 16 with
        smaller ranges (as before). A checkpoint with fewer ranges than connections runs
        as many as it has ranges (and ``range_bytes_for`` cuts a small one into one range per connection).
        """
        hedges = self.max_hedges if self.hedge else 0
        ranges = self._budget_before_overhang - (hedges + CONSUMER_RANGES) * CONNECTION_RANGE
        wanted = ranges // (CONNECTION_RANGE + self.read_overhang_bytes)
        return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, wanted))

    @model_validator(mode="after")
    def _ring_holds_two_ranges(self) -> LoaderConfig:
        if self.memory_limit_bytes < 2 * 64 * 1024:
            raise ValueError(f"memory_limit_bytes={self.memory_limit_bytes} must hold two 64 KiB ranges")
        return self

    @property
    def read_overhang_bytes(self) -> int:
        """Direct host reads into huge-page memory: what one read in flight may make resident beyond its range. Its
        writes fault in whole 2 MiB pages, so the page its last bytes land in reaches into bytes no read has
        leased yet (measured: 32 connections held 1.25x the limit when this was not counted, 16 held 0.9-1.1x)."""
        return HUGE_PAGE if self.direct_host_reads and self.huge_pages else 0

    @property
    def _budget_before_overhang(self) -> int:
        if not self.direct_host_reads:
            return self.memory_limit_bytes
        return max(2 * 64 * 1024, self.memory_limit_bytes - self.prefault_window_bytes - self.recycle_window_bytes)

    @property
    def read_budget_bytes(self) -> int:
        """Bytes the ranges being read and waiting for the consumer may occupy: the whole ring, or for direct host
        reads what the prefault and recycle windows and the reads' huge-page overhang (``read_overhang_bytes`` per
        connection; never more than half) leave of the memory limit."""
        budget = self._budget_before_overhang
        return max(budget // 2, budget - self.concurrency * self.read_overhang_bytes)

    @property
    def ranges_in_budget(self) -> int:
        """How many ranges the read budget is cut into: one per connection, one per hedge that may run, and
        ``CONSUMER_RANGES`` completed ones the consumer may be copying or assembling meanwhile."""
        return self.concurrency + (self.max_hedges if self.hedge else 0) + CONSUMER_RANGES

    @property
    def effective_range_bytes(self) -> int:
        """The range size actually used.

        Unset ``range_bytes``: the read budget divided by ``ranges_in_budget``, rounded down to whole MiB
        (64 KiB below 1 MiB), and kept within [``MIN_DERIVED_RANGE``, ``MAX_DERIVED_RANGE``]. So every
        connection has a range in flight while the hedges and the consumer have theirs, and the budget
        holds; at the defaults (256 MiB, 16 connections, 4 hedges) that is 11 MiB through the ring and
        8 MiB for direct host reads (their budget is 192 MiB). The floor keeps the first-byte latency of
        object storage (tens of ms) small against a range's transfer time; a budget too small for the
        concurrency at the floor runs fewer connections rather than smaller ranges. The cap keeps what a
        hedge must re-read bounded. Set ``range_bytes`` to choose the size yourself.
        Either way the size is shrunk so that the budget holds at least two ranges.
        """
        budget = self.read_budget_bytes if self.range_bytes is None else self.memory_limit_bytes
        if self.range_bytes is not None:
            wanted = self.range_bytes
        else:
            share = budget // self.ranges_in_budget
            step = MiB if share >= MiB else 64 * 1024
            wanted = min(MAX_DERIVED_RANGE, max(MIN_DERIVED_RANGE, share // step * step))
        return max(64 * 1024, min(wanted, budget // 2 // (64 * 1024) * (64 * 1024)))

    def range_bytes_for(self, spans: list[int]) -> int:
        """The range size for reading byte spans of these lengths (one per shard).

        Set ``range_bytes``: that size (``effective_range_bytes``). Derived: the smallest size, in 64 KiB steps
        and within [``MIN_DERIVED_RANGE``, ``effective_range_bytes``], that cuts the spans into no more ranges
        than ``effective_range_bytes`` would fill whole rounds of ``concurrency`` connections with. Ranges of
        one size take about as long on every connection, so the last round then keeps every connection busy
        instead of a few (117 ranges on 16 connections ran 8 rounds, the last with 5 busy; 128 slightly
        smaller ones run the same 8 rounds, each shorter), and a checkpoint smaller than one round is spread
        over every connection instead of a few. Never larger, so the budget holds as it is.
        """
        ceiling = self.effective_range_bytes
        if self.range_bytes is not None or not spans:
            return ceiling
        count = lambda size: sum(-(-n // size) for n in spans)  # noqa: E731
        rounds = -(-count(ceiling) // self.concurrency)
        slots = rounds * self.concurrency
        step = 64 * 1024
        size = max(MIN_DERIVED_RANGE, -(-sum(spans) // slots // step) * step)
        while size < ceiling and count(size) > slots:
            size += step
        return min(size, ceiling)

    @property
    def slots(self) -> int:
        """Number of ring slots."""
        return max(2, self.memory_limit_bytes // self.effective_range_bytes)

    @property
    def recycle_window_bytes(self) -> int:
        """Direct host reads: recycled pages that may wait ahead of the reads (0 when recycling is off)."""
        return self.memory_limit_bytes // 4 if self.recycle_pages else 0

    @property
    def read_ahead_ranges(self) -> int:
        """Direct host reads: ranges read ahead of the consumer, within the read budget (the prefault and recycle
        windows and the reads' overhang come out of the same memory limit)."""
        return max(2, self.read_budget_bytes // self.effective_range_bytes)

    @classmethod
    def from_env(cls, **overrides: object) -> LoaderConfig:
        """Settings from ``WARMSCALE_LOADER_<FIELD>`` variables, then ``overrides``."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
