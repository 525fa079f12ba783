"""Parallel ranged reads into ring slots, with bounded retries, resumption and hedging.

Workers take a free slot first and then the lowest unstarted range, so the oldest unfinished
range always holds a slot (no deadlock when a consumer keeps slots until ranges complete in
order). Unlike Run:ai's streamer, which gives each worker one fixed contiguous slice (one slow
connection stalls the whole load), work is handed out range by range, and a range that runs much
longer than its peers is re-issued into a spare slot ("hedged").

When to hedge: a range is slow once it has run ``hedge_factor`` times longer than a range of its
size is expected to take, and never before ``hedge_min_s``; or once its body has come for
``slow_body_after_s`` at a rate that says it will run that long (a slow connection: its first byte
comes on time, then a trickle; every moment it is left holds up the ranges behind it). The expected time is the median time of
the recently completed ranges of the same size when there are ``MIN_SAMPLES`` of them, else its size
over the median per-range rate (bytes per second) of the recently completed ranges; a shard's short
last range is not held to a full range's time, nor a full range to a short one's. A request still
waiting for its first byte is slow sooner: once it has waited ``hedge_factor`` times the median
time to first byte of the recently completed requests (again never before ``hedge_min_s``). That is
the common straggler of object storage (a request parked on a busy server or a stalled connection),
and AWS's guidance for S3 is the same: re-issue a request that is slow to respond, on a new
connection, rather than wait for it.

Hedges have room of their own: workers leave ``max_hedges`` slots (or read-ahead leases) free
(``acquire(reserve=...)``), so a hedge can start although completed ranges wait for the consumer in
every other slot; without it, a stalled range that a large tensor waits on kept the hedge out for as
long as it stalled.

Whichever copy finishes first wins and the other is aborted at once: its connection is shut down
(``loader.sources.abort``), so a thread blocked on a stalled socket returns, drops that connection
(a stalled or slow connection is not reused for later ranges) and gives its slot or scratch buffer
back. A winning hedge waits for its aborted primary to stop before it copies its bytes into the
destination, so no losing request can write into memory a consumer holds.
"""

from __future__ import annotations

import logging
import queue
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from loader.config import LoaderConfig
from loader.errors import RetriesExhaustedError, SourceError, TransientSourceError
from loader.ring import DirectTargets, Slot, SlotRing
from loader.sources.abort import ReadHandle, reading
from loader.sources.base import ObjectSource, PartialReadError, ReadCancelled

log = logging.getLogger(__name__)
MIN_SAMPLES = 4  # completed ranges before anything is hedged (and of one size before its own median is used)
RECENT = 64  # completed ranges the expectation is taken over
LOSER_STOP_WAIT_S = 2.0  # how long a winning hedge waits for its aborted primary to stop writing


@dataclass(frozen=True, slots=True)
class RangeJob:
    """Bytes ``[offset, offset + length)`` of object ``name`` (shard number ``shard``)."""

    seq: int
    shard: int
    name: str
    offset: int
    length: int
    etag: str | None


@dataclass
class FetchStats:
    """What the fetcher did, for reports."""

    bytes: int = 0
    requests: int = 0
    retries: int = 0
    hedges: int = 0
    hedge_wins: int = 0
    losers_aborted: int = 0  # losing copies whose request was aborted when the other copy won
    losers_still_running: int = 0  # winning hedges whose aborted primary had not stopped when they committed


class _Cancelled(Exception):
    pass


def _reporting(cancelled: Callable[[], bool], progress: Callable[[], None]) -> Callable[[], bool]:
    """``cancelled`` that also calls ``progress`` each time a source asks it."""

    def asked() -> bool:
        progress()
        return cancelled()

    return asked


@dataclass
class _InFlight:
    job: RangeJob
    started: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    winner: bool = False
    hedged: bool = False
    hedge_started: float | None = None
    primary: ReadHandle = field(default_factory=ReadHandle)
    hedge: ReadHandle | None = None
    primary_stopped: threading.Event = field(default_factory=threading.Event)
    first_byte: float | None = None  # when the primary's response began (its first chunk boundary)

    def read_started(self) -> None:
        """Called at every chunk boundary of the primary's read; the first one is its first byte."""
        if self.first_byte is None:
            self.first_byte = time.monotonic()


def _projected_s(length: int, started: float, body_from: float, received: int, now: float) -> float:
    """How long a read of ``length`` bytes started at ``started`` will have taken at the rate its body has come
    since ``body_from`` (0 before any body byte)."""
    if received <= 0:
        return 0.0
    return body_from - started + length * (now - body_from) / received


class RangeFetcher:
    """Fetches ``jobs`` into slots of ``ring``; completed ``(job, slot)`` pairs appear on ``completed``.

    The consumer must ``ring.release(slot)`` each slot when done with it. A failure puts the
    exception on ``completed`` and stops the fetcher.
    """

    def __init__(
        self, source: ObjectSource, jobs: list[RangeJob], ring: SlotRing | DirectTargets, config: LoaderConfig
    ) -> None:
        self._source = source
        self._jobs = jobs
        self._ring = ring
        self._config = config
        self.completed: queue.Queue[tuple[RangeJob, Slot] | BaseException] = queue.Queue()
        self.stats = FetchStats()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._inflight: dict[int, _InFlight] = {}
        self._completed_ranges: deque[tuple[int, float]] = deque(maxlen=RECENT)  # (bytes, seconds)
        self._first_bytes: deque[float] = deque(maxlen=RECENT)  # seconds to the first byte of completed primaries
        self._hedges_running = 0
        self._threads: list[threading.Thread] = []

    @property
    def hedge_reserve(self) -> int:
        """Slots (leases) workers leave free for hedges: ``max_hedges``, or all but one when the ring is smaller."""
        if not self._config.hedge:
            return 0
        return max(0, min(self._config.max_hedges, self._ring.capacity - 1))

    def start(self) -> None:
        """Start the workers (and the hedging monitor)."""
        workers = min(self._config.concurrency, len(self._jobs), max(1, self._ring.capacity - self.hedge_reserve))
        for i in range(max(1, workers)):
            self._spawn(self._work, f"warmscale-fetch-{i}")
        if self._config.hedge and self._jobs:
            self._spawn(self._monitor, "warmscale-hedge-monitor")

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, join_timeout_s: float = 0.5) -> None:
        """Stop handing out work and wait briefly for workers.

        A worker blocked in a stalled read (the loser of a hedge, say) is not waited for: it is a
        daemon thread, stops at its next chunk boundary or read timeout, and only ever writes into
        its own slot, or into destination bytes that no tensor handed over can see.
        """
        self._stop.set()
        with self._lock:
            running = list(self._inflight.values())
        for state in running:  # wake reads blocked on stalled sockets
            state.primary.abort()
            if state.hedge is not None:
                state.hedge.abort()
        self._ring.close()
        deadline = time.monotonic() + join_timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _fail(self, exc: BaseException) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.completed.put(exc)

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                slot = self._ring.acquire(reserve=self.hedge_reserve)
                if slot is None:
                    return
                with self._lock:
                    if self._next >= len(self._jobs):
                        self._ring.release(slot)
                        return
                    job = self._jobs[self._next]
                    self._next += 1
                    state = _InFlight(job, time.monotonic())
                    self._inflight[job.seq] = state
                self._run(state, slot, hedge=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._fail(exc)

    def _run(self, state: _InFlight, slot: Slot, *, hedge: bool) -> None:
        job = state.job
        handle = state.hedge if hedge else state.primary
        buf = self._ring.hedge_view(slot, job) if hedge else self._ring.view(slot, job)
        try:
            try:
                with reading(handle):
                    # a hedge the monitor retires (aborted while no copy has won) stops, like a loser
                    self._fetch(job, buf, cancelled=lambda: state.winner or self._stop.is_set() or handle.aborted,
                                progress=None if hedge else state.read_started)
            finally:
                if not hedge:
                    state.primary_stopped.set()
        except _Cancelled:
            self._ring.release(slot)
            return
        except BaseException:
            if hedge:  # the primary is still running; it reports its own failure
                self._ring.release(slot)
                return
            with state.lock:
                lost = state.winner
            if lost:
                self._ring.release(slot)
                return
            raise
        with state.lock:
            won = not state.winner
            state.winner = True
        if not won:
            self._ring.release(slot)
            return
        loser = state.primary if hedge else state.hedge
        if loser is not None:
            loser.abort()
            with self._lock:
                self.stats.losers_aborted += 1
        if hedge:
            # The aborted primary returns as soon as its socket is shut down; until it has, it may still
            # write into the destination, which commit_hedge then keeps away from the consumer.
            stopped = state.primary_stopped.wait(LOSER_STOP_WAIT_S)
            self._ring.commit_hedge(job, buf, loser_stopped=stopped)
            if not stopped:
                with self._lock:
                    self.stats.losers_still_running += 1
        with self._lock:
            self._inflight.pop(job.seq, None)
            self._completed_ranges.append((job.length, time.monotonic() - state.started))
            if not hedge and state.first_byte is not None:
                self._first_bytes.append(state.first_byte - state.started)
            self.stats.bytes += job.length
            if hedge:
                self.stats.hedge_wins += 1
        self.completed.put((job, slot))

    def _fetch(
        self, job: RangeJob, buf: memoryview, cancelled: Callable[[], bool], progress: Callable[[], None] | None = None
    ) -> None:
        """Read ``job`` into ``buf``, retrying and resuming; ``progress`` is called at every chunk boundary of the
        reads (sources ask ``cancelled`` there, the first time once the response has begun)."""
        received = 0
        attempt = 1
        asked_by_source = cancelled if progress is None else _reporting(cancelled, progress)
        while True:
            if cancelled():
                raise _Cancelled
            try:
                with self._lock:
                    self.stats.requests += 1
                self._source.read_into(job.name, job.offset + received, buf[received:], job.etag, asked_by_source)
                return
            except ReadCancelled:
                raise _Cancelled from None
            except PartialReadError as exc:
                received += exc.received
                error: SourceError = exc
            except TransientSourceError as exc:
                error = exc
            if cancelled():
                raise _Cancelled
            if attempt >= self._config.max_attempts:
                raise RetriesExhaustedError(
                    error.object_name,
                    f"gave up on bytes {job.offset}-{job.offset + job.length - 1} after {attempt} attempts; last error: {error}",
                ) from error
            delay = random.uniform(0, min(self._config.backoff_max_s, self._config.backoff_base_s * 2 ** (attempt - 1)))
            log.debug("retrying %s at %d after %s (attempt %d, %.3fs)", job.name, job.offset + received, error, attempt, delay)
            with self._lock:
                self.stats.retries += 1
            attempt += 1
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                if self._stop.wait(min(left, 0.02)) or cancelled():
                    raise _Cancelled

    def expected_seconds(self, length: int) -> float | None:
        """How long a range of ``length`` bytes is expected to take (see the module's docstring); None until
        ``MIN_SAMPLES`` ranges have completed. Call with ``self._lock`` held."""
        done = self._completed_ranges
        if len(done) < MIN_SAMPLES:
            return None
        same = [seconds for n, seconds in done if n == length]
        if len(same) >= MIN_SAMPLES:
            return statistics.median(same)
        rate = statistics.median(n / max(seconds, 1e-6) for n, seconds in done)
        return length / rate

    def hedge_after_s(self, length: int) -> float | None:
        """Seconds after which a range of ``length`` bytes is hedged; None while there is nothing to go by.
        Call with ``self._lock`` held."""
        expected = self.expected_seconds(length)
        if expected is None:
            return None
        return max(self._config.hedge_min_s, self._config.hedge_factor * expected)

    def first_byte_hedge_after_s(self) -> float | None:
        """Seconds without a first byte after which a request is hedged; None while there is nothing to go by.
        Call with ``self._lock`` held."""
        if len(self._first_bytes) < MIN_SAMPLES:
            return None
        return max(self._config.hedge_min_s, self._config.hedge_factor * statistics.median(self._first_bytes))

    def _slow_ranges(self, now: float) -> list[_InFlight]:
        """Unhedged ranges in flight that are slow for their size or still wait for their first byte, oldest
        first. Call with ``self._lock`` held."""
        thresholds: dict[int, float | None] = {}
        no_first_byte = self.first_byte_hedge_after_s()
        slow = []
        for s in self._inflight.values():
            if s.hedged:
                continue
            length = s.job.length
            if length not in thresholds:
                thresholds[length] = self.hedge_after_s(length)
            limit = thresholds[length]
            waited = now - s.started
            late = limit is not None and (waited > limit or self._trickling(
                s.job.length, s.started, s.first_byte, s.primary.received, now, limit))
            if late or (no_first_byte is not None and s.first_byte is None and waited > no_first_byte):
                slow.append(s)
        return sorted(slow, key=lambda s: s.started)

    def _retire_late_hedges(self, now: float) -> None:
        """Abort the hedges that are late themselves (on a slow or stalled connection too), so that their ranges
        are hedged again on another connection. Call with ``self._lock`` held."""
        for s in self._inflight.values():
            if not s.hedged or s.hedge is None or s.hedge_started is None:
                continue
            limit = self.hedge_after_s(s.job.length)
            # a hedge's first byte is not tracked: its body is taken to start with it
            if limit is not None and (now - s.hedge_started > limit or self._trickling(
                    s.job.length, s.hedge_started, s.hedge_started, s.hedge.received, now, limit)):
                s.hedge.abort()
                s.hedged, s.hedge, s.hedge_started = False, None, None

    def _trickling(self, length: int, started: float, body_from: float | None, received: int, now: float,
                   limit: float) -> bool:
        """A read's body has come for ``slow_body_after_s`` at a rate that makes it take over ``limit``."""
        return (body_from is not None and now - body_from >= self._config.slow_body_after_s
                and _projected_s(length, started, body_from, received, now) > limit)

    def _monitor(self) -> None:
        """Hedge ranges that run far longer than ranges of their size take, or wait far longer for a first byte."""
        while not self._stop.wait(0.02):
            with self._lock:
                # Only this thread starts hedges, so no more than ``room`` can be running by the time
                # the ones chosen here have started.
                room = self._config.max_hedges - self._hedges_running
                if len(self._completed_ranges) < MIN_SAMPLES:
                    continue
                self._retire_late_hedges(time.monotonic())
                if room <= 0:
                    continue
                slow = self._slow_ranges(time.monotonic())[:room]
            for state in slow:
                slot = self._ring.acquire(block=False)
                if slot is None:
                    break
                with self._lock:
                    state.hedged = True
                    state.hedge = ReadHandle()
                    state.hedge_started = time.monotonic()
                    self._hedges_running += 1
                    self.stats.hedges += 1
                log.debug("hedging %s bytes %d+%d", state.job.name, state.job.offset, state.job.length)
                self._spawn(self._hedge, f"warmscale-hedge-{state.job.seq}", state, slot)

    def _hedge(self, state: _InFlight, slot: Slot) -> None:
        try:
            self._run(state, slot, hedge=True)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            with self._lock:
                self._hedges_running -= 1

