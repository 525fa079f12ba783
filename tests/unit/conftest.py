"""Fixtures shared by the unit tests."""
from __future__ import annotations

import kubernetes
import pytest

from autoscaler.controller.loop import Controller, ControllerConfig
from autoscaler.metrics.resolver import MappingResolver


@pytest.fixture()
def controller():
    """A controller with the API server unreached (tests fake what it would write) and no pod URLs."""
    ctl = Controller(ControllerConfig(namespace="ns", interval_s=5.0, identity="unit"), kubernetes.client.ApiClient(),
                     resolver=MappingResolver({}))
    yield ctl
    ctl._scraper.close()
    ctl._pool.shutdown()
    ctl._forecasts.shutdown()
