"""The ModelAutoscaler spec: one pydantic model that both generates the CRD's OpenAPI schema
(autoscaler/controller/crd.py) and parses the objects the controller reads. Field names are the
CRD's camelCase; policy parameters are derived from the policy's own config, so their defaults
live in one place (WarmscaleConfig) and the CRD only says what a user overrides.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from autoscaler.policy.capacity import H100_LLAMA3_8B, ReplicaCapacity
from autoscaler.policy.warmscale import WarmscaleConfig

__all__ = ["ModelAutoscalerSpec", "PolicyParameters", "camel", "policy_kwargs", "replica_capacity"]

# Fields of WarmscaleConfig that the spec sets elsewhere (top level, slo, scaleToZero) or the controller owns.
_SPEC_OWNED = {"min_replicas", "max_replicas", "interval_s", "ttft_slo_s", "idle_grace_s"}


def camel(snake: str) -> str:
    """stable_window_s -> stableWindowSeconds (a trailing `_s` is spelt out)."""
    parts = snake.split("_")
    if parts[-1] == "s" and len(parts) > 1:
        parts[-1] = "seconds"
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _policy_parameters_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in WarmscaleConfig.model_fields.items():
        if name in _SPEC_OWNED:
            continue
        default = info.default
        text = (info.description or f"warmscale policy parameter {name}") + f" (default: {default})."
        fields[camel(name)] = (info.annotation | None, Field(None, description=text, json_schema_extra=_bounds(info)))
    model = create_model("PolicyParameters", __config__=ConfigDict(extra="forbid", frozen=True), **fields)
    model.__doc__ = "Parameters of the warmscale policy; unset ones keep the policy's defaults."
    return model


def _bounds(info) -> dict[str, float]:
    """Numeric bounds of a pydantic field, as OpenAPI keywords for the CRD."""
    out: dict[str, float] = {}
    for meta in info.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum")):
            value = getattr(meta, attr, None)
            if value is not None:
                out[key] = value
    return out


PolicyParameters = _policy_parameters_model()


class ScaleTargetRef(_Strict):
    """The object whose replica count the controller sets: anything with a scale subresource."""

    api_version: str = Field("apps/v1", alias="apiVersion", description="API version of the target, e.g. apps/v1.")
    kind: str = Field("Deployment", description="Kind of the target, e.g. Deployment, StatefulSet or a custom resource with a scale subresource.")
    name: str = Field(min_length=1, description="Name of the target in the ModelAutoscaler's namespace.")


class PodSelector(_Strict):
    """Which pods are this model's engine replicas."""

    match_labels: dict[str, str] = Field(alias="matchLabels", min_length=1,
                                         description="Labels every engine pod of this model carries.")


class Slo(_Strict):
    """Service-level objectives the policy sizes for."""

    ttft_seconds: float | None = Field(2.0, alias="ttftSeconds", gt=0,
                                       description="Time-to-first-token p95 target in seconds; unset turns TTFT feedback off.")


class Capacity(_Strict):
    """What one replica can serve (vLLM engine facts). Unset fields take the H100 Llama-3-8B profile."""

    max_num_seqs: int | None = Field(None, alias="maxNumSeqs", gt=0, description="vLLM --max-num-seqs.")
    kv_cache_tokens: int | None = Field(None, alias="kvCacheTokens", gt=0, description="Tokens that fit in one replica's KV cache.")
    prefill_tokens_per_second: float | None = Field(None, alias="prefillTokensPerSecond", gt=0,
                                                    description="Prompt tokens per second one saturated replica prefills.")
    decode_tokens_per_second: float | None = Field(None, alias="decodeTokensPerSecond", gt=0,
                                                   description="Generated tokens per second of one replica at its SLO batch.")


class ColdStart(_Strict):
    """How long a new replica takes to serve: scale-ups are sized this far ahead."""

    seconds: float | None = Field(None, ge=0, description="Seconds from ordering a replica to it being Ready (default: the capacity profile's).")


class Forecasting(_Strict):
    """Demand forecasting (pre-warm floors)."""

    enabled: bool = Field(False, description="Forecast the demand one cold start ahead from the model's rates "
                          "(10-minute windows, kept in the controller's memory) and hold the pre-warm planner's floor.")
    quantile: Literal["p50", "p90"] = Field("p90", description="Forecast quantile to size for.")


class ScaleToZero(_Strict):
    """Releasing every replica when the model is idle."""

    enabled: bool = Field(False, description="Allow 0 replicas; minReplicas 0 requires this.")
    idle_grace_seconds: float | None = Field(None, alias="idleGraceSeconds", ge=0,
                                             description="Idle seconds before scaling to zero (default: the policy's).")


class MetricsSource(_Strict):
    """Where the engines' metrics come from."""

    source: Literal["prometheus", "direct"] = Field(
        "prometheus", description="prometheus: PromQL against the controller's --prometheus-url; direct: scrape each Ready pod.")
    port: int = Field(8000, ge=1, le=65535, description="Engine metrics port (direct scraping).")
    path: str = Field("/metrics", pattern=r"^/", description="Engine metrics path (direct scraping).")
    prometheus_labels: dict[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")], str] = Field(
        default_factory=dict, alias="prometheusLabels",
        description="Label values the engines' series must also carry in Prometheus, besides model_name, e.g. "
                    "{namespace: llm}. Set them when several ModelAutoscalers serve one model name, so that each "
                    "reads only its own pods.")


class PolicySpec(_Strict):
    """The scaling policy and its parameters."""

    parameters: PolicyParameters = Field(default_factory=PolicyParameters,  # type: ignore[valid-type]
                                         description="Parameters of the warmscale policy; unset ones keep the policy's defaults.")


class ModelAutoscalerSpec(_Strict):
    """Scales one model's engine fleet on its LLM serving signals."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, json_schema_extra={
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas",
             "message": "spec.minReplicas must be <= spec.maxReplicas", "fieldPath": ".minReplicas"},
            {"rule": "self.minReplicas > 0 || (has(self.scaleToZero) && self.scaleToZero.enabled)",
             "message": "spec.minReplicas 0 requires spec.scaleToZero.enabled true", "fieldPath": ".minReplicas"},
        ]})

    scale_target_ref: ScaleTargetRef = Field(alias="scaleTargetRef", description=ScaleTargetRef.__doc__)
    model: str = Field(min_length=1, description="Model name as the engines report it (vLLM's model_name label).")
    selector: PodSelector = Field(description=PodSelector.__doc__)
    min_replicas: int = Field(1, alias="minReplicas", ge=0, description="Fewest replicas (0 needs scaleToZero.enabled).")
    max_replicas: int = Field(10, alias="maxReplicas", ge=1, description="Most replicas.")
    slo: Slo = Field(default_factory=Slo, description=Slo.__doc__)
    capacity: Capacity = Field(default_factory=Capacity, description=Capacity.__doc__)
    cold_start: ColdStart = Field(default_factory=ColdStart, alias="coldStart", description=ColdStart.__doc__)
    forecasting: Forecasting = Field(default_factory=Forecasting, description=Forecasting.__doc__)
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero, alias="scaleToZero", description=ScaleToZero.__doc__)
    metrics: MetricsSource = Field(default_factory=MetricsSource, description=MetricsSource.__doc__)
    policy: PolicySpec = Field(default_factory=PolicySpec, description=PolicySpec.__doc__)
    advisory: bool = Field(False, description="Decide and write status only; never change the target's replicas.")


def replica_capacity(spec: ModelAutoscalerSpec) -> ReplicaCapacity:
    base = H100_LLAMA3_8B
    c = spec.capacity
    return ReplicaCapacity(
        max_num_seqs=c.max_num_seqs or base.max_num_seqs,
        kv_cache_tokens=c.kv_cache_tokens or base.kv_cache_tokens,
        prefill_tokens_per_s=c.prefill_tokens_per_second or base.prefill_tokens_per_s,
        decode_tokens_per_s=c.decode_tokens_per_second or base.decode_tokens_per_s,
        cold_start_s=base.cold_start_s if spec.cold_start.seconds is None else spec.cold_start.seconds)


_SNAKE = {camel(name): name for name in WarmscaleConfig.model_fields}


def policy_kwargs(spec: ModelAutoscalerSpec, interval_s: float) -> dict[str, Any]:
    """WarmscaleConfig fields for this spec: only what the user set, so the policy's defaults hold."""
    kwargs: dict[str, Any] = {"min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
                              "interval_s": interval_s, "ttft_slo_s": spec.slo.ttft_seconds}
    if spec.scale_to_zero.idle_grace_seconds is not None:
        kwargs["idle_grace_s"] = spec.scale_to_zero.idle_grace_seconds
    for key, value in spec.policy.parameters.model_dump(exclude_none=True).items():
        kwargs[_SNAKE[key]] = value
    return kwargs

