"""Range sizing from the read budget, hedge timing from the observed per-range times, and aborting the
losing copy of a hedged range at once (its connection shut down, its thread gone, its buffer given back).

The aborting tests use a loopback HTTP server that stalls one ranged GET; the same through toxiproxy
in front of the real S3 server is in tests/integration/test_loader_shaped.py.
"""

from __future__ import annotations

import http.server
import re
import select
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loader.config import CONSUMER_RANGES, MiB, LoaderConfig
from loader.fetch import RangeFetcher, RangeJob
from loader.ring import Slot
from loader.sources.abort import current_handle
from loader.sources.base import ReadCancelled
from loader.stream import LoadReport, load_checkpoint

# --- range sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    {}, {"direct_host_reads": False}, {"concurrency": 32}, {"concurrency": 4}, {"concurrency": 8, "max_hedges": 8},
    {"memory_limit_bytes": 1024 * MiB}, {"hedge": False}, {"memory_limit_bytes": 64 * MiB, "concurrency": 8},
])
def test_the_range_size_gives_every_connection_hedge_and_consumer_a_range_within_the_budget(overrides: dict) -> None:
    config = LoaderConfig(**overrides)
    size = config.effective_range_bytes
    wanted = config.concurrency + (config.max_hedges if config.hedge else 0) + CONSUMER_RANGES
    assert config.read_budget_bytes // size >= wanted  # all of them fit
    assert size % MiB == 0 and MiB <= size <= 64 * MiB
    assert config.read_budget_bytes // (size + MiB) < wanted  # and the next whole MiB would not


def test_the_range_size_follows_the_budget_and_the_concurrency() -> None:
    # Direct host reads: 192 MiB less 2 MiB of huge-page overhang per connection.
    assert LoaderConfig(concurrency=16).effective_range_bytes == 7 * MiB  # 160 MiB read budget / 22
    assert LoaderConfig(concurrency=16, huge_pages=False).effective_range_bytes == 8 * MiB  # 192 MiB / 22
    assert LoaderConfig(concurrency=16, direct_host_reads=False).effective_range_bytes == 11 * MiB  # 256 MiB / 22
    assert LoaderConfig(concurrency=32).effective_range_bytes == 3 * MiB  # 128 MiB / 38
    assert LoaderConfig(concurrency=16, memory_limit_bytes=2048 * MiB).effective_range_bytes == 64 * MiB  # the cap
    # A budget too small for the concurrency at the floor keeps the floor (fewer connections run).
    assert LoaderConfig(memory_limit_bytes=8 * MiB).effective_range_bytes == MiB
    # A size chosen by hand is kept (shrunk only so that the ring holds two ranges).
    assert LoaderConfig(range_bytes=16 * MiB).effective_range_bytes == 16 * MiB
    assert LoaderConfig(range_bytes=8 * MiB, memory_limit_bytes=4 * MiB).effective_range_bytes == 2 * MiB


@pytest.mark.parametrize(("overrides", "connections"), [
    ({}, 23),  # 192 MiB: 6 ranges of 5 MiB for hedges and consumer, then 5 MiB + 2 MiB overhang per connection
    ({"huge_pages": False}, 32),  # no overhang: 38 ranges of 5 MiB less 4 hedges and 2 for the consumer
    ({"direct_host_reads": False}, 45),  # 256 MiB: 51 - 6
    ({"memory_limit_bytes": 1024 * MiB}, 64),  # the cap
    ({"memory_limit_bytes": 64 * MiB}, 16),  # the floor
    ({"hedge": False}, 26),  # no hedges to leave room for: (192 - 10) // 7
    ({"concurrency": 8}, 8),  # set by hand: kept
])
def test_unset_concurrency_follows_the_read_budget(overrides: dict, connections: int) -> None:
    config = LoaderConfig(**overrides)
    assert config.concurrency == connections
    if "concurrency" not in overrides and 16 < connections < 64:
        assert config.effective_range_bytes == 5 * MiB  # every connection, hedge and consumer range at 5 MiB


@pytest.mark.parametrize("overrides", [{}, {"concurrency": 32}, {"concurrency": 16}, {"memory_limit_bytes": 1024 * MiB},
                                       {"hedge": False}, {"prefault_window_bytes": 32 * MiB}])
def test_direct_reads_and_their_huge_page_overhang_fit_the_memory_limit(overrides: dict) -> None:
    # Each read in flight faults in the 2 MiB page its last bytes land in; the leases leave room for it.
    config = LoaderConfig(**overrides)
    resident = config.read_ahead_ranges * config.effective_range_bytes + config.concurrency * config.read_overhang_bytes
    windows = config.recycle_window_bytes + config.prefault_window_bytes
    assert resident + windows <= config.memory_limit_bytes


def test_concurrency_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMSCALE_LOADER_CONCURRENCY", "7")
    assert LoaderConfig.from_env().concurrency == 7
    with pytest.raises(ValueError, match="concurrency"):
        LoaderConfig(concurrency=0)


def _ranges(spans: list[int], size: int) -> int:
    return sum(-(-n // size) for n in spans)


@pytest.mark.parametrize("spans", [[490_000_000, 490_000_000], [3_000_000_000], [50_000_000], [7 * MiB] * 40])
def test_the_derived_range_size_fills_the_last_round_of_connections(spans: list[int]) -> None:
    config = LoaderConfig()
    ceiling, step = config.effective_range_bytes, 64 * 1024
    rounds = -(-_ranges(spans, ceiling) // config.concurrency)
    size = config.range_bytes_for(spans)
    assert size <= ceiling and size % step == 0 and size >= MiB
    assert _ranges(spans, size) <= rounds * config.concurrency  # no more rounds than before
    assert size == MiB or _ranges(spans, size - step) > rounds * config.concurrency  # and no smaller size would do


def test_the_derived_range_size_on_two_half_gigabyte_shards() -> None:
    spans = [490_000_000, 490_000_000]
    config = LoaderConfig(concurrency=16, huge_pages=False)
    assert _ranges(spans, config.effective_range_bytes) == 118  # 8 rounds of 16, the last with 6 busy
    assert _ranges(spans, config.range_bytes_for(spans)) == 128  # 8 full rounds of shorter ranges
    assert config.range_bytes_for([50_000_000]) == 3 * MiB  # 16 ranges: every connection has one
    assert LoaderConfig(range_bytes=8 * MiB).range_bytes_for(spans) == 8 * MiB  # a size chosen by hand is kept


class _Leases:
    """A read-ahead budget of ``capacity`` leases, as DirectTargets hands out, with no memory behind them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._out = 0
        self._cond = threading.Condition()
        self._closed = False
        self._slot = Slot(-1, None, memoryview(b""))

    def acquire(self, *, block: bool = True, reserve: int = 0) -> Slot | None:
        with self._cond:
            while self._out >= self.capacity - reserve and block and not self._closed:
                self._cond.wait()
            if self._closed or self._out >= self.capacity - reserve:
                return None
            self._out += 1
            return self._slot

    def view(self, slot: Slot, job: RangeJob) -> memoryview:
        return memoryview(b"")

    hedge_view = view

    def commit_hedge(self, job: RangeJob, data: memoryview, *, loser_stopped: bool = True) -> None:
        pass

    def release(self, slot: Slot) -> None:
        with self._cond:
            self._out -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _GatedSource:
    """Every read blocks until ``gate`` opens; counts the reads running at once."""

    root = "gated://"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def uri(self, name: str) -> str:
        return f"gated://{name}"

    def read_into(self, name, offset, buf, etag, cancelled=None):  # type: ignore[no-untyped-def]
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(10)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_the_default_budget_runs_every_connection(direct: bool) -> None:
    config = LoaderConfig(direct_host_reads=direct)
    leases = config.read_ahead_ranges if direct else config.slots
    size = config.effective_range_bytes
    jobs = [RangeJob(i, 0, "m", i * size, size, None) for i in range(64)]
    source = _GatedSource()
    fetcher = RangeFetcher(source, jobs, _Leases(leases), config)  # type: ignore[arg-type]
    fetcher.start()
    try:
        deadline = time.monotonic() + 5
        while source.most < config.concurrency and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.most == config.concurrency
    finally:
        source.gate.set()
        fetcher.stop()


# --- hedge timing -------------------------------------------------------------------------------


def _fetcher(config: LoaderConfig) -> RangeFetcher:
    return RangeFetcher(_GatedSource(), [], _Leases(4), config)  # type: ignore[arg-type]


def test_the_expected_time_is_the_median_of_ranges_of_its_size_else_scaled_by_the_median_rate() -> None:
    fetcher = _fetcher(LoaderConfig(hedge_factor=3.0, hedge_min_s=0.1))
    assert fetcher.hedge_after_s(1000) is None  # nothing completed yet: nothing to go by
    fetcher._completed_ranges.extend([(1000, 1.0), (1000, 1.2), (1000, 0.8), (4000, 2.0), (4000, 2.0), (4000, 9.0),
                                      (4000, 2.2)])
    assert fetcher.expected_seconds(4000) == pytest.approx(2.1)  # median of the four of its size
    # Only three of 1000 bytes: rates are 1000, 833, 1250, 2000, 2000, 444, 1818 B/s; median 1250.
    assert fetcher.expected_seconds(1000) == pytest.approx(0.8)
    assert fetcher.expected_seconds(500) == pytest.approx(0.4)
    assert fetcher.hedge_after_s(4000) == pytest.approx(6.3)
    assert fetcher.hedge_after_s(10) == pytest.approx(0.1)  # the floor


class _RateSource:
    """Serves ``data`` at ``rate`` bytes/s per read, reporting the bytes received at each chunk boundary as
    the HTTP sources do; ranges at ``stall`` offsets wait ``stall_s`` first (once), after their first byte, or
    before it with ``before_first_byte`` (as a request parked on a stalled connection: no chunk boundary, so
    no ``cancelled`` call, until the stall ends or the read is aborted); the first ``slow_reads`` reads of
    ranges at ``slow`` offsets come at a tenth of the rate (slow connections). Records when each read of an
    offset started."""

    root = "rate://"

    def __init__(self, data: bytes, rate: float, stall: set[int] = frozenset(), stall_s: float = 0.0,
                 before_first_byte: bool = False, slow: set[int] = frozenset(), slow_reads: int = 1) -> None:
        self.data, self.rate, self.stall, self.stall_s = data, rate, set(stall), stall_s
        self.before_first_byte = before_first_byte
        self.slow_left = {offset: slow_reads for offset in slow}
        self.starts: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def uri(self, name: str) -> str:
        return f"rate://{name}"

    def read_into(self, name, offset, buf, etag, cancelled=None):  # type: ignore[no-untyped-def]
        with self._lock:
            self.starts.setdefault(offset, []).append(time.monotonic())
            stalled = offset in self.stall
            self.stall.discard(offset)
            rate = self.rate / 10 if self.slow_left.get(offset, 0) > 0 else self.rate
            if offset in self.slow_left:
                self.slow_left[offset] -= 1
        handle = current_handle()
        if stalled and self.before_first_byte:
            deadline = time.monotonic() + self.stall_s
            while time.monotonic() < deadline:
                if handle is not None and handle.aborted:
                    raise ReadCancelled
                time.sleep(0.002)
            stalled = False
        begun = time.monotonic() + (self.stall_s if stalled else 0.0)
        deadline = begun + len(buf) / rate
        while (now := time.monotonic()) < deadline:
            if handle is not None:
                handle.received = max(0, int((now - begun) * rate))
            if cancelled is not None and cancelled():
                raise ReadCancelled
            time.sleep(0.002)
        buf[:] = self.data[offset:offset + len(buf)]


class _Ring(_Leases):
    """Leases with real bytes: each slot a buffer of ``size``."""

    def __init__(self, capacity: int, size: int) -> None:
        super().__init__(capacity)
        self._free = [Slot(i, None, memoryview(bytearray(size))) for i in range(capacity)]

    def acquire(self, *, block: bool = True, reserve: int = 0) -> Slot | None:
        with self._cond:
            while len(self._free) <= reserve and block and not self._closed:
                self._cond.wait()
            return None if self._closed or len(self._free) <= reserve else self._free.pop()

    def view(self, slot: Slot, job: RangeJob) -> memoryview:
        return slot.view[:job.length]

    hedge_view = view

    def release(self, slot: Slot) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()


def _fetch_all(source: _RateSource, jobs: list[RangeJob], config: LoaderConfig) -> RangeFetcher:
    ring = _Ring(config.concurrency + config.max_hedges + 1, max(j.length for j in jobs))
    fetcher = RangeFetcher(source, jobs, ring, config)  # type: ignore[arg-type]
    fetcher.start()
    try:
        for _ in jobs:
            item = fetcher.completed.get(timeout=30)
            assert not isinstance(item, BaseException), item
            job, slot = item
            assert bytes(slot.view[:job.length]) == source.data[job.offset:job.offset + job.length]
            ring.release(slot)
    finally:
        fetcher.stop()
    return fetcher


SMALL = 16 * 1024
RATE = SMALL / 0.05  # a small range takes 50 ms


def test_a_range_that_is_only_longer_for_its_size_is_not_hedged() -> None:
    # Eight small ranges, then four ranges 8x their size that run at the same rate (0.4 s each).
    jobs = [RangeJob(i, 0, "m", i * SMALL, SMALL, None) for i in range(8)]
    jobs += [RangeJob(8 + i, 0, "m", 8 * SMALL + i * 8 * SMALL, 8 * SMALL, None) for i in range(4)]
    source = _RateSource(bytes(range(256)) * (40 * SMALL // 256), RATE)
    fetcher = _fetch_all(source, jobs, LoaderConfig(concurrency=2, hedge_factor=3.0, hedge_min_s=0.05))
    assert fetcher.stats.hedges == 0


def test_a_stalled_range_is_hedged_after_k_times_the_time_of_its_size() -> None:
    # Small ranges take 50 ms; one range 4x their size (200 ms expected) stalls for 20 s. It is hedged after
    # about 3 x 200 ms, not 3 x 50 ms, and the load does not wait for the stall.
    jobs = [RangeJob(i, 0, "m", i * SMALL, SMALL, None) for i in range(8)]
    big = RangeJob(8, 0, "m", 8 * SMALL, 4 * SMALL, None)
    jobs += [big] + [RangeJob(9 + i, 0, "m", 12 * SMALL + i * SMALL, SMALL, None) for i in range(4)]
    source = _RateSource(bytes(range(256)) * (16 * SMALL // 256), RATE, stall={big.offset}, stall_s=20.0)
    started = time.monotonic()
    fetcher = _fetch_all(source, jobs, LoaderConfig(concurrency=2, hedge_factor=3.0, hedge_min_s=0.05))
    assert time.monotonic() - started < 10
    assert fetcher.stats.hedges == 1 and fetcher.stats.hedge_wins == 1
    primary, hedge = source.starts[big.offset]
    assert 0.5 <= hedge - primary <= 0.6 + 0.5  # 3 x 200 ms, with room for a busy machine's scheduling


def test_a_request_without_a_first_byte_is_hedged_before_its_range_would_be_late() -> None:
    # Ranges take 200 ms and their first byte comes at once; one request gets no first byte for 20 s. It is
    # hedged after the floor (100 ms), not after 3 x 200 ms.
    size = 4 * SMALL
    jobs = [RangeJob(i, 0, "m", i * size, size, None) for i in range(10)]
    stalled = jobs[6]
    source = _RateSource(bytes(range(256)) * (10 * size // 256), RATE, stall={stalled.offset}, stall_s=20.0,
                         before_first_byte=True)
    started = time.monotonic()
    fetcher = _fetch_all(source, jobs, LoaderConfig(concurrency=2, hedge_factor=3.0, hedge_min_s=0.1))
    assert time.monotonic() - started < 10
    assert fetcher.stats.hedges == 1 and fetcher.stats.hedge_wins == 1 and fetcher.stats.losers_aborted == 1
    primary, hedge = source.starts[stalled.offset]
    assert 0.1 <= hedge - primary <= 0.45  # well before 3 x 200 ms


def test_a_hedge_starts_although_completed_ranges_hold_every_other_lease() -> None:
    # Direct host reads keep a range's lease until every tensor it feeds is complete: here one tensor spans
    # all the ranges, so each completed range keeps its lease until the stalled one is in. The hedge of
    # the stalled range still gets a lease, and the load does not wait out the stall.
    jobs = [RangeJob(i, 0, "m", i * SMALL, SMALL, None) for i in range(12)]
    stalled = jobs[5]  # after enough ranges have completed to judge it by
    source = _RateSource(bytes(range(256)) * (12 * SMALL // 256), RATE, stall={stalled.offset}, stall_s=20.0)
    config = LoaderConfig(concurrency=2, max_hedges=1, hedge_factor=3.0, hedge_min_s=0.05)
    leases = _Ring(8, SMALL)
    fetcher = RangeFetcher(source, jobs, leases, config)  # type: ignore[arg-type]
    started = time.monotonic()
    fetcher.start()
    held = []
    try:
        while len(held) < len(jobs):
            item = fetcher.completed.get(timeout=30)
            assert not isinstance(item, BaseException), item
            held.append(item)
            if item[0] is stalled:  # the tensor is complete once the stalled range is in
                break
        for _, slot in held:
            leases.release(slot)
        for _ in range(len(jobs) - len(held)):
            item = fetcher.completed.get(timeout=30)
            assert not isinstance(item, BaseException), item
            leases.release(item[1])
    finally:
        fetcher.stop()
    assert time.monotonic() - started < 10
    assert fetcher.stats.hedges == 1 and fetcher.stats.hedge_wins == 1


# --- the losing copy is aborted at once ---------------------------------------------------------


class _StallingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(data: bytes, stall_from: int, phase: str, stall_s: float):  # type: ignore[no-untyped-def]
    """A ranged-GET server for ``data``; the first GET starting at or after ``stall_from`` stalls for ``stall_s``
    before its headers (``phase="headers"``) or after half its body (``"body"``) unless the client goes away,
    and the time the client went away is recorded."""
    state = {"stalled": False, "stall_started": None, "client_gone": None, "requests": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _wait_for_client_to_go(self) -> None:
            state["stall_started"] = time.monotonic()
            deadline = time.monotonic() + stall_s
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.01)
                if readable and not self.connection.recv(1, 0):
                    state["client_gone"] = time.monotonic()
                    break
            self.close_connection = True

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", '"e"')
            self.end_headers()

        def do_GET(self) -> None:
            match = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
            begin, end = (int(match.group(1)), min(len(data) - 1, int(match.group(2)))) if match else (0, len(data) - 1)
            with lock:
                state["requests"] += 1
                stall = not state["stalled"] and begin >= stall_from
                state["stalled"] |= stall
            if stall and phase == "headers":
                self._wait_for_client_to_go()
                return
            body = data[begin:end + 1]
            self.send_response(206 if match else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Range", f"bytes {begin}-{end}/{len(data)}")
            self.send_header("ETag", '"e"')
            self.end_headers()
            try:
                if stall:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self._wait_for_client_to_go()
                    return
                self.wfile.write(body)
            except OSError:
                self.close_connection = True

    server = _StallingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, state


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hedge") / "model.safetensors"
    g = torch.Generator().manual_seed(1)
    save_file({f"w{i}": torch.randn(64, 256, generator=g) for i in range(16)}, path)
    return path


def _fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("warmscale-fetch", "warmscale-hedge"))]


@pytest.mark.parametrize("phase", ["headers", "body"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "ring"])
def test_a_winning_hedge_aborts_the_stalled_request_at_once(shard: Path, phase: str, direct: bool) -> None:
    data = shard.read_bytes()
    server, state = _serve(data, stall_from=len(data) // 2, phase=phase, stall_s=20.0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
        config = LoaderConfig(range_bytes=64 * 1024, memory_limit_bytes=1 * MiB, concurrency=3, hedge_min_s=0.1,
                              hedge_factor=3.0, direct_host_reads=direct, map_local_files=False)
        report = LoadReport(location=url)
        started = time.monotonic()
        got = load_checkpoint(url, "cpu", config, report=report)
        took = time.monotonic() - started
        want = load_file(shard)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert took < 10  # far less than the 20 s stall
        assert report.fetch.hedge_wins == 1
        # The server saw the stalled connection go away as soon as the hedge won, not at the end of the stall.
        deadline = time.monotonic() + 1.0
        while state["client_gone"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state["client_gone"] is not None, "the losing request's connection was left open"
        assert state["client_gone"] - state["stall_started"] < took + 0.5
        # The losing thread is gone (it gave its slot or scratch back on the way out).
        deadline = time.monotonic() + 1.0
        while _fetch_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _fetch_threads()
        # The primary stopped before the hedge's bytes went in: nothing had to be copied to keep it away.
        assert report.fetch.losers_aborted == 1 and report.fetch.losers_still_running == 0
    finally:
        server.shutdown()
        server.server_close()


def test_stop_aborts_reads_blocked_on_a_stalled_connection(shard: Path) -> None:
    """A load abandoned by its consumer does not leave a thread blocked on a stalled socket."""
    data = shard.read_bytes()
    server, state = _serve(data, stall_from=0, phase="headers", stall_s=20.0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
        from loader.sources import HttpSource

        source = HttpSource(url.rsplit("/", 1)[0])
        ring = _Ring(2, 64 * 1024)
        job = RangeJob(0, 0, "model.safetensors", 0, 64 * 1024, None)
        fetcher = RangeFetcher(source, [job], ring, LoaderConfig(hedge=False))  # type: ignore[arg-type]
        fetcher.start()
        while state["stall_started"] is None:
            time.sleep(0.01)
        fetcher.stop(join_timeout_s=1.0)
        assert not _fetch_threads()
        deadline = time.monotonic() + 1.0
        while state["client_gone"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state["client_gone"] is not None
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_an_s3_read_that_loses_is_aborted_through_botocores_connection(shard: Path, phase: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through boto3: the S3 source's client attaches its connections to the read handles."""
    from loader.sources.s3 import S3Source

    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    data = shard.read_bytes()
    server, state = _serve(data, stall_from=len(data) // 2, phase=phase, stall_s=20.0)
    try:
        source = S3Source("s3://bucket/model", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        assert source.abortable
        size = 64 * 1024
        jobs = [RangeJob(i, 0, "model.safetensors", off, min(size, len(data) - off), None)
                for i, off in enumerate(range(0, len(data), size))]
        source.data = data  # type: ignore[attr-defined]  # for _fetch_all's check
        started = time.monotonic()
        fetcher = _fetch_all(source, jobs, LoaderConfig(concurrency=3, hedge_min_s=0.1, hedge_factor=3.0))  # type: ignore[arg-type]
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 1.0
        while (state["client_gone"] is None or _fetch_threads()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state["client_gone"] is not None, "the losing request's connection was left open"
        assert not _fetch_threads()
        assert fetcher.stats.hedge_wins == 1 and fetcher.stats.losers_aborted == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_range_on_a_slow_connection_is_hedged_once_its_rate_says_it_will_be_late() -> None:
    # Ranges take 200 ms; one comes at a tenth of the rate from its first byte on (2 s). 50 ms of its body
    # give it away: it is hedged then, before the 300 ms floor and well before 3 x 200 ms.
    size = 4 * SMALL
    jobs = [RangeJob(i, 0, "m", i * size, size, None) for i in range(10)]
    slow = jobs[6]
    source = _RateSource(bytes(range(256)) * (10 * size // 256), RATE, slow={slow.offset})
    config = LoaderConfig(concurrency=2, hedge_factor=3.0, hedge_min_s=0.3, slow_body_after_s=0.05)
    fetcher = _fetch_all(source, jobs, config)
    assert fetcher.stats.hedges == 1 and fetcher.stats.hedge_wins == 1
    primary, hedge = source.starts[slow.offset]
    assert 0.05 <= hedge - primary < 0.3  # before the floor


def test_ranges_at_the_common_rate_are_not_hedged_for_their_rate() -> None:
    size = 4 * SMALL
    jobs = [RangeJob(i, 0, "m", i * size, size, None) for i in range(12)]
    source = _RateSource(bytes(range(256)) * (12 * size // 256), RATE)
    config = LoaderConfig(concurrency=3, hedge_factor=3.0, hedge_min_s=0.3, slow_body_after_s=0.05)
    assert _fetch_all(source, jobs, config).stats.hedges == 0


def test_a_hedge_on_a_slow_connection_too_is_replaced_by_another() -> None:
    # The range's first two reads are slow (2 s each): the first hedge trickles as well, is retired, and a
    # second hedge on another connection delivers the range long before either slow copy could.
    size = 4 * SMALL
    jobs = [RangeJob(i, 0, "m", i * size, size, None) for i in range(10)]
    slow = jobs[6]
    source = _RateSource(bytes(range(256)) * (10 * size // 256), RATE, slow={slow.offset}, slow_reads=2)
    config = LoaderConfig(concurrency=2, hedge_factor=3.0, hedge_min_s=0.3, slow_body_after_s=0.05)
    started = time.monotonic()
    fetcher = _fetch_all(source, jobs, config)
    assert time.monotonic() - started < 1.8  # the slow copies alone would take 2 s
    assert fetcher.stats.hedges == 2 and fetcher.stats.hedge_wins == 1
    primary, first_hedge, second_hedge = source.starts[slow.offset]
    assert second_hedge - first_hedge < 0.3  # retired after its own trickle, not after the primary's time
