"""Small helpers shared by the policies: value cleaning, time windows, bounds. Pure, no I/O."""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

from pydantic import BaseModel, ConfigDict, model_validator

_EPS = 1e-9


class PolicyConfig(BaseModel):
    """Base of every policy's config: immutable, unknown fields rejected (the error names them).

    Subclasses declare `min_replicas` and `max_replicas`; their order is checked here once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="after")
    def _check_bounds(self):
        low, high = getattr(self, "min_replicas", None), getattr(self, "max_replicas", None)
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_replicas ({low}) must be <= max_replicas ({high})")
        return self


def clean(x: float | int | None) -> float | None:
    """A metric value, or None when it is missing, NaN, infinite or negative (bad data is missing data)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if v != v or v < 0.0 or v == math.inf:
        return None
    return v


def max_opt(a: float | None, b: float | None) -> float | None:
    """The larger of two optional numbers; None only when both are None."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


def ceil_eps(x: float) -> int:
    """ceil that ignores float noise: 4.0000000001 -> 4."""
    return int(math.ceil(x - _EPS)) if x > 0.0 else 0


def is_stale(time: float, metrics_time: float | None, staleness_s: float) -> bool:
    if metrics_time is None:
        return False
    mt = float(metrics_time)
    if mt != mt:  # NaN sample time: we cannot tell how old the data is
        return True
    return time - mt > staleness_s


class TimeWindow:
    """(time, value) samples kept for `span_s` seconds: a deque, O(samples in window) reads.

    Windows here hold tens of samples (window / decision interval), so plain loops beat numpy.
    """

    __slots__ = ("span_s", "_q")

    def __init__(self, span_s: float, maxlen: int = 4096) -> None:
        self.span_s = span_s
        self._q: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, t: float, v: float) -> None:
        q = self._q
        # keep time order if a caller repeats or goes back in time: drop newer samples
        while q and q[-1][0] > t:
            q.pop()
        q.append((t, v))
        cut = t - self.span_s
        while q and q[0][0] < cut:
            q.popleft()

    def __len__(self) -> int:
        return len(self._q)

    def mean_since(self, t0: float) -> float | None:
        s = 0.0
        n = 0
        for t, v in reversed(self._q):
            if t < t0:
                break
            s += v
            n += 1
        return s / n if n else None

    def max_since(self, t0: float) -> float | None:
        m = None
        for t, v in reversed(self._q):
            if t < t0:
                break
            if m is None or v > m:
                m = v
        return m

    def min_since(self, t0: float) -> float | None:
        m = None
        for t, v in reversed(self._q):
            if t < t0:
                break
            if m is None or v < m:
                m = v
        return m

    def first_since(self, t0: float) -> tuple[float, float] | None:
        """Oldest sample at or after t0."""
        out = None
        for t, v in reversed(self._q):
            if t < t0:
                break
            out = (t, v)
        return out

    def oldest_time(self) -> float | None:
        return self._q[0][0] if self._q else None

    def items(self) -> Iterable[tuple[float, float]]:
        return self._q

    def dump(self) -> list[list[float]]:
        """The samples as [[time, value], ...], oldest first (JSON-safe)."""
        return [[t, v] for t, v in self._q]

    def load(self, samples: Iterable[Iterable[float]]) -> None:
        """Replace the samples with `samples` as `dump()` wrote them."""
        self._q.clear()
        self._q.extend(_pairs(samples))


class MaxWindow:
    """Sliding maximum over the last `span_s` seconds (inclusive), O(1) amortised per sample:
    a monotonic deque (values strictly decreasing from the oldest kept to the newest)."""

    __slots__ = ("span_s", "_q")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._q: deque[tuple[float, float]] = deque()

    def add(self, t: float, v: float) -> None:
        q = self._q
        while q and (q[-1][1] <= v or q[-1][0] > t):
            q.pop()
        q.append((t, v))
        cut = t - self.span_s
        while q[0][0] < cut:
            q.popleft()

    def max(self) -> float | None:
        """Max over [t_last - span_s, t_last] where t_last is the newest sample's time."""
        return self._q[0][1] if self._q else None

    def max_at(self, t: float) -> float | None:
        """Max over [t - span_s, t]: samples older than that are dropped even when no new sample
        came (a window fed only now and then must still forget). None when none is left."""
        q = self._q
        cut = t - self.span_s
        while q and q[0][0] < cut:
            q.popleft()
        return q[0][1] if q else None

    def __len__(self) -> int:
        return len(self._q)

    def dump(self) -> list[list[float]]:
        """The kept samples as [[time, value], ...], oldest first (JSON-safe)."""
        return [[t, v] for t, v in self._q]

    def load(self, samples: Iterable[Iterable[float]]) -> None:
        """Replace the kept samples with `samples` as `dump()` wrote them."""
        self._q.clear()
        self._q.extend(_pairs(samples))


def _pairs(samples: Iterable[Iterable[float]]) -> list[tuple[float, float]]:
    out = []
    for s in samples:
        t, v = s
        out.append((float(t), float(v)))
    return out


def lsq_slope(points: Iterable[tuple[float, float]]) -> tuple[float, int, float]:
    """Least-squares slope of value over time. Returns (slope, n, span_s); slope 0 for < 2 points."""
    n = 0
    st = sv = stt = stv = 0.0
    t_first = t_last = 0.0
    for t, v in points:
        if n == 0:
            t_first = t
        t_last = t
        n += 1
        x = t - t_first
        st += x
        sv += v
        stt += x * x
        stv += x * v
    if n < 2:
        return 0.0, n, 0.0
    den = n * stt - st * st
    if den <= 0.0:
        return 0.0, n, t_last - t_first
    return (n * stv - st * sv) / den, n, t_last - t_first


class HpaStabilizer:
    """Kubernetes HPA v2 behaviour: recommendation stabilisation windows and rate policies.

    Source: kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go
    (stabilizeRecommendationWithBehaviors, convertDesiredReplicasWithBehaviorRate,
    calculateScaleUpLimitWithScalingRules, calculateScaleDownLimitWithBehaviors) and
    kubernetes/website content/en/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale.md
    ("Default Behavior": scaleDown stabilizationWindowSeconds 300, policy Percent 100 / 15 s;
    scaleUp stabilizationWindowSeconds 0, policies Percent 100 / 15 s and Pods 4 / 15 s,
    selectPolicy Max).
    """

    __slots__ = ("up_window_s", "down_window_s", "up_percent", "up_pods", "up_period_s",
                 "down_percent", "down_period_s", "_recs", "_events")

    def __init__(self, *, up_window_s: float, down_window_s: float, up_percent: float,
                 up_pods: int, up_period_s: float, down_percent: float, down_period_s: float) -> None:
        self.up_window_s = up_window_s
        self.down_window_s = down_window_s
        self.up_percent = up_percent
        self.up_pods = up_pods
        self.up_period_s = up_period_s
        self.down_percent = down_percent
        self.down_period_s = down_period_s
        self._recs: deque[tuple[float, int]] = deque(maxlen=4096)
        self._events: deque[tuple[float, int]] = deque(maxlen=4096)  # (time, +added / -removed)

    def stabilize(self, t: float, current: int, recommendation: int) -> int:
        """Record the raw recommendation, return the stabilised one (HPA: up = min over the up
        window, down = max over the down window, then clamp current between them)."""
        recs = self._recs
        recs.append((t, recommendation))
        keep = t - max(self.up_window_s, self.down_window_s)
        while recs and recs[0][0] < keep:
            recs.popleft()
        up_rec = recommendation
        down_rec = recommendation
        up_cut = t - self.up_window_s
        down_cut = t - self.down_window_s
        for rt, r in recs:
            if rt > up_cut and r < up_rec:
                up_rec = r
            if rt > down_cut and r > down_rec:
                down_rec = r
        out = current
        if out < up_rec:
            out = up_rec
        if out > down_rec:
            out = down_rec
        return out

    def rate_limit(self, t: float, current: int, desired: int) -> tuple[int, bool]:
        """Apply the scale-up / scale-down policies (selectPolicy Max). Returns (desired, limited)."""
        if desired > current:
            added = sum(d for et, d in self._events if d > 0 and et > t - self.up_period_s)
            start = current - added
            limit = max(int(math.ceil(start * (1.0 + self.up_percent / 100.0))), start + self.up_pods)
            if limit < current:
                limit = current
            if desired > limit:
                return limit, True
            return desired, False
        if desired < current:
            removed = -sum(d for et, d in self._events if d < 0 and et > t - self.down_period_s)
            start = current + removed
            limit = int(math.ceil(start * (1.0 - self.down_percent / 100.0)))
            if limit > current:
                limit = current
            if desired < limit:
                return limit, True
            return desired, False
        return desired, False

    def record_change(self, t: float, current: int, desired: int) -> None:
        if desired != current:
            ev = self._events
            ev.append((t, desired - current))
            keep = t - max(self.up_period_s, self.down_period_s)
            while ev and ev[0][0] <= keep:
                ev.popleft()


def recent_rate_bound(rate_now: float, rate_prev: float, window_s: float, dt_s: float) -> float:
    """Lower bound on the rate over the newest `dt_s` seconds, from two samples of a `window_s`
    rate (rate(x[window]) in Prometheus) taken `dt_s` apart.

    r(t) = (C(t) - C(t - W)) / W for a counter C that never decreases, so
    C(t) - C(t - dt) = W (r(t) - r(t - dt)) + C(t - W) - C(t - W - dt) >= W (r(t) - r(t - dt)):
    a burst shows at (W / dt) x the rise of the window rate, not at its 1/(W/dt) share of the
    window's mean. 0 when the rate fell (the bound says nothing then) or the spacing is unusable.
    """
    if not (0.0 < dt_s <= window_s) or rate_now <= rate_prev:
        return 0.0
    return (rate_now - rate_prev) * window_s / dt_s
