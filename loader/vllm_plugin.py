"""vLLM integration: ``--load-format warmscale`` streams weights through the warmscale loader.

Registered from the ``vllm.general_plugins`` entry point (pyproject.toml), which vLLM runs in
every process, so engine-core and worker processes all see the load format. ``register()`` is
idempotent and imports only vLLM's loader registry.

Usage::

    vllm serve s3://bucket/llama --load-format warmscale \\
        --model-loader-extra-config '{"concurrency": 16, "cache_dir": "/mnt/nvme/warmscale"}'

For an ``s3://`` model vLLM itself mirrors the small files (config, tokenizer) to a local
directory and keeps the URI in ``model_config.model_weights``; we stream the weights from there,
or from a valid warm-pool copy when ``cache_dir`` is set. Extra-config keys are LoaderConfig
fields; ``WARMSCALE_LOADER_<FIELD>`` variables work too.
"""

from __future__ import annotations

import functools
import logging
import time

LOAD_FORMAT = "warmscale"
# A child of vLLM's logger, so the line lands in vLLM's log with vLLM's formatting.
log = logging.getLogger("vllm.warmscale")
_registered_class: type | None = None


def register() -> None:
    """Register the ``warmscale`` load format with vLLM (safe to call any number of times)."""
    global _registered_class
    from vllm.model_executor import model_loader as registry

    table = getattr(registry, "_LOAD_FORMAT_TO_MODEL_LOADER", {})
    if _registered_class is not None and table.get(LOAD_FORMAT) is _registered_class:
        return
    _registered_class = registry.register_model_loader(LOAD_FORMAT)(_build_loader_class())
    _accept_object_storage_models()


def _accept_object_storage_models() -> None:
    """Let ``--load-format warmscale`` take an ``s3://`` model.

    vLLM (0.32) mirrors the config files of an object-storage model and then, in
    ``VllmConfig.try_verify_and_update_config``, refuses any load format but its own streaming
    ones. That check is the only use of the format name in that method, so while it runs we
    present the name of a format it accepts, and restore ours afterwards.
    """
    try:
        from vllm.config.vllm import VllmConfig
    except ImportError:  # a vLLM without that module has no such check
        return
    original = VllmConfig.try_verify_and_update_config
    if getattr(original, "_warmscale_wrapped", False):
        return

    @functools.wraps(original)
    def verify(self) -> object:  # noqa: ANN001
        load_config = getattr(self, "load_config", None)
        if load_config is None or load_config.load_format != LOAD_FORMAT:
            return original(self)
        load_config.load_format = "runai_streamer"
        try:
            return original(self)
        finally:
            load_config.load_format = LOAD_FORMAT

    verify._warmscale_wrapped = True  # type: ignore[attr-defined]
    VllmConfig.try_verify_and_update_config = verify  # type: ignore[method-assign]


def _build_loader_class() -> type:
    import torch
    from torch import nn
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    from loader.config import LoaderConfig
    from loader.stream import LoadReport, stream_checkpoint

    class WarmscaleModelLoader(BaseModelLoader):
        """Streams safetensors from s3://, http(s):// or local paths into the model's device."""

        def __init__(self, load_config) -> None:  # noqa: ANN001 - vLLM's LoadConfig
            super().__init__(load_config)
            extra = dict(load_config.model_loader_extra_config or {})
            self.config = LoaderConfig.from_env(**extra)

        @staticmethod
        def _location(model_config) -> str:  # noqa: ANN001
            return model_config.model_weights or model_config.model

        def download_model(self, model_config) -> None:  # noqa: ANN001
            """Stage into the warm pool when one is configured; otherwise nothing to do ahead of loading."""
            if self.config.cache_dir is not None:
                from loader.cache import WarmCache

                WarmCache(self.config.cache_dir).warm(self._location(model_config), self.config)

        def load_weights(self, model: nn.Module, model_config) -> None:  # noqa: ANN001
            location = self._location(model_config)
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
            report = LoadReport(location=location)
            started = time.perf_counter()
            loaded = model.load_weights(stream_checkpoint(location, device, self.config, report=report))
            log.info(
                "warmscale loaded %d tensors (%.2f GB) from %s in %.2f s (%.2f GB/s, %d retries, %d hedges)",
                report.tensors, report.bytes / 1e9, report.resolved_from, time.perf_counter() - started,
                report.gb_per_s, report.fetch.retries, report.fetch.hedges,
            )
            if model_config.quantization is None and loaded is not None:
                missing = {name for name, _ in model.named_parameters()} - set(loaded)
                if missing:
                    raise ValueError(f"weights not initialized from checkpoint {location}: {sorted(missing)}")

    WarmscaleModelLoader.__qualname__ = "WarmscaleModelLoader"
    return WarmscaleModelLoader
