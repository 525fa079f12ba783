"""Each baseline's defining rule, against hand-computed expectations from its published source.

Capacity: tests.unit.test_policy_common.CAP (100 seqs per replica).
"""
from __future__ import annotations

import pytest

from autoscaler.policy.hpa import hpa_recommendation
from autoscaler.policy.registry import make_policy
from autoscaler.policy.types import Reason
from tests.unit.test_policy_common import CAP, obs


def mk(name, **kw):
    return make_policy(name, CAP, **kw)


# ================================================================== HPA on CPU

def cpu_obs(t, ready, cpu, loading=0, **kw):
    return obs(t, ready, loading, cpu_utilization=cpu, **kw)


def test_hpa_formula_ceil_ratio_times_ready():
    # 0.95 / 0.80 = 1.1875 x 4 = 4.75 -> 5
    d = mk("hpa-cpu").decide(cpu_obs(0, 4, 0.95))
    assert (d.desired, d.reason, d.signal) == (5, Reason.SCALE_UP_STABLE, "cpu")


def test_hpa_tolerance_ten_percent():
    d = mk("hpa-cpu").decide(cpu_obs(0, 4, 0.85))        # ratio 1.0625
    assert (d.desired, d.reason) == (4, Reason.HOLD_TOLERANCE)
    assert hpa_recommendation(4, 4, 0, 1.09, 0.1) == 4
    assert hpa_recommendation(4, 4, 0, 1.11, 0.1) == 5


def test_hpa_unready_pods_count_as_zero_when_scaling_up():
    # ratio 1.1875 over 2 ready; with 2 unready at 0 %: 1.1875 x 2 / 4 = 0.59 < 1 -> no scale-up
    d = mk("hpa-cpu").decide(cpu_obs(0, 2, 0.95, loading=2))
    assert d.desired == 4
    assert hpa_recommendation(4, 2, 2, 3.0, 0.1) == 6      # 3 x 2 / 4 = 1.5 x 4 = 6


def test_hpa_cpu_tracks_replicas_not_load():
    # busy-poll CPU is the same whatever the queue: same decision for idle and swamped fleets
    a = mk("hpa-cpu").decide(cpu_obs(0, 4, 0.7, waiting=0, running=0))
    b = mk("hpa-cpu").decide(cpu_obs(0, 4, 0.7, waiting=5000, running=1000, kv=1.0))
    assert a.desired == b.desired == 4


def test_hpa_scale_down_stabilisation_300s():
    p = mk("hpa-cpu")
    assert p.decide(cpu_obs(0, 4, 0.8)).desired == 4
    ds = {t: p.decide(cpu_obs(t, 4, 0.2)) for t in range(15, 316, 15)}   # raw ceil(0.25 x 4) = 1
    assert (ds[285].desired, ds[285].reason) == (4, Reason.HOLD_STABILIZATION)
    assert (ds[300].desired, ds[300].reason) == (1, Reason.SCALE_DOWN_STABLE)


def test_hpa_scale_up_policy_max_of_100_percent_and_4_pods():
    d = mk("hpa-cpu", target_cpu_utilization=0.1).decide(cpu_obs(0, 2, 1.0))   # raw 20
    assert (d.desired, d.reason) == (6, Reason.RATE_LIMITED_UP)               # max(2 x 2, 2 + 4)
    d = mk("hpa-cpu", target_cpu_utilization=0.1).decide(cpu_obs(0, 10, 1.0))  # raw 100
    assert d.desired == 20                                                    # max(20, 14)


def test_hpa_missing_cpu_holds_and_never_scales_from_zero():
    d = mk("hpa-cpu").decide(cpu_obs(0, 4, None))
    assert (d.desired, d.reason) == (4, Reason.HOLD_FAIL_STATIC_MISSING)
    d = mk("hpa-cpu").decide(cpu_obs(0, 0, None, waiting=10))
    assert d.desired == 0


# ================================================================== KEDA (vLLM production stack)

def test_keda_average_value_on_waiting_requests():
    # 23 waiting / threshold 5 -> ceil(4.6) = 5
    d = mk("keda").decide(obs(0, 2, waiting=23))
    assert (d.desired, d.reason, d.signal) == (5, Reason.SCALE_UP_STABLE, "queue")


def test_keda_tolerance():
    d = mk("keda").decide(obs(0, 2, waiting=10.4))       # 10.4 / (5 x 2) = 1.04
    assert (d.desired, d.reason) == (2, Reason.HOLD_TOLERANCE)


def test_keda_empty_queue_falls_to_min_after_hpa_stabilisation():
    p = mk("keda")
    assert p.decide(obs(0, 4, waiting=20)).desired == 4
    ds = {t: p.decide(obs(t, 4, waiting=0)) for t in range(15, 316, 15)}
    assert ds[285].desired == 4
    assert (ds[300].desired, ds[300].reason) == (1, Reason.BOUNDED_MIN)   # raw 0 -> minReplicaCount 1


def test_keda_production_stack_defaults():
    p = mk("keda")
    c = p.config
    assert (c.threshold, c.polling_interval_s, c.cooldown_period_s, c.min_replicas) == (5.0, 15.0, 360.0, 1)
    assert c.scale_down_stabilization_s == 300.0 and p.interval_s == 15.0


def test_keda_scale_to_zero_after_cooldown_and_activation():
    p = mk("keda", min_replicas=0)
    p.decide(obs(0, 1, waiting=1))
    ds = {t: p.decide(obs(t, 1, waiting=0)) for t in range(15, 376, 15)}
    assert ds[345].desired == 1
    assert (ds[360].desired, ds[360].reason) == (0, Reason.SCALE_TO_ZERO)
    d = p.decide(obs(400, 0, waiting=1, running=None, kv=None))
    assert (d.desired, d.reason) == (1, Reason.ACTIVATE_FROM_ZERO)


def test_keda_missing_metric_holds():
    d = mk("keda").decide(obs(0, 3, waiting=None))
    assert (d.desired, d.reason) == (3, Reason.HOLD_FAIL_STATIC_MISSING)


# ================================================================== Knative KPA

def test_knative_defaults():
    p = mk("knative")
    assert p.target_value == pytest.approx(100 * 0.7)          # the documented 100 x 0.7
    assert mk("knative", target_concurrency=None).target_value == pytest.approx(p.capacity.max_num_seqs * 0.7)
    assert p.panic_window_s == pytest.approx(6.0) and p.interval_s == 2.0
    assert mk("knative", target_concurrency=100).target_value == pytest.approx(70)


def test_knative_stable_mode_ceil_concurrency_over_target():
    p = mk("knative")
    p.decide(obs(0, 1, running=60))                   # 60 / 70 -> 1: stable (1 / 1 < 2)
    d = p.decide(obs(2, 2, running=100, waiting=20))  # window mean (60 + 120)/2 = 90 -> ceil(90/70) = 2
    assert (d.desired, d.reason) == (2, Reason.HOLD_STEADY)
    d = p.decide(obs(4, 2, running=160, waiting=40))  # mean (60+120+200)/3 = 126.7 -> 2; panic mean
    # panic window 6 s: samples at 0, 2, 4 -> same 126.7 -> 2 -> 2 / 2 < 2: stable, still 2
    assert d.desired == 2


def test_knative_panic_at_200_percent_and_no_scale_down_in_panic():
    p = mk("knative")
    p.decide(obs(0, 2, running=100))                               # 100/70 -> 2, stable
    d = p.decide(obs(2, 2, running=200, waiting=400))              # panic mean (100+600)/2 = 350 -> 5
    assert (d.desired, d.reason) == (5, Reason.SCALE_UP_PANIC)     # 5 / 2 >= 2
    d = p.decide(obs(10, 5, running=70))                           # panic mean over 6 s = 70 -> 1
    assert (d.desired, d.reason) == (5, Reason.HOLD_PANIC)         # never below the panic max


def test_knative_max_scale_down_rate_two():
    p = mk("knative", stable_window_s=6.0)
    for t in range(0, 12, 2):
        d = p.decide(obs(t, 8, running=10))                         # 10/70 -> 1, floor(8/2) = 4
    assert (d.desired, d.reason) == (4, Reason.RATE_LIMITED_DOWN)


def test_knative_scale_to_zero_after_grace_and_activation():
    p = mk("knative")
    ds = {t: p.decide(obs(t, 1, running=0, waiting=0)) for t in range(0, 100, 2)}
    assert ds[0].reason == Reason.HOLD_IDLE_GRACE and ds[0].desired == 1
    assert ds[28].desired == 1
    assert (ds[30].desired, ds[30].reason) == (0, Reason.SCALE_TO_ZERO)
    d = p.decide(obs(100, 0, running=None, waiting=3, kv=None))
    assert (d.desired, d.reason) == (1, Reason.ACTIVATE_FROM_ZERO)


# ================================================================== AIBrix KPA

def test_aibrix_kv_metric_over_target():
    # kv 0.8 on 2 pods = 1.6 / 0.5 = 3.2 -> 4 (<= 2 x 2)
    d = mk("aibrix").decide(obs(0, 2, kv=0.8))
    assert (d.desired, d.reason, d.signal) == (4, Reason.SCALE_UP_STABLE, "kv_tokens")


def test_aibrix_at_most_double_per_decision():
    d = mk("aibrix", target_value=0.2).decide(obs(0, 2, kv=1.0))   # 2 / 0.2 = 10 -> 4
    assert (d.desired, d.reason) == (4, Reason.RATE_LIMITED_UP)


def test_aibrix_tolerance_ten_percent():
    d = mk("aibrix").decide(obs(0, 2, kv=0.54))      # per pod 0.54 <= 0.55
    assert (d.desired, d.reason) == (2, Reason.HOLD_TOLERANCE)
    d = mk("aibrix").decide(obs(0, 2, kv=0.56))      # 1.12 / 0.5 = 2.24 -> 3
    assert d.desired == 3


def test_aibrix_down_cooldown_300s_and_half_per_decision():
    p = mk("aibrix")
    for t in range(0, 200, 10):
        p.decide(obs(t, 8, kv=0.5))                  # on target: 8 x 0.5 / 0.5 = 8
    ds = {t: p.decide(obs(t, 8, kv=0.05)) for t in range(200, 600, 10)}
    # the 180 s mean falls slowly: raw 8 at t=210, 7 from t=220 on, 4 (= floor(8/2)) from t=300
    assert (ds[210].desired, ds[210].reason) == (8, Reason.HOLD_STEADY)
    assert (ds[220].desired, ds[220].reason) == (8, Reason.COOLDOWN)
    # the 8 recommended at t=210 holds the fleet for 300 s: first step down at t=510, to 7
    assert ds[500].desired == 8
    assert (ds[510].desired, ds[510].reason) == (7, Reason.SCALE_DOWN_STABLE)
    assert ds[590].desired == 4                      # never below floor(8 / 2) in one decision


def test_aibrix_panic_when_panic_window_doubles_the_stable_one():
    p = mk("aibrix", target_value=0.1)
    for t in range(0, 180, 10):
        p.decide(obs(t, 2, kv=0.05))                 # total 0.1
    d = p.decide(obs(180, 2, kv=1.0))
    # stable (0.1 x 18 + 2) / 19 = 0.2, panic (0.1 x 6 + 2) / 7 = 0.37: 1.86 < 2, stable mode
    assert (d.desired, d.reason) == (2, Reason.HOLD_STEADY)
    d = p.decide(obs(190, 2, kv=1.0))
    # stable (0.1 x 17 + 4) / 19 = 0.3 -> 3; panic (0.1 x 5 + 4) / 7 = 0.643 -> 7: 2.14 > 2, panic;
    # max(3, 7) clamped to 2 x 2 = 4 (stable mode alone would give 3)
    assert d.desired == 4 and "(panic)" in d.detail


def test_aibrix_cannot_scale_from_zero():
    d = mk("aibrix").decide(obs(0, 0, waiting=50, kv=None, running=None))
    assert (d.desired, d.reason) == (1, Reason.BOUNDED_MIN)   # minReplicas 1, never driven by the queue
    d = mk("aibrix", min_replicas=0).decide(obs(0, 0, waiting=50, kv=None, running=None))
    assert d.desired == 0


# ================================================================== static

def test_static_is_fixed():
    p = mk("static", replicas=12)
    for o in (obs(0, 0, waiting=100), obs(5, 30), obs(10, 12)):
        d = p.decide(o)
        assert (d.desired, d.reason, d.signal) == (12, Reason.STATIC, "static")
