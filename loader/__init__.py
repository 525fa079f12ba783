"""warmscale loader: stream safetensors checkpoints from S3, HTTP(S) or local storage to a device.

    from loader import LoaderConfig, load_checkpoint, stream_checkpoint

    for name, tensor in stream_checkpoint("s3://models/llama", "cuda:0", LoaderConfig(concurrency=16)):
        ...  # each tensor arrives as soon as its bytes are on the device

Modules: ``format`` (strict header parsing), ``sources`` (local, s3, http), ``checkpoint``
(shards and headers), ``fetch`` (parallel ranged reads, retries, hedging), ``ring`` (staging
buffers), ``assemble`` (copies to the device), ``stream`` (the public API), ``cache`` and
``staging`` (the node warm pool), ``warmplan`` (a node following the warm-pool plan), ``cli``
(``warmscale-loader``), ``vllm_plugin``.
Names are imported lazily so that ``import loader`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoaderConfig", "LoadReport", "WarmCache", "load_checkpoint", "stream_checkpoint"]

_EXPORTS = {
    "LoaderConfig": "loader.config",
    "LoadReport": "loader.stream",
    "load_checkpoint": "loader.stream",
    "stream_checkpoint": "loader.stream",
    "WarmCache": "loader.cache",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loader' has no attribute {name!r}")
