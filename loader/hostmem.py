"""Host memory for CPU targets: one anonymous mapping per shard, each tensor's pages given back
to the OS as soon as the consumer drops the tensor, and (optionally) pages faulted in ahead of
the reads.

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

import logging
import mmap
import threading
import weakref

import numpy as np
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
        self._window = prefault_window
        self._frontier = 0
        self._cond = threading.Condition()
        self._stopped = False
        if prefault_window > 0 and size >= PREFAULT_CHUNK:
            threading.Thread(target=self._fault_in, name="warmscale-prefault", daemon=True).start()

    def reading(self, end: int) -> None:
        """A read into bytes up to ``end`` has started."""
        if self._window and end > self._frontier:
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
            weakref.finalize(part, _release, self._map, first, last - first)
        return torch.from_numpy(part)

    def bytes_tensor(self) -> torch.Tensor:
        """The whole buffer as one uint8 tensor (no page release)."""
        return torch.from_numpy(self._array)


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
