"""Helpers for the API tests on the test ground's control plane: the shipped CRDs and override
ClusterRoles installed for real, service accounts bound to them, the real controller and the API it serves."""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import yaml

from autoscaler.api.cluster import ClusterApi
from autoscaler.controller.crd import GROUP, PLURAL, VERSION
from autoscaler.controller.loop import Controller, ControllerConfig
from tests.ground.kube import FAKE_NODE_LABEL, READY_DELAY_ANNOTATION, KubeCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SHIPPED = ["crd/modelautoscaler.yaml", "crd/scalingoverride.yaml", "rbac/override-viewer.yaml",
           "rbac/override-operator.yaml", "rbac/override-api-server.yaml"]
INTERVAL_S = 1.0


def shipped_objects() -> list[dict]:
    return [obj for path in SHIPPED for obj in yaml.safe_load_all((MANIFESTS / path).read_text()) if obj]


def install_shipped(cluster: KubeCluster) -> None:
    """Apply the CRDs and override ClusterRoles from manifests/ (replacing what an earlier test applied)."""
    client = kubernetes.dynamic.DynamicClient(cluster.api_client())
    crds = []
    for obj in shipped_objects():
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            resource.create(body=obj)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            current = resource.get(name=obj["metadata"]["name"])
            obj["metadata"]["resourceVersion"] = current.metadata.resourceVersion
            resource.replace(body=obj)
        if obj["kind"] == "CustomResourceDefinition":
            crds.append(obj["metadata"]["name"])
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api_client())
    wait_for(lambda: all(any(c.type == "Established" and c.status == "True"
                             for c in (ext.read_custom_resource_definition(n).status.conditions or []))
                         for n in crds), 30, f"CRDs {crds} Established")


def token_of(client: kubernetes.client.ApiClient) -> str:
    return client.configuration.api_key["authorization"].removeprefix("Bearer ")


def bound_account(cluster: KubeCluster, namespace: str, name: str, cluster_role: str,
                  cluster_wide: bool = False) -> kubernetes.client.ApiClient:
    """A ServiceAccount granted `cluster_role` in `namespace` (or everywhere), and a client acting as it."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api_client())
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role}
    client = cluster.as_service_account(namespace, name)
    if cluster_wide:
        rbac.create_cluster_role_binding({"metadata": {"name": f"{namespace}-{name}"}, "subjects": subject,
                                          "roleRef": role_ref})
    else:
        rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": name}, "subjects": subject,
                                                        "roleRef": role_ref})
    return client


def engine_deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {"metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {READY_DELAY_ANNOTATION: "1s"}},
                                  "spec": {"nodeSelector": FAKE_NODE_LABEL, "tolerations": [{"operator": "Exists"}],
                                           "terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.12.0"}]}}}}


def model_autoscaler(name: str, target: str, min_replicas: int, max_replicas: int, advisory: bool = False) -> dict:
    # no Prometheus URL is given to the controller: the policy sees no load and holds; the overrides decide
    spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}, "model": name,
            "selector": {"matchLabels": {"app": target}}, "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": {"source": "prometheus"}, "advisory": advisory}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelAutoscaler", "metadata": {"name": name}, "spec": spec}


def start_controller(api_client, namespace: str) -> Controller:
    config = ControllerConfig(namespace=namespace, interval_s=INTERVAL_S, metrics_host="127.0.0.1", metrics_port=0,
                              identity=f"ctl-{uuid.uuid4().hex[:6]}", lease_namespace=namespace,
                              lease_name="warmscale-controller", lease_s=6.0, renew_deadline_s=4.0, retry_s=0.5,
                              state_every_s=5.0, scale_reread_s=5.0)
    return Controller(config, api_client).start()


@dataclass
class ApiGround:
    cluster: KubeCluster
    namespace: str
    admin: kubernetes.client.ApiClient
    api_identity: kubernetes.client.ApiClient   # bound to warmscale-override-api-server only
    viewer_token: str
    operator_token: str
    operator_user: str
    deployment: str
    autoscaler: str

    def replicas(self) -> int:
        return kubernetes.client.AppsV1Api(self.admin).read_namespaced_deployment_scale(
            self.deployment, self.namespace).spec.replicas

    def scale_behind_its_back(self, replicas: int) -> None:
        """Someone else sets the Deployment's count (the pods follow; the policy then holds the new count)."""
        kubernetes.client.AppsV1Api(self.admin).patch_namespaced_deployment_scale(
            self.deployment, self.namespace, {"spec": {"replicas": replicas}})

    def autoscaler_object(self, name: str | None = None) -> dict:
        return kubernetes.client.CustomObjectsApi(self.admin).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name or self.autoscaler)

    def last_decision(self, name: str | None = None) -> dict:
        return (self.autoscaler_object(name).get("status") or {}).get("lastDecision") or {}

    def status_leader(self, name: str | None = None) -> str | None:
        return (self.autoscaler_object(name).get("status") or {}).get("leader")

    @contextlib.contextmanager
    def controller(self) -> Iterator[Controller]:
        controller = start_controller(self.admin, self.namespace)
        try:
            yield controller
        finally:
            controller.stop()

    @contextlib.contextmanager
    def serving(self, controller: Controller, janitor_every_s: float = 1.0) -> Iterator[ClusterApi]:
        api = ClusterApi(self.api_identity, controller.autoscalers, controller.elector.is_leader, host="127.0.0.1",
                         port=0, janitor_every_s=janitor_every_s).start()
        try:
            yield api
        finally:
            api.stop()


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.1, describe=None):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    seen = describe() if describe else last
    raise TimeoutError(f"{what}: not within {timeout_s} s (last: {seen!r})")
