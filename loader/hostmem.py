"""Host memory for CPU targets: one anonymous mapping per shard; when the consumer drops a tensor
its pages are moved to where the next reads land (``PageRecycler``) or given back to the OS; and
(optionally) pages faulted in ahead of the reads.

Why not ``torch.empty``: tensors handed over are views into their shard's buffer (as with
``safetensors.load_file``'s mmap); with one ``torch.empty`` per shard a dropped tensor's memory
stays resident until every tensor of the shard is gone, so a consumer that copies each weight
elsewhere and drops it would still hold the whole checkpoint. Here each tensor is backed by its
own NumPy view whose finalizer releases the pages that lie wholly inside the tensor.

Destination mappings ask for transparent huge pages (``huge_pages``, on by default): on Linux's
default "madvise" THP mode, first-touch page faults otherwise bound how fast fresh memory fills.

Prefaulting (``MADV_POPULATE_WRITE`` on a helper thread, a bounded window ahead of the reads)
takes the first-touch page faults off the socket-reading threads. It is off by default: on the
2-core benchmark machine, shared with the S3 server, it did not measurably help (bench/loader.py
records it) and it adds its window to the resident overhead.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap
import queue
import threading
import weakref

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)
PAGE = mmap.PAGESIZE
PREFAULT_CHUNK = 16 * 1024 * 1024
HUGE_PAGE = 2 * 1024 * 1024


class HostBuffer:
    """``size`` bytes of anonymous host memory.

    With ``prefault_window`` > 0 a helper thread faults pages in up to that many bytes past the
    furthest byte a read has started on (``reading``): ahead of the readers, but never the whole
    buffer at once, so pages of tensors already dropped are not brought back in.
    """

    def __init__(self, size: int, *, prefault_window: int = 0, huge_pages: bool = True) -> None:
        self.size = size
        # Private: Python's default for anonymous maps is MAP_SHARED (shmem), where MADV_DONTNEED
        # unmaps pages but does not free them.
        self._map = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if huge_pages and size >= HUGE_PAGE:
            _advise_huge_pages(self._map)
        self._array = np.frombuffer(self._map, dtype=np.uint8, count=size)
        self.view = memoryview(self._array).cast("B")
        self.address = self._array.ctypes.data
        self._window = prefault_window
        self._frontier = 0
        self._backed_to = 0  # pages before this offset (and past the frontier) hold recycled pages
        self._seams = [0, size]  # where pages moved in (or out) start and end: the kernel's mapping boundaries
        # Weak: recycling lasts as long as the load that set it up; drops after that release pages.
        self._recycler: weakref.ref[PageRecycler] | None = None
        self._cond = threading.Condition()
        self._stopped = False
        if prefault_window > 0 and size >= PREFAULT_CHUNK:
            threading.Thread(target=self._fault_in, name="warmscale-prefault", daemon=True).start()

    def reading(self, end: int) -> None:
        """A read into bytes up to ``end`` has started."""
        if end > self._frontier:
            with self._cond:
                self._frontier = max(self._frontier, end)
                self._cond.notify()

    def _fault_in(self) -> None:
        done = 0
        while done < self.size:
            with self._cond:
                # Nothing before the first read: a shard read later must not take its window early.
                while not self._stopped and (not self._frontier or done >= self._frontier + self._window):
                    self._cond.wait()
                if self._stopped:
                    return
                limit = min(self.size, self._frontier + self._window)
            length = min(PREFAULT_CHUNK, limit - done)
            try:
                self._map.madvise(MADV_POPULATE_WRITE, done, length)
            except (OSError, ValueError) as exc:  # older kernel: the reads fault the pages in themselves
                log.debug("prefault stopped: %s", exc)
                return
            done += length

    def stop_prefault(self) -> None:
        """Stop faulting pages in (the load is over or failed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def tensor(self, begin: int, end: int) -> torch.Tensor:
        """A uint8 tensor over bytes ``[begin, end)``; when it is freed, its whole pages go back to the OS."""
        part = self._array[begin:end]
        first, last = -(-begin // PAGE) * PAGE, end // PAGE * PAGE
        if last > first:
            weakref.finalize(part, self._dropped, first, last)
        import torch

        return torch.from_numpy(part)

    def _dropped(self, first: int, last: int) -> None:
        # A finalizer: it may run inside any allocation, on any thread, while this thread holds any
        # lock, so it takes none. It either hands the pages to the recycler's queue or gives them back.
        recycler = self._recycler() if self._recycler is not None else None
        if recycler is None:
            _release(self._map, first, last - first)
        else:
            recycler.dropped(self, first, last)

    def _room_ahead(self) -> tuple[int, int]:
        """Where recycled pages may go (past every read started so far), and how many bytes fit. Hold ``_cond``."""
        start = max(-(-self._frontier // PAGE) * PAGE, self._backed_to)
        return start, self.size // PAGE * PAGE - start

    def _recycled_ahead(self) -> int:
        return max(0, self._backed_to - -(-self._frontier // PAGE) * PAGE)

    def _next_seam(self, offset: int) -> int:
        """The first mapping boundary past ``offset``: one move must not cross it."""
        return self._seams[bisect.bisect_right(self._seams, offset)]

    def _add_seams(self, begin: int, end: int) -> None:
        for offset in (begin, end):
            index = bisect.bisect_left(self._seams, offset)
            if self._seams[index] != offset:
                self._seams.insert(index, offset)

    def discard(self, begin: int, end: int) -> None:
        """Give the whole pages inside ``[begin, end)`` back to the OS; they read as zeros after."""
        first, last = -(-begin // PAGE) * PAGE, end // PAGE * PAGE
        if last > first:
            _release(self._map, first, last - first)

    def bytes_tensor(self) -> torch.Tensor:
        """The whole buffer as one uint8 tensor (no page release)."""
        import torch

        return torch.from_numpy(self._array)


class PageRecycler:
    """Moves the pages of tensors the consumer has dropped to where the next reads will land.

    Filling fresh anonymous memory is bound by page faults (on the benchmark VM, ~3x slower than
    writing pages that are already mapped). A consumer that copies each weight into its model and
    drops it frees pages at the rate the loader needs new ones, so instead of giving them back
    (``MADV_DONTNEED``) and faulting new ones in, ``mremap`` moves them, page tables and all, to
    the unread part of a buffer. ``MREMAP_DONTUNMAP`` leaves the dropped tensor's old range mapped
    (empty, reading as zeros), so the shard's mapping never has a hole another mapping could land
    in; without that flag (Linux < 5.7) nothing is moved. Each move stays inside one kernel mapping
    (pages moved in earlier are mappings of their own, and older kernels refuse a move across two
    only after unmapping its target), and a failed move's target is mapped again at once. At most
    ``window`` bytes of moved pages wait ahead of the reads (they count against the memory limit);
    the rest go back to the OS. Only places no read has started on are ever replaced:
    ``HostBuffer.reading`` and the move take the same lock.

    Drops arrive from finalizers (``dropped``) and only go on a queue; the thread that owns the
    load moves them (``drain``), and ``close`` gives back whatever is left, then and afterwards.
    """

    def __init__(self, buffers: list[HostBuffer], window: int) -> None:
        self._buffers = buffers
        self._window = window
        self._lock = threading.Lock()
        self._pending: queue.SimpleQueue[tuple[HostBuffer, int, int]] = queue.SimpleQueue()  # reentrant put
        self._closed = False
        self._working = _mremap is not None
        self.moved_bytes = 0
        for buf in buffers:
            buf._recycler = weakref.ref(self)

    def dropped(self, source: HostBuffer, first: int, last: int) -> None:
        """Pages ``[first, last)`` of ``source`` are free. Lock-free: called from finalizers."""
        self._pending.put((source, first, last))
        if self._closed:  # put after close's last sweep: nobody else will give them back
            self._release_pending()

    def drain(self) -> None:
        """Move (or give back) the pages dropped so far. Call from the thread that runs the load."""
        while True:
            try:
                source, first, last = self._pending.get_nowait()
            except queue.Empty:
                return
            self._recycle(source, first, last)

    def close(self) -> None:
        """Stop moving pages: what is queued, and every later drop, goes back to the OS."""
        self._closed = True
        for buf in self._buffers:
            buf._recycler = None
        self._release_pending()

    def _release_pending(self) -> None:
        while True:
            try:
                source, first, last = self._pending.get_nowait()
            except queue.Empty:
                return
            _release(source._map, first, last - first)

    def _recycle(self, source: HostBuffer, first: int, last: int) -> None:
        """Move pages ``[first, last)`` of ``source`` ahead of the reads, within the window; release the rest."""
        with self._lock:
            position = first
            while self._working and position < last:
                moved = self._move_piece(source, position, min(last, source._next_seam(position)))
                if not moved:
                    break
                position += moved
            if position < last:
                _release(source._map, position, last - position)

    def _move_piece(self, source: HostBuffer, begin: int, end: int) -> int:
        """Move what fits of ``[begin, end)`` (one kernel mapping) to the first buffer with room; bytes moved."""
        budget = self._window - sum(b._recycled_ahead() for b in self._buffers)
        for target in self._buffers:
            with target._cond:
                start, room = target._room_ahead()
                length = min(end - begin, room, budget) // PAGE * PAGE
                if length <= 0:
                    continue
                if not _move_pages(source.address + begin, target.address + start, length):
                    self._working = False
                    return 0
                target._backed_to = start + length
                target._add_seams(start, start + length)
            source._add_seams(begin, begin + length)
            self.moved_bytes += length
            return length
        return 0


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mremap.restype = libc.mmap.restype = ctypes.c_void_p
    except (OSError, AttributeError):  # not Linux
        return None
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


_libc = _load_libc()
_mremap = _libc.mremap if _libc is not None else None
_MREMAP_MAYMOVE, _MREMAP_FIXED, _MREMAP_DONTUNMAP = 1, 2, 4
_MAP_FIXED_NOREPLACE = 0x100000  # Linux >= 4.17


def _move_pages(source: int, target: int, length: int) -> bool:
    """Move the pages under ``[source, source + length)`` to ``target``, leaving the source range mapped.

    With ``MREMAP_FIXED`` the kernel unmaps the target range first and only then checks the source
    (before Linux 6.17 a source spanning two mappings fails with EFAULT at that point), so a failed
    move can leave a hole where the next reads land: it is mapped again at once.
    """
    flags = _MREMAP_MAYMOVE | _MREMAP_FIXED | _MREMAP_DONTUNMAP
    moved = _mremap(source, length, length, flags, target)  # type: ignore[operator]
    if moved == target:
        return True
    errno = ctypes.get_errno()
    # EINVAL before Linux 5.7 (no MREMAP_DONTUNMAP): nothing was moved and both ranges are intact.
    refilled = _refill(target, length)
    log.debug("mremap failed (errno %d, target %s): dropped pages go back to the OS instead",
              errno, "mapped again" if refilled else "intact")
    return False


def _refill(address: int, length: int) -> bool:
    """Map fresh memory at ``[address, address + length)`` if it is a hole; False: something is there."""
    prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE
    placed = _libc.mmap(address, length, prot, flags, -1, 0)  # type: ignore[union-attr]
    if placed == address:
        return True
    if placed not in (None, ctypes.c_void_p(-1).value):  # a kernel without NOREPLACE took it as a hint
        _libc.munmap(placed, length)  # type: ignore[union-attr]
    return False


def _advise_huge_pages(mapping: mmap.mmap) -> None:
    """Ask for transparent huge pages where the kernel only gives them on request ("madvise" mode).

    Filling fresh memory is bound by page faults, not by copying: one fault per 2 MiB instead of
    per 4 KiB made first-touch writes ~3x faster on the benchmark VM (bench/loader.py). Releasing
    part of a huge page later splits it, so dropped tensors still give their pages back.
    """
    try:
        mapping.madvise(MADV_HUGEPAGE)
    except (OSError, ValueError) as exc:  # no THP in this kernel: 4 KiB pages it is
        log.debug("no transparent huge pages: %s", exc)


def _release(mapping: mmap.mmap, offset: int, length: int) -> None:
    try:
        mapping.madvise(mmap.MADV_DONTNEED, offset, length)
    except (OSError, ValueError):  # already unmapped
        pass
