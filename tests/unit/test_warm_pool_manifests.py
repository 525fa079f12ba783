"""The shipped warm-pool manifests agree with the code: the plan ConfigMap parses as a plan, the
DaemonSet follows it on its own node with labels, and the example engine prefers the label the agent sets."""
from __future__ import annotations

import json
from pathlib import Path

from loader.warmplan import label_key, parse_plan
from tests.e2e.kustomize import render

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_the_shipped_plan_parses_and_the_daemonset_reads_it_on_its_own_node():
    objects = render(MANIFESTS / "warm-pool")
    plan_cm = next(o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "warmscale-warm-plan")
    plan = parse_plan(json.loads(plan_cm["data"]["plan.json"]))
    assert plan.models_for("any-node") == []
    (ds,) = by_kind(objects, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = container["args"][0]
    assert "warm-plan" in script and "--label-node" in script and '--node "$NODE_NAME"' in script
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # hostPath (the node's NVMe) needs a namespace whose Pod Security level allows it.
    (namespace,) = by_kind(objects, "Namespace")
    assert ds["metadata"]["namespace"] == namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "warmscale-warm-plan")
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert "subPath" not in mount and f"{mount['mountPath']}/plan.json" in script


def test_warm_pool_rbac_is_get_and_patch_on_nodes_only():
    objects = render(MANIFESTS / "warm-pool")
    (role,) = by_kind(objects, "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    (sa,) = by_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    (ds,) = by_kind(objects, "DaemonSet")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_example_engine_prefers_nodes_labelled_for_its_model():
    objects = render(MANIFESTS / "examples")
    (deployment,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] != "warmscale-router"]
    template = deployment["spec"]["template"]
    model = template["metadata"]["labels"]["warmscale.io/model"]
    preferred = template["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"]: e["values"] for term in preferred for e in term["preference"]["matchExpressions"]}
    assert keys == {label_key(model): ["true"]}
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in template["spec"]["affinity"]["nodeAffinity"]


def test_the_controller_may_get_and_update_the_plan_configmap_and_nothing_else_there():
    objects = render(MANIFESTS / "warm-pool")
    (role,) = by_kind(objects, "Role")
    plan_cm = next(o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "warmscale-warm-plan")
    assert role["metadata"]["namespace"] == plan_cm["metadata"]["namespace"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [plan_cm["metadata"]["name"]], "verbs": ["get", "update"]}]
    (binding,) = by_kind(objects, "RoleBinding")
    controller_sa = next(o for o in render(MANIFESTS) if o["kind"] == "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": controller_sa["metadata"]["name"],
                                    "namespace": controller_sa["metadata"]["namespace"]}]
