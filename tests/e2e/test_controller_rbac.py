"""The shipped RBAC is exactly enough: the controller, acting as a ServiceAccount bound to it, does
its whole job (lease, caches, metrics, deletion cost, scale, event, status) without one refusal;
bound to the same rules less any one verb, it is refused by the API server."""
from __future__ import annotations

import copy
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.e2e.conftest import (CONTROLLER_NS, MANIFESTS, create_ma, create_or_replace, dynamic, engine_deployment,
                                running_controller, wait_for)
from tests.e2e.test_controller import _ma, _replicas
from tests.ground.fleet import PodMirror

pytestmark = pytest.mark.integration

CLUSTER_ROLE = yaml.safe_load((MANIFESTS / "rbac" / "clusterrole.yaml").read_text())
LEADER_ROLE = next(d for d in yaml.safe_load_all((MANIFESTS / "rbac" / "leader-election-role.yaml").read_text())
                   if d and d["kind"] == "Role")


def _verbs() -> list[tuple[str, int, str]]:
    """(role kind, rule index, verb) for every verb the shipped roles grant."""
    return [(role["kind"], i, verb) for role in (CLUSTER_ROLE, LEADER_ROLE)
            for i, rule in enumerate(role["rules"]) for verb in rule["verbs"]]


def _case_id(case: tuple[str, int, str]) -> str:
    kind, index, verb = case
    role = CLUSTER_ROLE if kind == "ClusterRole" else LEADER_ROLE
    rule = role["rules"][index]
    return f"{verb}-{'+'.join(r.replace('/', '.') for r in rule['resources'])}"


def _bind(cluster, name: str, without: tuple[str, int, str] | None) -> kubernetes.client.ApiClient:
    """A ServiceAccount `name` bound to copies of the shipped roles, less the verb `without`."""
    admin = dynamic(cluster.api_client())
    roles = {"ClusterRole": copy.deepcopy(CLUSTER_ROLE), "Role": copy.deepcopy(LEADER_ROLE)}
    if without is not None:
        kind, index, verb = without
        roles[kind]["rules"][index]["verbs"].remove(verb)
        roles[kind]["rules"] = [r for r in roles[kind]["rules"] if r["verbs"]]   # a rule needs a verb
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": CONTROLLER_NS}]
    rbac = "rbac.authorization.k8s.io/v1"
    for kind, role in roles.items():
        role["metadata"] = {"name": name, **({"namespace": CONTROLLER_NS} if kind == "Role" else {})}
        create_or_replace(admin, role)
        binding = {"apiVersion": rbac, "kind": f"{kind}Binding", "metadata": dict(role["metadata"]), "subjects": subject,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}}
        create_or_replace(admin, binding)
    return cluster.as_service_account(CONTROLLER_NS, name)


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetEmulator]:
    with FleetEmulator(load_profile("tiny-llama-cpu")) as emulator:
        yield emulator


def _scale_down_scene(cluster, namespace: str, fleet: FleetEmulator) -> PodMirror:
    """Three idle Ready engines under a ModelAutoscaler with minReplicas 1: the job is a scale-down."""
    kubernetes.client.AppsV1Api(cluster.api_client()).create_namespaced_deployment(
        namespace, engine_deployment("engine", 3))
    create_ma(cluster.api_client(), namespace, _ma("engine", namespace, "engine"))
    mirror = PodMirror(cluster.api_client(), fleet, namespace, "app=engine", namespace).start()
    mirror.wait_for(lambda p: len(p) == 3 and all(p.values()), timeout_s=30)
    return mirror


def test_the_shipped_rbac_is_enough_for_the_whole_job(installed, gpu_nodes, namespace, fleet):
    client = _bind(installed, "rbac-full", None)
    mirror = _scale_down_scene(installed, namespace, fleet)
    try:
        with running_controller(client, namespace, resolver=fleet.resolver()) as ctl:
            wait_for(lambda: _replicas(installed, namespace, "engine") < 3, 30, "a scale-down")
            wait_for(lambda: ctl.metrics.writes.labels("event")._value.get() >= 1, 10, "the ScaledDown event")
            errors = ctl.error_messages()
    finally:
        mirror.stop()
    assert not errors
    pods = kubernetes.client.CoreV1Api(installed.api_client()).list_namespaced_pod(namespace).items
    assert any("controller.kubernetes.io/pod-deletion-cost" in (p.metadata.annotations or {}) for p in pods)


@pytest.mark.parametrize("without", _verbs(), ids=_case_id)
def test_without_any_one_verb_the_api_server_refuses_the_controller(installed, gpu_nodes, namespace, fleet, without):
    name = f"rbac-{_case_id(without)}".lower().replace("+", "-").replace(".", "-")[:60]
    client = _bind(installed, name, without)
    mirror = _scale_down_scene(installed, namespace, fleet)
    try:
        with running_controller(client, namespace, resolver=fleet.resolver()) as ctl:
            refused = wait_for(lambda: [m for m in ctl.error_messages() if "403" in m], 30,
                               f"a 403 without verb {without[2]!r}")
    finally:
        mirror.stop()
    assert refused
