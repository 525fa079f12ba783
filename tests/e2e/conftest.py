"""Fixtures for the controller's end-to-end tests on the test ground's control plane."""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from autoscaler.controller.crd import GROUP, PLURAL, VERSION
from autoscaler.controller.loop import Controller, ControllerConfig
from tests.e2e.kustomize import render
from tests.ground.kube import READY_DELAY_ANNOTATION, KubeCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
CONTROLLER_NS, CONTROLLER_SA = "warmscale-system", "warmscale-controller"
# What the tests install for real: the rest of the kustomization is server-side dry-run only
# (the controller's own Deployment would start fake pods that do nothing).
INSTALLED_KINDS = {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                   "Role", "RoleBinding"}


def dynamic(api_client) -> kubernetes.dynamic.DynamicClient:
    return kubernetes.dynamic.DynamicClient(api_client)


def create_or_replace(client: kubernetes.dynamic.DynamicClient, obj: dict, dry_run: bool = False) -> None:
    resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    kwargs = {"dry_run": "All"} if dry_run else {}
    try:
        resource.create(body=obj, namespace=namespace, **kwargs)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        current = resource.get(name=obj["metadata"]["name"], namespace=namespace)
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current.metadata.resourceVersion}}
        resource.replace(body=body, namespace=namespace, **kwargs)


def wait_crds_established(api_client, names: list[str], timeout_s: float = 30) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api_client)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        crds = [ext.read_custom_resource_definition(n) for n in names]
        if all(any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))
               for crd in crds):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRDs {names} not Established within {timeout_s} s")


@pytest.fixture(scope="session")
def installed(k8s_cluster: KubeCluster) -> KubeCluster:
    """The shipped namespace, CRDs, ServiceAccount and RBAC, applied for real."""
    admin = dynamic(k8s_cluster.api_client())
    objects = [o for o in render(MANIFESTS) if o["kind"] in INSTALLED_KINDS]
    for obj in objects:
        create_or_replace(admin, obj)
    wait_crds_established(k8s_cluster.api_client(), [o["metadata"]["name"] for o in objects
                                                     if o["kind"] == "CustomResourceDefinition"])
    return k8s_cluster


@pytest.fixture(scope="session")
def gpu_nodes(k8s_cluster: KubeCluster) -> list[str]:
    return k8s_cluster.add_gpu_nodes(4, gpus_per_node=8, prefix="e2e-gpu")


@pytest.fixture()
def namespace(k8s_cluster: KubeCluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = kubernetes.client.CoreV1Api(k8s_cluster.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(kubernetes.client.ApiException):
        core.delete_namespace(name)


def controller_client(cluster: KubeCluster):
    """An API client acting as the shipped ServiceAccount (bound by the shipped RBAC)."""
    return cluster.as_service_account(CONTROLLER_NS, CONTROLLER_SA, create=False)


@contextlib.contextmanager
def running_controller(api_client, namespace: str, **config) -> Iterator[Controller]:
    defaults = dict(namespace=namespace, interval_s=1.0, metrics_host="127.0.0.1", metrics_port=0,
                    lease_namespace=CONTROLLER_NS, lease_name=f"lease-{namespace}", identity=f"ctl-{uuid.uuid4().hex[:6]}",
                    lease_s=6.0, renew_deadline_s=4.0, retry_s=0.5, state_every_s=5.0, scale_reread_s=5.0)
    defaults.update(config)
    resolver = defaults.pop("resolver", None)
    controller = Controller(ControllerConfig(**defaults), api_client, resolver=resolver).start()
    try:
        yield controller
    finally:
        controller.stop()


def engine_deployment(name: str, replicas: int, ready_after: str = "1s", gpus: int = 1,
                      node_selector: dict | None = None) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {READY_DELAY_ANNOTATION: ready_after}},
                              "spec": {"nodeSelector": node_selector or {"warmscale.io/fake-node": "kwok"},
                                       "tolerations": [{"operator": "Exists"}],
                                       "terminationGracePeriodSeconds": 0,
                                       "containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.12.0",
                                                       "resources": {"limits": {"nvidia.com/gpu": str(gpus)},
                                                                     "requests": {"nvidia.com/gpu": str(gpus)}}}]}}}}


def model_autoscaler(name: str, model: str, target: str, **spec) -> dict:
    body = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "model": model, "selector": {"matchLabels": {"app": target}}, "minReplicas": 1, "maxReplicas": 8,
            "metrics": {"source": "direct"}}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelAutoscaler", "metadata": {"name": name}, "spec": body}


def create_ma(api_client, namespace: str, body: dict) -> dict:
    return kubernetes.client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body)


def read_ma(api_client, namespace: str, name: str) -> dict:
    return kubernetes.client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2, describe=None):
    """Poll `predicate`; on timeout the error shows `describe()` (what the system looked like) if given."""
    from tests.api.cluster import wait_for as poll
    return poll(predicate, timeout_s, what, interval_s, describe)
