"""Fixtures that start the real parts of the test ground on 127.0.0.1 (free ports, temp dirs, torn down)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ground.kube import KubeCluster, start_cluster
from tests.ground.prometheus import Prometheus, start_prometheus
from tests.ground.s3 import S3Server, start_s3_server
from tests.ground.tiny_model import cached_tiny_llama
from tests.ground.vllm import VllmEngine, start_vllm


class _StartupClock:
    """Records how long each part took to start; printed at the end of the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @staticmethod
    def now() -> float:
        return time.monotonic()


STARTUP = _StartupClock()


def pytest_terminal_summary(terminalreporter) -> None:
    if STARTUP.seconds:
        terminalreporter.section("test ground start-up times")
        for part, seconds in STARTUP.seconds.items():
            terminalreporter.write_line(f"{part}: {seconds:.1f} s")


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory) -> Iterator[KubeCluster]:
    t0 = STARTUP.now()
    with start_cluster(tmp_path_factory.mktemp("k8s")) as cluster:
        STARTUP.seconds["k8s_cluster"] = STARTUP.now() - t0
        yield cluster


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    t0 = STARTUP.now()
    with start_prometheus(tmp_path_factory.mktemp("prometheus")) as prom:
        STARTUP.seconds["prometheus"] = STARTUP.now() - t0
        yield prom


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    t0 = STARTUP.now()
    with start_s3_server(tmp_path_factory.mktemp("s3")) as server:
        STARTUP.seconds["s3_server"] = STARTUP.now() - t0
        yield server


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    t0 = STARTUP.now()
    path = cached_tiny_llama()
    STARTUP.seconds.setdefault("tiny_model_dir", STARTUP.now() - t0)
    return path


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir, tmp_path_factory) -> Iterator[VllmEngine]:
    t0 = STARTUP.now()
    with start_vllm(tiny_model_dir, tmp_path_factory.mktemp("vllm")) as engine:
        STARTUP.seconds["vllm_engine"] = STARTUP.now() - t0
        yield engine
