"""The controller reading its fleet through the test ground's real Prometheus: the real CPU vLLM
engine's queue scales a Deployment up and, once drained, back down; and a Prometheus whose series
for the model went stale (the engines' endpoint gone) holds the fleet and says why."""
from __future__ import annotations

import threading
import time

import pytest

from autoscaler.contract import NUM_REQUESTS_WAITING
from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.e2e.conftest import condition, controller_client, create_ma, engine_deployment, read_ma, running_controller, wait_for
from tests.e2e.test_controller import _apps, _events, _flood, _ma, _replicas
from tests.ground.fleet import PodMirror
from tests.ground.load import burst

pytestmark = pytest.mark.integration


def _status(cluster, namespace: str) -> dict:
    return read_ma(cluster.api_client(), namespace, "engine").get("status") or {}


def _what_it_saw(cluster, namespace: str, ctl) -> dict:
    status = _status(cluster, namespace)
    return {"lastDecision": status.get("lastDecision"), "recentDecisions": (status.get("recentDecisions") or [])[:6],
            "conditions": status.get("conditions"), "ready": status.get("readyReplicas"),
            "pending": status.get("pendingReplicas"), "errors": ctl.error_messages()[-5:],
            "ticks": ctl.ticks, "leader": ctl.elector.is_leader(), "last_tick_s": ctl.last_tick_s}


def test_the_real_engines_queue_through_prometheus_scales_up_and_back_down(installed, gpu_nodes, namespace,
                                                                           prometheus, vllm_engine):
    prometheus.add_target(vllm_engine.address)
    prometheus.wait_for_series(f'{NUM_REQUESTS_WAITING}{{model_name="{vllm_engine.model}"}}', timeout_s=30)
    burst(vllm_engine, n=1, max_tokens=8)        # a fresh engine's first request pays its warm-up: not in the burst
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 1))
    create_ma(installed.api_client(), namespace,
              _ma("engine", vllm_engine.model, "engine", maxReplicas=4, metrics={"source": "prometheus"}))
    load = threading.Thread(target=burst, args=(vllm_engine,), kwargs={"n": 48, "max_tokens": 256}, daemon=True)
    # the real engine's burst fills both cores of the test ground: a lease long enough to be renewed meanwhile
    with running_controller(controller_client(installed), namespace, prometheus_url=prometheus.url,
                            lease_s=20.0, renew_deadline_s=15.0) as ctl:
        wait_for(lambda: (condition({"status": _status(installed, namespace)}, "MetricsAvailable") or {}).get("status")
                 == "True", 30, "metrics through Prometheus")
        load.start()
        wait_for(lambda: _replicas(installed, namespace, "engine") >= 2, 60, "scale-up on the engine's queue",
                 describe=lambda: _what_it_saw(installed, namespace, ctl))
        load.join(timeout=180)
        assert not load.is_alive(), "the burst did not finish within 180 s"
        peak = _replicas(installed, namespace, "engine")
        wait_for(lambda: _replicas(installed, namespace, "engine") < peak, 90, "scale-down once the queue drained")
        status = _status(installed, namespace)
        assert not ctl.error_messages()
    up = [d for d in status["recentDecisions"] if d["desired"] >= 2]
    assert up, "no decision above one replica is on record"
    reasons = [e.reason for e in _events(installed, namespace) if e.involved_object.kind == "ModelAutoscaler"]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons


def test_series_gone_stale_in_prometheus_hold_the_fleet_and_a_condition_says_why(installed, gpu_nodes, namespace,
                                                                                  prometheus):
    model = namespace
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 1))
    create_ma(installed.api_client(), namespace, _ma("engine", model, "engine", maxReplicas=4,
                                                     metrics={"source": "prometheus"}))
    emulator = FleetEmulator(load_profile("tiny-llama-cpu")).start()
    try:
        prometheus.add_target(emulator.address)
        with PodMirror(installed.api_client(), emulator, namespace, "app=engine", model) as mirror, \
                running_controller(controller_client(installed), namespace, prometheus_url=prometheus.url) as ctl:
            mirror.wait_for(lambda p: len(p) == 1 and all(p.values()), timeout_s=30)
            _flood(emulator, model, 32)
            wait_for(lambda: _replicas(installed, namespace, "engine") >= 2, 40, "scale-up through Prometheus")
            mirror.wait_for(lambda p: len(p) >= 2 and all(p.values()), timeout_s=30)
            emulator.stop()                     # the engines' endpoint is gone: the next scrape marks the series stale
            stopped_at = time.time()
            held = _replicas(installed, namespace, "engine")
            gone = wait_for(lambda: (lambda s: s if (condition({"status": s}, "MetricsAvailable") or {}).get("status")
                                     == "False" else None)(_status(installed, namespace)), 20, "MetricsAvailable False")
            ticks = ctl.ticks
            # the fast policy's stable window is 4 s: on live data an idle fleet would shrink in that time
            wait_for(lambda: ctl.ticks >= ticks + 8, 20, "eight more ticks on stale series")
            assert _replicas(installed, namespace, "engine") == held, "nothing shrinks while the series are stale"
            assert not ctl.error_messages()
    finally:
        emulator.stop()
    message = condition({"status": gone}, "MetricsAvailable")["message"]
    assert "no series" in message and "will not shrink" in message
    downs = [e for e in _events(installed, namespace)
             if e.reason == "ScaledDown" and e.first_timestamp.timestamp() >= stopped_at - 1]
    assert not downs, [e.message for e in downs]
