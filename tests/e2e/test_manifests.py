"""The shipped manifests on the real API server: every object passes server-side dry-run, and the
CRD's OpenAPI schema and CEL rules reject bad ModelAutoscalers with a message naming the field."""
from __future__ import annotations

import copy

import kubernetes
import pytest

from tests.e2e.conftest import MANIFESTS, create_ma, create_or_replace, dynamic, model_autoscaler
from tests.e2e.kustomize import render

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("directory", ["", "examples", "warm-pool"])
def test_every_manifest_passes_server_side_dry_run(installed, directory):
    admin = dynamic(installed.api_client())
    objects = render(MANIFESTS / directory)
    assert objects, f"nothing rendered from {MANIFESTS / directory}"
    if directory:                     # their namespace must exist for the namespaced objects' dry-run
        for obj in objects:
            if obj["kind"] == "Namespace":
                create_or_replace(admin, obj)
    kinds = set()
    for obj in objects:
        create_or_replace(admin, obj, dry_run=True)
        kinds.add(obj["kind"])
    if directory == "":
        assert {"CustomResourceDefinition", "ClusterRole", "Deployment", "Service", "PodDisruptionBudget",
                "ServiceAccount", "Role", "Namespace"} <= kinds
    elif directory == "warm-pool":
        assert {"DaemonSet", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy"} <= kinds
    else:
        assert {"Deployment", "ModelAutoscaler"} <= kinds


VALID = model_autoscaler("bad", "m", "engine")


def _with(path: str, value):
    body = copy.deepcopy(VALID)
    node = body["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return body


_DELETE = object()


@pytest.mark.parametrize("path,value,field", [
    ("minReplicas", 5, "spec.minReplicas"),             # > maxReplicas 8? no: set below
    ("minReplicas", 0, "spec.minReplicas"),             # 0 without scaleToZero
    ("maxReplicas", 0, "spec.maxReplicas"),
    ("scaleTargetRef.name", _DELETE, "spec.scaleTargetRef.name"),
    ("model", "", "spec.model"),
    ("forecasting.quantile", "p99", "spec.forecasting.quantile"),
    ("policy.parameters.targetUtilization", 1.5, "spec.policy.parameters.targetUtilization"),
    ("metrics.source", "statsd", "spec.metrics.source"),
    ("metrics.prometheusLabels", {"bad-name": "x"}, "spec.metrics.prometheusLabels"),
])
def test_invalid_model_autoscaler_is_rejected_naming_the_field(installed, namespace, path, value, field):
    body = _with(path, value)
    if path == "minReplicas" and value == 5:
        body["spec"]["maxReplicas"] = 3
    with pytest.raises(kubernetes.client.ApiException) as err:
        create_ma(installed.api_client(), namespace, body)
    assert err.value.status == 422, err.value.body
    assert field in err.value.body, err.value.body


def test_a_valid_model_autoscaler_gets_the_defaults_filled_in(installed, namespace):
    created = create_ma(installed.api_client(), namespace, VALID)
    spec = created["spec"]
    assert spec["scaleToZero"] == {"enabled": False}
    assert spec["forecasting"] == {"enabled": False, "quantile": "p90"}
    assert spec["metrics"]["port"] == 8000 and spec["slo"]["ttftSeconds"] == 2.0
