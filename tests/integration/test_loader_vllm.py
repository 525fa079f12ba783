"""The real CPU vLLM engine loads the tiny model from the test S3 server with ``--load-format
warmscale`` and, with a fixed seed, generates exactly what it generates when loading from disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ground.vllm import start_vllm

pytestmark = pytest.mark.integration

PROMPTS = [[1, 15, 300, 42, 7, 99, 1024, 5], [2, 2000, 17, 33]]


def _generate(engine) -> list[list[int]]:
    outputs = []
    for prompt in PROMPTS:
        for sampling in ({"temperature": 0.0}, {"temperature": 0.8, "top_p": 0.9, "seed": 1234}):
            body = engine.complete(prompt, max_tokens=24, return_token_ids=True, **sampling)
            outputs.append(body["choices"][0]["token_ids"])
    return outputs


def test_vllm_loads_from_s3_through_the_plugin(s3_server, tiny_model_dir: Path, vllm_engine, tmp_path: Path) -> None:
    client = s3_server.client()
    for path in tiny_model_dir.iterdir():
        if path.is_file():
            client.upload_file(str(path), s3_server.bucket, f"vllm-it/tiny/{path.name}")
    location = f"s3://{s3_server.bucket}/vllm-it/tiny"
    env = {
        **s3_server.env(),
        # vLLM mirrors config.json for s3:// models with Run:ai's puller, which needs these for a local S3.
        "RUNAI_STREAMER_S3_ENDPOINT": s3_server.endpoint_url,
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
        "AWS_EC2_METADATA_DISABLED": "true",
        "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"),
        "VLLM_LOGGING_LEVEL": "INFO",
    }
    from_disk = _generate(vllm_engine)
    extra = ["--load-format", "warmscale", "--model-loader-extra-config", '{"concurrency": 4, "range_bytes": 1048576}']
    with start_vllm(location, tmp_path, extra_args=extra, env=env) as engine:
        from_s3 = _generate(engine)
        log = engine.log_path.read_text(errors="replace")
    assert "warmscale loaded" in log
    assert from_s3 == from_disk
    assert all(len(tokens) == 24 for tokens in from_s3)


def test_register_is_idempotent_and_accepts_object_storage() -> None:
    from vllm.config.load import LoadConfig
    from vllm.config.vllm import VllmConfig
    from vllm.model_executor.model_loader import get_model_loader

    from loader.vllm_plugin import LOAD_FORMAT, register

    register()
    first = type(get_model_loader(LoadConfig(load_format=LOAD_FORMAT)))
    wrapped = VllmConfig.try_verify_and_update_config
    register()
    assert type(get_model_loader(LoadConfig(load_format=LOAD_FORMAT))) is first
    assert VllmConfig.try_verify_and_update_config is wrapped
    loader = get_model_loader(LoadConfig(load_format=LOAD_FORMAT,
                                         model_loader_extra_config={"concurrency": 3, "range_bytes": 1 << 20}))
    assert (loader.config.concurrency, loader.config.range_bytes) == (3, 1 << 20)
