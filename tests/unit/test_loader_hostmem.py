"""Host destination memory: tensors view their shard's buffer, dropped tensors give their pages back,
faulting-in stays a bounded window ahead of the reads, and read-ahead leases bound the pipeline."""

from __future__ import annotations

import gc
import os
import threading
import time

import torch

from loader.fetch import RangeJob
from loader.hostmem import PAGE, HostBuffer
from loader.ring import DirectTargets

MiB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_tensor_views_the_buffer_and_dropping_it_releases_only_its_whole_pages() -> None:
    buf = HostBuffer(8 * PAGE)
    buf.view[:] = b"\x07" * (8 * PAGE)
    begin, end = PAGE // 2, 5 * PAGE + 10  # whole pages 1..4 lie inside; pages 0 and 5 are shared
    tensor = buf.tensor(begin, end)
    assert tensor.numel() == end - begin and bool((tensor == 7).all())
    tensor[0] = 9
    assert buf.view[begin] == 9  # a view, not a copy
    del tensor
    gc.collect()
    data = bytes(buf.view)
    assert data[PAGE:5 * PAGE] == bytes(4 * PAGE)  # released: anonymous pages read back as zeros
    assert data[begin + 1:PAGE] == b"\x07" * (PAGE - begin - 1) and data[5 * PAGE:] == b"\x07" * (3 * PAGE)


def _wait_for_rss(start: int, at_least: int) -> int:
    deadline = time.monotonic() + 5
    while _rss() - start < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # would it go further?
    return _rss() - start


def test_prefault_stays_one_window_ahead_of_the_reads() -> None:
    start = _rss()
    buf = HostBuffer(256 * MiB, prefault_window=32 * MiB)
    try:
        time.sleep(0.2)
        assert _rss() - start < 8 * MiB  # nothing before the first read starts
        buf.reading(16 * MiB)
        assert 46 * MiB <= _wait_for_rss(start, 46 * MiB) < 64 * MiB
        buf.reading(64 * MiB)
        assert 94 * MiB <= _wait_for_rss(start, 94 * MiB) < 128 * MiB
    finally:
        buf.stop_prefault()


def test_direct_targets_lend_a_bounded_number_of_read_ahead_leases() -> None:
    targets = DirectTargets({0: (HostBuffer(4 * PAGE), 0)}, leases=2)
    first, second = targets.acquire(), targets.acquire()
    assert first is not None and second is not None
    assert targets.acquire(block=False) is None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(targets.acquire()))
    waiter.start()
    time.sleep(0.05)
    assert not got  # blocked until a lease comes back
    targets.release(first)
    waiter.join(2)
    assert got and got[0] is not None
    targets.close()
    assert targets.acquire() is None


def test_a_winning_hedge_marks_its_span_and_puts_its_bytes_in_place() -> None:
    targets = DirectTargets({0: (HostBuffer(4 * PAGE), 100)}, leases=2)
    job = RangeJob(seq=0, shard=0, name="model.safetensors", offset=100 + PAGE, length=PAGE, etag=None)
    lease = targets.acquire()
    assert lease is not None
    scratch = targets.hedge_view(lease, job)
    scratch[:] = b"\x05" * PAGE
    assert bytes(targets.view(lease, job)) == bytes(PAGE)  # the hedge reads into private scratch
    targets.commit_hedge(job, scratch)
    assert bytes(targets.view(lease, job)) == b"\x05" * PAGE
    assert targets.shared_with_loser(0, 100 + PAGE + 10, 100 + PAGE + 20)
    assert not targets.shared_with_loser(0, 100, 100 + PAGE)


def _vm_flags(address: int) -> set[str]:
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_destination_memory_asks_for_huge_pages_unless_told_not_to() -> None:
    with_huge = HostBuffer(8 * MiB)
    without = HostBuffer(8 * MiB, huge_pages=False)
    assert "hg" in _vm_flags(with_huge.bytes_tensor().data_ptr())
    assert "hg" not in _vm_flags(without.bytes_tensor().data_ptr())


def test_recycler_moves_a_dropped_tensors_pages_past_the_reads_within_its_window() -> None:
    from loader.hostmem import PageRecycler

    buf = HostBuffer(16 * PAGE, huge_pages=False)
    buf.view[: 8 * PAGE] = b"\x07" * (8 * PAGE)
    buf.reading(8 * PAGE + 100)  # a read has started on page 8: nothing may land there
    recycler = PageRecycler([buf], window=2 * PAGE)
    tensor = buf.tensor(0, 4 * PAGE)
    del tensor
    gc.collect()
    assert recycler.moved_bytes == 2 * PAGE  # the window's worth; the other two pages went back to the OS
    data = bytes(buf.view[2 * PAGE:])  # pages 0-1 are now a hole: never touched again
    assert data[: 2 * PAGE] == bytes(2 * PAGE)  # released
    assert data[2 * PAGE: 6 * PAGE] == b"\x07" * (4 * PAGE)  # pages 4-7 untouched
    assert data[6 * PAGE: 7 * PAGE] == bytes(PAGE)  # page 8, being read, untouched
    assert data[7 * PAGE: 9 * PAGE] == b"\x07" * (2 * PAGE)  # pages 0-1 moved to 9-10, their old bytes with them
    assert data[9 * PAGE:] == bytes(5 * PAGE)
