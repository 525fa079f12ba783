"""vLLM's Prometheus metric names, defined once for the whole project.

Source: vllm-project/vllm docs/design/metrics.md and vllm/v1/metrics/loggers.py. Every vLLM series
carries a `model_name` label. `vllm:gpu_cache_usage_perc` was renamed `vllm:kv_cache_usage_perc`
and removed in 0.12; readers fall back to the old name for older engines.
"""
from __future__ import annotations

MODEL_LABEL = "model_name"

NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
KV_CACHE_USAGE_LEGACY = "vllm:gpu_cache_usage_perc"
NUM_PREEMPTIONS = "vllm:num_preemptions_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"


def request_rate(window: str = "1m", by: str = MODEL_LABEL) -> str:
    """PromQL: finished requests per second, per model."""
    return f"sum by ({by}) (rate({REQUEST_SUCCESS}[{window}]))"


def token_rate(counter: str, window: str = "1m", by: str = MODEL_LABEL) -> str:
    """PromQL: prompt or generation tokens per second, per model."""
    return f"sum by ({by}) (rate({counter}[{window}]))"
