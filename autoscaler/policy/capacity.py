"""Per-replica capacity of one model on one replica: the one capacity model of warmscale.

`ReplicaCapacity` is what the policy divides load by, what the pre-warm planner turns forecasts
into replicas with (`PlannerConfig.from_capacity`), what the simulator's oracle sizes its plan
with, and what the simulator's engine profile reduces to (`EngineProfile.to_capacity()`, the only
place it is derived: from the step-time model the simulated engine runs). The live controller
builds it from the model's CRD, falling back to `H100_LLAMA3_8B`, which is that profile's capacity
(tests/unit/test_sim_profile_cli.py checks they are equal).
"""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ReplicaCapacity", "H100_LLAMA3_8B"]


class ReplicaCapacity(BaseModel):
    """Capacity of one vLLM replica of one model.

    - `max_num_seqs`: concurrent sequences the engine schedules (vLLM `--max-num-seqs`).
    - `kv_cache_tokens`: tokens that fit in the KV cache (vLLM logs "GPU KV cache size: N tokens").
    - `prefill_tokens_per_s`: prompt tokens per second the replica prefills when saturated.
    - `decode_tokens_per_s`: generated tokens per second, aggregate over the batch, at the largest
      batch that still meets the TPOT SLO.
    - `cold_start_s`: seconds from "replica ordered" to "replica Ready" (pod start + weights + warm-up).
    - `step_base_s`, `step_per_seq_s`, `step_per_kv_token_s` (optional): the engine's step-time
      model (see autoscaler/sim/profile.py); with them `sustainable_rate` accounts for how decode
      slows as the batch and its context grow. `reference_tpot_s`: the TPOT the rates are quoted at.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_num_seqs: int = Field(gt=0)
    kv_cache_tokens: int = Field(gt=0)
    prefill_tokens_per_s: float = Field(gt=0)
    decode_tokens_per_s: float = Field(gt=0)
    cold_start_s: float = Field(ge=0)
    step_base_s: float | None = Field(None, ge=0)
    step_per_seq_s: float | None = Field(None, ge=0)
    step_per_kv_token_s: float | None = Field(None, ge=0)
    reference_tpot_s: float = Field(0.1, gt=0)

    @field_validator("prefill_tokens_per_s", "decode_tokens_per_s", "cold_start_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def busy_fraction(self, prompt_tokens_per_s: float, generation_tokens_per_s: float) -> float:
        """Replica-seconds of work per second for a token load: prefill and decode share the
        GPU's time (vLLM interleaves them in one step with chunked prefill), so their fractions add.
        1.0 = exactly one replica saturated."""
        return (prompt_tokens_per_s / self.prefill_tokens_per_s
                + generation_tokens_per_s / self.decode_tokens_per_s)

    @property
    def has_step_model(self) -> bool:
        return None not in (self.step_base_s, self.step_per_seq_s, self.step_per_kv_token_s)

    def sustainable_rate(self, prompt_tokens: float, output_tokens: float, tpot_s: float | None = None,
                         kv_headroom: float = 0.9) -> float:
        """Requests/s one replica serves in steady state with mean step time (~TPOT) = `tpot_s`,
        for requests of `prompt_tokens` in and `output_tokens` out (means).

        With the step model: at arrival rate L every step prefills L*P*s tokens and decodes
        B = L*O*s sequences (Little's law) holding about P + O/2 tokens each, so
            s = base + per_seq*L*O*s + per_kv*L*O*s*(P + O/2) + L*P*s/prefill_tps
        and s = tpot gives L. Without it: L = 1 / busy_fraction(P, O). The KV cache
        (`kv_headroom` of it) and max_num_seqs bound the batch either way.
        """
        tpot = float(tpot_s or self.reference_tpot_s)
        p, o = max(0.0, float(prompt_tokens)), max(1.0, float(output_tokens))
        ctx = p + o / 2
        if self.has_step_model:
            denom = (p / self.prefill_tokens_per_s + self.step_per_seq_s * o
                     + self.step_per_kv_token_s * o * ctx)
            lam = (1 - self.step_base_s / tpot) / denom if denom > 0 else math.inf
        else:
            lam = 1.0 / self.busy_fraction(p, o)
        lam = min(lam, self.kv_cache_tokens * kv_headroom / (o * tpot * ctx), self.max_num_seqs / (o * tpot))
        return max(lam, 1e-9)


# Llama-3.1-8B-Instruct (bf16) on one H100-80GB SXM, vLLM V1 defaults: the capacity of the engine
# profile autoscaler/sim/profiles/h100-llama-3.1-8b.yaml (every number's source is there), as
# EngineProfile.to_capacity() derives it; a test keeps the two equal.
H100_LLAMA3_8B = ReplicaCapacity(
    max_num_seqs=1024,
    kv_cache_tokens=440_000,
    prefill_tokens_per_s=25_000.0,
    decode_tokens_per_s=8829.951194451578,
    cold_start_s=31.03,
    step_base_s=0.0062,
    step_per_seq_s=0.00003,
    step_per_kv_token_s=5.1e-8,
    reference_tpot_s=0.1,
)
