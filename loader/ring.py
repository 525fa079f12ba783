"""A bounded ring of equal-sized host buffers (page-locked when the target is a CUDA device).

fastsafetensors (nogds path) and ServerlessLLM also bounce through pinned buffers; unlike
Run:ai's streamer, which fills pageable memory and then calls ``.to(device)``, bytes land in
pinned memory straight from the socket, so the host-to-device copy runs at DMA speed and
asynchronously. The ring is the whole staging budget: a tensor larger than it streams through.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from loader.hostmem import HostBuffer


class RangeLike(Protocol):
    """What a target needs to know of a range."""

    shard: int
    offset: int
    length: int


@dataclass(slots=True)
class Slot:
    """One staging buffer: a torch view (for device copies; None in a bytes-only ring) and a memoryview
    (for socket reads)."""

    index: int
    tensor: torch.Tensor | None
    view: memoryview


class SlotRing:
    """Free-list of ``count`` slots of ``slot_bytes`` each, in one allocation.

    ``tensors=False``: bytes only (staging to files), so torch is not even imported.

    ``assembly_credits`` (CPU targets): the tensors being assembled are host memory too, so the ring
    and they share one budget of that many ranges. A range copied into a tensor that is not yet
    complete keeps a credit (``release(slot, owe=True)``) until ``repay``; a slot is taken only while
    slots in use plus credits owed stay under the budget, and free slots give their pages back to the
    OS as long as slots holding pages plus credits owed would exceed it. Without it (CUDA targets: the
    tensors are device memory) the slots are the whole budget and are never given back.
    """

    def __init__(self, count: int, slot_bytes: int, *, pinned: bool, tensors: bool = True,
                 assembly_credits: int | None = None) -> None:
        self.slot_bytes = slot_bytes
        self._host: HostBuffer | None = None
        if assembly_credits is not None:
            from loader.hostmem import HostBuffer

            self._host = HostBuffer(count * slot_bytes)
            self._buffer = self._host.bytes_tensor()
            whole = self._host.view
        elif tensors:
            import torch

            self._buffer = torch.empty(count * slot_bytes, dtype=torch.uint8, pin_memory=pinned)
            whole = memoryview(self._buffer.numpy()).cast("B")
        else:
            self._buffer = None
            whole = memoryview(bytearray(count * slot_bytes))
        self._slots = [
            Slot(i, self._buffer[i * slot_bytes:(i + 1) * slot_bytes] if self._buffer is not None else None,
                 whole[i * slot_bytes:(i + 1) * slot_bytes])
            for i in range(count)
        ]
        self._free = list(reversed(self._slots))  # slots that may hold pages, the last one taken first
        self._cold: list[Slot] = []  # free slots whose pages went back to the OS
        self._credits = max(count, assembly_credits or 0)
        self._owed = 0
        self._cond = threading.Condition()
        self._closed = False

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return len(self._slots)

    @property
    def owed(self) -> int:
        """Ranges held in tensors being assembled (``assembly_credits``)."""
        return self._owed

    @property
    def resident_slots(self) -> int:
        """Slots that may hold pages: in use, or free and not given back."""
        return len(self._slots) - len(self._cold)

    def _in_use(self) -> int:
        return len(self._slots) - len(self._free) - len(self._cold)

    def _may_take(self, reserve: int) -> bool:
        return len(self._free) + len(self._cold) > reserve and self._in_use() + self._owed < self._credits - reserve

    def acquire(self, *, block: bool = True, reserve: int = 0) -> Slot | None:
        """Take a free slot, leaving ``reserve`` free ones to callers that reserve none (hedges); None when
        closed, or when ``block`` is False and none is free for this caller."""
        with self._cond:
            while not self._may_take(reserve) and block and not self._closed:
                self._cond.wait()
            if self._closed or not self._may_take(reserve):
                return None
            return self._free.pop() if self._free else self._cold.pop()

    def view(self, slot: Slot, job: RangeLike) -> memoryview:
        """Where ``job``'s bytes land: the start of the slot."""
        return slot.view[: job.length]

    def hedge_view(self, slot: Slot, job: RangeLike) -> memoryview:
        """Where a hedged copy of ``job`` lands: its own slot, which the loser gives back when it stops."""
        return self.view(slot, job)

    def commit_hedge(self, job: RangeLike, data: memoryview, *, loser_stopped: bool = True) -> None:
        """Nothing to do: the winning hedge's slot is handed on as it is (the loser writes only into its own)."""

    def release(self, slot: Slot, *, owe: bool = False) -> None:
        """Give a slot back; ``owe``: its bytes went into a tensor still being assembled (``repay`` when it is)."""
        with self._cond:
            self._free.append(slot)
            self._owed += owe
            self._give_back_pages()
            self._cond.notify()

    def repay(self) -> None:
        """A credit taken by ``release(owe=True)`` is free again: the tensor it went into was handed over."""
        with self._cond:
            self._owed -= 1
            self._cond.notify_all()

    def _give_back_pages(self) -> None:
        while self._host is not None and self._free and self.resident_slots + self._owed > self._credits:
            slot = self._free.pop(0)  # the longest free
            begin = slot.index * self.slot_bytes
            self._host.discard(begin, begin + self.slot_bytes)
            self._cold.append(slot)

    def close(self) -> None:
        """Wake every waiter; later acquires return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class DirectTargets:
    """For host (CPU) targets: ranges land straight in the destination, one buffer per shard.

    There is nothing to stage when the destination is host memory, so the staging copy is
    skipped; a "lease" is a dummy slot (their number bounds the read-ahead), ``view`` points
    into the shard's buffer, and tensors are views of it (as with ``safetensors.load_file``'s
    mmap); a dropped tensor's pages go back to the OS (see ``HostBuffer``).

    Hedging: the hedged copy reads into scratch memory (``hedge_view``). If the primary wins,
    the hedge is aborted and its scratch dropped. If the hedge wins, the primary is aborted (its
    socket shut down) and the hedge's bytes are copied into place once it has stopped. Should it
    not stop in time (a source whose reads cannot be aborted, blocked in a read), the range is
    recorded as *shared with a loser*, and every tensor overlapping it is handed over as a private
    copy (``shared_with_loser``) rather than a view: nothing the loser writes can reach memory a
    consumer holds.
    """

    def __init__(self, buffers: dict[int, tuple[HostBuffer, int]], leases: int) -> None:
        # shard number -> (host buffer, object offset of its first byte)
        import torch

        self._buffers = buffers
        self._lease = Slot(-1, torch.empty(0, dtype=torch.uint8), memoryview(b""))
        self._lock = threading.Lock()
        self._loser_spans: dict[int, list[tuple[int, int]]] = {}  # shard -> object byte spans
        # Leases bound the ranges read but not yet taken by the consumer, as the ring's slots do:
        # without them the reads run ahead of a slow consumer and the whole checkpoint is resident.
        self.capacity = leases
        self._out = 0
        self._cond = threading.Condition()
        self._closed = False

    def buffer(self, shard: int) -> tuple[HostBuffer, int]:
        """Shard ``shard``'s buffer and the object offset of its first byte."""
        return self._buffers[shard]

    def acquire(self, *, block: bool = True, reserve: int = 0) -> Slot | None:
        """Take one of the read-ahead leases, leaving ``reserve`` to callers that reserve none (hedges); None
        when closed, or when ``block`` is False and none is free for this caller."""
        with self._cond:
            while self._out >= self.capacity - reserve and block and not self._closed:
                self._cond.wait()
            if self._closed or self._out >= self.capacity - reserve:
                return None
            self._out += 1
            return self._lease

    def view(self, slot: Slot, job: RangeLike) -> memoryview:
        """The destination bytes of ``job``."""
        buf, base = self._buffers[job.shard]
        buf.reading(job.offset - base + job.length)
        return buf.view[job.offset - base: job.offset - base + job.length]

    def hedge_view(self, slot: Slot, job: RangeLike) -> memoryview:
        """Private scratch for a hedged copy of ``job``."""
        return memoryview(bytearray(job.length))

    def commit_hedge(self, job: RangeLike, data: memoryview, *, loser_stopped: bool = False) -> None:
        """Put a winning hedge's bytes in place; if its primary has not stopped, it may keep writing there,
        so mark the span."""
        self.view(self._lease, job)[:] = data
        if not loser_stopped:
            with self._lock:
                self._loser_spans.setdefault(job.shard, []).append((job.offset, job.offset + job.length))

    def shared_with_loser(self, shard: int, begin: int, end: int) -> bool:
        """Whether object bytes ``[begin, end)`` of ``shard`` may still be written by a losing request."""
        with self._lock:
            return any(lo < end and begin < hi for lo, hi in self._loser_spans.get(shard, ()))

    def release(self, slot: Slot) -> None:
        """Give a lease back (the consumer has taken the range)."""
        with self._cond:
            self._out -= 1
            self._cond.notify()

    def close(self) -> None:
        """Wake every waiter; later acquires return None. Stop faulting in pages ahead of the reads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for buf, _ in self._buffers.values():
            buf.stop_prefault()
