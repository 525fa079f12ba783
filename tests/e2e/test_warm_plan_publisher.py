"""The controller publishes the warm-pool plan on the real API server, as the shipped ServiceAccount
bound by the shipped Role: the plan ConfigMap is replaced from the forecasts, and nothing else in
the warm pool's namespace can be read or written."""
from __future__ import annotations

import json
import time

import kubernetes
import pytest

from autoscaler.contract import DemandForecast
from autoscaler.controller.warmplan import PLAN_CONFIGMAP, WARM_POOL_NAMESPACE, PlanNotInstalled, WarmPlanPublisher
from forecasting.warmpool import WarmPoolConfig
from loader.warmplan import parse_plan
from tests.e2e.conftest import (MANIFESTS, controller_client, create_ma, create_or_replace, dynamic, engine_deployment,
                                model_autoscaler, running_controller, wait_for)
from tests.e2e.kustomize import render

pytestmark = pytest.mark.integration
GB = 10**9
FLEET = WarmPoolConfig.model_validate({
    "horizon_s": 3600,
    "nodes": [{"name": "wp-a", "disk_bytes": 40 * GB}, {"name": "wp-b", "disk_bytes": 40 * GB}],
    "models": [{"name": "hot", "location": "s3://models/hot", "bytes": 16 * GB, "saving_s": 20.0,
                "requests_per_replica": 2.0},
               {"name": "cold", "location": "s3://models/cold", "bytes": 16 * GB, "saving_s": 20.0,
                "requests_per_replica": 2.0}]})


@pytest.fixture(scope="module")
def warm_plan(installed):
    admin = dynamic(installed.api_client())
    for obj in render(MANIFESTS / "warm-pool"):
        if obj["kind"] in ("Namespace", "Role", "RoleBinding") or obj["metadata"]["name"] == PLAN_CONFIGMAP:
            create_or_replace(admin, obj)
    return installed


def _plan(cluster) -> dict:
    cm = kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_config_map(PLAN_CONFIGMAP, WARM_POOL_NAMESPACE)
    return json.loads(cm.data["plan.json"])


def test_the_plan_follows_the_forecast_as_the_controller_account(warm_plan):
    core = kubernetes.client.CoreV1Api(controller_client(warm_plan))
    now = time.time()
    busy = DemandForecast("hot", now, now + 60, 4.0, 6.0)
    WarmPlanPublisher(FLEET, core).publish([busy], {"hot": 1}, now)
    document = _plan(warm_plan)
    plan = parse_plan(document)
    assert plan.models_for("wp-a") == ["hot"] and plan.models_for("wp-b") == ["hot"]
    assert set(document["models"]) == {"hot"} and document["generated_at"] == pytest.approx(now)
    # the demand moves to the other model: the next plan stages it (the nodes have room for both)
    later = now + 600
    WarmPlanPublisher(FLEET, core).publish([DemandForecast("cold", later, later + 60, 4.0, 6.0)], {}, later)
    assert "cold" in parse_plan(_plan(warm_plan)).models_for("wp-a")


def test_the_controller_account_touches_no_other_configmap(warm_plan):
    core = kubernetes.client.CoreV1Api(controller_client(warm_plan))
    admin = kubernetes.client.CoreV1Api(warm_plan.api_client())
    other = {"metadata": {"name": "not-the-plan"}, "data": {"x": "1"}}
    try:
        admin.create_namespaced_config_map(WARM_POOL_NAMESPACE, other)
    except kubernetes.client.ApiException as exc:
        assert exc.status == 409
    for call in (lambda: core.read_namespaced_config_map("not-the-plan", WARM_POOL_NAMESPACE),
                 lambda: core.replace_namespaced_config_map("not-the-plan", WARM_POOL_NAMESPACE, other),
                 lambda: core.create_namespaced_config_map(WARM_POOL_NAMESPACE, {"metadata": {"name": "new"}}),
                 lambda: core.list_namespaced_config_map(WARM_POOL_NAMESPACE)):
        with pytest.raises(kubernetes.client.ApiException) as refused:
            call()
        assert refused.value.status == 403


def test_a_missing_plan_configmap_says_to_install_the_warm_pool(warm_plan):
    core = kubernetes.client.CoreV1Api(controller_client(warm_plan))
    with pytest.raises(PlanNotInstalled, match="kubectl apply -k manifests/warm-pool/"):
        WarmPlanPublisher(FLEET, core, namespace="default").publish([], {}, time.time())


def test_the_leader_publishes_on_its_schedule(warm_plan, gpu_nodes, namespace):
    client = controller_client(warm_plan)
    kubernetes.client.AppsV1Api(warm_plan.api_client()).create_namespaced_deployment(
        namespace, engine_deployment("engine", 2))
    create_ma(warm_plan.api_client(), namespace, model_autoscaler("hot", "hot", "engine", maxReplicas=4,
                                                                  forecasting={"enabled": True}))
    shipped = next(o for o in render(MANIFESTS / "warm-pool") if o["metadata"]["name"] == PLAN_CONFIGMAP)
    create_or_replace(dynamic(warm_plan.api_client()), shipped)       # no generated_at: never planned
    started = time.time()
    with running_controller(client, namespace, warm_pool=FLEET, warm_pool_every_s=1.0) as controller:
        assert controller.wait_until_leader(20)
        wait_for(lambda: (_plan(warm_plan).get("generated_at") or 0.0) >= started, 30, "a plan published by the leader",
                 describe=lambda: controller.error_messages())
    assert not [e for e in controller.error_messages() if "warm-pool" in e]
