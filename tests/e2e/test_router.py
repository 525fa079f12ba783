"""The router in a cluster, on the test ground's control plane: it serves a ModelAutoscaler's model
from the Ready pods of its selector, holds a request while the model is at zero, and its poke
(status.activation, written as the shipped router ServiceAccount) makes the controller scale from
zero at once instead of at its next tick. Engines are an echo server on loopback: the kwok pods'
addresses are never dialled."""
from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import httpx
import kubernetes
import pytest
import yaml

from autoscaler.contract import Reason
from autoscaler.router.cluster import ClusterRouter
from autoscaler.router.echo import echo_app
from autoscaler.router.server import ThreadedServer, bind_socket
from tests.e2e.conftest import (MANIFESTS, controller_client, create_ma, create_or_replace, dynamic, engine_deployment,
                                read_ma, running_controller, wait_for)
from tests.e2e.test_controller import _apps, _ma, _replicas

pytestmark = pytest.mark.integration

ROUTER_SA = "warmscale-router"
# far longer than the test: a decision before it is due can only be the poke's
INTERVAL_S = 120.0


@pytest.fixture()
def echo() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo_app("echo"), bind_socket("127.0.0.1", 0), name="echo") as server:
        yield server


def _router_client(cluster, namespace: str):
    """A client acting as the example's router ServiceAccount, bound by its Role, in `namespace`."""
    admin = dynamic(cluster.api_client())
    for doc in yaml.safe_load_all((MANIFESTS / "examples" / "router.yaml").read_text()):
        if doc and doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            obj = copy.deepcopy(doc)
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects", []):
                subject["namespace"] = namespace
            create_or_replace(admin, obj)
    return cluster.as_service_account(namespace, ROUTER_SA, create=False)


def test_a_request_at_zero_is_held_and_its_poke_scales_from_zero_before_the_next_tick(installed, gpu_nodes, namespace,
                                                                                       echo):
    _apps(installed).create_namespaced_deployment(namespace, engine_deployment("engine", 0, ready_after="1s"))
    create_ma(installed.api_client(), namespace,
              _ma("engine", "m-e2e", "engine", minReplicas=0, scaleToZero={"enabled": True}))
    router_client = _router_client(installed, namespace)
    with running_controller(controller_client(installed), namespace, interval_s=INTERVAL_S,
                            metrics_url_template=f"{echo.url}/metrics") as ctl, \
            ClusterRouter(router_client, namespace, host="127.0.0.1", port=0, engine_url_template=echo.url,
                          identity="router-e2e") as router:
        assert ctl.wait_until_leader(15), "the controller leads"
        wait_for(ctl._ready, 15, "the controller's caches are filled")
        assert router.endpoints.models() == ("m-e2e",) and router.endpoints.ready("m-e2e") == ()
        started = time.monotonic()
        response = httpx.post(f"{router.url}/v1/completions", json={"model": "m-e2e", "prompt": "hi", "max_tokens": 3},
                              timeout=INTERVAL_S)
        served_s = time.monotonic() - started
        status = read_ma(installed.api_client(), namespace, "engine")["status"]
        activations = ctl.metrics.activations._value.get()
        engines = router.endpoints.ready("m-e2e")
    assert response.status_code == 200, response.text
    assert response.json()["choices"], "the echo engine answered through the router"
    assert served_s < INTERVAL_S / 4, f"served {served_s:.1f} s after it was sent, long before a scheduled tick"
    assert activations == 1
    assert status["activation"]["router"] == "router-e2e" and status["activation"]["heldRequests"] >= 1
    assert status["lastDecision"]["reason"] == Reason.ACTIVATE_FROM_ZERO.value
    assert _replicas(installed, namespace, "engine") == 1
    assert len(engines) == 1 and engines[0].url == echo.url


def test_the_router_may_write_status_and_nothing_else(installed, namespace):
    create_ma(installed.api_client(), namespace, _ma("engine", "m-e2e", "engine"))
    custom = kubernetes.client.CustomObjectsApi(_router_client(installed, namespace))
    from autoscaler.controller.crd import GROUP, PLURAL, VERSION
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "engine", {"spec": {"maxReplicas": 99}},
                                              _content_type="application/merge-patch+json")
    assert refused.value.status == 403
    with pytest.raises(kubernetes.client.ApiException) as refused:
        kubernetes.client.AppsV1Api(_router_client(installed, namespace)).patch_namespaced_deployment_scale(
            "engine", namespace, {"spec": {"replicas": 5}})
    assert refused.value.status == 403
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "engine",
                                                 {"status": {"activation": {"heldRequests": 1, "router": "r"}}},
                                                 _content_type="application/merge-patch+json")
    wait_for(lambda: (read_ma(installed.api_client(), namespace, "engine").get("status") or {}).get("activation"),
             10, "status.activation written by the router's ServiceAccount")
