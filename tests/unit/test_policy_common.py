"""Policy interface, registry, config validation and purity (shared helpers live here too)."""
from __future__ import annotations

import dataclasses
import time

import pytest
from pydantic import ValidationError

from autoscaler.policy.capacity import H100_LLAMA3_8B, ReplicaCapacity
from autoscaler.policy.registry import POLICY_NAMES, make_policy
from autoscaler.policy.types import Decision, Observation, Policy, Reason

# Round numbers so expectations can be computed by hand:
# 100 seqs, 100k KV tokens, 10k prompt tok/s, 1k generated tok/s, 60 s cold start.
CAP = ReplicaCapacity(max_num_seqs=100, kv_cache_tokens=100_000, prefill_tokens_per_s=10_000.0,
                      decode_tokens_per_s=1_000.0, cold_start_s=60.0)


def obs(t: float, ready: int, loading: int = 0, *, waiting=0.0, running=0.0, kv=0.0, rate=0.0,
        prompt=0.0, gen=0.0, model: str = "m", **kw) -> Observation:
    return Observation(model=model, time=float(t), ready_replicas=ready, loading_replicas=loading,
                       waiting_requests=waiting, running_requests=running, kv_cache_usage=kv,
                       request_rate=rate, prompt_token_rate=prompt, generation_token_rate=gen, **kw)


def busy_obs(t: float, ready: int, need: float, u: float = 0.5, loading: int = 0, **kw) -> Observation:
    """An observation whose token load needs exactly `need` replicas at utilisation `u`
    (prefill only: 1000 prompt tokens per request, nothing generated, empty queue)."""
    prompt = need * u * CAP.prefill_tokens_per_s
    base = dict(waiting=0.0, running=0.0, kv=0.0, rate=prompt / 1000.0, prompt=prompt, gen=0.0)
    base.update(kw)
    return obs(t, ready, loading, **base)


def _make(name: str, **kw) -> Policy:
    if name == "static":
        kw.setdefault("replicas", 3)
    return make_policy(name, CAP, **kw)


# ------------------------------------------------------------------ interface and registry

def test_policy_names_are_the_published_set():
    assert POLICY_NAMES == ("warmscale", "hpa-cpu", "keda", "knative", "aibrix", "static")


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_satisfies_the_protocol(name):
    p = _make(name)
    assert isinstance(p, Policy)
    assert p.name == name
    assert p.interval_s > 0
    d = p.decide(obs(0, 2, 1, waiting=3, running=20, kv=0.3, rate=2, prompt=2000, gen=200,
                     cpu_utilization=0.5))
    assert isinstance(d, Decision)
    assert d.model == "m" and d.time == 0.0 and d.current == 3
    assert isinstance(d.reason, Reason)
    assert d.desired >= 0 and isinstance(d.signal, str) and d.signal


@pytest.mark.parametrize("name,interval", [("warmscale", 5.0), ("hpa-cpu", 15.0), ("keda", 15.0),
                                           ("knative", 2.0), ("aibrix", 10.0)])
def test_published_loop_periods(name, interval):
    assert _make(name).interval_s == interval


def test_observation_and_decision_are_frozen():
    o = obs(0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.time = 1.0  # type: ignore[misc]
    assert o.current == 1
    d = _make("warmscale").decide(o)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.desired = 9  # type: ignore[misc]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_decide_reads_no_clock(name, monkeypatch):
    p = _make(name)

    def boom(*a, **k):
        raise AssertionError("policy read the clock")

    for fn in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, fn, boom)
    for t in range(0, 400, 5):
        p.decide(obs(t, 2, waiting=t % 7, running=30, kv=0.4, rate=3, prompt=3000, gen=300,
                     cpu_utilization=0.6))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_decisions_are_deterministic_and_per_model(name):
    seq = [obs(t, 2 + (t // 50) % 3, waiting=(t * 7) % 13, running=40 + t % 30, kv=(t % 90) / 100,
               rate=1 + t % 5, prompt=1000 * (1 + t % 5), gen=100 * (1 + t % 3), cpu_utilization=0.7,
               model=m)
           for t in range(0, 600, 5) for m in ("a", "b")]
    p1, p2 = _make(name), _make(name)
    d1 = [p1.decide(o) for o in seq]
    assert d1 == [p2.decide(o) for o in seq]
    # model "a" alone gives the same answers: state is kept per model
    p3 = _make(name)
    assert [p3.decide(o) for o in seq if o.model == "a"] == [d for d in d1 if d.model == "a"]


# ------------------------------------------------------------------ validation names the field

@pytest.mark.parametrize("name,field,value", [
    ("warmscale", "target_utilization", 1.5),
    ("warmscale", "stable_window_s", 0),
    ("warmscale", "tolerance", -0.1),
    ("warmscale", "max_scale_down_rate", 0.5),
    ("warmscale", "min_replicas", -1),
    ("hpa-cpu", "target_cpu_utilization", 0),
    ("hpa-cpu", "min_replicas", 0),
    ("keda", "threshold", -5),
    ("knative", "max_scale_down_rate", 1.0),
    ("knative", "panic_window_pct", 0),
    ("aibrix", "panic_threshold", 0.5),
    ("static", "replicas", -1),
])
def test_invalid_config_error_names_the_field(name, field, value):
    with pytest.raises(ValidationError) as e:
        _make(name, **{field: value})
    assert field in str(e.value)
    assert str(value) in str(e.value)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_unknown_config_field_is_rejected_by_name(name):
    with pytest.raises(ValidationError) as e:
        _make(name, target_utilisation=0.5)   # British spelling: a typo, not a field
    assert "target_utilisation" in str(e.value)


@pytest.mark.parametrize("name", ["warmscale", "hpa-cpu", "keda", "knative", "aibrix"])
def test_min_above_max_names_both_fields(name):
    with pytest.raises(ValidationError) as e:
        _make(name, min_replicas=5, max_replicas=2)
    assert "min_replicas" in str(e.value) and "max_replicas" in str(e.value)


def test_panic_window_longer_than_stable_is_rejected():
    with pytest.raises(ValidationError) as e:
        _make("warmscale", panic_window_s=200, stable_window_s=100)
    assert "panic_window_s" in str(e.value)


def test_static_needs_replicas():
    with pytest.raises(ValidationError) as e:
        make_policy("static", CAP)
    assert "replicas" in str(e.value)


def test_unknown_policy_name():
    with pytest.raises(ValueError) as e:
        make_policy("nope", CAP)
    assert "nope" in str(e.value) and "warmscale" in str(e.value)


def test_capacity_must_be_replica_capacity():
    with pytest.raises(TypeError):
        make_policy("warmscale", {"max_num_seqs": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("max_num_seqs", 0), ("kv_cache_tokens", -1),
                                         ("prefill_tokens_per_s", 0.0), ("decode_tokens_per_s", float("nan")),
                                         ("cold_start_s", -1.0)])
def test_capacity_validation_names_the_field(field, value):
    kw = CAP.model_dump()
    kw[field] = value
    with pytest.raises(ValidationError) as e:
        ReplicaCapacity(**kw)
    assert field in str(e.value)


def test_capacity_busy_fraction_adds_prefill_and_decode():
    # 5000/10000 + 250/1000 = 0.75 replica
    assert CAP.busy_fraction(5000, 250) == pytest.approx(0.75)
    assert H100_LLAMA3_8B.kv_cache_tokens == 440_000 and H100_LLAMA3_8B.max_num_seqs == 1024   # the H100 profile's


def test_sliding_windows_match_brute_force():
    import random

    from autoscaler.policy._common import MaxWindow, TimeWindow, lsq_slope

    rng = random.Random(3)
    mw, tw = MaxWindow(30.0), TimeWindow(30.0)
    pts = []
    t = 0.0
    for _ in range(500):
        t += rng.choice((1.0, 5.0, 15.0))
        v = rng.uniform(0, 100)
        pts.append((t, v))
        mw.add(t, v)
        tw.add(t, v)
        inside = [x for tt, x in pts if tt >= t - 30.0]
        assert mw.max() == max(inside)
        assert tw.mean_since(t - 30.0) == pytest.approx(sum(inside) / len(inside))
    slope, n, span = lsq_slope([(float(i), 2.0 + 0.5 * i) for i in range(10)])
    assert (slope, n, span) == (pytest.approx(0.5), 10, 9.0)


# ------------------------------------------------------------------ burst helpers

def test_recent_rate_bound_reads_a_burst_from_the_rise_of_the_window_rate():
    from autoscaler.policy._common import recent_rate_bound

    # a 60 s rate going 2 -> 3 per s in 15 s: the newest 15 s carried >= 60 x 1 = 60 arrivals = 4 per s
    assert recent_rate_bound(3.0, 2.0, 60.0, 15.0) == pytest.approx(4.0)
    # from zero: a 15 s burst of 12 per s shows as a 60 s rate of 3; the bound recovers the 12
    assert recent_rate_bound(3.0, 0.0, 60.0, 15.0) == pytest.approx(12.0)
    # a falling rate, or a spacing outside (0, window], says nothing
    assert recent_rate_bound(2.0, 3.0, 60.0, 15.0) == 0.0
    assert recent_rate_bound(3.0, 2.0, 60.0, 0.0) == 0.0
    assert recent_rate_bound(3.0, 2.0, 60.0, 90.0) == 0.0


def test_max_window_forgets_without_new_samples():
    from autoscaler.policy._common import MaxWindow

    w = MaxWindow(30.0)
    w.add(0.0, 5.0)
    w.add(10.0, 3.0)
    assert w.max_at(20.0) == 5.0      # [-10, 20] holds both
    assert w.max_at(35.0) == 3.0      # [5, 35]: the 5 at t=0 is gone
    assert w.max_at(50.0) is None     # [20, 50]: nothing left
    assert w.max() is None
