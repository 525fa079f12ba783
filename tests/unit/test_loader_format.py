"""Strict safetensors header validation: every bad input names the object and the tensor."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from loader.checkpoint import read_header, resolve_checkpoint
from loader.errors import CheckpointFormatError, IntegrityError, ObjectNotFoundError
from loader.format import MAX_HEADER_BYTES, parse_header, parse_header_length
from loader.sources import LocalSource


def write_raw(path: Path, header: object, data: bytes, *, header_bytes: bytes | None = None) -> Path:
    blob = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_parses_a_real_file_with_exact_offsets(tmp_path: Path) -> None:
    tensors = {"b": torch.zeros(3, 5, dtype=torch.bfloat16), "a": torch.arange(7, dtype=torch.int64)}
    save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    header, info = read_header(LocalSource(tmp_path), "m.safetensors")
    assert info.size == (tmp_path / "m.safetensors").stat().st_size
    assert header.object_size == info.size
    assert header.metadata == {"format": "pt"}
    by_name = {t.name: t for t in header.tensors}
    assert by_name["b"].shape == (3, 5) and by_name["b"].nbytes == 30
    assert by_name["a"].dtype == "I64" and by_name["a"].nbytes == 56
    assert header.tensors[0].begin == header.data_start


def test_long_header_needs_a_second_read(tmp_path: Path) -> None:
    tensors = {f"t{i:05d}" + "x" * 40: torch.zeros(1) for i in range(6000)}  # > 256 KiB of JSON
    save_file(tensors, tmp_path / "big.safetensors")
    header, _ = read_header(LocalSource(tmp_path), "big.safetensors", probe_bytes=4096)
    assert header.header_bytes > 256 * 1024
    assert len(header.tensors) == 6000


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    ("header", "data", "needle", "tensor"),
    [
        ({"w": _entry("F17", [2], 0, 8)}, b"\0" * 8, "unknown dtype 'F17'", "w"),
        ({"w": _entry("F32", [3], 0, 8)}, b"\0" * 8, "does not match shape [3] x F32", "w"),
        ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)}, b"\0" * 12, "overlaps tensor 'a'", "b"),
        ({"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 8, 12)}, b"\0" * 12, "hole", "b"),
        ({"w": _entry("F32", [4], 0, 16)}, b"\0" * 8, "out of bounds", "w"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, "data_offsets must be", "w"),
        ({"w": _entry("F32", [-2], 0, 8)}, b"\0" * 8, "non-negative", "w"),
    ],
    ids=["unknown-dtype", "span-vs-shape", "overlap", "hole", "past-end", "bad-offsets", "negative-dim"],
)
def test_rejects_bad_tensor_entries(tmp_path: Path, header: dict, data: bytes, needle: str, tensor: str) -> None:
    write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointFormatError) as err:
        read_header(LocalSource(tmp_path), "bad.safetensors")
    assert needle in str(err.value)
    assert err.value.tensor == tensor
    assert "bad.safetensors" in str(err.value)


def test_truncated_object_is_rejected(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1000)}, tmp_path / "m.safetensors")
    full = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(full[:-100])
    with pytest.raises(CheckpointFormatError, match="out of bounds") as err:
        read_header(LocalSource(tmp_path), "m.safetensors")
    assert err.value.tensor == "w"


def test_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    save_file({"w": torch.ones(4)}, tmp_path / "m.safetensors")
    with (tmp_path / "m.safetensors").open("ab") as f:
        f.write(b"junk")
    with pytest.raises(CheckpointFormatError, match="trailing"):
        read_header(LocalSource(tmp_path), "m.safetensors")


def test_header_length_past_the_end(tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", 5000) + b"{}")
    with pytest.raises(CheckpointFormatError, match="runs past the end of the 10-byte object"):
        read_header(LocalSource(tmp_path), "m.safetensors")


def test_object_shorter_than_length_prefix(tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointFormatError, match="too short"):
        read_header(LocalSource(tmp_path), "m.safetensors")


def test_header_over_100_mb_is_rejected() -> None:
    prefix = struct.pack("<Q", MAX_HEADER_BYTES + 1)
    with pytest.raises(CheckpointFormatError, match="100 MB"):
        parse_header_length("s3://b/m.safetensors", prefix, 10 * MAX_HEADER_BYTES)


@pytest.mark.parametrize("blob", [b"{not json", b"\xff\xfe", b"[1, 2]"], ids=["syntax", "utf8", "not-object"])
def test_malformed_json(tmp_path: Path, blob: bytes) -> None:
    write_raw(tmp_path / "m.safetensors", None, b"", header_bytes=blob)
    with pytest.raises(CheckpointFormatError, match="JSON") as err:
        read_header(LocalSource(tmp_path), "m.safetensors")
    assert "m.safetensors" in str(err.value)


def test_metadata_must_be_strings() -> None:
    blob = json.dumps({"__metadata__": {"n": 1}}).encode()
    with pytest.raises(CheckpointFormatError, match="__metadata__"):
        parse_header("x.safetensors", blob, 8 + len(blob))


def _sharded(tmp_path: Path, weight_map: dict[str, str]) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    save_file({"b": torch.ones(3)}, tmp_path / "s2.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_index_resolves_every_shard(tmp_path: Path) -> None:
    _sharded(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"})
    checkpoint = resolve_checkpoint(LocalSource(tmp_path))
    assert [s.name for s in checkpoint.shards] == ["s1.safetensors", "s2.safetensors"]
    assert checkpoint.index_name == "model.safetensors.index.json"


def test_missing_shard_names_the_shard(tmp_path: Path) -> None:
    _sharded(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s3.safetensors"})
    with pytest.raises(ObjectNotFoundError, match="s3.safetensors"):
        resolve_checkpoint(LocalSource(tmp_path))


def test_index_tensor_absent_from_its_shard(tmp_path: Path) -> None:
    _sharded(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors", "zz": "s1.safetensors"})
    with pytest.raises(CheckpointFormatError, match="absent from this shard") as err:
        resolve_checkpoint(LocalSource(tmp_path))
    assert err.value.tensor == "zz"


def test_malformed_index(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    with pytest.raises(CheckpointFormatError, match="weight_map"):
        resolve_checkpoint(LocalSource(tmp_path))


def test_duplicate_tensor_across_shards(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    save_file({"a": torch.ones(2)}, tmp_path / "s2.safetensors")
    with pytest.raises(CheckpointFormatError, match="also present"):
        resolve_checkpoint(LocalSource(tmp_path))


def test_size_disagreeing_with_header_is_an_integrity_error(tmp_path: Path) -> None:
    from loader.sources.base import ObjectInfo

    save_file({"w": torch.ones(4)}, tmp_path / "m.safetensors")
    real = LocalSource(tmp_path)

    class LyingSize(LocalSource):
        def head(self, name: str, length: int):  # type: ignore[override]
            data, info = real.head(name, length)
            return data, ObjectInfo(info.size + 8, info.etag)

    with pytest.raises((IntegrityError, CheckpointFormatError)):
        read_header(LyingSize(tmp_path), "m.safetensors")
