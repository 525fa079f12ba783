"""The sensors against the real vLLM CPU engine: its /metrics text parsed, scraped directly and
through the real Prometheus into Observations that move under load."""
from __future__ import annotations

import threading
import time

import pytest

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, NUM_PREEMPTIONS, NUM_REQUESTS_RUNNING,
                                 NUM_REQUESTS_WAITING, PROMPT_TOKENS, REQUEST_SUCCESS, TIME_TO_FIRST_TOKEN)
from autoscaler.metrics.direct import DirectSensor
from autoscaler.metrics.prometheus import PrometheusSensor
from autoscaler.metrics.resolver import MappingResolver, PodRef
from autoscaler.metrics.scrape import parse_metrics
from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.ground.load import burst, random_prompt

pytestmark = pytest.mark.integration

READ_SERIES = (NUM_REQUESTS_WAITING, NUM_REQUESTS_RUNNING, KV_CACHE_USAGE, REQUEST_SUCCESS, PROMPT_TOKENS,
               GENERATION_TOKENS, NUM_PREEMPTIONS, f"{TIME_TO_FIRST_TOKEN}_bucket", f"{TIME_TO_FIRST_TOKEN}_count")


def _sample_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _complete(engine, n: int, prompt_len: int = 40, max_tokens: int = 6) -> None:
    import random

    rng = random.Random(n)
    for _ in range(n):
        engine.complete(random_prompt(prompt_len, rng), max_tokens, ignore_eos=True)


class _Load:
    """A burst on the engine in a background thread."""

    def __init__(self, engine, n: int, prompt_len: int, max_tokens: int):
        self.results = None
        self.thread = threading.Thread(target=self._run, args=(engine, n, prompt_len, max_tokens), daemon=True)

    def _run(self, engine, n, prompt_len, max_tokens):
        self.results = burst(engine, n=n, prompt_len=prompt_len, max_tokens=max_tokens)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=600)


def test_the_real_engine_text_parses_into_every_field(vllm_engine):
    before = parse_metrics(vllm_engine.metrics_text(), time.time(), vllm_engine.model)
    _complete(vllm_engine, 3, prompt_len=40, max_tokens=6)
    text = vllm_engine.metrics_text()
    s = parse_metrics(text, time.time(), vllm_engine.model)
    assert s.waiting == 0 and s.running == 0
    assert s.kv_cache_usage is not None and 0 <= s.kv_cache_usage <= 1
    assert s.request_success - (before.request_success or 0) == 3
    assert s.prompt_tokens - (before.prompt_tokens or 0) == 3 * 40
    assert s.generation_tokens - (before.generation_tokens or 0) == 3 * 6
    assert s.preemptions is not None
    assert s.ttft is not None and s.ttft.count - (before.ttft.count if before.ttft else 0) == 3
    assert s.ttft.buckets[-1][1] == s.ttft.count
    # a vLLM engine has no router series; another model name matches nothing
    assert s.arrivals is None and s.held is None
    assert parse_metrics(text, 0.0, "not-served").waiting is None


def test_the_emulator_exposes_the_same_series_names_as_the_real_engine(vllm_engine):
    real = _sample_names(vllm_engine.metrics_text())
    with FleetEmulator(load_profile("tiny-llama-cpu")) as em:
        em.set_pods("tiny", {"tiny-a": True})
        emulated = _sample_names(em.render(pod="tiny-a"))
    for name in READ_SERIES:
        assert name in real, f"the real engine lacks {name}"
        assert name in emulated, f"the emulator lacks {name}"


def test_direct_scrape_of_the_engine_shows_the_queue_and_the_rates_move(vllm_engine):
    pod = PodRef("tiny-0", "llm", "10.244.0.3")       # a pod whose IP must not be dialled
    # the engine's burst can stall this 2-core machine for seconds: a scrape may take longer than 1 s
    sensor = DirectSensor(vllm_engine.model, MappingResolver({pod.name: vllm_engine.metrics_url}), rate_window_s=30,
                          timeout_s=10.0)
    try:
        idle = sensor.observe(time.time(), [pod], loading_replicas=0).observation
        assert idle.waiting_requests == 0 and idle.running_requests == 0
        peak_waiting = peak_running = 0.0
        problems, samples = [], 0
        # long enough to outlast the seconds-long stalls the engine's burst can inflict on this process
        with _Load(vllm_engine, n=64, prompt_len=256, max_tokens=384) as load:
            while load.thread.is_alive():
                reading = sensor.observe(time.time(), [pod], 0)
                o = reading.observation
                problems += reading.reasons
                samples += 1
                peak_waiting = max(peak_waiting, o.waiting_requests or 0)
                peak_running = max(peak_running, o.running_requests or 0)
                time.sleep(0.1)
        assert all(r.error is None for r in load.results), [r.error for r in load.results if r.error][:3]
        took = max(r.sent_at + r.latency_s for r in load.results) - min(r.sent_at for r in load.results)
        assert peak_waiting > 0, (f"64 requests on 4 sequence slots: some must wait ({samples} samples over a "
                                  f"{took:.1f} s burst, peak running {peak_running}, scrape problems: {problems[-3:]})")
        # the engine has 4 sequence slots; how many a 0.1 s sample catches filled depends on the machine's load
        assert 0 < peak_running <= 4
        after = sensor.observe(time.time(), [pod], 0)
        o = after.observation
        assert o.waiting_requests == 0 and o.running_requests == 0
        assert o.request_rate > 0 and o.generation_token_rate > 0 and o.prompt_token_rate > 0
        assert o.ttft_p95 is not None and o.ttft_p95 > 0
        assert after.age_s < 1.0
    finally:
        sensor.close()


def test_prometheus_sensor_follows_the_engine_under_load(prometheus, vllm_engine):
    prometheus.add_target(vllm_engine.address)
    prometheus.wait_for_series(f'up{{instance="{vllm_engine.address}"}}', timeout_s=30, predicate=lambda v: v == 1)
    time.sleep(2.0)   # a sample of every counter before the load, or rate() cannot see its start
    sensor = PrometheusSensor(prometheus.url, rate_window="15s")
    try:
        peak_waiting, bursts = 0.0, []
        # A queue for many scrapes (Prometheus scrapes once a second). The engine's burst can stall this
        # 2-core machine for 5-15 s, past the 0.9 s scrape timeout, so a whole burst may go unscraped:
        # up to three bursts, and the failure says what Prometheus itself recorded of each.
        while peak_waiting == 0 and len(bursts) < 3:
            started = time.time()
            with _Load(vllm_engine, n=64, prompt_len=256, max_tokens=256) as load:
                while load.thread.is_alive():
                    r = sensor.observe(vllm_engine.model, time.time(), 1, 0)
                    peak_waiting = max(peak_waiting, r.observation.waiting_requests or 0)
                    time.sleep(0.5)
            assert all(res.error is None for res in load.results), [res.error for res in load.results if res.error][:3]
            took = max(res.sent_at + res.latency_s for res in load.results) - min(res.sent_at for res in load.results)
            bursts.append((round(took, 1), _recorded_peak(prometheus, vllm_engine.address, time.time() - started)))
        assert peak_waiting > 0, f"no queue seen through Prometheus; bursts (seconds, peak queue recorded): {bursts}"
        time.sleep(1.5)                                 # the last scrape after the burst
        r = sensor.observe(vllm_engine.model, time.time(), 1, 0)
        o = r.observation
        assert o.waiting_requests == 0 and o.running_requests == 0
        assert o.request_rate > 0 and o.generation_token_rate > 0 and o.prompt_token_rate > 0
        assert o.ttft_p95 is not None and o.ttft_p95 > 0
        assert o.kv_cache_usage is not None
        assert r.age_s is not None and r.age_s < 5 and r.source == "prometheus"
    finally:
        sensor.close()


def _recorded_peak(prometheus, address: str, seconds: float) -> float:
    """The longest queue Prometheus recorded for the engine over the last `seconds`."""
    window = f"{int(seconds) + 2}s"
    result = prometheus.query(f'max_over_time({NUM_REQUESTS_WAITING}{{instance="{address}"}}[{window}])')
    return max((float(series["value"][1]) for series in result), default=0.0)
