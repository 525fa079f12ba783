"""On a CPU target the ring and the tensors being assembled share one memory budget: a range copied
into a tensor that is not complete keeps a credit until the tensor is handed over, slots are taken
only within the budget, and free slots give their pages back while credits are owed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import loader.stream
from loader.assemble import DeviceAssembler
from loader.config import LoaderConfig
from loader.ring import SlotRing
from loader.stream import stream_checkpoint

MiB = 1 << 20
SLOT = 64 * 1024


def _filled(ring: SlotRing, count: int) -> list:
    slots = [ring.acquire(block=False) for _ in range(count)]
    for slot in slots:
        slot.view[:] = b"\x07" * SLOT
    return slots


def test_credits_owed_bound_the_slots_taken_and_repaying_frees_them() -> None:
    ring = SlotRing(4, SLOT, pinned=False, assembly_credits=4)
    slots = _filled(ring, 4)
    assert ring.acquire(block=False) is None  # every slot out
    for slot in slots[:3]:
        ring.release(slot, owe=True)  # their bytes sit in tensors not yet complete
    ring.release(slots[3])
    assert ring.owed == 3
    assert ring.acquire(block=False) is not None  # 0 in use + 3 owed < 4
    assert ring.acquire(block=False) is None  # 1 in use + 3 owed: the budget is spent although slots are free
    ring.repay()
    assert ring.acquire(block=False) is not None


def test_free_slots_give_their_pages_back_while_credits_are_owed() -> None:
    ring = SlotRing(4, SLOT, pinned=False, assembly_credits=4)
    slots = _filled(ring, 4)
    for slot in slots[:3]:
        ring.release(slot, owe=True)
    assert ring.resident_slots + ring.owed <= 4
    assert ring.resident_slots == 1
    given_back = [s for s in slots[:3] if not any(s.view)]
    assert len(given_back) == 3  # their pages went back to the OS: they read as zeros now


def test_a_ring_without_credits_keeps_its_pages() -> None:
    ring = SlotRing(4, SLOT, pinned=False)
    slots = _filled(ring, 4)
    for slot in slots:
        ring.release(slot)
    assert ring.resident_slots == 4 and all(all(b == 7 for b in s.view) for s in slots)


@pytest.fixture(scope="module")
def big_tensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 tensors of 8 MiB each (192 MiB): six times the memory limit used below."""
    path = tmp_path_factory.mktemp("ring-budget") / "model.safetensors"
    save_file({f"layer.{i}.weight": torch.full((2 * MiB,), float(i)) for i in range(24)}, str(path))
    return path


def _recording(monkeypatch: pytest.MonkeyPatch, name: str, cls: type) -> list:
    made: list = []

    class Recorded(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loader.stream, name, Recorded)
    return made


def test_a_ring_load_keeps_the_ring_and_the_tensors_being_assembled_within_the_limit(
        big_tensors: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rings, assemblers = _recording(monkeypatch, "SlotRing", SlotRing), _recording(monkeypatch, "DeviceAssembler",
                                                                                   DeviceAssembler)
    limit = 32 * MiB
    config = LoaderConfig(memory_limit_bytes=limit, concurrency=16, range_bytes=MiB, direct_host_reads=False,
                          map_local_files=False)
    loaded, most_owed = 0, 0
    for name, tensor in stream_checkpoint(str(big_tensors), "cpu", config):
        ring, assembling = rings[0], assemblers[0].assembling_bytes
        # every byte in a tensor being assembled is owed to the ring, and slots holding pages plus the
        # credits owed stay within the limit (the largest tensor, 8 ranges, fits in it)
        assert assembling <= ring.owed * MiB, (assembling, ring.owed)
        assert (ring.resident_slots + ring.owed) * MiB <= limit, (ring.resident_slots, ring.owed)
        most_owed = max(most_owed, ring.owed)
        assert tensor[0].item() == float(name.split(".")[1]) and tensor[-1].item() == tensor[0].item()
        loaded += 1
    assert loaded == 24 and most_owed > 0
