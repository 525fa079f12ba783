"""warmscale's normaliser: from the calculator's needs to a replica count. Pure.

In order: activation at zero and scale-to-zero; scale-up with the tolerance band and the
loading-replica hold; scale-down held by fail-static (missing or stale metrics), panic, the
stable window (stabilisation: max of the recorded need over it) and tolerance, and limited to
/max_scale_down_rate per period; then the scale-up rate limit, the pre-warm floor and
min/max. Every step that keeps the count from where the need alone would put it is named in
`limits` (Reason values, in order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoscaler.contract import Reason, Signal
from autoscaler.policy._common import ceil_eps, max_opt
from autoscaler.policy.warmscale_calc import Inputs

if TYPE_CHECKING:
    from autoscaler.policy.warmscale import WarmscaleConfig

__all__ = ["History", "Needs", "Normalized", "normalize"]


@dataclass(frozen=True, slots=True)
class History:
    """What the normaliser needs from the model's state (read-only)."""

    need_max: float | None       # max recorded scale-up need over the stable window (None on stale data)
    fleet_max: float | None      # max fleet (ready + loading) over scale_down_period_s
    history_s: float | None      # how long fresh decisions have been recorded (None: none yet)
    panic_age_s: float | None    # since the last panic trigger
    idle_s: float | None         # since the fleet went idle (None: not idle)


@dataclass(frozen=True, slots=True)
class Needs:
    """The calculator's answer for this tick, as the normaliser reads it."""

    up: float | None             # scale-up need (lead and burst hold included)
    signal: str                  # the signal behind `up`
    rate_up: float | None        # rate-based part of the scale-up need
    now: float | None            # panic-window need, max(rate, state) (fresh data only)
    burst_hold: float | None
    state_signal: str
    held_by_loading: bool
    panic: bool
    triggers: tuple[str, ...]
    floor: int | None            # pre-warm floor in force
    floor_reason: str
    forecast_rate_p90: float | None  # the forecast's P90 request rate, if a forecast came
    idle: bool


@dataclass(frozen=True, slots=True)
class Normalized:
    desired: int
    reason: Reason
    signal: str
    detail: str
    limits: tuple[str, ...] = ()


@dataclass(slots=True)
class _Step:
    desired: int
    reason: Reason
    signal: str
    detail: str = ""
    limits: list[str] = field(default_factory=list)

    def hold(self, reason: Reason, detail: str) -> None:
        self.reason, self.detail = reason, detail
        self.limits.append(reason.value)


def normalize(inp: Inputs, needs: Needs, hist: History, cfg: WarmscaleConfig) -> Normalized:
    cur = inp.cur
    s = _Step(cur, Reason.HOLD_STEADY, needs.signal)
    if cur == 0:
        _at_zero(s, inp, needs)
    elif _to_zero_due(inp, needs, hist, cfg):
        s.desired, s.reason, s.signal = 0, Reason.SCALE_TO_ZERO, Signal.IDLE
        s.detail = f"idle {hist.idle_s:.0f}s >= grace {cfg.idle_grace_s:g}s"
    else:
        up_target = ceil_eps(needs.up) if needs.up is not None else None
        if up_target is not None and up_target > cur:
            _grow(s, up_target, needs, cfg)
        elif needs.held_by_loading:
            s.hold(Reason.HOLD_LOADING, f"{inp.loading} loading replicas cover the queue; rate-based need {_f(needs.rate_up)}")
            s.signal = needs.state_signal
        else:
            _shrink_or_hold(s, inp, needs, hist, cfg)
    _limit_up(s, cur, cfg)
    _apply_floor(s, needs)
    _apply_bounds(s, cfg)
    return Normalized(s.desired, s.reason, str(s.signal), s.detail, tuple(s.limits))


def _at_zero(s: _Step, inp: Inputs, needs: Needs) -> None:
    """At zero: the first waiting (or held) request or arrival orders >= 1 replica at once."""
    W, Q = inp.waiting, inp.demand_rate
    if (W is not None and W > 0.0) or (Q is not None and Q > 0.0):
        s.desired = max(1, ceil_eps(needs.up) if needs.up is not None else 1)
        s.reason = Reason.ACTIVATE_FROM_ZERO
        s.signal = Signal.QUEUE if (W is not None and W > 0.0) else Signal.REQUEST_RATE
        s.detail = f"activate: waiting={_f(W)} rate={_f(Q)}/s -> {s.desired}"
    else:
        s.reason, s.signal = Reason.HOLD_AT_ZERO, Signal.IDLE
        s.detail = "at zero, no queued request or arrival" + (" (metrics missing)" if inp.missing else "")


def _to_zero_due(inp: Inputs, needs: Needs, hist: History, cfg: WarmscaleConfig) -> bool:
    """Idle for the grace period on complete, fresh data, with no floor and no forecast demand."""
    return (cfg.min_replicas == 0 and needs.idle and inp.fresh and not inp.missing and hist.idle_s is not None
            and hist.idle_s >= cfg.idle_grace_s and not needs.floor
            and (needs.forecast_rate_p90 is None or needs.forecast_rate_p90 * cfg.idle_grace_s < 1.0))


def _grow(s: _Step, up_target: int, needs: Needs, cfg: WarmscaleConfig) -> None:
    cur = s.desired
    if needs.up <= cur * (1.0 + cfg.tolerance):
        s.hold(Reason.HOLD_TOLERANCE, f"need {needs.up:.2f} within {cfg.tolerance:.0%} of {cur}")
        return
    s.desired = up_target
    if cur > 0 and s.signal in (Signal.TREND, Signal.FORECAST):
        s.reason = Reason.SCALE_UP_FORECAST
    elif needs.panic:
        s.reason = Reason.SCALE_UP_PANIC
    else:
        s.reason = Reason.SCALE_UP_STABLE
    s.detail = f"{needs.up:.2f} replicas needed" + (f"; panic: {', '.join(needs.triggers)}" if needs.triggers else "")


def down_need(needs: Needs, hist: History) -> float | None:
    """What scale-down sizes for: the max of the recorded need over the stable window, the
    rate-based need, the burst hold and the panic-window need."""
    out = max_opt(max_opt(hist.need_max, needs.rate_up), needs.burst_hold)
    if needs.now is not None:
        out = max_opt(out, needs.now)
    return out


def _shrink_or_hold(s: _Step, inp: Inputs, needs: Needs, hist: History, cfg: WarmscaleConfig) -> None:
    cur, t = s.desired, inp.t
    # never below one replica here: zero only through the idle rule
    now_target = max(1, ceil_eps(needs.up)) if needs.up is not None else None
    dn = down_need(needs, hist)
    down_target = max(1, ceil_eps(dn)) if dn is not None else None
    if now_target is not None and now_target < cur:
        # the need right now is below the fleet: shrink, unless a rule holds
        if inp.missing:
            s.hold(Reason.HOLD_FAIL_STATIC_MISSING, f"would shrink to {now_target}, missing: {', '.join(inp.missing)}")
        elif inp.stale:
            s.hold(Reason.HOLD_FAIL_STATIC_STALE,
                   f"would shrink to {now_target}, metrics {t - float(inp.metrics_time):.0f}s old")
        elif needs.panic:
            s.hold(Reason.HOLD_PANIC, f"panic {hist.panic_age_s:.0f}s ago; no scale-down")
        elif hist.history_s is None or hist.history_s < cfg.stable_window_s:
            s.hold(Reason.HOLD_STABILIZATION,
                   f"history {0 if hist.history_s is None else hist.history_s:.0f}s < stable window")
        elif down_target is None or down_target >= cur:
            s.hold(Reason.HOLD_STABILIZATION,
                   f"need now {needs.up:.2f}, max over {cfg.stable_window_s:g}s {_f(dn)}")
        elif dn >= cur * (1.0 - cfg.tolerance):
            s.hold(Reason.HOLD_TOLERANCE, f"need {dn:.2f} within {cfg.tolerance:.0%} of {cur}")
        else:
            base_n = hist.fleet_max or float(cur)
            lim = min(cur, int(math.ceil(base_n / cfg.max_scale_down_rate - 1e-9)))
            if down_target < lim:
                s.desired, s.reason = lim, Reason.RATE_LIMITED_DOWN
                s.limits.append(Reason.RATE_LIMITED_DOWN.value)
                s.detail = (f"down to {down_target} limited to {base_n:.0f}/{cfg.max_scale_down_rate:g}"
                            f" per {cfg.scale_down_period_s:g}s -> {lim}")
            else:
                s.desired, s.reason = down_target, Reason.SCALE_DOWN_STABLE
                s.detail = f"max need over {cfg.stable_window_s:g}s = {dn:.2f}"
    elif inp.missing:
        # nothing to shrink, but say that the decision stood on incomplete data
        s.reason = Reason.HOLD_FAIL_STATIC_MISSING
        if needs.up is None:
            s.signal = Signal.NONE
        s.detail = f"missing: {', '.join(inp.missing)}"
    elif inp.stale:
        s.reason, s.detail = Reason.HOLD_FAIL_STATIC_STALE, f"metrics {t - float(inp.metrics_time):.0f}s old"
    if (s.desired == cur == 1 and cfg.min_replicas == 0 and needs.idle
            and s.reason in (Reason.HOLD_STEADY, Reason.HOLD_STABILIZATION, Reason.HOLD_TOLERANCE)):
        s.reason, s.signal = Reason.HOLD_IDLE_GRACE, Signal.IDLE
        s.detail = f"idle {0 if hist.idle_s is None else hist.idle_s:.0f}s < grace {cfg.idle_grace_s:g}s"


def _limit_up(s: _Step, cur: int, cfg: WarmscaleConfig) -> None:
    """x max_scale_up_rate or + max_scale_up_step, whichever is larger (activation included)."""
    if s.desired <= cur:
        return
    lim = max(int(math.ceil(cur * cfg.max_scale_up_rate - 1e-9)), cur + cfg.max_scale_up_step)
    if s.desired > lim:
        s.detail = f"{s.detail}; up to {s.desired} limited to {lim}"
        s.desired = lim
        s.limits.append(Reason.RATE_LIMITED_UP.value)
        if s.reason != Reason.ACTIVATE_FROM_ZERO:
            s.reason = Reason.RATE_LIMITED_UP


def _apply_floor(s: _Step, needs: Needs) -> None:
    """The pre-warm planner's floor: deliberate, so not rate-limited."""
    if needs.floor is not None and needs.floor > s.desired:
        note = f"floor {needs.floor} ({needs.floor_reason})"
        s.detail = f"{s.detail}; {note}" if s.detail else note
        s.desired, s.reason, s.signal = needs.floor, Reason.FORECAST_FLOOR, Signal.FLOOR
        s.limits.append(Reason.FORECAST_FLOOR.value)


def _apply_bounds(s: _Step, cfg: WarmscaleConfig) -> None:
    if s.desired > cfg.max_replicas:
        s.detail = f"{s.detail}; max_replicas {cfg.max_replicas}"
        s.desired = cfg.max_replicas
        s.reason = Reason.BOUNDED_MAX
        s.signal = s.signal if s.signal != Signal.NONE else Signal.BOUNDS
        s.limits.append(Reason.BOUNDED_MAX.value)
    elif s.desired < cfg.min_replicas:
        s.detail = f"{s.detail}; min_replicas {cfg.min_replicas}"
        s.desired = cfg.min_replicas
        s.reason = Reason.BOUNDED_MIN
        s.limits.append(Reason.BOUNDED_MIN.value)



def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
