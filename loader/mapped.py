"""Local files onto the CPU: map them instead of reading them.

When both the source and the target are host memory, copying is pure cost: the bytes already sit
in the page cache. Like ``safetensors.load_file`` we map each file copy-on-write (private
writes never reach the file) and hand out views; the kernel reads ahead on first touch when the
file is cold. The size and version tag are checked against the header read, and SHA-256 (when
asked for) is computed over the mapping before any tensor of the file is handed over.
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


def stream_mapped(checkpoint: Checkpoint, root: Path, verify_sha256: bool) -> Iterator[tuple[int, str, torch.Tensor]]:
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
        if verify_sha256 and shard.sha256:
            digest = hashlib.sha256(mapped).hexdigest()
            if digest != shard.sha256:
                raise IntegrityError(str(path), f"SHA-256 {digest} does not match the expected {shard.sha256}")
        buffer = torch.frombuffer(mapped, dtype=torch.uint8)
        for spec in shard.header.tensors:
            raw = buffer[spec.begin:spec.end]
            if spec.begin % TORCH_DTYPES[spec.dtype].itemsize:
                raw = raw.clone()  # a misaligned offset cannot be viewed as a wider dtype
            yield spec.nbytes, spec.name, raw.view(TORCH_DTYPES[spec.dtype]).reshape(spec.shape)
