"""Engine profiles: what one simulated replica can do, read from a YAML file with a source per number.

The step-time model is the usual one for a continuous-batching engine with chunked prefill
(vLLM V1): one scheduler step runs every running sequence's next decode token plus up to
`max_num_batched_tokens - batch` prompt tokens, and takes

    step_s = step_base_s                       # weights read once per step (memory bound)
           + step_per_seq_s * batch            # per-sequence work (sampling, small GEMM growth)
           + step_per_kv_token_s * kv_tokens   # attention reads every cached token of the batch
           + prefill_tokens / prefill_tokens_per_s

A profile is the one source of truth for a replica's capacity: `to_capacity()` gives the
`ReplicaCapacity` that policies divide load by, derived from the same numbers the simulator runs.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["EngineProfile", "EngineParams", "ColdStart", "ColdTier", "TIERS", "CpuModel", "load_profile",
           "PROFILE_NAMES", "DEFAULT_PROFILE"]

DEFAULT_PROFILE = "h100-llama-3.1-8b"


class EngineParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int = Field(gt=0, description="vLLM --max-num-seqs")
    max_num_batched_tokens: int = Field(gt=0, description="token budget of one scheduler step")
    max_model_len: int = Field(gt=0, description="longest prompt + output a request may have")
    kv_cache_tokens: int = Field(gt=0, description="tokens the KV cache holds")
    prefill_tokens_per_s: float = Field(gt=0)
    step_base_s: float = Field(ge=0)
    step_per_seq_s: float = Field(ge=0)
    step_per_kv_token_s: float = Field(ge=0)
    # HTTP + API server + engine IPC before a request reaches the scheduler (adds to TTFT)
    request_overhead_s: float = Field(default=0.0, ge=0)


# Cold-start tiers, coldest first. Which one a start pays depends on the node it lands on
# (autoscaler.sim.nodes): `cold` no image on the node (image pull + weights from object storage +
# engine start); `image` the image is on the node, weights come from object storage; `staged` the
# weights are on the node too (the warm pool); `asleep` an engine of the model sleeps on the node
# (vLLM sleep mode) and only wakes up.
TIERS = ("cold", "image", "staged", "asleep")


class ColdTier(BaseModel):
    """One tier's stages, seconds from the scale decision to Ready; the tier's cold start is their sum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduling_s: float = Field(default=0.0, ge=0)
    image_pull_s: float = Field(default=0.0, ge=0)
    weights_s: float = Field(default=0.0, ge=0)     # weights into the engine (fetch + load)
    engine_s: float = Field(default=0.0, ge=0)      # process start, engine init, KV profiling, warm-up
    wake_s: float = Field(default=0.0, ge=0)        # sleep mode: wake-up of an engine that slept

    @property
    def total_s(self) -> float:
        return self.scheduling_s + self.image_pull_s + self.weights_s + self.engine_s + self.wake_s


class ColdStart(BaseModel):
    """A cold start is scheduling + image pull + weight load (size / bandwidth) + engine warm-up.

    That one number (`total_s`) is what the simulator uses unless it is given a node fleet
    (`SimConfig.nodes`); then each start pays the tier of the node it lands on, from `tiers`
    (a subset of TIERS: a tier a profile lacks, e.g. `asleep` on a platform without sleep mode, is
    never offered).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduling_s: float = Field(ge=0)
    image_pull_s: float = Field(ge=0)
    weights_gb: float = Field(ge=0)
    loader_gbps: float = Field(gt=0)
    warmup_s: float = Field(ge=0)
    tiers: dict[str, ColdTier] | None = None

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, v):
        if v is not None:
            unknown = sorted(set(v) - set(TIERS))
            if unknown:
                raise ValueError(f"unknown cold-start tier(s) {unknown}: expected some of {', '.join(TIERS)}")
            if not v:
                raise ValueError("tiers: give at least one tier, or leave tiers out")
        return v

    def tier_s(self, tier: str) -> float:
        """Seconds from the decision to Ready for a start in `tier` (`total_s` when no tiers are given)."""
        if self.tiers is None:
            return self.total_s
        try:
            return self.tiers[tier].total_s
        except KeyError:
            raise KeyError(f"cold-start tier {tier!r} is not in this profile (it has {', '.join(self.tiers)})") from None

    def has_tier(self, tier: str) -> bool:
        return self.tiers is None or tier in self.tiers

    @property
    def weight_load_s(self) -> float:
        return self.weights_gb / self.loader_gbps

    @property
    def total_s(self) -> float:
        return self.scheduling_s + self.image_pull_s + self.weight_load_s + self.warmup_s


class CpuModel(BaseModel):
    """CPU use of a GPU-bound vLLM server, in cores, relative to the pod's CPU request.

    The engine's scheduler/busy loop keeps about one core busy whenever the server is up, a
    little more while it steps; so CPU utilisation is near-constant and says almost nothing
    about load. This is what the HPA-on-CPU baseline sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_cores: float = Field(ge=0, default=0.92)
    busy_cores: float = Field(ge=0, default=1.0)
    request_cores: float = Field(gt=0, default=1.0)

    def utilization(self, busy_fraction: float) -> float:
        b = min(1.0, max(0.0, busy_fraction))
        return (self.idle_cores + (self.busy_cores - self.idle_cores) * b) / self.request_cores


class EngineProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    accelerator: str
    engine: EngineParams
    cold_start: ColdStart
    cpu: CpuModel = CpuModel()
    gpus_per_replica: int = Field(default=1, gt=0)
    # Context length (tokens per running sequence) at which `decode_tokens_per_s` is quoted.
    reference_context_tokens: int = Field(default=1280, gt=0)
    # The TPOT at which `decode_tokens_per_s` and `sustainable_rate` are computed.
    reference_tpot_s: float = Field(default=0.1, gt=0)
    sources: dict[str, str] = Field(default_factory=dict)
    fit: dict | None = None   # calibration details for fitted profiles (residuals, load levels)

    # ------------------------------------------------------------------ step-time model
    def step_s(self, batch: int, kv_tokens: float, prefill_tokens: float = 0.0) -> float:
        e = self.engine
        return (e.step_base_s + e.step_per_seq_s * batch + e.step_per_kv_token_s * kv_tokens
                + prefill_tokens / e.prefill_tokens_per_s)

    def decode_tokens_per_s(self, context_tokens: float | None = None, tpot_s: float | None = None) -> float:
        """Aggregate decode tokens/s at the largest batch whose step time meets `tpot_s`,
        bounded by max_num_seqs and the KV cache, with `context_tokens` per sequence."""
        e = self.engine
        ctx = float(context_tokens or self.reference_context_tokens)
        tpot = float(tpot_s or self.reference_tpot_s)
        per = e.step_per_seq_s + e.step_per_kv_token_s * ctx
        b_tpot = (tpot - e.step_base_s) / per if per > 0 else math.inf
        b = max(1.0, min(float(e.max_num_seqs), e.kv_cache_tokens / ctx, b_tpot))
        return b / self.step_s(int(b), b * ctx)

    def sustainable_rate(self, prompt_tokens: float, output_tokens: float, tpot_s: float | None = None,
                         kv_headroom: float = 0.9) -> float:
        """Requests/s one replica serves in steady state: `ReplicaCapacity.sustainable_rate` of this
        profile's capacity (the one capacity model)."""
        return self.to_capacity().sustainable_rate(prompt_tokens, output_tokens, tpot_s, kv_headroom)

    def idle_ttft_s(self, prompt_tokens):
        """TTFT of a prompt alone on an idle replica: its chunks of `max_num_batched_tokens`, one
        step each (base + attention over the chunks already cached + prefill), plus the request
        overhead. Works on numbers and numpy arrays."""
        import numpy as np

        e = self.engine
        p = np.asarray(prompt_tokens, dtype=np.float64)
        chunks = np.maximum(1.0, np.ceil(p / e.max_num_batched_tokens))
        cached = e.max_num_batched_tokens * chunks * (chunks - 1) / 2   # sum of tokens already in cache
        out = (e.request_overhead_s + chunks * e.step_base_s + p / e.prefill_tokens_per_s
               + e.step_per_kv_token_s * np.minimum(cached, p * chunks))
        return float(out) if out.ndim == 0 else out

    def to_capacity(self):
        """The policy's view of one replica (autoscaler.policy.capacity.ReplicaCapacity)."""
        from autoscaler.policy.capacity import ReplicaCapacity

        e = self.engine
        return ReplicaCapacity(
            max_num_seqs=e.max_num_seqs,
            kv_cache_tokens=e.kv_cache_tokens,
            prefill_tokens_per_s=e.prefill_tokens_per_s,
            decode_tokens_per_s=self.decode_tokens_per_s(),
            cold_start_s=self.cold_start.total_s,
            step_base_s=e.step_base_s,
            step_per_seq_s=e.step_per_seq_s,
            step_per_kv_token_s=e.step_per_kv_token_s,
            reference_tpot_s=self.reference_tpot_s,
        )


def _profiles_dir() -> Path:
    return Path(str(resources.files("autoscaler.sim").joinpath("profiles")))


def PROFILE_NAMES() -> list[str]:  # noqa: N802 - a function so new files show up
    return sorted(p.stem for p in _profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path | None = None) -> EngineProfile:
    """Load a profile by name (a file in autoscaler/sim/profiles/) or by path."""
    name_or_path = name_or_path or DEFAULT_PROFILE
    path = Path(name_or_path)
    if not path.exists():
        candidate = _profiles_dir() / f"{name_or_path}.yaml"
        if not candidate.exists():
            raise FileNotFoundError(f"profile {str(name_or_path)!r}: no such file, and not one of "
                                    f"{', '.join(PROFILE_NAMES())}")
        path = candidate
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile is a YAML mapping, got {type(data).__name__}")
    try:
        return EngineProfile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid profile: {exc}") from exc
