"""Fixtures that start the real parts of the test ground on 127.0.0.1 (free ports, temp dirs, torn down)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.ground.kube import KubeCluster, start_cluster
from tests.ground.prometheus import Prometheus, start_prometheus
from tests.ground.s3 import S3Server, start_s3_server
from tests.ground.tiny_model import cached_tiny_llama
from tests.ground.vllm import VllmEngine, start_vllm

T = TypeVar("T")
STARTUP_SECONDS: dict[str, float] = {}  # how long each part took to start; printed at the end of the run


def _started(part: str, context: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter `context`, record how long that took as `part`'s start-up, and yield what it gives."""
    t0 = time.monotonic()
    with context as started:
        STARTUP_SECONDS[part] = time.monotonic() - t0
        yield started


def pytest_terminal_summary(terminalreporter) -> None:
    if STARTUP_SECONDS:
        terminalreporter.section("test ground start-up times")
        for part, seconds in STARTUP_SECONDS.items():
            terminalreporter.write_line(f"{part}: {seconds:.1f} s")


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory) -> Iterator[KubeCluster]:
    yield from _started("k8s_cluster", start_cluster(tmp_path_factory.mktemp("k8s")))


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    yield from _started("prometheus", start_prometheus(tmp_path_factory.mktemp("prometheus")))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    yield from _started("s3_server", start_s3_server(tmp_path_factory.mktemp("s3")))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    t0 = time.monotonic()
    path = cached_tiny_llama()
    STARTUP_SECONDS.setdefault("tiny_model_dir", time.monotonic() - t0)
    return path


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir, tmp_path_factory) -> Iterator[VllmEngine]:
    yield from _started("vllm_engine", start_vllm(tiny_model_dir, tmp_path_factory.mktemp("vllm")))
