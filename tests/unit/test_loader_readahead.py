"""Mapped local files: the kernel is asked to read a bounded window ahead of the consumer."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from loader.config import LoaderConfig
from loader.make_checkpoint import CheckpointSpec, make_checkpoint
from loader.mapped import ADVICE_STEP, Readahead
from loader.stream import LoadReport, load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(mmap, "MADV_WILLNEED"), reason="madvise(MADV_WILLNEED) is Linux-only")


class RecordingMap(mmap.mmap):
    advised: list[tuple[int, int]]

    def madvise(self, option: int, start: int = 0, length: int = 0) -> None:  # type: ignore[override]
        assert option == mmap.MADV_WILLNEED
        self.advised.append((start, length))
        super().madvise(option, start, length)


def recording_map(tmp_path: Path, size: int) -> RecordingMap:
    path = tmp_path / "blob"
    path.write_bytes(b"\x01" * size)
    with path.open("rb") as f:
        mapped = RecordingMap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mapped.advised = []
    return mapped


def test_advice_runs_a_window_ahead_in_page_aligned_steps_and_never_twice(tmp_path: Path) -> None:
    size = 5 * ADVICE_STEP + 12345
    mapped = recording_map(tmp_path, size)
    readahead = Readahead(mapped, window=2 * ADVICE_STEP)

    readahead.reach(100)
    assert mapped.advised == [(0, ADVICE_STEP), (ADVICE_STEP, ADVICE_STEP), (2 * ADVICE_STEP, ADVICE_STEP)]
    readahead.reach(50)  # behind what is advised already: nothing new
    assert len(mapped.advised) == 3
    readahead.reach(size)  # the tail is advised once, up to the end and not past it
    starts = [start for start, _ in mapped.advised]
    assert starts == sorted(set(starts)) and all(start % mmap.PAGESIZE == 0 for start in starts)
    assert sum(length for _, length in mapped.advised) == size
    mapped.close()


def test_a_zero_window_leaves_readahead_to_the_kernel(tmp_path: Path) -> None:
    mapped = recording_map(tmp_path, 3 * ADVICE_STEP)
    Readahead(mapped, window=0).reach(3 * ADVICE_STEP)
    assert mapped.advised == []
    mapped.close()


def test_advice_the_filesystem_refuses_turns_readahead_off_and_the_load_goes_on(tmp_path: Path) -> None:
    mapped = recording_map(tmp_path, 3 * ADVICE_STEP)
    readahead = Readahead(mapped, window=ADVICE_STEP)
    refusals = []

    def refuse(option: int, start: int = 0, length: int = 0) -> None:
        refusals.append(start)
        raise OSError(22, "Invalid argument")

    mapped.madvise = refuse  # type: ignore[method-assign]
    readahead.reach(0)
    readahead.reach(2 * ADVICE_STEP)
    assert refusals == [0]
    mapped.close()


@pytest.mark.parametrize("window", [0, 64 * 1024, 64 * 1024 * 1024])
def test_a_mapped_load_is_the_same_with_any_window(tmp_path: Path, window: int) -> None:
    make_checkpoint(tmp_path, CheckpointSpec(total_bytes=3_000_000, shards=2, hidden=64, sha256_sidecars=True))
    config = LoaderConfig(local_readahead_bytes=window, verify_sha256=True)
    report = LoadReport(location=str(tmp_path))
    got = load_checkpoint(str(tmp_path), config=config, report=report)
    want = load_checkpoint(str(tmp_path), config=LoaderConfig(map_local_files=False, verify_sha256=True))
    assert report.mapped
    assert got.keys() == want.keys()
    assert all(torch.equal(got[name].reshape(-1).view(torch.uint8), want[name].reshape(-1).view(torch.uint8))
               for name in want)
