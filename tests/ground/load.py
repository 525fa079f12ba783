"""Load generation against a vLLM engine: token-id completions, streamed, timed per request."""
from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class LoadRequest:
    prompt_len: int
    max_tokens: int
    start_at: float = 0.0  # seconds after the load starts


@dataclass(frozen=True)
class RequestResult:
    sent_at: float
    ttft_s: float | None
    latency_s: float
    output_tokens: int
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)


def random_prompt(length: int, rng: random.Random, vocab: int = 2048) -> list[int]:
    return [rng.randrange(3, vocab) for _ in range(length)]


def _send(client: httpx.Client, engine, request: LoadRequest, prompt: list[int], t0: float) -> RequestResult:
    delay = t0 + request.start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sent = time.monotonic()
    body = {"model": engine.model, "prompt": prompt, "max_tokens": request.max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0, "stream_options": {"include_usage": True}}
    ttft, tokens = None, 0
    try:
        with client.stream("POST", f"{engine.base_url}/v1/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and ttft is None:
                    ttft = time.monotonic() - sent
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        return RequestResult(sent - t0, ttft, time.monotonic() - sent, tokens, error=repr(exc))
    return RequestResult(sent - t0, ttft, time.monotonic() - sent, tokens)


def run_load(engine, requests: list[LoadRequest], concurrency: int = 64, seed: int = 0,
             timeout_s: float = 300) -> list[RequestResult]:
    """Send `requests` (each at its `start_at`), at most `concurrency` in flight; results in request order."""
    rng = random.Random(seed)
    prompts = [random_prompt(r.prompt_len, rng) for r in requests]
    t0 = time.monotonic()
    with httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency)) as client, \
            ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(_send, client, engine, r, p, t0) for r, p in zip(requests, prompts)]
        return [f.result() for f in futures]


def burst(engine, n: int = 32, prompt_len: int = 256, max_tokens: int = 128, seed: int = 0) -> list[RequestResult]:
    """`n` requests at once: with --max-num-seqs 4 and a small KV cache, most of them wait."""
    return run_load(engine, [LoadRequest(prompt_len, max_tokens) for _ in range(n)], concurrency=n, seed=seed)
