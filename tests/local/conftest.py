"""Helpers for local-mode tests: write a config, run `warmscale local` as a process or in-process."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def write_config(path: Path, **top) -> Path:
    path.write_text(yaml.safe_dump(top, sort_keys=False))
    return path


def model_entry(model_dir: Path | str, **fields) -> dict:
    from tests.ground.vllm import DEFAULT_ARGS

    entry = {"name": "tiny", "model": str(model_dir), "args": list(DEFAULT_ARGS), "env": dict(ENGINE_ENV),
             "min_replicas": 0, "max_replicas": 1, "capacity": {"profile": "tiny-llama-cpu"}}
    entry.update(fields)
    return entry


WARMSCALE = [sys.executable, "-m", "autoscaler.cli"]
