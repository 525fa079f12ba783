"""What warmscale remembers about one model between decisions, and how it learns it.

Every field is plain floats or (time, value) windows, so the whole state round-trips through JSON
(`to_dict` / `from_dict`): a restarted or newly elected controller carries on with the burst
memory, headroom, windows and learned tokens per request of the one before it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from autoscaler.policy._common import MaxWindow, TimeWindow, recent_rate_bound

if TYPE_CHECKING:
    from autoscaler.policy.warmscale import WarmscaleConfig
    from autoscaler.policy.warmscale_calc import Inputs

__all__ = ["WarmscaleState"]

_WINDOWS = ("rate", "state", "need_pw", "waiting", "fleet", "burst")
_LATER_WINDOWS = ("samples",)   # absent from states saved before they existed: those start empty
_SCALARS = ("first_t", "panic_t", "idle_since", "mp", "mg", "h", "h_t", "h_up_t",
            "sample_t", "sample_raw", "first_sample_t")


class WarmscaleState:
    """One model's memory. Windows hold replicas at target utilisation unless said otherwise."""

    __slots__ = (*_WINDOWS, *_LATER_WINDOWS, *_SCALARS)

    def __init__(self, cfg: WarmscaleConfig) -> None:
        short = max(cfg.panic_window_s, min(cfg.trend_window_s, cfg.stable_window_s))
        self.rate = TimeWindow(short)                  # rate-based need: smoothing + trend
        self.state = TimeWindow(cfg.panic_window_s)    # state-based need (kv, concurrency)
        self.need_pw = MaxWindow(cfg.stable_window_s)  # scale-up need (smoothed, lead included) per decision
        self.waiting = TimeWindow(cfg.panic_window_s)  # waiting requests
        self.fleet = MaxWindow(cfg.scale_down_period_s)  # current (ready + loading)
        self.burst = MaxWindow(cfg.burst_hold_s)       # burst busy fraction per sample, held
        self.samples = TimeWindow(2.0 * cfg.burst_min_spacing_s)   # metric samples' busy fractions (replicas at 100 %)
        self.first_t: float | None = None        # first fresh decision
        self.panic_t: float | None = None        # last panic trigger
        self.idle_since: float | None = None
        self.mp: float | None = None             # mean prompt tokens per request (EWMA)
        self.mg: float | None = None             # mean generated tokens per request (EWMA)
        self.h = 1.0                             # SLO-feedback headroom multiplier
        self.h_t: float | None = None            # last headroom update
        self.h_up_t: float | None = None         # last headroom raise
        self.sample_t: float | None = None       # time of the newest metric sample seen
        self.sample_raw: float | None = None     # its rate-based busy fraction (replicas at 100 %)
        self.first_sample_t: float | None = None

    # ------------------------------------------------------------------ learning
    def learn_tokens(self, inp: Inputs, cfg: WarmscaleConfig) -> None:
        """Tokens per request, learned only while the fleet is not queueing (served == arrived)."""
        Q, P, G, W = inp.served_rate, inp.prompt, inp.gen, inp.waiting
        if not (inp.fresh and Q is not None and Q > 1e-6 and P is not None and G is not None and inp.ready > 0
                and (W is None or W < cfg.queue_panic_per_replica * inp.ready)):
            return
        a = cfg.token_ewma_alpha
        mp, mg = P / Q, G / Q
        if self.mp is None:
            self.mp, self.mg = mp, mg
        else:
            self.mp += a * (mp - self.mp)
            self.mg += a * (mg - self.mg)

    def update_headroom(self, inp: Inputs, cfg: WarmscaleConfig) -> None:
        """SLO feedback (fresh data only): decay towards 1, raise while TTFT or the queue runs hot."""
        if not inp.fresh:
            return
        t, ttft, W = inp.t, inp.ttft_p95, inp.waiting
        hot = ((cfg.ttft_slo_s is not None and ttft is not None and ttft > cfg.headroom_ttft_frac * cfg.ttft_slo_s)
               or (W is not None and inp.ready > 0 and W >= cfg.queue_panic_per_replica * inp.ready))
        if self.h_t is not None and t > self.h_t and self.h > 1.0:
            self.h = 1.0 + (self.h - 1.0) * math.exp(-(t - self.h_t) / cfg.headroom_decay_s)
        if hot and (self.h_up_t is None or t - self.h_up_t >= cfg.headroom_update_s):
            self.h = min(cfg.headroom_max, self.h * cfg.headroom_step)
            self.h_up_t = t
        self.h_t = t

    def record_burst_sample(self, sample_t: float, raw: float, same_if_equal: bool, cfg: WarmscaleConfig) -> None:
        """Record a new metric sample's rate-based busy fraction and hold its burst bound. A repeat
        of the same sample (three 5 s decisions on one 15 s scrape) changes nothing; without a
        metrics_time, an unchanged value is taken for a repeat."""
        w = cfg.rate_window_s
        if self.sample_t is not None and (sample_t <= self.sample_t or (same_if_equal and raw == self.sample_raw)):
            return
        if self.first_sample_t is None:
            self.first_sample_t = sample_t
        burst = raw
        ref = self._reference_sample(sample_t, cfg.burst_min_spacing_s)
        # the bound holds once the caller's window is full of history (before that the window
        # is shorter than rate_window_s and the rise overstates)
        if ref is not None and sample_t - self.first_sample_t >= w:
            burst = max(raw, recent_rate_bound(raw, ref[1], w, sample_t - ref[0]))
        self.sample_t, self.sample_raw = sample_t, raw
        self.samples.add(sample_t, raw)
        if burst > raw:
            # only a sample whose newest interval ran above the window mean is held: smooth
            # traffic never sets the hold off, and the stable window alone governs it
            self.burst.add(sample_t, raw + cfg.burst_factor * (burst - raw))

    def _reference_sample(self, t: float, spacing_s: float) -> tuple[float, float] | None:
        """The newest earlier sample at least 0.9 x `spacing_s` before `t` (None: none yet)."""
        for sample_t, raw in reversed(self.samples.items()):
            if sample_t <= t - 0.9 * spacing_s:
                return sample_t, raw
        return None

    def record_needs(self, t: float, rate_need: float | None, state_need: float | None, waiting: float | None) -> None:
        """Fresh data only: the instantaneous needs and the queue, for smoothing, trend and panic."""
        if self.first_t is None:
            self.first_t = t
        if rate_need is not None:
            self.rate.add(t, rate_need)
        if state_need is not None:
            self.state.add(t, state_need)
        if waiting is not None:
            self.waiting.add(t, waiting)

    def track_idle(self, t: float, idle: bool, fresh: bool) -> None:
        if idle and fresh:
            if self.idle_since is None:
                self.idle_since = t
        elif not idle:
            self.idle_since = None

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).dump() for name in (*_WINDOWS, *_LATER_WINDOWS)}
        out.update({name: getattr(self, name) for name in _SCALARS})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], cfg: WarmscaleConfig) -> WarmscaleState:
        """A state from `to_dict()`'s output; window spans come from `cfg`. ValueError names a bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        st = cls(cfg)
        for name in (*_WINDOWS, *_SCALARS):
            if name not in data:
                raise ValueError(f"field {name!r} is missing")
        for name in (*_WINDOWS, *(w for w in _LATER_WINDOWS if w in data)):
            try:
                getattr(st, name).load(data[name])
            except (TypeError, ValueError) as e:
                raise ValueError(f"field {name!r}: expected [[time, value], ...], got {data[name]!r:.80} ({e})") from None
        for name in _SCALARS:
            v = data[name]
            if name == "h" and v is None or v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"field {name!r}: expected a number{'' if name == 'h' else ' or null'}, got {v!r:.80}")
            setattr(st, name, None if v is None else float(v))
        return st
