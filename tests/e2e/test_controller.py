"""The controller on the test ground's control plane, acting as the shipped ServiceAccount with the
shipped RBAC, against emulated engines (fake pods on kwok GPU nodes, vLLM series on loopback)."""
from __future__ import annotations

import time
from collections.abc import Iterator

import kubernetes
import pytest

from autoscaler.actuators.drain import DELETION_COST
from autoscaler.controller.crd import GROUP, PLURAL, VERSION
from autoscaler.controller.status import decode_forecast_history, decode_policy_state, encode_forecast_history
from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.e2e.conftest import (condition, controller_client, create_ma, engine_deployment, model_autoscaler, read_ma,
                                running_controller, wait_for)
from tests.ground.fleet import PodMirror
from tests.ground.procs import free_port

pytestmark = pytest.mark.integration

# One replica of the tiny CPU profile: 4 sequences at a time, ~2 ms a decode step.
TINY_CAPACITY = {"maxNumSeqs": 4, "kvCacheTokens": 8192, "prefillTokensPerSecond": 27000, "decodeTokensPerSecond": 1500}
# Short windows so that a test sees a scale-down within seconds instead of the production minutes.
FAST_POLICY = {"parameters": {"stableWindowSeconds": 4, "scaleDownPeriodSeconds": 0, "panicWindowSeconds": 2,
                              "burstHoldSeconds": 0, "rateWindowSeconds": 5, "trendWindowSeconds": 4}}


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetEmulator]:
    with FleetEmulator(load_profile("tiny-llama-cpu")) as emulator:
        yield emulator


def _ma(name: str, model: str, target: str, **spec) -> dict:
    spec.setdefault("capacity", TINY_CAPACITY)
    spec.setdefault("coldStart", {"seconds": 1})
    spec.setdefault("policy", FAST_POLICY)
    # A TTFT target far above what a drained queue leaves in the 60 s histogram window: the test's
    # scale-down is not held back by the panic that a TTFT miss starts.
    spec.setdefault("slo", {"ttftSeconds": 120.0})
    return model_autoscaler(name, model, target, **spec)


def _apps(cluster):
    return kubernetes.client.AppsV1Api(cluster.api_client())


def _replicas(cluster, namespace: str, name: str) -> int:
    return _apps(cluster).read_namespaced_deployment_scale(name, namespace).spec.replicas


def _events(cluster, namespace: str) -> list:
    return kubernetes.client.CoreV1Api(cluster.api_client()).list_namespaced_event(namespace).items


def _flood(fleet: FleetEmulator, model: str, requests: int) -> None:
    for _ in range(requests):
        fleet.submit(model, 400, 1000)


def test_rising_demand_scales_up_and_falling_demand_scales_back_down(installed, gpu_nodes, namespace, fleet):
    model = namespace
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 1))
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", maxReplicas=4))
    with PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror, \
            running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as ctl:
        mirror.wait_for(lambda p: len(p) == 1 and all(p.values()), timeout_s=30)
        _flood(fleet, model, 32)             # 8 x a replica's batch: a queue of 28
        wait_for(lambda: _replicas(installed, namespace, "engine") >= 2, 30, "scale-up after a queue builds")
        mirror.wait_for(lambda p: len(p) >= 2 and all(p.values()), timeout_s=30)
        calm = lambda: (lambda s: not s["lastDecision"]["explain"].get("panic") and s)(  # noqa: E731
            read_ma(installed.api_client(), namespace, "engine")["status"])
        peak = wait_for(calm, 60, "the queue drained, panic over")["targetReplicas"]
        # the rates fall over the sensor's 60 s window, and the fleet follows them down
        # the scale is written before the status: wait for both to show the step down
        status_now = lambda: read_ma(installed.api_client(), namespace, "engine")["status"]  # noqa: E731
        wait_for(lambda: _replicas(installed, namespace, "engine") < peak and status_now()["targetReplicas"] < peak,
                 60, "scale-down once the demand falls")
        status = status_now()
        assert not ctl.error_messages()
    reasons = [e.reason for e in _events(installed, namespace) if e.involved_object.kind == "ModelAutoscaler"]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons
    assert status["targetReplicas"] < peak and status["leader"] == ctl.config.identity
    assert any(d["desired"] >= 2 for d in status["recentDecisions"])
    assert condition({"status": status}, "MetricsAvailable")["status"] == "True"


@pytest.fixture()
def slow_fleet() -> Iterator[FleetEmulator]:
    """Engines that decode a token every 50 ms: one long answer keeps its engine busy for minutes."""
    profile = load_profile("tiny-llama-cpu")
    slow = profile.model_copy(update={"engine": profile.engine.model_copy(update={"step_base_s": 0.05})})
    with FleetEmulator(slow) as emulator:
        yield emulator


def test_the_busiest_pod_survives_a_scale_down(installed, gpu_nodes, namespace, slow_fleet):
    """Three Ready engines, one of them generating a long answer: the controller marks the idle ones
    cheapest to delete before it writes the scale, and the ReplicaSet controller removes those."""
    model, fleet = namespace, slow_fleet
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 3))
    with PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror:
        mirror.wait_for(lambda p: len(p) == 3 and all(p.values()), timeout_s=30)
        fleet.submit(model, 100, 1900)           # ~95 s of decoding on one engine; round robin picks which
        running = lambda: [pod for pod, s in fleet.stats(model).items() if s.running]  # noqa: E731
        busy = wait_for(running, 10, "the request running on one engine")
        assert len(busy) == 1
        create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", minReplicas=1))
        with running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as ctl:
            wait_for(lambda: _replicas(installed, namespace, "engine") == 1, 30, "the scale-down to one replica")
            errors = ctl.error_messages()
        core = kubernetes.client.CoreV1Api(installed.api_client())
        kept = lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="app=engine").items  # noqa: E731
                        if p.metadata.deletion_timestamp is None]
        left = wait_for(lambda: (lambda k: k if len(k) == 1 else None)(kept()), 30, "two pods deleted")
    assert not errors
    assert [p.metadata.name for p in left] == busy
    assert left[0].metadata.annotations[DELETION_COST] == "1"      # marked busy, not kept by chance


def test_full_gpu_nodes_leave_pods_pending_uncounted_and_status_says_scaling_limited(installed, namespace, fleet):
    model = namespace
    node = installed.add_gpu_nodes(1, gpus_per_node=2, prefix=f"full-{namespace}")[0]
    deployment = engine_deployment("engine", 2, node_selector={"kubernetes.io/hostname": node})
    _apps(installed).create_namespaced_deployment(namespace, deployment)
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", maxReplicas=6))
    with PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror, \
            running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as ctl:
        mirror.wait_for(lambda p: len(p) == 2 and all(p.values()), timeout_s=30)
        _flood(fleet, model, 80)
        # settled: every extra pod judged by the scheduler (a pod not yet judged counts as starting)
        limited = wait_for(lambda: (lambda s: s if (condition(s, "ScalingLimited") or {}).get("reason") == "Unschedulable"
                                    and s["status"]["pendingReplicas"] == s["status"]["targetReplicas"] - 2 else None)(
            read_ma(installed.api_client(), namespace, "engine")), 40, "ScalingLimited because pods cannot be scheduled")
        status = limited["status"]
        held = _replicas(installed, namespace, "engine")
        time.sleep(3)                        # more ticks under the same queue: no further growth
        assert _replicas(installed, namespace, "engine") == held
        assert not ctl.error_messages()
    assert status["pendingReplicas"] >= 1
    assert status["readyReplicas"] == 2 and status["currentReplicas"] == 2, "Pending pods are not capacity"
    assert "Insufficient nvidia.com/gpu" in condition(limited, "ScalingLimited")["message"]


def test_prometheus_down_holds_replicas_and_a_condition_says_why(installed, gpu_nodes, namespace):
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 3))
    create_ma(installed.api_client(), namespace, _ma("engine", namespace, "engine", metrics={"source": "prometheus"}))
    dead = f"http://127.0.0.1:{free_port()}"
    with running_controller(controller_client(installed), namespace, prometheus_url=dead) as ctl:
        missing = wait_for(lambda: (lambda s: s if (condition(s, "MetricsAvailable") or {}).get("status") == "False"
                                    else None)(read_ma(installed.api_client(), namespace, "engine")),
                           20, "MetricsAvailable False")
        ticks = ctl.ticks
        wait_for(lambda: ctl.ticks >= ticks + 3, 20, "three more ticks without metrics")
        assert _replicas(installed, namespace, "engine") == 3, "nothing shrinks on missing metrics"
    message = condition(missing, "MetricsAvailable")["message"]
    assert "will not shrink" in message
    assert not [e for e in _events(installed, namespace) if e.reason in ("ScaledDown", "ScaledUp")]


def test_a_new_controller_forecasts_on_from_the_history_in_status_and_keeps_it(installed, gpu_nodes, namespace, fleet):
    """What the last leader wrote of the forecaster's windows (as the shipped account, through the API
    server's schema) is what the next one starts from, and what it writes back when it stops."""
    model = namespace
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 1))
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", forecasting={"enabled": True}))
    now_window = int(time.time() // 600)
    rates = [2.0 + (w % 144) / 36 for w in range(1000)]
    history = {"window_s": 600.0, "first_window": now_window - len(rates), "rates": rates,
               "prompt": [r * 1000 for r in rates], "generation": [r * 100 for r in rates]}
    kubernetes.client.CustomObjectsApi(installed.api_client()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "engine", {"status": {"forecastHistory": encode_forecast_history(history)}},
        _content_type="application/merge-patch+json")
    key = (namespace, "engine")
    with PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror:
        mirror.wait_for(lambda p: len(p) == 1 and all(p.values()), timeout_s=30)
        with running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as ctl:
            wait_for(lambda: key in ctl._models and ctl.ticks >= 2, 20, "two ticks")
            restored = ctl._models[key].prewarmer.history(model)
            errors = ctl.error_messages()
    assert not errors
    assert restored["first_window"] == history["first_window"] and restored["rates"] == pytest.approx(rates, rel=1e-5)
    kept = decode_forecast_history(read_ma(installed.api_client(), namespace, "engine")["status"]["forecastHistory"])
    assert kept["first_window"] == history["first_window"] and kept["rates"][: len(rates)] == pytest.approx(rates, rel=1e-5)


def test_a_restarted_controller_restores_policy_state_and_makes_no_jump(installed, gpu_nodes, namespace, fleet):
    model = namespace
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 2))
    # the policy's production windows: what holds a scale-down back lives in the state to restore
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", maxReplicas=6, policy={}))
    key = (namespace, "engine")
    with PodMirror(installed.api_client(), fleet, namespace, "app=engine", model) as mirror:
        mirror.wait_for(lambda p: len(p) == 2 and all(p.values()), timeout_s=30)
        _flood(fleet, model, 40)
        with running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as first:
            wait_for(lambda: first.ticks >= 6 and key in first._models, 20, "six ticks")
        saved = read_ma(installed.api_client(), namespace, "engine")["status"]
        before = _replicas(installed, namespace, "engine")
        learned = decode_policy_state(saved["policyState"])["models"][model]
        with running_controller(controller_client(installed), namespace, resolver=fleet.resolver()) as second:
            wait_for(lambda: key in second._models, 20, "the second controller's first tick")
            restored = second._models[key].policy.snapshot()["models"][model]
            wait_for(lambda: second.ticks >= 2, 10, "two ticks")
            first_desired = read_ma(installed.api_client(), namespace, "engine")["status"]["lastDecision"]["desired"]
            errors = second.error_messages()
    assert not errors
    # first_t is when the policy first saw this model: a fresh policy would say "now"
    assert restored["first_t"] == learned["first_t"] and restored["h_up_t"] == learned["h_up_t"]
    assert learned["h"] > 1.0 and restored["h"] >= learned["h"] * 0.9, "the learnt headroom was kept"
    assert abs(first_desired - before) <= 1, f"restart jumped from {before} to {first_desired}"
