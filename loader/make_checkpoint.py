"""Write a random-weight safetensors checkpoint of a given total size (for benchmarks and tests).

The layout mimics a Llama-style decoder (embedding, per-layer attention and MLP matrices, norms,
lm_head) scaled so that the shards add up to about ``total_bytes`` (within half a layer); without
an explicit hidden size, the largest one up to 2048 whose embeddings and one layer fit is used.
Shards are written one tensor at a time, so memory stays at one tensor's size.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loader.checkpoint import INDEX_NAME, SINGLE_NAME
from loader.errors import UsageError

DEFAULT_HIDDEN = 2048
VOCAB = 32000


@dataclass(frozen=True)
class CheckpointSpec:
    """Shape of the random checkpoint."""

    total_bytes: int
    shards: int = 1
    hidden: int | None = None  # None: the largest multiple of 64 up to DEFAULT_HIDDEN that fits total_bytes
    dtype: str = "BF16"  # BF16 or F32
    seed: int = 0
    sha256_sidecars: bool = False


def _per_layer(h: int) -> list[tuple[str, tuple[int, ...]]]:
    inter = (h * 8 // 3 + 255) // 256 * 256
    return [
        ("input_layernorm.weight", (h,)),
        ("self_attn.q_proj.weight", (h, h)),
        ("self_attn.k_proj.weight", (h // 4, h)),
        ("self_attn.v_proj.weight", (h // 4, h)),
        ("self_attn.o_proj.weight", (h, h)),
        ("post_attention_layernorm.weight", (h,)),
        ("mlp.gate_proj.weight", (inter, h)),
        ("mlp.up_proj.weight", (inter, h)),
        ("mlp.down_proj.weight", (h, inter)),
    ]


def _sizes(h: int, elem: int) -> tuple[int, int]:
    """(bytes of the embeddings, final norm and lm_head; bytes of one layer) at hidden size ``h``."""
    return (2 * VOCAB * h + h) * elem, sum(int(np.prod(s)) for _, s in _per_layer(h)) * elem


def smallest_bytes(hidden: int, dtype: str = "BF16") -> int:
    """The smallest checkpoint of this layout: embeddings, lm_head and one layer."""
    edges, layer = _sizes(hidden, _elem(dtype))
    return edges + layer


def _elem(dtype: str) -> int:
    return 2 if dtype in ("BF16", "F16") else 4


def layout_hidden(spec: CheckpointSpec) -> int:
    """The hidden size the checkpoint gets: the one asked for, or the largest that fits ``total_bytes``."""
    if spec.hidden is not None:
        return spec.hidden
    for h in range(DEFAULT_HIDDEN, 0, -64):
        if smallest_bytes(h, spec.dtype) <= spec.total_bytes:
            return h
    raise UsageError(f"size {spec.total_bytes} bytes is below the smallest checkpoint this layout makes "
                     f"({smallest_bytes(64, spec.dtype)} bytes at hidden size 64)")


def check_size_fits(spec: CheckpointSpec, slack: float = 1.5) -> None:
    """Refuse a layout whose smallest checkpoint is more than ``slack`` times the size asked for."""
    hidden = layout_hidden(spec)
    smallest = smallest_bytes(hidden, spec.dtype)
    if smallest > spec.total_bytes * slack:
        raise UsageError(
            f"size {spec.total_bytes} bytes is too small for hidden size {hidden}: the embeddings, lm_head and "
            f"one layer alone take {smallest} bytes; raise --size, lower --hidden or leave --hidden out"
        )


def _tensor_shapes(spec: CheckpointSpec) -> list[tuple[str, tuple[int, ...]]]:
    h = layout_hidden(spec)
    edge_bytes, layer_bytes = _sizes(h, _elem(spec.dtype))
    layers = max(1, round((spec.total_bytes - edge_bytes) / layer_bytes))
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB, h))]
    for i in range(layers):
        shapes.extend((f"model.layers.{i}.{n}", s) for n, s in _per_layer(h))
    shapes.extend([("model.norm.weight", (h,)), ("lm_head.weight", (VOCAB, h))])
    return shapes


def _write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], dtype: str, rng: np.random.Generator) -> str:
    elem = _elem(dtype)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * elem
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data section 8-byte aligned, as safetensors does
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for part in (struct.pack("<Q", len(blob)), blob):
            f.write(part)
            digest.update(part)
        for _, shape in tensors:
            n = int(np.prod(shape))
            if elem == 2:
                # Bit patterns 0x3000..0x3F7F are finite bf16 values in [2^-31, 1): cheap to draw.
                raw = rng.integers(0x3000, 0x3F80, size=n, dtype=np.uint16).tobytes()
            else:
                raw = rng.standard_normal(n, dtype=np.float32).tobytes()
            f.write(raw)
            digest.update(raw)
    return digest.hexdigest()


def make_checkpoint(dest: Path, spec: CheckpointSpec) -> list[Path]:
    """Write the checkpoint into directory ``dest``; returns the shard paths."""
    dest.mkdir(parents=True, exist_ok=True)
    shapes = _tensor_shapes(spec)
    rng = np.random.default_rng(spec.seed)
    elem = _elem(spec.dtype)
    total = sum(int(np.prod(s)) for _, s in shapes) * elem
    budget = total / spec.shards
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    filled = 0
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * elem
        if groups[-1] and filled + nbytes / 2 > budget * len(groups) and len(groups) < spec.shards:
            groups.append([])
        groups[-1].append((name, shape))
        filled += nbytes
    paths: list[Path] = []
    weight_map: dict[str, str] = {}
    digests: dict[str, str] = {}
    for i, group in enumerate(groups):
        file_name = SINGLE_NAME if len(groups) == 1 else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        path = dest / file_name
        digests[file_name] = _write_shard(path, group, spec.dtype, rng)
        if spec.sha256_sidecars:
            (dest / f"{file_name}.sha256").write_text(f"{digests[file_name]}  {file_name}\n")
        weight_map.update({name: file_name for name, _ in group})
        paths.append(path)
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (dest / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return paths
