"""Retries, resumption after a broken read, hedging of slow ranges, and giving up cleanly.

The faults come from a wrapper around a real local source; tests/integration/test_loader_faults.py
does the same through a fault-injecting proxy in front of the real S3 server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loader.checkpoint import resolve_checkpoint
from loader.config import LoaderConfig
from loader.errors import AccessDeniedError, RetriesExhaustedError, TransientSourceError
from loader.sources import LocalSource
from loader.sources.base import PartialReadError, ReadCancelled
from loader.stream import LoadReport, load_checkpoint

RANGE = 64 * 1024


class FaultySource(LocalSource):
    """A local source whose ``read_into`` fails on chosen calls."""

    def __init__(self, root: Path, plan: dict[int, str], stall_s: float = 0.0) -> None:
        super().__init__(root)
        self.plan = plan  # call number -> fault
        self.stall_s = stall_s
        self.calls = 0
        self.resume_expected: list[int] = []
        self.offsets: list[int] = []
        self._lock = threading.Lock()

    def read_into(self, name, offset, buf, etag, cancelled=None):  # type: ignore[override]
        with self._lock:
            self.calls += 1
            fault = self.plan.get(self.calls)
            self.offsets.append(offset)
        if fault == "slowdown":
            raise TransientSourceError(self.uri(name), "server error SlowDown: 503")
        if fault == "reset":
            half = len(buf) // 2
            super().read_into(name, offset, buf[:half], etag)
            self.resume_expected.append(offset + half)
            raise PartialReadError(self.uri(name), "connection reset", half)
        if fault == "denied":
            raise AccessDeniedError(self.uri(name), "access denied (AccessDenied)")
        if fault == "stall":
            deadline = time.monotonic() + self.stall_s
            while time.monotonic() < deadline:
                if cancelled is not None and cancelled():
                    raise ReadCancelled
                time.sleep(0.005)
        super().read_into(name, offset, buf, etag, cancelled)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    g = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.randn(64, 256, generator=g) for i in range(12)}, directory / "model.safetensors")
    return directory


def _config(**overrides: object) -> LoaderConfig:
    values = {"range_bytes": RANGE, "memory_limit_bytes": 8 * RANGE, "concurrency": 4, "backoff_base_s": 0.001,
              "backoff_max_s": 0.01, "direct_host_reads": False, "map_local_files": False}
    values.update(overrides)
    return LoaderConfig(**values)


def _load(source: LocalSource, config: LoaderConfig) -> tuple[dict[str, torch.Tensor], LoadReport]:
    report = LoadReport(location=source.root)
    got = load_checkpoint(resolve_checkpoint(source), "cpu", config, report=report)
    return got, report


def _same(got: dict[str, torch.Tensor], ckpt: Path) -> bool:
    want = load_file(ckpt / "model.safetensors")
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_throttling_is_retried(ckpt: Path) -> None:
    source = FaultySource(ckpt, {1: "slowdown", 2: "slowdown", 5: "slowdown"})
    got, report = _load(source, _config())
    assert _same(got, ckpt)
    assert report.fetch.retries == 3


def test_reset_mid_range_resumes_where_it_stopped(ckpt: Path) -> None:
    source = FaultySource(ckpt, {2: "reset", 3: "reset"})
    got, report = _load(source, _config(concurrency=1))
    assert _same(got, ckpt)
    assert report.fetch.retries == 2
    # Each retry asked only for the missing half of its range.
    assert len(source.resume_expected) == 2
    assert all(offset in source.offsets for offset in source.resume_expected)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_gives_up_after_the_attempt_budget_and_returns_nothing(ckpt: Path, direct: bool) -> None:
    source = FaultySource(ckpt, {n: "slowdown" for n in range(1, 100)})
    with pytest.raises(RetriesExhaustedError, match="after 3 attempts") as err:
        _load(source, _config(max_attempts=3, direct_host_reads=direct))
    assert "model.safetensors" in str(err.value)


def test_access_denied_is_not_retried(ckpt: Path) -> None:
    source = FaultySource(ckpt, {3: "denied"})
    with pytest.raises(AccessDeniedError, match="model.safetensors"):
        _load(source, _config(concurrency=1))
    assert source.calls == 3


def test_slow_range_is_hedged(ckpt: Path) -> None:
    source = FaultySource(ckpt, {7: "stall"}, stall_s=20.0)
    started = time.monotonic()
    got, report = _load(source, _config(concurrency=2, hedge_min_s=0.05, hedge_factor=2.0))
    assert time.monotonic() - started < 10
    assert _same(got, ckpt)
    assert report.fetch.hedges >= 1 and report.fetch.hedge_wins >= 1


def test_without_hedging_a_stalled_range_holds_the_load(ckpt: Path) -> None:
    source = FaultySource(ckpt, {7: "stall"}, stall_s=1.0)
    started = time.monotonic()
    got, report = _load(source, _config(concurrency=2, hedge=False))
    assert time.monotonic() - started >= 1.0
    assert report.fetch.hedges == 0 and _same(got, ckpt)


def test_config_errors_name_field_and_value() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        LoaderConfig(concurrency=0)
    assert "concurrency" in str(err.value) and "0" in str(err.value)
    with pytest.raises(ValidationError, match="unknown_knob"):
        LoaderConfig(unknown_knob=1)  # type: ignore[call-arg]


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSCALE_LOADER_CONCURRENCY", "5")
    monkeypatch.setenv("WARMSCALE_LOADER_RANGE_BYTES", "1048576")
    config = LoaderConfig.from_env(hedge=False)
    assert (config.concurrency, config.range_bytes, config.hedge) == (5, 1 << 20, False)
    assert LoaderConfig(range_bytes=8 << 20, memory_limit_bytes=4 << 20).effective_range_bytes == 2 << 20


class HedgeCountingSource(LocalSource):
    """Stalls chosen ranges (and every hedged copy) so that hedges pile up; records how many hedged
    reads run at once."""

    def __init__(self, root: Path, slow_s: dict[int, float], stall_s: float) -> None:
        super().__init__(root)
        self.slow_s = slow_s  # range number -> seconds its first (primary) read takes
        self.stall_s = stall_s
        self.hedges_now = 0
        self.most_hedges = 0
        self._lock = threading.Lock()
        self._seen: set[int] = set()

    def read_into(self, name, offset, buf, etag, cancelled=None):  # type: ignore[override]
        hedge = threading.current_thread().name.startswith("warmscale-hedge-")
        number = offset // RANGE
        with self._lock:
            first = number not in self._seen
            self._seen.add(number)
            if hedge:
                self.hedges_now += 1
                self.most_hedges = max(self.most_hedges, self.hedges_now)
        try:
            delay = self.stall_s if hedge else self.slow_s.get(number, 0.0) if first else 0.0
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if cancelled is not None and cancelled():
                    raise ReadCancelled
                time.sleep(0.005)
            super().read_into(name, offset, buf, etag, cancelled)
        finally:
            if hedge:
                with self._lock:
                    self.hedges_now -= 1


def test_hedges_in_flight_never_exceed_the_cap(ckpt: Path) -> None:
    # Range 4 turns slow first and is hedged alone; ranges 8-10 turn slow while that hedge still runs.
    slow = {4: 1.5, 5: 0.15, 6: 0.15, 7: 0.15, 8: 1.5, 9: 1.5, 10: 1.5}
    source = HedgeCountingSource(ckpt, slow, stall_s=3.0)
    config = _config(concurrency=4, memory_limit_bytes=32 * RANGE, hedge_min_s=0.2, hedge_factor=2.0, max_hedges=2)
    got, report = _load(source, config)
    assert _same(got, ckpt)
    assert report.fetch.hedges >= 2  # the cap was reached
    assert source.most_hedges <= config.max_hedges


@pytest.mark.parametrize(("status", "code", "kind", "words"), [
    (403, "InvalidAccessKeyId", "AccessDeniedError", "check the credentials"),
    (404, "XAdminUserNotFound", "AccessDeniedError", "check the credentials"),
    (403, "SignatureDoesNotMatch", "AccessDeniedError", "rejected the credentials"),
    (404, "NoSuchKey", "ObjectNotFoundError", "object not found"),
    (404, "", "ObjectNotFoundError", "object not found"),
    (404, "SomethingElse", "SourceError", "answered 404"),
    (503, "SlowDown", "TransientSourceError", "server error"),
])
def test_the_servers_error_code_decides_the_error(status: int, code: str, kind: str, words: str) -> None:
    from loader.sources.base import error_for_response

    error = error_for_response("s3://b/k", status, f"{code}: message", code)
    assert type(error).__name__ == kind and words in str(error) and "s3://b/k" in str(error)
