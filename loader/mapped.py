"""Local files onto the CPU: map them instead of reading them.

When both the source and the target are host memory, copying is pure cost: the bytes already sit
in the page cache. Like ``safetensors.load_file`` we map each file copy-on-write (private
writes never reach the file) and hand out views; the kernel reads ahead on first touch when the
file is cold. The kernel's own readahead is one stream, so a window ahead of the tensor being
handed out is advised (``MADV_WILLNEED``) to keep several reads in flight; the advice is a syscall
on the consumer's thread, not a thread of its own. The size and version tag are checked against the
header read, and SHA-256 (when asked for) is computed over the mapping before any tensor of the
file is handed over.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from loader.assemble import TORCH_DTYPES
from loader.checkpoint import Checkpoint
from loader.errors import IntegrityError, ObjectChangedError
from loader.sources.local import local_etag


ADVICE_STEP = 8 * 1024 * 1024  # bytes per MADV_WILLNEED call: the kernel queues each call's reads at once


class Readahead:
    """Keeps the kernel reading a mapping up to ``window`` bytes past where the consumer has got to."""

    def __init__(self, mapped: mmap.mmap, window: int) -> None:
        self._mapped = mapped
        self._window = window if hasattr(mmap, "MADV_WILLNEED") else 0
        self._advised = 0

    def reach(self, end: int) -> None:
        """The consumer is about to read up to ``end``: advise through ``end + window``."""
        if not self._window:
            return
        target = min(len(self._mapped), end + self._window)
        while self._advised < target:
            length = min(ADVICE_STEP, len(self._mapped) - self._advised)
            try:
                self._mapped.madvise(mmap.MADV_WILLNEED, self._advised, length)
            except OSError:  # advice only: a filesystem that refuses it is read on first touch, as before
                self._window = 0
                return
            self._advised += length


def _sha256(mapped: mmap.mmap, readahead: Readahead) -> str:
    digest = hashlib.sha256()
    view = memoryview(mapped)
    try:
        for start in range(0, len(mapped), ADVICE_STEP):
            end = min(start + ADVICE_STEP, len(mapped))
            readahead.reach(end)
            digest.update(view[start:end])
    finally:
        view.release()
    return digest.hexdigest()


def stream_mapped(
    checkpoint: Checkpoint, root: Path, verify_sha256: bool, readahead_bytes: int = 0
) -> Iterator[tuple[int, str, torch.Tensor]]:
    """Yield ``(nbytes, name, tensor)`` for every tensor of a local checkpoint, as views of mappings."""
    for shard in checkpoint.shards:
        path = root / shard.name
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if local_etag(st) != shard.info.etag or st.st_size != shard.info.size:
                raise ObjectChangedError(str(path), "file changed since its header was read")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if st.st_size else None
        if mapped is None:
            continue
        readahead = Readahead(mapped, readahead_bytes)
        if verify_sha256 and shard.sha256:
            digest = _sha256(mapped, readahead)
            if digest != shard.sha256:
                raise IntegrityError(str(path), f"SHA-256 {digest} does not match the expected {shard.sha256}")
        buffer = torch.frombuffer(mapped, dtype=torch.uint8)
        for spec in shard.header.tensors:
            readahead.reach(spec.end)
            raw = buffer[spec.begin:spec.end]
            if spec.begin % TORCH_DTYPES[spec.dtype].itemsize:
                raw = raw.clone()  # a misaligned offset cannot be viewed as a wider dtype
            yield spec.nbytes, spec.name, raw.view(TORCH_DTYPES[spec.dtype]).reshape(spec.shape)
