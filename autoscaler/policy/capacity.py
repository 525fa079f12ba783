"""Per-replica capacity of one model on one replica: what a policy divides load by.

`ReplicaCapacity` is the one place a policy learns how much a replica can take. The simulator
builds it from its hardware profile; the live controller from the model's CRD (or a profile run).
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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_num_seqs: int = Field(gt=0)
    kv_cache_tokens: int = Field(gt=0)
    prefill_tokens_per_s: float = Field(gt=0)
    decode_tokens_per_s: float = Field(gt=0)
    cold_start_s: float = Field(ge=0)

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


# Llama-3-8B-Instruct (bf16) on one H100-80GB SXM, vLLM V1 defaults (chunked prefill on,
# gpu_memory_utilization 0.9, max_num_seqs 256). How each number is derived:
# - kv_cache_tokens: 0.9 x 80 GiB = 72 GiB, minus ~15 GiB weights (8.03e9 params x 2 B) and ~2-4
#   GiB activations/CUDA graphs leaves ~52-54 GiB. Llama-3-8B stores 32 layers x 8 KV heads x 128
#   dims x 2 (K and V) x 2 B = 128 KiB per token -> ~400-420k tokens. Matches the "GPU KV cache
#   size" vLLM logs for this model on an 80 GB card (config.json of meta-llama/Meta-Llama-3-8B:
#   num_hidden_layers 32, num_key_value_heads 8, head_dim 128).
# - prefill_tokens_per_s: ~2 x 8e9 = 16 GFLOP per prompt token; H100 SXM bf16 dense is ~989 TFLOP/s,
#   so 15k tokens/s is ~25 % MFU, the middle of the 10-20k tokens/s measured with vLLM for 8B
#   models at 1-2k-token prompts (attention and scheduling overheads included).
# - decode_tokens_per_s: a decode step reads the 16 GB of weights (~5 ms at 3.35 TB/s) plus the
#   batch's KV; at a batch of 256 with ~1k-token contexts that is ~32 GiB of KV (~10 ms), so a
#   step is ~20-30 ms with overheads -> 256 / 0.03 ~ 8.5k tokens/s with TPOT ~30 ms, well inside a
#   100 ms TPOT SLO. 8k tokens/s is used (vLLM's published H100 numbers for 8B models at high
#   concurrency are 6-10k output tokens/s).
# - cold_start_s: 60 s (pod start + image cached + 16 GB of weights from object storage at
#   ~1 GB/s + CUDA graph capture); PEERS.md: vLLM ready 65 s -> 23 s with a streaming loader.
H100_LLAMA3_8B = ReplicaCapacity(
    max_num_seqs=256,
    kv_cache_tokens=400_000,
    prefill_tokens_per_s=15_000.0,
    decode_tokens_per_s=8_000.0,
    cold_start_s=60.0,
)
