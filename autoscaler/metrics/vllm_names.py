"""vLLM's Prometheus metric names, defined once in `autoscaler.contract` and re-exported here."""
from autoscaler.contract import (E2E_REQUEST_LATENCY, GENERATION_TOKENS, INTER_TOKEN_LATENCY, KV_CACHE_USAGE,
                                 KV_CACHE_USAGE_LEGACY, MODEL_LABEL, NUM_PREEMPTIONS, NUM_REQUESTS_RUNNING,
                                 NUM_REQUESTS_WAITING, PREFIX_CACHE_HITS, PREFIX_CACHE_QUERIES, PROMPT_TOKENS,
                                 REQUEST_QUEUE_TIME, REQUEST_SUCCESS, TIME_TO_FIRST_TOKEN)
from autoscaler.contract import request_rate_query as request_rate
from autoscaler.contract import token_rate_query as token_rate

__all__ = ["MODEL_LABEL", "NUM_REQUESTS_RUNNING", "NUM_REQUESTS_WAITING", "KV_CACHE_USAGE", "KV_CACHE_USAGE_LEGACY",
           "NUM_PREEMPTIONS", "PROMPT_TOKENS", "GENERATION_TOKENS", "REQUEST_SUCCESS", "TIME_TO_FIRST_TOKEN",
           "INTER_TOKEN_LATENCY", "E2E_REQUEST_LATENCY", "REQUEST_QUEUE_TIME", "PREFIX_CACHE_QUERIES",
           "PREFIX_CACHE_HITS", "request_rate", "token_rate"]
