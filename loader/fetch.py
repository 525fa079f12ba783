"""Parallel ranged reads into ring slots, with bounded retries, resumption and hedging.

Workers take a free slot first and then the lowest unstarted range, so the oldest unfinished
range always holds a slot (no deadlock when a consumer keeps slots until ranges complete in
order). Unlike Run:ai's streamer, which gives each worker one fixed contiguous slice (one slow
connection stalls the whole load), work is handed out range by range, and a range that runs much
longer than the median is re-issued into a spare slot ("hedged"): whichever copy finishes first
wins, the other is abandoned at its next chunk boundary.
"""

from __future__ import annotations

import logging
import queue
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loader.config import LoaderConfig
from loader.errors import RetriesExhaustedError, SourceError, TransientSourceError
from loader.ring import DirectTargets, Slot, SlotRing
from loader.sources.base import ObjectSource, PartialReadError, ReadCancelled

log = logging.getLogger(__name__)


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


class _Cancelled(Exception):
    pass


@dataclass
class _InFlight:
    job: RangeJob
    started: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    winner: bool = False
    hedged: bool = False


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
        self._durations: list[float] = []
        self._hedges_running = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers (and the hedging monitor)."""
        workers = min(self._config.concurrency, len(self._jobs), max(1, self._ring.capacity - (1 if self._config.hedge else 0)))
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
                slot = self._ring.acquire()
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
        buf = self._ring.hedge_view(slot, job) if hedge else self._ring.view(slot, job)
        try:
            self._fetch(job, buf, cancelled=lambda: state.winner or self._stop.is_set())
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
        if hedge:
            self._ring.commit_hedge(job, buf)
        with self._lock:
            self._inflight.pop(job.seq, None)
            self._durations.append(time.monotonic() - state.started)
            self.stats.bytes += job.length
            if hedge:
                self.stats.hedge_wins += 1
        self.completed.put((job, slot))

    def _fetch(self, job: RangeJob, buf: memoryview, cancelled: Callable[[], bool]) -> None:
        received = 0
        attempt = 1
        while True:
            if cancelled():
                raise _Cancelled
            try:
                with self._lock:
                    self.stats.requests += 1
                self._source.read_into(job.name, job.offset + received, buf[received:], job.etag, cancelled)
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
            if self._stop.wait(delay):
                raise _Cancelled

    def _monitor(self) -> None:
        """Hedge ranges that run far longer than the median completed range."""
        while not self._stop.wait(0.02):
            with self._lock:
                # Only this thread starts hedges, so no more than ``room`` can be running by the time
                # the ones chosen here have started.
                room = self._config.max_hedges - self._hedges_running
                if len(self._durations) < 4 or room <= 0:
                    continue
                threshold = max(self._config.hedge_min_s, self._config.hedge_factor * statistics.median(self._durations[-64:]))
                now = time.monotonic()
                slow = [s for s in self._inflight.values() if not s.hedged and now - s.started > threshold][:room]
            for state in slow:
                slot = self._ring.acquire(block=False)
                if slot is None:
                    break
                with self._lock:
                    state.hedged = True
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

