"""The ModelAutoscaler CRD: generated from the pydantic spec, in sync with manifests/, documented."""
from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from autoscaler.controller.crd import crd, crd_yaml
from autoscaler.controller.spec import ModelAutoscalerSpec, camel, policy_kwargs, replica_capacity
from autoscaler.policy.capacity import H100_LLAMA3_8B
from autoscaler.policy.warmscale import WarmscaleConfig

CRD_FILE = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "modelautoscaler.yaml"


def test_shipped_crd_is_what_the_spec_generates():
    assert CRD_FILE.read_text() == crd_yaml(), "run: python -m autoscaler.controller.crd > manifests/crd/modelautoscaler.yaml"


def _walk(node, path="spec"):
    for name, prop in node.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from _walk(prop, f"{path}.{name}")


def test_every_spec_field_is_described_for_kubectl_explain():
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [p for p, prop in _walk(spec) if not prop.get("description")]
    assert not undocumented


def test_schema_is_structural():
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, prop in _walk(spec):
        assert "type" in prop or "x-kubernetes-preserve-unknown-fields" in prop, path
        assert not {"anyOf", "$ref", "title"} & set(prop), path


def test_policy_parameters_come_from_the_policy_config():
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    params = spec["properties"]["policy"]["properties"]["parameters"]["properties"]
    assert params["stableWindowSeconds"]["minimum"] == 0 and params["stableWindowSeconds"]["exclusiveMinimum"] is True
    assert params["targetUtilization"]["maximum"] == 1.0
    assert "default: 300.0" in params["stableWindowSeconds"]["description"]
    assert set(params) == {camel(n) for n in WarmscaleConfig.model_fields} - {
        "minReplicas", "maxReplicas", "intervalSeconds", "ttftSloSeconds", "idleGraceSeconds"}


def _spec(**extra):
    return ModelAutoscalerSpec.model_validate({"scaleTargetRef": {"name": "d"}, "model": "m",
                                               "selector": {"matchLabels": {"app": "d"}}, **extra})


def test_only_what_the_user_sets_reaches_the_policy():
    spec = _spec(minReplicas=2, maxReplicas=9, policy={"parameters": {"stableWindowSeconds": 120}},
                 scaleToZero={"enabled": True, "idleGraceSeconds": 30})
    kwargs = policy_kwargs(spec, interval_s=2.0)
    assert kwargs == {"min_replicas": 2, "max_replicas": 9, "interval_s": 2.0, "ttft_slo_s": 2.0,
                      "idle_grace_s": 30, "stable_window_s": 120}
    WarmscaleConfig(**kwargs)


def test_capacity_defaults_to_the_h100_profile_and_takes_overrides():
    cap = replica_capacity(_spec(capacity={"maxNumSeqs": 8}, coldStart={"seconds": 5}))
    assert cap.max_num_seqs == 8 and cap.cold_start_s == 5
    assert cap.kv_cache_tokens == H100_LLAMA3_8B.kv_cache_tokens


def test_unknown_field_is_an_error_naming_it():
    with pytest.raises(pydantic.ValidationError, match="stableWindow"):
        _spec(policy={"parameters": {"stableWindow": 1}})
