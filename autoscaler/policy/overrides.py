"""The overrides stage: an operator's overrides applied to a policy's decision. Pure, no I/O.

The caller runs it after `policy.decide()` (policy -> overrides -> actuation), so every policy,
warmscale or a peer, is overridden the same way:

    decision = apply_overrides(policy.decide(obs), overrides_of_this_model, now)

Precedence, highest first: pin > pause > pause_up / pause_down > bounds > prewarm.

- An override is active while `now < expires_at`; expired ones are ignored.
- pin: the count is the pin's `replicas`, whatever the policy and every other override say.
- Every other kind is a range the count must lie in: pause [current, current], pause_up
  [0, current], pause_down [current, inf), bounds [min_replicas, max_replicas] (a None side is
  open), prewarm [replicas, inf). The policy's count is clamped into the intersection of the
  active ranges, so it satisfies all of them whenever they can all be met (e.g. bounds 2..8 and
  prewarm 5 give at least 5; pause_up and pause_down together hold the count).
- Conflict rule: ranges are intersected in precedence order (within one kind, the newest override
  first: higher `created_at`, then name). A range that misses the intersection of those before it
  is met as far as that intersection allows (the count goes to its nearest edge): the higher
  override wins. Among pins, the newest wins. The override named as the decider is, among those
  whose range excludes the policy's count, the highest-ranked whose edge is the new count, else
  the highest-ranked.
- The decision is returned unchanged (the same object) when no override changes the count.
  Otherwise `reason` is OVERRIDE_PIN / OVERRIDE_PAUSE (pause, pause_up, pause_down) /
  OVERRIDE_BOUNDS / OVERRIDE_PREWARM for the override that set the count, `signal` is
  Signal.OVERRIDE, `explain.override` is its name and `explain.limits` gains "override_<kind>".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

from autoscaler.contract import Decision, DecisionExplain, OverrideKind, OverrideSpec, Reason, Signal

__all__ = ["PRECEDENCE", "active_overrides", "apply_overrides", "check_override"]

PRECEDENCE: tuple[OverrideKind, ...] = (
    OverrideKind.PIN, OverrideKind.PAUSE, OverrideKind.PAUSE_UP, OverrideKind.PAUSE_DOWN,
    OverrideKind.BOUNDS, OverrideKind.PREWARM,
)
_RANK = {k: i for i, k in enumerate(PRECEDENCE)}
# pause_up and pause_down share a rank: together they are one range, whichever is newer
_RANK[OverrideKind.PAUSE_DOWN] = _RANK[OverrideKind.PAUSE_UP]

_REASON = {
    OverrideKind.PIN: Reason.OVERRIDE_PIN,
    OverrideKind.PAUSE: Reason.OVERRIDE_PAUSE,
    OverrideKind.PAUSE_UP: Reason.OVERRIDE_PAUSE,
    OverrideKind.PAUSE_DOWN: Reason.OVERRIDE_PAUSE,
    OverrideKind.BOUNDS: Reason.OVERRIDE_BOUNDS,
    OverrideKind.PREWARM: Reason.OVERRIDE_PREWARM,
}


def check_override(ov: OverrideSpec) -> None:
    """Raise ValueError naming the override and the field when `ov` cannot be applied."""
    try:
        kind = OverrideKind(ov.kind)
    except ValueError:
        raise ValueError(f"override {ov.name!r}: kind {ov.kind!r} is not one of "
                         f"{', '.join(k.value for k in OverrideKind)}") from None
    if kind in (OverrideKind.PIN, OverrideKind.PREWARM):
        if ov.replicas is None or ov.replicas < 0:
            raise ValueError(f"override {ov.name!r} ({kind.value}): replicas must be an integer >= 0, "
                             f"got {ov.replicas!r}")
    if kind is OverrideKind.BOUNDS:
        lo, hi = ov.min_replicas, ov.max_replicas
        if lo is None and hi is None:
            raise ValueError(f"override {ov.name!r} (bounds): set min_replicas, max_replicas or both")
        for field, v in (("min_replicas", lo), ("max_replicas", hi)):
            if v is not None and v < 0:
                raise ValueError(f"override {ov.name!r} (bounds): {field} must be >= 0, got {v!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"override {ov.name!r} (bounds): min_replicas ({lo}) must be <= max_replicas ({hi})")


def active_overrides(overrides: Iterable[OverrideSpec], now: float) -> tuple[OverrideSpec, ...]:
    """The overrides still in force at `now` (expires_at > now), highest precedence first
    (kind, then newest first, then name). Raises ValueError for an override that cannot apply."""
    live = []
    for ov in overrides:
        check_override(ov)
        if ov.expires_at > now:
            live.append(ov)
    live.sort(key=lambda o: (_RANK[OverrideKind(o.kind)], -o.created_at, o.name))
    return tuple(live)


def _range(ov: OverrideSpec, current: int) -> tuple[float, float]:
    kind = OverrideKind(ov.kind)
    if kind is OverrideKind.PAUSE:
        return current, current
    if kind is OverrideKind.PAUSE_UP:
        return 0, current
    if kind is OverrideKind.PAUSE_DOWN:
        return current, math.inf
    if kind is OverrideKind.BOUNDS:
        return (0 if ov.min_replicas is None else ov.min_replicas,
                math.inf if ov.max_replicas is None else ov.max_replicas)
    return ov.replicas, math.inf  # prewarm


def _resolve(desired: int, current: int, ranked: Sequence[OverrideSpec]) -> tuple[int, OverrideSpec | None]:
    """The count after the overrides, and the override that set it (None: unchanged).

    Among the overrides whose range excludes the policy's count on the side the count moved, the
    one that set it is the highest-ranked whose edge is the new count, else the highest-ranked
    (pause at 4 over bounds min 10: a count of 2 goes to 4, by the pause; prewarm 10 under
    bounds max 6: a count of 2 goes to 6, by the prewarm)."""
    pins = [o for o in ranked if OverrideKind(o.kind) is OverrideKind.PIN]
    if pins:
        return int(pins[0].replicas), pins[0]
    ranges = [(ov, *_range(ov, current)) for ov in ranked]
    lo, hi = 0.0, math.inf
    for _, a, b in ranges:
        if a > hi:            # misses the ranges above it: as high as they allow
            lo = hi
        elif b < lo:          # misses the ranges above it: as low as they allow
            hi = lo
        else:
            lo, hi = max(lo, a), min(hi, b)
    if desired < lo:
        pushers = [(ov, a) for ov, a, _ in ranges if a > desired]
        return int(lo), next((ov for ov, a in pushers if a == lo), pushers[0][0])
    if desired > hi:
        pushers = [(ov, b) for ov, _, b in ranges if b < desired]
        return int(hi), next((ov for ov, b in pushers if b == hi), pushers[0][0])
    return desired, None


def apply_overrides(decision: Decision, overrides: Sequence[OverrideSpec], now: float) -> Decision:
    """`decision` with the active overrides applied (see the module docstring for the rules)."""
    ranked = active_overrides(overrides, now)
    if not ranked:
        return decision
    desired, by = _resolve(int(decision.desired), int(decision.current), ranked)
    if by is None or desired == decision.desired:
        return decision
    kind = OverrideKind(by.kind)
    limit = f"override_{kind.value}"
    explain = decision.explain or DecisionExplain()
    explain = dataclasses.replace(explain, limits=(*explain.limits, limit), override=by.name)
    note = f"override {by.name} ({kind.value}"
    note += f", {by.reason})" if by.reason else ")"
    note += f": {decision.desired} -> {desired}"
    detail = f"{note} | {decision.detail}" if decision.detail else note
    return dataclasses.replace(decision, desired=desired, reason=_REASON[kind], signal=str(Signal.OVERRIDE),
                               detail=detail, explain=explain)
