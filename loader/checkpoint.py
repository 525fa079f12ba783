"""Finding a checkpoint's shards and reading their headers.

A location names a directory/prefix (we look for ``model.safetensors.index.json``, then
``model.safetensors``, then any ``*.safetensors`` in it), a single ``.safetensors`` object, or an
index. Each header costs one ranged read that also returns the object's size and ETag; a second
read happens only when the header is longer than the first read (vLLM's and Run:ai's loaders
open/HEAD each file first and read the header separately).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loader.errors import CheckpointFormatError, IntegrityError, ObjectNotFoundError
from loader.format import HEADER_PREFIX_BYTES, SafetensorsHeader, parse_header, parse_header_length
from loader.sources.base import ObjectInfo, ObjectSource

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
HEADER_PROBE_BYTES = 256 * 1024
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class Shard:
    """One safetensors object of a checkpoint, with its validated header."""

    name: str
    uri: str
    info: ObjectInfo
    header: SafetensorsHeader
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every shard of a checkpoint, in load order."""

    source: ObjectSource
    shards: tuple[Shard, ...]
    index_name: str | None = None

    @property
    def total_bytes(self) -> int:
        """Sum of the shards' object sizes."""
        return sum(s.info.size for s in self.shards)

    @property
    def tensor_bytes(self) -> int:
        """Sum of the shards' data sections."""
        return sum(s.header.data_bytes for s in self.shards)


def read_header(source: ObjectSource, name: str, probe_bytes: int = HEADER_PROBE_BYTES) -> tuple[SafetensorsHeader, ObjectInfo]:
    """Read and validate the header of ``name`` (one ranged read, two if the header is long)."""
    uri = source.uri(name)
    head, info = source.head(name, probe_bytes)
    length = parse_header_length(uri, head, info.size)
    end = HEADER_PREFIX_BYTES + length
    if end <= len(head):
        header_json = head[HEADER_PREFIX_BYTES:end]
    else:
        rest = bytearray(end - len(head))
        source.read_into(name, len(head), memoryview(rest), info.etag)
        header_json = head[HEADER_PREFIX_BYTES:] + bytes(rest)
    header = parse_header(uri, header_json, info.size)
    if header.object_size != info.size:
        raise IntegrityError(uri, f"object is {info.size} bytes, its header describes {header.object_size}")
    return header, info


def _read_json(source: ObjectSource, name: str) -> dict:
    data, info = source.head(name, 64 * 1024 * 1024)
    if len(data) != info.size:
        raise CheckpointFormatError(source.uri(name), f"index is {info.size} bytes, larger than 64 MiB")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(source.uri(name), f"index is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointFormatError(source.uri(name), "index must be a JSON object")
    return value


def _exists(source: ObjectSource, name: str) -> bool:
    try:
        source.stat(name)
    except ObjectNotFoundError:
        return False
    return True


def _index_shards(source: ObjectSource, index_name: str, index: dict) -> tuple[list[str], dict[str, str], dict[str, str]]:
    uri = source.uri(index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointFormatError(uri, "weight_map must be a non-empty map of tensor name to shard file")
    digests = index.get("sha256", {})
    if not isinstance(digests, dict):
        raise CheckpointFormatError(uri, "sha256 must map shard file to hex digest")
    prefix = index_name.rpartition("/")[0]
    rel = (lambda s: f"{prefix}/{s}") if prefix else (lambda s: s)
    shards = sorted(set(weight_map.values()))
    return [rel(s) for s in shards], {k: rel(v) for k, v in weight_map.items()}, {rel(k): v for k, v in digests.items()}


def _sidecar_digest(source: ObjectSource, name: str) -> str | None:
    try:
        data, _ = source.head(f"{name}.sha256", 4096)
    except ObjectNotFoundError:
        return None
    digest = data.decode("ascii", "replace").split()[0] if data.strip() else ""
    if not _SHA256.match(digest):
        raise CheckpointFormatError(source.uri(f"{name}.sha256"), f"not a SHA-256 hex digest: {digest[:80]!r}")
    return digest.lower()


def resolve_checkpoint(
    source: ObjectSource, name: str | None = None, *, verify_sha256: bool = False, workers: int = 8
) -> Checkpoint:
    """Find and validate every shard of the checkpoint at ``source`` (``name``: a file in it, if given)."""
    index_name: str | None = None
    weight_map: dict[str, str] = {}
    digests: dict[str, str] = {}
    if name is not None and name.endswith(".json"):
        index_name = name
    elif name is None and _exists(source, INDEX_NAME):
        index_name = INDEX_NAME
    if index_name is not None:
        shard_names, weight_map, digests = _index_shards(source, index_name, _read_json(source, index_name))
    elif name is not None:
        shard_names = [name]
    elif _exists(source, SINGLE_NAME):
        shard_names = [SINGLE_NAME]
    else:
        shard_names = [n for n in source.list() if n.endswith(".safetensors") and "/" not in n]
        if not shard_names:
            raise ObjectNotFoundError(source.root, "no model.safetensors.index.json or *.safetensors found")

    def load_one(shard_name: str) -> Shard:
        header, info = read_header(source, shard_name)
        digest = digests.get(shard_name)
        if verify_sha256 and digest is None:
            digest = _sidecar_digest(source, shard_name)
        return Shard(shard_name, source.uri(shard_name), info, header, digest.lower() if digest else None)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(shard_names)))) as pool:
        shards = list(pool.map(load_one, shard_names))

    if weight_map:
        present = {s.name: {t.name for t in s.header.tensors} for s in shards}
        for tensor, shard_name in weight_map.items():
            if tensor not in present[shard_name]:
                raise CheckpointFormatError(source.uri(shard_name), "named by the index but absent from this shard", tensor)
    seen: dict[str, str] = {}
    for shard in shards:
        for t in shard.header.tensors:
            if t.name in seen:
                raise CheckpointFormatError(shard.uri, f"tensor also present in {seen[t.name]}", t.name)
            seen[t.name] = shard.uri
    return Checkpoint(source, tuple(shards), index_name)
