"""Host destination memory: tensors view their shard's buffer, dropped tensors give their pages back,
faulting-in stays a bounded window ahead of the reads, and read-ahead leases bound the pipeline."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
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
    recycler.drain()
    assert recycler.moved_bytes == 2 * PAGE  # the window's worth; the other two pages went back to the OS
    data = bytes(buf.view[2 * PAGE:])  # pages 0-1 are now a hole: never touched again
    assert data[: 2 * PAGE] == bytes(2 * PAGE)  # released
    assert data[2 * PAGE: 6 * PAGE] == b"\x07" * (4 * PAGE)  # pages 4-7 untouched
    assert data[6 * PAGE: 7 * PAGE] == bytes(PAGE)  # page 8, being read, untouched
    assert data[7 * PAGE: 9 * PAGE] == b"\x07" * (2 * PAGE)  # pages 0-1 moved to 9-10, their old bytes with them
    assert data[9 * PAGE:] == bytes(5 * PAGE)


def _mapped(lo: int, hi: int) -> bool:
    """Whether every byte of ``[lo, hi)`` lies in some mapping of this process."""
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((a, b))
    position = lo
    for a, b in sorted(spans):
        if a <= position < b:
            position = b
    return position >= hi


def test_moving_pages_leaves_no_hole_in_the_source_mapping() -> None:
    from loader.hostmem import PageRecycler

    source, target = HostBuffer(16 * PAGE, huge_pages=False), HostBuffer(16 * PAGE, huge_pages=False)
    source.view[:] = b"\x03" * (16 * PAGE)
    recycler = PageRecycler([source, target], window=8 * PAGE)
    source.reading(16 * PAGE)  # nothing may land in the source: all of it is being read
    tensor = source.tensor(0, 8 * PAGE)
    del tensor
    gc.collect()
    recycler.drain()
    assert recycler.moved_bytes == 8 * PAGE
    assert _mapped(source.address, source.address + 16 * PAGE)
    assert bytes(source.view[: 8 * PAGE]) == bytes(8 * PAGE)  # still mapped, reads as fresh memory
    assert bytes(target.view[: 8 * PAGE]) == b"\x03" * (8 * PAGE)  # the pages themselves moved


# A mapping placed where a dropped tensor's pages were must survive the shard's buffer being freed.
_HOLE_CHILD = textwrap.dedent("""
    import ctypes, gc, json, mmap, weakref
    from loader.hostmem import PAGE, HostBuffer, PageRecycler

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    source, target = HostBuffer(64 * PAGE, huge_pages=False), HostBuffer(64 * PAGE, huge_pages=False)
    source.view[:] = b"\\x01" * (64 * PAGE)
    recycler = PageRecycler([target], window=32 * PAGE)
    source._recycler = weakref.ref(recycler)
    tensor = source.tensor(0, 16 * PAGE)
    old_range = source.address
    del tensor
    gc.collect()
    getattr(recycler, "drain", lambda: None)()
    moved = recycler.moved_bytes
    # An unrelated mapping asks for the dropped tensor's old address (a hint, not MAP_FIXED).
    other = libc.mmap(old_range, 16 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    data = (ctypes.c_char * (16 * PAGE)).from_address(other)
    data[0] = b"x"
    del source, recycler, target
    gc.collect()
    data[1] = b"y"  # SIGSEGV if freeing the source buffer unmapped it
    print(json.dumps({"moved": moved, "landed_in_old_range": other == old_range, "data": (data[0] + data[1]).decode()}))
""")


def test_freeing_a_buffer_whose_pages_were_moved_leaves_other_mappings_alone() -> None:
    proc = subprocess.run([sys.executable, "-c", _HOLE_CHILD], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["moved"] == 16 * PAGE and result["data"] == "xy"
    assert not result["landed_in_old_range"]


def test_a_drop_while_the_loader_holds_its_locks_does_not_deadlock() -> None:
    from loader.hostmem import PageRecycler

    buf = HostBuffer(32 * PAGE, huge_pages=False)
    recycler = PageRecycler([buf], window=8 * PAGE)
    buf.reading(16 * PAGE)
    tensor = buf.tensor(0, 8 * PAGE)
    done = threading.Event()

    def drop_inside_the_locks() -> None:
        nonlocal tensor
        # The garbage collector can run a finalizer at any allocation, on a thread that holds these.
        with recycler._lock, buf._cond:
            del tensor
            gc.collect()
        done.set()

    threading.Thread(target=drop_inside_the_locks, daemon=True).start()
    assert done.wait(10), "a finalizer blocked on a lock its own thread held"
    recycler.drain()
    assert recycler.moved_bytes == 8 * PAGE


def test_drops_after_close_go_back_to_the_os() -> None:
    from loader.hostmem import PageRecycler

    buf = HostBuffer(32 * PAGE, huge_pages=False)
    buf.view[:] = b"\x09" * (32 * PAGE)
    recycler = PageRecycler([buf], window=8 * PAGE)
    queued, late = buf.tensor(0, 4 * PAGE), buf.tensor(4 * PAGE, 8 * PAGE)
    del queued
    gc.collect()
    recycler.close()  # the queued drop is given back, not moved
    del late
    gc.collect()
    assert recycler.moved_bytes == 0
    assert bytes(buf.view[: 8 * PAGE]) == bytes(8 * PAGE)
    assert bytes(buf.view[8 * PAGE:]) == b"\x09" * (24 * PAGE)


# Kernels before 6.17 unmap an MREMAP_FIXED target first and only then refuse a source that spans
# two mappings (EFAULT): the child emulates that on top of the real mremap.
_OLD_KERNEL_CHILD = textwrap.dedent("""
    import ctypes, errno, gc, json, mmap, sys
    import loader.hostmem as hostmem
    from loader.hostmem import PAGE, HostBuffer, PageRecycler

    real = hostmem._mremap
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    def mappings_under(lo, hi):
        count = 0
        with open("/proc/self/maps") as f:
            for line in f:
                a, b = (int(x, 16) for x in line.split()[0].split("-"))
                count += a < hi and lo < b
        return count

    def old_kernel_mremap(source, old_len, new_len, flags, target):
        if sys.argv[1] == "always-fail" or mappings_under(source, source + old_len) > 1:
            libc.munmap(target, new_len)
            ctypes.set_errno(errno.EFAULT)
            return ctypes.c_void_p(-1).value
        return real(source, old_len, new_len, flags, target)

    hostmem._mremap = old_kernel_mremap
    buf = HostBuffer(64 * PAGE, huge_pages=False)
    recycler = PageRecycler([buf], window=32 * PAGE)
    buf.reading(8 * PAGE)
    first = buf.tensor(0, 4 * PAGE)
    first.fill_(1)
    del first
    gc.collect()
    getattr(recycler, "drain", lambda: None)()  # pages 0-3 move to 8-11: a mapping of their own
    buf.reading(16 * PAGE)
    second = buf.tensor(8 * PAGE, 16 * PAGE)  # half moved pages, half the buffer's own
    second.fill_(2)
    del second
    gc.collect()
    getattr(recycler, "drain", lambda: None)()
    buf.view[16 * PAGE:] = b"\\x05" * (48 * PAGE)  # the reads that land past the frontier
    print(json.dumps({"moved": recycler.moved_bytes, "tail": bytes(buf.view[16 * PAGE:]) == b"\\x05" * (48 * PAGE)}))
""")


def _run_old_kernel_child(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _OLD_KERNEL_CHILD, mode], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.splitlines()[-1])


def test_no_move_spans_two_mappings() -> None:
    result = _run_old_kernel_child("spanning-fails")
    assert result["moved"] == 12 * PAGE  # both drops moved whole: the second in two pieces
    assert result["tail"]


def test_a_failed_move_leaves_no_hole_where_the_reads_land() -> None:
    result = _run_old_kernel_child("always-fail")
    assert result["moved"] == 0
    assert result["tail"]  # SIGSEGV in the child if the target range had stayed unmapped
