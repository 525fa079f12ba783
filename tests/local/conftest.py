"""Helpers for local-mode tests: write a config, run `warmscale local` as a process or in-process."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

# the demo's engine: the test ground's arguments in float32 (see autoscaler/local/demo.py for why)
from autoscaler.local.demo import ENGINE_ARGS, ENGINE_ENV


def write_config(path: Path, **top) -> Path:
    path.write_text(yaml.safe_dump(top, sort_keys=False))
    return path


def model_entry(model_dir: Path | str, **fields) -> dict:
    entry = {"name": "tiny", "model": str(model_dir), "args": list(ENGINE_ARGS), "env": dict(ENGINE_ENV),
             "min_replicas": 0, "max_replicas": 1, "capacity": {"profile": "tiny-llama-cpu"}}
    entry.update(fields)
    return entry


WARMSCALE = [sys.executable, "-m", "autoscaler.cli"]
