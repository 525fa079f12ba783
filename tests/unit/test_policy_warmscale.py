"""warmscale's own rule, one test per rule, against hand-computed expectations.

Capacity (tests.unit.test_policy_common.CAP): 100 seqs, 100k KV tokens, 10k prompt tok/s,
1k generated tok/s, 60 s cold start. Most tests use target_utilization 0.5 so that
"need" = 2 x load in replica units.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from autoscaler.policy.registry import make_policy
from autoscaler.contract import DemandForecast, Reason, ReplicaFloor
from tests.unit.test_policy_common import CAP, busy_obs, obs


def ws(**kw):
    """warmscale at utilisation 0.5, SLO-feedback headroom off unless a test turns it on
    (each rule is tested alone; the headroom has its own tests)."""
    kw.setdefault("target_utilization", 0.5)
    kw.setdefault("headroom_max", 1.0)
    return make_policy("warmscale", CAP, **kw)


def warm(p, ready, need, t_end, step=5, **kw):
    """Feed a steady load from t=0 to t_end (inclusive); return the last decision."""
    d = None
    for t in range(0, t_end + 1, step):
        d = p.decide(busy_obs(t, ready, need, **kw))
    return d


# ------------------------------------------------------------------ sizing signals

def test_token_throughput_sizes_prefill_plus_decode():
    # 6000/10000 + 400/1000 = 1.0 replica-second per second; / 0.5 = 2.0 ... x2 load below
    p = ws()
    d = p.decide(obs(0, 3, rate=12, prompt=12_000, gen=800, running=10, kv=0.05))
    # busy = 1.2 + 0.8 = 2.0 -> need 4.0 -> 4 replicas
    assert (d.desired, d.reason, d.signal) == (4, Reason.SCALE_UP_STABLE, "token_throughput")


def test_kv_pressure_counts_used_blocks_and_queued_prompts():
    p = ws(target_utilization=0.8)
    # learn 1000 prompt tokens per request (no queue)
    p.decide(obs(0, 4, rate=1, prompt=1000, gen=0, kv=0.5, running=5))
    # 100 s later (outside the 15 s panic window): kv 0.99 on 4 replicas + 5 queued x 1000 tokens
    # = 396k + 5k = 401k tokens / (100k x 0.8) = 5.0125 -> 6 (4.95 -> 5 without the queued prompts)
    d = p.decide(obs(100, 4, rate=1, prompt=1000, gen=0, kv=0.99, running=5, waiting=5))
    assert (d.desired, d.signal) == (6, "kv_tokens")
    assert d.reason == Reason.SCALE_UP_STABLE


def test_concurrency_counts_running_and_waiting():
    p = ws()
    # (175 + 5) / (100 x 0.5) = 3.6 -> 4
    d = p.decide(obs(0, 2, running=175, waiting=5, kv=0.1, rate=0.5, prompt=100, gen=10))
    assert (d.desired, d.signal, d.reason) == (4, "concurrency", Reason.SCALE_UP_STABLE)


def test_arrival_rate_keeps_seeing_demand_when_served_tokens_saturate():
    p = ws()
    # learn 1000 prompt + 0 gen tokens per request while unsaturated: need = 2 x 0.5 busy... = 1.0
    p.decide(busy_obs(0, 2, 1.0))
    # saturated: the served token rate is stuck at 2 replicas' worth (need 2.0 at u=0.5 is 1 busy;
    # here served = 10k tok/s = 1 busy = need 2) but arrivals say 30 req/s x 1000 tok = 3 busy -> 6
    d = p.decide(obs(100, 2, rate=30, prompt=10_000, gen=0, waiting=3, running=10, kv=0.1))
    assert (d.desired, d.signal) == (6, "token_throughput")


# ------------------------------------------------------------------ tolerance

def test_tolerance_band_holds_small_scale_ups():
    p = ws(tolerance=0.05)
    # need 10.4 <= 10 x 1.05 -> hold
    d = p.decide(busy_obs(0, 10, 10.4))
    assert (d.desired, d.reason) == (10, Reason.HOLD_TOLERANCE)
    # need 10.6 > 10.5 -> 11
    d = ws(tolerance=0.05).decide(busy_obs(0, 10, 10.6))
    assert (d.desired, d.reason) == (11, Reason.SCALE_UP_STABLE)


def test_tolerance_band_holds_small_scale_downs():
    p = ws(tolerance=0.2)
    warm(p, 10, 8.5, 300)         # need 8.5 -> 9 < 10, but within 20 % of 10 -> hold
    d = p.decide(busy_obs(305, 10, 8.5))
    assert (d.desired, d.reason) == (10, Reason.HOLD_TOLERANCE)


# ------------------------------------------------------------------ stable window

def test_scale_down_waits_for_the_stable_window():
    p = ws(stable_window_s=120, panic_window_s=15)
    warm(p, 8, 8.0, 125)                       # t = 0..125 at need 8
    ds = {t: p.decide(busy_obs(t, 8, 4.6)) for t in range(130, 300, 5)}
    # 15 s means of the need: 8 up to t=125, then 7.15 (130), 6.30 (135), 5.45 (140), 4.60 (145 on)
    assert (ds[130].desired, ds[130].reason) == (8, Reason.HOLD_STEADY)       # ceil(7.15) = 8
    assert (ds[145].desired, ds[145].reason) == (8, Reason.HOLD_STABILIZATION)
    # the max over the last 120 s leaves the 8s behind after t=245, then steps down with them
    assert (ds[245].desired, ds[245].reason) == (8, Reason.HOLD_STABILIZATION)
    assert (ds[250].desired, ds[250].reason) == (8, Reason.HOLD_STABILIZATION)   # max 7.15 -> 8
    assert (ds[255].desired, ds[255].reason) == (7, Reason.SCALE_DOWN_STABLE)    # max 6.30 -> 7
    assert ds[260].desired == 6 and ds[265].desired == 5 and ds[295].desired == 5


def test_no_scale_down_before_a_full_window_of_history():
    p = ws()
    d = p.decide(busy_obs(0, 8, 1.0))
    assert (d.desired, d.reason) == (8, Reason.HOLD_STABILIZATION)


def test_panic_window_smooths_scale_ups_in_stable_mode():
    p = ws(panic_window_s=15)
    p.decide(busy_obs(0, 10, 4.0))
    p.decide(busy_obs(5, 10, 4.0))
    # one sample at need 16 (not >= 2 x current 10, so no panic): 15 s mean = (4+4+16)/3 = 8
    d = p.decide(busy_obs(10, 10, 16.0))
    assert d.desired == 10 and d.reason != Reason.SCALE_UP_PANIC


# ------------------------------------------------------------------ panic

def test_growing_queue_triggers_panic_and_sizes_on_the_instant_value():
    p = ws(queue_panic_per_replica=4)
    p.decide(obs(0, 2, running=100, waiting=0, kv=0.3, rate=1, prompt=100, gen=10))
    # queue 30 >= 4 x 2 and growing: panic. instant concurrency (100+30)/50 = 2.6 -> 3,
    # the 15 s mean would say (2.0 + 2.6)/2 = 2.3 -> 3 as well, so push the instant further:
    d = p.decide(obs(5, 2, running=200, waiting=30, kv=0.3, rate=1, prompt=100, gen=10))
    # instant (200 + 30) / 50 = 4.6 -> 5; mean (2.0 + 4.6)/2 = 3.3 -> 4 would be the stable answer
    assert (d.desired, d.reason, d.signal) == (5, Reason.SCALE_UP_PANIC, "queue")


def test_need_at_twice_current_triggers_panic():
    d = ws().decide(busy_obs(0, 2, 4.0))
    assert (d.desired, d.reason) == (4, Reason.SCALE_UP_PANIC)


def test_no_scale_down_while_in_panic():
    p = ws(stable_window_s=60, panic_window_s=10)
    warm(p, 4, 3.5, 100)
    p.decide(obs(105, 4, running=150, waiting=50, kv=0.5, rate=3.5, prompt=3500, gen=0))  # panic
    # load vanishes right after; the window max would also hold, but panic is reported first
    d = p.decide(busy_obs(150, 4, 0.5))
    assert (d.desired, d.reason) == (4, Reason.HOLD_PANIC)
    # a stable window (60 s) after the last trigger, panic is over and the fleet shrinks (x1/2 at most)
    ds = {t: p.decide(busy_obs(t, 4, 0.5)) for t in range(155, 260, 5)}
    assert all(ds[t].reason == Reason.HOLD_PANIC for t in range(155, 165, 5))
    # t=165: panic over, but the panic decision's need (5.0 at t=105) is still in the 60 s window
    assert (ds[165].desired, ds[165].reason) == (4, Reason.HOLD_STABILIZATION)
    # t=170: need 0.5 -> 1, at most /2 per 60 s from 4
    first_down = min(t for t, d in ds.items() if d.desired < 4)
    assert first_down == 170
    assert (ds[170].desired, ds[170].reason) == (2, Reason.RATE_LIMITED_DOWN)


def test_ttft_breach_blocks_scale_down():
    p = ws()
    warm(p, 6, 1.0, 300)
    d = p.decide(busy_obs(305, 6, 1.0, ttft_p95=3.0))
    assert (d.desired, d.reason) == (6, Reason.HOLD_PANIC)


# ------------------------------------------------------------------ rate limits, min/max

def test_max_scale_up_rate():
    # need 40 from 1 replica: limit max(ceil(1 x 10), 1 + 4) = 10
    d = ws().decide(busy_obs(0, 1, 40.0))
    assert (d.desired, d.reason) == (10, Reason.RATE_LIMITED_UP)
    d = ws(max_scale_up_rate=2.0, max_scale_up_step=1).decide(busy_obs(0, 10, 40.0))
    assert (d.desired, d.reason) == (20, Reason.RATE_LIMITED_UP)


def test_max_scale_down_rate():
    p = ws(max_scale_down_rate=2.0)
    warm(p, 10, 1.0, 300)          # need 1 on 10 replicas, long enough
    d = p.decide(busy_obs(305, 10, 1.0))
    assert (d.desired, d.reason) == (5, Reason.RATE_LIMITED_DOWN)


def test_bounded_max_and_min():
    d = ws(max_replicas=3).decide(busy_obs(0, 2, 3.9))
    assert (d.desired, d.reason) == (3, Reason.BOUNDED_MAX)
    d = ws(min_replicas=2).decide(obs(0, 0))
    assert (d.desired, d.reason) == (2, Reason.BOUNDED_MIN)
    p = ws(min_replicas=4)
    warm(p, 5, 0.5, 300)
    d = p.decide(busy_obs(305, 5, 0.5))      # x1/2 -> 3, raised to min 4
    assert (d.desired, d.reason) == (4, Reason.BOUNDED_MIN)


# ------------------------------------------------------------------ fail-static

def test_missing_metric_never_shrinks():
    p = ws()
    warm(p, 8, 1.0, 300)
    for field in ("kv_cache_usage", "waiting_requests", "request_rate", "generation_token_rate"):
        o = dataclasses.replace(busy_obs(305, 8, 1.0), **{field: None})
        d = p.decide(o)
        assert (d.desired, d.reason) == (8, Reason.HOLD_FAIL_STATIC_MISSING), field
        assert field in d.explain.missing


def test_nan_and_negative_count_as_missing():
    p = ws()
    warm(p, 8, 1.0, 300)
    d = p.decide(busy_obs(305, 8, 1.0, kv=float("nan")))
    assert (d.desired, d.reason) == (8, Reason.HOLD_FAIL_STATIC_MISSING)
    d = p.decide(busy_obs(310, 8, 1.0, waiting=-1.0))
    assert (d.desired, d.reason) == (8, Reason.HOLD_FAIL_STATIC_MISSING)


def test_stale_metrics_never_shrink():
    p = ws(staleness_s=60)
    warm(p, 8, 1.0, 300)
    d = p.decide(busy_obs(305, 8, 1.0, metrics_time=200.0))   # 105 s old
    assert (d.desired, d.reason) == (8, Reason.HOLD_FAIL_STATIC_STALE)
    d = p.decide(busy_obs(310, 8, 1.0, metrics_time=300.0))   # 10 s old: fine
    assert d.reason == Reason.RATE_LIMITED_DOWN and d.desired == 4


def test_missing_data_may_still_grow_on_what_is_known():
    p = ws()
    # KV and queue unknown, but tokens say need 6 on 2 replicas... (6 >= 2 x 2: panic up)
    d = p.decide(busy_obs(0, 2, 6.0, kv=None, waiting=None))
    assert d.desired == 6 and d.reason in (Reason.SCALE_UP_STABLE, Reason.SCALE_UP_PANIC)
    d = ws().decide(busy_obs(0, 5, 6.0, kv=None, waiting=None, metrics_time=-500.0))
    assert (d.desired, d.reason) == (6, Reason.SCALE_UP_STABLE)


# ------------------------------------------------------------------ scale to zero, activation

def idle(t, ready=1):
    return obs(t, ready, waiting=0, running=0, kv=0, rate=0, prompt=0, gen=0)


def test_scale_to_zero_after_idle_grace():
    p = ws(min_replicas=0, idle_grace_s=300)
    ds = {t: p.decide(idle(t)) for t in range(0, 305, 5)}
    assert (ds[295].desired, ds[295].reason) == (1, Reason.HOLD_IDLE_GRACE)
    assert (ds[300].desired, ds[300].reason) == (0, Reason.SCALE_TO_ZERO)


def test_no_scale_to_zero_with_min_replicas_one():
    p = ws(min_replicas=1, idle_grace_s=10)
    ds = [p.decide(idle(t)) for t in range(0, 600, 5)]
    assert all(d.desired >= 1 for d in ds)


def test_an_arrival_resets_the_idle_clock():
    p = ws(min_replicas=0, idle_grace_s=100)
    for t in range(0, 95, 5):
        p.decide(idle(t))
    p.decide(busy_obs(95, 1, 0.1))
    d = [p.decide(idle(t)) for t in range(100, 200, 5)][-1]
    assert d.desired == 1


def test_activation_on_first_waiting_request():
    d = ws(min_replicas=0).decide(obs(0, 0, waiting=1, running=None, kv=None, rate=0, prompt=None, gen=None))
    assert (d.desired, d.reason, d.signal) == (1, Reason.ACTIVATE_FROM_ZERO, "queue")


def test_activation_on_first_arrival():
    d = ws(min_replicas=0).decide(obs(0, 0, waiting=0, running=None, kv=None, rate=0.2, prompt=None, gen=None))
    assert (d.desired, d.reason, d.signal) == (1, Reason.ACTIVATE_FROM_ZERO, "request_rate")


def test_activation_is_sized_by_the_queue_within_the_step_limit():
    # 300 queued: (0 + 300) / 50 = 6 replicas, limited to 0 + max_scale_up_step
    d = ws(min_replicas=0, max_scale_up_step=4).decide(
        obs(0, 0, waiting=300, running=None, kv=None, rate=None, prompt=None, gen=None))
    assert (d.desired, d.reason) == (4, Reason.ACTIVATE_FROM_ZERO)
    d = ws(min_replicas=0, max_scale_up_step=10).decide(
        obs(0, 0, waiting=300, running=None, kv=None, rate=None, prompt=None, gen=None))
    assert d.desired == 6


def test_stays_at_zero_without_demand():
    d = ws(min_replicas=0).decide(obs(0, 0, waiting=0, running=None, kv=None, rate=0, prompt=None, gen=None))
    assert (d.desired, d.reason) == (0, Reason.HOLD_AT_ZERO)


# ------------------------------------------------------------------ cold start

def ramp(t):
    """Rate-based need 2 + 0.02 t replicas (u = 0.5)."""
    return 2.0 + 0.02 * t


def test_scale_up_is_sized_for_demand_one_cold_start_ahead():
    p = ws(panic_window_s=15)
    d = None
    for t in range(0, 61, 5):
        d = p.decide(busy_obs(t, 4, ramp(t)))
    # at t=60: 15 s mean of need = mean(2.9, 3.0, 3.1, 3.2) = 3.05, LSQ slope 0.02/s,
    # lead = cold start 60 + interval 5 + half the 60 s rate window = 95 s
    # -> 3.05 + 0.02 x 95 = 4.95 > 4 x 1.05 -> 5
    assert p.lead_s == 95.0
    assert (d.desired, d.reason, d.signal) == (5, Reason.SCALE_UP_FORECAST, "trend")
    assert d.explain.need["trend"] == pytest.approx(4.95)


def test_without_lead_the_same_ramp_does_not_scale_up_yet():
    p = ws(panic_window_s=15, lead_s=0)
    d = None
    for t in range(0, 61, 5):
        d = p.decide(busy_obs(t, 4, ramp(t)))
    assert d.desired == 4


def test_trend_extrapolation_is_capped():
    p = ws(panic_window_s=15, max_trend_factor=2.0, max_scale_up_rate=100)
    d = None
    for t in range(0, 61, 5):   # need 0.5 -> 0.5 + 0.1 t: steep
        d = p.decide(busy_obs(t, 40, 0.5 + 0.1 * t))
    # 15 s mean at t=60: 0.5 + 0.1 x 52.5 = 5.75; slope 0.1 x 95 = +9.5 -> 15.25, capped at 2 x 5.75 = 11.5
    assert d.explain.need["trend"] == pytest.approx(11.5)


def test_loading_replicas_count_as_capacity():
    # need 3.6 on 2 ready + 2 loading: nothing more to order
    d = ws().decide(busy_obs(0, 2, 3.6, loading=2))
    assert (d.current, d.desired) == (4, 4)


def test_queue_during_cold_start_does_not_reorder_what_is_loading():
    p = ws()
    # rate-based need 3.6; ready replicas saturated (100 running) and 150 queued:
    # state-based need (100 + 150)/50 = 5, but 2 are loading: capped at max(4, 3.6) -> hold
    o = busy_obs(0, 2, 3.6, loading=2, running=100, waiting=150, kv=0.5)
    d = p.decide(o)
    assert (d.desired, d.reason) == (4, Reason.HOLD_LOADING)
    # the same state with nothing loading orders 5
    d = ws().decide(busy_obs(0, 4, 3.6, loading=0, running=100, waiting=150, kv=0.5))
    assert d.desired == 5


# ------------------------------------------------------------------ forecast and floor

def test_floor_raises_the_fleet_until_it_expires():
    p = ws()
    fl = ReplicaFloor(model="m", replicas=7, expires_at=100.0, reason="prewarm 09:00")
    d = p.decide(busy_obs(0, 2, 1.5, floor=fl))
    assert (d.desired, d.reason, d.signal, d.floor_from_forecast) == (7, Reason.FORECAST_FLOOR, "floor", 7)
    d = p.decide(busy_obs(150, 2, 1.5, floor=fl))     # expired
    assert d.desired == 2 and d.reason != Reason.FORECAST_FLOOR


def test_floor_blocks_scale_down():
    p = ws()
    warm(p, 8, 1.0, 300)
    fl = ReplicaFloor(model="m", replicas=8, expires_at=1000.0, reason="override")
    d = p.decide(busy_obs(305, 8, 1.0, floor=fl))
    assert d.desired == 8


def test_forecast_sizes_scale_up():
    p = ws()
    fc = DemandForecast(model="m", made_at=0.0, target_time=60.0, request_rate_p50=20, request_rate_p90=30,
                        prompt_tokens_p90=30_000, generation_tokens_p90=2_000)
    # (30000/10000 + 2000/1000) / 0.5 = 10
    d = p.decide(busy_obs(0, 6, 2.0, forecast=fc))
    assert (d.desired, d.reason, d.signal, d.floor_from_forecast) == (10, Reason.SCALE_UP_FORECAST, "forecast", 10)


def test_forecast_by_request_rate_uses_learned_tokens_per_request():
    p = ws()
    p.decide(busy_obs(0, 6, 2.0))                    # learns 1000 prompt tokens / request
    fc = DemandForecast(model="m", made_at=0.0, target_time=70.0, request_rate_p50=20, request_rate_p90=40)
    # 40 req/s x 1000 tok / 10000 = 4 busy / 0.5 = 8
    d = p.decide(busy_obs(10, 6, 2.0, forecast=fc))
    assert d.desired == 8 and d.signal == "forecast"


def test_forecast_is_sized_at_the_target_not_scaled_by_the_slo_headroom():
    fc = DemandForecast(model="m", made_at=0.0, target_time=60.0, request_rate_p50=20, request_rate_p90=30,
                        prompt_tokens_p90=30_000, generation_tokens_p90=2_000)
    # TTFT hot: h = 1.2 scales the rate need (2 busy / 0.5 x 1.2 = 4.8) but not the P90 forecast (5 / 0.5 = 10)
    d = ws(headroom_max=5.0).decide(busy_obs(0, 6, 2.0, ttft_p95=1.5, forecast=fc))
    assert d.explain.headroom == pytest.approx(1.2) and d.explain.need["forecast"] == pytest.approx(10.0)
    assert d.desired == 10 and d.signal == "forecast"


# ------------------------------------------------------------------ a short end-to-end run

def test_steady_load_converges_and_stays():
    p = ws(target_utilization=0.8)
    cur = 1
    for t in range(0, 1200, 5):
        d = p.decide(obs(t, cur, rate=20, prompt=20_000, gen=4_000, running=150, kv=0.3))
        cur = d.desired
    # busy = 2 + 4 = 6 -> / 0.8 = 7.5 -> 8; kv and concurrency are lower
    assert cur == math.ceil(6 / 0.8)
    assert d.reason in (Reason.HOLD_STEADY, Reason.HOLD_TOLERANCE)


@pytest.mark.parametrize("n", [1, 3])
def test_models_do_not_share_state(n):
    p = ws()
    for t in range(0, 300, 5):
        for i in range(n):
            p.decide(busy_obs(t, 4, 4.0, model=f"m{i}"))
    d = p.decide(busy_obs(0, 2, 1.0, model="new"))    # a new model has no history: no shrink
    assert d.reason == Reason.HOLD_STABILIZATION


# ------------------------------------------------------------------ SLO-feedback headroom

def test_headroom_rises_when_ttft_is_hot():
    p = ws(headroom_max=5.0)
    # TTFT p95 1.5 s > 0.5 x 2 s: h = 1.2; need 4.5 x 1.2 = 5.4 -> 6 (4.5 alone would hold at 5)
    d = p.decide(busy_obs(0, 5, 4.5, ttft_p95=1.5))
    assert d.desired == 6 and d.explain.headroom == pytest.approx(1.2)
    d = ws(headroom_max=5.0).decide(busy_obs(0, 5, 4.5, ttft_p95=0.3))
    assert d.desired == 5 and d.explain.headroom == 1.0


def test_headroom_rises_at_most_once_per_update_period_and_is_capped():
    p = ws(headroom_max=1.5, headroom_update_s=15)
    hs = []
    for t in (0, 5, 10, 15, 30, 45):
        d = p.decide(busy_obs(t, 5, 1.0, ttft_p95=1.5))
        hs.append(f"{d.explain.headroom:.2f}")
    # 1.2 at t=0, unchanged until t=15 (1.44), then capped at 1.5
    assert hs[:4] == ["1.20", "1.20", "1.20", "1.44"]
    assert hs[-1] == "1.50"


def test_headroom_rises_on_a_panic_level_queue():
    p = ws(headroom_max=5.0, queue_panic_per_replica=4)
    d = p.decide(busy_obs(0, 5, 1.0, waiting=20, running=10))    # 20 >= 4 x 5
    assert d.explain.headroom == pytest.approx(1.2)


def test_headroom_decays_back_to_one():
    p = ws(headroom_max=5.0, headroom_decay_s=1800)
    p.decide(busy_obs(0, 5, 1.0, ttft_p95=1.5))                  # h = 1.2
    d = p.decide(busy_obs(1800, 5, 1.0, ttft_p95=0.2))
    # 1 + 0.2 x e^-1 = 1.0736
    assert d.explain.headroom == pytest.approx(1 + 0.2 * math.exp(-1))


def test_headroom_does_not_move_on_stale_data():
    p = ws(headroom_max=5.0)
    d = p.decide(busy_obs(100, 5, 1.0, ttft_p95=1.5, metrics_time=0.0))
    assert d.explain.headroom == 1.0


# ------------------------------------------------------------------ burst memory

def _burst(p, *, ramp: bool = False, repeats: bool = False):
    """Idle samples every 15 s from t=0, then at t=75 the 60 s rate shows need 1.0 (busy 0.5);
    ramp=True: need 0.5 already at t=60. Each sample is decided on three times 5 s apart (a 15 s
    scrape, a 5 s loop), with its metrics_time, or (repeats=True) without one."""
    d = None
    for t in range(0, 76, 5):
        sample = t - t % 15
        need = 1.0 if sample == 75 else (0.5 if ramp and sample == 60 else 0.0)
        kw = {} if repeats else {"metrics_time": float(sample)}
        d = p.decide(busy_obs(t, 2, need, **kw))
    return d


def test_burst_seen_by_the_rise_of_the_window_rate_orders_its_peak():
    # busy 0 -> 0.5 between samples 15 s apart on a 60 s rate: the newest 15 s ran at >= 60/15 x
    # 0.5 = 2.0 busy; held = 0.5 + burst_factor 3 x (2.0 - 0.5) = 5.0 busy = 10 replicas at u 0.5.
    # (The 5 s between decisions is not the spacing: 60/5 x 0.5 = 6 would give 0.5 + 3 x 5.5 -> 34.)
    d = _burst(ws(burst_hold_s=600, burst_factor=3.0))
    assert (d.desired, d.signal, d.reason) == (10, "burst", Reason.SCALE_UP_STABLE)
    # burst_factor 1 holds the bound itself: 2.0 busy = 4 replicas
    assert _burst(ws(burst_hold_s=600, burst_factor=1.0)).desired == 4


def test_burst_bound_without_metrics_time_spans_the_time_since_the_value_changed():
    # with metrics_time: busy 0 -> 0.25 at t=60 (bound 4 x 0.25 = 1.0, held 0.25 + 3 x 0.75 = 2.5)
    # and 0.25 -> 0.5 at t=75 (bound 1.0, held 0.5 + 3 x 0.5 = 2.0): max 2.5 busy -> 5 replicas
    assert _burst(ws(burst_hold_s=600, burst_factor=3.0), ramp=True).desired == 5
    # without it, repeats of a value are one sample: the change at t=60 spans 60 s since the last
    # change (t=0): bound 60/60 x 0.25 = the rate itself, nothing held; the one at t=75 spans 15 s:
    # held 2.0 busy -> 4 replicas (counting the repeats as samples 5 s apart would give 16)
    assert _burst(ws(burst_hold_s=600, burst_factor=3.0), ramp=True, repeats=True).desired == 4
    # after a flat stretch longer than the rate window the spacing is unknown: no bound at all
    assert _burst(ws(burst_hold_s=600, burst_factor=3.0), repeats=True).desired == 2


def test_burst_hold_keeps_the_fleet_through_a_gap_and_lets_go_after_burst_hold_s():
    p = ws(burst_hold_s=600, burst_factor=3.0)
    _burst(p)
    d = None
    for t in range(80, 671, 5):       # idle again; the sample of t=75 is held until t=675
        d = p.decide(busy_obs(t, 10, 0.0, metrics_time=float(t - t % 15)))
        assert d.desired == 10, (t, d.detail)
    assert d.signal == "burst"
    d = p.decide(busy_obs(680, 10, 0.0, metrics_time=675.0))
    # held sample gone: need ~0, down /2 per 60 s from 10 -> 5
    assert (d.desired, d.reason) == (5, Reason.RATE_LIMITED_DOWN)


def test_burst_hold_off_and_before_a_full_rate_window_of_history():
    assert _burst(ws(burst_hold_s=0)).desired == 2           # off: need 1.0 (trend <= 2x) fits 2
    p = ws(burst_hold_s=600, burst_factor=3.0)
    p.decide(busy_obs(0, 2, 0.0, metrics_time=0.0))
    # 15 s after the first sample the caller's 60 s window is not full: a rise there overstates
    d = p.decide(busy_obs(15, 2, 1.0, metrics_time=15.0))
    assert d.desired == 2 and d.signal != "burst"


def test_smooth_traffic_never_sets_the_burst_hold_off():
    # busy 1.0 -> 1.2 in 15 s: bound 4 x 0.2 = 0.8 < 1.2 (the newest 15 s ran below the mean)
    def run(p):
        out = []
        for t in range(0, 301, 15):
            need = 2.0 if t < 120 else 2.4
            out.append(p.decide(busy_obs(t, 3, need, metrics_time=float(t))))
        return [(d.desired, d.reason, d.signal) for d in out]

    on, off = run(ws(burst_hold_s=600, burst_factor=3.0)), run(ws(burst_hold_s=0))
    assert on == off
    assert all(sig != "burst" for _, _, sig in on)


def test_samples_closer_than_the_burst_spacing_are_not_compared():
    # a new metric sample every 5 s (direct scrapes at each tick): busy 1.0 -> 1.1 between two of
    # them is a 10 % rise, which 5 s apart bounds the newest 5 s at 60/5 x 0.1 = 1.2 > 1.1 (a burst
    # from noise alone); compared with the sample 15 s back (1.0 -> 1.1 as well) the bound is
    # 60/15 x 0.1 = 0.4 < 1.1: nothing to hold
    def run(p):
        out = None
        for t in range(0, 96, 5):
            need = 2.2 if t == 95 else 2.0
            out = p.decide(busy_obs(t, 3, need, metrics_time=float(t)))
        return out

    d = run(ws(burst_hold_s=600, burst_factor=3.0))
    assert d.signal != "burst" and "burst=-" in d.detail
    # the same rise with the old spacing (consecutive samples) would have held 1.1 + 3 x 0.1 busy
    d = run(ws(burst_hold_s=600, burst_factor=3.0, burst_min_spacing_s=5.0))
    assert d.signal == "burst"


def test_a_burst_between_samples_5_s_apart_is_read_over_15_s():
    # busy 0.5 for a minute, then 1.0 from t=95: against the sample of t=80 (15 s back) the
    # newest 15 s ran at >= 60/15 x 0.5 = 2.0 busy; held 1.0 + 3 x 1.0 = 4.0 busy -> 8 replicas
    p = ws(burst_hold_s=600, burst_factor=3.0)
    d = None
    for t in range(0, 96, 5):
        d = p.decide(busy_obs(t, 2, 2.0 if t == 95 else 1.0, metrics_time=float(t)))
    assert (d.desired, d.signal) == (8, "burst")


def test_burst_factor_below_one_is_rejected_by_name():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="burst_factor"):
        ws(burst_factor=0.5)
