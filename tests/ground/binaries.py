"""Where the Go-built binaries of the test ground live: a version-keyed cache outside git."""
from __future__ import annotations

import os
from pathlib import Path

from tests.ground.procs import require_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
_VERSION_KEYS = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "versitygw": "VERSITYGW_VERSION",
}


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in VERSIONS_FILE.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def cache_dir() -> Path:
    return Path(os.environ.get("WARMSCALE_CACHE", Path.home() / ".cache" / "warmscale"))


def binary(name: str) -> str:
    """Path of a cached binary, or a clear error saying how to build it."""
    version = versions()[_VERSION_KEYS[name]]
    path = cache_dir() / "bin" / f"{name}-{version}" / name
    return require_executable(path, "build the test ground's binaries: bash hack/setup.sh (or bash hack/build-binaries.sh)")
