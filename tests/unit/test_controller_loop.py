"""The controller's per-model tick with the API server faked: what it builds from a spec and what
it writes for a decision (the real API server is in tests/e2e)."""
from __future__ import annotations

import kubernetes
import pytest

from autoscaler.controller.loop import Controller, ControllerConfig
from autoscaler.metrics.resolver import MappingResolver


def _spec(**extra) -> dict:
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "engine"}, "model": "m",
            "selector": {"matchLabels": {"app": "engine"}}, "minReplicas": 1, "maxReplicas": 8,
            "metrics": {"source": "direct"}}
    spec.update(extra)
    return spec


def _object(spec: dict, name: str = "engine") -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1}, "spec": spec}


@pytest.fixture()
def controller():
    ctl = Controller(ControllerConfig(namespace="ns", interval_s=5.0, identity="unit"), kubernetes.client.ApiClient(),
                     resolver=MappingResolver({}))
    yield ctl
    ctl._scraper.close()
    ctl._pool.shutdown()


@pytest.mark.parametrize("parameters, window", [({}, 60.0), ({"rateWindowSeconds": 5}, 5.0)])
def test_direct_sensor_rates_over_the_window_the_policy_is_configured_for(controller, parameters, window):
    model = controller._model(_object(_spec(policy={"parameters": parameters})))
    assert model.policy.config.rate_window_s == window
    assert model.sensor.builder.rate_window_s == window
