"""A CPU profile fitted by the calibration predicts the real vLLM CPU engine's TTFT at two load levels.

The profile is fitted by autoscaler/sim/calibrate.py (the procedure behind
hack/calibrate_cpu_profile.py and the committed autoscaler/sim/profiles/tiny-llama-cpu.yaml)
against the test ground's engine, here and now, from lone requests (prefill, per-request
overhead) and 129-token decodes at batch 1 and 4 and at a long context. The engine then serves
two load patterns the fit never saw, and the simulator's replica model, fed the same arrivals,
must predict the mean TTFT the client sees in each:

* light: 384-token prompts one at a time, 0.4 s apart (TTFT = overhead + one prefill step);
* heavy: a burst of 16 at once against --max-num-seqs 4: four waves, so TTFT is dominated by
  waiting for the earlier waves' 128-token decodes, with 4 x 384 prompt tokens prefilled per wave.

Why the fit is made here rather than read from the committed YAML: the engine shares two cores
with whatever else runs on the machine, and its step time moves with that by 2-3x (on the
development machine one 16 x 48-token burst, repeated, gave a mean TTFT of 0.43, 0.50 and 0.70 s within
one minute). A fixed profile describes the machine as it was when fitted; what this test checks
is that the fitted step model (prefill rate, decode step vs batch and context, per-request
overhead) together with the simulator's scheduler (FCFS admission under max_num_seqs, chunked
prefill, waves) predicts unseen load. tests/unit/test_sim_profile_cli.py checks that the
committed YAML was fitted against this engine's arguments.

Causes of the earlier mismatch, fixed here and in the calibration: (1) vLLM's prefix cache is on
by default and the light and heavy levels used the same random prompts (same seed), so half of
the heavy burst was served from cache; every level and every calibration measurement now has its
own prompts. (2) The full-batch decode step was estimated from the gap between a burst's waves
of streamed first tokens, and the batch-1 step from client latencies; on a CPU-starved machine
the API server streams first tokens late (sometimes together with the last), which inflated the
full-batch step ~1.5-2x. Decode and prefill are now timed with the engine's own clock
(vLLM's per-request queue/prefill/decode histograms); the client's streamed TTFT minus the
engine's, for lone requests, is the per-request overhead.

Tolerances, on medians of three repeats:

* light: |predicted - measured| <= 40 % of measured + 10 ms. Between the fit and the
  measurement (seconds apart) the machine's load changes; repeats of the same calibration
  measurement spread by up to ~25 %, and the linear prefill fit's residuals reach ~20 % at the
  ends of its range. 10 ms absorbs HTTP/stream jitter at this level (~20-40 ms). A model without
  the per-request overhead misses by more. The level asks for 2 tokens, so a first token streamed
  late together with later ones is late by one decode step at most.
* heavy: predicted within a factor 2 of measured. The burst's mean TTFT is the sum of ~400 decode
  steps and 4 prefills taken while 16 client threads, the API server and the engine share two
  cores; on the development machine the same burst's mean moved by up to 1.6x between repeats a
  minute apart, beyond the light level's band. A factor 2 still separates models: one without the
  max_num_seqs queue predicts less than half of the four-wave model's figure (checked below).
"""
from __future__ import annotations

import statistics

import numpy as np
import pytest

from autoscaler.sim.calibrate import fit_profile, run_timed
from autoscaler.sim.engine import Replica, Request
from autoscaler.sim.profile import EngineProfile, load_profile
from tests.ground.load import LoadRequest
from tests.ground.vllm import DEFAULT_ARGS

pytestmark = pytest.mark.integration

LIGHT_REL_TOL = 0.40
LIGHT_ABS_TOL_S = 0.010
HEAVY_FACTOR = 2.0
REPEATS = 3
# far from the calibration's seeds (0 - ~6,000 plus `seed`): no shared prompt prefixes
FIT_SEED = 100_000
LEVEL_SEEDS = {"light": 200_000, "heavy": 300_000}
LEVELS = {
    "light": [LoadRequest(384, 2, start_at=0.4 * i) for i in range(8)],
    "heavy": [LoadRequest(384, 128) for _ in range(16)],
}


def _arg(name: str) -> int:
    args = list(DEFAULT_ARGS)
    return int(args[args.index(name) + 1])


@pytest.fixture(scope="module")
def fitted_profile(vllm_engine) -> EngineProfile:
    committed = load_profile("tiny-llama-cpu")
    data = fit_profile(vllm_engine, max_num_seqs=_arg("--max-num-seqs"),
                       max_num_batched_tokens=committed.engine.max_num_batched_tokens,
                       max_model_len=_arg("--max-model-len"), repeats=5, engine_args=DEFAULT_ARGS, seed=FIT_SEED,
                       log=lambda msg: print(f"fit: {msg}"))
    return EngineProfile.model_validate(data)


def _predict(profile: EngineProfile, requests: list[LoadRequest]) -> float:
    """Mean TTFT as the client sees it (request_overhead_s before the scheduler, then the
    simulator's replica model) for `requests` sent at their start_at."""
    n = len(requests)
    first = np.full(n, np.nan)
    done = np.full(n, np.nan)
    rep = Replica(0, profile, first, done, [0] * 32)
    overhead = profile.engine.request_overhead_s
    sent = np.array([r.start_at for r in requests], dtype=float)
    for i in np.argsort(sent, kind="stable").tolist():
        r = requests[i]
        reach = sent[i] + overhead
        rep.advance(reach)
        rep.add(Request(i, sent[i], r.prompt_len, r.max_tokens), reach)
    rep.advance(1e6)
    assert not np.isnan(first).any(), "the model never served some requests"
    return float(np.mean(first - sent))


def _measure(engine, requests: list[LoadRequest], seed: int) -> tuple[float, float]:
    """Median over REPEATS of the mean streamed TTFT the client sees, each repeat with fresh
    prompts; and the same for the engine's own TTFT (queue + prefill, reported only)."""
    client_means, engine_means = [], []
    for k in range(REPEATS):
        t = run_timed(engine, requests, seed=seed + 1000 * k)
        client_means.append(statistics.mean(r.ttft_s for r in t.client))
        engine_means.append(t.ttft_s)
    return statistics.median(client_means), statistics.median(engine_means)


def _within_tolerance(level: str, predicted: float, measured: float) -> bool:
    if level == "light":
        return abs(predicted - measured) <= LIGHT_REL_TOL * measured + LIGHT_ABS_TOL_S
    return measured / HEAVY_FACTOR <= predicted <= measured * HEAVY_FACTOR


@pytest.mark.parametrize("level", list(LEVELS))
def test_fitted_cpu_profile_predicts_ttft(vllm_engine, fitted_profile, level):
    requests = LEVELS[level]
    measured, engine_side = _measure(vllm_engine, requests, LEVEL_SEEDS[level])
    predicted = _predict(fitted_profile, requests)
    committed = _predict(load_profile("tiny-llama-cpu"), requests)
    print(f"{level}: mean TTFT measured {measured * 1000:.1f} ms, predicted {predicted * 1000:.1f} ms "
          f"(committed profile: {committed * 1000:.1f} ms); engine clock: {engine_side * 1000:.1f} ms")
    assert _within_tolerance(level, predicted, measured), (
        f"{level}: predicted mean TTFT {predicted * 1000:.1f} ms, measured {measured * 1000:.1f} ms")


def test_a_model_without_queueing_would_fail_the_heavy_level(fitted_profile):
    """The heavy tolerance separates models: serving the whole burst at once (no max_num_seqs
    queue) predicts less than half of what the four-wave model does."""
    unlimited = fitted_profile.model_copy(update={"engine": fitted_profile.engine.model_copy(
        update={"max_num_seqs": 64, "kv_cache_tokens": 64 * 2048})})
    waves = _predict(fitted_profile, LEVELS["heavy"])
    no_queue = _predict(unlimited, LEVELS["heavy"])
    assert no_queue * HEAVY_FACTOR < waves, (no_queue, waves)
