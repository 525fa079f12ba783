"""Validated loader settings (pydantic): every error names the field and the value."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024
ENV_PREFIX = "WARMSCALE_LOADER_"


class LoaderConfig(BaseModel):
    """How the loader fetches and stages bytes. Defaults are explained where they are not obvious."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 16 x 16 MiB. In bench/loader.py's sweep 8 MiB ranges were the slowest and 16 / 32 MiB within
    # noise of each other. On loopback 4-8 streams already saturate 2 cores (the sweep's best), but a
    # remote object store serves each connection at ~100 MB/s with tens of ms to the first byte, so
    # 16 streams are kept for it.
    concurrency: int = Field(16, ge=1, le=512, description="parallel ranged GETs in flight")
    range_bytes: int = Field(16 * MiB, ge=64 * 1024, le=1024 * MiB, description="bytes per ranged GET")
    memory_limit_bytes: int = Field(
        256 * MiB, ge=128 * 1024,
        description="host staging ring (pinned when the target is CUDA); for direct host reads, the bytes read "
        "ahead of the consumer, partly assembled tensors included (raised to fit the largest tensor)",
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
    max_attempts: int = Field(6, ge=1, le=50, description="tries per range before the load fails")
    backoff_base_s: float = Field(0.05, gt=0, description="first retry delay; doubles each try, full jitter")
    backoff_max_s: float = Field(2.0, gt=0, description="largest retry delay")
    hedge: bool = Field(True, description="re-issue ranges that run much slower than their peers")
    hedge_factor: float = Field(4.0, gt=1, description="a range is slow after this many median range times")
    hedge_min_s: float = Field(0.5, ge=0, description="never hedge a range younger than this")
    max_hedges: int = Field(4, ge=1, le=64, description="hedged requests in flight at once")
    verify_sha256: bool = Field(False, description="check SHA-256 digests from sidecars or the index")
    endpoint_url: str | None = Field(None, description="S3 endpoint override")
    region: str | None = Field(None, description="S3 region")
    timeout_s: float = Field(30.0, gt=0, description="connect/read timeout of one request")
    cache_dir: Path | None = Field(None, description="warm-pool directory to prefer a valid local copy from")

    @model_validator(mode="after")
    def _ring_holds_two_ranges(self) -> LoaderConfig:
        if self.memory_limit_bytes < 2 * 64 * 1024:
            raise ValueError(f"memory_limit_bytes={self.memory_limit_bytes} must hold two 64 KiB ranges")
        return self

    @property
    def effective_range_bytes(self) -> int:
        """The range size actually used: shrunk so that the ring holds at least two ranges."""
        return max(64 * 1024, min(self.range_bytes, self.memory_limit_bytes // 2))

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
        """Direct host reads: ranges read ahead of the consumer; the prefault and recycle windows come out of the
        same budget."""
        budget = self.memory_limit_bytes - self.prefault_window_bytes - self.recycle_window_bytes
        return max(2, budget // self.effective_range_bytes)

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
