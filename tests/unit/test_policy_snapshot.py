"""warmscale's state survives a restart: snapshot() -> JSON -> restore() decides as if never stopped."""
from __future__ import annotations

import json
import math

import pytest

from autoscaler.policy.registry import make_policy
from tests.unit.test_policy_common import CAP, obs


def policy(**kw):
    kw.setdefault("target_utilization", 0.5)
    kw.setdefault("headroom_max", 2.0)
    return make_policy("warmscale", CAP, **kw)


def stretch(t0: int, t1: int, model: str = "m"):
    """A load with a ramp, 15 s bursts, a queue spell and hot TTFT now and then; scrapes every 15 s."""
    for t in range(t0, t1, 5):
        scrape = t - t % 15
        base = 4.0 + 2.0 * math.sin(scrape / 400.0)
        burst = 3.0 if scrape % 240 < 15 else 1.0
        rate = base * burst
        waiting = 30.0 if 600 <= scrape < 630 else 0.0
        yield obs(t, 6, model=model, rate=rate, prompt=rate * 1200, gen=rate * 150, running=rate * 8,
                  waiting=waiting, kv=min(1.0, rate / 20), ttft_p95=1.4 if burst > 1 else 0.3,
                  metrics_time=float(scrape))


def as_tuple(d):
    return (d.desired, d.reason, d.signal, d.detail, d.floor_from_forecast, d.explain)


def test_restored_policy_decides_exactly_as_the_uninterrupted_one():
    a = policy()
    for o in stretch(0, 900):
        a.decide(o)
    saved = json.loads(json.dumps(a.snapshot(), allow_nan=False))
    b = policy()
    b.restore(saved)
    fresh = policy()
    diverged = False
    for o in stretch(900, 2400):
        da, db, df = a.decide(o), b.decide(o), fresh.decide(o)
        assert as_tuple(db) == as_tuple(da), o.time
        diverged |= as_tuple(df) != as_tuple(da)
    # the state mattered: a policy that starts empty decides differently over the same stretch
    assert diverged


def test_snapshot_carries_burst_memory_headroom_windows_and_tokens_per_request():
    p = policy()
    for o in stretch(0, 900):
        p.decide(o)
    snap = p.snapshot()
    assert (snap["policy"], snap["version"]) == ("warmscale", 1)
    m = snap["models"]["m"]
    assert m["mp"] == pytest.approx(1200.0) and m["mg"] == pytest.approx(150.0)
    assert m["h"] > 1.0 and m["h_up_t"] is not None
    assert m["burst"] and m["need_pw"] and m["rate"] and m["fleet"]
    assert all(len(s) == 2 for s in m["rate"])
    json.dumps(snap, allow_nan=False)


def test_a_snapshot_saved_before_the_sample_window_existed_restores():
    p = policy()
    for o in stretch(0, 300):
        p.decide(o)
    snap = json.loads(json.dumps(p.snapshot()))
    del snap["models"]["m"]["samples"]
    q = policy()
    q.restore(snap)
    assert q.snapshot()["models"]["m"]["samples"] == []
    assert q.snapshot()["models"]["m"]["burst"] == p.snapshot()["models"]["m"]["burst"]


def test_snapshot_keeps_each_model_apart():
    p = policy()
    for o in stretch(0, 300, model="a"):
        p.decide(o)
    for o in stretch(0, 60, model="b"):
        p.decide(o)
    q = policy()
    q.restore(json.loads(json.dumps(p.snapshot())))
    assert set(q.snapshot()["models"]) == {"a", "b"}
    assert q.snapshot() == p.snapshot()


def test_empty_policy_round_trips():
    p = policy()
    assert p.snapshot() == {"policy": "warmscale", "version": 1, "models": {}}
    q = policy()
    q.restore(p.snapshot())
    assert q.snapshot() == p.snapshot()


def _good():
    p = policy()
    for o in stretch(0, 120):
        p.decide(o)
    return p.snapshot()


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s.update(policy="keda"), "policy is 'keda'"),
    (lambda s: s.update(version=99), "version 99"),
    (lambda s: s.update(models=[1]), "models must be an object"),
    (lambda s: s["models"]["m"].pop("mp"), "model 'm': field 'mp' is missing"),
    (lambda s: s["models"]["m"].update(rate=[[1.0]]), "model 'm': field 'rate'"),
    (lambda s: s["models"]["m"].update(burst="x"), "model 'm': field 'burst'"),
    (lambda s: s["models"]["m"].update(h=None), "model 'm': field 'h'"),
    (lambda s: s["models"]["m"].update(first_t="soon"), "model 'm': field 'first_t'"),
    (lambda s: s["models"].update(m=[]), "model 'm': expected an object"),
])
def test_bad_snapshot_names_the_problem_and_changes_nothing(mutate, words):
    p = policy()
    for o in stretch(0, 300):
        p.decide(o)
    before = p.snapshot()
    bad = _good()
    mutate(bad)
    with pytest.raises(ValueError) as e:
        p.restore(bad)
    assert words in str(e.value)
    assert p.snapshot() == before
    with pytest.raises(ValueError):
        p.restore("not a dict")  # type: ignore[arg-type]
