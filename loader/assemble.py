"""Turning fetched ranges into tensors on a device, handed over as soon as each is complete.

CUDA: each slot is copied into the destination tensors with ``non_blocking=True`` on a dedicated
stream, so copies overlap the next reads; the slot returns to the ring when its copy event has
completed, and a tensor is handed over once its last copy has. CPU: the same path with a plain
memcpy in place of the asynchronous copy.
"""

from __future__ import annotations

import ctypes
from collections import deque
from dataclasses import dataclass

import torch

from loader.checkpoint import Checkpoint
from loader.fetch import RangeJob
from loader.format import TensorSpec
from loader.hostmem import HostBuffer
from loader.ring import DirectTargets, Slot, SlotRing

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E8M0": torch.float8_e8m0fnu,
    "I16": torch.int16,
    "U16": torch.uint16,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "F32": torch.float32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F64": torch.float64,
    "C64": torch.complex64,
}

HOST_MAPPING_MIN_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes ``[slot_offset, slot_offset + length)`` of a range belong at ``tensor_offset`` of tensor ``tensor``."""

    tensor: int
    tensor_offset: int
    slot_offset: int
    length: int


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Ranges to fetch, and where each range's bytes go."""

    tensors: tuple[tuple[int, TensorSpec], ...]  # (shard number, spec), global order
    jobs: tuple[RangeJob, ...]
    pieces: tuple[tuple[Piece, ...], ...]  # by job seq

    def most_ranges_per_tensor(self) -> int:
        """The largest number of ranges any one tensor's bytes are spread over."""
        spans: dict[int, int] = {}
        for job_pieces in self.pieces:
            for piece in job_pieces:
                spans[piece.tensor] = spans.get(piece.tensor, 0) + 1
        return max(spans.values(), default=0)


def plan_load(checkpoint: Checkpoint, range_bytes: int, *, whole_objects: frozenset[int] = frozenset()) -> LoadPlan:
    """Cut every shard's data section into ranges of at most ``range_bytes``.

    Shards numbered in ``whole_objects`` are read from byte 0, header included, so that their
    SHA-256 can be computed over the whole object.
    """
    tensors: list[tuple[int, TensorSpec]] = []
    jobs: list[RangeJob] = []
    pieces: list[tuple[Piece, ...]] = []
    for shard_no, shard in enumerate(checkpoint.shards):
        first = len(tensors)
        specs = shard.header.tensors
        tensors.extend((shard_no, t) for t in specs)
        t_index = 0
        start = 0 if shard_no in whole_objects else shard.header.data_start
        end = shard.header.object_size
        for offset in range(start, end, range_bytes):
            stop = min(end, offset + range_bytes)
            job_pieces: list[Piece] = []
            while t_index < len(specs) and specs[t_index].end <= offset:
                t_index += 1
            i = t_index
            while i < len(specs) and specs[i].begin < stop:
                spec = specs[i]
                lo, hi = max(offset, spec.begin), min(stop, spec.end)
                if hi > lo:
                    job_pieces.append(Piece(first + i, lo - spec.begin, lo - offset, hi - lo))
                i += 1
            jobs.append(RangeJob(len(jobs), shard_no, shard.name, offset, stop - offset, shard.info.etag))
            pieces.append(tuple(job_pieces))
    return LoadPlan(tuple(tensors), tuple(jobs), tuple(pieces))


class DeviceAssembler:
    """Consumes ``(job, slot)`` completions and yields finished tensors on ``device``."""

    def __init__(
        self, checkpoint: Checkpoint, plan: LoadPlan, ring: SlotRing | DirectTargets, device: torch.device
    ) -> None:
        self._checkpoint = checkpoint
        self._plan = plan
        self._ring = ring
        self._direct = ring if isinstance(ring, DirectTargets) else None
        self._device = device
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device=device) if self._cuda else None
        self._dest: dict[int, torch.Tensor] = {}
        self._remaining = [spec.nbytes for _, spec in plan.tensors]
        self._pending: deque[tuple[object, list[Slot], list[int]]] = deque()
        # Host targets: range seq -> (tensors not yet handed over, its lease); tensor -> range seqs waiting on it
        self._lease_waits: dict[int, tuple[int, Slot]] = {}
        self._leases_on_tensor: dict[int, list[int]] = {}
        self._let_go: set[int] = set()  # tensors handed over or set aside: their bytes no longer count

    def _destination(self, index: int) -> torch.Tensor:
        dest = self._dest.get(index)
        if dest is None:
            nbytes = self._plan.tensors[index][1].nbytes
            if self._device.type == "cpu" and nbytes >= HOST_MAPPING_MIN_BYTES:
                # Its own mapping, unmapped when the consumer drops it: glibc keeps freed
                # mid-sized blocks in its heap, and RSS would grow with every tensor handed over.
                dest = HostBuffer(nbytes).tensor(0, nbytes)
            else:
                dest = torch.empty(nbytes, dtype=torch.uint8, device=self._device)
            self._dest[index] = dest
        return dest

    def _finish(self, index: int) -> tuple[str, torch.Tensor]:
        shard_no, spec = self._plan.tensors[index]
        if self._direct is not None:
            buffer, base = self._direct.buffer(shard_no)
            begin, end = spec.begin - base, spec.end - base
            if begin % TORCH_DTYPES[spec.dtype].itemsize or self._direct.shared_with_loser(shard_no, spec.begin, spec.end):
                # A misaligned offset cannot be viewed as a wider dtype; bytes a losing hedge
                # request may still write into must not be seen by the consumer.
                raw = buffer.bytes_tensor()[begin:end].clone()
            else:
                raw = buffer.tensor(begin, end)
        else:
            raw = self._dest.pop(index) if spec.nbytes else torch.empty(0, dtype=torch.uint8, device=self._device)
        return spec.name, raw.view(TORCH_DTYPES[spec.dtype]).reshape(spec.shape)

    def empty_tensors(self) -> list[int]:
        """Tensors with no bytes: complete from the start."""
        return [i for i, (_, spec) in enumerate(self._plan.tensors) if spec.nbytes == 0]

    def consume(self, job: RangeJob, slot: Slot, release: bool) -> list[int]:
        """Copy one range into place; returns tensors completed (CPU) — CUDA ones come from ``drain``."""
        done: list[int] = []
        if self._direct is not None:  # bytes are already in place
            pieces = self._plan.pieces[job.seq]
            for piece in pieces:
                self._remaining[piece.tensor] -= piece.length
                if self._remaining[piece.tensor] == 0:
                    done.append(piece.tensor)
            if release:
                self._hold_lease_until_let_go(job.seq, pieces, slot)
            return done
        if self._cuda:
            assert self._stream is not None
            # Allocate on the consumer's stream (outside the copy stream's context) and order the
            # copies after its pending work: a block it freed may still be read by its kernels.
            dests = [self._destination(piece.tensor) for piece in self._plan.pieces[job.seq]]
            self._stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(self._stream):
                for piece, dest in zip(self._plan.pieces[job.seq], dests, strict=True):
                    dest[piece.tensor_offset:piece.tensor_offset + piece.length].copy_(
                        slot.tensor[piece.slot_offset:piece.slot_offset + piece.length], non_blocking=True
                    )
                    self._remaining[piece.tensor] -= piece.length
                    if self._remaining[piece.tensor] == 0:
                        done.append(piece.tensor)
                event = torch.cuda.Event()
                event.record(self._stream)
            self._pending.append((event, [slot] if release else [], done))
            return []
        base = slot.tensor.data_ptr()
        pieces = self._plan.pieces[job.seq]
        for piece in pieces:
            # A plain memmove: torch's parallel copy_ into freshly mapped pages contends on page
            # faults across its threads and ran 4-8x slower here.
            ctypes.memmove(
                self._destination(piece.tensor).data_ptr() + piece.tensor_offset, base + piece.slot_offset, piece.length
            )
            self._remaining[piece.tensor] -= piece.length
            if self._remaining[piece.tensor] == 0:
                done.append(piece.tensor)
        if release:
            self._hold_lease_until_let_go(job.seq, pieces, slot)
        return done

    def _hold_lease_until_let_go(self, seq: int, pieces: tuple[Piece, ...], slot: Slot) -> None:
        # A range's bytes stay resident until every tensor they belong to is handed over, so its
        # read-ahead lease (direct reads) or a credit on the ring (host copies: the slot itself is
        # free again) is held until then: the budget then bounds everything the loader holds,
        # partly assembled and completed tensors not yet handed over included.
        held = {piece.tensor for piece in pieces if piece.tensor not in self._let_go}
        if self._direct is None:
            self._ring.release(slot, owe=bool(held))
        elif not held:
            self._direct.release(slot)
        if held:
            self._lease_waits[seq] = (len(held), slot)
            for tensor in held:
                self._leases_on_tensor.setdefault(tensor, []).append(seq)

    def set_aside(self, index: int) -> None:
        """Tensor ``index`` is complete but kept back (its shard awaits verification): its bytes stop counting
        against the budget, so that the rest of the shard can be read."""
        self._let_go_of(index)

    def _let_go_of(self, index: int) -> None:
        self._let_go.add(index)
        for seq in self._leases_on_tensor.pop(index, ()):
            count, slot = self._lease_waits[seq]
            self._lease_waits[seq] = (count - 1, slot)
            if count == 1:
                self._release_lease(seq)

    def _release_lease(self, seq: int) -> None:
        _, slot = self._lease_waits.pop(seq)
        if self._direct is not None:
            self._direct.release(slot)
        else:
            self._ring.repay()

    def drain(self, *, wait: bool) -> list[int]:
        """Release slots whose copies have finished; ``wait``: block for the oldest one."""
        done: list[int] = []
        while self._pending:
            event, slots, finished = self._pending[0]
            if not event.query():  # type: ignore[attr-defined]
                if not wait:
                    break
                event.synchronize()  # type: ignore[attr-defined]
                wait = False
            self._pending.popleft()
            for slot in slots:
                self._ring.release(slot)
            done.extend(finished)
        return done

    @property
    def assembling_bytes(self) -> int:
        """Bytes copied into tensors that are not complete yet (ring path)."""
        return sum(self._plan.tensors[i][1].nbytes - self._remaining[i] for i in list(self._dest))

    @property
    def has_pending(self) -> bool:
        """Copies still in flight."""
        return bool(self._pending)

    def finish(self, index: int) -> tuple[str, torch.Tensor]:
        """The completed tensor ``index``, viewed with its dtype and shape; its bytes are the consumer's now."""
        self._let_go_of(index)
        return self._finish(index)

    def abort(self) -> None:
        """Drop everything partially assembled."""
        if self._stream is not None:
            self._stream.synchronize()
        self._pending.clear()
        self._dest.clear()
