"""Fit an engine profile to a real vLLM endpoint (used for the CPU engine of the test ground).

Measures, against a live OpenAI-compatible vLLM server that takes token-id prompts, with the
engine's own clock (vLLM's per-request queue / prefill / decode time histograms, stamped by
the engine core; see `run_timed` for why not the streamed chunks):

1. **Prefill**: one request at a time, prompts of several lengths, `max_tokens=1`; the engine's
   TTFT (queue + prefill time, one step) is fitted as `intercept + P / prefill_tokens_per_s`.
2. **Decode step vs batch**: the engine's decode time per generated token at B = 1 and at
   B = max_num_seqs (that many 129-token requests at once). The two points give
   `step_base + step_per_seq * B`. (A line through B = 2, 3 measured alone was dominated by
   noise on the shared 2-core machine.)
3. **Decode step vs context**: the same with one long prompt; its step above the short-prompt
   step, per cached token, is `step_per_kv_token_s`.
4. **KV capacity** from `vllm:cache_config_info` (num_gpu_blocks x block_size).
5. **Per-request overhead** (HTTP + API server + engine IPC, paid once per request before it
   reaches the scheduler): the median of the client's streamed TTFT minus the engine's, over
   the lone prefill requests of (1); it goes in `engine.request_overhead_s`.

Every measurement uses its own random prompts (distinct seeds): vLLM's prefix cache (on by
default) would otherwise serve a prompt seen before from cache. Load comes from
`tests.ground.load` (the ground's load generator).
"""
from __future__ import annotations

from pathlib import Path

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

__all__ = ["Endpoint", "EngineTimes", "engine_timings", "fit_profile", "kv_from_metrics", "run_timed"]


@dataclass
class Endpoint:
    base_url: str
    model: str


def kv_from_metrics(text: str) -> tuple[int, int] | None:
    """(num_gpu_blocks, block_size) from vllm:cache_config_info, if the server exports it."""
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            blocks = re.search(r'num_gpu_blocks="(\d+)"', line)
            size = re.search(r'block_size="(\d+)"', line)
            if blocks and size:
                return int(blocks.group(1)), int(size.group(1))
    return None


# vLLM's per-request histograms, stamped by the engine core's clock (EngineCoreEvent timestamps):
# queue = first SCHEDULED - QUEUED, prefill = first token - SCHEDULED, decode = last - first token
ENGINE_HISTOGRAMS = {"queue": "vllm:request_queue_time_seconds", "prefill": "vllm:request_prefill_time_seconds",
                     "decode": "vllm:request_decode_time_seconds"}


def engine_timings(metrics_text: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each ENGINE_HISTOGRAMS entry in a /metrics text, summed over label sets."""
    out = {k: [0.0, 0.0] for k in ENGINE_HISTOGRAMS}
    for line in metrics_text.splitlines():
        for key, name in ENGINE_HISTOGRAMS.items():
            for i, suffix in enumerate(("_sum", "_count")):
                if line.startswith(name + suffix + "{") or line.startswith(name + suffix + " "):
                    out[key][i] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass(frozen=True)
class EngineTimes:
    """Per-request means over one load, from the engine's own clock, and the client's results."""

    queue_s: float
    prefill_s: float
    decode_s: float
    client: list

    @property
    def ttft_s(self) -> float:
        """Engine-side TTFT: from the engine core receiving a request to its first token."""
        return self.queue_s + self.prefill_s


def run_timed(engine, requests, seed: int, concurrency: int | None = None, settle_s: float = 5.0) -> EngineTimes:
    """Send `requests` with the ground's load generator and read the engine-side means they caused.

    The engine's clock is used rather than the streamed chunks: on a CPU-starved machine the API
    server sometimes streams a request's first token only together with later ones, so the
    client's TTFT lies anywhere between the engine's TTFT and the whole latency.
    """
    from tests.ground.load import run_load

    before = engine_timings(httpx.get(f"{engine.base_url}/metrics", timeout=10).text)
    results = run_load(engine, requests, concurrency=concurrency or len(requests), seed=seed)
    bad = [r.error for r in results if r.error or r.ttft_s is None]
    if bad:
        raise RuntimeError(f"load request failed: {bad[0]}")
    n = len(requests)
    deadline = time.monotonic() + settle_s
    while True:   # the histograms are updated just after the last chunk is sent
        after = engine_timings(httpx.get(f"{engine.base_url}/metrics", timeout=10).text)
        if all(after[k][1] - before[k][1] >= n for k in after) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    mean = {}
    for k in ENGINE_HISTOGRAMS:
        count = after[k][1] - before[k][1]
        if count < n:
            raise RuntimeError(f"{ENGINE_HISTOGRAMS[k]}: {count:.0f} new observations for {n} requests")
        mean[k] = (after[k][0] - before[k][0]) / count
    return EngineTimes(mean["queue"], mean["prefill"], mean["decode"], results)


def _prefill(engine, prompt_len: int, repeats: int, seed: int) -> tuple[float, float]:
    """Median engine-side TTFT of a lone request (one prefill step), and median client - engine TTFT."""
    from tests.ground.load import LoadRequest

    eng, extra = [], []
    for i in range(repeats):
        t = run_timed(engine, [LoadRequest(prompt_len, 1)], seed=seed + i)
        eng.append(t.ttft_s)
        extra.append(t.client[0].ttft_s - t.ttft_s)
    return statistics.median(eng), statistics.median(extra)


def _decode_step(engine, batch: int, prompt_len: int, tokens: int, repeats: int, seed: int) -> float:
    """Median decode step time with `batch` sequences decoding together, from the engine's clock."""
    from tests.ground.load import LoadRequest

    vals = []
    for i in range(repeats):
        t = run_timed(engine, [LoadRequest(prompt_len, tokens) for _ in range(batch)], seed=seed + 100 * i)
        vals.append(t.decode_s / (tokens - 1))
    return statistics.median(vals)


def fit_profile(engine, *, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int,
                prompt_lens=(16, 128, 256, 512, 768, 1024, 1536), repeats: int = 5, decode_tokens: int = 129,
                long_prompt: int = 1536, cold_start_s: float | None = None, name: str = "tiny-llama-cpu",
                model: str = "tiny random Llama (tests/ground/tiny_model.py)", engine_args: Sequence[str] = (),
                seed: int = 0, log=print) -> dict:
    """Measure `engine` and return a profile as a dict (YAML-ready), with the fit's residuals.

    Every measurement uses its own random prompts (distinct seeds), so that vLLM's prefix cache
    never serves one measurement from another's KV. `engine_args` (the engine's command-line
    arguments) are recorded in `fit.engine_args`, so that a profile can be checked against the
    engine it claims to describe. `seed` offsets every prompt seed (a second fit on the same
    engine must pass another one, or it measures cached prompts).
    """
    t_start = time.monotonic()
    # warm-up: the first requests pay one-time costs
    _prefill(engine, 64, 3, seed=seed + 1)
    _decode_step(engine, 1, 16, 16, 1, seed=seed + 2)

    measured = [(p, *_prefill(engine, p, repeats, seed=seed + 10 + p)) for p in prompt_lens]
    log(f"prefill (engine clock): {', '.join(f'P={p}: {t * 1000:.1f} ms' for p, t, _ in measured)}")
    P = np.array([p for p, _, _ in measured], dtype=float)
    T = np.array([t for _, t, _ in measured])
    slope, intercept = np.polyfit(P, T, 1)
    slope = max(slope, 1e-9)
    # HTTP + API server + IPC: the client's TTFT above the engine's, for the same lone requests
    overhead = max(0.0, float(statistics.median(x for _, _, x in measured)))

    step1 = _decode_step(engine, 1, 16, decode_tokens, repeats, seed=seed + 1000)
    stepN = _decode_step(engine, max_num_seqs, 16, decode_tokens, repeats, seed=seed + 2000)
    tpot = [(1, step1), (max_num_seqs, stepN)]
    log(f"decode step: B=1: {step1 * 1000:.2f} ms, B={max_num_seqs}: {stepN * 1000:.2f} ms")
    B = np.array([b for b, _ in tpot], dtype=float)
    S = np.array([t for _, t in tpot])
    if max_num_seqs > 1:
        per_seq = (stepN - step1) / (max_num_seqs - 1)
        base = step1 - per_seq
    else:
        per_seq, base = 0.0, step1
    per_seq = max(per_seq, 0.0)
    base = max(base, 1e-6)

    long_tpot = _decode_step(engine, 1, long_prompt, decode_tokens, repeats, seed=seed + 5000)
    ctx_short = 16 + decode_tokens / 2
    ctx_long = long_prompt + decode_tokens / 2
    per_kv = max(0.0, (long_tpot - S[0]) / (ctx_long - ctx_short))
    log(f"decode step at {long_prompt}-token context: {long_tpot * 1000:.2f} ms -> {per_kv * 1e9:.1f} ns per KV token")

    kv = None
    try:
        kv = kv_from_metrics(httpx.get(f"{engine.base_url}/metrics", timeout=5).text)
    except httpx.HTTPError:
        pass
    kv_tokens = kv[0] * kv[1] if kv else max_model_len
    log(f"KV cache: {kv_tokens} tokens" + (f" ({kv[0]} blocks x {kv[1]})" if kv else " (metric missing: max_model_len)"))

    def rel_resid(pred, meas):
        return [round(float((p - m) / m), 4) for p, m in zip(pred, meas)]

    pred_ttft = intercept + slope * P
    pred_tpot = base + per_seq * B
    profile = {
        "name": name,
        "model": model,
        "accelerator": "CPU (vLLM CPU build), fitted by hack/calibrate_cpu_profile.py",
        "gpus_per_replica": 1,
        "engine": {
            "max_num_seqs": int(max_num_seqs),
            "max_num_batched_tokens": int(max_num_batched_tokens),
            "max_model_len": int(max_model_len),
            "kv_cache_tokens": int(kv_tokens),
            "prefill_tokens_per_s": round(float(1.0 / slope), 1),
            "step_base_s": round(float(base), 6),
            "step_per_seq_s": round(float(per_seq), 7),
            "step_per_kv_token_s": float(f"{per_kv:.3e}"),
            "request_overhead_s": round(float(overhead), 6),
        },
        "cold_start": {"scheduling_s": 0.0, "image_pull_s": 0.0, "weights_gb": 0.0, "loader_gbps": 1.0,
                       "warmup_s": round(float(cold_start_s or 0.0), 1)},
        "cpu": {"idle_cores": 0.92, "busy_cores": 1.0, "request_cores": 1.0},
        "reference_context_tokens": 256,
        "reference_tpot_s": 0.1,
        "sources": {
            "engine": "fitted by autoscaler/sim/calibrate.py against the real vLLM CPU engine of the test "
                      "ground (tests/ground/vllm.py DEFAULT_ARGS); see `fit` for the measurements",
            "max_num_seqs": "the engine's --max-num-seqs (tests/ground/vllm.py DEFAULT_ARGS)",
            "kv_cache_tokens": "vllm:cache_config_info num_gpu_blocks x block_size, read from /metrics",
            "cold_start": "warmup_s: measured time from process start to /health OK; no image or scheduling",
        },
        "fit": {
            "prefill": {"prompt_tokens": [int(p) for p in P], "engine_ttft_s": [round(float(t), 5) for t in T],
                        "intercept_s": round(float(intercept), 6),
                        "relative_residuals": rel_resid(pred_ttft, T)},
            "decode": {"batch": [int(b) for b in B], "tpot_s": [round(float(t), 5) for t in S],
                       "relative_residuals": rel_resid(pred_tpot, S)},
            "long_context": {"prompt_tokens": long_prompt, "tpot_s": round(float(long_tpot), 5)},
            "repeats": repeats,
            "engine_args": [str(a) for a in engine_args],
            "seconds": round(time.monotonic() - t_start, 1),
        },
    }
    _add_ladder_tiers(profile)
    return profile


def _add_ladder_tiers(profile: dict, ladder: Path | None = None) -> None:
    """Cold-start tiers from the measured ladder (autoscaler.sim.tiers), when its results are in the checkout."""
    from autoscaler.sim.tiers import tiers_from_ladder

    ladder = ladder or Path(__file__).resolve().parents[2] / "bench" / "results" / "coldstart_ladder.json"
    if not ladder.exists():
        return
    tiers, sources = tiers_from_ladder(ladder)
    profile["cold_start"]["tiers"] = tiers
    profile["sources"]["tiers"] = ("cold-start tiers from bench/results/coldstart_ladder.json (bench/coldstart.py, the "
                                   "real vLLM CPU engine, 1.98 GB checkpoint) by autoscaler/sim/tiers.py")
    for k, v in sources.items():
        profile["sources"][f"tiers.{k}"] = v
