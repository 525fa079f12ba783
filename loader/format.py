"""Strict safetensors header parsing.

Format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON mapping
tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
data section that follows the header) plus an optional ``"__metadata__"`` map of strings.
Like the reference parser we reject headers over 100 MB, unknown dtypes, byte spans that do not
match shape x dtype size, and data sections with holes or overlaps.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

from loader.errors import CheckpointFormatError

MAX_HEADER_BYTES = 100_000_000
HEADER_PREFIX_BYTES = 8

#: Bytes per element of every dtype the safetensors format defines (sub-byte types excluded).
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of a safetensors object; ``begin``/``end`` are absolute byte offsets in the object."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """The parsed, validated header of one safetensors object."""

    object_name: str
    header_bytes: int
    tensors: tuple[TensorSpec, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        """Absolute offset of the data section."""
        return HEADER_PREFIX_BYTES + self.header_bytes

    @property
    def data_bytes(self) -> int:
        """Length of the data section."""
        return self.tensors[-1].end - self.data_start if self.tensors else 0

    @property
    def object_size(self) -> int:
        """The exact size the object must have."""
        return self.data_start + self.data_bytes


def parse_header_length(object_name: str, prefix: bytes, object_size: int) -> int:
    """Decode and bound-check the 8-byte header length."""
    if object_size < HEADER_PREFIX_BYTES or len(prefix) < HEADER_PREFIX_BYTES:
        raise CheckpointFormatError(
            object_name, f"object is {object_size} bytes, too short for the 8-byte header length"
        )
    (length,) = struct.unpack("<Q", prefix[:HEADER_PREFIX_BYTES])
    if length > MAX_HEADER_BYTES:
        raise CheckpointFormatError(object_name, f"header length {length} exceeds the 100 MB limit")
    if HEADER_PREFIX_BYTES + length > object_size:
        raise CheckpointFormatError(
            object_name,
            f"header length {length} runs past the end of the {object_size}-byte object (truncated?)",
        )
    return length


def parse_header(object_name: str, header_json: bytes, object_size: int) -> SafetensorsHeader:
    """Parse and validate the JSON header of ``object_name``, whose total size is ``object_size``."""
    try:
        raw = json.loads(header_json.decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(object_name, f"header is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointFormatError(object_name, f"header must be a JSON object, got {type(raw).__name__}")
    metadata = _parse_metadata(object_name, raw.pop("__metadata__", None))
    data_start = HEADER_PREFIX_BYTES + len(header_json)
    data_len = object_size - data_start
    tensors = sorted(
        (_parse_tensor(object_name, name, entry, data_start, data_len) for name, entry in raw.items()),
        key=lambda t: (t.begin, t.end),
    )
    _check_layout(object_name, tensors, data_start, data_len)
    return SafetensorsHeader(object_name, len(header_json), tuple(tensors), metadata)


def _parse_metadata(object_name: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CheckpointFormatError(object_name, "__metadata__ must map strings to strings")
    return dict(value)


def _parse_tensor(object_name: str, name: str, entry: object, data_start: int, data_len: int) -> TensorSpec:
    if not isinstance(entry, dict):
        raise CheckpointFormatError(object_name, "entry must be a JSON object", name)
    dtype = entry.get("dtype")
    if dtype not in DTYPE_SIZES:
        raise CheckpointFormatError(object_name, f"unknown dtype {dtype!r}", name)
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointFormatError(object_name, f"shape must be a list of non-negative ints, got {shape!r}", name)
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
    ):
        raise CheckpointFormatError(object_name, f"data_offsets must be [begin, end], got {offsets!r}", name)
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise CheckpointFormatError(
            object_name, f"data_offsets {offsets} out of bounds of the {data_len}-byte data section", name
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise CheckpointFormatError(
            object_name,
            f"byte span {end - begin} does not match shape {shape} x {dtype} ({expected} bytes)",
            name,
        )
    return TensorSpec(name, dtype, tuple(shape), data_start + begin, data_start + end)


def _check_layout(object_name: str, tensors: list[TensorSpec], data_start: int, data_len: int) -> None:
    cursor = data_start
    previous: TensorSpec | None = None
    for spec in tensors:
        if spec.begin < cursor:
            raise CheckpointFormatError(
                object_name, f"data overlaps tensor {previous.name!r} (starts at {spec.begin - data_start}, "
                f"previous ends at {cursor - data_start})", spec.name,
            )
        if spec.begin > cursor:
            raise CheckpointFormatError(
                object_name, f"hole in the data section before this tensor ({cursor - data_start}..{spec.begin - data_start})",
                spec.name,
            )
        cursor = spec.end
        previous = spec
    if cursor != data_start + data_len:
        raise CheckpointFormatError(
            object_name,
            f"data section is {data_len} bytes but the tensors cover {cursor - data_start} (truncated or trailing bytes)",
        )
