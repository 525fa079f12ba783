"""The ModelAutoscaler CustomResourceDefinition, generated from the pydantic spec (autoscaler/controller/spec.py).

    python -m autoscaler.controller.crd > manifests/crd/modelautoscaler.yaml

A test checks that the file in manifests/ is what this module generates.
"""
from __future__ import annotations

import sys
from typing import Any

import yaml

from autoscaler.controller.spec import ModelAutoscalerSpec

__all__ = ["GROUP", "VERSION", "KIND", "PLURAL", "API_VERSION", "CONDITION_TYPES", "RECENT_DECISIONS", "crd", "crd_yaml"]

GROUP = "autoscaling.warmscale.io"
VERSION = "v1alpha1"
KIND = "ModelAutoscaler"
PLURAL = "modelautoscalers"
API_VERSION = f"{GROUP}/{VERSION}"
CONDITION_TYPES = ("Ready", "MetricsAvailable", "ScalingLimited", "Overridden")
RECENT_DECISIONS = 10

_DROP = {"title", "additionalProperties"}


def openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema as a Kubernetes structural OpenAPI v3 schema: $refs inlined,
    `X | None` as an optional X, draft-2020 exclusive bounds as OpenAPI 3.0 booleans, constrained
    map keys as a CEL rule."""
    defs = schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            resolved = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
            resolved.update({k: v for k, v in node.items() if k != "$ref"})
            return convert(resolved)
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            merged = {**convert(options[0]), **{k: v for k, v in node.items() if k != "anyOf"}}
            return convert(merged)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key == "$defs" or (key == "default" and value is None):
                continue
            if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "properties":
                out[key] = {name: _with_object_default(convert(prop), name in node.get("required", ()))
                            for name, prop in value.items()}
            elif key == "additionalProperties" and isinstance(value, dict):
                out[key] = convert(value)
            elif key == "patternProperties":    # not structural: a CEL rule checks the keys instead
                (pattern, item), = value.items()
                out["additionalProperties"] = convert(item)
                out["x-kubernetes-validations"] = [{"rule": f"self.all(k, k.matches('{pattern}'))",
                                                    "message": f"every key must match {pattern}"}]
            else:
                out[key] = value
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = convert(node["additionalProperties"])
        return out

    return convert(schema)


def _with_object_default(prop: dict[str, Any], required: bool) -> dict[str, Any]:
    # An optional sub-object defaults to {} so the API server fills in its fields' defaults.
    if not required and prop.get("type") == "object" and "properties" in prop and "default" not in prop:
        return {**prop, "default": {}}
    return prop


def _status_schema() -> dict[str, Any]:
    number, integer, string = {"type": "number"}, {"type": "integer"}, {"type": "string"}
    decision = {
        "type": "object", "description": "One decision of the policy (after overrides).",
        "properties": {
            "time": {**string, "format": "date-time"}, "current": integer, "desired": integer,
            "reason": {**string, "description": "Machine-readable reason (autoscaler.contract.Reason)."},
            "signal": {**string, "description": "The signal that drove the decision."},
            "detail": {**string, "description": "One line with the numbers."},
            "explain": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                        "description": "The numbers behind the decision (need per signal, lead, panic, limits applied)."},
        }}
    condition = {
        "type": "object", "required": ["type", "status"],
        "properties": {"type": {**string, "enum": list(CONDITION_TYPES)},
                       "status": {**string, "enum": ["True", "False", "Unknown"]},
                       "reason": string, "message": string,
                       "lastTransitionTime": {**string, "format": "date-time"},
                       "observedGeneration": integer}}
    return {
        "type": "object", "description": "What the controller last saw and decided.",
        "properties": {
            "observedGeneration": {**integer, "description": "The spec generation the status describes."},
            "currentReplicas": {**integer, "description": "Ready plus starting replicas."},
            "readyReplicas": integer, "loadingReplicas": integer,
            "pendingReplicas": {**integer, "description": "Pods that cannot be scheduled (not counted as capacity)."},
            "desiredReplicas": {**integer, "description": "Replicas the last decision asked for."},
            "targetReplicas": {**integer, "description": "The scale target's spec.replicas as last read or written."},
            "lastScaleTime": {**string, "format": "date-time"},
            "lastDecision": decision,
            "recentDecisions": {"type": "array", "maxItems": RECENT_DECISIONS, "items": decision,
                                "description": f"The last {RECENT_DECISIONS} decisions that changed the count or reason, newest first."},
            "conditions": {"type": "array", "items": condition, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]},
            "policyState": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                            "description": "The policy's serialised state, restored by a new or restarted controller."},
            "policyStateTime": {**string, "format": "date-time"},
            "forecastHistory": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                "description": "The forecaster's windows of demand (spec.forecasting), restored by a new or "
                                               "restarted controller."},
            "leader": {**string, "description": "Identity of the controller replica that wrote this status."},
            "activation": {
                "type": "object", "description": "Written by a router when it starts holding a request of this model "
                                                 "at zero: the controller decides at once.",
                "properties": {"requestedAt": {**string, "format": "date-time"},
                               "heldRequests": {**integer, "minimum": 0},
                               "router": {**string, "description": "Identity of the router that wrote it."}}},
        }}


def crd() -> dict[str, Any]:
    spec_schema = openapi(ModelAutoscalerSpec.model_json_schema(by_alias=True))
    spec_schema["description"] = ModelAutoscalerSpec.__doc__
    columns = [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Target", "type": "string", "jsonPath": ".spec.scaleTargetRef.name"},
        {"name": "Min", "type": "integer", "jsonPath": ".spec.minReplicas"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxReplicas"},
        {"name": "Current", "type": "integer", "jsonPath": ".status.currentReplicas"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.lastDecision.reason"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": KIND.lower(), "shortNames": ["ma"],
                      "categories": ["warmscale"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "ModelAutoscaler scales one LLM model's engine replicas on queue, KV-cache and token signals.",
                    "required": ["spec"],
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "metadata": {"type": "object"}, "spec": spec_schema,
                                   "status": _status_schema()}}},
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m autoscaler.controller.crd` from autoscaler/controller/spec.py; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(crd_yaml())
