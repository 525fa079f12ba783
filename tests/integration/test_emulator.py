"""The fleet emulator: vLLM series for fake pods on loopback, driven by the simulator's engine model,
scraped directly (through its resolver) and by the real Prometheus."""
from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from autoscaler.contract import (GENERATION_TOKENS, KV_CACHE_USAGE, NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING,
                                 PROMPT_TOKENS, REQUEST_SUCCESS)
from autoscaler.metrics.direct import DirectSensor
from autoscaler.metrics.prometheus import FleetRead, PrometheusSensor, matchers
from autoscaler.metrics.resolver import PodRef
from autoscaler.metrics.scrape import parse_metrics
from autoscaler.sim.emulator import FleetEmulator
from autoscaler.sim.profile import load_profile
from tests.ground.prometheus import start_prometheus

pytestmark = pytest.mark.integration

MODEL = "tiny"


@pytest.fixture
def profile():
    return load_profile("tiny-llama-cpu")    # 4 sequences, 8,192 KV tokens: queues form quickly


@pytest.fixture
def emulator(profile):
    with FleetEmulator(profile, namespace="llm") as em:
        yield em


def test_each_ready_pod_has_its_own_series_and_unready_pods_none(emulator):
    emulator.set_pods(MODEL, {"tiny-a": True, "tiny-b": True, "tiny-c": False})
    text = httpx.get(f"{emulator.url}/metrics").text
    for pod in ("tiny-a", "tiny-b"):
        s = parse_metrics(text, 0.0, MODEL, labels={"pod": pod, "namespace": "llm"})
        assert (s.waiting, s.running, s.kv_cache_usage, s.request_success) == (0.0, 0.0, 0.0, 0.0)
    assert parse_metrics(text, 0.0, MODEL, labels={"pod": "tiny-c"}).waiting is None
    assert httpx.get(emulator.pod_metrics_url("tiny-a")).status_code == 200
    assert httpx.get(emulator.pod_metrics_url("tiny-c")).status_code == 503
    assert httpx.get(emulator.pod_metrics_url("nope")).status_code == 404


def test_the_resolver_never_gives_a_pod_ip(emulator):
    emulator.set_pods(MODEL, {"tiny-a": True})
    resolver = emulator.resolver()
    url = resolver.metrics_url(PodRef("tiny-a", "llm", "10.244.0.5"))
    assert url.startswith("http://127.0.0.1:") and "10.244" not in url
    assert resolver.metrics_url(PodRef("unknown", "llm", "10.244.0.6")) is None


def test_requests_are_held_without_a_ready_pod_and_routed_round_robin_when_one_is(emulator):
    for _ in range(6):
        emulator.submit(MODEL, 100, 20)
    router = parse_metrics(httpx.get(emulator.router_metrics_url).text, 0.0, MODEL)
    assert (router.arrivals, router.held) == (6.0, 6.0)
    emulator.set_pods(MODEL, {"tiny-a": True, "tiny-b": True})
    assert emulator.held(MODEL) == 0
    time.sleep(0.5)
    stats = emulator.stats(MODEL)
    assert stats["tiny-a"].request_success == 3 and stats["tiny-b"].request_success == 3


def test_every_token_of_a_replayed_trace_is_counted(emulator):
    rng = np.random.default_rng(1)
    n = 60
    t0 = emulator.now()
    arrival = t0 + np.sort(rng.uniform(0, 1.5, n))
    prompt = rng.integers(50, 400, n)
    output = rng.integers(5, 60, n)
    emulator.set_pods(MODEL, {"tiny-a": True, "tiny-b": True})
    emulator.replay(MODEL, arrival, prompt, output)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = parse_metrics(httpx.get(f"{emulator.url}/metrics").text, 0.0, MODEL)
        if s.request_success == n:
            break
        time.sleep(0.2)
    assert emulator.replay_done()
    assert s.request_success == n and s.arrivals == n
    assert s.prompt_tokens == prompt.sum() and s.generation_tokens == output.sum()
    assert s.ttft.count == n
    assert s.waiting == 0 and s.running == 0


def test_direct_sensor_through_the_resolver_sees_the_queue_and_the_rates(emulator):
    pods = {"tiny-a": True, "tiny-b": True}
    emulator.set_pods(MODEL, pods)
    refs = [PodRef(p, "llm", f"10.244.0.{i}") for i, p in enumerate(pods)]
    sensor = DirectSensor(MODEL, emulator.resolver(), rate_window_s=10, router_url=emulator.router_metrics_url)
    try:
        first = sensor.observe(time.time(), refs, loading_replicas=1)
        assert first.observation.waiting_requests == 0 and first.observation.request_rate is None
        for _ in range(40):                       # 40 long requests on 2 x 4 slots: a queue forms
            emulator.submit(MODEL, 1000, 400)
        time.sleep(0.3)
        busy = sensor.observe(time.time(), refs, loading_replicas=1).observation
        assert busy.waiting_requests > 0 and busy.running_requests == 8
        assert 0 < busy.kv_cache_usage <= 1
        time.sleep(1.0)
        later = sensor.observe(time.time(), refs, loading_replicas=1)
        o = later.observation
        assert o.request_rate > 0 and o.generation_token_rate > 0 and o.prompt_token_rate > 0
        assert o.arrival_rate > 0 and o.held_requests == 0
        assert o.ttft_p95 is not None and o.ttft_p95 > 0
        assert later.age_s is not None and later.age_s < 1.0
    finally:
        sensor.close()


def test_direct_sensor_reports_a_dead_emulator_as_missing(profile):
    em = FleetEmulator(profile).start()
    em.set_pods(MODEL, {"tiny-a": True})
    resolver = em.resolver()
    em.stop()
    sensor = DirectSensor(MODEL, resolver, timeout_s=0.5)
    try:
        r = sensor.observe(time.time(), [PodRef("tiny-a")], loading_replicas=0)
    finally:
        sensor.close()
    assert r.observation.waiting_requests is None and r.observation.kv_cache_usage is None
    assert any("tiny-a" in line and "failed" in line for line in r.reasons)


def test_prometheus_scrapes_the_emulator_and_the_sensor_reads_each_model(prometheus, profile):
    with FleetEmulator(profile, namespace="llm") as em:
        em.set_pods(MODEL, {"tiny-a": True, "tiny-b": True})
        em.set_pods("other", {"other-a": True})
        prometheus.add_target(em.address)
        prometheus.wait_for_series(f'{NUM_REQUESTS_WAITING}{{pod="tiny-b"}}', timeout_s=30)
        time.sleep(2.0)                            # a sample of every counter before the load
        for _ in range(40):
            em.submit(MODEL, 1000, 400)
        prometheus.wait_for_series(f'sum({NUM_REQUESTS_WAITING}{{model_name="{MODEL}"}})', timeout_s=30,
                                   predicate=lambda v: v > 0)
        sensor = PrometheusSensor(prometheus.url, rate_window="10s")
        busy = sensor.observe(MODEL, time.time(), ready_replicas=2, loading_replicas=0)
        assert busy.observation.waiting_requests > 0 and busy.observation.running_requests == 8
        assert busy.age_s is not None and busy.age_s < 5
        prometheus.wait_for_series(f'sum(rate({GENERATION_TOKENS}{{model_name="{MODEL}"}}[10s]))', timeout_s=30,
                                   predicate=lambda v: v > 0)
        o = sensor.observe(MODEL, time.time(), 2, 0).observation
        assert o.generation_token_rate > 0 and o.prompt_token_rate > 0 and o.arrival_rate > 0
        # one pod by its label: the label selector path
        one = sensor.observe(MODEL, time.time(), 1, 0, selector=matchers({"pod": "tiny-a", "namespace": "llm"}))
        assert one.observation.running_requests == 4
        idle = sensor.observe("other", time.time(), 1, 0).observation
        assert idle.waiting_requests == 0 and idle.running_requests == 0 and idle.kv_cache_usage == 0
        # every model in one batch: the same answers as model by model
        many = [r.observation for r in sensor.observe_many(
            [FleetRead(MODEL, (), 2, 0), FleetRead(MODEL, (("pod", "tiny-a"),), 1, 0), FleetRead("other", (), 1, 0)],
            time.time())]
        assert [m.running_requests for m in many] == [8, 4, 0] and many[2].kv_cache_usage == 0
        assert many[0].generation_token_rate > 0 and many[0].arrival_rate > 0 and many[2].arrival_rate in (0, None)
        sensor.close()


def test_prometheus_stopped_gives_none_fields_and_says_why(tmp_path, profile):
    with FleetEmulator(profile) as em:
        em.set_pods(MODEL, {"tiny-a": True})
        with start_prometheus(tmp_path / "prom") as prom:
            prom.add_target(em.address)
            prom.wait_for_series(f'{NUM_REQUESTS_WAITING}{{pod="tiny-a"}}', timeout_s=30)
            sensor = PrometheusSensor(prom.url, rate_window="10s", timeout_s=1)
            up = sensor.observe(MODEL, time.time(), 1, 0)
            assert up.observation.waiting_requests == 0 and up.observation.kv_cache_usage == 0
        down = sensor.observe(MODEL, time.time(), 1, 0)
    o = down.observation
    assert all(getattr(o, f) is None for f in ("waiting_requests", "running_requests", "kv_cache_usage",
                                                "request_rate", "generation_token_rate"))
    assert o.metrics_time is None and down.age_s is None
    assert any("unreachable" in line and prom.url in line for line in down.reasons)


def test_stale_series_give_none_fields_and_their_age(prometheus, profile):
    with FleetEmulator(profile) as em:
        em.set_pods("stale", {"stale-a": True})
        prometheus.add_target(em.address)
        prometheus.wait_for_series(f'{NUM_REQUESTS_WAITING}{{model_name="stale"}}', timeout_s=30)
    # the emulator is gone: Prometheus marks its series stale at the next failed scrape
    sensor = PrometheusSensor(prometheus.url, rate_window="10s", stale_after_s=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = sensor.observe("stale", time.time(), 1, 0)
        if r.observation.waiting_requests is None:
            break
        time.sleep(0.5)
    assert r.observation.waiting_requests is None and r.observation.kv_cache_usage is None
    assert any("no series" in line for line in r.reasons)


def test_data_older_than_the_bound_is_reported_stale_with_its_age(prometheus, profile):
    with FleetEmulator(profile) as em:
        em.set_pods("aged", {"aged-a": True})
        prometheus.add_target(em.address)
        prometheus.wait_for_series(f'{NUM_REQUESTS_WAITING}{{model_name="aged"}}', timeout_s=30)
        sensor = PrometheusSensor(prometheus.url, rate_window="10s", stale_after_s=60)
        fresh = sensor.observe("aged", time.time(), 1, 0)
        # the same data seen by a tick whose clock is two minutes past the newest sample
        late = sensor.observe("aged", time.time() + 120, 1, 0)
    assert fresh.observation.waiting_requests == 0 and fresh.age_s < 60
    assert late.observation.waiting_requests is None and late.observation.kv_cache_usage is None
    assert late.age_s > 119 and late.observation.metrics_time == pytest.approx(fresh.observation.metrics_time, abs=5)
    assert any("stale" in line and "limit 60 s" in line for line in late.reasons)


def test_emulator_metric_names_are_vllm_names(emulator):
    emulator.set_pods(MODEL, {"tiny-a": True})
    text = httpx.get(emulator.pod_metrics_url("tiny-a")).text
    for name in (NUM_REQUESTS_WAITING, NUM_REQUESTS_RUNNING, KV_CACHE_USAGE, REQUEST_SUCCESS, PROMPT_TOKENS,
                 GENERATION_TOKENS):
        assert f"\n{name}{{" in text


def test_a_url_template_reaches_the_namespaced_pod_path(emulator):
    from autoscaler.metrics.resolver import TemplateResolver

    emulator.set_pods(MODEL, {"tiny-a": True})
    url = TemplateResolver(emulator.metrics_url_template).metrics_url(PodRef("tiny-a", "llm", "10.244.0.9"))
    assert parse_metrics(httpx.get(url).text, 0.0, MODEL).waiting == 0
    other_ns = TemplateResolver(emulator.metrics_url_template).metrics_url(PodRef("tiny-a", "elsewhere"))
    assert httpx.get(other_ns).status_code == 404


def test_rebase_sets_the_clock_before_the_first_request_only(emulator):
    emulator.set_pods(MODEL, {"tiny-a": True})
    emulator.rebase(1200.0)
    assert 1200.0 <= emulator.now() < 1201.0
    emulator.submit(MODEL, 100, 10)
    time.sleep(0.3)
    assert emulator.stats(MODEL)["tiny-a"].request_success == 1
    with pytest.raises(RuntimeError, match="requests have already arrived"):
        emulator.rebase(0.0)
